//! The engine-side reaper: a container of this binary on the session's engine (`docker::sidecar`),
//! linked to the runner by an attached stream, that sweeps the session when the stream breaks without a
//! dismissal. It covers what the host reaper cannot: a runner that is PID 1 of a PID namespace (a
//! container's entrypoint, `unshare -fp`, a CI job in a container) takes the host reaper with it when it
//! dies, and a CI machine destroyed mid-run against a remote engine leaves nothing on the host at all.
//!
//! Protocol on the container's stdin, a line each: `volume NAME` (an anonymous volume the proxy
//! recorded: the container cannot read the state directory), `heartbeat SECS` then `beat` every SECS
//! (remote engines only: a vanished machine closes no socket, so silence for `SILENT_BEATS` periods
//! counts as a break), and `done` (dismissed). It answers `ready` once it reaches the engine through
//! the mounted socket, or `error: …`.
//!
//! The container carries the session's labels and owner labels like any resource of the session, so
//! any sweep of the session removes it; its own sweep spares it, and it removes itself by exiting
//! (`AutoRemove`).

use std::io::BufRead;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::locked;
use crate::cli::EngineReaperMode;
use crate::contract::{ROLE_LABEL, ROLE_REAPER, SESSION_LABEL};
use crate::docker::sidecar::{self, Sidecar, Spec};
use crate::docker::{self, Connection, Engine};

/// The hidden subcommand the container runs.
pub(crate) const SUBCOMMAND: &str = "__engine-reaper";
/// How long the container may take to say it is ready (an image import comes before, unbounded by it).
const READY_BOUND: Duration = Duration::from_secs(15);
/// How long a dismissed reaper may take to exit.
const DISMISS_BOUND: Duration = Duration::from_secs(3);
/// The heartbeat period on links to a remote engine.
const BEAT: Duration = Duration::from_secs(5);
/// Heartbeats missed before a remote link counts as broken.
const SILENT_BEATS: u32 = 6;

/// Whether to run one, and why: `Some(reason)` when on.
pub(crate) fn reason(mode: EngineReaperMode, endpoint: &str) -> Option<&'static str> {
    match mode {
        EngineReaperMode::Off => None,
        EngineReaperMode::On => Some("--engine-reaper=on"),
        EngineReaperMode::Auto if is_remote(endpoint) => Some("the engine is remote"),
        EngineReaperMode::Auto if in_child_pid_namespace() => {
            Some("the runner is in a PID namespace of its own")
        }
        EngineReaperMode::Auto if in_container() => Some("the runner runs in a container"),
        EngineReaperMode::Auto => None,
    }
}

fn is_remote(endpoint: &str) -> bool {
    ["tcp://", "http://", "https://", "ssh://"]
        .iter()
        .any(|p| endpoint.starts_with(p))
}

/// A PID namespace other than the initial one has an init that can take the host reaper down with it.
pub(crate) fn in_child_pid_namespace() -> bool {
    crate::sys::in_child_pid_namespace()
}

/// A container that shares the host's PID namespace (`--pid=host`) still shows in its cgroup. Marker
/// files (`/.dockerenv`) are not used: machines built from container images keep them.
fn in_container() -> bool {
    let cgroup = crate::sys::own_cgroup();
    [
        "/docker",
        "/kubepods",
        "/containerd",
        "/libpod",
        "/lxc",
        "/actions_job",
    ]
    .iter()
    .any(|m| cgroup.contains(m))
}

/// The runner's end of the link.
pub(crate) struct EngineReaper {
    engine: Engine,
    sidecar: Mutex<Option<Sidecar>>,
}

impl EngineReaper {
    /// Starts the reaper container for `session` and waits until it reaches the engine.
    pub(crate) fn start(
        engine: &Engine,
        endpoint: &str,
        session: &str,
        owner: Vec<(String, String)>,
    ) -> Result<Arc<EngineReaper>, String> {
        let mut labels = vec![
            (SESSION_LABEL.to_string(), session.to_string()),
            (ROLE_LABEL.to_string(), ROLE_REAPER.to_string()),
        ];
        labels.extend(owner);
        let spec = Spec {
            args: vec![SUBCOMMAND.to_string(), session.to_string()],
            labels,
        };
        let mut sidecar = sidecar::start(engine, endpoint, &spec).map_err(|e| e.to_string())?;
        let answer = sidecar.line(Instant::now() + READY_BOUND);
        let ready = match answer {
            Ok(Some(line)) if line == "ready" => Ok(()),
            Ok(Some(line)) => Err(line.trim_start_matches("error: ").to_string()),
            Ok(None) => Err("it exited before it was ready".to_string()),
            Err(e) => Err(format!("no answer from it: {e}")),
        };
        let remote = is_remote(endpoint);
        let ready = ready.and_then(|()| match remote {
            true => sidecar
                .send(&format!("heartbeat {}", BEAT.as_secs()))
                .map_err(|e| e.to_string()),
            false => Ok(()),
        });
        if let Err(e) = ready {
            sidecar::remove(engine, &sidecar.id);
            return Err(e);
        }
        let reaper = Arc::new(EngineReaper {
            engine: engine.clone(),
            sidecar: Mutex::new(Some(sidecar)),
        });
        if remote {
            let weak = Arc::downgrade(&reaper);
            let _ = std::thread::Builder::new()
                .name("engine-reaper-beat".into())
                .spawn(move || beat(weak));
        }
        Ok(reaper)
    }

    /// Tells the reaper a line; false once the link is gone or dismissed.
    fn tell(&self, line: &str) -> bool {
        let mut sidecar = locked(&self.sidecar);
        sidecar.as_mut().is_some_and(|s| s.send(line).is_ok())
    }

    /// Tells the reaper about anonymous volumes of the session (they carry no label to find them by).
    pub(crate) fn note_volumes(&self, names: &[String]) {
        for name in names {
            self.tell(&format!("volume {name}"));
        }
    }

    /// The runner ends the session itself: the reaper exits without sweeping, and is gone (bounded)
    /// before the session's own sweep lists, so the sweep neither counts nor keeps it.
    pub(crate) fn dismiss(&self) {
        let Some(mut sidecar) = locked(&self.sidecar).take() else {
            return;
        };
        match sidecar.send("done") {
            Ok(()) => sidecar::wait_removed(&self.engine, &sidecar.id, DISMISS_BOUND),
            Err(_) => sidecar::remove(&self.engine, &sidecar.id),
        }
    }
}

/// Sends a heartbeat every `BEAT` while the runner holds the link.
fn beat(reaper: Weak<EngineReaper>) {
    loop {
        // The period of the heartbeat itself, not a wait for some other event.
        std::thread::sleep(BEAT);
        match reaper.upgrade() {
            Some(r) if r.tell("beat") => {}
            _ => return,
        }
    }
}

/// What the runner said on the link.
#[derive(Debug, PartialEq, Eq)]
enum Said {
    Done,
    Volume(String),
    Heartbeat(Duration),
    Beat,
    Other,
}

fn parse(line: &str) -> Said {
    let line = line.trim();
    match line.split_once(' ') {
        _ if line == "done" => Said::Done,
        _ if line == "beat" => Said::Beat,
        Some(("volume", name)) if !name.is_empty() => Said::Volume(name.to_string()),
        Some(("heartbeat", secs)) => match secs.parse::<u64>() {
            Ok(secs) if secs > 0 => Said::Heartbeat(Duration::from_secs(secs)),
            _ => Said::Other,
        },
        _ => Said::Other,
    }
}

/// The container's main: says `ready` once it reaches the engine, waits for the link to break, and
/// sweeps the session unless dismissed. Its container removes itself when it exits.
pub(crate) fn run(session: &str) -> i32 {
    let engine = match docker::connect() {
        Connection::Up(engine) => engine,
        Connection::Down {
            endpoint, reason, ..
        } => {
            crate::output::out(format!(
                "error: the engine socket mounted at {endpoint} does not answer ({reason})"
            ));
            return 1;
        }
    };
    crate::output::out("ready");
    let (lines, said) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut volumes = Vec::new();
    let mut silence: Option<Duration> = None;
    loop {
        let next = match silence {
            Some(limit) => said.recv_timeout(limit),
            None => said.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next.map(|l| parse(&l)) {
            Ok(Said::Done) => return 0,
            Ok(Said::Volume(name)) => volumes.push(name),
            Ok(Said::Heartbeat(period)) => silence = Some(period * SILENT_BEATS),
            Ok(Said::Beat | Said::Other) => {}
            Err(RecvTimeoutError::Timeout) => {
                crate::output::err(
                    "engine reaper: no heartbeat from the runner; taking it for gone",
                );
                break;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    crate::output::err(format!(
        "engine reaper: the runner of session {session} is gone; sweeping"
    ));
    sweep(&engine, session, &volumes);
    0
}

/// Sweeps the session, sparing this container (the sweep retries within its own bound).
fn sweep(engine: &Engine, session: &str, volumes: &[String]) {
    // A container's hostname is its id's first 12 characters, unless set at create (ours is not).
    let own = crate::sys::host_name();
    match docker::sweep_session_sparing(engine, session, volumes, Some(own.trim())) {
        Ok(removal) => crate::output::err(format!("engine reaper: {}", removal.line())),
        Err(e) => crate::output::err(format!("engine reaper: sweep failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_protocol_is_parsed_and_anything_else_is_ignored() {
        assert_eq!(parse("done"), Said::Done);
        assert_eq!(parse("beat\r"), Said::Beat);
        assert_eq!(parse("volume abc"), Said::Volume("abc".into()));
        assert_eq!(
            parse("heartbeat 5"),
            Said::Heartbeat(Duration::from_secs(5))
        );
        for other in ["", "volume ", "heartbeat 0", "heartbeat x", "don", "\u{0}"] {
            assert_eq!(parse(other), Said::Other, "{other:?}");
        }
    }

    #[test]
    fn remote_engines_and_explicit_modes_decide() {
        assert!(reason(EngineReaperMode::Auto, "tcp://10.0.0.1:2375").is_some());
        assert!(reason(EngineReaperMode::Auto, "ssh://ci@host").is_some());
        assert!(reason(EngineReaperMode::On, "unix:///var/run/docker.sock").is_some());
        assert!(reason(EngineReaperMode::Off, "tcp://10.0.0.1:2375").is_none());
    }
}
