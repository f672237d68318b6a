//! Signals: the first SIGINT/SIGTERM/SIGHUP stops every test (forwarded, grace, SIGKILL), cleans up and
//! exits 128+signal; a second one kills at once.

use crate::common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Starts the runner on the hanging tests and waits until both hung tests are running.
fn start_hanging_run(mark: &str, grace: &str, mode: Option<&str>) -> (Child, common::TempDir) {
    spawn_until_started(
        cleantest("hang", mark)
            .args(mode)
            .args([
                "--no-fail-fast",
                "--grace-period",
                grace,
                "--test",
                "hang",
                "--test",
                "hang_child",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        &["hangs_forever", "child_ignores_term"],
    )
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
}

#[test]
fn first_signal_stops_everything_within_the_grace_period_with_its_exit_code() {
    for (sig, code, mode) in [
        (Signal::SIGINT, 130, None),
        (Signal::SIGTERM, 143, Some("--isolate")),
        (Signal::SIGHUP, 129, None),
    ] {
        let mark = unique_mark("first-signal");
        let (child, _) = start_hanging_run(&mark, "2s", mode);
        let sent = Instant::now();
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        let took = sent.elapsed();
        assert_eq!(out.status.code(), Some(code), "{sig:?}\n{}", stderr(&out));
        // The SIGTERM/SIGINT-ignoring child needs the full grace period, then SIGKILL.
        assert!(took < Duration::from_secs(2 + 2), "{sig:?} took {took:?}");
        // The tests that were running are named, and counted as failed: the two hung ones, and in
        // shared mode maybe a neighbour that had started beside them but not yet reported.
        let text = stdout(&out);
        let interrupted = text
            .lines()
            .filter(|l| l.starts_with("test ") && l.contains(" ... INTERRUPTED"))
            .count();
        assert!(
            interrupted >= 2
                && last_totals(&out).failed == interrupted
                && text.contains("test result: FAILED"),
            "{text}"
        );
        for name in ["hangs_forever", "child_ignores_term"] {
            assert!(
                text.lines()
                    .any(|l| l.contains(name) && l.contains("INTERRUPTED")),
                "{name} under {sig:?}: {text}"
            );
        }
        assert_no_survivors(&mark);
    }
}

#[test]
fn interrupted_tests_are_in_junit_and_unstarted_ones_are_listed() {
    let mark = unique_mark("interrupted-junit");
    let junit_dir = temp_dir("interrupted-junit");
    let junit = junit_dir.join("junit.xml");
    // One test at a time: the hung test blocks the rest of its binary, which never starts.
    let (child, _) = spawn_until_started(
        cleantest("hang", &mark)
            .args([
                "--isolate",
                "--grace-period",
                "1s",
                "--test",
                "hang",
                "--junit",
            ])
            .arg(&junit)
            .args(["--", "--test-threads", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        &["hangs_forever"],
    );
    signal(&child, Signal::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let xml = std::fs::read_to_string(&junit).unwrap();
    let case = xml
        .split("<testcase")
        .find(|c| c.contains("name=\"hangs_forever\""))
        .unwrap();
    assert!(case.contains("type=\"interrupted\""), "{xml}");
    // zz_after comes after hangs_forever and never started: skipped in JUnit, listed as not run.
    let after = xml
        .split("<testcase")
        .find(|c| c.contains("name=\"zz_after\""))
        .unwrap();
    assert!(after.contains("<skipped"), "{xml}");
    assert!(stdout(&out).contains("not run: 1 test"), "{}", stdout(&out));
    assert_no_survivors(&mark);
}

#[test]
fn second_sigint_kills_at_once() {
    let mark = unique_mark("second-signal");
    let (child, dir) = start_hanging_run(&mark, "60s", None);
    signal(&child, Signal::SIGINT);
    // Two signals sent back to back are merged into one by the kernel: wait until the first has acted
    // (the hung test's process, which has no SIGINT handler, is gone).
    let test_pid = std::fs::read_to_string(dir.join("hangs_forever.started")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{}/stat", test_pid.trim()))
        .is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(
            Instant::now() < deadline,
            "the first SIGINT did not reach the tests"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The run is now waiting out a 60 s grace period for the child that ignores SIGINT.
    assert!(child.id() > 0 && std::path::Path::new(&format!("/proc/{}", child.id())).exists());
    let sent = Instant::now();
    signal(&child, Signal::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "took {:?}",
        sent.elapsed()
    );
    assert_no_survivors(&mark);
}
