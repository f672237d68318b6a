//! The environment lock: two runs that would fight over the same ports or databases never overlap.
//! One lock per workspace root by default, or a named one shared by several checkouts (`--lock NAME`).
//! It is an `flock` on a file, so a dead holder never blocks anyone.
//!
//! The ports and databases it guards are the machine's, so the locks are too: they live in one
//! machine-wide directory (`/run/lock/cleantest`, else `/tmp/cleantest-locks`; `CLEANTEST_LOCK_DIR`),
//! not in the per-user state directory, and two runs of different users or state directories take the
//! same lock. The directory is world-writable and sticky, like `/tmp`; it must be root's or this
//! user's, and not a symlink. Lock files are opened without following symlinks, must be regular files,
//! and are readable and writable by all (mode 0666): any user can wait on them, and the holder writes
//! who it is into the file it holds.

use std::fs::{File, TryLockError};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use super::state::now_secs;
use crate::contract::ENV_LOCK_DIR;
use crate::errors::Error;

/// Who holds a lock, written next to it by the holder.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    session: String,
    command: String,
    since: u64,
}

/// A held environment lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub(crate) struct EnvLock {
    _file: File,
}

/// The lock's file name: the user's name, or one derived from the workspace root.
pub(crate) fn lock_name(named: Option<&str>, workspace: &Path) -> String {
    match named {
        Some(name) => name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
        None => {
            // FNV-1a of the path: stable across runs and Rust versions, unlike DefaultHasher.
            let mut hash: u64 = 0xcbf29ce484222325;
            for b in workspace.as_os_str().as_encoded_bytes() {
                hash = (hash ^ u64::from(*b)).wrapping_mul(0x100000001b3);
            }
            let base = workspace
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!(
                "workspace-{}-{hash:016x}",
                base.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            )
        }
    }
}

/// The machine-wide lock directory.
fn lock_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(ENV_LOCK_DIR).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let run_lock = Path::new("/run/lock");
    if run_lock.is_dir() {
        run_lock.join("cleantest")
    } else {
        PathBuf::from("/tmp/cleantest-locks")
    }
}

/// Creates the lock directory (1777) or checks the one there: a directory, not a symlink, root's or
/// this user's.
fn shared_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().create(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || (meta.uid() != 0 && meta.uid() != me) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory of root's or this user's (uid {}); remove it, or set {ENV_LOCK_DIR}",
                dir.display(),
                meta.uid()
            ),
        ));
    }
    Ok(())
}

/// Opens (creating) a lock file without following a symlink; read-write where this user may write it,
/// else read-only (enough to wait on and take the lock).
fn open_lock(path: &Path) -> std::io::Result<(File, bool)> {
    let open = |write: bool| {
        File::options()
            .read(true)
            .write(write)
            .create(write)
            .truncate(false)
            .mode(0o666)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    };
    let (file, writable) = match open(true) {
        Ok(file) => (file, true),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => (open(false)?, false),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    // The creator's umask took bits off: any user must be able to open it.
    if writable && meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o666 != 0o666 {
        file.set_permissions(std::fs::Permissions::from_mode(0o666))?;
    }
    Ok((file, writable))
}

/// Takes the lock, waiting (and saying on whom) while another run holds it, up to `timeout`.
pub(crate) fn acquire(
    name: &str,
    session: &str,
    timeout: Option<Duration>,
) -> Result<EnvLock, Error> {
    acquire_in(&lock_dir(), name, session, timeout)
}

fn acquire_in(
    dir: &Path,
    name: &str,
    session: &str,
    timeout: Option<Duration>,
) -> Result<EnvLock, Error> {
    let io = |e: std::io::Error| Error::Lock {
        name: name.to_string(),
        message: e.to_string(),
    };
    shared_dir(dir).map_err(io)?;
    let path = dir.join(format!("{name}.lock"));
    let (mut file, writable) = open_lock(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::Error(e)) => return Err(io(e)),
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = (&file).read_to_string(&mut text);
            let holder = serde_json::from_str::<Holder>(text.trim()).ok();
            crate::output::err(format!(
                "{:>12} waiting for the environment lock `{name}`: {}",
                "Blocking",
                describe(holder.as_ref())
            ));
            wait_for(&file, name, timeout)?;
        }
    }
    if writable {
        let command: Vec<String> = std::env::args().collect();
        let holder = Holder {
            pid: std::process::id(),
            session: session.to_string(),
            command: command.join(" "),
            since: now_secs(),
        };
        // Who holds it, for those who wait; informational, so a failure to write is no error.
        if let Ok(json) = serde_json::to_string(&holder) {
            let _ = file
                .set_len(0)
                .and_then(|_| file.rewind())
                .and_then(|_| file.write_all(json.as_bytes()));
        }
    }
    Ok(EnvLock { _file: file })
}

fn describe(holder: Option<&Holder>) -> String {
    match holder {
        Some(h) => {
            let ago = now_secs().saturating_sub(h.since);
            format!(
                "held by pid {} (session {}, `{}`) for {}s",
                h.pid, h.session, h.command, ago
            )
        }
        None => "held by another run".to_string(),
    }
}

/// Blocks on the lock in a helper thread so the wait can be bounded and show a spinner.
fn wait_for(file: &File, name: &str, timeout: Option<Duration>) -> Result<(), Error> {
    let waiter = file.try_clone().map_err(|e| Error::Lock {
        name: name.to_string(),
        message: e.to_string(),
    })?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(waiter.lock());
    });
    let spinner = std::io::stderr().is_terminal().then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_message(format!("waiting for `{name}`"));
        s.enable_steady_tick(Duration::from_millis(120));
        s
    });
    let result = match timeout {
        Some(limit) => rx.recv_timeout(limit).map_err(|_| Error::LockTimeout {
            name: name.to_string(),
            waited: limit,
        }),
        None => rx.recv().map_err(|_| Error::LockTimeout {
            name: name.to_string(),
            waited: Duration::ZERO,
        }),
    };
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    result?.map_err(|e| Error::Lock {
        name: name.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_file_safe_and_stable() {
        assert_eq!(
            lock_name(Some("db/5432 main"), Path::new("/x")),
            "db_5432_main"
        );
        let a = lock_name(None, Path::new("/work/app"));
        assert_eq!(a, lock_name(None, Path::new("/work/app")));
        assert_ne!(a, lock_name(None, Path::new("/other/app")));
        assert!(a.starts_with("workspace-app-"));
    }

    #[test]
    fn a_held_lock_times_out_with_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("cleantest-lock-{}", std::process::id()));
        let held = acquire_in(&dir, "t", "s1", None).unwrap();
        let err = acquire_in(&dir, "t", "s2", Some(Duration::from_millis(200))).unwrap_err();
        assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
        drop(held);
        acquire_in(&dir, "t", "s3", Some(Duration::from_secs(5))).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o1777);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symlink_where_a_lock_file_would_be_is_refused() {
        let dir = std::env::temp_dir().join(format!("cleantest-lock-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("victim");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("t.lock")).unwrap();
        assert!(acquire_in(&dir, "t", "s1", None).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
