//! Processes that left their unit's process group: a `setsid` child, a double-forked daemon.
//!
//! The runner is a child subreaper, so such a process is re-parented to the runner when its parent dies
//! and shows up among the runner's children (`sys::children`, no scan of every process).
//! Adopted processes are reaped by pid, never with `waitpid(-1)`, which would steal the status of the
//! children std and the unit threads wait for. As a last resort, every process of the session is found
//! by the `CLEANTEST_SESSION` in its environment (same user only): that also finds what escaped the
//! subreaper, unless it cleared its environment too.

use std::collections::HashMap;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use crate::contract::{ENV_BINARY, ENV_SESSION, ENV_TEST};
use crate::sys;

/// Makes this process the reaper of its orphaned descendants. Returns false where the kernel refuses.
pub(crate) fn become_subreaper() -> bool {
    sys::become_subreaper()
}

/// A process found outside its unit's group.
#[derive(Debug, Clone)]
pub(crate) struct Escaped {
    pub pid: i32,
    /// `pid command line`, for reports (read before the process is killed).
    pub description: String,
    /// Its process group when it was found: a unit's group id names the unit it came from, even when
    /// its environment is cleared or not yet readable.
    pub group: Option<i32>,
    /// Its start time, where it was found by the lineage rather than among the runner's children.
    pub started: Option<u64>,
    /// `CLEANTEST_BINARY` and `CLEANTEST_TEST` from its environment, when it still has them.
    pub binary: Option<String>,
    pub test: Option<String>,
}

/// The children of this process.
fn children() -> Vec<i32> {
    sys::children(None)
}

/// Children of this process that it did not start itself (`known` says which it started).
pub(crate) fn adopted(known: impl Fn(i32) -> bool) -> Vec<Escaped> {
    children()
        .into_iter()
        .filter(|&pid| !known(pid))
        .map(describe)
        .collect()
}

/// This process's children that have exited and wait to be reaped, with their process group.
pub(crate) fn zombie_children() -> Vec<(i32, i32)> {
    children()
        .into_iter()
        .filter_map(|pid| {
            let stat = sys::stat(pid)?;
            stat.is_zombie().then_some((pid, stat.pgid))
        })
        .collect()
}

/// SIGKILLs an adopted child and reaps it by pid.
pub(crate) fn kill_and_reap(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    while let Err(nix::errno::Errno::EINTR) = waitpid(Pid::from_raw(pid), None) {}
}

/// Reaps an adopted child if it has already exited (a zombie); true if it was reaped.
pub(crate) fn reap_if_exited(pid: i32) -> bool {
    !matches!(
        waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
        Ok(nix::sys::wait::WaitStatus::StillAlive)
    )
}

/// Every live process (of any parent) whose environment carries `CLEANTEST_SESSION=<session>`.
pub(crate) fn session_processes(session: &str) -> Vec<Escaped> {
    let needle = format!("{ENV_SESSION}={session}");
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for pid in sys::all_pids() {
        if pid == me {
            continue;
        }
        if sys::environ(pid)
            .is_some_and(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
            && is_live(pid)
        {
            out.push(describe(pid));
        }
    }
    out
}

/// How long `kill_session` keeps at it: a process that forks without pause is frozen and killed in a
/// few rounds; the bound only keeps a pathological case from holding the run's end forever.
const KILL_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

/// Kills every process carrying the session, including ones that keep forking: each round freezes
/// (SIGSTOP) what the scan finds and scans again, until a scan finds nothing that is not frozen — a
/// stopped process cannot fork, so the set is then complete — and only then SIGKILLs the lot. Repeats
/// until a scan finds none, within `KILL_BOUND`. Returns every process it killed.
pub(crate) fn kill_session(session: &str) -> Vec<Escaped> {
    let deadline = std::time::Instant::now() + KILL_BOUND;
    let mut killed: Vec<Escaped> = Vec::new();
    loop {
        let mut frozen: HashMap<i32, Escaped> = HashMap::new();
        loop {
            let fresh: Vec<Escaped> = session_processes(session)
                .into_iter()
                .filter(|p| !frozen.contains_key(&p.pid))
                .collect();
            if fresh.is_empty() || std::time::Instant::now() > deadline {
                break;
            }
            for p in fresh {
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGSTOP);
                frozen.insert(p.pid, p);
            }
        }
        if frozen.is_empty() {
            return killed;
        }
        for pid in frozen.keys() {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        killed.extend(seen_dead(frozen.into_values().collect()));
        if std::time::Instant::now() > deadline {
            return killed;
        }
    }
}

/// How long `seen_dead` waits for SIGKILLed processes to be dead.
const DEATH_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

/// The processes of `killed` that are seen dead (gone, or zombies) within `DEATH_BOUND`: only those
/// are reported killed. One that is not (stuck in the kernel, uninterruptible) is named on stderr.
fn seen_dead(killed: Vec<Escaped>) -> Vec<Escaped> {
    let deadline = std::time::Instant::now() + DEATH_BOUND;
    while killed.iter().any(|p| is_live(p.pid)) && std::time::Instant::now() < deadline {
        // Polling a condition the kernel gives no notification of for non-children, within a bound.
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (dead, alive): (Vec<Escaped>, Vec<Escaped>) =
        killed.into_iter().partition(|p| !is_live(p.pid));
    for p in &alive {
        crate::output::err(format!(
            "warning: process {} is still alive after SIGKILL; it is not reported killed",
            p.description
        ));
    }
    dead
}

/// Whether process `pid` still runs (`sys::is_live`).
pub(crate) fn is_live(pid: i32) -> bool {
    sys::is_live(pid)
}

/// What to call a process in a report (`sys::command_line`).
pub(crate) fn command_line(pid: i32) -> String {
    sys::command_line(pid)
}

/// A process the lineage saw leave group `group`: described while its pid still names the process
/// started at `start_time`.
pub(crate) fn described_from(pid: i32, start_time: u64, group: i32) -> Escaped {
    let mut escaped = describe(pid);
    escaped.group = Some(group);
    escaped.started = Some(start_time);
    escaped
}

/// SIGKILLs a process that is not the runner's child (seen by the lineage), if its pid still names the
/// process that was seen; true once it is seen dead.
pub(crate) fn kill_unrelated(escaped: &Escaped) -> bool {
    let same = sys::stat(escaped.pid)
        .is_some_and(|s| Some(s.start_time) == escaped.started && !s.is_zombie());
    if !same {
        return false;
    }
    let _ = kill(Pid::from_raw(escaped.pid), Signal::SIGKILL);
    !seen_dead(vec![escaped.clone()]).is_empty()
}

fn describe(pid: i32) -> Escaped {
    let env = environ(pid);
    Escaped {
        pid,
        description: format!("{pid} {}", command_line(pid)),
        group: sys::stat(pid).map(|s| s.pgid),
        started: None,
        binary: env.get(ENV_BINARY).cloned(),
        test: env.get(ENV_TEST).cloned(),
    }
}

fn environ(pid: i32) -> HashMap<String, String> {
    let bytes = sys::environ(pid).unwrap_or_default();
    bytes
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let text = std::str::from_utf8(kv).ok()?;
            let (k, v) = text.split_once('=')?;
            (k == ENV_BINARY || k == ENV_TEST).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_process_that_keeps_forking_is_frozen_and_killed_with_all_its_children() {
        let id = format!("fork{}", std::process::id());
        let mut shell = Command::new("sh")
            .args(["-c", "while :; do sleep 1000 & done"])
            .env(ENV_SESSION, &id)
            .spawn()
            .unwrap();
        // Wait until it has forked a few children, by looking for them, not by sleeping.
        while session_processes(&id).len() < 10 {
            std::thread::yield_now();
        }
        let killed = kill_session(&id);
        let _ = shell.wait();
        assert!(killed.len() >= 10, "{}", killed.len());
        // The killed children are re-parented to init (this test process is no subreaper): none runs.
        assert!(session_processes(&id).is_empty());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_running_process_is_live_and_an_exited_one_is_not() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        assert!(is_live(pid));
        // spawn returns while the child may still be inside execve (its command line not yet there).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !command_line(pid).contains("sleep 30") && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(
            command_line(pid).contains("sleep 30"),
            "{}",
            command_line(pid)
        );
        child.kill().unwrap();
        // Seen dead by the kernel (a zombie until reaped), without reaping it.
        nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(Pid::from_raw(pid)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        )
        .unwrap();
        assert!(!is_live(pid));
        let _ = child.wait();
        assert!(!is_live(pid));
    }

    #[test]
    fn session_processes_are_found_by_environment() {
        let id = format!("unit{}", std::process::id());
        let mut child = Command::new("sleep")
            .arg("30")
            .env(ENV_SESSION, &id)
            .env(ENV_BINARY, "pkg::it")
            .spawn()
            .unwrap();
        // spawn returns once the child's execve has replaced its memory, before the kernel has laid
        // out the new environment there: wait for the exec to complete (its command line appears).
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !command_line(pid).contains("sleep 30") && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        let found = session_processes(&id);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, child.id() as i32);
        assert_eq!(found[0].binary.as_deref(), Some("pkg::it"));
        assert!(found[0].description.contains("sleep 30"));
    }
}
