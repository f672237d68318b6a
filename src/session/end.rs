//! Ending a session: kill its processes, sweep its Docker resources (or keep them after a failure with
//! `--keep-on-failure`), settle its record, dismiss the reaper; and the lines that say what that did.
//!
//! The order matters: processes first (a live test could create a container after the sweep listed),
//! then the proxy, then the engine-side reaper's dismissal, then the sweep, then the temporary
//! directory, then the record (deleted only once nothing is left to find).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::orphans::Escaped;
use super::start::Started;
use super::state::record::{OwnRecord, Status};
use super::{DockerState, Session, locked};
use crate::contract::SESSION_LABEL;
use crate::docker::usage::Peak;
use crate::docker::{self, Engine, Kind, Removal, Resource};
use crate::sys::tree::Tidied;

/// How long the end of a session waits for an engine that was down at its start.
const END_RECONNECT: Duration = Duration::from_secs(5);
/// How long the end may spend removing what is left in the session's temporary directory.
const TEMP_END_BOUND: Duration = Duration::from_secs(30);
/// How long the end waits for a stale sweep that was still running when the tests started.
const STALE_END_WAIT: Duration = Duration::from_secs(2);

/// What ending the session did with its Docker resources.
#[derive(Debug)]
pub(crate) enum DockerEnd {
    /// No engine was used or reachable.
    NotSwept {
        endpoint: String,
        reason: String,
        /// Whether anything of the session reached the engine (through the proxy, or any way when
        /// there was none); when nothing did, nothing can be there, and the record goes.
        reached: bool,
    },
    Swept(Removal),
    /// `--keep-on-failure`: these were kept for inspection.
    Kept(Vec<Resource>),
    /// The engine stopped answering while the session ended.
    Failed(crate::docker::Error),
}

impl DockerEnd {
    /// True when resources of the session may still exist against the user's wishes.
    pub(crate) fn left_something(&self) -> bool {
        match self {
            DockerEnd::Swept(r) => !r.failures.is_empty(),
            DockerEnd::Failed(_) => true,
            // The engine was reached during the run and then not: what was made there is still there.
            DockerEnd::NotSwept { reached, .. } => *reached,
            DockerEnd::Kept(_) => false,
        }
    }
}

/// What ending the session did.
#[derive(Debug, Default)]
pub(crate) struct SessionEnd {
    /// Docker resources swept or kept; None when Docker played no part.
    pub docker: Option<DockerEnd>,
    /// Processes of the session still alive at the end (escaped their group), killed.
    pub escaped: Vec<Escaped>,
    /// The most containers the session had at once, and the most memory they used (sampled).
    pub peak: Option<Peak>,
    /// What the start's stale sweep did, when it was still running as the tests started.
    pub stale: Vec<String>,
    /// What became of the session's temporary directory; None when it had none.
    pub temp: Option<TempEnd>,
}

/// What the end did with the session's temporary directory.
#[derive(Debug)]
pub(crate) enum TempEnd {
    /// Removed: what was still in it (outside the units, which are tidied as each ends).
    Removed(Tidied),
    /// Kept for inspection (`--keep-on-failure`), with the failed units' directories in it.
    Kept(PathBuf),
}

impl Session {
    /// Whether the session has begun to end (its sweep may be stopping containers).
    pub(crate) fn is_ending(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    /// Ends the session: kills its processes (groups, adopted escapees, anything carrying its id), runs
    /// its end hooks, then ends what `open` started (`Started::end`). Runs once; later calls return None.
    pub(crate) fn finish(&self, keep: bool) -> Option<SessionEnd> {
        if self.finished.swap(true, Ordering::SeqCst) {
            return None;
        }
        let escaped = self.cleanup();
        let hooks = std::mem::take(&mut *locked(&self.end_hooks));
        for hook in hooks {
            hook();
        }
        let started = locked(&self.started).take();
        Some(match started {
            Some(started) => started.end(&self.id, keep, escaped),
            None => SessionEnd {
                escaped,
                ..SessionEnd::default()
            },
        })
    }
}

impl SessionEnd {
    /// Whether the end kept resources for inspection (`--keep-on-failure`).
    pub(crate) fn kept_any(&self) -> bool {
        matches!(&self.docker, Some(DockerEnd::Kept(found)) if !found.is_empty())
    }

    /// What the end has to say of Docker: what the start's stale sweep did, and the sweep or keep
    /// (`docker_lines`).
    pub(crate) fn docker_report(&self, session: &str) -> Vec<String> {
        let mut lines = self.stale.clone();
        if let Some(end) = &self.docker {
            lines.extend(docker_lines(end, session));
        }
        lines
    }
}

/// What the proxy knew when it stopped.
struct ProxyEnd {
    /// The most containers it counted at once.
    counted: u64,
    /// The anonymous volumes it recorded.
    volumes: Vec<String>,
    /// Whether anything of the session may have reached the engine.
    reached: bool,
    /// Whether every create it forwarded was answered, and every volume written down.
    settled: bool,
}

impl Started {
    /// Ends what `open` started, in order: the proxy (once the creates it forwarded are answered,
    /// else they would appear after the sweep), the engine-side reaper's dismissal (so the sweep
    /// neither counts nor keeps its container; should the runner die from here on, the host reaper
    /// still sweeps), the sweep or the keep, the record, the host reaper.
    fn end(self, session: &str, keep: bool, escaped: Vec<Escaped>) -> SessionEnd {
        let proxy = stop_proxy(self.proxy);
        let mut peak = self.usage.map(|s| s.stop());
        if let Some(reaper) = &self.engine_reaper {
            reaper.dismiss();
        }
        let docker = sweep_or_keep_at_end(self.docker, session, keep, &proxy);
        if let Some(peak) = &mut peak {
            // What was left at the end, as the sweep (or the keep) listed it, is a count too.
            let left = match &docker {
                Some(DockerEnd::Swept(r)) => r.containers as u64,
                Some(DockerEnd::Kept(found)) => {
                    found.iter().filter(|r| r.kind == Kind::Container).count() as u64
                }
                _ => 0,
            };
            peak.absorb(Peak {
                containers: proxy.counted.max(left),
                memory: 0,
            });
        }
        let temp = end_temp(self.temp, session, keep);
        let temp_kept = matches!(temp, Some(TempEnd::Kept(_)));
        settle_record(self.record, docker.as_ref(), proxy.settled, temp_kept);
        if let Some(reaper) = self.reaper {
            reaper.dismiss();
        }
        SessionEnd {
            docker,
            escaped,
            peak,
            stale: pending_stale(self.pending_stale),
            temp,
        }
    }
}

/// Stops the proxy: nobody is left to talk through it, and the sweep talks to the engine directly.
fn stop_proxy(proxy: Option<crate::docker::proxy::Proxy>) -> ProxyEnd {
    let Some(proxy) = proxy else {
        // Without a proxy, code may have reached the engine some other way.
        return ProxyEnd {
            counted: 0,
            volumes: Vec::new(),
            reached: true,
            settled: true,
        };
    };
    // The recorded anonymous volumes as the proxy holds them: a full disk may have kept them out of
    // the file, and then the record must stay too, so a later sweep can still be told.
    let volumes = proxy.recorded_volumes();
    let unwritten = proxy.unwritten();
    // A proxy that never reached the engine: nothing of the session can exist there.
    let (counted, reached) = (proxy.peak_containers(), proxy.reached_engine());
    if let Some(why) = &unwritten {
        crate::output::err(format!(
            "warning: anonymous volumes of the session could not be recorded ({why}); this run \
             sweeps them itself, and the session stays on record"
        ));
    }
    let answered = proxy.stop();
    if !answered {
        crate::output::err(
            "warning: the engine had not answered a container create when the session ended; \
             the session stays on record, and a later run's stale sweep looks for it again",
        );
    }
    ProxyEnd {
        counted,
        volumes,
        reached,
        settled: answered && unwritten.is_none(),
    }
}

/// The sweep (or the keep) of the session's resources, on the engine it had, or one back by now.
fn sweep_or_keep_at_end(
    docker: DockerState,
    session: &str,
    keep: bool,
    proxy: &ProxyEnd,
) -> Option<DockerEnd> {
    match docker {
        DockerState::Unused => None,
        // An engine that was never configured is not worth a word (projects without Docker).
        DockerState::Down {
            expected: false, ..
        } => None,
        // Nothing of the session reached it (the proxy saw no call get through): nothing can be there,
        // and there is nothing to wait for.
        DockerState::Down {
            endpoint, reason, ..
        } if !proxy.reached => Some(DockerEnd::NotSwept {
            endpoint,
            reason,
            reached: false,
        }),
        DockerState::Down {
            endpoint, reason, ..
        } => match docker::connect_within(END_RECONNECT) {
            // It was down at the start; it may be back now.
            docker::Connection::Up(engine) => {
                Some(sweep_or_keep(&engine, session, keep, &proxy.volumes))
            }
            docker::Connection::Down { .. } => Some(DockerEnd::NotSwept {
                reached: proxy.reached && docker::engine::usable(&endpoint),
                endpoint,
                reason,
            }),
        },
        DockerState::Up(engine) => Some(sweep_or_keep(&engine, session, keep, &proxy.volumes)),
    }
}

/// What a stale sweep still running when the tests started did, waited for a little; it is left to
/// the next run when it is still not done (it sweeps only dead sessions, and is bounded itself).
fn pending_stale(pending: Option<std::sync::mpsc::Receiver<Vec<String>>>) -> Vec<String> {
    match pending.map(|rx| rx.recv_timeout(STALE_END_WAIT)) {
        None => Vec::new(),
        Some(Ok(lines)) => lines,
        Some(Err(_)) => vec![
            "note: the stale sweep of dead sessions did not finish (the engine answers slowly); \
             the next run goes on with it"
                .to_string(),
        ],
    }
}

fn sweep_or_keep(engine: &Engine, session: &str, keep: bool, in_memory: &[String]) -> DockerEnd {
    let mut recorded = super::state::anonymous_volumes_of(session);
    for name in in_memory {
        if !recorded.contains(name) {
            recorded.push(name.clone());
        }
    }
    let result = if keep {
        docker::list_session(engine, session, &recorded).map(DockerEnd::Kept)
    } else {
        docker::sweep_session(engine, session, &recorded).map(DockerEnd::Swept)
    };
    result.unwrap_or_else(DockerEnd::Failed)
}

/// The session's temporary directory at its end: kept for inspection when the session is kept and
/// something is in it (the failed units' directories), else removed, with what was still there.
fn end_temp(temp: Option<PathBuf>, session: &str, keep: bool) -> Option<TempEnd> {
    let temp = temp?;
    if keep && std::fs::read_dir(&temp).is_ok_and(|mut d| d.next().is_some()) {
        return Some(TempEnd::Kept(temp));
    }
    Some(TempEnd::Removed(super::state::remove_session_temp(
        session,
        &temp,
        TEMP_END_BOUND,
    )))
}

/// Kept sessions (containers or a temporary directory kept) stay on record as kept; fully swept ones
/// are forgotten, unless a create may still complete (`settled` false); anything else stays
/// "finished" so the next run's stale sweep retries it.
fn settle_record(mut record: OwnRecord, end: Option<&DockerEnd>, settled: bool, temp_kept: bool) {
    let result = match end {
        _ if temp_kept => record.set_status(Status::Kept).map(|_| drop(record)),
        Some(DockerEnd::Kept(found)) if !found.is_empty() => {
            record.set_status(Status::Kept).map(|_| drop(record))
        }
        Some(DockerEnd::Swept(r)) if !r.failures.is_empty() => {
            record.set_status(Status::Finished).map(|_| drop(record))
        }
        Some(DockerEnd::NotSwept { reached: false, .. }) if settled => record.remove(),
        Some(DockerEnd::Failed(_)) | Some(DockerEnd::NotSwept { .. }) => {
            record.set_status(Status::Finished).map(|_| drop(record))
        }
        _ if !settled => record.set_status(Status::Finished).map(|_| drop(record)),
        _ => record.remove(),
    };
    if let Err(e) = result {
        crate::output::err(format!("warning: failed to update the session record: {e}"));
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
            && (r.removed_any() || !r.failures.is_empty())
        {
            // Reached on an error's way out: the error is printed by `main` after this drop, and the
            // sweep it caused belongs after it. While panicking there is no later: say it now.
            if std::thread::panicking() {
                crate::output::err(r.line());
            } else {
                locked(&AFTER_ERROR).push(r.line());
            }
        }
    }
}

/// Lines of a session that ended on an error, printed after that error (`after_error`).
static AFTER_ERROR: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// What a session that ended on an error has to add after the error's message.
pub(crate) fn after_error() -> Vec<String> {
    std::mem::take(&mut *locked(&AFTER_ERROR))
}

/// The Docker part of the summary: the sweep line and what could not be removed, or the kept table with
/// ready-to-paste commands, or why nothing was swept.
pub(crate) fn docker_lines(end: &DockerEnd, session: &str) -> Vec<String> {
    let mut out = Vec::new();
    match end {
        DockerEnd::Swept(r) => {
            if r.removed_any() || !r.failures.is_empty() {
                out.push(format!("\n{}", r.line()));
            }
            for f in &r.failures {
                out.push(format!(
                    "    could not remove {} {}: {}",
                    f.resource.kind.word(),
                    f.resource.name,
                    f.error
                ));
                out.push(format!(
                    "        retry: {}",
                    docker::sweep::retry_command(f)
                ));
            }
            if !r.failures.is_empty() {
                out.push(format!(
                    "    or later: cargo cleantest sweep --session {session}"
                ));
            }
        }
        DockerEnd::Kept(found) if !found.is_empty() => {
            out.push(format!("\nkept for inspection (session {session}):"));
            out.push(format!(
                "    {:<28} {:<28} {:<10} PORTS",
                "CONTAINER", "IMAGE", "STATE"
            ));
            let containers: Vec<_> = found.iter().filter(|r| r.kind == Kind::Container).collect();
            for c in &containers {
                out.push(format!(
                    "    {:<28} {:<28} {:<10} {}",
                    c.name, c.image, c.state, c.ports
                ));
            }
            for r in found.iter().filter(|r| r.kind != Kind::Container) {
                out.push(format!("    {} {}", r.kind.word(), r.name));
            }
            for c in &containers {
                out.push(format!(
                    "  inspect:  docker logs {}    docker exec -it {} sh",
                    c.name, c.name
                ));
            }
            out.push(format!(
                "  list:     docker ps -a --filter label={}={session}",
                SESSION_LABEL
            ));
            out.push(format!(
                "  clean up: cargo cleantest sweep --session {session}"
            ));
        }
        DockerEnd::Kept(_) => {}
        DockerEnd::NotSwept {
            endpoint,
            reason,
            reached: false,
        } => {
            out.push(format!(
                "\nno Docker engine answered at {endpoint} ({reason}) during the run: nothing can \
                 have been created there, so there is nothing to sweep"
            ));
        }
        DockerEnd::NotSwept {
            endpoint, reason, ..
        } => {
            out.push(format!(
                "\nno Docker engine answers at {endpoint} ({reason}): nothing was swept; the session \
                 stays on record, and the next run's stale sweep sweeps it once the engine is back"
            ));
            out.push(format!(
                "    or now, once it is back: cargo cleantest sweep --session {session}"
            ));
        }
        DockerEnd::Failed(e) => {
            out.push(format!(
                "\nfailed to sweep the session's Docker resources: {e}"
            ));
            out.push(format!(
                "    retry: cargo cleantest sweep --session {session}"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::sweep::Removal;

    #[test]
    fn a_sweep_that_removed_only_an_image_says_so() {
        let images_only = DockerEnd::Swept(Removal {
            images: 1,
            ..Removal::default()
        });
        let lines = docker_lines(&images_only, "s1");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("swept 0 containers, 0 networks, 0 volumes, 1 image"));
        assert!(docker_lines(&DockerEnd::Swept(Removal::default()), "s1").is_empty());
    }
}
