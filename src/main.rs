//! `cargo-cleantest`: `cargo test` that leaves nothing behind.
//!
//! Entry point: strips the `cleantest` word cargo adds, parses the command line, runs, and maps the
//! outcome to an exit code (see the README's "Exit codes").

mod cargo;
mod cargo_env;
mod cli;
mod config;
mod errors;
mod junit;
mod list;
mod process;
mod report;
mod run;
mod schedule;
mod session;
mod signals;
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
    let parsed = match cli::RunArgs::parse_from_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let code = match run::run(parsed) {
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
