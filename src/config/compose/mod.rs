//! `compose-file = "docker-compose.test.yml"`: the services of a compose file become services of the
//! session, read with a YAML parser (serde-saphyr; no compose binary is needed), as docker-compose
//! reads them: values interpolated (`interpolate`), services of inactive `profiles` left out. Supported
//! per service: `image`, `command`, `entrypoint`, `environment` (map or list), `env_file`, `ports`
//! (a fixed host side kept), `healthcheck` (run as compose runs it), `depends_on` (list, or map with
//! `service_started` or `service_healthy`), `deploy.resources.limits` (memory, cpus), `tmpfs` (with
//! options), `shm_size`, `user`, `working_dir`, `volumes` (named ones labelled and swept with the
//! session, anonymous ones removed with their container, binds) and `networks` (collapsed onto the
//! session network). Keys in `IGNORED` and `deploy` keys other than `resources` are named in one
//! warning line; the top-level `version` and `name` and `x-` extension keys are ignored silently;
//! anything else is an error naming the key and the file. `model` holds the YAML's shapes.

mod interpolate;
mod model;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::duration::ConfigDuration;
use super::memory::Memory;
use super::ready::{Ready, ReadyList};
use super::services::{DEFAULT_READY_TIMEOUT, Mount, ServiceConfig};
use model::{
    DependsOn, Environment, File, Healthcheck, Port, Scalar, Service, Test, Text, VolumeSpec,
};

/// Service keys that do not matter to a test session: ignored, and named once in one summary line.
const IGNORED: &[&str] = &[
    "container_name",
    "restart",
    "labels",
    "logging",
    "stdin_open",
    "tty",
    "hostname",
    "stop_grace_period",
    "stop_signal",
    "expose",
    "init",
    "platform",
    "pull_policy",
];

/// What `convert` supports, for the error that names a key it does not.
const SUPPORTED: &str = "image, command, entrypoint, environment, env_file, ports, healthcheck, \
                         depends_on, deploy.resources.limits, tmpfs, volumes, networks, shm_size, \
                         user, working_dir, profiles";

/// A compose file read: its services as session services, and what to tell the user once.
#[derive(Debug, Default)]
pub(crate) struct Read {
    pub services: BTreeMap<String, ServiceConfig>,
    /// `warning:` lines: unset variables, keys ignored.
    pub warnings: Vec<String>,
    /// `note:` lines: services of inactive profiles, fixed host ports.
    pub notes: Vec<String>,
}

/// The services of the compose file at `path`, with the compose profiles `active` (as
/// `COMPOSE_PROFILES` or `--profile` would make them).
pub(crate) fn read(path: &Path, active: &[String]) -> Result<Read, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let variables = interpolate::Variables::load(&base.join(".env"))?;
    let (file, variables) = interpolate::with(variables, || serde_saphyr::from_str::<File>(&text));
    let file = file.map_err(|e| one_line(&e.to_string()))?;
    let mut out = Read::default();
    for name in &variables.unset {
        out.warnings.push(format!(
            "the variable {name} is not set; it is an empty string here (as docker-compose does)"
        ));
    }
    for key in file.other.keys() {
        match key.as_str() {
            // `version` is obsolete in the compose specification, and `name` names a project we
            // don't make: both say nothing to a session.
            k if k.starts_with("x-") => {}
            "networks" | "version" | "name" => {}
            other => return Err(format!("top-level key `{other}` is not supported")),
        }
    }
    for (name, decl) in &file.volumes {
        if decl.as_ref().is_some_and(|d| d.external.is_some()) {
            return Err(format!(
                "volume `{name}` is external: a session creates and sweeps its own volumes"
            ));
        }
    }
    let mut ignored: Vec<String> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    for (name, service) in file.services {
        let profiles: Vec<String> = service.profiles.iter().map(|p| p.0.clone()).collect();
        if !profiles.is_empty() && !profiles.iter().any(|p| active.contains(p)) {
            skipped.push(format!("{name} ({})", profiles.join(", ")));
            continue;
        }
        let mut keys = Vec::new();
        let config = convert(&name, service, base, &mut keys)
            .map_err(|e| format!("service `{name}`: {e}"))?;
        if !keys.is_empty() {
            ignored.push(format!("{name}: {}", keys.join(", ")));
        }
        for (container, host) in &config.fixed_ports {
            out.notes.push(format!(
                "service `{name}` publishes container port {container} on fixed host port {host}, as \
                 the compose file asks: runs that use that port must not overlap, which the \
                 environment lock sees to (share one with --lock NAME between checkouts)"
            ));
        }
        let mut config = config;
        config.origin = Some(path.to_path_buf());
        out.services.insert(name, config);
    }
    if !skipped.is_empty() {
        out.notes.push(format!(
            "not started, their compose profiles being inactive: {} (activate with COMPOSE_PROFILES \
             or `compose-profiles` in the profile)",
            skipped.join("; ")
        ));
    }
    if !ignored.is_empty() {
        out.warnings.push(format!(
            "keys with no meaning for a test session are ignored: {}",
            ignored.join("; ")
        ));
    }
    Ok(out)
}

/// The names of the services of the compose file at `path`, read without interpreting them (for an
/// overlay that names a service of another profile's compose file); None when it cannot be read.
pub(crate) fn service_names(path: &Path) -> Option<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Names {
        #[serde(default)]
        services: BTreeMap<String, serde::de::IgnoredAny>,
    }
    let text = std::fs::read_to_string(path).ok()?;
    let (names, _) = interpolate::with(interpolate::Variables::default(), || {
        serde_saphyr::from_str::<Names>(&text)
    });
    Some(names.ok()?.services.into_keys().collect())
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn convert(
    _name: &str,
    service: Service,
    base: &Path,
    ignored: &mut Vec<String>,
) -> Result<ServiceConfig, String> {
    for key in service.other.keys() {
        if IGNORED.contains(&key.as_str()) {
            ignored.push(key.clone());
        } else if key == "build" {
            return Err(
                "`build` is not supported: cargo cleantest does not build images; build it first \
                 and name it in `image`"
                    .into(),
            );
        } else if !key.starts_with("x-") {
            return Err(format!("`{key}` is not supported (supported: {SUPPORTED})"));
        }
    }
    let image = service
        .image
        .ok_or("it has no `image` (cargo cleantest does not build images)")?
        .0;
    let mut env = BTreeMap::new();
    let mut env_files = Vec::new();
    for file in service.env_file.map(|p| p.0).unwrap_or_default() {
        let path = base.join(&file);
        env_files.push(path.clone());
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("env_file {}: cannot read it: {e}", path.display()))?;
        env.extend(
            interpolate::parse_dot_env(&text)
                .map_err(|e| format!("env_file {}: {e}", path.display()))?,
        );
    }
    env.extend(environment(service.environment));
    let mut ports = Vec::new();
    let mut fixed_ports = BTreeMap::new();
    for p in service.ports {
        let (container, host) = port(p)?;
        ports.push(container);
        if let Some(host) = host {
            fixed_ports.insert(container, host);
        }
    }
    let mut config = ServiceConfig {
        image,
        command: service.command.map(|w| w.0),
        entrypoint: service.entrypoint.map(|w| w.0),
        env,
        ports,
        ready: ReadyList::default(),
        ready_timeout: None,
        depends_on: depends_on(service.depends_on)?,
        memory: None,
        cpus: None,
        // `/data:size=64m,mode=1777`: the options go to the engine with the path.
        tmpfs: service.tmpfs.map(|t| t.0).unwrap_or_default(),
        export: BTreeMap::new(),
        user: service.user.and_then(|u| u.0),
        working_dir: service.working_dir.map(|w| w.0),
        shm_size: match service.shm_size.and_then(|s| s.0) {
            Some(text) => Some(Memory::parse(&text).map_err(|e| format!("shm_size: {e}"))?),
            None => None,
        },
        mounts: service
            .volumes
            .into_iter()
            .map(|v| mount(v, base))
            .collect::<Result<_, _>>()?,
        fixed_ports,
        origin: None,
        env_files,
        isolate: None,
        migrate: None,
    };
    if let Some(deploy) = service.deploy {
        ignored.extend(deploy.other.keys().map(|k| format!("deploy.{k}")));
        if let Some(limits) = deploy.resources.and_then(|r| r.limits) {
            config.memory = limits.memory.map(|m| Memory::parse(&m.0)).transpose()?;
            config.cpus = match limits.cpus.and_then(|c| c.0) {
                Some(text) => Some(
                    text.parse()
                        .map_err(|_| format!("`cpus` {text:?} is not a number"))?,
                ),
                None => None,
            };
        }
    }
    if let Some(check) = service.healthcheck {
        healthcheck(check, &mut config)?;
    }
    Ok(config)
}

/// `KEY=VALUE`s; a key without a value takes the runner's own, or is left out, as compose does.
fn environment(env: Option<Environment>) -> BTreeMap<String, String> {
    let from_host = |key: &str| std::env::var(key).ok();
    match env {
        None => BTreeMap::new(),
        Some(Environment::Map(map)) => map
            .into_iter()
            .filter_map(|(k, v)| {
                let value = v.0.or_else(|| from_host(&k))?;
                Some((k, value))
            })
            .collect(),
        Some(Environment::List(items)) => items
            .into_iter()
            .map(|t| t.0)
            .filter_map(|item| match item.split_once('=') {
                Some((k, v)) => Some((k.to_string(), v.to_string())),
                None => from_host(&item).map(|v| (item, v)),
            })
            .collect(),
    }
}

/// A port's container side, and its host side when the file fixes one: `5432`, `"5432"`,
/// `"5433:5432"`, `"127.0.0.1:5433:5432/tcp"`, or `{ target: 5432, published: 5433 }`.
fn port(port: Port) -> Result<(u16, Option<u16>), String> {
    let (text, host, protocol) = match port {
        Port::Long {
            target,
            published,
            protocol,
            ..
        } => (
            target.to_string(),
            published.and_then(|p| p.0).filter(|p| !p.is_empty()),
            protocol,
        ),
        Port::Short(Scalar(Some(text))) => {
            let (spec, protocol) = match text.split_once('/') {
                Some((p, proto)) => (p.to_string(), Some(proto.to_string())),
                None => (text.clone(), None),
            };
            let mut parts: Vec<&str> = spec.rsplitn(3, ':').collect();
            parts.reverse();
            let container = parts.last().copied().unwrap_or("").to_string();
            let host = (parts.len() >= 2)
                .then(|| parts[parts.len() - 2].to_string())
                .filter(|h| !h.is_empty());
            (container, host, protocol)
        }
        Port::Short(Scalar(None)) => return Err("an empty entry in `ports`".into()),
    };
    if protocol.as_deref().is_some_and(|p| p != "tcp") {
        return Err(format!("port {text}: only tcp ports are published"));
    }
    let container = text
        .parse::<u16>()
        .map_err(|_| format!("port {text:?}: the container side must be one port number"))?;
    let host = match host {
        Some(h) => Some(h.parse::<u16>().map_err(|_| {
            format!("port {h:?}:{container}: the host side must be one port number")
        })?),
        None => None,
    };
    Ok((container, host))
}

fn depends_on(deps: Option<DependsOn>) -> Result<Vec<String>, String> {
    match deps {
        None => Ok(Vec::new()),
        Some(DependsOn::List(names)) => Ok(names),
        Some(DependsOn::Map(map)) => map
            .into_iter()
            .map(|(name, condition)| match condition.condition.as_deref() {
                None | Some("service_started") | Some("service_healthy") => Ok(name),
                Some(other) => Err(format!(
                    "depends_on `{name}`: condition `{other}` is not supported \
                     (service_started and service_healthy both wait until it is ready)"
                )),
            })
            .collect(),
    }
}

fn mount(spec: VolumeSpec, base: &Path) -> Result<Mount, String> {
    let (kind, source, target, read_only) = match spec {
        VolumeSpec::Short(Text(text)) => {
            let parts: Vec<&str> = text.split(':').collect();
            match parts.as_slice() {
                [target] => (None, None, target.to_string(), false),
                [source, target] => (None, Some(source.to_string()), target.to_string(), false),
                [source, target, mode] => (
                    None,
                    Some(source.to_string()),
                    target.to_string(),
                    mode.split(',').any(|m| m == "ro"),
                ),
                _ => return Err(format!("volume {text:?} is not SOURCE:TARGET[:MODE]")),
            }
        }
        VolumeSpec::Long {
            kind,
            source,
            target,
            read_only,
            ..
        } => (
            kind,
            source.map(|s| s.0),
            target.0,
            read_only.unwrap_or(false),
        ),
    };
    let is_path = |s: &str| s.starts_with(['/', '.', '~']);
    match (kind.as_deref(), source) {
        (Some("tmpfs"), _) => Err(format!("volume {target}: write it under `tmpfs`")),
        (Some("bind"), Some(source)) | (None, Some(source)) if is_path(&source) => {
            let source = PathBuf::from(&source);
            let source = if source.is_absolute() {
                source
            } else {
                base.join(source)
            };
            Ok(Mount::Bind {
                source,
                target,
                read_only,
            })
        }
        (Some("volume") | None, Some(name)) => Ok(Mount::Named { name, target }),
        (Some("volume") | None, None) => Ok(Mount::Anonymous { target }),
        (Some(other), _) => Err(format!("volume {target}: type `{other}` is not supported")),
    }
}

/// A healthcheck becomes an `exec` readiness check; its timing gives the ready-timeout (what compose
/// would wait before calling it unhealthy: the start period and every retry), at least the default.
fn healthcheck(check: Healthcheck, config: &mut ServiceConfig) -> Result<(), String> {
    if check.disable == Some(true) {
        return Ok(());
    }
    // As compose runs it: a string by a shell, verbatim; `CMD` exec'd as given.
    let argv: Vec<String> = match check.test {
        None => return Ok(()),
        Some(Test::Shell(text)) => vec!["sh".into(), "-c".into(), text],
        Some(Test::List(test)) => match test.first().map(String::as_str) {
            Some("NONE") => return Ok(()),
            Some("CMD") => test[1..].to_vec(),
            Some("CMD-SHELL") => vec!["sh".into(), "-c".into(), test[1..].join(" ")],
            _ => {
                return Err(
                    "`healthcheck.test` as a list starts with CMD, CMD-SHELL or NONE".into(),
                );
            }
        },
    };
    if argv.is_empty() || argv.last().is_some_and(|a| a.trim().is_empty()) {
        return Err("`healthcheck.test` has no command".into());
    }
    let duration = |text: Option<Text>, default: Duration| -> Result<Duration, String> {
        text.map_or(Ok(default), |t| {
            crate::cli::parse_duration(&t.0).map_err(|e| format!("healthcheck: {e}"))
        })
    };
    let interval = duration(check.interval, Duration::from_secs(30))?;
    let timeout = duration(check.timeout, Duration::from_secs(30))?;
    let start = duration(check.start_period, Duration::ZERO)?;
    let retries = check.retries.unwrap_or(3).max(1);
    let budget = start + (interval + timeout) * retries;
    config.ready = ReadyList(vec![Ready::Exec(argv)]);
    config.ready_timeout = Some(ConfigDuration(budget.max(DEFAULT_READY_TIMEOUT)));
    Ok(())
}

#[cfg(test)]
mod tests;
