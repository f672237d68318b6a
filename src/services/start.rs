//! Starting a session's services: one user-defined network for the session (each service on it under
//! its name, so `nats://queue:4222` works from one service to another), then a thread per service that
//! waits for what it depends on, pulls its image if the engine lacks it and can, creates and starts
//! its container, and waits until it is ready. Independent services start in parallel; the first
//! failure stops the others from waiting on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::ready::{self, Target};
use super::{Failure, Running};
use crate::config::services::{Mount, ServiceSpec};
use crate::contract::SERVICE_LABEL;
use crate::docker::container::{self, ContainerSpec};
use crate::docker::{Engine, context};
use crate::errors::Error;
use crate::session::locked;

/// How long pulling a missing image may take (no registry may answer at all).
const PULL_BOUND: Duration = Duration::from_secs(120);
/// Lines of a failed service's log shown.
const LOG_TAIL: usize = 20;

/// The session's network.
fn network_name(session: &str) -> String {
    format!("cleantest-{session}")
}

/// Makes the session's network unless it exists (the config's services made it, or an earlier start).
pub(crate) fn ensure_network(
    engine: &Engine,
    session: &str,
    labels: &[(String, String)],
) -> Result<(), String> {
    let name = network_name(session);
    if container::network_exists(engine, &name) {
        return Ok(());
    }
    container::create_network(engine, &name, labels)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The engine's name of a compose file's named volume in this session.
fn volume_name(session: &str, name: &str) -> String {
    format!("cleantest-{session}-{name}")
}

/// A service's container: `cleantest-<session>-<service>` (a service's name is already one Docker
/// accepts: `config::services` checks it).
fn container_name(session: &str, service: &str) -> String {
    format!("cleantest-{session}-{service}")
}

/// What became of one service.
#[derive(Debug, Clone)]
enum Outcome {
    Ready(Running),
    Failed {
        failure: Failure,
        id: Option<String>,
    },
}

/// Everything the service threads share.
struct Board {
    outcomes: Mutex<HashMap<String, Outcome>>,
    changed: Condvar,
    abort: AtomicBool,
}

/// Starts `specs` (each after its dependencies, which come first in `specs`) on `engine`, labelled with
/// `labels` (the session's and its owner's). `local`: the engine runs on this host, in this PID namespace. `stop` says
/// the run was interrupted: waiting for readiness ends. Without an engine, `engine` says why.
pub(crate) fn start_all(
    engine: Result<&Engine, String>,
    session: &str,
    labels: &[(String, String)],
    specs: &[ServiceSpec],
    local: bool,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<Running>, Error> {
    let Some(first) = specs.first() else {
        return Ok(Vec::new());
    };
    let fail = |name: &str, failure: Failure| Error::Service {
        name: name.to_string(),
        reason: failure.to_string(),
        log: String::new(),
        help: failure.help(
            specs
                .iter()
                .find(|s| s.name == name)
                .and_then(|s| s.origin.as_deref()),
        ),
    };
    let engine = match engine {
        Ok(engine) => engine,
        Err(why) => return Err(fail(&first.name, Failure::NoEngine(why))),
    };
    container::create_network(engine, &network_name(session), labels)
        .map_err(|e| fail(&first.name, Failure::Network(e.to_string())))?;
    // Named volumes may be shared by several services: each is made once, labelled like the rest.
    for spec in specs {
        for mount in &spec.mounts {
            if let Mount::Named { name, .. } = mount {
                container::create_volume(engine, &volume_name(session, name), labels)
                    .map_err(|e| fail(&spec.name, Failure::Start(e.to_string())))?;
            }
        }
    }
    let board = Board {
        outcomes: Mutex::default(),
        changed: Condvar::new(),
        abort: AtomicBool::new(false),
    };
    std::thread::scope(|scope| {
        for spec in specs {
            let board = &board;
            scope.spawn(move || {
                let outcome = match wait_for(board, &spec.depends_on) {
                    Err(dep) => Outcome::Failed {
                        failure: Failure::Dependency(dep),
                        id: None,
                    },
                    Ok(()) => {
                        let abort = || board.abort.load(Ordering::SeqCst) || stop();
                        match start_one(engine, spec, labels, session, local, &abort) {
                            Ok(running) => Outcome::Ready(running),
                            Err((failure, id)) => Outcome::Failed { failure, id },
                        }
                    }
                };
                if matches!(outcome, Outcome::Failed { .. }) {
                    board.abort.store(true, Ordering::SeqCst);
                }
                let mut outcomes = locked(&board.outcomes);
                outcomes.insert(spec.name.clone(), outcome);
                board.changed.notify_all();
            });
        }
    });
    let outcomes = board
        .outcomes
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    collect(engine, specs, outcomes)
}

/// Blocks until every dependency has an outcome; the name of one that failed, if any did.
fn wait_for(board: &Board, deps: &[String]) -> Result<(), String> {
    let mut outcomes = locked(&board.outcomes);
    loop {
        for dep in deps {
            if let Some(Outcome::Failed { .. }) = outcomes.get(dep) {
                return Err(dep.clone());
            }
        }
        if deps.iter().all(|d| outcomes.contains_key(d)) {
            return Ok(());
        }
        outcomes = board
            .changed
            .wait(outcomes)
            .unwrap_or_else(|e| e.into_inner());
    }
}

/// Starts one service on the session's network (`session`'s), labelled with `labels` and its name, and
/// waits until it is ready; why not, with its container's id when it was created.
pub(crate) fn start_one(
    engine: &Engine,
    spec: &ServiceSpec,
    labels: &[(String, String)],
    session: &str,
    local: bool,
    abort: &dyn Fn() -> bool,
) -> Result<Running, (Failure, Option<String>)> {
    let network = network_name(session);
    let failed = |failure, id| Err((failure, id));
    if let Err(e) = container::ensure_image(engine, &spec.image, PULL_BOUND) {
        return failed(Failure::Image(e.to_string()), None);
    }
    let mut labels = labels.to_vec();
    labels.push((SERVICE_LABEL.to_string(), spec.name.clone()));
    let (mut binds, mut anonymous) = (Vec::new(), Vec::new());
    for mount in &spec.mounts {
        match mount {
            Mount::Named { name, target } => {
                binds.push(format!("{}:{target}", volume_name(session, name)))
            }
            Mount::Anonymous { target } => anonymous.push(target.clone()),
            Mount::Bind {
                source,
                target,
                read_only,
            } => binds.push(format!(
                "{}:{target}{}",
                source.display(),
                if *read_only { ":ro" } else { "" }
            )),
        }
    }
    // A remote engine publishes on its own host, where tests reach the services too.
    let (host, publish_ip) = context::published_at(&crate::docker::engine::endpoint());
    let container = ContainerSpec {
        name: Some(container_name(session, &spec.name)),
        publish_ip,
        image: spec.image.clone(),
        entrypoint: spec.entrypoint.clone(),
        cmd: spec.command.clone(),
        env: spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        ports: spec.ports.clone(),
        labels,
        network: network.clone(),
        alias: spec.name.clone(),
        memory: spec.memory,
        cpus: spec.cpus,
        tmpfs: spec.tmpfs.clone(),
        fixed_ports: spec.fixed_ports.clone(),
        user: spec.user.clone(),
        working_dir: spec.working_dir.clone(),
        shm_size: spec.shm_size,
        binds,
        anonymous,
    };
    let id = match container::run(engine, &container) {
        Ok(id) => id,
        Err(e) => return failed(Failure::Start(e.to_string()), None),
    };
    let ports = match container::host_ports(engine, &id) {
        Ok(ports) => ports,
        Err(e) => return failed(Failure::Start(e.to_string()), Some(id)),
    };
    let target = Target {
        host: &host,
        engine,
        id: &id,
        ports: &ports,
        local,
    };
    if let Err(failure) = ready::wait(&target, spec, abort) {
        return failed(failure, Some(id));
    }
    Ok(Running::new(spec, id, host.clone(), ports))
}

/// The running services in order, or the error of the first service that failed for a reason of its
/// own (not a dependency's, not abandoned), with the tail of its log.
fn collect(
    engine: &Engine,
    specs: &[ServiceSpec],
    mut outcomes: HashMap<String, Outcome>,
) -> Result<Vec<Running>, Error> {
    let own = |f: &Failure| !matches!(f, Failure::Dependency(_) | Failure::Abandoned);
    let first = specs
        .iter()
        .filter_map(|s| match outcomes.get(&s.name) {
            Some(Outcome::Failed { failure, id }) => Some((s, failure, id)),
            _ => None,
        })
        .min_by_key(|(_, failure, _)| !own(failure));
    if let Some((spec, failure, id)) = first {
        let log = id
            .as_deref()
            .and_then(|id| container::logs(engine, id, Some(LOG_TAIL)).ok())
            .map(|log| indent(&log))
            .unwrap_or_default();
        return Err(Error::Service {
            name: spec.name.clone(),
            reason: failure.to_string(),
            log,
            help: failure.help(spec.origin.as_deref()),
        });
    }
    Ok(specs
        .iter()
        .filter_map(|s| match outcomes.remove(&s.name) {
            Some(Outcome::Ready(running)) => Some(running),
            _ => None,
        })
        .collect())
}

/// The log tail as lines under the error, or nothing when the log is empty.
fn indent(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "\n  its log is empty".to_string();
    }
    let mut out = format!("\n  the last {} line(s) of its log:", lines.len());
    for line in lines {
        out.push_str("\n    | ");
        out.push_str(line);
    }
    out
}
