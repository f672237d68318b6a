//! The live part of the report: a result line per test as soon as it is known, warnings, and on a
//! terminal (unless `CI` is set) a progress bar with the counts and the running tests.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use std::collections::{HashMap, HashSet};

use super::gate::{Gate, NOT_COUNTED, Release};
use super::summary::write_summary;
use super::{Outcome, RunSummary, TestResult, full_name};

/// Live output of a run.
pub(crate) struct Reporter {
    bar: Option<ProgressBar>,
    quiet: bool,
    nocapture: bool,
    show_output: bool,
    passed: usize,
    failed: usize,
    /// Each binary's place in cargo test's run order, and, under fail-fast, the lines it holds back.
    orders: HashMap<String, usize>,
    gate: Option<Gate>,
    /// Binaries whose results the bar's total did not know (the doctests, binaries run whole): they
    /// are counted in the bar's passed and failed, but do not move it.
    apart: HashSet<String>,
}

impl Reporter {
    /// A progress bar on a terminal unless `CI` is set; plain lines otherwise.
    pub(crate) fn new(quiet: bool, nocapture: bool, show_output: bool, total: usize) -> Reporter {
        let on_ci =
            std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
        let bar = (std::io::stderr().is_terminal() && !on_ci && !nocapture).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:25} {pos}/{len} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            // Every line of the run, whichever layer sends it, goes above the bar from now on.
            crate::output::show_progress(bar.clone());
            bar
        });
        Reporter {
            bar,
            quiet,
            nocapture,
            show_output,
            passed: 0,
            failed: 0,
            orders: HashMap::new(),
            gate: None,
            apart: HashSet::new(),
        }
    }

    /// The binaries' run order, whether fail-fast holds back lines that it may leave uncounted, and the
    /// binaries whose results the bar's total leaves apart.
    pub(crate) fn with_order(
        mut self,
        orders: HashMap<String, usize>,
        fail_fast: bool,
        apart: HashSet<String>,
    ) -> Reporter {
        self.orders = orders;
        self.gate = fail_fast.then(Gate::default);
        self.apart = apart;
        self
    }

    /// Fail-fast's news: the lowest run order still unfinished, and the cut once a binary failed.
    pub(crate) fn advance(&mut self, frontier: usize, cut: Option<usize>) {
        let Some(gate) = &mut self.gate else { return };
        for (line, outcome, in_bar, counts) in gate.advance(frontier, cut) {
            self.emit(line, outcome, in_bar, counts);
        }
    }

    /// Prints a decided result line, counting it (on the bar too, unless it is apart) when it counts.
    fn emit(&mut self, line: String, outcome: Outcome, in_bar: bool, counts: bool) {
        if counts {
            match outcome {
                Outcome::Passed => self.passed += 1,
                Outcome::Failed | Outcome::TimedOut | Outcome::Interrupted => self.failed += 1,
                Outcome::Ignored => {}
            }
            if let (Some(bar), true) = (&self.bar, in_bar) {
                bar.inc(1);
            }
        }
        if self.quiet && !outcome.is_failure() {
            return;
        }
        if counts {
            self.line(&line);
        } else {
            self.line(&format!("{line}{NOT_COUNTED}"));
        }
    }

    fn line(&self, text: &str) {
        crate::output::out(text);
    }

    /// Whether passing tests' output is kept for the end (`--show-output`, as cargo test).
    pub(crate) fn keeps_passing_output(&self) -> bool {
        self.show_output
    }

    /// Prints a test's result line as soon as it is known (or, under fail-fast, once it is known to
    /// count: see `gate`).
    pub(crate) fn announce(
        &mut self,
        binary: &str,
        name: &str,
        outcome: Outcome,
        duration: Duration,
    ) {
        self.announce_as(binary, name, outcome, duration, "");
    }

    fn announce_as(
        &mut self,
        binary: &str,
        name: &str,
        outcome: Outcome,
        duration: Duration,
        marker: &str,
    ) {
        let time = if duration >= Duration::from_secs(1) || outcome == Outcome::TimedOut {
            format!(" ({:.2}s)", duration.as_secs_f64())
        } else {
            String::new()
        };
        let line = format!(
            "test {} ... {}{marker}{time}",
            full_name(binary, name),
            outcome.word()
        );
        let in_bar = !self.apart.contains(binary);
        let order = self.orders.get(binary).copied();
        let decision = match (&self.gate, order) {
            (Some(gate), Some(order)) => gate.decide(order),
            _ => Release::Counted,
        };
        match decision {
            Release::Counted => self.emit(line, outcome, in_bar, true),
            Release::NotCounted => self.emit(line, outcome, in_bar, false),
            Release::Held => {
                if let (Some(gate), Some(order)) = (&mut self.gate, order) {
                    gate.hold(order, line, outcome, in_bar);
                }
            }
        }
    }

    /// A result at the end of its unit: printed unless it was announced live.
    pub(crate) fn test_finished(&mut self, result: &TestResult) {
        if result.announced {
            return;
        }
        // A binary run whole that printed no results: one line for it, which the total does not
        // count, and which says so.
        let marker = if result.counted {
            ""
        } else {
            " (the binary's exit status; not counted, as cargo test counts no test for it)"
        };
        self.announce_as(
            &result.binary,
            &result.name,
            result.outcome,
            result.duration,
            marker,
        );
    }

    /// A failed test about to run again (`--retries`).
    pub(crate) fn retry(&self, binary: &str, name: &str, retry: u32, of: u32) {
        self.line(&format!(
            "test {} ... RETRY {retry}/{of} (alone, with --exact)",
            full_name(binary, name)
        ));
    }

    /// A test that passed after failing.
    pub(crate) fn flaky(&self, result: &TestResult) {
        let tries = result.attempts.len() + 1;
        self.line(&format!(
            "test {} ... FLAKY (passed on try {tries} of {tries})",
            result.full_name()
        ));
    }

    /// A test's own output line, shown as it comes with `--nocapture`.
    pub(crate) fn test_output(&self, line: &str) {
        if self.nocapture {
            self.line(line);
        }
    }

    /// A line of news that is not a problem (cargo's `note:`).
    pub(crate) fn note(&self, text: &str) {
        crate::output::note(text);
    }

    pub(crate) fn warn(&self, text: &str) {
        crate::output::warn(text);
    }

    /// A test that passed another heartbeat period: a line without a terminal, where the progress bar
    /// does not show it (the bar lists the longest-running tests first).
    pub(crate) fn heartbeat(&self, name: &str, over: Duration) {
        if self.bar.is_none() {
            self.line(&format!(
                "test {name} has been running for over {}s",
                over.as_secs()
            ));
        }
    }

    /// Refreshes the progress message with the running tests, the longest-running first.
    pub(crate) fn running(&self, running: &[(String, Duration)]) {
        let Some(bar) = &self.bar else { return };
        let mut running = running.to_vec();
        running.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
        let mut names: Vec<String> = running
            .iter()
            .take(3)
            .map(|(name, t)| format!("{name} ({}s)", t.as_secs()))
            .collect();
        if running.len() > 3 {
            names.push(format!("+{}", running.len() - 3));
        }
        bar.set_message(format!(
            "{} passed, {} failed | {}",
            self.passed,
            self.failed,
            names.join(", ")
        ));
    }

    /// Prints the end of the run; the total line comes last.
    pub(crate) fn finish(mut self, summary: &RunSummary, interrupted: Option<&str>) {
        let cut = self.gate.as_ref().and_then(|g| g.cut());
        self.advance(usize::MAX, cut);
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            crate::output::hide_progress();
        }
        let _ = std::io::stderr().flush();
        let mut out = std::io::stdout().lock();
        let _ = write_summary(&mut out, summary, interrupted);
        let _ = out.flush();
    }
}

impl Drop for Reporter {
    /// A run that ends another way than `finish` (an error, a panic) takes its bar away too: lines
    /// sent to a finished bar would not be seen.
    fn drop(&mut self) {
        if self.bar.is_some() {
            crate::output::hide_progress();
        }
    }
}
