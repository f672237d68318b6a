//! JUnit XML (`--junit PATH`): one test suite per binary (and one for doctests), one case per test.

use std::collections::BTreeMap;
use std::path::Path;

use quick_junit::{
    FlakyOrRerun, NonSuccessKind, Report, TestCase, TestCaseStatus, TestRerun, TestSuite,
};

use super::{Attempt, Outcome, RunSummary, TestResult};
use crate::errors::Error;

pub(crate) fn write(path: &Path, summary: &RunSummary) -> Result<(), Error> {
    let fail = |message: String| Error::Junit {
        path: path.to_path_buf(),
        message,
    };
    let mut report = Report::new("cargo-cleantest");
    report.set_time(summary.elapsed);
    let mut suites: BTreeMap<&str, TestSuite> = BTreeMap::new();
    for r in &summary.results {
        let suite = suites.entry(r.binary.as_str()).or_insert_with(|| {
            let mut s = TestSuite::new(r.binary.clone());
            s.add_property(("cleantest.session", summary.session.as_str()));
            for death in &summary.service_deaths {
                let key = format!("cleantest.service.{}", death.service);
                s.add_property((key.as_str(), death.what().as_str()));
            }
            s
        });
        // A binary run whole that printed no results of its own and passed: the total line counts no
        // test for it (as cargo test), so neither does JUnit; the suite says how it ended. One that
        // failed stays a failing case, so the report fails as the run did.
        if !r.counted && !r.outcome.is_failure() {
            suite.add_property((
                "cleantest.exit-status",
                "ok (the binary printed no test results; none counted, as under cargo test)",
            ));
            continue;
        }
        let mut status = match r.outcome {
            Outcome::Passed => TestCaseStatus::success(),
            Outcome::Ignored => TestCaseStatus::skipped(),
            Outcome::Failed => TestCaseStatus::non_success(NonSuccessKind::Failure),
            Outcome::TimedOut => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_type("timeout");
                s
            }
            Outcome::Interrupted => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_type("interrupted");
                s
            }
        };
        if let Some(message) = r.note.clone().or_else(|| failure_message(r)) {
            status.set_message(message);
        }
        // Earlier failed runs, as surefire and nextest write them: `flakyFailure` in a test that
        // passed (or is failed only by `flaky-result = "fail"`), `rerunFailure` in one that never did.
        status.add_reruns(r.attempts.iter().map(rerun));
        if r.flaky_failed {
            status.set_rerun_kind(FlakyOrRerun::Flaky);
        }
        let mut case = TestCase::new(r.name.clone(), status);
        case.set_classname(r.binary.clone()).set_time(r.duration);
        if let Some(out) = r.output.as_deref().filter(|_| r.outcome.is_failure()) {
            case.set_system_out_lossy(out);
        }
        suite.add_test_case(case);
    }
    for (binary, text) in &summary.stray {
        if let Some(suite) = suites.get_mut(binary.as_str()) {
            suite.set_system_err_lossy(format!(
                "printed outside libtest's capture while several of its tests ran:\n{text}"
            ));
        }
    }
    for p in &summary.problems {
        let suite = suites
            .entry(p.binary.as_str())
            .or_insert_with(|| TestSuite::new(p.binary.clone()));
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
        status.set_message(p.message.clone());
        let mut case = TestCase::new("(process)", status);
        case.set_system_out_lossy(&p.output);
        suite.add_test_case(case);
    }
    let max_fail = summary
        .max_fail
        .map(|n| format!("not run: --max-fail {n} was reached before it started"));
    let not_run = summary
        .not_run
        .iter()
        .map(|n| (n, "not run: the run was interrupted before it started"))
        .chain(
            summary
                .max_fail_skipped
                .iter()
                .map(|n| (n, max_fail.as_deref().unwrap_or_default())),
        );
    for (n, why) in not_run {
        let suite = suites
            .entry(n.binary.as_str())
            .or_insert_with(|| TestSuite::new(n.binary.clone()));
        let mut status = TestCaseStatus::skipped();
        status.set_message(why);
        let mut case = TestCase::new(n.name.clone(), status);
        case.set_classname(n.binary.clone());
        suite.add_test_case(case);
    }
    report.add_test_suites(suites.into_values());
    let xml = report.to_string().map_err(|e| fail(e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    }
    std::fs::write(path, xml).map_err(|e| fail(e.to_string()))
}

/// One earlier failed run of a retried test.
fn rerun(attempt: &Attempt) -> TestRerun {
    let mut rerun = TestRerun::new(NonSuccessKind::Failure);
    rerun.set_time(attempt.duration);
    if attempt.outcome == Outcome::TimedOut {
        rerun.set_type("timeout");
    }
    let as_result = TestResult {
        output: attempt.output.clone(),
        ..TestResult::new("", String::new(), attempt.outcome)
    };
    if let Some(message) = attempt.note.clone().or_else(|| failure_message(&as_result)) {
        rerun.set_message(message);
    }
    if let Some(out) = attempt.output.as_deref() {
        rerun.set_system_out_lossy(out);
    }
    rerun
}

/// The line a failed test's output gives as its reason: the panic message after libtest's
/// `thread '…' panicked at FILE:LINE:COL:` line, else that line, else the first line.
fn failure_message(r: &TestResult) -> Option<String> {
    if !r.outcome.is_failure() {
        return None;
    }
    let output = r.output.as_deref().unwrap_or("");
    let lines: Vec<&str> = output.lines().map(str::trim).collect();
    let at = lines.iter().position(|l| l.contains("panicked at"));
    let line = match at {
        Some(i) => lines
            .get(i + 1)
            .filter(|l| !l.is_empty())
            .unwrap_or(&lines[i]),
        None => lines.iter().find(|l| !l.is_empty()).unwrap_or(&"failed"),
    };
    Some(line.to_string())
}
