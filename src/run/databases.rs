//! The run's side of per-test databases (`isolate`): what a test asked for (`cleantest::database`)
//! ends with its result line, what a process was given ends with the process, and with
//! `--keep-on-failure` a failed holder's databases are kept and named next to the failure.

use super::report::{Reporter, full_name};
use super::tracker::Verdict;
use super::unit::{CommandContext, Finished, RunningUnit, outcome_of};
use crate::services::{Database, Lease, settle};

/// The test at `index` of `unit` has its result, `verdict`.
pub(super) fn test_ended(
    ctx: &CommandContext<'_>,
    reporter: &Reporter,
    unit: &RunningUnit,
    index: usize,
    verdict: Verdict,
) {
    let keep = ctx.keep_on_failure && outcome_of(verdict).is_failure();
    let test = &unit.tracker.names()[index];
    let kept = ctx.databases.release_test(unit.pid, test, keep);
    if !kept.is_empty() {
        say_kept(reporter, &full_name(&unit.spec.binary_id, test), &kept);
    }
}

/// The process `pid` (shown as `label`) ended: its own databases (`leases`), and what its tests still
/// hold, end with it.
pub(super) fn process_ended(
    ctx: &CommandContext<'_>,
    reporter: &Reporter,
    (pid, label): (i32, &str),
    leases: Vec<Lease>,
    finished: &Finished,
) {
    let keep = ctx.keep_on_failure
        && (finished.problem.is_some() || finished.results.iter().any(|r| r.outcome.is_failure()));
    let mut kept = settle(leases, keep);
    kept.extend(ctx.databases.release_process(pid, keep));
    say_kept(reporter, label, &kept);
}

/// Names the databases kept for `holder`, ready for a client.
fn say_kept(reporter: &Reporter, holder: &str, kept: &[Database]) {
    for database in kept {
        reporter.note(&database.kept_line(holder));
    }
}
