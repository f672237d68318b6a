//! `cargo-cleantest`: `cargo test` that leaves nothing behind.
//!
//! Entry point: strips the `cleantest` word cargo adds, picks one command (the test run, `exec`, `sweep`,
//! or the hidden reaper), parses its command line, runs it, and maps the outcome to an exit code (see
//! docs/usage.md's "Exit codes"). The layers, lowest first: `contract`; `sys`; `errors`; `cli`;
//! `config`; `docker`; `session`; `services`; `run`; `commands`. A layer imports only the layers below
//! it (ARCHITECTURE.md).

mod cli;
mod commands;
mod config;
use cleantest_contract as contract;
use cleantest_docker as docker;
mod errors;
mod output;
mod run;
mod services;
mod session;
use cleantest_sys as sys;

use commands::{completions, exec, services as services_command, sweep};
use contract::EXIT_USAGE;
use session::{engine_reaper, reaper};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo cleantest ...` runs us as `cargo-cleantest cleantest ...`.
    if args.first().map(String::as_str) == Some("cleantest") {
        args.remove(0);
    }
    main_with(args)
}

fn main_with(args: Vec<String>) {
    raise_descriptor_limit();
    if let Err(e) = docker::engine::init_runtime() {
        crate::output::err(format!(
            "error: cannot start the runtime for engine calls: {e}"
        ));
        std::process::exit(contract::EXIT_TEST_FAILED);
    }
    match args.first().map(String::as_str) {
        Some("sweep") => exit_with(parse_sub::<sweep::SweepArgs>(&args).and_then(sweep::run)),
        Some("exec") => exit_with(parse_sub::<exec::ExecArgs>(&args).and_then(exec::run)),
        Some("archive") => {
            exit_with(parse_sub::<cli::ArchiveArgs>(&args).and_then(|parsed| run::archive(&parsed)))
        }
        Some("services") => exit_with(
            parse_sub::<services_command::ServicesArgs>(&args).and_then(services_command::run),
        ),
        Some(reaper::SUBCOMMAND) if args.len() == 2 => std::process::exit(reaper::run(&args[1])),
        Some(commands::host::SUBCOMMAND) => std::process::exit(commands::host::run(&args[1..])),
        Some(engine_reaper::SUBCOMMAND) if args.len() == 2 => {
            std::process::exit(engine_reaper::run(&args[1]))
        }
        Some("completions") => exit_with(
            parse_sub::<completions::CompletionsArgs>(&args).and_then(completions::completions),
        ),
        Some("man") => {
            exit_with(parse_sub::<completions::ManArgs>(&args).and_then(completions::man))
        }
        // `cargo cleantest help [COMMAND]`, as cargo's own `help`.
        Some("help") => match args.get(1).map(String::as_str) {
            None | Some("--help" | "-h") => return main_with(vec!["--help".into()]),
            Some(sub) if cli::SUBCOMMANDS.contains(&sub) && sub != "help" => {
                return main_with(vec![sub.into(), "--help".into()]);
            }
            Some(other) => usage_error(
                &format!("no such command: `{other}`"),
                &match cli::near_subcommand(other) {
                    Some(near) => format!("a command with a similar name exists: `{near}`"),
                    None => format!(
                        "the commands are: {}",
                        cli::SUBCOMMANDS
                            .iter()
                            .filter(|s| **s != "help")
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
            ),
        },
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
    // `cargo cleantest --timeout 5s exec -- false` would take `exec` for a test filter and run nothing:
    // a CI step would go green without running its command.
    if let Some(sub) = parsed
        .testname
        .as_deref()
        .filter(|name| cli::SUBCOMMANDS.contains(name))
    {
        usage_error(
            &format!("`{sub}` is a command, and a command goes first, before its options"),
            &format!(
                "write `cargo cleantest {sub} [OPTIONS] ...` (see `cargo cleantest help {sub}`); \
                 to run the tests whose names contain `{sub}`, pass it after `--`: `cargo cleantest -- {sub}`"
            ),
        );
    }
    exit_with(run::run(parsed));
}

/// Parses a subcommand's arguments (`args[0]` is its name); clap prints help and usage errors itself.
fn parse_sub<T: clap::Parser>(args: &[String]) -> Result<T, errors::Error> {
    let argv =
        std::iter::once(format!("cargo-cleantest {}", args[0])).chain(args[1..].iter().cloned());
    T::try_parse_from(argv).map_err(|e| {
        let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
        let _ = e.print();
        // `cargo cleantest exec true`: the command belongs after `--`, which clap's error doesn't say.
        let stray = args[1..].iter().find(|a| !a.starts_with('-'));
        if let (true, false, Some(word), clap::error::ErrorKind::UnknownArgument) = (
            args[0] == "exec",
            args.iter().any(|a| a == "--"),
            stray,
            e.kind(),
        ) {
            crate::output::err(format!(
                "  help: the command goes after `--`: cargo cleantest exec [OPTIONS] -- {word} ..."
            ));
        }
        std::process::exit(code);
    })
}

/// A usage error in cargo's form, then exit 2.
fn usage_error(message: &str, help: &str) -> ! {
    crate::output::err(format!("error: {message}\n  help: {help}"));
    std::process::exit(EXIT_USAGE);
}

fn exit_with(result: Result<i32, errors::Error>) -> ! {
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            crate::output::err(format!("error: failed to {e}"));
            if let Some(hint) = e.hint() {
                crate::output::err(format!("  help: {hint}"));
            }
            e.exit_code()
        }
    };
    for line in session::after_error() {
        crate::output::err(line);
    }
    std::process::exit(code);
}

/// Raises the soft limit on open descriptors to the hard one, as most servers do: every client
/// connection to the session's proxy holds two of the runner's (client and engine side), and the
/// default soft limit (1024) is far below what a busy suite opens. Tests inherit the raised limit.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the one struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
