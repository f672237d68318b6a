//! The end of a unit: its results (from libtest's verdicts, its totals, or how the process ended), a
//! problem no single test accounts for, and the tests to run again in a fresh process.

use std::time::Instant;

use super::{RunningUnit, StopReason, UnitKind, UnitSpec};
use crate::config::Settings;
use crate::run::harness::Harness;
use crate::run::report::{Outcome, TestResult, UnitProblem};
use crate::run::tracker::{Summary, Verdict};
use crate::session::process::{ExitKind, release};

/// The note of a failure whose output its process never printed because the run was interrupted.
const LOST_TO_INTERRUPT: &str = "its output was lost: the run was interrupted before the test binary \
     printed it (libtest prints failures at the end); rerun it to see it";

/// How a unit ended, as each of its tests' fate reads it.
struct Ending<'a> {
    now: Instant,
    settings: &'a Settings,
    exit: ExitKind,
    /// libtest's totals, when it printed them.
    summary: Option<Summary>,
    isolated: bool,
    /// The tests running when it ended.
    running: Vec<usize>,
}

/// What became of one test of an ended unit.
enum Fate {
    /// Its result, and the unit that reruns it alone to recover output its process never printed.
    Reported {
        result: Box<TestResult>,
        recovery: Option<UnitSpec>,
    },
    /// It never started: the run was interrupted.
    NotRun,
    /// It runs again in a fresh process.
    Rerun,
}

/// What a finished unit produced.
pub(crate) struct Finished {
    pub results: Vec<TestResult>,
    pub problem: Option<UnitProblem>,
    pub rerun: Option<UnitSpec>,
    pub leftovers: Vec<String>,
    pub filtered_out: usize,
    /// Benchmarks measured, from the process's own `test result:` lines.
    pub measured: usize,
    /// Tests that never started because the run was interrupted.
    pub not_run: Vec<String>,
    /// Failed tests whose output the killed process never printed: each to rerun alone to recover it.
    pub recover: Vec<UnitSpec>,
    /// Output that bypassed libtest's capture while several tests (or none) ran: the binary's.
    pub stray: Option<String>,
}

impl RunningUnit {
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
        // Once is enough: a scan reads /proc, and a thousand isolated units made it a third of the
        // runner's time.
        if !self.group_killed {
            self.kill_leftovers();
        }
        if self.exit.is_some() {
            // The last signal to the group is sent: its leader may go, and its pid with it.
            release(self.pid);
        }
        let exit = self.exit.unwrap_or(ExitKind::Signal(9));
        let mut output = std::mem::take(&mut self.output);
        if self.dropped > 0 {
            output.push_str(&format!(
                "[cleantest: {} bytes of output dropped]\n",
                self.dropped
            ));
        }
        if self.spec.kind == UnitKind::Whole {
            return self.finish_whole(exit, output, now);
        }
        let summary = self.tracker.summary();
        let end = Ending {
            now,
            settings,
            exit,
            summary,
            isolated: self.spec.kind == UnitKind::Isolated,
            running: self.tracker.running().map(|(i, _)| i).collect(),
        };
        let (mut results, mut rerun, mut not_run, mut recover) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let names = self.tracker.names().to_vec();
        for (i, name) in names.iter().enumerate() {
            match self.fate(i, name, &end, &output) {
                Fate::Reported { result, recovery } => {
                    results.push(*result);
                    recover.extend(recovery);
                }
                Fate::NotRun => not_run.push(name.clone()),
                Fate::Rerun => rerun.push(name.clone()),
            }
        }
        if !rerun.is_empty() && end.running.is_empty() && self.reason.is_none() {
            // Ended before any test could start: rerunning would only end the same way.
            rerun.clear();
            return self.finished(
                results,
                Some(format!(
                    "the test binary ended with {exit} before running its tests"
                )),
                &output,
                &end,
                (rerun, not_run, recover),
            );
        }
        let failed_any = results.iter().any(|r| r.outcome.is_failure());
        let problem = self.tracker.contradiction().or_else(|| {
            (self.reason.is_none() && !exit.success() && !failed_any && rerun.is_empty())
                .then(|| format!("the test binary ended with {exit} although no test failed"))
        });
        self.finished(results, problem, &output, &end, (rerun, not_run, recover))
    }

    /// What the unit's end produced, with `problem` (a message) as the unit's problem.
    fn finished(
        mut self,
        results: Vec<TestResult>,
        problem: Option<String>,
        output: &str,
        end: &Ending,
        (rerun, not_run, recover): (Vec<String>, Vec<String>, Vec<UnitSpec>),
    ) -> Finished {
        Finished {
            stray: self.bypass.of_binary(),
            problem: problem.map(|why| self.problem(why, output)),
            results,
            rerun: (!rerun.is_empty()).then(|| self.spec.rerun(rerun)),
            leftovers: std::mem::take(&mut self.leftovers),
            filtered_out: 0,
            measured: if end.isolated {
                0
            } else {
                end.summary.map_or(0, |s| s.measured)
            },
            not_run,
            recover,
        }
    }

    /// What became of test `i` of the ended unit: its result (from its verdict, its timeout, the signal
    /// that stopped the run, or how the process ended), or that it never ran, or that it runs again.
    fn fate(&mut self, i: usize, name: &str, end: &Ending, output: &str) -> Fate {
        let isolated = end.isolated;
        let verdict = self
            .tracker
            .verdict(i)
            .or_else(|| isolated.then(|| single_verdict(end.summary)).flatten());
        let duration = if isolated {
            end.now - self.started
        } else {
            self.tracker.duration(i, end.now)
        };
        let running = end.running.contains(&i);
        let (outcome, note) = if self.timed_out.contains(&i) {
            let limit = end.settings.timeout_for(&self.spec.binary_id, name);
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
            if !(running || isolated) {
                return Fate::NotRun;
            }
            let note = format!(
                "interrupted after {:.1}s; the test was running when the run was stopped",
                duration.as_secs_f64()
            );
            (Outcome::Interrupted, Some(note))
        } else if self.reason == Some(StopReason::Timeout) {
            return Fate::Rerun;
        } else if end.summary.is_some() && !isolated {
            // libtest reported its totals, so this line was garbled by the test's own output.
            let outcome = if end.exit.success() {
                Outcome::Passed
            } else {
                Outcome::Failed
            };
            (outcome, None)
        } else if running || isolated {
            let note = format!(
                "the test process ended with {} while this test was running",
                end.exit
            );
            (Outcome::Failed, Some(note))
        } else {
            return Fate::Rerun;
        };
        let mut note = note;
        let mut recovery = None;
        if !isolated && outcome == Outcome::Failed && note.is_none() && end.summary.is_none() {
            // Killed before libtest's end-of-run report, which is where it prints failures.
            match self.reason {
                Some(StopReason::Interrupt) => note = Some(LOST_TO_INTERRUPT.into()),
                _ => recovery = Some(self.spec.recovery(name.to_string())),
            }
        }
        Fate::Reported {
            result: Box::new(TestResult {
                duration,
                output: self.own_output(i, isolated, output),
                note,
                // Result lines and timeouts were printed when they happened.
                announced: self.tracker.is_final(i) || self.timed_out.contains(&i),
                ..TestResult::new(&self.spec.binary_id, name.to_string(), outcome)
            }),
            recovery,
        }
    }

    /// Test `i`'s own output: isolated, all its process printed (and what a harness printed only in
    /// its failure section: libtest-mimic prints a failure's message there, even when nothing is
    /// captured); shared, libtest's capture of it, then what it printed around the capture while alone.
    fn own_output(&mut self, i: usize, isolated: bool, output: &str) -> Option<String> {
        if isolated {
            let mut all = output.to_string();
            if let Some(section) = self.tracker.output(i) {
                all.push_str(section);
            }
            return Some(all);
        }
        let captured = self.tracker.output(i).map(str::to_string);
        match (captured, self.bypass.of_test(i)) {
            (captured, None) => captured,
            (captured, Some(bypassed)) => Some(format!(
                "{}{}\n{bypassed}",
                captured.unwrap_or_default(),
                super::bypass::ALONE_HEADER
            )),
        }
    }

    /// A whole unit (doctests, a binary run as cargo test runs it): its results are the result lines it
    /// printed. A binary that printed none gets one binary-level result, not counted.
    fn finish_whole(mut self, exit: ExitKind, output: String, now: Instant) -> Finished {
        let binary = &self.spec.binary_id;
        let mut results: Vec<TestResult> = (0..self.tracker.names().len())
            .filter_map(|i| {
                let verdict = self.tracker.verdict(i)?;
                Some(TestResult {
                    duration: self.tracker.duration(i, now),
                    output: self.tracker.output(i).map(str::to_string),
                    announced: true,
                    ..TestResult::new(binary, self.tracker.names()[i].clone(), outcome_of(verdict))
                })
            })
            .collect();
        let mut problem = None;
        let failed_any = results.iter().any(|r| r.outcome.is_failure());
        let mut recover = Vec::new();
        if self.tracker.summary().is_none() && (self.whole_timed_out || self.reason.is_some()) {
            // Killed before its end-of-run report: the failures' output was never printed.
            let rerunnable = self
                .spec
                .binary
                .as_ref()
                .is_some_and(|b| matches!(b.harness, Harness::Compatible { .. }));
            for r in results.iter_mut().filter(|r| r.outcome == Outcome::Failed) {
                if rerunnable && self.reason != Some(StopReason::Interrupt) {
                    recover.push(self.spec.recovery(r.name.clone()));
                } else {
                    r.note = Some(LOST_TO_INTERRUPT.into());
                }
            }
        }
        if self.reason == Some(StopReason::Interrupt) && !self.whole_timed_out {
            // Which of its tests were running is not known: the unit itself was interrupted.
            let what = if self.spec.binary.is_some() {
                "the binary was running when the run was stopped"
            } else {
                "the doctests were running when the run was stopped"
            };
            results.push(TestResult {
                duration: now - self.started,
                output: Some(output.clone()),
                note: Some(what.into()),
                counted: false,
                ..TestResult::new(binary, String::new(), Outcome::Interrupted)
            });
        } else if self.whole_timed_out {
            let what = if self.spec.binary.is_some() {
                "no test of it finished within the timeout; the binary was stopped"
            } else {
                "no doctest finished within the timeout; the doctest run was stopped"
            };
            results.push(TestResult {
                duration: now - self.started,
                output: Some(output.clone()),
                note: Some(what.into()),
                announced: true,
                ..TestResult::new(binary, String::new(), Outcome::TimedOut)
            });
        } else if self.spec.binary.is_some() && results.is_empty() && self.reason.is_none() {
            // Nothing of its own to count: one result for the binary, as it ended.
            let outcome = if exit.success() {
                Outcome::Passed
            } else {
                Outcome::Failed
            };
            results.push(TestResult {
                duration: now - self.started,
                output: Some(output.clone()),
                note: (!exit.success()).then(|| format!("the binary ended with {exit}")),
                counted: false,
                ..TestResult::new(binary, String::new(), outcome)
            });
        } else if !exit.success() && self.reason.is_none() && !failed_any {
            let what = match &self.spec.binary {
                Some(_) => "the test binary",
                None => "`cargo test --doc`",
            };
            problem = Some(self.problem(format!("{what} ended with {exit}"), &output));
        }
        let summary = self.tracker.summary().unwrap_or_default();
        Finished {
            stray: None,
            results,
            problem,
            rerun: None,
            leftovers: std::mem::take(&mut self.leftovers),
            filtered_out: summary.filtered_out,
            measured: summary.measured,
            not_run: Vec::new(),
            recover,
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
fn single_verdict(summary: Option<Summary>) -> Option<Verdict> {
    let s = summary?;
    match (s.passed, s.failed, s.ignored) {
        (1, 0, 0) => Some(Verdict::Passed),
        (0, 1, 0) => Some(Verdict::Failed),
        (0, 0, 1) => Some(Verdict::Ignored),
        _ => None,
    }
}
