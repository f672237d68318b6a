//! Per-test timeouts and leftovers: hung tests are stopped (SIGTERM, grace, SIGKILL of the whole group),
//! reported TIMEOUT, the rest of their binary still runs, and nothing of the run survives it.

use crate::common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn hung_tests_time_out_and_the_rest_of_their_binary_runs_in_both_modes() {
    for mode in [None, Some("--isolate")] {
        let dir = temp_dir("hang");
        let junit = dir.join("junit.xml");
        let mark = unique_mark("hang");
        let started = Instant::now();
        let out = run(cleantest("hang", &mark)
            .args(mode)
            .args(limits("3s", "1s"))
            .args(["--no-fail-fast", "--test", "hang", "--test", "hang_child"])
            .arg("--junit")
            .arg(&junit));
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(101), "{}", stdout(&out));
        let totals = last_totals(&out);
        // fast_a, fast_b, zz_after, child_neighbour pass; the two hung tests time out.
        assert_eq!(
            (totals.passed, totals.failed),
            (4, 2),
            "{mode:?}\n{}",
            stdout(&out)
        );
        let xml = std::fs::read_to_string(&junit).unwrap();
        for hung in ["hangs_forever", "child_ignores_term"] {
            assert!(
                junit_case(&xml, hung).contains("type=\"timeout\""),
                "{hung} under {mode:?}: {xml}"
            );
        }
        assert!(!junit_case(&xml, "zz_after").contains("<failure"), "{xml}");
        // `hangs_forever` prints nothing: the note says why there is no output, and under `--isolate`
        // it does not advise `--isolate`.
        let silent = match mode {
            None => "run with --isolate to see it",
            Some(_) => "the test printed nothing before it was stopped",
        };
        assert!(stdout(&out).contains(silent), "{mode:?}\n{}", stdout(&out));
        if mode.is_some() {
            assert!(
                !stdout(&out).contains("run with --isolate"),
                "{}",
                stdout(&out)
            );
        }
        // Both hang at once (two binaries in parallel, or two isolated tests): timeout + grace + overhead.
        assert!(
            took < Duration::from_secs(3 + 1 + 6),
            "{mode:?} took {took:?}"
        );
        assert_no_survivors(&mark);
    }
}

#[test]
fn a_background_process_left_by_a_test_is_killed_when_it_ends() {
    for mode in [None, Some("--isolate")] {
        let dir = temp_dir("leak");
        let mark = unique_mark("leak");
        let out = run(cleantest("hang", &mark)
            .args(mode)
            .args(["--test", "leak"])
            .env("CT_FIXTURE_MARK_DIR", &*dir));
        assert!(out.status.success(), "{}", stdout(&out));
        let pid: i32 = std::fs::read_to_string(dir.join("leaked.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The sleep was re-parented away from us, so "gone" means no live process with that pid
        // carrying the run's mark.
        assert_no_survivors(&mark);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "the leaked sleep {pid} is alive: {stat}"
        );
        assert!(
            stdout(&out).contains("left behind"),
            "leaked {pid}:\n{}\n{}",
            stdout(&out),
            stderr(&out)
        );
    }
}

#[test]
fn a_per_test_override_from_the_config_profile_applies() {
    // The `quick` profile of the hang fixture gives `*hangs_forever` a 1s timeout and everything else 60s.
    let mark = unique_mark("override");
    let started = Instant::now();
    let out = run(cleantest("hang", &mark).args([
        "--config-profile",
        "quick",
        "--grace-period",
        "1s",
        "--test",
        "hang",
    ]));
    assert_eq!(out.status.code(), Some(101), "{}", stdout(&out));
    assert_eq!(last_totals(&out).failed, 1, "{}", stdout(&out));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the 1s override was not used"
    );
    assert_no_survivors(&mark);
}

#[test]
fn results_are_reported_while_their_binary_still_runs() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    // hangs_forever keeps the `hang` binary alive; fast_a's result must arrive before that ends.
    let mark = unique_mark("live");
    let mut child = cleantest("hang", &mark)
        .args(limits("5m", "1s"))
        .args(["--test", "hang"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut seen = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.starts_with("test ct-hang::hang::fast_a ... ok") {
            seen = true;
            break;
        }
    }
    assert!(seen, "fast_a's result never arrived");
    // The hung test is still running: nothing can have ended the binary within a 5 minute timeout.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert_no_survivors(&mark);
}

#[test]
fn leak_fail_turns_a_leftover_process_into_a_failure() {
    for mode in [None, Some("--isolate")] {
        let dir = temp_dir("leak-fail");
        let junit = dir.join("junit.xml");
        let mark = unique_mark("leak-fail");
        let out = run(cleantest("hang", &mark)
            .args(mode)
            .args(["--test", "leak", "--leak", "fail", "--junit"])
            .arg(&junit));
        assert_eq!(out.status.code(), Some(101), "{mode:?}: {}", stdout(&out));
        let xml = std::fs::read_to_string(&junit).unwrap();
        if mode.is_some() {
            // Isolated: the leaking test itself fails; its neighbour still passes.
            assert!(
                junit_case(&xml, "leaves_a_sleep_behind").contains("<failure"),
                "{xml}"
            );
            assert!(
                !junit_case(&xml, "leak_neighbour_passes").contains("<failure"),
                "{xml}"
            );
        } else {
            // Shared: the binary fails.
            assert!(xml.contains("left 1 process(es) behind"), "{xml}");
        }
        assert_no_survivors(&mark);
    }
}

#[test]
fn a_failure_beside_a_hanging_test_keeps_its_message() {
    let dir = temp_dir("fail-beside-hang");
    let junit = dir.join("junit.xml");
    let mark = unique_mark("fail-beside-hang");
    // Both tests start at once; the hanging one is killed before libtest prints the failure's output.
    let out = run(cleantest("hang", &mark)
        .args(limits("3s", "1s"))
        .args(["--test", "fail_beside_hang", "--junit"])
        .arg(&junit)
        .args(["--", "--test-threads", "2"]));
    assert_eq!(out.status.code(), Some(101), "{}", stderr(&out));
    let text = stdout(&out);
    let report = text
        .split("---- ct-hang::fail_beside_hang::fails_with_a_reason FAILED ----")
        .nth(1)
        .unwrap_or_else(|| panic!("no failure section:\n{text}"));
    assert!(
        report.contains("the reason this test failed") && report.contains("from a rerun"),
        "{text}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    let case = junit_case(&xml, "fails_with_a_reason");
    assert!(
        case.contains("message=\"the reason this test failed\""),
        "{xml}"
    );
    // The rerun recovers output only: the counts are those of the one run.
    assert_eq!(
        (last_totals(&out).passed, last_totals(&out).failed),
        (0, 2),
        "{text}"
    );
    assert_no_survivors(&mark);
}

#[test]
fn without_a_terminal_a_long_test_is_reported_every_heartbeat() {
    for mode in [None, Some("--isolate")] {
        let mark = unique_mark("heartbeat");
        let out = run(cleantest("hang", &mark)
            .args(mode)
            .args(limits("3500ms", "1s"))
            .args(["--heartbeat", "1s", "--test", "hang"]));
        let text = stdout(&out);
        for over in ["1s", "2s", "3s"] {
            let line =
                format!("test ct-hang::hang::hangs_forever has been running for over {over}");
            assert_eq!(
                text.lines().filter(|l| *l == line).count(),
                1,
                "{mode:?}: `{line}` once\n{text}"
            );
        }
        assert_no_survivors(&mark);
    }
}
