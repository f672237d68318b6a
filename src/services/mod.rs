//! Session services: the containers a suite needs (postgres, redis, nats), declared in
//! `[services.NAME]`, started once per session on its start path while cargo builds, each after what
//! it depends on and independent ones in parallel, gated by their readiness checks, and shared by every
//! process of the session through published ports and the environment. They carry the session's labels,
//! so the session's sweep (or any reaper's) removes them with everything else: nothing here tears down.
//!
//! - `env`: the names and values every process of the session gets.
//! - `ready`: the readiness checks, polled with backoff until the service's `ready-timeout`.
//! - `start`: the session network, and every service started in dependency order.
//! - `monitor`: a service that stops during the run, reported at once and remembered for the report.
//! - `control`: the control socket, where test code asks for shared containers (`cleantest::Service`).
//!
//! This layer uses `docker` and the session's id and owner; it never imports `run` or `commands`.

mod control;
mod control_request;
mod control_wire;
mod env;
mod isolate;
mod monitor;
mod peer;
mod ready;
mod start;

pub(crate) use env::{env_name, env_of};
pub(crate) use isolate::{Database, Databases, IsolateError, Lease, ProcessDatabases, settle};
pub(crate) use monitor::{Death, Monitor};
pub(crate) use start::start_all;

use std::sync::Arc;

use crate::config::services::ServiceSpec;
use crate::contract::{CONTROL_SOCKET_FILE, ENV_CONTROL, SESSION_LABEL};
use crate::errors::Error;
use crate::session::{DockerState, Session, docker_lines, engine_reaper, state};

/// `start_for`; when a service fails and `keep` (`--keep-on-failure`), the session ends at once keeping
/// its resources, the failed service's container among them, and says how to inspect them.
pub(crate) fn start_or_keep(
    session: &Arc<Session>,
    specs: &[ServiceSpec],
    keep: bool,
) -> Result<Started, Error> {
    let started = start_for(session, specs);
    if let (Err(_), true) = (&started, keep)
        && let Some(end) = session.finish(true)
        && let Some(docker) = &end.docker
    {
        for line in docker_lines(docker, session.id()) {
            crate::output::err(line);
        }
    }
    started
}

/// The session's services, started: who watches them, the databases of those that isolate, and what
/// they tell every process the run starts from now on (`CLEANTEST_SERVICE_*`, their exports, the
/// control socket).
#[derive(Clone, Default)]
pub(crate) struct Started {
    pub monitor: Monitor,
    pub databases: Arc<Databases>,
    pub env: Vec<(String, String)>,
    /// Each service's rendered `export`s, by service: what a kept service is reached by.
    pub exports: Vec<(String, Vec<(String, String)>)>,
}

impl Started {
    /// Under a kept table (`--keep-on-failure`): how to reach each kept service, its exports.
    pub(crate) fn kept_lines(&self) -> Vec<String> {
        self.exports
            .iter()
            .flat_map(|(service, exports)| {
                exports
                    .iter()
                    .map(move |(key, value)| format!("  connect:  {service}: {key}={value}"))
            })
            .collect()
    }
}

/// Starts the session's services on its engine, then watches them; prepares the databases of those
/// that isolate; and serves the control socket, where test code asks for more (`cleantest::Service`,
/// `cleantest::database`). Says on stderr what is up, and how long it took.
pub(crate) fn start_for(session: &Arc<Session>, specs: &[ServiceSpec]) -> Result<Started, Error> {
    let started = std::time::Instant::now();
    let context = context(session, started, None, Vec::new());
    let (engine, local, labels, monitor) = (
        &context.engine,
        context.local,
        &context.labels,
        &context.monitor,
    );
    let mut env = Vec::new();
    let mut exports = Vec::new();
    if !specs.is_empty() {
        // Why there is none, as the session's start found it: where the client looked, and what was
        // there.
        let on = engine.as_ref().ok_or_else(|| match session.docker() {
            DockerState::Down {
                endpoint, reason, ..
            } => format!("at {endpoint}: {reason}"),
            _ => format!("at {}", crate::docker::engine::endpoint()),
        });
        let running = start_all(on, session.id(), labels, specs, local, &|| {
            session.interrupted_by().is_some()
        })?;
        env.extend(running.iter().flat_map(env_of));
        exports.extend(
            running
                .iter()
                .filter(|r| !r.exports.is_empty())
                .map(|r| (r.name.clone(), r.exports.clone())),
        );
        let names: Vec<String> = running
            .iter()
            .map(|r| {
                let ports: Vec<String> = r.ports.iter().map(|(c, h)| format!("{h}->{c}")).collect();
                if ports.is_empty() {
                    r.name.clone()
                } else {
                    format!("{} ({})", r.name, ports.join(", "))
                }
            })
            .collect();
        crate::output::err(format!(
            "{:>12} services {} in {:.2}s",
            "Ready",
            names.join(", "),
            started.elapsed().as_secs_f64()
        ));
        for service in &running {
            monitor.add(service);
        }
        if let Some(engine) = engine {
            isolate_all(engine, specs, &running, &context.databases)?;
        }
    }
    let mut started = Started {
        monitor: monitor.clone(),
        databases: context.databases.clone(),
        env: Vec::new(),
        exports,
    };
    let served = state::state_dir().and_then(|dir| {
        let path = state::socket_path(&dir, session.id(), CONTROL_SOCKET_FILE)?;
        control::serve(&path, context)
    });
    match served {
        Ok(control) => {
            env.push((ENV_CONTROL.to_string(), control.path.display().to_string()));
            let databases = started.databases.clone();
            session.on_end(Box::new(move || databases.close()));
            // Before the session's sweep lists: no start may complete after it.
            session.on_end(Box::new(move || control.stop()));
        }
        Err(e) => crate::output::err(format!(
            "warning: failed to serve the control socket ({e}); cleantest::Service cannot start services"
        )),
    }
    started.env = env;
    Ok(started)
}

/// How many databases of a service are kept ready to start with: a test's for each CPU and a process's
/// for each CPU (binaries run side by side), and two more; the pool grows when tests find it empty.
pub(crate) fn pool_ahead() -> usize {
    2 * std::thread::available_parallelism().map_or(1, |n| n.get()) + 2
}

/// Prepares the services of `specs` that isolate (`running` in the same order): a failure stops the
/// run before any test, with what the migration said.
fn isolate_all(
    engine: &crate::docker::Engine,
    specs: &[ServiceSpec],
    running: &[Running],
    databases: &Databases,
) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let mut isolating = Vec::new();
    for spec in specs.iter().filter(|s| s.isolate.is_some()) {
        let Some(service) = running.iter().find(|r| r.name == spec.name) else {
            continue;
        };
        databases
            .add(engine, spec, service, pool_ahead())
            .map_err(|why| isolation_failed(spec, why.to_string()))?;
        isolating.push(spec.name.as_str());
    }
    if !isolating.is_empty() {
        crate::output::err(format!(
            "{:>12} databases of {} in {:.2}s",
            "Prepared",
            isolating.join(", "),
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

/// The start's error for a service whose isolation could not be prepared.
pub(crate) fn isolation_failed(spec: &ServiceSpec, why: String) -> Error {
    let (reason, log) = match why.split_once('\n') {
        Some((first, rest)) => (first.to_string(), indent(rest)),
        None => (why, String::new()),
    };
    Error::Service {
        name: spec.name.clone(),
        reason: format!("preparing its databases failed: {reason}"),
        log,
        help:
            "fix the migration (its output is above), or run without isolation: remove `isolate` \
               from the service (docs/services.md)"
                .into(),
    }
}

/// Output lines under the error, as a failed service's log is shown.
fn indent(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("\n    | {l}"))
        .collect()
}

/// Serves the control socket of a session host (`cargo-cleantest __host`): for the descendants of
/// `key` (the cargo process), code-declared services and the config's `specs`, each started on the
/// first request for it. Returns the socket's path; it stops before the session's sweep lists.
pub(crate) fn serve_host(
    session: &Arc<Session>,
    specs: Vec<ServiceSpec>,
    key: i32,
) -> std::io::Result<std::path::PathBuf> {
    let context = context(session, std::time::Instant::now(), Some(key), specs);
    let dir = state::state_dir()?;
    let path = state::socket_path(&dir, session.id(), CONTROL_SOCKET_FILE)?;
    let databases = context.databases.clone();
    let control = control::serve(&path, context)?;
    let path = control.path.clone();
    session.on_end(Box::new(move || databases.close()));
    session.on_end(Box::new(move || control.stop()));
    Ok(path)
}

/// What the control socket serves with: the session's engine, labels and monitor (timed from
/// `started`), whether the engine is local, and a host's key process and config services.
fn context(
    session: &Arc<Session>,
    started: std::time::Instant,
    key: Option<i32>,
    config: Vec<ServiceSpec>,
) -> control::Context {
    let engine = match session.docker() {
        DockerState::Up(engine) => Some(engine),
        _ => None,
    };
    // The container's pid is one of this kernel's only with a local engine on this kernel (not a VM's),
    // seen from the host's PID namespace.
    let local = crate::docker::engine::endpoint().starts_with("unix://")
        && crate::sys::capabilities().container_pids_visible
        && !engine_reaper::in_child_pid_namespace();
    let ending: Arc<dyn Fn() -> bool + Send + Sync> = {
        let session = session.clone();
        Arc::new(move || session.is_ending() || session.interrupted_by().is_some())
    };
    let monitor = match &engine {
        Some(engine) => {
            let session = session.clone();
            Monitor::new(engine, started, Arc::new(move || session.is_ending()))
        }
        None => Monitor::default(),
    };
    let mut labels = vec![(SESSION_LABEL.to_string(), session.id().to_string())];
    labels.extend(session.labels());
    control::Context {
        engine,
        session: session.id().to_string(),
        labels,
        local,
        monitor,
        ending,
        network: std::sync::Mutex::new(()),
        key,
        config,
        databases: Arc::default(),
    }
}

/// A service that is up and ready.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub name: String,
    pub id: String,
    /// Where the tests reach it.
    pub host: String,
    /// (container port, published host port).
    pub ports: Vec<(u16, u16)>,
    /// The service's `export`s, rendered; those that name `{database}` only for a reader with one
    /// (`exports_for`).
    pub exports: Vec<(String, String)>,
    /// The `export`s as written.
    pub export: Vec<(String, crate::config::template::Template)>,
}

impl Running {
    pub(crate) fn new(
        spec: &ServiceSpec,
        id: String,
        host: String,
        ports: Vec<(u16, u16)>,
    ) -> Self {
        let mut running = Running {
            name: spec.name.clone(),
            id,
            host,
            ports,
            exports: Vec::new(),
            export: spec.export.clone(),
        };
        running.exports = running.exports_for(None);
        running
    }

    /// Every export rendered for a reader of `database` (None: only those that name none).
    pub(crate) fn exports_for(&self, database: Option<&str>) -> Vec<(String, String)> {
        self.export
            .iter()
            .filter(|(_, template)| database.is_some() || !template.needs_database())
            .map(|(key, template)| {
                let port = |p| self.ports.iter().find(|(c, _)| *c == p).map(|(_, h)| *h);
                let value = template.render(&self.host, &self.name, port, database);
                (key.clone(), value)
            })
            .collect()
    }
}

/// Why a service is not up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    NoEngine(String),
    Network(String),
    Image(String),
    Start(String),
    Exited {
        code: i64,
        oom_killed: bool,
    },
    Gone,
    NotReady {
        check: String,
        timeout: String,
        /// What the last try of the check said (an exec's exit code and output tail).
        last: Option<String>,
    },
    /// A check that can never pass: the engine could not run its command (126/127) on every try.
    Unrunnable {
        check: String,
        why: String,
    },
    Dependency(String),
    /// Another service failed, so this one stopped waiting.
    Abandoned,
}

impl Failure {
    /// What a user can do about it; `origin` is the compose file the service comes from, if any.
    pub(crate) fn help(&self, origin: Option<&std::path::Path>) -> String {
        let fix = match origin {
            Some(file) => format!("fix the service in {}", file.display()),
            None => "fix the service's [services.NAME] table (docs/services.md)".to_string(),
        };
        let text = match self {
            Failure::NoEngine(_) => {
                "start the Docker daemon or point DOCKER_HOST at it, or run without services: --no-services"
            }
            Failure::Image(_) => {
                "pull the image while a registry is reachable (`docker pull IMAGE`), build it \
                 (`docker build -t IMAGE .`), or set the service's `image` to one the engine has \
                 (`docker image ls`)"
            }
            Failure::Unrunnable { .. } => {
                "make the check's command one the image has (on its PATH), or use another check \
                 (`tcp`, `log`)"
            }
            Failure::NotReady { .. } => {
                "check the readiness check against the log above (the port inside the container, the \
                 text the server prints), raise the service's `ready-timeout`, or keep it to look at \
                 with --keep-on-failure"
            }
            Failure::Exited { .. } | Failure::Gone => {
                return format!(
                    "its log is above; {fix} (its command, env or image), or keep it to look at \
                     with --keep-on-failure"
                );
            }
            _ => return format!("{fix}, or run without services: --no-services"),
        };
        text.to_string()
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NoEngine(reason) => write!(f, "no Docker engine answers ({reason})"),
            Failure::Network(e) | Failure::Image(e) | Failure::Start(e) => f.write_str(e),
            Failure::Exited {
                code,
                oom_killed: true,
            } => write!(
                f,
                "its container was OOM-killed (exit code {code}) before it was ready"
            ),
            Failure::Exited { code, .. } => {
                write!(
                    f,
                    "its container exited with code {code} before it was ready"
                )
            }
            Failure::Gone => f.write_str("its container was removed before it was ready"),
            Failure::NotReady {
                check,
                timeout,
                last,
            } => {
                write!(
                    f,
                    "the readiness check `{check}` did not pass within its ready-timeout of {timeout}"
                )?;
                match last {
                    Some(last) => write!(f, "; its last try: {last}"),
                    None => Ok(()),
                }
            }
            Failure::Unrunnable { check, why } => write!(
                f,
                "the readiness check `{check}` cannot run in the container ({why}), so it can never pass"
            ),
            Failure::Dependency(dep) => {
                write!(f, "the service `{dep}` it depends on did not start")
            }
            Failure::Abandoned => f.write_str("another service failed first"),
        }
    }
}
