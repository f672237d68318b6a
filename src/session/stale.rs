//! Sweeping recorded sessions that are over: the dead, not-kept sessions of this host at the start of
//! every run, and the sessions `cargo cleantest sweep` selects. A record is deleted only once its
//! session's resources are all gone, so a failed sweep is retried by a later run.

use std::collections::HashSet;
use std::path::Path;

use super::orphans;
use super::owner::{Liveness, Owner};
use super::state::host_name;
use super::state::record::{self, FoundRecord, Status};
use crate::contract::SESSION_LABEL;
use crate::docker::{self, Connection, Engine, Removal, Resource};

/// What a sweep of several sessions did.
#[derive(Debug, Default)]
pub(crate) struct StaleReport {
    pub sessions: usize,
    pub removal: Removal,
    /// Processes of those sessions still running on this host, killed.
    pub processes: usize,
    /// Sessions left on record because their engine does not answer: (id, the line saying so).
    pub unreachable: Vec<(String, String)>,
    /// With a dry run: how many resources it said it would remove.
    pub would_remove: usize,
}

impl StaleReport {
    /// One line, when there was anything to say.
    pub(crate) fn line(&self) -> Option<String> {
        let r = &self.removal;
        let killed = match self.processes {
            0 => String::new(),
            n => format!("killed {n} process(es), "),
        };
        (r.removed_any() || self.processes > 0 || !r.failures.is_empty())
            .then(|| format!("{killed}{} of {} dead session(s)", r.line(), self.sessions))
    }
}

/// How long a run's start waits for its stale sweep before the tests start anyway.
const START_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A run's stale sweep, started on a thread of its own.
pub(crate) enum Started {
    /// It finished within `START_WAIT`: what to say now.
    Done(Vec<String>),
    /// It goes on while the tests run; the end of the session says what it did.
    Pending(std::sync::mpsc::Receiver<Vec<String>>),
}

/// Sweeps this host's dead sessions on a thread of its own and waits for it at most `START_WAIT`: a
/// slow engine, or one that hangs on some calls only, never holds the tests back. It touches only
/// sessions whose runner is dead, so it may go on beside the run.
pub(crate) fn start_in_background(engine: &Engine, state: &Path) -> Started {
    let (engine, state) = (engine.clone(), state.to_path_buf());
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("stale-sweep".into())
        .spawn(move || {
            let _ = tx.send(lines(&sweep_stale(&engine, &state, true, false)));
        });
    if let Err(e) = spawned {
        return Started::Done(vec![format!(
            "warning: stale sweep: cannot start its thread ({e}); the next run tries again"
        )]);
    }
    match rx.recv_timeout(START_WAIT) {
        Ok(lines) => Started::Done(lines),
        Err(_) => Started::Pending(rx),
    }
}

/// How long a run's start may spend on dead sessions' temporary directories; what is left then is
/// the next run's.
const TEMP_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

/// Removes the temporary directories of this host's dead, not-kept sessions (a SIGKILLed run whose
/// reaper died too): the engine plays no part, so a run without Docker clears them as well. Their
/// records stay for the stale sweep of their Docker resources, which forgets them. Usually there is
/// none, and this costs one read of the sessions' directory.
pub(crate) fn remove_dead_temps(state: &Path) {
    let host = host_name();
    let deadline = std::time::Instant::now() + TEMP_BOUND;
    for f in record::all(state) {
        let r = &f.record;
        let dead_here = !f.alive && r.status != Status::Kept && r.host == host;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if let (true, Some(tmp), false) = (dead_here, &r.tmp, left.is_zero()) {
            super::state::remove_session_temp(&r.id, tmp, left);
        }
    }
}

/// What a run says of its stale sweep.
fn lines(report: &StaleReport) -> Vec<String> {
    let mut lines: Vec<String> = report
        .line()
        .map(|line| format!("note: stale sweep: {line}"))
        .into_iter()
        .collect();
    lines.extend(
        report
            .unreachable
            .iter()
            .map(|(_, line)| format!("warning: stale sweep: {line}")),
    );
    lines
}

/// Sweeps the sessions of dead runners that were not kept (of this host only, when `this_host`).
pub(crate) fn sweep_stale(
    engine: &Engine,
    state: &Path,
    this_host: bool,
    dry_run: bool,
) -> StaleReport {
    let host = host_name();
    let all = record::all(state);
    let records: Vec<FoundRecord> = all
        .iter()
        .filter(|f| {
            !f.alive && f.record.status != Status::Kept && (!this_host || f.record.host == host)
        })
        .cloned()
        .collect();
    let mut report = sweep_records(engine, &records, dry_run);
    if !dry_run {
        let recorded: HashSet<&str> = all.iter().map(|f| f.record.id.as_str()).collect();
        report.processes += kill_unrecorded_dead(engine, &recorded);
        // Archives unpacked by runners that died with their reaper (a PID namespace's end).
        super::state::prune_archive_dirs(state);
    }
    report
}

/// Kills the processes of sessions with no record here whose resources' owner labels prove them dead
/// on this host (their record is in another state directory, or lost): they carry the session in
/// their environment. Their resources are left to a sweep that names them (`sweep --all`, `--session`).
fn kill_unrecorded_dead(engine: &Engine, recorded: &HashSet<&str>) -> usize {
    let Ok(everything) = docker::list(engine, &[SESSION_LABEL.to_string()]) else {
        return 0;
    };
    let mut by_session: std::collections::HashMap<
        &str,
        Vec<&std::collections::HashMap<String, String>>,
    > = std::collections::HashMap::new();
    for r in &everything {
        if let Some(session) = r.labels.get(SESSION_LABEL)
            && !recorded.contains(session.as_str())
            && crate::contract::is_session_id(session)
        {
            by_session.entry(session).or_default().push(&r.labels);
        }
    }
    by_session
        .into_iter()
        .filter(|(_, labels)| {
            super::owner::session_liveness(labels.iter().copied()) == Some(Liveness::Dead)
        })
        .map(|(session, _)| orphans::kill_session(session).len())
        .sum()
}

/// Sweeps recorded sessions, each on the engine its record names: a record of a session on engine X is
/// never settled by looking at engine Y. A record whose engine does not answer is kept (and reported)
/// for a later sweep; one whose engine was a session proxy that is gone (a nested run's) is swept on
/// `engine`, where that proxy forwarded.
pub(crate) fn sweep_records(
    engine: &Engine,
    records: &[FoundRecord],
    dry_run: bool,
) -> StaleReport {
    let mut report = StaleReport {
        sessions: records.len(),
        ..Default::default()
    };
    let current = docker::engine::endpoint();
    let mut by_endpoint: Vec<(&str, Vec<&FoundRecord>)> = Vec::new();
    for f in records {
        let endpoint = f.record.docker_endpoint.as_str();
        // An endpoint no client can use (a bad DOCKER_HOST) never reached an engine: nothing to look for
        // there, so it is settled on the current engine as before.
        let key = if !docker::engine::usable(endpoint)
            || endpoint == current
            || is_gone_proxy(endpoint)
        {
            current.as_str()
        } else {
            endpoint
        };
        match by_endpoint.iter_mut().find(|(e, _)| *e == key) {
            Some((_, group)) => group.push(f),
            None => by_endpoint.push((key, vec![f])),
        }
    }
    for (endpoint, group) in by_endpoint {
        if endpoint == current {
            sweep_on(engine, &group, dry_run, &mut report);
            continue;
        }
        match docker::connect_to(endpoint) {
            Connection::Up(other) => sweep_on(&other, &group, dry_run, &mut report),
            Connection::Down { reason, .. } => {
                for f in group {
                    report.unreachable.push((
                        f.record.id.clone(),
                        format!(
                            "session {} was on {endpoint}, which does not answer ({reason}); its record \
                             is kept for a later sweep (`cargo cleantest sweep --session {} --forget` \
                             forgets it)",
                            f.record.id, f.record.id
                        ),
                    ));
                }
            }
        }
    }
    report
}

/// A unix socket that was a session's Docker proxy (`sessions/<id>/docker.sock`) and is gone with it.
fn is_gone_proxy(endpoint: &str) -> bool {
    endpoint.strip_prefix("unix://").is_some_and(|path| {
        let path = Path::new(path);
        path.file_name()
            .is_some_and(|n| n == crate::contract::PROXY_SOCKET_FILE)
            && path
                .parent()
                .and_then(Path::parent)
                .and_then(Path::file_name)
                .is_some_and(|n| n == crate::contract::SESSIONS_DIR)
            && !path.exists()
    })
}

fn sweep_on(engine: &Engine, records: &[&FoundRecord], dry_run: bool, report: &mut StaleReport) {
    let mut found = Vec::new();
    let mut listed = Vec::new();
    for f in records {
        let Ok(resources) = docker::list_session(
            engine,
            &f.record.id,
            &super::state::anonymous_volumes(&f.dir),
        ) else {
            continue;
        };
        // A dead session's resources may belong to a live runner too: an outer session whose proxy
        // relabelled them when this one ran nested inside it. That runner sweeps them when it ends.
        if resources
            .iter()
            .any(|r| owner_of(r) == Some(Liveness::Alive))
        {
            continue;
        }
        found.extend(resources);
        listed.push(*f);
    }
    if dry_run {
        report.would_remove += print_resources(&found);
        return;
    }
    // Processes of a dead session may outlive its runner and reaper (both SIGKILLed): they still carry
    // the session in their environment. Kill them before the record that names the session goes.
    let here = host_name();
    for f in &listed {
        if f.record.host == here {
            report.processes += orphans::kill_session(&f.record.id).len();
        }
    }
    let removal = docker::remove(engine, &found);
    let failed: HashSet<&str> = removal
        .failures
        .iter()
        .filter_map(|f| f.resource.labels.get(SESSION_LABEL).map(String::as_str))
        .collect();
    for f in listed {
        if !failed.contains(f.record.id.as_str()) {
            let _ = f.remove();
        }
    }
    report.removal.absorb(removal);
}

fn owner_of(r: &Resource) -> Option<Liveness> {
    Owner::from_labels(&r.labels).map(|o| o.liveness())
}

/// The resources a dry run would remove, one per line; how many.
pub(crate) fn print_resources(resources: &[Resource]) -> usize {
    for r in resources {
        let session = r
            .labels
            .get(SESSION_LABEL)
            .map(String::as_str)
            .unwrap_or("?");
        crate::output::out(format!(
            "would remove {} {} ({}) of session {session}",
            r.kind.word(),
            r.name,
            short(&r.id)
        ));
    }
    resources.len()
}

/// The first 12 characters of an engine id, as the docker CLI shows them.
pub(crate) fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
