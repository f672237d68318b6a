//! Scheduling: the loop that runs a `Plan`'s units, at most `slots` at a time, applying fail-fast,
//! timeouts, reruns and signals. The loop owns all unit state; threads only send it events. What a
//! unit that is done comes to (its results counted, retries, leftovers) is `done`.

mod done;

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::amend::not_run_of;
use super::databases;
use super::fail_fast::{FailFast, MaxFail, Unfinished};
use super::leak_check::{self, LeakCheck};
use super::leftovers::{self, Origins};
use super::plan::Plan;
use super::report::{Outcome, Reporter, RunSummary, UnitProblem, full_name};
use super::retry::Retries;
use super::unit::{CommandContext, RunningUnit, UnitKind, UnitSpec, outcome_of};
use crate::config::Settings;
use crate::services::Monitor;
use crate::session::process::{Event, UnitId};

/// The loop's state over one run of a plan.
struct Pass {
    summary: RunSummary,
    queue: VecDeque<UnitSpec>,
    running: HashMap<UnitId, RunningUnit>,
    next_id: UnitId,
    fail_fast: FailFast,
    unfinished: Unfinished,
    signals_seen: usize,
    /// When the run began to wait for the last leak checks.
    end_wait: Option<Instant>,
}

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
    /// the session's end still finds). Each turn: start units into free slots, wait for events (or the
    /// next deadline), tick the running units, collect those that are done.
    pub(crate) fn run(mut self, plan: Plan, started: Instant) -> (RunSummary, Reporter, Origins) {
        let mut pass = Pass {
            summary: RunSummary {
                filtered_out: plan.filtered_out,
                ..Default::default()
            },
            fail_fast: FailFast::new(&plan.queue),
            unfinished: Unfinished::of(&plan.queue),
            queue: plan.queue,
            running: HashMap::new(),
            next_id: 0,
            signals_seen: 0,
            end_wait: None,
        };
        for result in plan.preset {
            self.reporter.test_finished(&result);
            pass.summary.results.push(result);
        }
        loop {
            let now = Instant::now();
            let stopping = self.ctx.session.interrupted_by().is_some();
            let max_reached = self.max_fail.reached(&pass.summary);
            if !stopping && !max_reached {
                self.start_units(&mut pass);
            }
            if pass.running.is_empty()
                && (pass.queue.is_empty() || stopping || max_reached)
                && self.leak_checks_settled(&mut pass.end_wait, now, pass.signals_seen)
            {
                break;
            }
            let Some(tripped) = self.wait(&mut pass, now) else {
                break;
            };
            let now = Instant::now();
            for order in tripped {
                self.trip_fail_fast(&mut pass.fail_fast, order, &mut pass.running, now);
            }
            let done = self.tick(&mut pass, now);
            let any_done = !done.is_empty();
            self.collect(&mut pass, done, now);
            // Where there is no subreaper, a periodic snapshot of the process tree (`lineage`).
            self.ctx.session.observe_lineage_if_due();
            // Escapees are adopted when their parent dies and are only killed once their unit is over:
            // look for them when a unit ended, not on every event.
            if any_done {
                self.reap_escaped(&pass.running, &mut pass.summary);
            }
            self.reporter
                .advance(pass.unfinished.frontier(), pass.fail_fast.cut());
            let now = Instant::now();
            let names: Vec<(String, Duration)> = pass
                .running
                .values()
                .flat_map(|u| u.running_tests(now))
                .collect();
            self.reporter.running(&names);
        }
        self.wrap_up(pass, started)
    }

    /// Starts queued units while slots are free (fail-fast leaves out what comes after a failing
    /// binary, as cargo test).
    fn start_units(&mut self, pass: &mut Pass) {
        while pass.running.len() < self.slots {
            let Some(spec) = pass.queue.pop_front() else {
                break;
            };
            if pass.fail_fast.leaves_out(&spec) {
                pass.unfinished.done(spec.order);
                continue;
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
            match RunningUnit::start(pass.next_id, spec, &self.ctx, &self.events.0) {
                Ok(unit) => {
                    let test =
                        (unit.spec.kind == UnitKind::Isolated).then(|| unit.spec.tests[0].as_str());
                    self.origins.started(unit.pid, &unit.spec.binary_id, test);
                    pass.running.insert(pass.next_id, unit);
                }
                Err(e) => {
                    pass.unfinished.done(order);
                    pass.summary.problems.push(UnitProblem {
                        binary: binary_id,
                        message: format!("could not start the test process: {e}"),
                        output: String::new(),
                    })
                }
            }
            pass.next_id += 1;
        }
    }

    /// Waits for events until the next deadline of a running unit (at most a quarter second), and
    /// handles them; the orders of the units whose failures trip fail-fast. None when no event can
    /// come any more.
    fn wait(&mut self, pass: &mut Pass, now: Instant) -> Option<Vec<usize>> {
        let tick = now + Duration::from_millis(250);
        let deadline = pass
            .running
            .values()
            .filter_map(|u| u.next_deadline(self.settings))
            .min()
            .map_or(tick, |d| d.min(tick));
        let mut tripped = Vec::new();
        match self
            .events
            .1
            .recv_timeout(deadline.saturating_duration_since(now))
        {
            Ok(event) => tripped.extend(self.handle(
                event,
                &mut pass.running,
                &mut pass.signals_seen,
                &mut pass.summary,
            )),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return None,
        }
        while let Ok(event) = self.events.1.try_recv() {
            tripped.extend(self.handle(
                event,
                &mut pass.running,
                &mut pass.signals_seen,
                &mut pass.summary,
            ));
        }
        Some(tripped)
    }

    /// Moves the running units' clocks on: timeouts announced, heartbeats; the ids of those done.
    fn tick(&mut self, pass: &mut Pass, now: Instant) -> Vec<UnitId> {
        let mut done = Vec::new();
        for (id, unit) in pass.running.iter_mut() {
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
        done
    }

    /// Turns the units that are done into results, queues what runs again, and trips fail-fast on a
    /// failure.
    fn collect(&mut self, pass: &mut Pass, done: Vec<UnitId>, now: Instant) {
        for id in done {
            let unit = pass.running.remove(&id).expect("done unit is running");
            let order = unit.spec.order;
            let (results_before, problems_before) =
                (pass.summary.results.len(), pass.summary.problems.len());
            for more in self.unit_done(unit, &mut pass.summary, &mut pass.fail_fast) {
                pass.unfinished.add(more.order);
                pass.queue.push_front(more);
            }
            pass.unfinished.done(order);
            let failed = pass.summary.problems.len() > problems_before
                || pass.summary.results[results_before..]
                    .iter()
                    .any(|r| r.outcome.is_failure());
            if failed {
                self.trip_fail_fast(&mut pass.fail_fast, order, &mut pass.running, now);
            }
        }
    }

    /// The summary of the whole run: what never ran (interrupted, or past `--max-fail`), failures
    /// whose retry never ran, fail-fast's cut.
    fn wrap_up(mut self, pass: Pass, started: Instant) -> (RunSummary, Reporter, Origins) {
        let Pass {
            mut summary,
            queue,
            fail_fast,
            ..
        } = pass;
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
