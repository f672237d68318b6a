//! `-- --list`: what the run would run, listed instead. Without a partition, each binary's own listing
//! as cargo test prints it; with `--partition`, the shard's tests only, in libtest's `--list` format
//! for the binaries that are listed, and the own listing of a binary run whole or of the doctests when
//! they fall into the shard.

use std::process::Command;
use std::sync::Arc;

use super::cargo::TestBinary;
use super::cargo_env::cargo_program;
use super::unit::UnitKind;
use super::{list, plan};
use crate::cli::{Partition, TestArgs};
use crate::config::Settings;
use crate::contract::{EXIT_OK, EXIT_TEST_FAILED};
use crate::errors::Error;
use crate::session::Session;
use crate::session::process::capture;

/// What `--list` lists.
pub(super) struct ListMode<'a> {
    pub binaries: &'a [Arc<TestBinary>],
    pub test_args: &'a TestArgs,
    pub session: &'a Arc<Session>,
    pub settings: &'a Settings,
    pub doctests: bool,
    pub doc_cargo_args: &'a [String],
}

impl ListMode<'_> {
    /// Each binary's own listing, and the doctests'.
    pub(super) fn all(&self) -> Result<i32, Error> {
        let mut commands: Vec<(String, Command)> =
            self.binaries.iter().map(|b| self.own_listing(b)).collect();
        if self.doctests {
            commands.push(self.doctest_listing());
        }
        self.run(commands)
    }

    /// The shard's tests: as `plan` would queue them with this partition.
    pub(super) fn shard(&self, partition: Partition, cpus: usize) -> Result<i32, Error> {
        let listings = list::list_all(
            self.binaries,
            self.test_args,
            |b| plan::unit_kind(b.harness, false),
            self.session,
            cpus,
            self.settings.list_timeout,
        );
        let planned = plan::plan(
            self.binaries.to_vec(),
            listings,
            false,
            1,
            self.doctests,
            Some(partition),
        );
        let mut commands = Vec::new();
        for spec in &planned.queue {
            match (&spec.binary, spec.kind) {
                (Some(binary), UnitKind::Whole) => commands.push(self.own_listing(binary)),
                (None, _) => commands.push(self.doctest_listing()),
                (Some(binary), _) => {
                    eprintln!(
                        "     Running {} ({})",
                        binary.id,
                        binary.executable.display()
                    );
                    for test in &spec.tests {
                        println!("{test}: test");
                    }
                    println!("\n{} tests, 0 benchmarks", spec.tests.len());
                }
            }
        }
        let code = self.run(commands)?;
        if let Some(line) = &planned.partition_line {
            eprintln!("{line}");
        }
        Ok(code)
    }

    /// The arguments of a binary's own listing.
    fn list_args(&self) -> Vec<String> {
        let mut args = self.test_args.selection();
        args.push("--list".into());
        args.extend(self.test_args.passthrough.iter().cloned());
        args
    }

    fn own_listing(&self, binary: &Arc<TestBinary>) -> (String, Command) {
        eprintln!(
            "     Running {} ({})",
            binary.id,
            binary.executable.display()
        );
        let mut command = binary.command();
        command.args(self.list_args());
        (binary.executable.display().to_string(), command)
    }

    fn doctest_listing(&self) -> (String, Command) {
        let mut command = Command::new(cargo_program());
        command
            .args(["test", "--doc"])
            .args(self.doc_cargo_args)
            .arg("--")
            .args(self.list_args());
        ("cargo test --doc".into(), command)
    }

    /// Runs the listings one after another, printing what each printed; the first that fails ends it.
    fn run(&self, commands: Vec<(String, Command)>) -> Result<i32, Error> {
        for (program, mut command) in commands {
            self.session.configure(&mut command);
            let out = capture(&mut command, self.session, self.settings.timeout)
                .map_err(|source| Error::Spawn { program, source })?;
            print!("{}", out.stdout);
            eprint!("{}", out.stderr);
            if !out.exit.success() {
                return Ok(EXIT_TEST_FAILED);
            }
        }
        Ok(EXIT_OK)
    }
}
