//! `cargo-cleantest`: `cargo test` that leaves nothing behind.
//!
//! Entry point: strips the `cleantest` word cargo adds, parses the command line, runs, and maps the
//! outcome to an exit code (see the README's "Exit codes").

mod cargo;
mod cargo_env;
mod cli;
mod config;
mod docker;
mod errors;
mod exec;
mod junit;
mod list;
mod lock;
mod orphans;
mod process;
mod proxy;
mod reaper;
mod report;
mod run;
mod schedule;
mod session;
mod session_start;
mod signals;
mod state;
mod sweep_cmd;
mod test_args;
mod tracker;
mod unit;

use errors::EXIT_USAGE;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo cleantest ...` runs us as `cargo-cleantest cleantest ...`.
    if args.first().map(String::as_str) == Some("cleantest") {
        args.remove(0);
    }
    match args.first().map(String::as_str) {
        Some("sweep") => {
            exit_with(parse_sub::<sweep_cmd::SweepArgs>(&args).and_then(sweep_cmd::run))
        }
        Some("exec") => exit_with(parse_sub::<exec::ExecArgs>(&args).and_then(exec::run)),
        Some(reaper::SUBCOMMAND) if args.len() == 2 => std::process::exit(reaper::run(&args[1])),
        _ => {}
    }
    let parsed = match cli::RunArgs::parse_from_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    exit_with(run::run(parsed));
}

/// Parses a subcommand's arguments (`args[0]` is its name); clap prints help and usage errors itself.
fn parse_sub<T: clap::Parser>(args: &[String]) -> Result<T, errors::Error> {
    let argv =
        std::iter::once(format!("cargo-cleantest {}", args[0])).chain(args[1..].iter().cloned());
    T::try_parse_from(argv).map_err(|e| {
        let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
        let _ = e.print();
        std::process::exit(code);
    })
}

fn exit_with(result: Result<i32, errors::Error>) -> ! {
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: failed to {e}");
            if let Some(hint) = e.hint() {
                eprintln!("  help: {hint}");
            }
            e.exit_code()
        }
    };
    std::process::exit(code);
}
