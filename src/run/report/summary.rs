//! The end of the run: failures with their output, problems, leftovers, the slowest tests, what the
//! session's end did with Docker, and the cargo-style total line, always last.

use std::io::Write;
use std::time::Duration;

use super::{Outcome, RunSummary, TestResult};

pub(super) fn write_summary(
    out: &mut impl Write,
    s: &RunSummary,
    interrupted: Option<&str>,
) -> std::io::Result<()> {
    write_successes(out, s)?;
    write_failures(out, s)?;
    write_flaky(out, s)?;
    write_leftovers(out, s)?;
    write_slowest(out, s)?;
    write_not_run(out, s)?;
    write_session(out, s)?;
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

/// Passing tests' output, when it was kept (`--show-output`).
fn write_successes(out: &mut impl Write, s: &RunSummary) -> std::io::Result<()> {
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
    Ok(())
}

/// Failures with their output, problems, stray output, the list of failures, and how to rerun them.
fn write_failures(out: &mut impl Write, s: &RunSummary) -> std::io::Result<()> {
    let failures: Vec<&TestResult> = s
        .results
        .iter()
        .filter(|r| r.outcome.is_failure())
        .collect();
    if failures.is_empty() && s.problems.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nfailures:")?;
    for r in &failures {
        writeln!(out, "\n---- {} {} ----", r.full_name(), r.outcome.word())?;
        if let Some(note) = &r.note {
            writeln!(out, "{note}")?;
        }
        match r.output.as_deref().map(str::trim_end) {
            Some(text) if !text.is_empty() => writeln!(out, "{text}")?,
            // Alone in its process, a test's output is all there is: advising `--isolate` would send
            // the user in a circle.
            _ if r.outcome == Outcome::TimedOut && s.isolated => writeln!(
                out,
                "(no output: the test printed nothing before it was stopped)"
            )?,
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
    for (binary, text) in &s.stray {
        writeln!(
            out,
            "\n---- {binary}: printed outside libtest's capture while several of its tests ran ----\n{}",
            text.trim_end()
        )?;
    }
    writeln!(out, "\nfailures:")?;
    for r in &failures {
        writeln!(out, "    {} ({})", r.full_name(), r.outcome.word())?;
    }
    for p in &s.problems {
        writeln!(out, "    {} (process failed)", p.binary)?;
    }
    if !s.rerun.is_empty() {
        writeln!(out, "\nto rerun the failures:")?;
        for line in &s.rerun {
            writeln!(out, "    {line}")?;
        }
    }
    Ok(())
}

/// What the tests left behind, by unit.
fn write_leftovers(out: &mut impl Write, s: &RunSummary) -> std::io::Result<()> {
    if s.leftovers.is_empty() {
        return Ok(());
    }
    let containers = if s.kept {
        "containers kept for inspection"
    } else {
        "containers swept with the session"
    };
    writeln!(
        out,
        "\nleft behind (processes killed, temporary files removed, {containers}):"
    )?;
    for l in &s.leftovers {
        writeln!(out, "    {}: left {}", l.unit, l.what)?;
        for p in l.items.iter().take(5) {
            writeln!(out, "        {p}")?;
        }
    }
    Ok(())
}

/// The five slowest tests of half a second or more.
fn write_slowest(out: &mut impl Write, s: &RunSummary) -> std::io::Result<()> {
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
    Ok(())
}

/// The session's part: services that stopped, their logs, what its end did with Docker, its peak,
/// the shard.
fn write_session(out: &mut impl Write, s: &RunSummary) -> std::io::Result<()> {
    if !s.service_deaths.is_empty() {
        writeln!(
            out,
            "\nservices that stopped during the run (failures after it may follow from it):"
        )?;
        for death in &s.service_deaths {
            writeln!(out, "    {}", death.line())?;
        }
    }
    if let Some(dir) = &s.service_logs {
        writeln!(out, "\nservice logs: {}", dir.display())?;
    }
    for line in &s.docker_lines {
        writeln!(out, "{line}")?;
    }
    if let Some(peak) = &s.peak {
        writeln!(out, "{peak}")?;
    }
    if let Some(partition) = &s.partition {
        writeln!(out, "\n{partition}")?;
    }
    Ok(())
}

/// Tests that failed, then passed on a retry.
fn write_flaky(out: &mut impl Write, s: &RunSummary) -> std::io::Result<()> {
    let flaky: Vec<&TestResult> = s.results.iter().filter(|r| r.is_flaky()).collect();
    if flaky.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nflaky tests (failed, then passed on a retry):")?;
    for r in flaky {
        let tries = r.attempts.len() + 1;
        let counted = if r.flaky_failed {
            "; counted as failed (flaky-result = \"fail\")"
        } else {
            ""
        };
        writeln!(
            out,
            "    {} FLAKY (passed on try {tries} of {tries}{counted})",
            r.full_name()
        )?;
    }
    Ok(())
}

/// Names up to ten tests of a list, then how many more.
fn write_names(out: &mut impl Write, names: &[super::NotRun]) -> std::io::Result<()> {
    for n in names.iter().take(10) {
        writeln!(out, "    {}", super::full_name(&n.binary, &n.name))?;
    }
    if names.len() > 10 {
        writeln!(out, "    ... and {} more", names.len() - 10)?;
    }
    Ok(())
}

/// What never ran: tests an interrupt or `--max-fail` stopped before they started, binaries fail-fast
/// left out.
fn write_not_run(out: &mut impl Write, s: &RunSummary) -> std::io::Result<()> {
    if !s.not_run.is_empty() {
        writeln!(
            out,
            "
not run: {} (the run was interrupted before they started; not counted below)",
            plural(s.not_run.len(), "test")
        )?;
        write_names(out, &s.not_run)?;
    }
    if let (Some(max), false) = (s.max_fail, s.max_fail_skipped.is_empty()) {
        writeln!(
            out,
            "
not run after {} (--max-fail {max}): {}; not counted below",
            plural(max as usize, "failure"),
            plural(s.max_fail_skipped.len(), "test")
        )?;
        write_names(out, &s.max_fail_skipped)?;
    }
    if !s.fail_fast_skipped.is_empty() {
        writeln!(
            out,
            "
not run after the first failure, as under cargo test (fail-fast): {}",
            s.fail_fast_skipped.join(", ")
        )?;
        writeln!(out, "    run with --no-fail-fast to run them too")?;
    }
    Ok(())
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn tail(text: &str, lines: usize) -> Vec<&str> {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::report::tests::result;

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
