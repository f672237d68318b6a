//! The control socket: how test code (`cleantest::Service::start`) asks the runner for a container
//! shared by the whole session. A unix socket in the session's state directory (0600), its path in
//! `CLEANTEST_CONTROL`; protocol version 1, one JSON line each way (ARCHITECTURE.md):
//!
//! - request: `{"v":1,"op":"start","name":N,"site":"file:line","spec":{"image":…,"command":[…]|null,
//!   "env":[[k,v]…],"ports":[…],"tmpfs":[…],"ready":[{"tcp":P}|{"log":T}|{"exec":[…]}|{"http":P,"path":S}…],
//!   "ready_timeout_ms":M|null}}`;
//! - answer: `{"v":1,"ok":true,"endpoint":{"name":N,"host":H,"ports":{"P":HOSTPORT}}}` or
//!   `{"v":1,"ok":false,"error":E}`.
//!
//! Only processes of the session are served (the peer's pid, by `SO_PEERCRED`, must carry the
//! session's id or descend from the runner). The first caller for a name starts the container (labelled
//! like every session resource, on the session network) and waits until it is ready; concurrent
//! callers wait for that start; later callers get it after a health check (a dead one is an error,
//! never silently replaced). The same name with another spec is an error naming both call sites.
//! `stop` (before the session's sweep) refuses new requests and waits for starts under way, so that
//! no container appears after the sweep has listed.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cleantest_protocol::Answer;

use super::control_request::{Request, request};
use super::control_wire::{REQUEST_READ_BOUND, answer, database_answer, read_request, refuse};
use super::peer::{Caller, caller};
use super::start;
use super::{Monitor, Running};
use crate::config::services::ServiceSpec;
use crate::docker::Engine;
use crate::docker::container::{self, State};
use crate::session::locked;

/// How long `stop` waits for starts under way (they end early once the session ends).
const STOP_BOUND: Duration = Duration::from_secs(30);

/// What the server knows.
pub(crate) struct Context {
    /// The databases of the services that isolate (`cleantest::database`).
    pub databases: Arc<super::Databases>,
    pub engine: Option<Engine>,
    pub session: String,
    /// The session's and its owner's labels.
    pub labels: Vec<(String, String)>,
    pub local: bool,
    pub monitor: Monitor,
    /// The session is ending (or was interrupted): waiting for readiness stops.
    pub ending: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Held while the session network is made: two first starts at once would make two networks of
    /// one name (the engine allows that, and then refuses to attach to either).
    pub network: Mutex<()>,
    /// A session host's key process: its descendants are served too (they carry no session id).
    pub key: Option<i32>,
    /// A session host's config services, started on demand (`service` requests). The runner starts
    /// them up front instead, and serves none of these.
    pub config: Vec<ServiceSpec>,
}

/// One name's service.
enum Entry {
    Starting {
        spec: String,
        site: String,
    },
    Ready {
        spec: String,
        site: String,
        running: Running,
    },
    Failed {
        spec: String,
        site: String,
        error: String,
    },
}

impl Entry {
    fn spec_and_site(&self) -> (&str, &str) {
        match self {
            Entry::Starting { spec, site }
            | Entry::Ready { spec, site, .. }
            | Entry::Failed { spec, site, .. } => (spec, site),
        }
    }
}

#[derive(Default)]
struct Registry {
    entries: HashMap<String, Entry>,
    /// Starts under way.
    starting: usize,
    closed: bool,
}

/// The running server.
pub(crate) struct Control {
    pub path: PathBuf,
    registry: Arc<(Mutex<Registry>, Condvar)>,
}

impl Control {
    /// Refuses new requests and waits (bounded) for the starts under way to end.
    pub(crate) fn stop(&self) {
        let (lock, changed) = &*self.registry;
        let mut registry = locked(lock);
        registry.closed = true;
        let deadline = Instant::now() + STOP_BOUND;
        while registry.starting > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            registry = changed
                .wait_timeout(registry, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(registry);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listens on `path` (0600) and serves the session's processes on threads of their own.
pub(crate) fn serve(path: &Path, context: Context) -> std::io::Result<Control> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let registry: Arc<(Mutex<Registry>, Condvar)> = Arc::default();
    let (context, shared) = (Arc::new(context), registry.clone());
    let clients = Arc::new(AtomicUsize::new(0));
    let (busy, refused) = std::sync::mpsc::sync_channel::<(UnixStream, String)>(BUSY_QUEUE);
    std::thread::Builder::new()
        .name("control-refuse".into())
        .spawn(move || {
            for (stream, refusal) in refused {
                refuse(stream, &refusal);
            }
        })?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else {
                    // Out of descriptors: let open connections finish.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                // Who asks is known before anything is read: a process outside the session never
                // takes a request thread. Refusals are answered by the one refusing thread; when even
                // its queue is full, the connection is closed.
                let who = match caller(&stream, &context.session, context.key) {
                    Ok(who) => who,
                    Err(refusal) => {
                        let _ = busy.try_send((stream, refusal));
                        continue;
                    }
                };
                // One thread per request, up to a bound: past it, the request is read briefly and
                // refused, so a flood of connections cannot grow the runner's threads.
                if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                    clients.fetch_sub(1, Ordering::SeqCst);
                    let _ = busy.try_send((stream, busy_refusal()));
                    continue;
                }
                let (context, registry, mine) = (context.clone(), shared.clone(), clients.clone());
                let spawned = std::thread::Builder::new()
                    .name("control-client".into())
                    .spawn(move || {
                        handle(stream, &who, &context, &registry);
                        mine.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    clients.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })?;
    Ok(Control {
        path: path.to_path_buf(),
        registry,
    })
}

/// The most requests served at once, each on a thread of its own (a service start can take a while).
const MAX_CLIENTS: usize = 64;

/// Refused requests waiting to be answered; past that, a connection is closed unanswered.
const BUSY_QUEUE: usize = 256;

fn busy_refusal() -> String {
    format!(
        "the control socket is busy: {MAX_CLIENTS} requests are being served at once; try again when one ends"
    )
}

fn handle(
    mut stream: UnixStream,
    who: &Caller,
    context: &Context,
    registry: &(Mutex<Registry>, Condvar),
) {
    let unit = &who.unit;
    let answer = match read_request(&stream, REQUEST_READ_BOUND) {
        Ok(line) => match request(&line) {
            Ok(Request::Start {
                name,
                site,
                spec,
                key,
            }) => answer(start_or_get(
                context, registry, unit, &name, &site, &spec, &key,
            )),
            Ok(Request::Service(name)) => config_service(context, registry, unit, &name),
            Ok(Request::Database { name, key }) => {
                database_answer(database(context, registry, who, &name, &key))
            }
            Ok(Request::Release { name, database }) => {
                // Under the runner a test's database ends with its result (so that a failed one can
                // be kept); a session host has no results, so the holder's word ends it.
                let released =
                    context.key.is_some() && context.databases.give_back(who.pid, &name, &database);
                Answer::Released(released)
            }
            Err(e) => Answer::refused(e),
        },
        Err(e) => Answer::refused(e),
    };
    let _ = writeln!(stream, "{}", answer.to_line());
}

/// The database of the isolating service `name` for the caller's test `key`: the one its environment
/// names when it is a process of one test (`--isolate`), else its own, the same on a second call. A
/// session host starts and prepares the service on the first request.
fn database(
    context: &Context,
    registry: &(Mutex<Registry>, Condvar),
    who: &Caller,
    name: &str,
    key: &str,
) -> Result<super::Database, String> {
    let env_name = super::env_name(name);
    let own = who
        .databases
        .iter()
        .find(|(n, _)| *n == env_name)
        .map(|(_, database)| database);
    if let (Some(database), false) = (own, who.unit.1.is_empty())
        && let Some(found) = context.databases.named(name, database)
    {
        return Ok(found);
    }
    if context.key.is_some() && !context.databases.has(name) {
        prepare_for_host(context, registry, &who.unit, name)?;
    }
    // The crate names the service itself.
    context
        .databases
        .for_test(who.pid, key, name)
        .map_err(|e| match e {
            super::IsolateError::NoDatabase { why, .. } => why,
            other => other.to_string(),
        })
}

/// A session host's isolating config service: started (after what it depends on) and prepared.
fn prepare_for_host(
    context: &Context,
    registry: &(Mutex<Registry>, Condvar),
    unit: &(String, String),
    name: &str,
) -> Result<(), String> {
    let running = start_config(context, registry, unit, name)?;
    let spec = context.config.iter().find(|s| s.name == name);
    match (spec, &context.engine) {
        (Some(spec), Some(engine)) if spec.isolate.is_some() => context
            .databases
            .add(engine, spec, &running, super::pool_ahead())
            .map_err(|why| format!("preparing the databases of `{name}` failed: {why}")),
        (Some(_), Some(_)) => Err(format!(
            "service `{name}` does not isolate: give it `isolate` (docs/services.md)"
        )),
        _ => Err(format!("service `{name}` has no engine to run on")),
    }
}

/// A config service of a session host, started on demand after what it depends on; an unknown name is
/// answered with the names there are (`known`), which the crate turns into `UnknownService`.
fn config_service(
    context: &Context,
    registry: &(Mutex<Registry>, Condvar),
    unit: &(String, String),
    name: &str,
) -> Answer {
    if with_dependencies(&context.config, name).is_none() {
        let known = context.config.iter().map(|s| s.name.clone()).collect();
        return Answer::Refused {
            error: format!("the workspace's .config/cleantest.toml has no service `{name}`"),
            known: Some(known),
        };
    }
    answer(start_config(context, registry, unit, name))
}

/// Starts the config service `name` after what it depends on, or gets it if it runs.
fn start_config(
    context: &Context,
    registry: &(Mutex<Registry>, Condvar),
    unit: &(String, String),
    name: &str,
) -> Result<Running, String> {
    let needed = with_dependencies(&context.config, name)
        .ok_or_else(|| format!("the workspace's .config/cleantest.toml has no service `{name}`"))?;
    let mut last = Err(format!("`{name}` was not started"));
    for spec in needed {
        let key = format!("the config service {}", spec.name);
        let site = spec.origin.as_deref().map_or_else(
            || ".config/cleantest.toml".to_string(),
            |o| o.display().to_string(),
        );
        last = start_or_get(context, registry, unit, &spec.name, &site, spec, &key);
        if last.is_err() {
            break;
        }
    }
    last
}

/// `name` and everything it depends on, dependencies first (in the config's order, which has them
/// first); None if there is no such service.
fn with_dependencies<'s>(config: &'s [ServiceSpec], name: &str) -> Option<Vec<&'s ServiceSpec>> {
    config.iter().find(|s| s.name == name)?;
    let mut wanted = std::collections::BTreeSet::new();
    let mut next = vec![name];
    while let Some(name) = next.pop() {
        if wanted.insert(name)
            && let Some(spec) = config.iter().find(|s| s.name == name)
        {
            next.extend(spec.depends_on.iter().map(String::as_str));
        }
    }
    Some(
        config
            .iter()
            .filter(|s| wanted.contains(s.name.as_str()))
            .collect(),
    )
}

fn start_or_get(
    context: &Context,
    registry: &(Mutex<Registry>, Condvar),
    unit: &(String, String),
    name: &str,
    site: &str,
    spec: &ServiceSpec,
    key: &str,
) -> Result<Running, String> {
    let (lock, changed) = registry;
    let mut reg = locked(lock);
    if reg.closed {
        return Err("the session is ending".into());
    }
    let waiting = matches!(reg.entries.get(name), Some(Entry::Starting { .. }));
    if waiting {
        context.monitor.waiting(&unit.0, &unit.1, name, true);
    }
    while let Some(Entry::Starting { spec: other, .. }) = reg.entries.get(name) {
        if other != key {
            break;
        }
        reg = changed.wait(reg).unwrap_or_else(|e| e.into_inner());
    }
    if waiting {
        context.monitor.waiting(&unit.0, &unit.1, name, false);
    }
    if let Some(entry) = reg.entries.get(name) {
        let (other, other_site) = entry.spec_and_site();
        if other != key {
            return Err(format!(
                "`{name}` is already declared with another spec at {other_site}: {other}; this call at \
                 {site} asks for {key}"
            ));
        }
        return match entry {
            Entry::Ready { running, .. } => healthy(context, running),
            Entry::Failed { error, .. } => Err(error.clone()),
            Entry::Starting { .. } => Err("the start did not finish".into()),
        };
    }
    reg.entries.insert(
        name.to_string(),
        Entry::Starting {
            spec: key.to_string(),
            site: site.to_string(),
        },
    );
    reg.starting += 1;
    drop(reg);
    context.monitor.waiting(&unit.0, &unit.1, name, true);
    let result = start_now(context, unit, spec);
    context.monitor.waiting(&unit.0, &unit.1, name, false);
    let mut reg = locked(lock);
    let (spec, site) = (key.to_string(), site.to_string());
    let entry = match &result {
        Ok(running) => Entry::Ready {
            spec,
            site,
            running: running.clone(),
        },
        Err(error) => Entry::Failed {
            spec,
            site,
            error: error.clone(),
        },
    };
    reg.entries.insert(name.to_string(), entry);
    reg.starting -= 1;
    changed.notify_all();
    result
}

/// Starts the service for `unit`, saying so on the runner's output with the time it took.
fn start_now(
    context: &Context,
    unit: &(String, String),
    spec: &ServiceSpec,
) -> Result<Running, String> {
    let engine = context
        .engine
        .as_ref()
        .ok_or("no Docker engine answers for this session")?;
    let who = match unit {
        (binary, test) if !test.is_empty() => format!("{binary}::{test}"),
        (binary, _) if !binary.is_empty() => binary.clone(),
        _ => "a process of the session".into(),
    };
    crate::output::err(format!(
        "{:>12} service {} for {who}",
        "Starting", spec.name
    ));
    let started = Instant::now();
    {
        let _one_at_a_time = locked(&context.network);
        start::ensure_network(engine, &context.session, &context.labels)?;
    }
    let result = start::start_one(
        engine,
        spec,
        &context.labels,
        &context.session,
        context.local,
        &*context.ending,
    );
    match result {
        Ok(running) => {
            crate::output::err(format!(
                "{:>12} service {} in {:.2}s",
                "Ready",
                spec.name,
                started.elapsed().as_secs_f64()
            ));
            context.monitor.add(&running);
            Ok(running)
        }
        Err((failure, id)) => {
            let tail = id
                .as_deref()
                .and_then(|id| container::logs(engine, id, Some(20)).ok())
                .map(|log| format!("; the end of its log: {}", log.trim().replace('\n', " | ")))
                .unwrap_or_default();
            Err(format!("{failure}{tail}"))
        }
    }
}

/// A started service, if its container still runs; a dead one is reported, not replaced.
fn healthy(context: &Context, running: &Running) -> Result<Running, String> {
    let Some(engine) = &context.engine else {
        return Ok(running.clone());
    };
    let short = &running.id[..running.id.len().min(12)];
    match container::state(engine, &running.id) {
        State::Running { .. } => Ok(running.clone()),
        State::Exited { code, oom_killed } => Err(format!(
            "its container {short} has died (exit code {code}{}); it is not replaced",
            if oom_killed { ", OOM-killed" } else { "" }
        )),
        State::Gone => Err(format!(
            "its container {short} was removed; it is not replaced"
        )),
    }
}
