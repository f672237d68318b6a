//! Docker: the engine connection, the label-filtered sweep and its plan, and the session's labelling
//! proxy. Everything here removes only resources carrying `cleantest.session` (with this session's id
//! unless the caller asks for more).
//!
//! This layer knows the engine and the contract's labels, nothing of sessions, records or runs: it
//! never imports `session` or `run`. Callers say which label filter to act on.

pub mod attached;
pub mod container;
pub mod context;
pub mod engine;
mod error;
#[cfg(test)]
mod fake;
mod images;
mod own_image;
mod plan;
pub mod proxy;
mod resource;
pub mod sidecar;
pub mod ssh;
pub mod sweep;
pub mod tls;
pub mod usage;
pub mod vm;

use std::collections::HashSet;
use std::time::{Duration, Instant};

pub use engine::{Connection, Engine, block_on};
pub use error::Error;
pub use resource::{Kind, Resource};
pub use sweep::Removal;

use cleantest_contract::{NESTED_LABEL_PREFIX, SESSION_LABEL};
/// Upper bound on one sweep; a daemon that does not come back within it leaves the session stale.
pub const SWEEP_BOUND: Duration = Duration::from_secs(60);

/// The label filter selecting one session's resources.
pub fn session_filter(id: &str) -> Vec<String> {
    vec![format!("{SESSION_LABEL}={id}")]
}

/// How many times a sweep lists again after removing: each time, only if the previous listing found
/// something, since a create the engine completed meanwhile shows up only in a later listing.
const RELISTS: usize = 3;

/// Finds and removes one session's resources (with `recorded`, the names of its anonymous volumes,
/// which carry no label), then lists again and removes what appeared meanwhile.
/// Listing is retried within the bound too, so a daemon that restarts during the run is waited for.
pub fn sweep_session(engine: &Engine, id: &str, recorded: &[String]) -> Result<Removal, Error> {
    sweep_session_sparing(engine, id, recorded, None)
}

/// `sweep_session`, leaving alone the container whose id starts with `spare`: the engine-side reaper
/// sweeping its own session (it removes itself by exiting).
pub fn sweep_session_sparing(
    engine: &Engine,
    id: &str,
    recorded: &[String],
    spare: Option<&str>,
) -> Result<Removal, Error> {
    let deadline = Instant::now() + SWEEP_BOUND;
    let spared = |r: &Resource| {
        r.kind == Kind::Container && spare.is_some_and(|s| !s.is_empty() && r.id.starts_with(s))
    };
    block_on(async {
        let mut found = find_with_recorded(engine, id, recorded, deadline).await?;
        found.retain(|r| !spared(r));
        let mut removal = sweep::remove(engine, &found, deadline).await;
        let mut seen: HashSet<String> = found.into_iter().map(|r| r.id).collect();
        for _ in 0..RELISTS {
            if removal.containers + removal.networks + removal.volumes == 0 {
                break;
            }
            let fresh: Vec<Resource> = find_session(engine, id, deadline)
                .await?
                .into_iter()
                .filter(|r| !spared(r) && seen.insert(r.id.clone()))
                .collect();
            if fresh.is_empty() {
                break;
            }
            removal.absorb(sweep::remove(engine, &fresh, deadline).await);
        }
        Ok(removal)
    })
}

/// Lists one session's resources, with those of its recorded anonymous volumes that still exist.
pub fn list_session(
    engine: &Engine,
    id: &str,
    recorded: &[String],
) -> Result<Vec<Resource>, Error> {
    let deadline = Instant::now() + SWEEP_BOUND;
    block_on(find_with_recorded(engine, id, recorded, deadline))
}

/// `find_session`, and the recorded anonymous volumes of the session that still exist.
async fn find_with_recorded(
    engine: &Engine,
    id: &str,
    recorded: &[String],
    deadline: Instant,
) -> Result<Vec<Resource>, Error> {
    let mut found = find_session(engine, id, deadline).await?;
    found.extend(existing_volumes(engine, id, recorded, &found).await);
    Ok(found)
}

/// The recorded anonymous volumes of session `id` that still exist and are not in `found`, as
/// resources of the session (they carry no label of their own).
async fn existing_volumes(
    engine: &Engine,
    id: &str,
    recorded: &[String],
    found: &[Resource],
) -> Vec<Resource> {
    let mut out: Vec<Resource> = Vec::new();
    for name in recorded {
        if found.iter().chain(&out).any(|r| &r.id == name) {
            continue;
        }
        if let Ok(volume) = engine.docker.inspect_volume(name).await {
            out.push(Resource {
                kind: Kind::Volume,
                id: volume.name.clone(),
                name: volume.name,
                labels: [(SESSION_LABEL.to_string(), id.to_string())].into(),
                created: volume.created_at.map(|t| t.unix_timestamp()),
                ..Resource::default()
            });
        }
    }
    out
}

/// A session's resources: those labelled with its id, and those an outer session's proxy relabelled
/// when this session ran nested inside it (`cleantest.nested.<id>`).
async fn find_session(
    engine: &Engine,
    id: &str,
    deadline: Instant,
) -> Result<Vec<Resource>, Error> {
    let (filter, nested) = (
        session_filter(id),
        vec![format!("{NESTED_LABEL_PREFIX}{id}")],
    );
    let (mut own, nested) = tokio::try_join!(
        find_until(engine, &filter, deadline),
        find_until(engine, &nested, deadline),
    )?;
    for r in nested {
        if !own.iter().any(|o| o.id == r.id) {
            own.push(r);
        }
    }
    Ok(own)
}

/// Lists resources matching a label filter.
pub fn list(engine: &Engine, filter: &[String]) -> Result<Vec<Resource>, Error> {
    let deadline = Instant::now() + SWEEP_BOUND;
    block_on(find_until(engine, filter, deadline))
}

/// The running containers matching a label filter, each as `NAME (IMAGE, SHORT-ID)`: a random name
/// alone doesn't say which container it was (none when the engine does not answer).
pub fn running_containers(engine: &Engine, filter: &[String]) -> Vec<String> {
    list(engine, filter)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.kind == Kind::Container && r.state == "running")
        .map(|r| describe_container(&r))
        .collect()
}

/// `NAME (IMAGE, SHORT-ID)`, as `docker ps` would show the container.
pub fn describe_container(container: &Resource) -> String {
    let short: String = container.id.chars().take(12).collect();
    match container.image.as_str() {
        "" => format!("{} ({short})", container.name),
        image => format!("{} ({image}, {short})", container.name),
    }
}

/// Removes a given set of resources.
pub fn remove(engine: &Engine, resources: &[Resource]) -> Removal {
    let deadline = Instant::now() + SWEEP_BOUND;
    block_on(sweep::remove(engine, resources, deadline))
}

async fn find_until(
    engine: &Engine,
    filter: &[String],
    deadline: Instant,
) -> Result<Vec<Resource>, Error> {
    let mut delay = Duration::from_millis(100);
    loop {
        match sweep::find(engine, filter).await {
            Ok(found) => return Ok(found),
            Err(e) if Instant::now() + delay > deadline => return Err(Error::engine("")(e)),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Connects to the engine (blocking).
pub fn connect() -> Connection {
    block_on(engine::connect())
}

/// A connection to the engine being made on a thread of its own, so that the caller's other start-up
/// work (reading the workspace, the config) overlaps the engine's answers.
pub struct Connecting(std::thread::JoinHandle<Connection>);

impl Connecting {
    /// Starts connecting to the engine of this process's environment.
    pub fn start() -> Connecting {
        Connecting(std::thread::spawn(connect))
    }

    /// The connection, once made (or found down).
    pub fn wait(self) -> Connection {
        self.0.join().unwrap_or_else(|_| Connection::Down {
            endpoint: engine::endpoint(),
            expected: true,
            reason: "the connecting thread panicked".into(),
            wedged: false,
        })
    }
}

/// Connects to a given endpoint (blocking).
pub fn connect_to(endpoint: &str) -> Connection {
    block_on(engine::connect_to(endpoint))
}

/// Connects, retrying with backoff for up to `bound` while an expected engine does not answer (a
/// wedged one is not retried: it answered, and then hung).
pub fn connect_within(bound: Duration) -> Connection {
    let deadline = Instant::now() + bound;
    let mut delay = Duration::from_millis(200);
    loop {
        match connect() {
            Connection::Down {
                expected: true,
                wedged: false,
                ..
            } if Instant::now() + delay < deadline => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// Locks `m`, whatever a panicking holder left: the proxy and the sweep must go on serving and
/// cleaning up, so a poisoned lock is used as it is.
pub(crate) fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
