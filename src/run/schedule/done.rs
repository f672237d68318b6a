//! What a unit that is done comes to: its results counted (retries, flaky tests, notes of the services
//! it waited for), its problem, its leftovers and the containers it left running, and what runs again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use super::Scheduler;
use crate::contract::DOCTESTS_ID;
use crate::run::amend::{add_note, annotate, recovered};
use crate::run::databases;
use crate::run::fail_fast::FailFast;
use crate::run::leftovers;
use crate::run::report::{NotRun, Outcome, RunSummary, TestResult, full_name};
use crate::run::retry::Next;
use crate::run::unit::{Finished, RunningUnit, UnitKind, UnitSpec};
use crate::services::Death;
use crate::session::process::UnitId;

impl Scheduler<'_> {
    /// A test's name as the report shows it: a doctest's by `cargo::doctest_name`, others as they are.
    pub(super) fn shown_name<'n>(&self, binary: &str, name: &'n str) -> std::borrow::Cow<'n, str> {
        if binary == DOCTESTS_ID && !name.is_empty() {
            crate::run::cargo::doctest_name(name, self.ctx.doc_prefixes).into()
        } else {
            name.into()
        }
    }

    /// Takes in a unit that ended: its results, problems and leftovers go to the summary (unless
    /// fail-fast has left its binary out), and what must run next comes back: the tests it did not
    /// finish, and reruns that recover failures' output.
    pub(super) fn unit_done(
        &mut self,
        mut unit: RunningUnit,
        summary: &mut RunSummary,
        fail_fast: &mut FailFast,
    ) -> Vec<UnitSpec> {
        let label = match unit.spec.kind {
            UnitKind::Isolated => full_name(&unit.spec.binary_id, &unit.spec.tests[0]),
            _ => unit.spec.binary_id.clone(),
        };
        let pid = unit.pid;
        let unit_kind = unit.spec.kind;
        let unit_test = (unit_kind == UnitKind::Isolated).then(|| unit.spec.tests[0].clone());
        let unit_binary = unit.spec.binary_id.clone();
        let order = unit.spec.order;
        let recovery = unit.spec.recovery;
        // What retries are made from (`finish` consumes the unit); its test list is not needed.
        let spec = unit.spec.with_tests(Vec::new());
        let mut retries = Vec::new();
        let counts = !fail_fast.leaves_out(&unit.spec);
        let interrupted = self.ctx.session.interrupted_by().is_some();
        let leases = std::mem::take(&mut unit.leases);
        let temp = unit.temp.take();
        let mut finished = unit.finish(Instant::now(), self.settings, interrupted);
        if let Some(dir) = temp {
            self.tidy_temp(summary, &label, dir, &finished);
        }
        databases::process_ended(&self.ctx, &self.reporter, (pid, &label), leases, &finished);
        for result in finished
            .results
            .iter_mut()
            .filter(|r| r.binary == DOCTESTS_ID)
        {
            result.name = self.shown_name(&result.binary, &result.name).into_owned();
        }
        // Forgotten only now that `finish` has released its leader: until then the exited leader is a
        // known child, which the session's zombie reaping must leave alone.
        self.ctx.session.remove_group(pid);
        let leaked = !finished.leftovers.is_empty();
        if self.settings.leak_fails && leaked && unit_kind == UnitKind::Isolated {
            // Isolated, the test itself fails; shared, the binary does (in `leftovers`).
            if let [only] = finished.results.as_mut_slice()
                && only.outcome == Outcome::Passed
            {
                only.outcome = Outcome::Failed;
                only.note = Some(format!(
                    "left {} process(es) behind",
                    finished.leftovers.len()
                ));
                only.announced = false;
            }
        }
        if recovery {
            if let Some(rerun) = finished.results.pop() {
                recovered(summary, rerun);
            }
        } else if counts {
            retries = self.count(&mut finished, &spec, summary);
        }
        if !finished.leftovers.is_empty() {
            self.leftovers(summary, label.clone(), finished.leftovers);
        }
        // Containers the unit started through the proxy and left running (swept with the session),
        // asked of the engine off this thread. A shared binary that is started again for unfinished
        // tests is judged when it is done.
        let judged_later = unit_kind == UnitKind::Shared && finished.rerun.is_some();
        if !judged_later
            && let Some(query) = self
                .ctx
                .session
                .leak_query(&unit_binary, unit_test.as_deref())
        {
            self.leaks.ask(&self.events.0, label, order, query);
        }
        if !counts || interrupted {
            return Vec::new();
        }
        // A test that will run again alone shows its output then: no recovery rerun for it.
        finished
            .recover
            .retain(|r| !self.retries.holds(&r.binary_id, &r.tests[0]));
        retries
            .into_iter()
            .chain(finished.recover)
            .chain(finished.rerun)
            .collect()
    }

    /// Counts a done unit's results into the summary (those to retry are taken out and returned), with
    /// its problem, and its stray output when it is shown.
    fn count(
        &mut self,
        finished: &mut Finished,
        spec: &UnitSpec,
        summary: &mut RunSummary,
    ) -> Vec<UnitSpec> {
        let binary = &spec.binary_id;
        summary.filtered_out += finished.filtered_out;
        summary.measured += finished.measured;
        summary
            .not_run
            .extend(finished.not_run.iter().map(|name| NotRun {
                binary: binary.clone(),
                name: name.clone(),
            }));
        let deaths = self.services.deaths();
        let results_from = summary.results.len();
        let mut retries = Vec::new();
        for result in std::mem::take(&mut finished.results) {
            match self.retries.take(result, spec, self.settings) {
                Next::Retry(retry) => {
                    let of = self.settings.retries_for(&retry.binary_id, &retry.tests[0]);
                    self.reporter
                        .retry(&retry.binary_id, &retry.tests[0], retry.retry, of);
                    retries.push(retry);
                }
                Next::Count(result) => {
                    let result = self.counted(result, &deaths);
                    self.reporter.test_finished(&result);
                    summary.results.push(result);
                }
            }
        }
        let unit_failed = finished.problem.is_some()
            || summary.results[results_from..]
                .iter()
                .any(|r| r.outcome.is_failure());
        if let Some(problem) = finished.problem.take() {
            self.reporter
                .warn(&format!("{}: {}", problem.binary, problem.message));
            summary.problems.push(problem);
        }
        // Shown with failures, as a failure's output is (and with --show-output): never dropped.
        if let Some(stray) = finished.stray.take()
            && (unit_failed || self.reporter.keeps_passing_output())
        {
            summary.stray.push((binary.clone(), stray));
        }
        retries
    }

    /// A result as it is counted: flaky said, a failure noted with the services that died, a timeout
    /// with the service it waited for, and only the output that will be shown kept.
    fn counted(&self, mut result: TestResult, deaths: &[Death]) -> TestResult {
        if result.is_flaky() {
            self.reporter.flaky(&result);
        }
        if result.outcome.is_failure() && !deaths.is_empty() {
            annotate(&mut result, deaths);
        }
        if result.outcome == Outcome::TimedOut
            && let Some(service) = self.services.waited_for(&result.binary, &result.name)
        {
            add_note(
                &mut result,
                format!("timed out waiting for service {service}"),
            );
        }
        // Only failures' output is shown (and passes' with --show-output): drop the rest.
        let keep = result.outcome.is_failure()
            || (result.outcome == Outcome::Passed && self.reporter.keeps_passing_output());
        if !keep {
            result.output = None;
        }
        result
    }

    /// Processes that left their unit's group and were adopted by the runner: killed once the unit they
    /// come from (`Origins::of`) is over; ones that cannot be attributed wait for the run's end.
    pub(super) fn reap_escaped(
        &mut self,
        running: &HashMap<UnitId, RunningUnit>,
        summary: &mut RunSummary,
    ) {
        let origins = &self.origins;
        let escaped = self.ctx.session.reap_adopted(|e| {
            let Some(unit) = origins.of(e) else {
                return true;
            };
            running.values().any(|u| {
                u.spec.binary_id == unit.binary
                    && (u.spec.kind != UnitKind::Isolated
                        || unit.test.as_deref() == u.spec.tests.first().map(String::as_str))
            })
        });
        leftovers::report_escaped(
            &self.reporter,
            summary,
            self.settings.leak_fails,
            &self.origins,
            escaped,
        );
    }

    /// The temporary directory of a unit that is done (its processes are gone): kept when it failed
    /// under `--keep-on-failure`, else handed back (`TempPool::give_back`: reused when empty, else
    /// removed), what was in it said in the summary.
    fn tidy_temp(&self, summary: &mut RunSummary, label: &str, dir: PathBuf, finished: &Finished) {
        let failed =
            finished.problem.is_some() || finished.results.iter().any(|r| r.outcome.is_failure());
        if self.ctx.keep_on_failure && failed {
            summary.kept_temp.push((label.to_string(), dir));
            return;
        }
        let tidied = self.ctx.temps.give_back(dir);
        if !tidied.is_empty() {
            leftovers::report_files(summary, label.to_string(), &tidied);
        }
    }

    /// Reports processes a unit left behind (already killed); see `leftovers::report`.
    fn leftovers(&mut self, summary: &mut RunSummary, unit: String, processes: Vec<String>) {
        leftovers::report(
            &self.reporter,
            summary,
            self.settings.leak_fails,
            unit,
            processes,
        );
    }
}
