//! `-- --list`: what the run would run, listed instead. Without a partition, each binary's own listing
//! as cargo test prints it; with `--partition`, the shard's tests only, in libtest's `--list` format
//! for the binaries that are listed, and the own listing of a binary run whole or of the doctests when
//! they fall into the shard.

use std::io::Write;
use std::process::Command;
use std::sync::Arc;

use super::cargo::TestBinary;
use super::cargo_env::cargo_program;
use super::partition::Sharding;
use super::unit::UnitKind;
use super::{list, plan};
use crate::cli::TestArgs;
use crate::config::Settings;
use crate::contract::{EXIT_OK, EXIT_TEST_FAILED};
use crate::errors::Error;
use crate::session::Session;
use crate::session::process::capture;

/// One binary's part of the listing: its header (on stderr, as cargo test's `Running` line), then
/// either a listing command to run or the lines already known.
enum Part {
    Run {
        header: Option<String>,
        program: String,
        command: Command,
    },
    Known {
        header: String,
        lines: String,
    },
}

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
        let mut commands: Vec<Part> = self.binaries.iter().map(|b| self.own_listing(b)).collect();
        if self.doctests {
            commands.push(self.doctest_listing());
        }
        self.run(commands)
    }

    /// The shard's tests: as `plan` would queue them with this partition.
    pub(super) fn shard(&self, sharding: Sharding<'_>, cpus: usize) -> Result<i32, Error> {
        let listings = list::list_all(
            self.binaries,
            self.test_args,
            |b| plan::unit_kind(b.harness, false),
            list::Lister {
                session: self.session,
                service_env: &[],
                timeout: self.settings.list_timeout,
            },
            cpus,
        );
        let planned = plan::plan(
            self.binaries.to_vec(),
            listings,
            false,
            1,
            self.doctests,
            Some(sharding),
        );
        let mut commands = Vec::new();
        for spec in &planned.queue {
            match (&spec.binary, spec.kind) {
                (Some(binary), UnitKind::Whole) => commands.push(self.own_listing(binary)),
                (None, _) => commands.push(self.doctest_listing()),
                (Some(binary), _) => {
                    let mut lines = String::new();
                    for test in &spec.tests {
                        lines.push_str(&format!("{test}: test\n"));
                    }
                    lines.push_str(&format!("\n{} tests, 0 benchmarks\n", spec.tests.len()));
                    commands.push(Part::Known {
                        header: header_of(binary),
                        lines,
                    });
                }
            }
        }
        let code = self.run(commands)?;
        if let Some(line) = &planned.partition_line {
            crate::output::err(line);
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

    fn own_listing(&self, binary: &Arc<TestBinary>) -> Part {
        let mut command = binary.command();
        command.args(self.list_args());
        Part::Run {
            header: Some(header_of(binary)),
            program: binary.executable.display().to_string(),
            command,
        }
    }

    fn doctest_listing(&self) -> Part {
        let mut command = Command::new(cargo_program());
        command
            .args(["test", "--doc"])
            .args(self.doc_cargo_args)
            .arg("--")
            .args(self.list_args());
        Part::Run {
            header: None,
            program: "cargo test --doc".into(),
            command,
        }
    }

    /// Runs the listings one after another, each header just before what its listing printed, as
    /// cargo test interleaves them; the first that fails ends it.
    fn run(&self, parts: Vec<Part>) -> Result<i32, Error> {
        for part in parts {
            let (header, program, mut command) = match part {
                Part::Known { header, lines } => {
                    say(&header, &lines, "");
                    continue;
                }
                Part::Run {
                    header,
                    program,
                    command,
                } => (header, program, command),
            };
            self.session.configure(&mut command);
            let out = capture(&mut command, self.session, self.settings.timeout)
                .map_err(|source| Error::Spawn { program, source })?;
            match header {
                Some(header) => say(&header, &out.stdout, &out.stderr),
                // `cargo test --doc` prints its own headers (`Doc-tests NAME`) on stderr, one per
                // package, each before that package's listing on stdout.
                None => {
                    for (header, lines) in doc_sections(&out.stderr, &out.stdout) {
                        say(header.trim_end_matches('\n'), &lines, "");
                    }
                }
            }
            if !out.exit.success() {
                return Ok(EXIT_TEST_FAILED);
            }
        }
        Ok(EXIT_OK)
    }
}

/// The doctests' listing as (stderr up to and with a `Doc-tests NAME` header, that package's listing):
/// each listing ends with libtest's `N tests, M benchmarks` line. When the two don't pair up, stderr
/// then stdout, whole.
fn doc_sections(stderr: &str, stdout: &str) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    let mut current = String::new();
    for line in stderr.lines() {
        current.push_str(line);
        current.push('\n');
        if line.trim_start().starts_with("Doc-tests ") {
            headers.push(std::mem::take(&mut current));
        }
    }
    let mut listings = Vec::new();
    let mut section = String::new();
    for line in stdout.lines() {
        section.push_str(line);
        section.push('\n');
        if is_list_end(line) {
            listings.push(std::mem::take(&mut section));
        }
    }
    if headers.len() != listings.len() || !section.trim().is_empty() {
        return vec![(stderr.to_string(), stdout.to_string())];
    }
    let mut out: Vec<(String, String)> = headers.into_iter().zip(listings).collect();
    if !current.is_empty() {
        out.push((current, String::new()));
    }
    out
}

/// libtest's last line of a listing: `3 tests, 0 benchmarks`.
fn is_list_end(line: &str) -> bool {
    let mut words = line.split_whitespace();
    matches!(
        (words.next(), words.next(), words.next(), words.next(), words.next()),
        (Some(n), Some("tests," | "test,"), Some(m), Some("benchmarks" | "benchmark"), None)
            if n.parse::<usize>().is_ok() && m.parse::<usize>().is_ok()
    )
}

/// cargo test's header line of a binary, `     Running ID (PATH)`.
fn header_of(binary: &TestBinary) -> String {
    format!(
        "     Running {} ({})",
        binary.id,
        binary.executable.display()
    )
}

/// A header on stderr, then a listing's output, each stream flushed before the other is written, so
/// that a terminal or a `2>&1` capture sees them in this order.
fn say(header: &str, stdout: &str, stderr: &str) {
    let _ = std::io::stdout().flush();
    if !header.is_empty() {
        crate::output::err(header);
    }
    let _ = std::io::stderr().flush();
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(stdout.as_bytes());
    let _ = out.flush();
    drop(out);
    crate::output::err_raw(stderr);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_doctest_header_goes_before_its_packages_listing() {
        let stderr = "   Compiling a\n   Doc-tests a\n   Doc-tests b\n";
        let stdout = "a.rs - x (line 1): test\n\n1 test, 0 benchmarks\n0 tests, 0 benchmarks\n";
        let parts = doc_sections(stderr, stdout);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, "   Compiling a\n   Doc-tests a\n");
        assert!(parts[0].1.ends_with("1 test, 0 benchmarks\n"));
        assert_eq!(
            parts[1],
            ("   Doc-tests b\n".into(), "0 tests, 0 benchmarks\n".into())
        );
    }

    #[test]
    fn listings_that_do_not_pair_up_come_whole() {
        let parts = doc_sections("   Doc-tests a\n", "garbage\n");
        assert_eq!(parts, vec![("   Doc-tests a\n".into(), "garbage\n".into())]);
    }
}
