//! The "never lie" cells (issue 12, D): what the run reports is what the tests did.

use super::common::docker::*;
use super::common::*;
use libtest_mimic::Failed;

pub(crate) fn cells() -> Vec<Cell> {
    let mut cells = vec![
        trial(
            "a_child_cannot_fake_another_tests_result",
            child_fakes_a_result,
        ),
        trial(
            "a_verdict_printed_before_its_test_started_is_not_taken",
            early_verdict,
        ),
    ];
    for (name, mode) in [("shared", None), ("isolated", Some("--isolate"))] {
        cells.push(trial(
            format!("a_256_mib_line_keeps_counts_exact_and_the_runner_small_{name}"),
            move || long_line(mode),
        ));
    }
    cells
}

/// `a`'s child prints `test c_hangs ... ok` before `c_hangs` can have started (two test threads, `a`
/// and `b` running); `c_hangs` then hangs. Before, the early line was taken as its verdict: nothing
/// was "running" any more, so no timeout fired and the run hung. Now `c_hangs` times out.
fn early_verdict() -> Result<(), Failed> {
    let mark = unique_mark("early-verdict");
    let junit_dir = temp_dir("early-verdict");
    let junit = junit_dir.join("junit.xml");
    let mut child = cleantest("hang", &mark)
        .args(["--test", "early_verdict", "--junit"])
        .arg(&junit)
        .args(limits("3s", "1s"))
        .args(["--", "--test-threads=2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_no_survivors(&mark);
    check(status.is_some(), || {
        "the run hung: the early verdict stopped the timeout".into()
    })?;
    check(status.and_then(|s| s.code()) == Some(101), || {
        format!("{status:?}")
    })?;
    let xml = std::fs::read_to_string(&junit)?;
    let c = junit_case(&xml, "c_hangs");
    check(c.contains("timeout"), || {
        format!("c_hangs was not timed out:\n{xml}")
    })?;
    let a = junit_case(&xml, "a_prints_the_verdict_of_c");
    check(!a.contains("<failure"), || {
        format!("the hang was blamed on a:\n{xml}")
    })
}

/// The runner's peak resident set (VmHWM, KiB), read from /proc while it runs.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One test writes a 256 MiB line between two others. Before, the runner held the whole line (RSS
/// about 1.3-2x its length) and, from 256 MB, lost the unit's last lines to the EOF wait, reporting
/// passing tests FAILED. Now: 3 passed, exit 0, and the runner's peak under 64 MiB.
fn long_line(mode: Option<&str>) -> Result<(), Failed> {
    let mark = unique_mark("long-line");
    // Built first, so that the run measured is the runner's own work, not a build's.
    let built = run(cleantest("hang", &mark).args(["--test", "long_line", "--no-run"]));
    check_success(&built)?;
    let mut child = cleantest("hang", &mark)
        .args(["--test", "long_line"])
        .args(mode)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    // stdout and stderr read on threads of their own, so the pipes never fill.
    let mut out_pipe = child.stdout.take().ok_or("no stdout")?;
    let mut err_pipe = child.stderr.take().ok_or("no stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut out_pipe, &mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut err_pipe, &mut text);
        text
    });
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = peak_kib(pid) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        // A sampling period, not a wait for an event: VmHWM is a high-water mark, so any later read
        // still shows an earlier peak.
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let text = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let totals = parse_totals(
        text.lines()
            .rev()
            .find(|l| l.starts_with("test result:"))
            .unwrap_or(""),
    );
    let summary: String = text
        .lines()
        .filter(|l| l.len() < 300)
        .collect::<Vec<_>>()
        .join("\n");
    check(status.success(), || format!("{status:?}\n{summary}\n{err}"))?;
    check(
        totals.is_some_and(|t| t.passed == 3 && t.failed == 0),
        || format!("counts not exact: {totals:?}\n{summary}"),
    )?;
    check(peak > 0 && peak < 64 << 10, || {
        format!("the runner's peak RSS was {} MiB (at most 64)", peak >> 10)
    })?;
    assert_no_survivors(&mark);
    Ok(())
}

/// A test's child prints `test b_fails ... ok` to the inherited stdout before `b_fails` fails for
/// real (shared mode, where both share one output). Before, `b_fails` was reported passed and its
/// panic lost; it must be reported failed, with its panic, and the run must fail.
fn child_fakes_a_result() -> Result<(), Failed> {
    let mark = unique_mark("fake-result");
    let junit_dir = temp_dir("fake-result");
    let junit = junit_dir.join("junit.xml");
    let out = run(cleantest("hang", &mark)
        .args(["--test", "fake_result", "--junit"])
        .arg(&junit));
    check(out.status.code() == Some(101), || {
        format!("{:?}\n{}{}", out.status, stdout(&out), stderr(&out))
    })?;
    let xml = std::fs::read_to_string(&junit)?;
    let b = junit_case(&xml, "b_fails");
    check(
        b.contains("<failure") && b.contains("the real failure of b_fails"),
        || format!("b_fails not reported failed with its panic:\n{xml}"),
    )?;
    check(
        !junit_case(&xml, "a_child_fakes_a_result").contains("<failure"),
        || format!("the faking test itself passed:\n{xml}"),
    )?;
    assert_no_survivors(&mark);
    Ok(())
}
