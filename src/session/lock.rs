//! The environment lock: two runs that would fight over the same ports or databases never overlap.
//! One lock per workspace root by default, or a named one shared by several checkouts (`--lock NAME`).
//! It is an `flock` on a file in the state directory, so a dead holder never blocks anyone.

use std::fs::{File, TryLockError};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::state::{now_secs, private_dir, write_atomic};
use crate::contract::LOCKS_DIR;
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

/// Takes the lock, waiting (and saying on whom) while another run holds it, up to `timeout`.
pub(crate) fn acquire(
    state: &Path,
    name: &str,
    session: &str,
    timeout: Option<Duration>,
) -> Result<EnvLock, Error> {
    let dir = state.join(LOCKS_DIR);
    let io = |e: std::io::Error| Error::Lock {
        name: name.to_string(),
        message: e.to_string(),
    };
    private_dir(&dir).map_err(io)?;
    let path = dir.join(format!("{name}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::Error(e)) => return Err(io(e)),
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(dir.join(format!("{name}.holder")))
                .ok()
                .and_then(|t| serde_json::from_str::<Holder>(&t).ok());
            eprintln!(
                "waiting for the environment lock `{name}`: {}",
                describe(holder.as_ref())
            );
            wait_for(&file, name, timeout)?;
        }
    }
    let command: Vec<String> = std::env::args().collect();
    let holder = Holder {
        pid: std::process::id(),
        session: session.to_string(),
        command: command.join(" "),
        since: now_secs(),
    };
    let json = serde_json::to_vec(&holder).map_err(|e| io(std::io::Error::other(e)))?;
    write_atomic(&dir.join(format!("{name}.holder")), &json).map_err(io)?;
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
        let state = std::env::temp_dir().join(format!("cleantest-lock-{}", std::process::id()));
        let held = acquire(&state, "t", "s1", None).unwrap();
        let err = acquire(&state, "t", "s2", Some(Duration::from_millis(200))).unwrap_err();
        assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
        drop(held);
        acquire(&state, "t", "s3", Some(Duration::from_secs(5))).unwrap();
        std::fs::remove_dir_all(&state).unwrap();
    }
}
