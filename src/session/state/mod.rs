//! The per-user state directory (`CLEANTEST_STATE_DIR`, else `$XDG_STATE_HOME/cleantest`, else
//! `~/.local/state/cleantest`; mode 0700): session records under `sessions/<id>/` and environment locks
//! under `locks/`.

pub(crate) mod record;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::contract::{ENV_STATE_DIR, SESSIONS_DIR};

/// The state directory, created 0700 when missing.
pub(crate) fn state_dir() -> std::io::Result<PathBuf> {
    let dir = if let Some(dir) = std::env::var_os(ENV_STATE_DIR).filter(|d| !d.is_empty()) {
        PathBuf::from(dir)
    } else if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(xdg).join("cleantest")
    } else {
        let home =
            std::env::var_os("HOME").ok_or_else(|| std::io::Error::other("HOME is not set"))?;
        PathBuf::from(home).join(".local/state/cleantest")
    };
    private_dir(&dir)?;
    check_owner(&dir)?;
    Ok(dir)
}

/// Refuses a state directory owned by another user: its records decide what gets swept and killed, so
/// whoever owns it could steer our cleanup (sudo with another user's HOME, a shared CLEANTEST_STATE_DIR).
fn check_owner(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(dir)?.uid();
    let me = nix::unistd::geteuid().as_raw();
    if owner == me {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "{} is owned by uid {owner}, not by this user (uid {me}); \
             point CLEANTEST_STATE_DIR at a directory of your own",
            dir.display()
        ),
    ))
}

/// `sessions/<id>/`: one session's record, lock, proxy socket and reaper log.
pub(crate) fn session_dir(state: &Path, id: &str) -> PathBuf {
    state.join(SESSIONS_DIR).join(id)
}

/// The anonymous volumes the session's proxy recorded in `session_dir` (see the proxy's `volumes`).
pub(crate) fn anonymous_volumes(session_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(session_dir.join(crate::contract::ANONYMOUS_VOLUMES_FILE))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `anonymous_volumes` of session `id` in this user's state directory.
pub(crate) fn anonymous_volumes_of(id: &str) -> Vec<String> {
    state_dir().map_or_else(
        |_| Vec::new(),
        |dir| anonymous_volumes(&session_dir(&dir, id)),
    )
}

/// Creates `dir` (and parents) with mode 0700; an existing directory is tightened to 0700.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes a file atomically (temporary file, then rename), so a reader never sees half a record.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The machine's host name (records say which host a session ran on).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Seconds since the epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
