//! Opening a session, for test runs, `exec` and the session host alike: its record in the state
//! directory, the reaper, the Docker engine, the sweep of this host's dead sessions, the engine-side
//! reaper, the proxy (all of it one `Started` value the session holds), and the environment lock.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use super::engine_reaper::{self, EngineReaper};
use super::lock::{self, EnvLock};
use super::reaper::ReaperHandle;
use super::state::{self, record::OwnRecord};
use super::{DockerState, Session, orphans, run_id, stale};
use crate::cli::{EngineReaperMode, SessionOpts, human_bytes};
use crate::config::Settings;
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
    /// Whether the session gives its processes a temporary directory of its own (`tmpdir`).
    pub tmpdir: bool,
}

impl<'a> Profile<'a> {
    /// The session's part of the loaded settings.
    pub(crate) fn of(settings: &'a Settings) -> Profile<'a> {
        Profile {
            lock: settings.lock.as_deref(),
            proxy: settings.proxy,
            engine_reaper: settings.engine_reaper,
            guard: &settings.guard,
            proxy_policy: &settings.proxy_policy,
            tmpdir: settings.tmpdir,
        }
    }
}

/// What opening a session started, whole: the session holds it from `open` until `finish` takes it
/// and ends it (`end`). Each part that may be missing says why in its type's place: the reaper could
/// not be spawned, no engine answers, the proxy is off.
pub(crate) struct Started {
    /// The CI run the session is a shard of (`run_id`).
    pub(super) run: Option<String>,
    /// The labels of its resources besides `cleantest.session` (its owner's and its run's).
    pub(super) labels: Vec<(String, String)>,
    /// Its record in the state directory, whose lock it holds for its whole life.
    pub(super) record: OwnRecord,
    /// The host reaper, which cleans up if the runner dies.
    pub(super) reaper: Option<ReaperHandle>,
    /// The engine-side reaper, dismissed when the session ends.
    pub(super) engine_reaper: Option<Arc<EngineReaper>>,
    /// The engine the session sweeps at the end.
    pub(super) docker: DockerState,
    /// The labelling proxy the session's Docker traffic goes through.
    pub(super) proxy: Option<Proxy>,
    /// Samples the session's containers for the end-of-run peaks.
    pub(super) usage: Option<Sampler>,
    /// A stale sweep still running when the tests started: the end says what it did.
    pub(super) pending_stale: Option<mpsc::Receiver<Vec<String>>>,
    /// The session's temporary directory, `TMPDIR` of its processes (`tmpdir = false`: none).
    pub(super) temp: Option<PathBuf>,
}

/// Opens `session` for running things in `workspace`: its record, the host reaper, the engine, the
/// sweep of this host's dead sessions, the engine-side reaper and the proxy, handed to the session
/// whole; then the environment lock, held until the returned value drops. Whatever was started before
/// a failure is handed over all the same, so that the session's end cleans it up.
pub(crate) fn open(
    session: &Arc<Session>,
    opts: &SessionOpts,
    profile: Profile<'_>,
    workspace: &Path,
    connecting: docker::Connecting,
) -> Result<Option<EnvLock>, Error> {
    let run = run_id::from_env()?;
    let endpoint = docker::engine::endpoint();
    if let Some(why) = docker::context::unsupported(&endpoint) {
        return Err(Error::Usage(why));
    }
    let state = state::state_dir().map_err(Error::State)?;
    let temp = (profile.tmpdir && !opts.no_tmpdir).then(|| state::session_temp_path(session.id()));
    let record = OwnRecord::create(&state, session.id(), workspace, &endpoint, temp.as_deref())
        .map_err(Error::State)?;
    let temp = temp.and_then(|path| match state::create_session_temp(&path) {
        Ok(()) => Some(path),
        Err(e) => {
            crate::output::err(format!(
                "warning: failed to create the session's temporary directory {} ({e}); tests keep \
                 the runner's TMPDIR",
                path.display()
            ));
            None
        }
    });
    if !opts.no_stale_sweep {
        stale::remove_dead_temps(&state);
    }
    watch_escapes(session);
    // Held until the session holds the reaper, so that its pid is never taken for an orphan's.
    let spawning = session.spawning();
    let log = state::session_dir(&state, session.id()).join(REAPER_LOG_FILE);
    let reaper = ReaperHandle::spawn(session.id(), &log)
        .map_err(|e| {
            crate::output::err(format!(
                "warning: failed to start the reaper ({e}); a killed runner will leave a stale session"
            ))
        })
        .ok();
    let docker = connected(connecting.wait());
    let mut started = Started {
        labels: super::labels_for(run.as_deref()),
        run,
        record,
        reaper,
        engine_reaper: None,
        docker,
        proxy: None,
        usage: None,
        pending_stale: None,
        temp,
    };
    let engine = start_on_engine(session, opts, profile, &endpoint, &state, &mut started);
    *super::locked(&session.started) = Some(started);
    drop(spawning);
    engine?;
    if opts.no_lock {
        return Ok(None);
    }
    let name = lock::lock_name(opts.lock.as_deref().or(profile.lock), workspace);
    lock::acquire(&name, session.id(), opts.lock_timeout).map(Some)
}

/// Orphaned descendants (setsid, double fork) are re-parented to the runner, where they can be found;
/// where it cannot be their subreaper, process-tree snapshots remember where each process came from
/// (`lineage`). Said once, at start: what this platform (or this kernel's settings) cannot promise.
fn watch_escapes(session: &Session) {
    let subreaper_off = std::env::var(crate::contract::ENV_SUBREAPER).is_ok_and(|v| v == "off");
    if subreaper_off || !orphans::become_subreaper() || !crate::sys::capabilities().subreaper {
        session.watch_lineage();
        crate::output::err(
            "warning: cannot become a child subreaper; a process that leaves its group, outlives \
             its parent before the next snapshot of the process tree and clears its environment may \
             survive (snapshots and the environment scan find the rest)",
        );
    }
}

/// The engine, as it answered (or did not).
fn connected(connection: Connection) -> DockerState {
    match connection {
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
                crate::output::err(format!(
                    "warning: the Docker engine at {endpoint} does not answer ({reason}); nothing more \
                     is asked of it until the run ends, when the sweep tries again"
                ));
            } else if expected {
                crate::output::err(format!(
                    "warning: no Docker engine answers at {endpoint} ({reason}); \
                     the sweep will try again when the run ends"
                ));
            }
            DockerState::Down {
                endpoint,
                reason,
                expected,
            }
        }
    }
}

/// What the session starts on its engine: the free-memory check, the stale sweep, the engine-side
/// reaper, the proxy and the usage sampler, each put in `started` as it starts.
fn start_on_engine(
    session: &Session,
    opts: &SessionOpts,
    profile: Profile<'_>,
    endpoint: &str,
    state: &Path,
    started: &mut Started,
) -> Result<(), Error> {
    let docker = started.docker.clone();
    check_free_memory(profile.guard, &docker)?;
    if let (DockerState::Up(engine), false) = (&docker, opts.no_stale_sweep) {
        match stale::start_in_background(engine, state) {
            stale::Started::Done(lines) => lines.iter().for_each(crate::output::err),
            stale::Started::Pending(pending) => started.pending_stale = Some(pending),
        }
    }
    let mode = opts
        .engine_reaper
        .or(profile.engine_reaper)
        .unwrap_or_default();
    let sink = start_engine_reaper(session, started, mode, endpoint)?;
    // The proxy labels what unmodified code creates; it is pointless where no engine is configured.
    let engine_max = match &docker {
        DockerState::Up(engine) => Some(engine.api_version.clone()),
        DockerState::Down { expected: true, .. } => Some(None),
        _ => None,
    };
    if let (Some(engine_max), false, true) = (engine_max, opts.no_proxy, profile.proxy) {
        let socket =
            state::socket_path(state, session.id(), PROXY_SOCKET_FILE).map_err(Error::State)?;
        match Proxy::start(
            &socket,
            session.id(),
            started.labels.clone(),
            engine_max,
            sink,
            profile.guard.clone(),
            profile.proxy_policy.clone(),
        ) {
            Ok(proxy) => started.proxy = Some(proxy),
            // An engine that is down was warned about above, with the same bad address.
            Err(_) if !matches!(docker, DockerState::Up(_)) => {}
            Err(e) => crate::output::err(format!(
                "warning: failed to start the Docker proxy ({e}); only labelled resources will be swept"
            )),
        }
    }
    if let DockerState::Up(engine) = &docker {
        started.usage = Some(Sampler::start(engine, docker::session_filter(session.id())));
    }
    Ok(())
}

/// Starts the engine-side reaper when `mode` (and, for `auto`, the runner's situation) asks for one.
/// Asked for explicitly, failing to start it is an error; on `auto`, a warning. Returns what the proxy
/// tells it of anonymous volumes.
fn start_engine_reaper(
    session: &Session,
    started: &mut Started,
    mode: EngineReaperMode,
    endpoint: &str,
) -> Result<Option<VolumeSink>, Error> {
    let Some(why) = engine_reaper::reason(mode, endpoint) else {
        return Ok(None);
    };
    let docker = &started.docker;
    let reaper = match docker {
        DockerState::Up(engine) => {
            EngineReaper::start(engine, endpoint, session.id(), started.labels.clone())
        }
        DockerState::Down { reason, .. } => Err(format!("no engine answers ({reason})")),
        DockerState::Unused => Err("no engine is in use".to_string()),
    };
    match reaper {
        Ok(reaper) => {
            started.engine_reaper = Some(reaper.clone());
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
            crate::output::err(format!(
                "warning: failed to start the engine-side reaper ({why}): {reason}; \
                 if the runner dies with its host reaper, the session's resources stay"
            ));
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
                crate::output::err(
                    "warning: cannot read the host's available memory; min-free-memory not checked",
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
    crate::output::err(format!("warning: {what}"));
    Ok(())
}

/// The memory available on the host, in bytes (`sys::available_memory`).
fn available_memory() -> Option<u64> {
    crate::sys::available_memory()
}
