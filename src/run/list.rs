//! Listing: asking each test binary which tests it will run (`--list --format terse`), in libtest's
//! order, which of them are ignored, and how many the filters leave out.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cargo::TestBinary;
use super::harness::Harness;
use super::unit::UnitKind;
use crate::cli::{RunIgnored, TestArgs};
use crate::errors::Error;
use crate::session::Session;
use crate::session::locked;
use crate::session::process::capture;

/// One binary's tests.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Selected tests, in the order libtest runs them.
    pub tests: Vec<String>,
    /// Those of `tests` that libtest will report as ignored (only computed when needed).
    pub ignored: HashSet<String>,
    /// Tests the filters (or `--ignored`) leave out.
    pub filtered_out: usize,
}

/// What listing runs binaries with: the session's environment and the services' (as the tests get
/// them), within a bound per listing.
#[derive(Clone, Copy)]
pub(crate) struct Lister<'a> {
    pub session: &'a Session,
    pub service_env: &'a [(String, String)],
    pub timeout: Duration,
}

/// Lists every binary whose unit is not run whole, `jobs` at a time; the results are in the order of
/// `binaries`, `None` for a binary to run whole. A binary whose listing fails is run whole too, as cargo
/// test runs it, with a warning: a run is never refused for how a harness lists.
pub(crate) fn list_all(
    binaries: &[Arc<TestBinary>],
    args: &TestArgs,
    kind: impl Fn(&TestBinary) -> UnitKind + Sync,
    lister: Lister<'_>,
    jobs: usize,
) -> Vec<Option<Listing>> {
    let next = Mutex::new(0usize);
    let results: Vec<Mutex<Option<Listing>>> = binaries.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, binaries.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut n = locked(&next);
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(binary) = binaries.get(i) else {
                        return;
                    };
                    let listing = match kind(binary) {
                        UnitKind::Whole => continue,
                        kind => list(binary, args, kind == UnitKind::Isolated, lister),
                    };
                    let listing = listing
                        .inspect_err(|e| {
                            crate::output::err(format!(
                                "warning: failed to {e}; running {} whole, as cargo test runs it",
                                binary.id
                            ))
                        })
                        .ok();
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = listing;
                }
            });
        }
    });
    results
        .into_iter()
        .map(|slot| slot.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

/// Lists one binary with the user's selection; with `need_ignored`, also which tests are ignored.
pub(crate) fn list(
    binary: &TestBinary,
    args: &TestArgs,
    need_ignored: bool,
    lister: Lister<'_>,
) -> Result<Listing, Error> {
    let tests = run_list(binary, &args.selection(), lister)?;
    let ignored = if need_ignored && args.ignored == RunIgnored::No {
        let mut only_ignored = args.clone();
        only_ignored.ignored = RunIgnored::Only;
        run_list(binary, &only_ignored.selection(), lister)?
            .into_iter()
            .collect()
    } else {
        HashSet::new()
    };
    let filtered_out = if args.narrows() {
        run_list(binary, &[], lister)?
            .len()
            .saturating_sub(tests.len())
    } else {
        0
    };
    Ok(Listing {
        tests,
        ignored,
        filtered_out,
    })
}

fn run_list(
    binary: &TestBinary,
    selection: &[String],
    lister: Lister<'_>,
) -> Result<Vec<String>, Error> {
    let Lister {
        session,
        service_env,
        timeout,
    } = lister;
    let mut command = binary.command();
    command
        .args(["--list", "--format", "terse"])
        .args(selection);
    if binary.harness == (Harness::Compatible { ordered: false }) {
        // libtest-mimic writes through anstream, which strips ANSI codes from a pipe: a test whose
        // name holds them would be listed under a name `--exact` cannot select. Forced colour keeps
        // the real names (its terse listing has no colour of its own).
        command.env("CLICOLOR_FORCE", "1");
    }
    session
        .configure(&mut command)
        .envs(service_env.iter().cloned());
    let fail = |reason: String| Error::List {
        binary: binary.id.clone(),
        reason,
    };
    let out = capture(&mut command, session, timeout)
        .map_err(|e| fail(format!("cannot start {}: {e}", binary.executable.display())))?;
    if out.timed_out {
        return Err(fail(format!(
            "`--list` did not finish within {}",
            humantime::format_duration(timeout)
        )));
    }
    if !out.exit.success() {
        let why = out
            .stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        return Err(fail(format!(
            "`--list --format terse` ended with {}: {why}",
            out.exit
        )));
    }
    parse_terse(&out.stdout).map_err(fail)
}

/// `name: test` / `name: benchmark` lines; anything else means the binary is not libtest-compatible.
/// A name may hold a newline (libtest-mimic prints names as they are): a line without the suffix is
/// the start of a name that the next lines go on with, until one has the suffix.
pub(crate) fn parse_terse(text: &str) -> Result<Vec<String>, String> {
    let mut tests = Vec::new();
    let mut pending: Option<String> = None;
    for line in text.lines() {
        if pending.is_none() && line.trim().is_empty() {
            continue;
        }
        let name = line
            .strip_suffix(": test")
            .or_else(|| line.strip_suffix(": benchmark"));
        match (name, pending.take()) {
            (Some(name), None) => tests.push(name.to_string()),
            (Some(name), Some(start)) => tests.push(format!("{start}\n{name}")),
            (None, None) => pending = Some(line.to_string()),
            (None, Some(start)) => pending = Some(format!("{start}\n{line}")),
        }
    }
    match pending {
        None => Ok(tests),
        Some(rest) => {
            let shown: String = rest.chars().take(60).collect();
            Err(format!(
                "its `--list --format terse` output is not libtest's (line `{shown}`)"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terse_lines_give_names_in_order() {
        let names = parse_terse("b::x: test\na y ✓: test\nbench_it: benchmark\n\n").unwrap();
        assert_eq!(names, ["b::x", "a y ✓", "bench_it"]);
    }

    #[test]
    fn anything_else_is_an_error_quoting_the_line() {
        let err = parse_terse("running 3 tests\n").unwrap_err();
        assert!(err.contains("running 3 tests"), "{err}");
    }

    #[test]
    fn a_name_with_a_newline_spans_lines() {
        let names = parse_terse("a\nname with\nnewlines: test\nplain: test\n").unwrap();
        assert_eq!(names, ["a\nname with\nnewlines", "plain"]);
    }
}
