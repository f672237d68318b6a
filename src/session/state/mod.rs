//! The per-user state directory (`CLEANTEST_STATE_DIR`, else `$XDG_STATE_HOME/cleantest`, else
//! `~/.local/state/cleantest`; mode 0700): session records under `sessions/<id>/`; and each session's
//! temporary directory, under the system's (`session_temp_path`). (Environment locks are machine-wide:
//! `session::lock`.)

pub(crate) mod record;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::contract::{ARCHIVES_DIR, ENV_STATE_DIR, SESSIONS_DIR, TEMP_ROOT_PREFIX};
use crate::sys::tree::Tidied;

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
    Ok(dir)
}

/// `sessions/<id>/`: one session's record, lock, proxy socket and reaper log.
pub(crate) fn session_dir(state: &Path, id: &str) -> PathBuf {
    state.join(SESSIONS_DIR).join(id)
}

/// `archives/<id>/`: where session `id` unpacks the archive it runs (`--archive-file`).
pub(crate) fn archive_dir(state: &Path, id: &str) -> PathBuf {
    state.join(ARCHIVES_DIR).join(id)
}

/// `archives/<id>.lock`: held (flock) by session `id` for its life, taken before `archive_dir` is
/// made, so a directory whose lock is free belongs to a runner that is gone.
pub(crate) fn archive_lock(state: &Path, id: &str) -> PathBuf {
    state.join(ARCHIVES_DIR).join(format!("{id}.lock"))
}

/// Removes what `archive_dir` and `archive_lock` left for session `id`, each by its own name.
pub(crate) fn remove_archive_dir(state: &Path, id: &str) {
    let _ = std::fs::remove_dir_all(archive_dir(state, id));
    let _ = std::fs::remove_file(archive_lock(state, id));
}

/// Removes the unpacked archives of sessions whose runner is gone: each lock named as a session that
/// nobody holds, with its directory.
pub(crate) fn prune_archive_dirs(state: &Path) {
    let Ok(entries) = std::fs::read_dir(state.join(ARCHIVES_DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".lock"))
            .filter(|id| crate::contract::is_session_id(id))
        else {
            continue;
        };
        let Ok(file) = std::fs::File::open(entry.path()) else {
            continue;
        };
        if file.try_lock().is_ok() {
            remove_archive_dir(state, id);
        }
    }
}

/// The longest unix socket path every platform binds (`sun_path` is 104 bytes on macOS, 108 on Linux,
/// with the terminating NUL).
const SOCKET_PATH_MAX: usize = 103;

/// Where the session's socket `file` is bound: in its session directory, unless that path is too long
/// for a unix socket (a deep `HOME`, macOS's long temporary directories); then in a short directory of
/// this user's own, `/tmp/ct-<uid>/<session>/`, made 0700. `short_socket_dir` names it for removal.
pub(crate) fn socket_path(state: &Path, id: &str, file: &str) -> std::io::Result<PathBuf> {
    let preferred = session_dir(state, id).join(file);
    if preferred.as_os_str().len() <= SOCKET_PATH_MAX {
        return Ok(preferred);
    }
    let dir = short_socket_dir(id);
    let parent = dir.parent().unwrap_or(Path::new("/tmp"));
    for d in [parent, dir.as_path()] {
        own_private_dir(d)?;
    }
    Ok(dir.join(file))
}

/// Creates `d` 0700 if missing, then checks that it is this user's own private directory, not a link:
/// anything else under a shared `/tmp` may be another user's trap.
fn own_private_dir(d: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(d) {
        Ok(()) => std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(d)?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a private directory of this user's; remove it",
            d.display()
        )));
    }
    Ok(())
}

/// The temporary directory of session `id`: `<temp>/cleantest-<uid>/<id>/`, where `<temp>` is the
/// runner's own (`TMPDIR`, else `/tmp`): temporary files belong on the temporary filesystem (often a
/// tmpfs, and outside a home directory's quota or network mount), and tests expect them there.
pub(crate) fn session_temp_path(id: &str) -> PathBuf {
    let uid = nix::unistd::geteuid().as_raw();
    std::env::temp_dir()
        .join(format!("{TEMP_ROOT_PREFIX}{uid}"))
        .join(id)
}

/// Creates the session's temporary directory (`session_temp_path`), mode 0700, in this user's private
/// directory; one that already exists is not this session's, and is an error.
pub(crate) fn create_session_temp(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        own_private_dir(parent)?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(path)
}

/// Removes session `id`'s temporary directory as its record names it (`tmp`), safely
/// (`sys::tree::remove_tree`). A path that is not `.../cleantest-<uid>/<id>` is refused: the record
/// decides what gets removed, so it may name nothing else.
pub(crate) fn remove_session_temp(id: &str, tmp: &Path, bound: Duration) -> Tidied {
    let uid = nix::unistd::geteuid().as_raw();
    let expected_parent = format!("{TEMP_ROOT_PREFIX}{uid}");
    let named_right = tmp.is_absolute()
        && tmp.file_name().is_some_and(|n| n == id)
        && tmp
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n.to_str() == Some(expected_parent.as_str()));
    if !named_right {
        return Tidied {
            problems: vec![format!(
                "{}: not a session's temporary directory; left alone",
                tmp.display()
            )],
            ..Tidied::default()
        };
    }
    crate::sys::tree::remove_tree(tmp, false, Instant::now() + bound)
}

/// The short socket directory of session `id` (see `socket_path`), whether or not it exists.
pub(crate) fn short_socket_dir(id: &str) -> PathBuf {
    let uid = nix::unistd::geteuid().as_raw();
    PathBuf::from(format!("/tmp/ct-{uid}")).join(id)
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

/// Creates `dir` (and missing parents) with mode 0700, or tightens an existing one to 0700, checking
/// before anything is changed. The state directory's records decide what gets swept and killed, and a
/// runner may be root: a symlink or a directory that another user placed on the path could steer it
/// into chmodding and filling any directory. So every existing component must belong to root or to this
/// user (a symlink's target too), and `dir` itself is opened without following a symlink and checked
/// through that descriptor, which is what gets the 0700: nothing is changed through a path that could
/// be swapped meanwhile.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    let mut path = PathBuf::new();
    let components: Vec<_> = dir.components().collect();
    for (i, component) in components.iter().enumerate() {
        path.push(component);
        let last = i + 1 == components.len();
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if !last => trusted_component(&path, &meta, me)?,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                if !last {
                    trusted_component(&path, &std::fs::symlink_metadata(&path)?, me)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    if std::fs::symlink_metadata(dir)?.file_type().is_symlink() {
        return Err(refusal(dir, "it is a symbolic link"));
    }
    // Swapped for a symlink since: O_NOFOLLOW fails (ELOOP, or ENOTDIR with O_DIRECTORY).
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| {
            let why = if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) {
                "it is a symbolic link or not a directory".to_string()
            } else {
                e.to_string()
            };
            refusal(dir, &why)
        })?;
    let owner = opened.metadata()?.uid();
    if owner != me {
        return Err(refusal(
            dir,
            &format!("it is owned by uid {owner}, not by this user (uid {me})"),
        ));
    }
    opened.set_permissions(std::fs::Permissions::from_mode(0o700))
}

/// A component above a private directory: root's or ours, and so is whatever a symlink points to.
fn trusted_component(path: &Path, meta: &std::fs::Metadata, me: u32) -> std::io::Result<()> {
    let trusted = |uid: u32| uid == 0 || uid == me;
    if !trusted(meta.uid()) {
        return Err(refusal(
            path,
            &format!(
                "it is owned by uid {}, not by this user (uid {me}) or root",
                meta.uid()
            ),
        ));
    }
    if meta.file_type().is_symlink() {
        let target = std::fs::metadata(path)?;
        if !trusted(target.uid()) {
            return Err(refusal(
                path,
                &format!(
                    "it is a symbolic link to a directory of uid {}",
                    target.uid()
                ),
            ));
        }
    }
    Ok(())
}

fn refusal(path: &Path, why: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "refusing {}: {why}; nothing was changed. Point CLEANTEST_STATE_DIR at a directory of your own",
            path.display()
        ),
    )
}

/// Writes a file atomically (temporary file, then rename), so a reader never sees half a record.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The machine's host name (records say which host a session ran on).
pub(crate) fn host_name() -> String {
    crate::sys::host_name()
}

/// Seconds since the epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_path_too_long_for_sun_path_falls_back_to_a_short_private_directory() {
        let id = format!("sockfallback{}", std::process::id());
        let short = Path::new("/tmp/ct-state");
        assert_eq!(
            socket_path(short, &id, "docker.sock").unwrap(),
            session_dir(short, &id).join("docker.sock")
        );
        let deep = PathBuf::from("/tmp").join("d".repeat(120));
        let path = socket_path(&deep, &id, "docker.sock").unwrap();
        assert!(
            path.as_os_str().len() <= SOCKET_PATH_MAX,
            "{}",
            path.display()
        );
        assert_eq!(path, short_socket_dir(&id).join("docker.sock"));
        let mode = std::fs::metadata(short_socket_dir(&id)).unwrap().mode();
        assert_eq!(mode & 0o777, 0o700);
        // It binds, and goes with the session.
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(listener);
        std::fs::remove_dir_all(short_socket_dir(&id)).unwrap();
    }
}
