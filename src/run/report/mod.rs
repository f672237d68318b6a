//! Reporting: what a run produced (results, problems, leftovers, the total line) and how it is shown:
//! `live` prints while the run goes (an indicatif progress bar on a terminal, plain cargo-test-like
//! lines otherwise or when `CI` is set), `summary` prints the end of the run, whose last line is always
//! the single cargo-style total, and `junit` writes `--junit PATH`.

mod gate;
mod junit;
mod live;
mod rerun;
mod summary;

use std::time::Duration;

pub(crate) use junit::write as write_junit;
pub(crate) use live::Reporter;
pub(crate) use rerun::{hint as rerun_hint, quote};

/// The result of one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Passed,
    Failed,
    Ignored,
    TimedOut,
    /// Running when the run was interrupted (Ctrl-C, a CI's cancellation): counted as failed.
    Interrupted,
}

impl Outcome {
    pub(crate) fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::Failed | Outcome::TimedOut | Outcome::Interrupted
        )
    }

    pub(crate) fn word(self) -> &'static str {
        match self {
            Outcome::Passed => "ok",
            Outcome::Failed => "FAILED",
            Outcome::Ignored => "ignored",
            Outcome::TimedOut => "TIMEOUT",
            Outcome::Interrupted => "INTERRUPTED",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TestResult {
    pub binary: String,
    pub name: String,
    pub outcome: Outcome,
    pub duration: Duration,
    /// What the test printed, when known.
    pub output: Option<String>,
    pub note: Option<String>,
    /// Already printed live, when libtest reported it (or when it timed out).
    pub announced: bool,
    /// Counted in the total line. A binary run whole that printed no results of its own gets one
    /// binary-level result, shown and written to JUnit but not counted, as cargo test counts none.
    pub counted: bool,
    /// The failed runs before this one (`--retries`), oldest first: with a pass, the test is flaky.
    pub attempts: Vec<Attempt>,
    /// A flaky test failed by `flaky-result = "fail"`.
    pub flaky_failed: bool,
}

/// One failed run of a test that was retried.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub outcome: Outcome,
    pub duration: Duration,
    pub output: Option<String>,
    pub note: Option<String>,
}

impl TestResult {
    /// A counted result with nothing more to say (an ignored test known from the listing, say).
    pub(crate) fn new(binary: &str, name: String, outcome: Outcome) -> TestResult {
        TestResult {
            binary: binary.to_string(),
            name,
            outcome,
            duration: Duration::ZERO,
            output: None,
            note: None,
            announced: false,
            counted: true,
            attempts: Vec::new(),
            flaky_failed: false,
        }
    }

    /// Failed, then passed on a retry (counted as passed unless `flaky-result = "fail"` made it a
    /// failure, which keeps its attempts).
    pub(crate) fn is_flaky(&self) -> bool {
        !self.attempts.is_empty() && (self.outcome == Outcome::Passed || self.flaky_failed)
    }

    /// `binary::name`, or the binary alone for a binary-level result.
    pub(crate) fn full_name(&self) -> String {
        full_name(&self.binary, &self.name)
    }
}

/// `binary::name`, or the binary alone for a binary-level result (an empty name).
pub(crate) fn full_name(binary: &str, name: &str) -> String {
    if name.is_empty() {
        binary.to_string()
    } else {
        format!("{binary}::{name}")
    }
}

/// A failure of a whole process that no single test accounts for.
#[derive(Debug, Clone)]
pub(crate) struct UnitProblem {
    pub binary: String,
    pub message: String,
    pub output: String,
}

/// What a unit left behind: processes killed, containers left running (swept with the session), or
/// files in its temporary directory (removed).
#[derive(Debug, Clone)]
pub(crate) struct Leftover {
    pub unit: String,
    /// What follows "left": `2 process(es)`, `3 file(s) (1.0 MiB) in its temporary directory
    /// (removed)`.
    pub what: String,
    /// The first few of them, one a line.
    pub items: Vec<String>,
}

/// Everything the run produced.
#[derive(Debug, Default)]
pub(crate) struct RunSummary {
    pub results: Vec<TestResult>,
    pub problems: Vec<UnitProblem>,
    pub leftovers: Vec<Leftover>,
    pub filtered_out: usize,
    /// Benchmarks measured, from the `test result:` lines of the binaries that print them (bencher).
    pub measured: usize,
    pub elapsed: Duration,
    pub session: String,
    /// The run was stopped by a signal before every test could finish.
    pub interrupted: bool,
    /// `--keep-on-failure` kept the session's containers (the leftovers heading says so).
    pub kept: bool,
    /// What the session's end did with Docker resources, printed just before the total.
    pub docker_lines: Vec<String>,
    /// Session services that stopped during the run.
    pub service_deaths: Vec<crate::services::Death>,
    /// Where the services' logs were saved (when tests failed or a service stopped).
    pub service_logs: Option<std::path::PathBuf>,
    /// Tests (or whole binaries) that never started because the run was interrupted: listed in the
    /// summary and in JUnit as skipped, not counted in the total line (cargo test never reached them).
    pub not_run: Vec<NotRun>,
    /// Commands that rerun the failures (`rerun`), printed after them.
    pub rerun: Vec<String>,
    /// Output of a binary that bypassed libtest's capture while several of its tests (or none) ran,
    /// for binaries with a failure (and every binary with `--show-output`): `(binary, text)`.
    pub stray: Vec<(String, String)>,
    /// Binaries fail-fast left out after the first failing one, in cargo test's order (their results,
    /// if they ran alongside, are not counted, as cargo test would not have reached them).
    pub fail_fast_skipped: Vec<String>,
    /// `--max-fail N` when it was reached, and the tests (or whole binaries) it kept from starting.
    pub max_fail: Option<u32>,
    pub max_fail_skipped: Vec<NotRun>,
    /// `partition hash:2/3: 20 of 61 tests`, with `--partition`.
    pub partition: Option<String>,
    /// The session's peak container count and memory, when it had containers.
    pub peak: Option<String>,
    /// `--isolate`: every test ran in a process of its own, so what it printed is all there was.
    pub isolated: bool,
    /// `--keep-on-failure`: the temporary directories of failed units, kept: `(unit, path)`.
    pub kept_temp: Vec<(String, std::path::PathBuf)>,
}

/// A test (or a whole binary, with an empty name) that never started.
#[derive(Debug, Clone)]
pub(crate) struct NotRun {
    pub binary: String,
    pub name: String,
}

impl RunSummary {
    pub(crate) fn count(&self, outcome: Outcome) -> usize {
        self.results
            .iter()
            .filter(|r| r.counted && r.outcome == outcome)
            .count()
    }

    /// Whether the run failed: a test failed, the run had a problem, or it was interrupted.
    pub(crate) fn failed(&self) -> bool {
        self.interrupted || self.tests_failed()
    }

    /// Whether a test failed or the run had a problem: what `--keep-on-failure` keeps resources for
    /// and the services' logs are saved for. An interrupt alone is not such a failure (the user
    /// stopped the run; there is nothing to inspect).
    pub(crate) fn tests_failed(&self) -> bool {
        !self.problems.is_empty() || self.results.iter().any(|r| r.outcome.is_failure())
    }

    /// `test result: ok. N passed; M failed; K ignored; 0 measured; F filtered out; finished in X.XXs`
    pub(crate) fn total_line(&self) -> String {
        format!(
            "test result: {}. {} passed; {} failed; {} ignored; {} measured; {} filtered out; finished in {:.2}s",
            if self.failed() { "FAILED" } else { "ok" },
            self.count(Outcome::Passed),
            self.count(Outcome::Failed)
                + self.count(Outcome::TimedOut)
                + self.count(Outcome::Interrupted),
            self.count(Outcome::Ignored),
            self.measured,
            self.filtered_out,
            self.elapsed.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result of `pkg::t` (shared with the other report tests).
    pub(super) fn result(outcome: Outcome) -> TestResult {
        TestResult::new("pkg", "t".into(), outcome)
    }

    #[test]
    fn total_line_counts_timeouts_as_failures() {
        let s = RunSummary {
            results: vec![
                result(Outcome::Passed),
                result(Outcome::TimedOut),
                result(Outcome::Ignored),
            ],
            filtered_out: 4,
            elapsed: Duration::from_millis(1234),
            ..Default::default()
        };
        assert_eq!(
            s.total_line(),
            "test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 4 filtered out; finished in 1.23s"
        );
    }
}
