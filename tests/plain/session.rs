//! The session around a run: the environment lock (runs serialize, a timeout fails clearly) and an
//! unreachable Docker engine (tests still run, one warning, nothing swept).

use crate::common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn runs_with_the_same_lock_serialize_and_the_waiter_says_on_whom() {
    let state = temp_dir("lock-state");
    let marks = temp_dir("lock-marks");
    let lock = unique_mark("lock");
    let first_mark = unique_mark("lock-first");
    let first = cleantest("hang", &first_mark)
        .env("CLEANTEST_STATE_DIR", &*state)
        .env("CT_FIXTURE_MARK_DIR", &*marks)
        .args(limits("3s", "1s"))
        .args(["--lock", &lock, "--test", "hang"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // The first run holds the lock once its tests run.
    wait_for_file(
        &marks.join("hangs_forever.started"),
        Duration::from_secs(60),
    );

    // The other runs use another state directory (another user's, another HOME): the lock is the
    // machine's, so they wait all the same.
    let other_state = temp_dir("lock-state-other");
    let timed_out = run(cleantest("hang", &unique_mark("lock-timeout"))
        .env("CLEANTEST_STATE_DIR", &*other_state)
        .args(["--lock", &lock, "--lock-timeout", "1s", "--test", "leak"]));
    assert_eq!(timed_out.status.code(), Some(4), "{}", stderr(&timed_out));
    assert!(
        !stdout(&timed_out).contains("test result:"),
        "nothing may run without the lock"
    );
    assert!(stderr(&timed_out).contains(&lock), "{}", stderr(&timed_out));

    let first_pid = first.id();
    let second_mark = unique_mark("lock-second");
    let second = run(cleantest("hang", &second_mark)
        .env("CLEANTEST_STATE_DIR", &*other_state)
        .args(["--lock", &lock, "--test", "leak"]));
    let second_done = Instant::now();
    let first_out = first.wait_with_output().unwrap();
    assert_eq!(first_out.status.code(), Some(101));
    assert!(second.status.success(), "{}", stderr(&second));
    // The second run could only start after the first released the lock (its 3 s timeout), and it
    // named the holder while it waited.
    let waited = stderr(&second);
    assert_eq!(holder_pid(&waited), first_pid.to_string(), "{waited}");
    assert!(second_done.elapsed() < Duration::from_secs(60));
    assert_no_survivors(&first_mark);
    assert_no_survivors(&second_mark);
}

/// The pid the waiting message names (`held by pid N`).
fn holder_pid(text: &str) -> String {
    let at = text
        .find("held by pid ")
        .unwrap_or_else(|| panic!("no holder named in: {text}"));
    text[at + 12..]
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_second_run_waits_until_the_first_is_done() {
    let state = temp_dir("lock-order-state");
    let lock = unique_mark("lock-order");
    let first = cleantest("hang", &unique_mark("lock-order-1"))
        .env("CLEANTEST_STATE_DIR", &*state)
        .args(limits("2s", "1s"))
        .args(["--lock", &lock, "--test", "hang"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first_pid = first.id();
    // Wait until the first run holds the lock: it writes itself into the lock file.
    let holder = target_dir().join("it-locks").join(format!("{lock}.lock"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&holder)
        .is_ok_and(|t| t.contains(&format!("\"pid\":{first_pid}")))
    {
        assert!(
            Instant::now() < deadline,
            "the first run never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = run(cleantest("hang", &unique_mark("lock-order-2"))
        .env("CLEANTEST_STATE_DIR", &*state)
        .args(["--lock", &lock, "--test", "leak"]));
    assert!(second.status.success());
    // The first run was over before the second got the lock: it has exited by now.
    let first_status = first.wait_with_output().unwrap().status;
    assert_eq!(first_status.code(), Some(101));
    assert!(
        stderr(&second).contains("waiting for the environment lock"),
        "{}",
        stderr(&second)
    );
}

#[test]
fn unreachable_engine_warns_once_and_tests_still_run() {
    let state = temp_dir("down-state");
    let mark = unique_mark("engine-down");
    let out = run(cleantest("mixed", &mark)
        .env("CLEANTEST_STATE_DIR", &*state)
        .env("DOCKER_HOST", "unix:///nonexistent/cleantest/docker.sock")
        .args(["-p", "ct-beta"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(last_totals(&out).passed, 4);
    let err = stderr(&out);
    let warnings = err
        .lines()
        .filter(|l| l.contains("/nonexistent/cleantest/docker.sock"))
        .count();
    assert_eq!(warnings, 1, "one warning: {err}");
    // Nothing reached that engine, so nothing can be there: said so, and no record is left.
    assert!(
        stdout(&out).contains("nothing can have been created there"),
        "{}",
        stdout(&out)
    );
    let records = std::fs::read_dir(state.join("sessions"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(records, 0, "a record of a session that reached no engine");
}
