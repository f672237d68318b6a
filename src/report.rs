//! Reporting: per-test lines while the run goes (an indicatif progress bar on a terminal, plain
//! cargo-test-like lines otherwise or when `CI` is set), and at the end the failures with their output,
//! timeouts, leftovers, the slowest tests and the single cargo-style total line, which is always the
//! last line printed.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::docker::Kind;
use crate::session::DockerEnd;

/// The result of one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Passed,
    Failed,
    Ignored,
    TimedOut,
}

impl Outcome {
    pub(crate) fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::TimedOut)
    }

    fn word(self) -> &'static str {
        match self {
            Outcome::Passed => "ok",
            Outcome::Failed => "FAILED",
            Outcome::Ignored => "ignored",
            Outcome::TimedOut => "TIMEOUT",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TestResult {
    pub binary: String,
    pub name: String,
    pub outcome: Outcome,
    pub duration: Duration,
    /// What the test printed, when known.
    pub output: Option<String>,
    pub note: Option<String>,
    /// Already printed live, when libtest reported it (or when it timed out).
    pub announced: bool,
}

impl TestResult {
    pub(crate) fn full_name(&self) -> String {
        format!("{}::{}", self.binary, self.name)
    }
}

/// A failure of a whole process that no single test accounts for.
#[derive(Debug, Clone)]
pub(crate) struct UnitProblem {
    pub binary: String,
    pub message: String,
    pub output: String,
}

/// Processes a unit left in its group, killed by the runner.
#[derive(Debug, Clone)]
pub(crate) struct Leftover {
    pub unit: String,
    /// `process(es)` killed, or `container(s)` left running (swept with the session).
    pub kind: &'static str,
    pub processes: Vec<String>,
}

/// Everything the run produced.
#[derive(Debug, Default)]
pub(crate) struct RunSummary {
    pub results: Vec<TestResult>,
    pub problems: Vec<UnitProblem>,
    pub leftovers: Vec<Leftover>,
    pub filtered_out: usize,
    pub elapsed: Duration,
    pub session: String,
    /// The run was stopped by a signal before every test could finish.
    pub interrupted: bool,
    /// What the session's end did with Docker resources, printed just before the total.
    pub docker_lines: Vec<String>,
}

impl RunSummary {
    pub(crate) fn count(&self, outcome: Outcome) -> usize {
        self.results.iter().filter(|r| r.outcome == outcome).count()
    }

    pub(crate) fn failed(&self) -> bool {
        self.interrupted
            || !self.problems.is_empty()
            || self.results.iter().any(|r| r.outcome.is_failure())
    }

    /// `test result: ok. N passed; M failed; K ignored; 0 measured; F filtered out; finished in X.XXs`
    pub(crate) fn total_line(&self) -> String {
        format!(
            "test result: {}. {} passed; {} failed; {} ignored; 0 measured; {} filtered out; finished in {:.2}s",
            if self.failed() { "FAILED" } else { "ok" },
            self.count(Outcome::Passed),
            self.count(Outcome::Failed) + self.count(Outcome::TimedOut),
            self.count(Outcome::Ignored),
            self.filtered_out,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Live output of a run.
pub(crate) struct Reporter {
    bar: Option<ProgressBar>,
    quiet: bool,
    nocapture: bool,
    show_output: bool,
    passed: usize,
    failed: usize,
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
            bar
        });
        Reporter {
            bar,
            quiet,
            nocapture,
            show_output,
            passed: 0,
            failed: 0,
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
            }
        }
    }

    /// Whether passing tests' output is kept for the end (`--show-output`, as cargo test).
    pub(crate) fn keeps_passing_output(&self) -> bool {
        self.show_output
    }

    /// Prints a test's result line as soon as it is known.
    pub(crate) fn announce(
        &mut self,
        binary: &str,
        name: &str,
        outcome: Outcome,
        duration: Duration,
    ) {
        match outcome {
            Outcome::Passed => self.passed += 1,
            Outcome::Failed | Outcome::TimedOut => self.failed += 1,
            Outcome::Ignored => {}
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
        if self.quiet && !outcome.is_failure() {
            return;
        }
        let time = if duration >= Duration::from_secs(1) || outcome == Outcome::TimedOut {
            format!(" ({:.2}s)", duration.as_secs_f64())
        } else {
            String::new()
        };
        self.line(&format!(
            "test {binary}::{name} ... {}{time}",
            outcome.word()
        ));
    }

    /// A result at the end of its unit: printed unless it was announced live.
    pub(crate) fn test_finished(&mut self, result: &TestResult) {
        if !result.announced {
            self.announce(
                &result.binary,
                &result.name,
                result.outcome,
                result.duration,
            );
        }
    }

    /// A test's own output line, shown as it comes with `--nocapture`.
    pub(crate) fn test_output(&self, line: &str) {
        if self.nocapture {
            self.line(line);
        }
    }

    pub(crate) fn warn(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("warning: {text}")),
            None => eprintln!("warning: {text}"),
        }
    }

    /// Refreshes the progress message with the running tests.
    pub(crate) fn running(&self, running: &[(String, Duration)]) {
        let Some(bar) = &self.bar else { return };
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
    pub(crate) fn finish(self, summary: &RunSummary, interrupted: Option<&str>) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let _ = std::io::stderr().flush();
        let mut out = std::io::stdout().lock();
        let _ = write_summary(&mut out, summary, interrupted);
        let _ = out.flush();
    }
}

fn write_summary(
    out: &mut impl Write,
    s: &RunSummary,
    interrupted: Option<&str>,
) -> std::io::Result<()> {
    let successes: Vec<&TestResult> = s
        .results
        .iter()
        .filter(|r| {
            r.outcome == Outcome::Passed
                && r.output.as_deref().is_some_and(|o| !o.trim().is_empty())
        })
        .collect();
    if !successes.is_empty() {
        writeln!(out, "\nsuccesses:")?;
        for r in successes {
            writeln!(out, "\n---- {} ----", r.full_name())?;
            writeln!(out, "{}", r.output.as_deref().unwrap_or("").trim_end())?;
        }
    }
    let failures: Vec<&TestResult> = s
        .results
        .iter()
        .filter(|r| r.outcome.is_failure())
        .collect();
    if !failures.is_empty() || !s.problems.is_empty() {
        writeln!(out, "\nfailures:")?;
        for r in &failures {
            writeln!(out, "\n---- {} {} ----", r.full_name(), r.outcome.word())?;
            if let Some(note) = &r.note {
                writeln!(out, "{note}")?;
            }
            match r.output.as_deref().map(str::trim_end) {
                Some(text) if !text.is_empty() => writeln!(out, "{text}")?,
                _ if r.outcome == Outcome::TimedOut => writeln!(
                    out,
                    "(no output: libtest keeps a test's output until it ends; run with --isolate to see it)"
                )?,
                _ => {}
            }
        }
        for p in &s.problems {
            writeln!(out, "\n---- {} ----\n{}", p.binary, p.message)?;
            for line in tail(&p.output, 40) {
                writeln!(out, "{line}")?;
            }
        }
        writeln!(out, "\nfailures:")?;
        for r in &failures {
            writeln!(out, "    {} ({})", r.full_name(), r.outcome.word())?;
        }
        for p in &s.problems {
            writeln!(out, "    {} (process failed)", p.binary)?;
        }
    }
    if !s.leftovers.is_empty() {
        writeln!(
            out,
            "\nleft behind (processes killed, containers swept with the session):"
        )?;
        for l in &s.leftovers {
            writeln!(out, "    {}: left {} {}", l.unit, l.processes.len(), l.kind)?;
            for p in l.processes.iter().take(5) {
                writeln!(out, "        {p}")?;
            }
        }
    }
    let mut slow: Vec<&TestResult> = s
        .results
        .iter()
        .filter(|r| r.duration >= Duration::from_millis(500))
        .collect();
    slow.sort_by_key(|r| std::cmp::Reverse(r.duration));
    if !slow.is_empty() {
        writeln!(out, "\nslowest tests:")?;
        for r in slow.iter().take(5) {
            writeln!(
                out,
                "    {:>8.2}s {}",
                r.duration.as_secs_f64(),
                r.full_name()
            )?;
        }
    }
    for line in &s.docker_lines {
        writeln!(out, "{line}")?;
    }
    if let Some(why) = interrupted {
        writeln!(
            out,
            "\ninterrupted by {why}: every test process was stopped; session {}",
            s.session
        )?;
    }
    writeln!(out)?;
    writeln!(out, "{}", s.total_line())
}

/// The Docker part of the summary: the sweep line and what could not be removed, or the kept table with
/// ready-to-paste commands, or why nothing was swept.
pub(crate) fn docker_lines(end: &DockerEnd, session: &str) -> Vec<String> {
    let mut out = Vec::new();
    match end {
        DockerEnd::Swept(r) => {
            if r.containers + r.networks + r.volumes > 0 || !r.failures.is_empty() {
                out.push(format!("\n{}", r.line()));
            }
            for f in &r.failures {
                out.push(format!(
                    "    could not remove {} {}: {}",
                    f.resource.kind.word(),
                    f.resource.name,
                    f.error
                ));
                out.push(format!(
                    "        retry: {}",
                    crate::docker::sweep::retry_command(f)
                ));
            }
            if !r.failures.is_empty() {
                out.push(format!(
                    "    or later: cargo cleantest sweep --session {session}"
                ));
            }
        }
        DockerEnd::Kept(found) if !found.is_empty() => {
            out.push(format!("\nkept for inspection (session {session}):"));
            out.push(format!(
                "    {:<28} {:<28} {:<10} PORTS",
                "CONTAINER", "IMAGE", "STATE"
            ));
            let containers: Vec<_> = found.iter().filter(|r| r.kind == Kind::Container).collect();
            for c in &containers {
                out.push(format!(
                    "    {:<28} {:<28} {:<10} {}",
                    c.name, c.image, c.state, c.ports
                ));
            }
            for r in found.iter().filter(|r| r.kind != Kind::Container) {
                out.push(format!("    {} {}", r.kind.word(), r.name));
            }
            if let Some(c) = containers.first() {
                out.push(format!(
                    "  inspect:  docker logs {}    docker exec -it {} sh",
                    c.name, c.name
                ));
            }
            out.push(format!(
                "  list:     docker ps -a --filter label={}={session}",
                crate::docker::SESSION_LABEL
            ));
            out.push(format!(
                "  clean up: cargo cleantest sweep --session {session}"
            ));
        }
        DockerEnd::Kept(_) => {}
        DockerEnd::NotSwept { endpoint, reason } => {
            out.push(format!(
                "\nno Docker engine answers at {endpoint} ({reason}): nothing was swept"
            ));
        }
        DockerEnd::Failed(e) => {
            out.push(format!(
                "\nfailed to sweep the session's Docker resources: {e}"
            ));
            out.push(format!(
                "    retry: cargo cleantest sweep --session {session}"
            ));
        }
    }
    out
}

fn tail(text: &str, lines: usize) -> Vec<&str> {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome) -> TestResult {
        TestResult {
            binary: "pkg".into(),
            name: "t".into(),
            outcome,
            duration: Duration::ZERO,
            output: None,
            note: None,
            announced: false,
        }
    }

    #[test]
    fn total_line_counts_timeouts_as_failures() {
        let s = RunSummary {
            results: vec![
                result(Outcome::Passed),
                result(Outcome::TimedOut),
                result(Outcome::Ignored),
            ],
            filtered_out: 4,
            elapsed: Duration::from_millis(1234),
            ..Default::default()
        };
        assert_eq!(
            s.total_line(),
            "test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 4 filtered out; finished in 1.23s"
        );
    }

    #[test]
    fn summary_ends_with_the_total_line() {
        let s = RunSummary {
            results: vec![result(Outcome::Failed)],
            ..Default::default()
        };
        let mut buf = Vec::new();
        write_summary(&mut buf, &s, Some("SIGINT")).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.trim_end()
                .lines()
                .last()
                .unwrap()
                .starts_with("test result: FAILED. 0 passed; 1 failed")
        );
    }
}
