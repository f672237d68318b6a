//! The unit lifecycle: one process of the run (a whole test binary, one test, or the doctests) from
//! spawn to results. `spec` says what to start; this file follows the running process (its output
//! lines, per-test timeouts, SIGTERM → grace → SIGKILL, leftovers in its group); `finish` turns the
//! ended process into results and says what to rerun.

mod bypass;
mod finish;
mod spec;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::tracker::{self, Tracker, Verdict};
use crate::config::Settings;
use crate::contract::ENV_TMPDIR;
use crate::session::process::{Event, ExitKind, UnitId, kill_leftovers, spawn_unit};
use crate::session::signal_group;

pub(crate) use finish::{Finished, outcome_of};
pub(crate) use spec::{CommandContext, UnitKind, UnitSpec};

/// How long to wait for the output pipe to close after the group is gone or killed. Only a process that
/// left the group while keeping the pipe open makes this wait expire.
const EOF_WAIT: Duration = Duration::from_secs(2);
/// While output still arrives after the exit, the EOF wait starts again from the last line, up to this
/// long after the exit: a unit never ends while its reader is still delivering what it read.
const DRAIN_BOUND: Duration = Duration::from_secs(60);
/// Output kept per unit; beyond it the middle is dropped (a test printing gigabytes must not OOM us).
const OUTPUT_CAP: usize = 4 << 20;
/// Of that, how much is also kept attributed to tests (`bypass`): a copy, so bounded apart.
const ATTRIBUTED_CAP: usize = 1 << 20;

/// Where the unit is in being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Running,
    /// SIGTERM (or the user's signal) sent; SIGKILL at this instant.
    Terminating {
        kill_at: Instant,
    },
    Killed,
}

/// Why the unit is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Timeout,
    Interrupt,
}

/// A started unit.
pub(crate) struct RunningUnit {
    pub spec: UnitSpec,
    pub pid: i32,
    pub started: Instant,
    pub tracker: Tracker,
    output: String,
    dropped: usize,
    /// Shared mode: output that bypassed libtest's capture (a child's, a direct write to the fd), by
    /// who was running when it came (see `bypass`).
    bypass: bypass::Bypass,
    exit: Option<ExitKind>,
    eof: bool,
    stop: Stop,
    reason: Option<StopReason>,
    eof_wait_from: Option<Instant>,
    /// When the leader's exit was seen (bounds how long draining may extend the EOF wait).
    exit_at: Option<Instant>,
    /// Test indexes that timed out (for a whole unit: empty, see `whole_timed_out`).
    timed_out: Vec<usize>,
    whole_timed_out: bool,
    last_progress: Instant,
    leftovers: Vec<String>,
    /// Heartbeat periods already reported, by test index (`WHOLE` for a whole unit).
    heartbeats: HashMap<usize, u32>,
    /// The group was looked into and SIGKILLed after its leader exited (`kill_leftovers`).
    group_killed: bool,
    /// The databases the process was given (`services::Databases::for_process`).
    pub leases: Vec<crate::services::Lease>,
    /// The unit's own temporary directory (its `TMPDIR`), tidied when it is done.
    pub temp: Option<PathBuf>,
}

/// The heartbeat key of a whole unit, whose running tests are not known.
const WHOLE: usize = usize::MAX;

impl RunningUnit {
    pub(crate) fn start(
        id: UnitId,
        spec: UnitSpec,
        ctx: &CommandContext<'_>,
        events: &Sender<Event>,
    ) -> std::io::Result<RunningUnit> {
        let now = Instant::now();
        let tracker = match spec.kind {
            UnitKind::Whole => Tracker::open(),
            _ => Tracker::new(spec.tests.clone(), spec.threads, now),
        };
        // Each process gets its own database of every service that isolates, for as long as it runs.
        let crate::services::ProcessDatabases { env, leases } =
            ctx.databases.for_process().map_err(std::io::Error::other)?;
        let mut command = spec.command(ctx);
        command.envs(env);
        let temp = ctx.temps.take(ctx.session)?;
        if let Some(dir) = &temp {
            command.env(ENV_TMPDIR, dir);
        }
        let pid = spawn_unit(&mut command, id, events, ctx.session)?;
        Ok(RunningUnit {
            spec,
            pid,
            started: now,
            tracker,
            output: String::new(),
            dropped: 0,
            bypass: bypass::Bypass::default(),
            exit: None,
            eof: false,
            stop: Stop::Running,
            reason: None,
            eof_wait_from: None,
            exit_at: None,
            timed_out: Vec::new(),
            whole_timed_out: false,
            last_progress: now,
            leftovers: Vec::new(),
            heartbeats: HashMap::new(),
            group_killed: false,
            leases,
            temp,
        })
    }

    /// Feeds one output line; returns the verdicts it carried and whether the line is the tests' own
    /// output (worth echoing with `--nocapture`).
    pub(crate) fn on_line(
        &mut self,
        line: String,
        now: Instant,
    ) -> (Option<(usize, Verdict)>, bool) {
        if let (Some(from), Some(exit_at)) = (&mut self.eof_wait_from, self.exit_at)
            && now.saturating_duration_since(exit_at) < DRAIN_BOUND
        {
            *from = now;
        }
        let parsed = self.tracker.on_line(&line, now);
        // Only the tests' own output is kept: libtest's framing (result and total lines) inside a failure
        // report would confuse log parsers that add up `test result:` lines.
        if parsed == tracker::Line::Output
            && let Some(own) = self.tracker.own_part(&line)
        {
            if self.output.len() + own.len() < OUTPUT_CAP {
                self.output.push_str(own);
                self.output.push('\n');
            } else {
                self.dropped += own.len() + 1;
            }
            if self.spec.kind == UnitKind::Shared {
                let mut running = self.tracker.running().map(|(i, _)| i);
                let alone = match (running.next(), running.next()) {
                    (Some(i), None) => Some(i),
                    _ => None,
                };
                self.bypass.add(alone, own, ATTRIBUTED_CAP);
            }
        }
        match parsed {
            tracker::Line::Result(i, v) => {
                self.last_progress = now;
                (Some((i, v)), false)
            }
            tracker::Line::Framing => (None, false),
            tracker::Line::Output => (None, true),
        }
    }

    /// Kills what is left in the unit's group and notes each process once: the group outlives its
    /// leader until the leader is released, so a later call may see a process an earlier one killed.
    pub(crate) fn kill_leftovers(&mut self) {
        for found in kill_leftovers(self.pid) {
            if !self.leftovers.contains(&found) {
                self.leftovers.push(found);
            }
        }
        // Once the leader has exited, the group's SIGKILL leaves nothing a later look would report.
        self.group_killed |= self.exit.is_some();
    }

    pub(crate) fn on_eof(&mut self) {
        self.eof = true;
    }

    /// The leader exited. A group that is not being stopped loses its leftovers at once; one being
    /// stopped keeps its grace period (children may be shutting down cleanly).
    pub(crate) fn on_exit(&mut self, exit: ExitKind, now: Instant) {
        self.exit = Some(exit);
        self.exit_at = Some(now);
        if matches!(self.stop, Stop::Terminating { .. }) {
            return;
        }
        self.kill_leftovers();
        self.eof_wait_from = Some(now);
    }

    /// The run was interrupted: the session already forwarded the signal (`count == 1`) or SIGKILLed
    /// the group (`count > 1`).
    pub(crate) fn interrupt(&mut self, count: usize, now: Instant, grace: Duration) {
        self.reason.get_or_insert(StopReason::Interrupt);
        if count > 1 {
            self.mark_killed(now);
        } else if self.stop == Stop::Running {
            self.stop = Stop::Terminating {
                kill_at: now + grace,
            };
        }
    }

    /// Stops a unit whose results will not count (fail-fast stopped at an earlier binary): SIGTERM,
    /// then SIGKILL after the grace period, as for an interrupt.
    pub(crate) fn cancel(&mut self, now: Instant, grace: Duration) {
        self.reason.get_or_insert(StopReason::Interrupt);
        if self.stop == Stop::Running && self.exit.is_none() {
            signal_group(self.pid, Signal::SIGTERM);
            self.stop = Stop::Terminating {
                kill_at: now + grace,
            };
        }
    }

    /// Running tests that passed another whole `period` since they started, with the time they
    /// passed: each period is reported once per test.
    pub(crate) fn heartbeats(&mut self, now: Instant, period: Duration) -> Vec<(String, Duration)> {
        if self.stop != Stop::Running || self.exit.is_some() || period.is_zero() {
            return Vec::new();
        }
        // Called on every pass of the scheduler's loop: only a test that passed a new period costs
        // anything (a map entry, its name cloned).
        let since: Vec<(usize, Instant)> = if self.spec.kind == UnitKind::Whole {
            vec![(WHOLE, self.started)]
        } else {
            self.tracker.running().collect()
        };
        let mut due = Vec::new();
        for (key, since) in since {
            let elapsed = now.saturating_duration_since(since);
            let periods = (elapsed.as_nanos() / period.as_nanos()).min(u32::MAX as u128) as u32;
            if periods == 0 {
                continue;
            }
            let told = self.heartbeats.entry(key).or_default();
            if periods > *told {
                *told = periods;
                let name = match key {
                    WHOLE => String::new(),
                    i => self.tracker.names()[i].clone(),
                };
                due.push((name, period * periods));
            }
        }
        due
    }

    fn mark_killed(&mut self, now: Instant) {
        self.stop = Stop::Killed;
        if self.exit.is_some() {
            self.kill_leftovers();
            self.eof_wait_from.get_or_insert(now);
        }
    }

    /// Enforces timeouts and the grace period. Returns the names of tests that just timed out.
    pub(crate) fn tick(&mut self, now: Instant, settings: &Settings) -> Vec<String> {
        let mut newly = Vec::new();
        match self.stop {
            Stop::Running if self.exit.is_none() => {
                let mut grace = Duration::ZERO;
                if self.spec.kind == UnitKind::Whole {
                    if now >= self.last_progress + settings.timeout {
                        self.whole_timed_out = true;
                        grace = settings.grace_period;
                        newly.push(self.spec.binary_id.clone());
                    }
                } else {
                    let expired: Vec<usize> = self
                        .tracker
                        .running()
                        .filter(|&(i, since)| now >= since + self.timeout_of(i, settings))
                        .map(|(i, _)| i)
                        .collect();
                    for i in expired {
                        let name = &self.tracker.names()[i];
                        grace = grace.max(settings.grace_for(&self.spec.binary_id, name));
                        newly.push(name.clone());
                        self.timed_out.push(i);
                    }
                }
                if !newly.is_empty() {
                    self.reason = Some(StopReason::Timeout);
                    signal_group(self.pid, Signal::SIGTERM);
                    self.stop = Stop::Terminating {
                        kill_at: now + grace,
                    };
                }
            }
            Stop::Terminating { kill_at } if now >= kill_at => {
                if self.exit.is_none() {
                    signal_group(self.pid, Signal::SIGKILL);
                }
                self.mark_killed(now);
            }
            _ => {}
        }
        if self.exit.is_some() && self.eof && matches!(self.stop, Stop::Terminating { .. }) {
            // Everything holding the output closed it: the group is gone before its grace ran out.
            self.kill_leftovers();
            self.stop = Stop::Killed;
        }
        newly
    }

    fn timeout_of(&self, index: usize, settings: &Settings) -> Duration {
        settings.timeout_for(&self.spec.binary_id, &self.tracker.names()[index])
    }

    /// The next instant at which `tick` has something to do.
    pub(crate) fn next_deadline(&self, settings: &Settings) -> Option<Instant> {
        let eof_deadline = self
            .eof_wait_from
            .filter(|_| !self.eof)
            .map(|t| t + EOF_WAIT);
        let own = match self.stop {
            Stop::Running if self.exit.is_none() => match self.spec.kind {
                UnitKind::Whole => Some(self.last_progress + settings.timeout),
                _ => self
                    .tracker
                    .running()
                    .map(|(i, since)| since + self.timeout_of(i, settings))
                    .min(),
            },
            Stop::Terminating { kill_at } => Some(kill_at),
            _ => None,
        };
        [own, eof_deadline].into_iter().flatten().min()
    }

    /// Running tests and how long each has run, for progress display.
    pub(crate) fn running_tests(&self, now: Instant) -> Vec<(String, Duration)> {
        if self.spec.kind == UnitKind::Whole {
            return vec![(self.spec.binary_id.clone(), now - self.started)];
        }
        self.tracker
            .running()
            .map(|(i, since)| (self.tracker.names()[i].clone(), now - since))
            .collect()
    }

    pub(crate) fn is_done(&self, now: Instant) -> bool {
        let Some(_) = self.exit else { return false };
        if matches!(self.stop, Stop::Terminating { .. }) {
            return false;
        }
        self.eof || self.eof_wait_from.is_some_and(|t| now >= t + EOF_WAIT)
    }
}
