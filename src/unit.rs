//! The unit lifecycle: one process of the run (a whole test binary, one test, or the doctests) from
//! spawn to results: per-test timeouts, SIGTERM → grace → SIGKILL, leftovers, and what to rerun.

use std::ffi::OsString;
use std::process::Command;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::cargo::TestBinary;
use crate::config::Settings;
use crate::process::{Event, ExitKind, UnitId, kill_leftovers, spawn_unit};
use crate::report::{Outcome, TestResult, UnitProblem};
use crate::session::{ENV_BINARY, ENV_TEST, Session, signal_group};
use crate::test_args::TestArgs;
use crate::tracker::{Tracker, Verdict};

/// How long to wait for the output pipe to close after the group is gone or killed. Only a process that
/// left the group while keeping the pipe open makes this wait expire.
const EOF_WAIT: Duration = Duration::from_secs(2);
/// Output kept per unit; beyond it the middle is dropped (a test printing gigabytes must not OOM us).
const OUTPUT_CAP: usize = 4 << 20;
/// Binary id of the doctest unit.
pub(crate) const DOCTESTS_ID: &str = "doctests";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnitKind {
    /// A whole test binary, its tests in one process as under cargo test.
    Shared,
    /// One test of a binary, alone in its process.
    Isolated,
    /// `cargo test --doc` with the run's selection.
    Doctests,
}

/// Everything needed to start (or restart) a unit.
#[derive(Debug, Clone)]
pub(crate) struct UnitSpec {
    pub kind: UnitKind,
    pub binary_id: String,
    pub binary: Option<Arc<TestBinary>>,
    /// The tests this process will run, in libtest's order (empty for doctests).
    pub tests: Vec<String>,
    /// Tests run at once inside the process.
    pub threads: usize,
    /// 0 for the first run of a binary; reruns after a timeout or crash count up.
    pub attempt: u32,
}

/// What the unit commands are built from.
pub(crate) struct CommandContext<'a> {
    pub args: &'a TestArgs,
    pub session: &'a Session,
    /// `cargo test --doc` arguments before `--`.
    pub doc_cargo_args: &'a [String],
}

impl UnitSpec {
    /// The same binary again, for the tests that had not finished.
    pub(crate) fn rerun(&self, tests: Vec<String>) -> UnitSpec {
        UnitSpec {
            tests,
            attempt: self.attempt + 1,
            ..self.clone()
        }
    }

    pub(crate) fn command(&self, ctx: &CommandContext<'_>) -> Command {
        let mut command = match (&self.binary, self.kind) {
            (Some(binary), kind) if kind != UnitKind::Doctests => {
                let mut c = Command::new(&binary.executable);
                c.envs(binary.env.iter().map(|(k, v)| (k, v)))
                    .current_dir(&binary.package.dir);
                c.args(self.test_args(ctx.args));
                c
            }
            _ => {
                let mut c = Command::new(crate::cargo::cargo_program());
                c.args(["test", "--doc"]).args(ctx.doc_cargo_args).arg("--");
                c.args(ctx.args.doctest_args(self.threads));
                c
            }
        };
        command.env(ENV_BINARY, &self.binary_id);
        ctx.session.configure(&mut command);
        if self.kind == UnitKind::Isolated {
            command.env(ENV_TEST, &self.tests[0]);
        }
        command
    }

    fn test_args(&self, args: &TestArgs) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        if self.kind == UnitKind::Shared && self.attempt == 0 {
            out.extend(args.selection().into_iter().map(OsString::from));
        } else {
            // Reruns and isolated tests name their tests exactly; the ignored mode still decides
            // whether libtest runs an ignored test or reports it ignored.
            out.extend(self.tests.iter().map(OsString::from));
            out.push("--exact".into());
            out.extend(args.ignored_flag().map(OsString::from));
        }
        out.push("--test-threads".into());
        out.push(self.threads.to_string().into());
        if self.kind == UnitKind::Isolated || args.nocapture {
            out.push("--nocapture".into());
        }
        if args.show_output && self.kind == UnitKind::Shared {
            out.push("--show-output".into());
        }
        out.extend(args.passthrough.iter().map(OsString::from));
        out
    }
}

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
    exit: Option<ExitKind>,
    eof: bool,
    stop: Stop,
    reason: Option<StopReason>,
    eof_wait_from: Option<Instant>,
    /// Test indexes that timed out (for doctests: empty, see `doc_timed_out`).
    timed_out: Vec<usize>,
    doc_timed_out: bool,
    last_progress: Instant,
    leftovers: Vec<String>,
}

/// What a finished unit produced.
pub(crate) struct Finished {
    pub results: Vec<TestResult>,
    pub problem: Option<UnitProblem>,
    pub rerun: Option<UnitSpec>,
    pub leftovers: Vec<String>,
    pub filtered_out: usize,
}

impl RunningUnit {
    pub(crate) fn start(
        id: UnitId,
        spec: UnitSpec,
        ctx: &CommandContext<'_>,
        events: &Sender<Event>,
    ) -> std::io::Result<RunningUnit> {
        let now = Instant::now();
        let tracker = match spec.kind {
            UnitKind::Doctests => Tracker::open(),
            _ => Tracker::new(spec.tests.clone(), spec.threads, now),
        };
        let pid = spawn_unit(&mut spec.command(ctx), id, events, ctx.session)?;
        Ok(RunningUnit {
            spec,
            pid,
            started: now,
            tracker,
            output: String::new(),
            dropped: 0,
            exit: None,
            eof: false,
            stop: Stop::Running,
            reason: None,
            eof_wait_from: None,
            timed_out: Vec::new(),
            doc_timed_out: false,
            last_progress: now,
            leftovers: Vec::new(),
        })
    }

    /// Feeds one output line; returns the verdicts it carried and whether the line is the tests' own
    /// output (worth echoing with `--nocapture`).
    pub(crate) fn on_line(
        &mut self,
        line: String,
        now: Instant,
    ) -> (Option<(usize, Verdict)>, bool) {
        let parsed = self.tracker.on_line(&line, now);
        // Only the tests' own output is kept: libtest's framing (result and total lines) inside a failure
        // report would confuse log parsers that add up `test result:` lines.
        if parsed == crate::tracker::Line::Output {
            if self.output.len() + line.len() < OUTPUT_CAP {
                self.output.push_str(&line);
                self.output.push('\n');
            } else {
                self.dropped += line.len() + 1;
            }
        }
        match parsed {
            crate::tracker::Line::Result(i, v) => {
                self.last_progress = now;
                (Some((i, v)), false)
            }
            crate::tracker::Line::Framing => (None, false),
            crate::tracker::Line::Output => (None, true),
        }
    }

    pub(crate) fn on_eof(&mut self) {
        self.eof = true;
    }

    /// The leader exited. A group that is not being stopped loses its leftovers at once; one being
    /// stopped keeps its grace period (children may be shutting down cleanly).
    pub(crate) fn on_exit(&mut self, exit: ExitKind, now: Instant) {
        self.exit = Some(exit);
        if matches!(self.stop, Stop::Terminating { .. }) {
            return;
        }
        self.leftovers.extend(kill_leftovers(self.pid));
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

    fn mark_killed(&mut self, now: Instant) {
        self.stop = Stop::Killed;
        if self.exit.is_some() {
            self.leftovers.extend(kill_leftovers(self.pid));
            self.eof_wait_from.get_or_insert(now);
        }
    }

    /// Enforces timeouts and the grace period. Returns the names of tests that just timed out.
    pub(crate) fn tick(&mut self, now: Instant, settings: &Settings) -> Vec<String> {
        let mut newly = Vec::new();
        match self.stop {
            Stop::Running if self.exit.is_none() => {
                let mut grace = Duration::ZERO;
                if self.spec.kind == UnitKind::Doctests {
                    if now >= self.last_progress + settings.timeout {
                        self.doc_timed_out = true;
                        grace = settings.grace_period;
                        newly.push(DOCTESTS_ID.to_string());
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
            self.leftovers.extend(kill_leftovers(self.pid));
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
                UnitKind::Doctests => Some(self.last_progress + settings.timeout),
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
        if self.spec.kind == UnitKind::Doctests {
            return vec![(DOCTESTS_ID.to_string(), now - self.started)];
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

    /// Turns the ended unit into results. `interrupted` comes from the session: the unit may end from a
    /// forwarded signal before the scheduler has read the signal's event.
    pub(crate) fn finish(
        mut self,
        now: Instant,
        settings: &Settings,
        interrupted: bool,
    ) -> Finished {
        if interrupted {
            self.reason.get_or_insert(StopReason::Interrupt);
        }
        self.leftovers.extend(kill_leftovers(self.pid));
        let exit = self.exit.unwrap_or(ExitKind::Signal(9));
        let mut output = std::mem::take(&mut self.output);
        if self.dropped > 0 {
            output.push_str(&format!(
                "[cleantest: {} bytes of output dropped]\n",
                self.dropped
            ));
        }
        if self.spec.kind == UnitKind::Doctests {
            return self.finish_doctests(exit, output, now);
        }
        let mut results = Vec::new();
        let mut rerun = Vec::new();
        let names = self.tracker.names().to_vec();
        let summary = self.tracker.summary();
        let isolated = self.spec.kind == UnitKind::Isolated;
        let running: Vec<usize> = self.tracker.running().map(|(i, _)| i).collect();
        let mut problem = None;
        for (i, name) in names.iter().enumerate() {
            let verdict = self
                .tracker
                .verdict(i)
                .or_else(|| isolated.then(|| single_verdict(summary)).flatten());
            let duration = if isolated {
                now - self.started
            } else {
                self.tracker.duration(i, now)
            };
            let (outcome, note) = if self.timed_out.contains(&i) {
                let limit = settings.timeout_for(&self.spec.binary_id, name);
                (
                    Outcome::TimedOut,
                    Some(format!(
                        "timed out after {}",
                        humantime::format_duration(limit)
                    )),
                )
            } else if let Some(v) = verdict {
                (outcome_of(v), None)
            } else if self.reason == Some(StopReason::Interrupt) {
                continue; // never finished: counted nowhere, as under cargo test
            } else if self.reason == Some(StopReason::Timeout) {
                rerun.push(name.clone());
                continue;
            } else if summary.is_some() && !isolated {
                // libtest reported its totals, so this line was garbled by the test's own output.
                (
                    if exit.success() {
                        Outcome::Passed
                    } else {
                        Outcome::Failed
                    },
                    None,
                )
            } else if running.contains(&i) || isolated {
                let note =
                    format!("the test process ended with {exit} while this test was running");
                (Outcome::Failed, Some(note))
            } else {
                rerun.push(name.clone());
                continue;
            };
            let own_output = if isolated {
                Some(output.clone())
            } else {
                self.tracker.output(i).map(str::to_string)
            };
            results.push(TestResult {
                binary: self.spec.binary_id.clone(),
                name: name.clone(),
                outcome,
                duration,
                output: own_output,
                note,
                // Result lines and timeouts were printed when they happened.
                announced: self.tracker.verdict(i).is_some() || self.timed_out.contains(&i),
            });
        }
        if !rerun.is_empty() && running.is_empty() && self.reason.is_none() {
            // Ended before any test could start: rerunning would only end the same way.
            problem = Some(self.problem(
                format!("the test binary ended with {exit} before running its tests"),
                &output,
            ));
            rerun.clear();
        }
        let failed_any = results.iter().any(|r| r.outcome.is_failure());
        if problem.is_none()
            && self.reason.is_none()
            && !exit.success()
            && !failed_any
            && rerun.is_empty()
        {
            problem = Some(self.problem(
                format!("the test binary ended with {exit} although no test failed"),
                &output,
            ));
        }
        Finished {
            results,
            problem,
            rerun: (!rerun.is_empty()).then(|| self.spec.rerun(rerun)),
            leftovers: std::mem::take(&mut self.leftovers),
            filtered_out: 0,
        }
    }

    fn finish_doctests(mut self, exit: ExitKind, output: String, now: Instant) -> Finished {
        let mut results: Vec<TestResult> = (0..self.tracker.names().len())
            .filter_map(|i| {
                let verdict = self.tracker.verdict(i)?;
                Some(TestResult {
                    binary: DOCTESTS_ID.into(),
                    name: self.tracker.names()[i].clone(),
                    outcome: outcome_of(verdict),
                    duration: self.tracker.duration(i, now),
                    output: self.tracker.output(i).map(str::to_string),
                    note: None,
                    announced: true,
                })
            })
            .collect();
        let mut problem = None;
        if self.doc_timed_out {
            results.push(TestResult {
                binary: DOCTESTS_ID.into(),
                name: "(doctests)".into(),
                outcome: Outcome::TimedOut,
                duration: now - self.started,
                output: Some(output.clone()),
                note: Some(
                    "no doctest finished within the timeout; the doctest run was stopped".into(),
                ),
                announced: true,
            });
        } else if !exit.success()
            && self.reason.is_none()
            && !results.iter().any(|r| r.outcome.is_failure())
        {
            problem = Some(self.problem(format!("`cargo test --doc` ended with {exit}"), &output));
        }
        Finished {
            results,
            problem,
            rerun: None,
            leftovers: std::mem::take(&mut self.leftovers),
            filtered_out: self.tracker.summary().map_or(0, |s| s.filtered_out),
        }
    }

    fn problem(&self, message: String, output: &str) -> UnitProblem {
        UnitProblem {
            binary: self.spec.binary_id.clone(),
            message,
            output: output.to_string(),
        }
    }
}

pub(crate) fn outcome_of(verdict: Verdict) -> Outcome {
    match verdict {
        Verdict::Passed => Outcome::Passed,
        Verdict::Failed => Outcome::Failed,
        Verdict::Ignored => Outcome::Ignored,
    }
}

/// An isolated test's verdict from libtest's totals, when its result line was mixed with its output.
fn single_verdict(summary: Option<crate::tracker::Summary>) -> Option<Verdict> {
    let s = summary?;
    match (s.passed, s.failed, s.ignored) {
        (1, 0, 0) => Some(Verdict::Passed),
        (0, 1, 0) => Some(Verdict::Failed),
        (0, 0, 1) => Some(Verdict::Ignored),
        _ => None,
    }
}
