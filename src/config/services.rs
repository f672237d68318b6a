//! `[services.NAME]`: a container the session starts before the tests run and shares with every process
//! of the session, as written in `.config/cleantest.toml`, and its checks: names, readiness, limits,
//! exports and the `depends-on` graph. What is read here is only described; `services/` starts it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use super::duration::ConfigDuration;
pub(crate) use super::isolate::{Isolate, Migrate};
use super::isolate::{IsolateConfig, MigrateConfig};
use super::memory::Memory;
pub(crate) use super::ready::Ready;
use super::ready::ReadyList;
use super::template::Template;

/// How long a service may take to become ready, unless it says.
pub(crate) const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One `[services.NAME]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ServiceConfig {
    /// Required: missing, it is checked with the service's name and line (`config::read_config`),
    /// which serde's "missing field" at line 1 would not say.
    #[serde(default)]
    pub image: String,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub ready: ReadyList,
    pub ready_timeout: Option<ConfigDuration>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    pub memory: Option<Memory>,
    pub cpus: Option<f64>,
    #[serde(default)]
    pub tmpfs: Vec<String>,
    #[serde(default)]
    pub export: BTreeMap<String, String>,
    /// The user the container runs as (`uid[:gid]` or a name).
    pub user: Option<String>,
    /// The container's working directory.
    pub working_dir: Option<String>,
    /// The size of `/dev/shm` (postgres wants more than the engine's 64 MiB for parallel queries).
    pub shm_size: Option<Memory>,
    /// How each test gets a database of its own (`config/isolate.rs`).
    pub isolate: Option<IsolateConfig>,
    /// What prepares the template once per session.
    pub migrate: Option<MigrateConfig>,
    /// Volumes mounted (compose files only).
    #[serde(skip)]
    pub mounts: Vec<Mount>,
    /// Container port → fixed host port, from a compose file's `"5433:5432"` (compose files only).
    #[serde(skip)]
    pub fixed_ports: BTreeMap<u16, u16>,
    /// The compose file a service comes from, for messages that name the right file.
    #[serde(skip)]
    pub origin: Option<std::path::PathBuf>,
    /// The `env_file`s it read (compose files only): what an archive must carry.
    #[serde(skip)]
    pub env_files: Vec<std::path::PathBuf>,
}

/// A volume a service mounts (from a compose file's `volumes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mount {
    /// A named volume of the session: created labelled, swept with it.
    Named { name: String, target: String },
    /// An anonymous volume: removed with its container.
    Anonymous { target: String },
    /// A directory or file of the host.
    Bind {
        source: std::path::PathBuf,
        target: String,
        read_only: bool,
    },
}

/// A service, checked, as the session starts it.
#[derive(Debug, Clone)]
pub(crate) struct ServiceSpec {
    pub name: String,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub ports: Vec<u16>,
    pub ready: Vec<Ready>,
    pub ready_timeout: Duration,
    pub depends_on: Vec<String>,
    /// Bytes.
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub tmpfs: Vec<String>,
    pub export: Vec<(String, Template)>,
    pub mounts: Vec<Mount>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    /// Bytes.
    pub shm_size: Option<u64>,
    pub fixed_ports: BTreeMap<u16, u16>,
    /// The compose file it comes from, if any.
    pub origin: Option<std::path::PathBuf>,
    pub isolate: Option<Isolate>,
    pub migrate: Option<Migrate>,
}

/// Checks the defined services and resolves the ones that start: `selected` (the profile's `services`;
/// all when None) and what they depend on, each after its dependencies.
pub(crate) fn resolve(
    defined: &BTreeMap<String, ServiceConfig>,
    selected: Option<&[String]>,
) -> Result<Vec<ServiceSpec>, String> {
    let mut specs = BTreeMap::new();
    for (name, config) in defined {
        specs.insert(name.clone(), check(name, config, defined)?);
    }
    let roots: Vec<String> = match selected {
        Some(names) => {
            for name in names {
                if !defined.contains_key(name) {
                    return Err(format!(
                        "profile key `services` names `{name}`, which no [services.{name}] table defines"
                    ));
                }
            }
            names.to_vec()
        }
        None => defined.keys().cloned().collect(),
    };
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    for root in &roots {
        visit(root, &specs, &mut done, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

/// Depth first: dependencies before dependents; `path` catches cycles.
fn visit(
    name: &str,
    specs: &BTreeMap<String, ServiceSpec>,
    done: &mut BTreeSet<String>,
    path: &mut Vec<String>,
    order: &mut Vec<ServiceSpec>,
) -> Result<(), String> {
    if done.contains(name) {
        return Ok(());
    }
    if let Some(at) = path.iter().position(|p| p == name) {
        let mut cycle = path[at..].to_vec();
        cycle.push(name.to_string());
        return Err(format!(
            "services depend on each other in a cycle: {}",
            cycle.join(" → ")
        ));
    }
    let spec = &specs[name];
    path.push(name.to_string());
    for dep in &spec.depends_on {
        visit(dep, specs, done, path, order)?;
    }
    path.pop();
    done.insert(name.to_string());
    order.push(spec.clone());
    Ok(())
}

/// A service test code asks for (`cleantest::Service`): checked as a config service is, with no
/// dependencies.
pub(crate) fn on_demand(
    name: &str,
    image: String,
    command: Option<Vec<String>>,
    env: Vec<(String, String)>,
    ports: Vec<u16>,
    ready: Vec<Ready>,
    ready_timeout: Option<Duration>,
) -> Result<ServiceSpec, String> {
    let config = ServiceConfig {
        image,
        command,
        entrypoint: None,
        env: env.into_iter().collect(),
        ports,
        ready: ReadyList(ready),
        ready_timeout: ready_timeout.map(ConfigDuration),
        depends_on: Vec::new(),
        memory: None,
        cpus: None,
        tmpfs: Vec::new(),
        export: BTreeMap::new(),
        user: None,
        working_dir: None,
        shm_size: None,
        mounts: Vec::new(),
        env_files: Vec::new(),
        fixed_ports: BTreeMap::new(),
        origin: None,
        isolate: None,
        migrate: None,
    };
    check(name, &config, &BTreeMap::new())
}

/// Whether `name` can name a service: a container alias and a part of an environment variable.
fn is_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks one service; errors start with `[services.NAME]`.
fn check(
    name: &str,
    config: &ServiceConfig,
    defined: &BTreeMap<String, ServiceConfig>,
) -> Result<ServiceSpec, String> {
    let fail = |what: String| format!("[services.{name}]: {what}");
    if !is_service_name(name) {
        return Err(fail(
            "a service name is letters, digits, `_`, `.` and `-`, starting with a letter or digit"
                .into(),
        ));
    }
    if config.image.trim().is_empty() {
        return Err(fail("`image` is empty".into()));
    }
    let mut seen = BTreeSet::new();
    for port in &config.ports {
        if *port == 0 || !seen.insert(*port) {
            return Err(fail(format!("`ports` lists {port} twice or as 0")));
        }
    }
    for check in &config.ready.0 {
        if let Ready::Tcp(port) | Ready::Http { port, .. } = check
            && !config.ports.contains(port)
        {
            return Err(fail(format!(
                "the readiness check `{check}` names port {port}; add it to `ports`"
            )));
        }
    }
    if let Some(cpus) = config.cpus
        && !(cpus.is_finite() && cpus > 0.0)
    {
        return Err(fail(format!("`cpus` must be above 0, not {cpus}")));
    }
    for dep in &config.depends_on {
        if dep == name || !defined.contains_key(dep) {
            return Err(fail(format!(
                "`depends-on` names `{dep}`, which is not another defined service"
            )));
        }
    }
    for key in config.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(fail(format!("`env` has a bad variable name {key:?}")));
        }
    }
    let isolate = config
        .isolate
        .as_ref()
        .map(IsolateConfig::check)
        .transpose()
        .map_err(fail)?;
    let migrate = config
        .migrate
        .as_ref()
        .map(|m| m.check(isolate.as_ref()))
        .transpose()
        .map_err(fail)?;
    let mut export = Vec::new();
    for (key, value) in &config.export {
        if !is_env_name(key) {
            return Err(fail(format!("`export` has a bad variable name {key:?}")));
        }
        export.push((
            key.clone(),
            Template::parse(value, &config.ports, isolate.is_some()).map_err(fail)?,
        ));
    }
    Ok(ServiceSpec {
        name: name.to_string(),
        image: config.image.clone(),
        command: config.command.clone(),
        entrypoint: config.entrypoint.clone(),
        env: config.env.clone().into_iter().collect(),
        ports: config.ports.clone(),
        ready: config.ready.0.clone(),
        ready_timeout: config.ready_timeout.map_or(DEFAULT_READY_TIMEOUT, |d| d.0),
        depends_on: config.depends_on.clone(),
        memory: config.memory.map(|m| m.0),
        cpus: config.cpus,
        tmpfs: config.tmpfs.clone(),
        export,
        mounts: config.mounts.clone(),
        user: config.user.clone(),
        working_dir: config.working_dir.clone(),
        shm_size: config.shm_size.map(|m| m.0),
        fixed_ports: config.fixed_ports.clone(),
        origin: config.origin.clone(),
        isolate,
        migrate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defined(text: &str) -> BTreeMap<String, ServiceConfig> {
        #[derive(Deserialize)]
        struct File {
            services: BTreeMap<String, ServiceConfig>,
        }
        toml::from_str::<File>(text).unwrap().services
    }

    const THREE: &str = r#"
[services.db]
image = "pg"
ports = [5432]
depends-on = ["queue"]
export = { URL = "postgres://{host}:{port:5432}" }
[services.queue]
image = "nats"
[services.cache]
image = "redis"
"#;

    #[test]
    fn dependencies_come_first_and_selection_pulls_them_in() {
        let all = resolve(&defined(THREE), None).unwrap();
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["cache", "queue", "db"]);
        let some = resolve(&defined(THREE), Some(&["db".to_string()])).unwrap();
        let names: Vec<&str> = some.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["queue", "db"]);
        assert_eq!(some[1].ready_timeout, DEFAULT_READY_TIMEOUT);
    }

    #[test]
    fn cycles_unknown_names_and_bad_values_are_errors() {
        for (text, says) in [
            (
                "[services.a]\nimage = \"x\"\ndepends-on = [\"b\"]\n[services.b]\nimage = \"x\"\ndepends-on = [\"a\"]",
                "cycle",
            ),
            ("[services.a]\nimage = \"x\"\ndepends-on = [\"z\"]", "`z`"),
            ("[services.a]\nimage = \"x\"\ndepends-on = [\"a\"]", "`a`"),
            ("[services.a]\nimage = \"\"", "`image` is empty"),
            (
                "[services.a]\nimage = \"x\"\nready = { tcp = 1 }",
                "add it to `ports`",
            ),
            ("[services.a]\nimage = \"x\"\ncpus = 0.0", "cpus"),
            ("[services.a]\nimage = \"x\"\nports = [1, 1]", "twice"),
            ("[services.\"-a\"]\nimage = \"x\"", "service name"),
            (
                "[services.a]\nimage = \"x\"\nexport = { \"1X\" = \"y\" }",
                "bad variable",
            ),
            (
                "[services.a]\nimage = \"x\"\nexport = { X = \"{port:1}\" }",
                "add 1",
            ),
        ] {
            let err = resolve(&defined(text), None).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
        let err = resolve(&defined(THREE), Some(&["web".to_string()])).unwrap_err();
        assert!(err.contains("`web`"), "{err}");
    }
}
