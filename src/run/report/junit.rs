//! JUnit XML (`--junit PATH`): one test suite per binary (and one for doctests), one case per test.

use std::collections::BTreeMap;
use std::path::Path;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::{Outcome, RunSummary, TestResult};
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
        let mut case = TestCase::new(r.name.clone(), status);
        case.set_classname(r.binary.clone()).set_time(r.duration);
        if let Some(out) = r.output.as_deref().filter(|_| r.outcome.is_failure()) {
            case.set_system_out_lossy(out);
        }
        suite.add_test_case(case);
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
    for n in &summary.not_run {
        let suite = suites
            .entry(n.binary.as_str())
            .or_insert_with(|| TestSuite::new(n.binary.clone()));
        let mut status = TestCaseStatus::skipped();
        status.set_message("not run: the run was interrupted before it started");
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
