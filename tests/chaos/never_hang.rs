//! The "never hang" cells (issue 12, C): no engine call may hold up scheduling, timeouts or signals.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::common::docker::*;
use super::common::*;
use libtest_mimic::Failed;

pub(crate) fn cells() -> Vec<Cell> {
    let mut hung = trial(
        "a_hung_engine_does_not_hold_up_timeouts",
        hung_engine_and_timeouts,
    );
    hung.unavailable = private_engine_problem();
    vec![
        hung,
        trial(
            "a_stopped_reaper_does_not_hang_the_end_of_the_run",
            stopped_reaper,
        ),
    ]
}

/// A test SIGSTOPs the session's reaper (it ignores SIGTERM, but not that). Dismissing it used to wait
/// for it forever; now the wait is bounded, then the reaper is resumed and killed.
fn stopped_reaper() -> Result<(), Failed> {
    let mark = unique_mark("stopped-reaper");
    let script = "for c in $(cat /proc/$PPID/task/*/children); do \
                    if [ \"$(tr '\\0' '\\n' < /proc/$c/cmdline | sed -n 2p)\" = __reaper ]; then \
                      kill -STOP $c && echo \"stopped $c\"; fi; done";
    let mut child = exec_in_session(&mark, &temp_dir("stopped-reaper"))
        .args(["--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut out, &mut text);
    }
    let reaper = text
        .lines()
        .find_map(|l| l.strip_prefix("stopped "))
        .unwrap_or_default()
        .to_string();
    check(!reaper.is_empty(), || {
        format!("the test found no reaper to stop: {text:?}")
    })?;
    check(status.is_some_and(|s| s.success()), || {
        format!("the run did not end within 60 s of its reaper being stopped: {status:?}")
    })?;
    check(is_gone(&reaper), || {
        format!("the stopped reaper {reaper} is still there")
    })?;
    assert_no_survivors(&mark);
    Ok(())
}

/// Whether the process whose pid a fixture wrote to `marks/<test>.started` is gone (or a zombie).
fn gone(marks: &Path, test: &str) -> bool {
    is_gone(&std::fs::read_to_string(marks.join(format!("{test}.started"))).unwrap_or_default())
}

/// One test leaves a container and ends while the engine is frozen; the other hangs past its 8 s
/// timeout. The timeout must stop it while the engine still answers nothing: the leak check of the
/// first test is asked off the scheduler's thread. Before, it was asked on it, and the timeout waited
/// for the engine (61 s in the review).
fn hung_engine_and_timeouts() -> Result<(), Failed> {
    let engine = PrivateEngine::start()?;
    let mark = unique_mark("hung-engine");
    let (mut child, marks) = spawn_until_started(
        cleantest("docker", &mark)
            .env("CLEANTEST_STATE_DIR", temp_dir("hung-state"))
            .env("DOCKER_HOST", engine.host())
            .args(["--no-lock", "--isolate", "-j", "2", "--test", "proxied"])
            .args(limits("8s", "1s"))
            .args([
                "--",
                "--exact",
                "leaves_a_container_then_waits",
                "hangs_past_its_timeout",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        &["left", "hangs"],
    );
    engine.pause();
    std::fs::write(marks.join("go"), "")?;
    // The timeout is 8 s from the test's start; give it twice that, with the engine frozen throughout.
    let deadline = Instant::now() + Duration::from_secs(16);
    while !gone(&marks, "hangs") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped_in_time = gone(&marks, "hangs");
    engine.resume();
    let status = child.wait()?;
    check(stopped_in_time, || {
        "the timed-out test still ran 16 s after the engine froze: the scheduler waited for it"
            .into()
    })?;
    check(status.code() == Some(101), || format!("{status:?}"))?;
    let left = marked_at(Some(&engine.host()), &mark);
    check(left.is_empty(), || format!("left on the engine: {left:?}"))?;
    assert_no_survivors(&mark);
    engine.check_host_untouched()
}
