//! Session records: `sessions/<id>/record.json` (who ran, where, which engine, status) and
//! `sessions/<id>/lock`, which the runner holds with `flock` for its whole life. The kernel drops the
//! lock when the runner dies, however it dies, so "lock not held" proves the owner is gone.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{host_name, now_secs, private_dir, write_atomic};
use crate::contract::{RECORD_FILE, RECORD_LOCK_FILE, SESSIONS_DIR, is_session_id};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Running,
    Finished,
    Kept,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    pub id: String,
    pub pid: u32,
    pub host: String,
    /// Seconds since the epoch.
    pub started: u64,
    pub workspace: String,
    pub command: String,
    pub docker_endpoint: String,
    pub status: Status,
    /// The session's temporary directory (`TMPDIR` of its processes), when it has one: removed with
    /// the session, by whoever settles it (its end, its reaper, a stale sweep, `sweep --kept`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmp: Option<PathBuf>,
}

/// This run's own record, with its lock held.
#[derive(Debug)]
pub(crate) struct OwnRecord {
    dir: PathBuf,
    record: SessionRecord,
    _lock: File,
}

/// Another session's record, as found on disk.
#[derive(Debug, Clone)]
pub(crate) struct FoundRecord {
    pub dir: PathBuf,
    pub record: SessionRecord,
    /// Its runner still holds the lock.
    pub alive: bool,
}

fn sessions_dir(state: &Path) -> PathBuf {
    state.join(SESSIONS_DIR)
}

impl OwnRecord {
    /// Creates `sessions/<id>/`, takes its lock and writes the record (status running), naming the
    /// temporary directory `tmp` the session is about to create.
    pub(crate) fn create(
        state: &Path,
        id: &str,
        workspace: &Path,
        endpoint: &str,
        tmp: Option<&Path>,
    ) -> std::io::Result<OwnRecord> {
        let dir = super::session_dir(state, id);
        private_dir(&dir)?;
        let lock = File::create(dir.join(RECORD_LOCK_FILE))?;
        lock.try_lock()
            .map_err(|e| std::io::Error::other(format!("session lock: {e}")))?;
        let command: Vec<String> = std::env::args().collect();
        let record = SessionRecord {
            id: id.to_string(),
            pid: std::process::id(),
            host: host_name(),
            started: now_secs(),
            workspace: workspace.display().to_string(),
            command: command.join(" "),
            docker_endpoint: endpoint.to_string(),
            status: Status::Running,
            tmp: tmp.map(Path::to_path_buf),
        };
        let own = OwnRecord {
            dir,
            record,
            _lock: lock,
        };
        own.save()?;
        Ok(own)
    }

    fn save(&self) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(&self.record).map_err(std::io::Error::other)?;
        write_atomic(&self.dir.join(RECORD_FILE), &json)
    }

    pub(crate) fn set_status(&mut self, status: Status) -> std::io::Result<()> {
        self.record.status = status;
        self.save()
    }

    /// Deletes the record: the session ended with nothing left to clean.
    pub(crate) fn remove(self) -> std::io::Result<()> {
        remove_session_dirs(&self.dir, &self.record)
    }
}

/// Every session record in the state directory, with whether its runner is alive.
pub(crate) fn all(state: &Path) -> Vec<FoundRecord> {
    let Ok(entries) = std::fs::read_dir(sessions_dir(state)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let Some(id) = dir
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| is_session_id(n))
            .map(str::to_string)
        else {
            continue;
        };
        let path = dir.join(RECORD_FILE);
        // No record yet: a session being created (its directory comes first), not a corrupt one.
        if !path.exists() {
            continue;
        }
        let record = match read(&path) {
            // The directory's name is the session's id: an `id` edited inside the file is not trusted
            // (it could name someone else's session).
            Ok(record) if record.id == id => record,
            Ok(_) => unreadable(&dir, &id, "its id differs from its directory's name"),
            Err(e) => unreadable(&dir, &id, &e),
        };
        out.push(FoundRecord {
            alive: lock_held(&dir.join(RECORD_LOCK_FILE)),
            dir,
            record,
        });
    }
    out.sort_by_key(|f| f.record.started);
    out
}

fn read(path: &Path) -> Result<SessionRecord, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// A corrupt or hand-edited record stands for a session of unknown host and workspace, neither kept nor
/// finished: the start-of-run stale sweep (this host only) leaves it, `sweep --stale` and
/// `sweep --session ID` sweep it (never while its lock is held, and never what a live owner's labels
/// protect) and then remove it. Said once, on stderr, so it does not sit there unnoticed.
fn unreadable(dir: &Path, id: &str, why: &str) -> SessionRecord {
    crate::output::err(format!(
        "warning: the session record {} is unreadable ({why}); `cargo cleantest sweep --session {id}` \
         sweeps that session and removes it",
        dir.join(RECORD_FILE).display()
    ));
    SessionRecord {
        id: id.to_string(),
        pid: 0,
        host: String::new(),
        started: 0,
        workspace: String::new(),
        command: String::new(),
        docker_endpoint: String::new(),
        status: Status::Running,
        // Where this user's sessions keep it by default: removed with the record if it is there.
        tmp: Some(super::session_temp_path(id)),
    }
}

/// A record by session id.
pub(crate) fn find(state: &Path, id: &str) -> Option<FoundRecord> {
    all(state).into_iter().find(|f| f.record.id == id)
}

/// Whether some process holds the lock. A second open file description conflicts with the holder's
/// even within one process, so our own session reads as alive too.
fn lock_held(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => false,
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => false,
    }
}

impl FoundRecord {
    pub(crate) fn remove(&self) -> std::io::Result<()> {
        remove_session_dirs(&self.dir, &self.record)
    }
}

/// How long settling a record may spend on the temporary directory a session left.
const TEMP_BOUND: Duration = Duration::from_secs(30);

/// A session's directory, its short socket directory if it had one (`state::socket_path`), and its
/// temporary directory if it still has one (a killed runner's, or a kept one). What in the temporary
/// directory cannot be removed (a mount point, say) is the error, after the rest is gone: no later
/// sweep would do better.
fn remove_session_dirs(dir: &Path, record: &SessionRecord) -> std::io::Result<()> {
    if let Some(id) = dir.file_name().and_then(|n| n.to_str()) {
        let _ = std::fs::remove_dir_all(super::short_socket_dir(id));
    }
    let problems = record.tmp.as_ref().map_or_else(Vec::new, |tmp| {
        super::remove_session_temp(&record.id, tmp, TEMP_BOUND).problems
    });
    std::fs::remove_dir_all(dir)?;
    match problems.is_empty() {
        true => Ok(()),
        false => Err(std::io::Error::other(format!(
            "its temporary directory: {}",
            problems.join("; ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_record_is_alive_until_dropped_then_stale() {
        let state = std::env::temp_dir().join(format!("cleantest-state-{}", std::process::id()));
        let own = OwnRecord::create(&state, "abc123", Path::new("/ws"), "unix:///x", None).unwrap();
        let found = find(&state, "abc123").unwrap();
        assert!(found.alive);
        assert_eq!(found.record.status, Status::Running);
        drop(own);
        assert!(!find(&state, "abc123").unwrap().alive);
        std::fs::remove_dir_all(&state).unwrap();
    }
}
