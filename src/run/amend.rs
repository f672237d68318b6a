//! What the scheduler adds to the results of finished units: the output a recovery rerun fetched for a
//! failure, notes (services that had stopped, a service waited for), and the tests of units that never
//! started.

use super::report::{NotRun, Outcome, RunSummary, TestResult};
use super::unit::{UnitKind, UnitSpec};
use crate::services::Death;

/// The tests of a unit that never started (the whole binary when its tests are not known).
pub(super) fn not_run_of(spec: &UnitSpec) -> Vec<NotRun> {
    // A retry's test is counted as the failure it was held back for.
    if spec.recovery || spec.retry > 0 {
        return Vec::new();
    }
    let names: Vec<String> = match spec.kind {
        UnitKind::Whole => vec![String::new()],
        _ => spec.tests.clone(),
    };
    names
        .into_iter()
        .map(|name| NotRun {
            binary: spec.binary_id.clone(),
            name,
        })
        .collect()
}

/// A failure's output, recovered by running the test alone: it goes to the original result, marked
/// as coming from a rerun; the rerun's own verdict is only mentioned.
pub(super) fn recovered(summary: &mut RunSummary, rerun: TestResult) {
    let Some(original) = summary
        .results
        .iter_mut()
        .find(|r| r.binary == rerun.binary && r.name == rerun.name && r.outcome.is_failure())
    else {
        return;
    };
    let verdict = match rerun.outcome {
        Outcome::Passed => "passed (the failure may depend on the other tests)",
        Outcome::Ignored => "was ignored",
        _ => "failed again",
    };
    let text = rerun.output.unwrap_or_default();
    original.output = Some(format!(
        "[output from a rerun of this test alone with --exact, which {verdict}; the shared run was \
         stopped before libtest printed the original]\n{text}"
    ));
}

/// Adds to a failure's note that services had stopped before it was reported.
pub(super) fn annotate(result: &mut TestResult, deaths: &[Death]) {
    for death in deaths {
        let line = format!("note: {} before this failure was reported", death.line());
        add_note(result, line);
    }
}

/// Appends a line to a result's note.
pub(super) fn add_note(result: &mut TestResult, line: String) {
    result.note = Some(match result.note.take() {
        Some(note) => format!("{note}\n{line}"),
        None => line,
    });
}
