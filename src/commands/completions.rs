//! `cargo cleantest completions SHELL` and `cargo cleantest man`: a shell completion script and a man
//! page, generated from the same clap definitions that parse the command line, so neither can drift
//! from the flags the runner accepts.

use std::io::Write;

use clap::{CommandFactory, Parser};
use clap_complete::Shell;

use super::exec::ExecArgs;
use super::services::ServicesArgs;
use super::sweep::SweepArgs;
use crate::cli::RunArgs;
use crate::errors::Error;

/// `cargo cleantest completions SHELL`
#[derive(Parser, Debug)]
#[command(
    name = "cargo-cleantest completions",
    bin_name = "cargo cleantest completions"
)]
#[command(
    about = "Print a completion script for the `cargo-cleantest` command",
    after_help = "Install it where your shell looks, e.g. for bash:\n  \
                  cargo cleantest completions bash > ~/.local/share/bash-completion/completions/cargo-cleantest"
)]
pub(crate) struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

/// `cargo cleantest man`
#[derive(Parser, Debug)]
#[command(name = "cargo-cleantest man", bin_name = "cargo cleantest man")]
#[command(
    about = "Print the man page (roff) of cargo-cleantest",
    after_help = "Install it where man looks, e.g.:\n  \
                  mkdir -p ~/.local/share/man/man1 && \
                  cargo cleantest man > ~/.local/share/man/man1/cargo-cleantest.1"
)]
pub(crate) struct ManArgs {}

/// The whole command line as one clap command: the test run's options with every subcommand under it.
fn full_command(bin_name: &'static str) -> clap::Command {
    let sub = |command: clap::Command, name: &'static str| {
        command.name(name).bin_name(format!("{bin_name} {name}"))
    };
    RunArgs::command()
        .name("cargo-cleantest")
        .bin_name(bin_name)
        .subcommand(sub(ExecArgs::command(), "exec"))
        .subcommand(sub(SweepArgs::command(), "sweep"))
        .subcommand(sub(ServicesArgs::command(), "services"))
        .subcommand(sub(CompletionsArgs::command(), "completions"))
        .subcommand(sub(ManArgs::command(), "man"))
}

pub(crate) fn completions(args: CompletionsArgs) -> Result<i32, Error> {
    // The script completes the binary's own name: `cargo-cleantest` takes the same arguments as
    // `cargo cleantest`, and a shell completes a command by its first word.
    let mut command = full_command("cargo-cleantest");
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "cargo-cleantest", &mut out);
    write_out(&out)
}

pub(crate) fn man(_: ManArgs) -> Result<i32, Error> {
    let mut out = Vec::new();
    clap_mangen::Man::new(full_command("cargo cleantest"))
        .render(&mut out)
        .map_err(Error::Output)?;
    write_out(&out)
}

fn write_out(bytes: &[u8]) -> Result<i32, Error> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(Error::Output)?;
    Ok(0)
}
