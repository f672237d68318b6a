//! The session: one run's id, the environment every process of the run carries, and everything that must
//! be cleaned up when the run ends: the process groups it started, the processes that escaped them, the
//! Docker resources labelled with its id, and its record in the state directory. All cleanup lives in
//! this folder and nowhere else.
//!
//! - `id`: the session id. `start`: record, reaper, engine, stale sweep, proxy, lock. `end`: finishing
//!   the session (kill, sweep or keep, settle the record) and what that did.
//! - `process`: spawning in a process group of its own, and what a group leaves behind. `orphans`: the
//!   subreaper and the environment scan; `lineage`: process-tree snapshots where there is no subreaper
//!   (macOS). `signals`: the signal thread. `reaper`: the process that cleans
//!   up after a runner that died.
//! - `state`: the state directory and session records. `lock`: the environment lock. `stale`: sweeping
//!   the sessions of dead runners.
//!
//! The signal thread and the scheduler both go through `Session`, under one lock, so a group registered
//! while a signal arrives is never missed. This layer uses `docker` to sweep; it never imports `run` or
//! `commands`.

mod end;
pub(crate) mod engine_reaper;
mod id;
mod lineage;
pub(crate) use lineage::SNAPSHOT_EVERY;
pub(crate) mod lock;
pub(crate) mod orphans;
pub(crate) mod owner;
pub(crate) mod process;
pub(crate) mod reaper;
pub(crate) mod run_id;
pub(crate) mod signals;
pub(crate) mod stale;
pub(crate) mod start;
pub(crate) mod state;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::contract::{
    BINARY_LABEL, ENV_DOCKER_CONTEXT, ENV_DOCKER_HOST, ENV_MARKER, ENV_RUN_ID, ENV_SESSION,
    ENV_TMPDIR, TEST_LABEL,
};
use crate::docker::proxy::Proxy;
use crate::docker::{self, Engine};
use orphans::Escaped;
use start::Started;

pub(crate) use end::{CleanupGuard, TempEnd, after_error, docker_lines};
pub(crate) use start::{Profile, open};

#[derive(Debug, Default)]
struct State {
    /// Process groups started by this run and not yet known to be empty.
    groups: BTreeSet<i32>,
    /// Processes started in the runner's own group (the cargo build), signalled by pid.
    members: BTreeSet<i32>,
    /// Signals received so far (the first one decides the exit code).
    signals: Vec<Signal>,
    /// Spawns under way: a child that exits before it is registered must not be taken for an orphan.
    spawning: usize,
}

/// Held across spawning a process and registering it with the session (see `Session::spawning`).
pub(crate) struct SpawnGuard<'a>(&'a Session);

impl Drop for SpawnGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().spawning -= 1;
    }
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

/// One run of the runner: its id and the processes it started, from its first moment (the signal
/// thread and the build need it before anything is started), and what `start::open` started (`Started`),
/// until `finish` takes that and ends it.
pub(crate) struct Session {
    id: String,
    state: Mutex<State>,
    /// What `open` started, whole; None before it and after `finish`.
    started: Mutex<Option<Started>>,
    /// Run when the session ends, after its processes are killed and before its sweep lists.
    end_hooks: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    finished: AtomicBool,
    /// Where the runner is no subreaper: what descends from its groups (`watch_lineage`), and when
    /// the next periodic snapshot is due.
    lineage: Mutex<Option<(lineage::Lineage, std::time::Instant)>>,
}

/// Locks `m`, whatever a panicking holder left: cleanup must still run, so a poisoned lock is used as
/// it is (every lock of the session goes through here).
pub(crate) fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Session {
    pub(crate) fn new() -> Arc<Session> {
        Arc::new(Session {
            id: id::new_id(),
            state: Mutex::default(),
            started: Mutex::default(),
            end_hooks: Mutex::default(),
            finished: AtomicBool::new(false),
            lineage: Mutex::default(),
        })
    }

    /// Reads what `open` started, if it has.
    fn with_started<R>(&self, read: impl FnOnce(&Started) -> R) -> Option<R> {
        locked(&self.started).as_ref().map(read)
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The environment of every process the session starts: `CLEANTEST=1`, `CLEANTEST_SESSION=<id>`,
    /// with the proxy running, `DOCKER_HOST` pointing at it, and `TMPDIR`, the session's temporary
    /// directory (a unit's own replaces it: `run::unit`).
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            (ENV_MARKER, "1".to_string()),
            (ENV_SESSION, self.id.clone()),
        ];
        if let Some(host) = self
            .with_started(|s| s.proxy.as_ref().map(Proxy::docker_host))
            .flatten()
        {
            env.push((ENV_DOCKER_HOST, host));
        }
        if let Some(run) = self.run_id() {
            env.push((ENV_RUN_ID, run));
        }
        if let Some(temp) = self
            .temp_dir()
            .and_then(|t| t.into_os_string().into_string().ok())
        {
            env.push((ENV_TMPDIR, temp));
        }
        env
    }

    /// The session's temporary directory, once the session is open (and unless `tmpdir = false`).
    pub(crate) fn temp_dir(&self) -> Option<std::path::PathBuf> {
        self.with_started(|s| s.temp.clone()).flatten()
    }

    /// The run id (`CLEANTEST_RUN_ID` or the CI's), once the session is open.
    pub(crate) fn run_id(&self) -> Option<String> {
        self.with_started(|s| s.run.clone()).flatten()
    }

    /// The labels every resource of the session carries besides `cleantest.session`: its owner's
    /// (which prove the runner alive or dead) and its run's.
    pub(crate) fn labels(&self) -> Vec<(String, String)> {
        self.with_started(|s| s.labels.clone())
            .unwrap_or_else(|| labels_for(None))
    }

    /// Sets the session's environment on a command. `DOCKER_CONTEXT` is removed while the proxy runs:
    /// the docker CLI prefers a context over `DOCKER_HOST` only when the context is set.
    pub(crate) fn configure<'c>(
        &self,
        command: &'c mut std::process::Command,
    ) -> &'c mut std::process::Command {
        let env = self.env();
        if env.iter().any(|(k, _)| *k == ENV_DOCKER_HOST) {
            command.env_remove(ENV_DOCKER_CONTEXT);
        }
        command.envs(env)
    }

    /// Runs `hook` when the session ends, after its processes are killed and before its sweep lists:
    /// what could still create resources (the control socket) stops there.
    pub(crate) fn on_end(&self, hook: Box<dyn FnOnce() + Send>) {
        locked(&self.end_hooks).push(hook);
    }

    /// What to ask the engine for the containers a unit (`binary`, and `test` in isolated mode) left
    /// running: the engine and the label filter, when the unit created anything through the proxy.
    /// Asking is left to the caller, off any thread that must not wait for the engine.
    pub(crate) fn leak_query(
        &self,
        binary: &str,
        test: Option<&str>,
    ) -> Option<(Engine, Vec<String>)> {
        let created = self
            .with_started(|s| s.proxy.as_ref().is_some_and(|p| p.created_by(binary, test)))
            .unwrap_or(false);
        if !created {
            return None;
        }
        let DockerState::Up(engine) = self.docker() else {
            return None;
        };
        let mut filter = docker::session_filter(&self.id);
        filter.push(format!("{BINARY_LABEL}={binary}"));
        if let Some(test) = test {
            filter.push(format!("{TEST_LABEL}={test}"));
        }
        Some((engine, filter))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        locked(&self.state)
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

    /// The engine the session sweeps at the end, as `open` found it.
    pub(crate) fn docker(&self) -> DockerState {
        self.with_started(|s| s.docker.clone()).unwrap_or_default()
    }

    /// Whether `pid` is a process the runner started itself (a unit, the build, the reaper).
    pub(crate) fn is_known(&self, pid: i32) -> bool {
        self.is_known_in(&self.lock(), pid)
    }

    fn is_known_in(&self, state: &State, pid: i32) -> bool {
        state.groups.contains(&pid)
            || state.members.contains(&pid)
            // The runner's own connections to an `ssh://` engine.
            || crate::docker::ssh::is_connection(pid)
            || self
                .with_started(|s| s.reaper.as_ref().is_some_and(|r| r.pid == pid))
                .unwrap_or(false)
    }

    /// Marks a spawn as under way until the guard drops; spawn the process and register it (as a group,
    /// a member or the reaper) while holding it.
    pub(crate) fn spawning(&self) -> SpawnGuard<'_> {
        self.lock().spawning += 1;
        SpawnGuard(self)
    }

    /// Reaps the adopted children that have exited, as they come (on SIGCHLD): a unit that forks and
    /// abandons processes in a loop would otherwise fill the pid space with zombies before it ends.
    /// Only zombies of another process group than the runner's and not started by the runner: std and
    /// the unit threads wait for their own children by pid, and a unit's exited leader stays unreaped
    /// until its group is killed for the last time. Nothing is reaped while a spawn is under way, since
    /// its child may exit before it is registered; the next SIGCHLD comes back for what was skipped.
    pub(crate) fn reap_zombies(&self) {
        let state = self.lock();
        if state.spawning > 0 {
            return;
        }
        let own_group = nix::unistd::getpgrp().as_raw();
        for (pid, pgid) in orphans::zombie_children() {
            if pgid != own_group && !self.is_known_in(&state, pid) {
                orphans::reap_if_exited(pid);
            }
        }
    }

    /// Kills (and reaps, by pid) the processes adopted from finished units: those that left their
    /// group and whose parent is gone. `still_running` says whether the unit an escaped process belongs
    /// to is still running, in which case it is left alone for now. Exited ones are reaped either way.
    pub(crate) fn reap_adopted(&self, still_running: impl Fn(&Escaped) -> bool) -> Vec<Escaped> {
        let mut killed = Vec::new();
        for escaped in orphans::adopted(|pid| self.is_known(pid)) {
            // One already on its way out (killed with its group a moment ago) is no leftover: it is
            // reaped once it is a zombie, and never waited for here (an exit can hang in the kernel).
            if orphans::reap_if_exited(escaped.pid)
                || !orphans::is_live(escaped.pid)
                || still_running(&escaped)
            {
                continue;
            }
            orphans::kill_and_reap(escaped.pid);
            killed.push(escaped);
        }
        // Where there is no subreaper: what the snapshots saw leave its group. Killed by pid, once
        // the pid is checked to still name the process that was seen (its start time).
        for escaped in self.lineage_escapees() {
            if still_running(&escaped) || killed.iter().any(|k| k.pid == escaped.pid) {
                continue;
            }
            if orphans::kill_unrelated(&escaped) {
                killed.push(escaped);
            }
        }
        killed
    }

    /// Kills everything of the session that may still run: its groups, the processes it started in its
    /// own group, adopted escapees, and any process carrying the session's id. Safe to call more than
    /// once; returns the escaped processes it found.
    pub(crate) fn cleanup(&self) -> Vec<Escaped> {
        // The last look at the tree before the groups die and their escapees are re-parented.
        self.observe_lineage();
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
        // To a fixpoint: killing an adopted process re-parents its children to us (it is reaped, so
        // they are ours by then), and a chain of processes that cleared their environment is found
        // only that way, one link per round. Each round also kills everything carrying the session,
        // wherever it was re-parented, frozen before it is killed so that a process forking in a loop
        // cannot outrun the kill. Until a round finds nothing, within a bound.
        let deadline = std::time::Instant::now() + CLEANUP_BOUND;
        let mut escaped: Vec<Escaped> = Vec::new();
        loop {
            let mut found = self.reap_adopted(|_| false);
            found.extend(orphans::kill_session(&self.id));
            // What that killed among our adopted children is now a zombie: reap it.
            found.extend(self.reap_adopted(|_| false));
            let mut new = false;
            for process in found {
                if !escaped.iter().any(|e| e.pid == process.pid) {
                    escaped.push(process);
                    new = true;
                }
            }
            if !new || std::time::Instant::now() > deadline {
                return escaped;
            }
        }
    }
}

/// The labels of every resource of a session of the run `run`, besides `cleantest.session`.
fn labels_for(run: Option<&str>) -> Vec<(String, String)> {
    let mut labels = owner::Owner::me().labels();
    labels.extend(run_id::label(run));
    labels
}

/// How long `cleanup` goes on killing while each round finds new processes.
const CLEANUP_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends a signal to a process group; a group that is already gone is not an error.
pub(crate) fn signal_group(pgid: i32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pgid), signal);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_signal_decides_and_counts() {
        let s = Session::new();
        assert_eq!(s.interrupted_by(), None);
        assert_eq!(s.on_signal(Signal::SIGTERM), 1);
        assert_eq!(s.on_signal(Signal::SIGINT), 2);
        assert_eq!(s.interrupted_by(), Some(Signal::SIGTERM));
    }
}
