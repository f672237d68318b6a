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
    vec![hung]
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
