//! The conformance suite of the `sys` API, written only against it: real processes (a group leader, a
//! double fork, a `setsid` child, one that cleared its environment) and what each call reports of them,
//! with expectations switched on `capabilities()`. It runs on Linux in CI, and is the acceptance test
//! of a backend on its own platform (`cargo test sys::conformance` on a Mac). It lives in the crate, not
//! in `tests/`, because the crate is a binary: an integration test cannot reach `sys`.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A marker of one test in the environment of everything it starts (tests run at once in one process).
fn marker(test: &str) -> String {
    format!("CT_SYS_CONFORMANCE={}-{test}", std::process::id())
}

fn spawn(test: &str, program: &str, args: &[&str]) -> Child {
    let marker = marker(test);
    let (key, value) = marker.split_once('=').unwrap();
    Command::new(program)
        .args(args)
        .env(key, value)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap()
}

/// The processes carrying a test's marker, found as the session's environment scan finds them.
fn marked(test: &str) -> Vec<i32> {
    let needle = marker(test);
    all_pids()
        .into_iter()
        .filter(|&pid| {
            environ(pid).is_some_and(|e| e.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
                && is_live(pid)
        })
        .collect()
}

/// Waits, within a bound, until `done` holds (a process shows up only once the kernel has set it up).
fn until(done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::yield_now();
    }
    done()
}

fn kill_all(pids: &[i32]) {
    for pid in pids {
        // SAFETY: signalling a pid this test started.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
}

#[test]
fn a_group_leader_is_seen_live_then_exited_without_being_reaped() {
    let mut child = spawn("leader", "sleep", &["30"]);
    let pid = child.id() as i32;
    assert!(
        until(|| command_line(pid).contains("sleep 30")),
        "{}",
        command_line(pid)
    );
    let first = stat(pid).expect("a stat of the child");
    assert_eq!(first.pgid, pid, "its own group");
    assert_eq!(first.ppid, std::process::id() as i32);
    assert!(is_live(pid) && is_process(pid));
    assert!(children(None).contains(&pid));
    assert!(
        until(|| marked("leader").contains(&pid)),
        "found by its environment"
    );
    assert!(!exits_within(pid, Duration::from_millis(50)));
    kill_all(&[pid]);
    assert_eq!(wait_exit_keeping(pid), Some(Exit::Signal(9)));
    // Exited and not reaped: a zombie, so the pid still names it.
    assert!(!is_live(pid));
    assert!(stat(pid).is_some_and(|s| s.is_zombie()));
    assert!(exits_within(pid, Duration::from_secs(5)));
    let _ = child.wait();
    assert!(stat(pid).is_none());
}

#[test]
fn processes_that_leave_their_group_are_found_by_their_environment() {
    // A double fork and a `setsid` child: out of the leader's group and off its tree.
    let mut shell = spawn(
        "escape",
        "sh",
        &["-c", "(sleep 31 &); setsid sleep 32 & wait"],
    );
    let leader = shell.id() as i32;
    let out_of_group = || {
        marked("escape")
            .into_iter()
            .filter(|p| stat(*p).is_some_and(|s| s.pgid != leader))
            .count()
    };
    // Until the `setsid` child has left the group (it calls `setsid()` after it is forked).
    assert!(
        until(|| marked("escape").len() >= 3 && out_of_group() >= 1),
        "the setsid child has no group of its own: {:?}",
        marked("escape")
    );
    let found = marked("escape");
    for pid in &found {
        // Whatever it was re-parented to, it has a parent.
        assert!(stat(*pid).is_some_and(|s| s.ppid >= 1), "{pid}");
    }
    kill_all(&found);
    let _ = shell.wait();
    assert!(
        until(|| marked("escape").is_empty()),
        "{:?}",
        marked("escape")
    );
}

#[test]
fn a_process_that_cleared_its_environment_is_not_found_by_it_but_is_still_a_child() {
    let mut child = Command::new("env")
        .args(["-i", "sleep", "33"])
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    assert!(until(|| command_line(pid).contains("sleep 33")));
    assert!(!marked("cleared").contains(&pid));
    assert!(children(None).contains(&pid));
    kill_all(&[pid]);
    let _ = child.wait();
}

#[test]
fn a_socket_peer_and_the_host_are_named() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    assert_eq!(peer_pid(&a).unwrap(), std::process::id() as i32);
    assert!(!host_name().is_empty());
    let caps = capabilities();
    if cfg!(target_os = "linux") {
        assert!(caps.container_pids_visible);
        assert!(!host_identity().is_empty());
        assert!(available_memory().is_some_and(|m| m > 0));
    }
}
