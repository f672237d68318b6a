//! Scheduling: the loop that runs a `Plan`'s units, at most `slots` at a time, applying fail-fast,
//! timeouts, reruns and signals. The loop owns all unit state; threads only send it events.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::amend::{add_note, annotate, not_run_of, recovered};
use super::databases;
use super::fail_fast::{FailFast, MaxFail, Unfinished};
use super::leak_check::{self, LeakCheck};
use super::leftovers::{self, Origins};
use super::plan::Plan;
use super::report::{NotRun, Outcome, Reporter, RunSummary, UnitProblem, full_name};
use super::retry::{Next, Retries};
use super::unit::{CommandContext, RunningUnit, UnitKind, UnitSpec, outcome_of};
use crate::config::Settings;
use crate::contract::DOCTESTS_ID;
use crate::services::Monitor;
use crate::session::process::{Event, UnitId};

/// Runs a plan to the end (or to an interrupt).
pub(crate) struct Scheduler<'a> {
    pub settings: &'a Settings,
    pub ctx: CommandContext<'a>,
    pub reporter: Reporter,
    pub slots: usize,
    pub fail_fast: bool,
    pub events: (Sender<Event>, Receiver<Event>),
    pub leaks: LeakCheck,
    /// The session's services: a failure reported after one of them stopped says so.
    pub services: Monitor,
    /// Failed tests waiting for a retry.
    pub retries: Retries,
    /// `--max-fail N`: no unit starts after N failures.
    pub max_fail: MaxFail,
    /// The unit of every process group the run started, for what escapes them.
    pub origins: Origins,
}

impl Scheduler<'_> {
    /// Runs the plan; returns what it produced, the reporter, and the units' groups (for the processes
    /// the session's end still finds).
    pub(crate) fn run(mut self, plan: Plan, started: Instant) -> (RunSummary, Reporter, Origins) {
        let mut summary = RunSummary {
            filtered_out: plan.filtered_out,
            ..Default::default()
        };
        for result in plan.preset {
            self.reporter.test_finished(&result);
            summary.results.push(result);
        }
        let mut queue = plan.queue;
        let mut running: HashMap<UnitId, RunningUnit> = HashMap::new();
        let mut next_id: UnitId = 0;
        let mut fail_fast = FailFast::new(&queue);
        let mut unfinished = Unfinished::of(&queue);
        let mut signals_seen = 0;
        let mut end_wait: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let stopping = self.ctx.session.interrupted_by().is_some();
            let max_reached = self.max_fail.reached(&summary);
            while !stopping && !max_reached && running.len() < self.slots {
                let Some(spec) = queue.pop_front() else { break };
                if fail_fast.leaves_out(&spec) {
                    unfinished.done(spec.order);
                    continue; // fail-fast: nothing after the first failing binary, as cargo test
                }
                let binary_id = spec.binary_id.clone();
                let order = spec.order;
                if spec.recovery {
                    // Running a failed test again can have side effects: say so, once.
                    self.reporter.note(&format!(
                        "rerunning {} alone to recover its output (its failure is already counted)",
                        full_name(&spec.binary_id, &spec.tests[0])
                    ));
                }
                match RunningUnit::start(next_id, spec, &self.ctx, &self.events.0) {
                    Ok(unit) => {
                        let test = (unit.spec.kind == UnitKind::Isolated)
                            .then(|| unit.spec.tests[0].as_str());
                        self.origins.started(unit.pid, &unit.spec.binary_id, test);
                        running.insert(next_id, unit);
                    }
                    Err(e) => {
                        unfinished.done(order);
                        summary.problems.push(UnitProblem {
                            binary: binary_id,
                            message: format!("could not start the test process: {e}"),
                            output: String::new(),
                        })
                    }
                }
                next_id += 1;
            }
            if running.is_empty()
                && (queue.is_empty() || stopping || max_reached)
                && self.leak_checks_settled(&mut end_wait, now, signals_seen)
            {
                break;
            }
            let mut deadline = running
                .values()
                .filter_map(|u| u.next_deadline(self.settings))
                .min();
            deadline = Some(deadline.map_or(now + Duration::from_millis(250), |d| {
                d.min(now + Duration::from_millis(250))
            }));
            let wait = deadline.map_or(Duration::from_millis(250), |d| {
                d.saturating_duration_since(now)
            });
            let mut tripped = Vec::new();
            match self.events.1.recv_timeout(wait) {
                Ok(event) => tripped.extend(self.handle(
                    event,
                    &mut running,
                    &mut signals_seen,
                    &mut summary,
                )),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(event) = self.events.1.try_recv() {
                tripped.extend(self.handle(event, &mut running, &mut signals_seen, &mut summary));
            }
            let now = Instant::now();
            for order in tripped {
                self.trip_fail_fast(&mut fail_fast, order, &mut running, now);
            }
            let mut done = Vec::new();
            for (id, unit) in running.iter_mut() {
                for name in unit.tick(now, self.settings) {
                    if unit.spec.recovery {
                        continue;
                    }
                    let limit = self.settings.timeout_for(&unit.spec.binary_id, &name);
                    self.reporter
                        .announce(&unit.spec.binary_id, &name, Outcome::TimedOut, limit);
                }
                for (name, over) in unit.heartbeats(now, self.settings.heartbeat) {
                    self.reporter
                        .heartbeat(&full_name(&unit.spec.binary_id, &name), over);
                }
                if unit.is_done(now) {
                    done.push(*id);
                }
            }
            done.sort_unstable();
            let any_done = !done.is_empty();
            for id in done {
                let unit = running.remove(&id).expect("done unit is running");
                let order = unit.spec.order;
                let (results_before, problems_before) =
                    (summary.results.len(), summary.problems.len());
                for more in self.unit_done(unit, &mut summary, &mut fail_fast) {
                    unfinished.add(more.order);
                    queue.push_front(more);
                }
                unfinished.done(order);
                let failed = summary.problems.len() > problems_before
                    || summary.results[results_before..]
                        .iter()
                        .any(|r| r.outcome.is_failure());
                if failed {
                    self.trip_fail_fast(&mut fail_fast, order, &mut running, now);
                }
            }
            // Where there is no subreaper, a periodic snapshot of the process tree (`lineage`).
            self.ctx.session.observe_lineage_if_due();
            // Escapees are adopted when their parent dies and are only killed once their unit is over:
            // look for them when a unit ended, not on every event.
            if any_done {
                self.reap_escaped(&running, &mut summary);
            }
            self.reporter
                .advance(unfinished.frontier(), fail_fast.cut());
            let now = Instant::now();
            let names: Vec<(String, Duration)> = running
                .values()
                .flat_map(|u| u.running_tests(now))
                .collect();
            self.reporter.running(&names);
        }
        if self.ctx.session.interrupted_by().is_some() {
            summary.not_run.extend(queue.iter().flat_map(not_run_of));
        } else if self.max_fail.reached(&summary) && !queue.is_empty() {
            summary.max_fail = self.max_fail.limit;
            summary
                .max_fail_skipped
                .extend(queue.iter().flat_map(not_run_of));
        }
        // Failures whose retry never ran count as the failures they were.
        for result in self.retries.drain() {
            self.reporter.test_finished(&result);
            summary.results.push(result);
        }
        fail_fast.apply(&mut summary);
        summary.elapsed = started.elapsed();
        summary.session = self.ctx.session.id().to_string();
        summary.interrupted = self.ctx.session.interrupted_by().is_some();
        (summary, self.reporter, self.origins)
    }

    /// A test's name as the report shows it: a doctest's by `cargo::doctest_name`, others as they are.
    fn shown_name<'n>(&self, binary: &str, name: &'n str) -> std::borrow::Cow<'n, str> {
        if binary == DOCTESTS_ID && !name.is_empty() {
            super::cargo::doctest_name(name, self.ctx.doc_prefixes).into()
        } else {
            name.into()
        }
    }

    /// With fail-fast, a failure in the binary of run order `order` stops the binaries after it.
    fn trip_fail_fast(
        &self,
        fail_fast: &mut FailFast,
        order: usize,
        running: &mut HashMap<UnitId, RunningUnit>,
        now: Instant,
    ) {
        if self.fail_fast && fail_fast.trip(order) {
            for unit in running
                .values_mut()
                .filter(|u| fail_fast.excludes(u.spec.order))
            {
                unit.cancel(now, self.settings.grace_period);
            }
        }
    }

    /// Whether the run may end as far as leak checks go: none is out, or the end has waited for them
    /// for `leak_check::END_WAIT` (or a second signal asked to stop at once). Units left unchecked are
    /// named; the session's sweep removes their containers either way.
    fn leak_checks_settled(
        &mut self,
        end_wait: &mut Option<Instant>,
        now: Instant,
        signals_seen: usize,
    ) -> bool {
        let pending = self.leaks.pending();
        if pending.is_empty() {
            return true;
        }
        let since = *end_wait.get_or_insert(now);
        if now < since + leak_check::END_WAIT && signals_seen < 2 {
            return false;
        }
        self.reporter.warn(&format!(
            "the engine did not say in time which containers {} left running; the session's sweep \
             removes them",
            pending.join(", ")
        ));
        true
    }

    /// Takes in a unit that ended: its results, problems and leftovers go to the summary (unless
    /// fail-fast has left its binary out), and what must run next comes back: the tests it did not
    /// finish, and reruns that recover failures' output.
    fn unit_done(
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
        let mut finished = unit.finish(Instant::now(), self.settings, interrupted);
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
            summary.filtered_out += finished.filtered_out;
            summary.measured += finished.measured;
            summary
                .not_run
                .extend(finished.not_run.iter().map(|name| NotRun {
                    binary: unit_binary.clone(),
                    name: name.clone(),
                }));
            let deaths = self.services.deaths();
            let results_from = summary.results.len();
            for result in std::mem::take(&mut finished.results) {
                let mut result = match self.retries.take(result, &spec, self.settings) {
                    Next::Retry(retry) => {
                        let of = self.settings.retries_for(&retry.binary_id, &retry.tests[0]);
                        self.reporter
                            .retry(&retry.binary_id, &retry.tests[0], retry.retry, of);
                        retries.push(retry);
                        continue;
                    }
                    Next::Count(result) => result,
                };
                if result.is_flaky() {
                    self.reporter.flaky(&result);
                }
                if result.outcome.is_failure() && !deaths.is_empty() {
                    annotate(&mut result, &deaths);
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
                self.reporter.test_finished(&result);
                summary.results.push(result);
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
                summary.stray.push((unit_binary.clone(), stray));
            }
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

    /// Processes that left their unit's group and were adopted by the runner: killed once the unit they
    /// come from (`Origins::of`) is over; ones that cannot be attributed wait for the run's end.
    fn reap_escaped(&mut self, running: &HashMap<UnitId, RunningUnit>, summary: &mut RunSummary) {
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

    /// Applies one event; returns the run order of a binary that failed by it (a leak with
    /// `--leak=fail`), for fail-fast.
    fn handle(
        &mut self,
        event: Event,
        running: &mut HashMap<UnitId, RunningUnit>,
        signals_seen: &mut usize,
        summary: &mut RunSummary,
    ) -> Option<usize> {
        let now = Instant::now();
        match event {
            Event::Line(id, line) => {
                crate::session::process::BACKLOG.release(line.len());
                if let Some(unit) = running.get_mut(&id) {
                    let (result, is_output) = unit.on_line(line.clone(), now);
                    if is_output {
                        self.reporter.test_output(&line);
                    }
                    // A recovery rerun only recovers output: its verdict is no new result.
                    if let Some((index, verdict)) = result.filter(|_| !unit.spec.recovery) {
                        let name =
                            self.shown_name(&unit.spec.binary_id, &unit.tracker.names()[index]);
                        let duration = unit.tracker.duration(index, now);
                        self.reporter.announce(
                            &unit.spec.binary_id,
                            &name,
                            outcome_of(verdict),
                            duration,
                        );
                        databases::test_ended(&self.ctx, &self.reporter, unit, index, verdict);
                    }
                }
            }
            Event::Eof(id) => {
                if let Some(unit) = running.get_mut(&id) {
                    unit.on_eof();
                }
            }
            Event::Exited(id, exit) => {
                if let Some(unit) = running.get_mut(&id) {
                    // The last moment what left the group is linked to it, before the group dies.
                    self.ctx.session.observe_lineage();
                    unit.on_exit(exit, now);
                }
            }
            Event::Signal(signal, count) => {
                // Events are queued from the start of the run; apply each count once.
                if count <= *signals_seen {
                    return None;
                }
                *signals_seen = count;
                if count == 1 {
                    self.reporter.warn(&format!(
                        "{} received: stopping every test (SIGKILL in {}); send it again to kill at once",
                        signal.as_str(),
                        humantime::format_duration(self.settings.grace_period)
                    ));
                }
                for unit in running.values_mut() {
                    unit.interrupt(count, now, self.settings.grace_period);
                }
            }
            Event::Leaked {
                unit,
                order,
                containers,
            } => {
                self.leaks.answered(&unit);
                if !containers.is_empty() {
                    leftovers::report_containers(
                        &self.reporter,
                        summary,
                        self.settings.leak_fails,
                        unit,
                        containers,
                    );
                    return self.settings.leak_fails.then_some(order);
                }
            }
        }
        None
    }
}
