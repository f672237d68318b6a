//! The session: its id, the environment every process of the run carries, and everything that must be
//! cleaned up when the run ends: the process groups it started, the Docker resources labelled with its
//! id, and its record in the state directory.
//!
//! Cleanup lives here and only here. The signal thread and the scheduler both go through the session,
//! under one lock, so a group registered while a signal arrives is never missed.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::docker::{self, Engine, Removal, Resource};
use crate::orphans::{self, Escaped};
use crate::proxy::Proxy;
use crate::reaper::ReaperHandle;
use crate::state::record::{OwnRecord, Status};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Environment variable names of the contract.
pub(crate) const ENV_MARKER: &str = "CLEANTEST";
pub(crate) const ENV_SESSION: &str = "CLEANTEST_SESSION";
pub(crate) const ENV_BINARY: &str = "CLEANTEST_BINARY";
pub(crate) const ENV_TEST: &str = "CLEANTEST_TEST";

const ID_LEN: usize = 24;
/// How long the end of a session waits for an engine that was down at its start.
const END_RECONNECT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Default)]
struct State {
    /// Process groups started by this run and not yet known to be empty.
    groups: BTreeSet<i32>,
    /// Processes started in the runner's own group (the cargo build), signalled by pid.
    members: BTreeSet<i32>,
    /// Signals received so far (the first one decides the exit code).
    signals: Vec<Signal>,
}

/// The Docker engine as the session found it.
#[derive(Clone, Default)]
pub(crate) enum DockerState {
    #[default]
    Unused,
    Up(Engine),
    /// No engine answered; `expected` when one was configured or its socket exists.
    Down {
        endpoint: String,
        reason: String,
        expected: bool,
    },
}

/// What ending the session did with its Docker resources.
#[derive(Debug)]
pub(crate) enum DockerEnd {
    /// No engine was used or reachable.
    NotSwept {
        endpoint: String,
        reason: String,
    },
    Swept(Removal),
    /// `--keep-on-failure`: these were kept for inspection.
    Kept(Vec<Resource>),
    /// The engine stopped answering while the session ended.
    Failed(String),
}

impl DockerEnd {
    /// True when resources of the session may still exist against the user's wishes.
    pub(crate) fn left_something(&self) -> bool {
        match self {
            DockerEnd::Swept(r) => !r.failures.is_empty(),
            DockerEnd::Failed(_) => true,
            _ => false,
        }
    }
}

/// One run of the runner.
pub(crate) struct Session {
    id: String,
    state: Mutex<State>,
    docker: Mutex<DockerState>,
    record: Mutex<Option<OwnRecord>>,
    reaper: Mutex<Option<ReaperHandle>>,
    proxy: Mutex<Option<Proxy>>,
    finished: AtomicBool,
}

/// What ending the session did.
#[derive(Debug, Default)]
pub(crate) struct SessionEnd {
    /// Docker resources swept or kept; None when Docker played no part.
    pub docker: Option<DockerEnd>,
    /// Processes of the session still alive at the end (escaped their group), killed.
    pub escaped: Vec<Escaped>,
}

impl Session {
    pub(crate) fn new() -> Arc<Session> {
        Arc::new(Session {
            id: new_id(),
            state: Mutex::default(),
            docker: Mutex::default(),
            record: Mutex::default(),
            reaper: Mutex::default(),
            proxy: Mutex::default(),
            finished: AtomicBool::new(false),
        })
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The environment of every process the session starts: `CLEANTEST=1`, `CLEANTEST_SESSION=<id>`,
    /// and with the proxy running, `DOCKER_HOST` pointing at it.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            (ENV_MARKER, "1".to_string()),
            (ENV_SESSION, self.id.clone()),
        ];
        if let Some(proxy) = self
            .proxy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            env.push(("DOCKER_HOST", proxy.docker_host()));
        }
        env
    }

    /// Sets the session's environment on a command. `DOCKER_CONTEXT` is removed while the proxy runs:
    /// the docker CLI prefers a context over `DOCKER_HOST` only when the context is set.
    pub(crate) fn configure<'c>(
        &self,
        command: &'c mut std::process::Command,
    ) -> &'c mut std::process::Command {
        let env = self.env();
        if env.iter().any(|(k, _)| *k == "DOCKER_HOST") {
            command.env_remove("DOCKER_CONTEXT");
        }
        command.envs(env)
    }

    /// Starts routing the session's Docker traffic through `proxy`.
    pub(crate) fn set_proxy(&self, proxy: Proxy) {
        *self.proxy.lock().unwrap_or_else(|e| e.into_inner()) = Some(proxy);
    }

    /// Running containers that the unit (`binary`, and `test` in isolated mode) created through the
    /// proxy, by name: what it left behind.
    pub(crate) fn leaked_containers(&self, binary: &str, test: Option<&str>) -> Vec<String> {
        let created = self
            .proxy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|p| p.created_by(binary, test));
        if !created {
            return Vec::new();
        }
        let DockerState::Up(engine) = self.docker() else {
            return Vec::new();
        };
        let mut filter = docker::session_filter(&self.id);
        filter.push(format!("cleantest.binary={binary}"));
        if let Some(test) = test {
            filter.push(format!("cleantest.test={test}"));
        }
        docker::list(&engine, &filter)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.kind == docker::Kind::Container && r.state == "running")
            .map(|r| r.name)
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state usable: cleanup must still run.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a process group the run started. If the run is already being stopped, the group is
    /// signalled at once, so a unit spawned during a signal does not escape it.
    pub(crate) fn add_group(&self, pgid: i32) {
        let mut state = self.lock();
        state.groups.insert(pgid);
        match state.signals.len() {
            0 => {}
            1 => signal_group(pgid, state.signals[0]),
            _ => signal_group(pgid, Signal::SIGKILL),
        }
    }

    /// Forgets a group whose members are all gone.
    pub(crate) fn remove_group(&self, pgid: i32) {
        self.lock().groups.remove(&pgid);
    }

    /// Records a process that runs in the runner's own group (signalled by pid, not by group).
    pub(crate) fn add_group_member(&self, pid: i32) {
        let mut state = self.lock();
        state.members.insert(pid);
        if let Some(&first) = state.signals.first() {
            let _ = kill(Pid::from_raw(pid), first);
        }
    }

    /// Forgets a process recorded with `add_group_member`, once it has been waited for.
    pub(crate) fn remove_group_member(&self, pid: i32) {
        self.lock().members.remove(&pid);
    }

    /// Records a signal and passes it on: the first is forwarded as is to every group, later ones
    /// SIGKILL every group. Returns how many signals have arrived.
    pub(crate) fn on_signal(&self, signal: Signal) -> usize {
        let mut state = self.lock();
        state.signals.push(signal);
        let send = if state.signals.len() == 1 {
            signal
        } else {
            Signal::SIGKILL
        };
        for &pgid in &state.groups {
            signal_group(pgid, send);
        }
        for &pid in &state.members {
            let _ = kill(Pid::from_raw(pid), send);
        }
        state.signals.len()
    }

    /// The first signal received, if any.
    pub(crate) fn interrupted_by(&self) -> Option<Signal> {
        self.lock().signals.first().copied()
    }

    /// Connects the session to the engine it will sweep at the end.
    pub(crate) fn set_docker(&self, docker: DockerState) {
        *self.docker.lock().unwrap_or_else(|e| e.into_inner()) = docker;
    }

    pub(crate) fn docker(&self) -> DockerState {
        self.docker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Hands the session its record (whose lock it then holds for its whole life).
    pub(crate) fn set_record(&self, record: OwnRecord) {
        *self.record.lock().unwrap_or_else(|e| e.into_inner()) = Some(record);
    }

    /// Hands the session the reaper that will clean up if the runner dies.
    pub(crate) fn set_reaper(&self, reaper: ReaperHandle) {
        *self.reaper.lock().unwrap_or_else(|e| e.into_inner()) = Some(reaper);
    }

    /// Whether `pid` is a process the runner started itself (a unit, the build, the reaper).
    pub(crate) fn is_known(&self, pid: i32) -> bool {
        let state = self.lock();
        state.groups.contains(&pid)
            || state.members.contains(&pid)
            || self
                .reaper
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|r| r.pid == pid)
    }

    /// Kills (and reaps, by pid) the processes adopted from finished units: those that left their
    /// group and whose parent is gone. `still_running` says whether the unit an escaped process belongs
    /// to is still running, in which case it is left alone for now. Exited ones are reaped either way.
    pub(crate) fn reap_adopted(&self, still_running: impl Fn(&Escaped) -> bool) -> Vec<Escaped> {
        let mut killed = Vec::new();
        for escaped in orphans::adopted(|pid| self.is_known(pid)) {
            if orphans::reap_if_exited(escaped.pid) || still_running(&escaped) {
                continue;
            }
            orphans::kill_and_reap(escaped.pid);
            killed.push(escaped);
        }
        killed
    }

    /// Ends the session: kills its processes (groups, adopted escapees, anything carrying its id), then
    /// sweeps its Docker resources, or keeps them when `keep` (`--keep-on-failure` after a failure),
    /// settles its record and dismisses the reaper. Runs once; later calls return None.
    pub(crate) fn finish(&self, keep: bool) -> Option<SessionEnd> {
        if self.finished.swap(true, Ordering::SeqCst) {
            return None;
        }
        let escaped = self.cleanup();
        // Nobody is left to talk through the proxy; the sweep talks to the engine directly.
        drop(self.proxy.lock().unwrap_or_else(|e| e.into_inner()).take());
        let docker = match self.docker() {
            DockerState::Unused => None,
            // An engine that was never configured is not worth a word (projects without Docker).
            DockerState::Down {
                expected: false, ..
            } => None,
            DockerState::Down {
                endpoint, reason, ..
            } => match docker::connect_within(END_RECONNECT) {
                // It was down at the start; it may be back now.
                docker::Connection::Up(engine) => Some(self.sweep_or_keep(&engine, keep)),
                docker::Connection::Down { .. } => Some(DockerEnd::NotSwept { endpoint, reason }),
            },
            DockerState::Up(engine) => Some(self.sweep_or_keep(&engine, keep)),
        };
        self.settle_record(docker.as_ref());
        if let Some(reaper) = self.reaper.lock().unwrap_or_else(|e| e.into_inner()).take() {
            reaper.dismiss();
        }
        Some(SessionEnd { docker, escaped })
    }

    fn sweep_or_keep(&self, engine: &Engine, keep: bool) -> DockerEnd {
        let result = if keep {
            docker::list_session(engine, &self.id).map(DockerEnd::Kept)
        } else {
            docker::sweep_session(engine, &self.id).map(DockerEnd::Swept)
        };
        result.unwrap_or_else(DockerEnd::Failed)
    }

    /// Kept sessions stay on record as kept; fully swept ones are forgotten; anything else stays
    /// "finished" so the next run's stale sweep retries it.
    fn settle_record(&self, end: Option<&DockerEnd>) {
        let Some(mut record) = self.record.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let result = match end {
            Some(DockerEnd::Kept(found)) if !found.is_empty() => {
                record.set_status(Status::Kept).map(|_| drop(record))
            }
            Some(DockerEnd::Swept(r)) if !r.failures.is_empty() => {
                record.set_status(Status::Finished).map(|_| drop(record))
            }
            Some(DockerEnd::Failed(_)) | Some(DockerEnd::NotSwept { .. }) => {
                record.set_status(Status::Finished).map(|_| drop(record))
            }
            _ => record.remove(),
        };
        if let Err(e) = result {
            eprintln!("warning: failed to update the session record: {e}");
        }
    }

    /// Kills everything of the session that may still run: its groups, the processes it started in its
    /// own group, adopted escapees, and any process carrying the session's id. Safe to call more than
    /// once; returns the escaped processes it found.
    pub(crate) fn cleanup(&self) -> Vec<Escaped> {
        let (groups, members) = {
            let mut state = self.lock();
            (
                std::mem::take(&mut state.groups),
                std::mem::take(&mut state.members),
            )
        };
        for pgid in groups {
            signal_group(pgid, Signal::SIGKILL);
        }
        for pid in members {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let mut escaped = self.reap_adopted(|_| false);
        // Also what escaped the subreaper too (re-parented elsewhere) but still carries the session.
        for found in orphans::session_processes(&self.id) {
            let _ = kill(Pid::from_raw(found.pid), Signal::SIGKILL);
            if !escaped.iter().any(|e| e.pid == found.pid) {
                escaped.push(found);
            }
        }
        escaped
    }
}

/// Ends the session when dropped, if the run did not: on `?` and on panic.
pub(crate) struct CleanupGuard(pub Arc<Session>);

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if let Some(SessionEnd {
            docker: Some(DockerEnd::Swept(r)),
            ..
        }) = self.0.finish(false)
            && (r.containers + r.networks + r.volumes > 0 || !r.failures.is_empty())
        {
            eprintln!("{}", r.line());
        }
    }
}

/// Sends a signal to a process group; a group that is already gone is not an error.
pub(crate) fn signal_group(pgid: i32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pgid), signal);
}

/// 24 characters of `[a-z0-9]` from the kernel's random source: unguessable, and valid as a Docker label
/// value and a compose project name.
fn new_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; ID_LEN];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // No /dev/urandom (a very odd sandbox): fall back to time and pid, still unique per run.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id()) << 64;
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (seed >> ((i * 5) % 120)) as u8;
        }
    }
    // 256 is not a multiple of 36; the slight bias is irrelevant for an id with 124 bits of entropy.
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_long_lowercase_alphanumeric_and_distinct() {
        let a = Session::new();
        let b = Session::new();
        assert_eq!(a.id().len(), ID_LEN);
        assert!(
            a.id()
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn first_signal_decides_and_counts() {
        let s = Session::new();
        assert_eq!(s.interrupted_by(), None);
        assert_eq!(s.on_signal(Signal::SIGTERM), 1);
        assert_eq!(s.on_signal(Signal::SIGINT), 2);
        assert_eq!(s.interrupted_by(), Some(Signal::SIGTERM));
    }
}
