//! The reaper: a small process (this binary, hidden subcommand `__reaper ID`) that outlives a runner
//! killed by any means — SIGKILL, the OOM killer, a panic, a third Ctrl-C — and then ends the session's
//! processes and sweeps its Docker resources.
//!
//! It runs in a session of its own (no terminal job control, no group signals), ignores SIGINT, SIGTERM
//! and SIGHUP, and reads a pipe from the runner: `done` means the runner ended the session itself;
//! end-of-file without `done` means the runner is gone. Either way it exits when it is through; if the
//! engine does not answer within the sweep's bound, the session stays on record as stale for the next
//! run's stale sweep.

use std::io::{PipeWriter, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigHandler, Signal, kill, signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::{orphans, state};
use crate::contract::{CREATES_IN_FLIGHT_FILE, ENV_BINARY, ENV_MARKER, ENV_SESSION, ENV_TEST};
use crate::docker::{self, Connection};

/// The hidden subcommand's name.
pub(crate) const SUBCOMMAND: &str = "__reaper";
/// How long a dead runner's reaper keeps trying to reach the engine.
const ENGINE_BOUND: Duration = Duration::from_secs(30);

/// The runner's end of the link.
#[derive(Debug)]
pub(crate) struct ReaperHandle {
    pub pid: i32,
    pipe: Option<PipeWriter>,
}

impl ReaperHandle {
    /// Starts the reaper for `session`, logging to `log` (in the session's state directory).
    pub(crate) fn spawn(session: &str, log: &std::path::Path) -> std::io::Result<ReaperHandle> {
        let (reader, writer) = std::io::pipe()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args([SUBCOMMAND, session])
            .stdin(reader)
            .stdout(log.try_clone()?)
            .stderr(log)
            // Not part of the session it cleans up: the environment scan must not find it.
            .env_remove(ENV_SESSION)
            .env_remove(ENV_MARKER)
            .env_remove(ENV_BINARY)
            .env_remove(ENV_TEST);
        // SAFETY: setsid is async-signal-safe; this runs once per session, off the per-test path.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
        let child = command.spawn()?;
        Ok(ReaperHandle {
            pid: child.id() as i32,
            pipe: Some(writer),
        })
    }

    /// Tells the reaper the runner ended the session itself, and waits for it to exit.
    pub(crate) fn dismiss(mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(b"done\n");
        }
        // The reaper is in the session's reach: a test can SIGSTOP it (SIGTERM it ignores). Waiting
        // for it without a bound would hang the runner, so past the bound it is resumed and killed.
        if !exits_within(self.pid, DISMISS_BOUND) {
            let pid = Pid::from_raw(self.pid);
            let _ = kill(pid, Signal::SIGCONT);
            let _ = kill(pid, Signal::SIGKILL);
        }
        let _ = waitpid(Pid::from_raw(self.pid), None);
    }
}

/// How long a dismissed reaper has to exit: it only reads "done" and returns.
const DISMISS_BOUND: Duration = Duration::from_secs(5);

/// Whether the child `pid` exits within `bound`, without reaping it (`sys::exits_within`).
fn exits_within(pid: i32, bound: Duration) -> bool {
    crate::sys::exits_within(pid, bound)
}

/// The reaper's main: waits for the runner to go, then cleans up after it if it did not.
pub(crate) fn run(session: &str) -> i32 {
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: installing SIG_IGN involves no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    let mut said = String::new();
    let _ = std::io::stdin().read_to_string(&mut said);
    if said.lines().any(|l| l == "done") {
        return 0;
    }
    let started = Instant::now();
    crate::output::err(format!(
        "reaper: the runner of session {session} is gone; cleaning up"
    ));
    // Forkers included: frozen before they are killed (`orphans::kill_session`).
    let killed = orphans::kill_session(session).len();
    crate::output::err(format!("reaper: killed {killed} process(es)"));
    let swept = sweep(session);
    let Ok(dir) = state::state_dir() else {
        return 0;
    };
    remove_temp(&dir, session);
    // The archive it unpacked (`--archive-file`), by the session's own name.
    state::remove_archive_dir(&dir, session);
    let dir = state::session_dir(&dir, session);
    // The runner's proxy died with creates forwarded and unanswered: the engine may still complete them.
    let in_flight = dir.join(CREATES_IN_FLIGHT_FILE).exists();
    if in_flight {
        watch_for_late_creates(session);
    }
    if swept && !in_flight {
        let _ = std::fs::remove_dir_all(&dir);
    }
    // The dead runner's sockets, bound in the short directory when the session's own path was too long
    // for them (`state::socket_path`): nobody can use them now, kept record or not.
    let _ = std::fs::remove_dir_all(state::short_socket_dir(session));
    crate::output::err(format!(
        "reaper: done in {:.2}s",
        started.elapsed().as_secs_f64()
    ));
    0
}

/// Removes the session's temporary directory, as its record names it (unless the session was kept).
fn remove_temp(state_dir: &std::path::Path, session: &str) {
    let Some(found) = state::record::find(state_dir, session) else {
        return;
    };
    let (Some(tmp), false) = (
        &found.record.tmp,
        found.record.status == state::record::Status::Kept,
    ) else {
        return;
    };
    let tidied = state::remove_session_temp(session, tmp, TEMP_BOUND);
    crate::output::err(format!(
        "reaper: removed the session's temporary directory ({} file(s)){}",
        tidied.files,
        match tidied.problems.is_empty() {
            true => String::new(),
            false => format!("; could not remove: {}", tidied.problems.join("; ")),
        }
    ));
}

/// How long the reaper may spend on the session's temporary directory.
const TEMP_BOUND: Duration = Duration::from_secs(30);

/// How long a reaper looks for creates a dead proxy had forwarded. Nothing can tell it when the engine
/// is done with them (their client is gone), so it watches for a while, removing what appears, and
/// leaves the session on record for a later stale sweep.
const LATE_CREATES_WATCH: Duration = Duration::from_secs(5);

/// Sweeps the session again whenever a listing finds something, for `LATE_CREATES_WATCH`.
fn watch_for_late_creates(session: &str) {
    let Connection::Up(engine) = docker::connect() else {
        return;
    };
    let until = Instant::now() + LATE_CREATES_WATCH;
    while Instant::now() < until {
        match docker::list_session(&engine, session, &state::anonymous_volumes_of(session)) {
            Ok(found) if !found.is_empty() => {
                crate::output::err(format!(
                    "reaper: {}",
                    docker::remove(&engine, &found).line()
                ));
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(250)),
            Err(_) => return,
        }
    }
}

/// Sweeps the session's Docker resources; true when nothing is left (or there is no engine to ask).
fn sweep(session: &str) -> bool {
    let deadline = Instant::now() + ENGINE_BOUND;
    let mut delay = Duration::from_millis(200);
    loop {
        match docker::connect() {
            Connection::Up(engine) => {
                match docker::sweep_session(&engine, session, &state::anonymous_volumes_of(session))
                {
                    Ok(removal) => {
                        crate::output::err(format!("reaper: {}", removal.line()));
                        return removal.failures.is_empty();
                    }
                    Err(e) => crate::output::err(format!("reaper: sweep failed: {e}")),
                }
            }
            Connection::Down {
                expected: false, ..
            } => return true,
            Connection::Down { reason, .. } => {
                crate::output::err(format!("reaper: no engine: {reason}"))
            }
        }
        if Instant::now() + delay > deadline {
            crate::output::err(
                "reaper: giving up; the session stays stale for the next run's stale sweep",
            );
            return false;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(3));
    }
}
