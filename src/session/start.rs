//! Starting a session, for test runs and `exec` alike: its record in the state directory, the reaper,
//! the Docker engine, the sweep of this host's dead sessions, and the environment lock.

use std::path::Path;
use std::sync::Arc;

use super::engine_reaper::{self, EngineReaper};
use super::lock::{self, EnvLock};
use super::reaper::ReaperHandle;
use super::state::{self, record::OwnRecord};
use super::{DockerState, Session, orphans, run_id, stale};
use crate::cli::{EngineReaperMode, SessionOpts, human_bytes};
use crate::config::guard::Guard;
use crate::config::proxy::ProxyPolicy;
use crate::contract::{PROXY_SOCKET_FILE, REAPER_LOG_FILE};
use crate::docker::proxy::{Proxy, VolumeSink};
use crate::docker::usage::Sampler;
use crate::docker::{self, Connection};
use crate::errors::Error;

/// What the config profile says about the session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Profile<'a> {
    pub lock: Option<&'a str>,
    pub proxy: bool,
    /// The profile's `engine-reaper` key (the command line's flag wins).
    pub engine_reaper: Option<EngineReaperMode>,
    /// The resource guard: the proxy applies its limits to container creates.
    pub guard: &'a Guard,
    /// What the proxy forwards beyond its endpoint table.
    pub proxy_policy: &'a ProxyPolicy,
}

/// Prepares `session` for running things in `workspace`. The returned lock is held until dropped.
pub(crate) fn start(
    session: &Arc<Session>,
    opts: &SessionOpts,
    profile: Profile<'_>,
    workspace: &Path,
) -> Result<Option<EnvLock>, Error> {
    session.set_run_id(run_id::from_env()?);
    let endpoint = docker::engine::endpoint();
    if let Some(why) = docker::context::unsupported(&endpoint) {
        return Err(Error::Usage(why));
    }
    let state = state::state_dir().map_err(Error::State)?;
    let record =
        OwnRecord::create(&state, session.id(), workspace, &endpoint).map_err(Error::State)?;
    session.set_record(record);
    // Orphaned descendants (setsid, double fork) are re-parented to us, where they can be found.
    // Said once, at start: what this platform (or this kernel's settings) cannot promise.
    let subreaper_off = std::env::var(crate::contract::ENV_SUBREAPER).is_ok_and(|v| v == "off");
    if subreaper_off || !orphans::become_subreaper() || !crate::sys::capabilities().subreaper {
        // Then process-tree snapshots remember where each process came from (`lineage`).
        session.watch_lineage();
        eprintln!(
            "warning: cannot become a child subreaper; a process that leaves its group, outlives \
             its parent before the next snapshot of the process tree and clears its environment may \
             survive (snapshots and the environment scan find the rest)"
        );
    }
    let log = state::session_dir(&state, session.id()).join(REAPER_LOG_FILE);
    let spawning = session.spawning();
    match ReaperHandle::spawn(session.id(), &log) {
        Ok(reaper) => session.set_reaper(reaper),
        Err(e) => eprintln!(
            "warning: failed to start the reaper ({e}); a killed runner will leave a stale session"
        ),
    }
    drop(spawning);
    let docker = match docker::connect() {
        Connection::Up(engine) => DockerState::Up(engine),
        Connection::Down {
            endpoint,
            expected,
            reason,
            wedged,
        } => {
            // No noise for projects that never touch Docker: only a configured engine (DOCKER_HOST, or a
            // socket that exists) is worth a word. Its sweep is tried again at the end.
            if wedged {
                eprintln!(
                    "warning: the Docker engine at {endpoint} does not answer ({reason}); nothing more \
                     is asked of it until the run ends, when the sweep tries again"
                );
            } else if expected {
                eprintln!(
                    "warning: no Docker engine answers at {endpoint} ({reason}); \
                     the sweep will try again when the run ends"
                );
            }
            DockerState::Down {
                endpoint,
                reason,
                expected,
            }
        }
    };
    check_free_memory(profile.guard, &docker)?;
    if let (DockerState::Up(engine), false) = (&docker, opts.no_stale_sweep) {
        match stale::start_in_background(engine, &state) {
            stale::Started::Done(lines) => lines.iter().for_each(|line| eprintln!("{line}")),
            stale::Started::Pending(pending) => session.set_pending_stale(pending),
        }
    }
    let mode = opts
        .engine_reaper
        .or(profile.engine_reaper)
        .unwrap_or_default();
    let sink = start_engine_reaper(session, &docker, mode, &endpoint)?;
    // The proxy labels what unmodified code creates; it is pointless where no engine is configured.
    let engine_max = match &docker {
        DockerState::Up(engine) => Some(engine.api_version.clone()),
        DockerState::Down { expected: true, .. } => Some(None),
        _ => None,
    };
    if let (Some(engine_max), false, true) = (engine_max, opts.no_proxy, profile.proxy) {
        let socket =
            state::socket_path(&state, session.id(), PROXY_SOCKET_FILE).map_err(Error::State)?;
        match Proxy::start(
            &socket,
            session.id(),
            session.labels(),
            engine_max,
            sink,
            profile.guard.clone(),
            profile.proxy_policy.clone(),
        ) {
            Ok(proxy) => session.set_proxy(proxy),
            // An engine that is down was warned about above, with the same bad address.
            Err(_) if !matches!(docker, DockerState::Up(_)) => {}
            Err(e) => eprintln!(
                "warning: failed to start the Docker proxy ({e}); only labelled resources will be swept"
            ),
        }
    }
    if let DockerState::Up(engine) = &docker {
        session.set_sampler(Sampler::start(engine, docker::session_filter(session.id())));
    }
    session.set_docker(docker);
    if opts.no_lock {
        return Ok(None);
    }
    let name = lock::lock_name(opts.lock.as_deref().or(profile.lock), workspace);
    lock::acquire(&name, session.id(), opts.lock_timeout).map(Some)
}

/// Starts the engine-side reaper when `mode` (and, for `auto`, the runner's situation) asks for one.
/// Asked for explicitly, failing to start it is an error; on `auto`, a warning. Returns what the proxy
/// tells it of anonymous volumes.
fn start_engine_reaper(
    session: &Arc<Session>,
    docker: &DockerState,
    mode: EngineReaperMode,
    endpoint: &str,
) -> Result<Option<VolumeSink>, Error> {
    let Some(why) = engine_reaper::reason(mode, endpoint) else {
        return Ok(None);
    };
    let started = match docker {
        DockerState::Up(engine) => {
            EngineReaper::start(engine, endpoint, session.id(), session.labels())
        }
        DockerState::Down { reason, .. } => Err(format!("no engine answers ({reason})")),
        DockerState::Unused => Err("no engine is in use".to_string()),
    };
    match started {
        Ok(reaper) => {
            session.set_engine_reaper(reaper.clone());
            Ok(Some(VolumeSink(Arc::new(move |names| {
                reaper.note_volumes(names)
            }))))
        }
        Err(reason) if mode == EngineReaperMode::On => Err(Error::EngineReaper {
            why: why.to_string(),
            reason,
        }),
        // Without an engine there is nothing for it to sweep (and the engine's absence was warned about).
        Err(_) if !matches!(docker, DockerState::Up(_)) => Ok(None),
        Err(reason) => {
            eprintln!(
                "warning: failed to start the engine-side reaper ({why}): {reason}; \
                 if the runner dies with its host reaper, the session's resources stay"
            );
            Ok(None)
        }
    }
}

/// `min-free-memory`: at start, a warning (an error with `--require-free-memory`) when the host has
/// less memory available than asked for. A test run that starts short of memory is what took hosts down.
/// An engine in a VM is asked instead: its containers get the VM's memory, not this machine's, and the
/// engine says only how much the VM has in all, so that is what is held against the limit.
fn check_free_memory(guard: &Guard, docker: &DockerState) -> Result<(), Error> {
    let Some(min) = &guard.min_free_memory else {
        return Ok(());
    };
    let vm = match docker {
        DockerState::Up(engine) => engine.vm.zip(engine.memory_total),
        _ => None,
    };
    let (available, what_has) = match vm {
        Some((vm, total)) => (
            total,
            format!(
                "the engine's VM ({vm}) has {} of memory in all",
                human_bytes(total)
            ),
        ),
        None => match available_memory() {
            Some(available) => (
                available,
                format!(
                    "the host has {} of memory available",
                    human_bytes(available)
                ),
            ),
            None => {
                eprintln!(
                    "warning: cannot read the host's available memory; min-free-memory not checked"
                );
                return Ok(());
            }
        },
    };
    if available >= min.value {
        return Ok(());
    }
    let what = format!(
        "{what_has}, less than {} ({})",
        human_bytes(min.value),
        min.source
    );
    if guard.require_free_memory {
        return Err(Error::Usage(format!(
            "start the session: {what}; free memory, lower the limit, or drop --require-free-memory"
        )));
    }
    eprintln!("warning: {what}");
    Ok(())
}

/// The memory available on the host, in bytes (`sys::available_memory`).
fn available_memory() -> Option<u64> {
    crate::sys::available_memory()
}
