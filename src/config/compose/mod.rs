//! `compose-file = "docker-compose.test.yml"`: the services of a compose file become services of the
//! session, read with a YAML parser (serde-saphyr; no compose binary is needed). Supported per service:
//! `image`, `command`, `entrypoint`, `environment` (map or list), `ports` (their container side),
//! `healthcheck` (an `exec` readiness check), `depends_on` (list, or map with `service_started` or
//! `service_healthy`), `deploy.resources.limits` (memory, cpus), `tmpfs`, `volumes` (named ones
//! labelled and swept with the session, anonymous ones removed with their container, binds) and
//! `networks` (collapsed onto the session network). Keys in `IGNORED` (and the top-level `version` and
//! `name`) are warned about and ignored; `x-` extension keys are ignored; anything else is an error
//! naming the key and the file. `model` holds the YAML's shapes.

mod model;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::duration::ConfigDuration;
use super::memory::Memory;
use super::ready::{Ready, ReadyList};
use super::services::{DEFAULT_READY_TIMEOUT, Mount, ServiceConfig};
use model::{DependsOn, Environment, File, Healthcheck, Port, Scalar, Service, VolumeSpec, Words};

/// Service keys that do not matter to a test session: warned about, then ignored.
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
const SUPPORTED: &str = "image, command, entrypoint, environment, ports, healthcheck, depends_on, \
                         deploy.resources.limits, tmpfs, volumes, networks";

/// The services of the compose file at `path`, as session services, and the warnings to print.
pub(crate) fn read(path: &Path) -> Result<(BTreeMap<String, ServiceConfig>, Vec<String>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let file: File = serde_saphyr::from_str(&text).map_err(|e| one_line(&e.to_string()))?;
    let mut warnings = Vec::new();
    for key in file.other.keys() {
        match key.as_str() {
            k if k.starts_with("x-") => {}
            "networks" => {}
            "version" | "name" => warnings.push(format!("`{key}` is ignored")),
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
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = BTreeMap::new();
    for (name, service) in file.services {
        let config = convert(&name, service, base, &mut warnings)
            .map_err(|e| format!("service `{name}`: {e}"))?;
        out.insert(name, config);
    }
    Ok((out, warnings))
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn convert(
    name: &str,
    service: Service,
    base: &Path,
    warnings: &mut Vec<String>,
) -> Result<ServiceConfig, String> {
    for key in service.other.keys() {
        if IGNORED.contains(&key.as_str()) {
            warnings.push(format!("service `{name}`: `{key}` is ignored"));
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
        .ok_or("it has no `image` (cargo cleantest does not build images)")?;
    let tmpfs = service.tmpfs.map(|w| w.0).unwrap_or_default();
    let mut config = ServiceConfig {
        image,
        command: service.command.map(|w| w.0),
        entrypoint: service.entrypoint.map(|w| w.0),
        env: environment(service.environment),
        ports: service
            .ports
            .into_iter()
            .map(port)
            .collect::<Result<_, _>>()?,
        ready: ReadyList::default(),
        ready_timeout: None,
        depends_on: depends_on(service.depends_on)?,
        memory: None,
        cpus: None,
        // `/run:size=64m`: the options are the engine's defaults here.
        tmpfs: tmpfs
            .iter()
            .map(|t| t.split(':').next().unwrap_or(t).to_string())
            .collect(),
        export: BTreeMap::new(),
        mounts: service
            .volumes
            .into_iter()
            .map(|v| mount(v, base))
            .collect::<Result<_, _>>()?,
    };
    if let Some(limits) = service
        .deploy
        .and_then(|d| d.resources)
        .and_then(|r| r.limits)
    {
        config.memory = limits.memory.as_deref().map(Memory::parse).transpose()?;
        config.cpus = match limits.cpus.and_then(|c| c.0) {
            Some(text) => Some(
                text.parse()
                    .map_err(|_| format!("`cpus` {text:?} is not a number"))?,
            ),
            None => None,
        };
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
            .filter_map(|item| match item.split_once('=') {
                Some((k, v)) => Some((k.to_string(), v.to_string())),
                None => from_host(&item).map(|v| (item, v)),
            })
            .collect(),
    }
}

/// The container side of a port: `5432`, `"5432"`, `"8080:80"`, `"127.0.0.1:8080:80/tcp"`, or
/// `{ target: 80 }`.
fn port(port: Port) -> Result<u16, String> {
    let (text, protocol) = match port {
        Port::Long {
            target, protocol, ..
        } => (target.to_string(), protocol),
        Port::Short(Scalar(Some(text))) => match text.split_once('/') {
            Some((p, proto)) => (p.to_string(), Some(proto.to_string())),
            None => (text, None),
        },
        Port::Short(Scalar(None)) => return Err("an empty entry in `ports`".into()),
    };
    if protocol.as_deref().is_some_and(|p| p != "tcp") {
        return Err(format!("port {text}: only tcp ports are published"));
    }
    let container = text.rsplit(':').next().unwrap_or(&text);
    container
        .parse::<u16>()
        .map_err(|_| format!("port {text:?}: the container side must be one port number"))
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
        VolumeSpec::Short(text) => {
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
        } => (kind, source, target, read_only.unwrap_or(false)),
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
    let Some(Words(test)) = check.test else {
        return Ok(());
    };
    let argv: Vec<String> = match test.first().map(String::as_str) {
        Some("NONE") => return Ok(()),
        Some("CMD") => test[1..].to_vec(),
        Some("CMD-SHELL") => vec!["sh".into(), "-c".into(), test[1..].join(" ")],
        _ => vec!["sh".into(), "-c".into(), test.join(" ")],
    };
    if argv.is_empty() {
        return Err("`healthcheck.test` has no command".into());
    }
    let duration = |text: Option<String>, default: Duration| -> Result<Duration, String> {
        text.map_or(Ok(default), |t| {
            crate::cli::parse_duration(&t).map_err(|e| format!("healthcheck: {e}"))
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
mod tests {
    use super::*;

    type Read = Result<(BTreeMap<String, ServiceConfig>, Vec<String>), String>;

    fn read_text(text: &str) -> Read {
        let dir = std::env::temp_dir().join(format!(
            "cleantest-compose-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("compose.yml");
        std::fs::write(&path, text).unwrap();
        let out = read(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        out
    }

    const FILE: &str = r#"
version: "3.8"
x-common: &common
  restart: always
services:
  db:
    image: postgres:15
    command: postgres -c "fsync=off"
    environment:
      POSTGRES_USER: app
      PORT: 5432
    ports: ["127.0.0.1:15432:5432", 6000, { target: 7000 }]
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "app"]
      interval: 1s
      timeout: 2s
      retries: 5
    deploy: { resources: { limits: { memory: 512M, cpus: "0.5" } } }
    tmpfs: /var/lib/postgresql/data
    volumes: ["data:/data", "/anon", "./init.sql:/init.sql:ro"]
    networks: [back]
    container_name: fixed
  api:
    image: api
    environment: ["A=1", "B"]
    depends_on:
      db: { condition: service_healthy }
volumes:
  data:
networks:
  back:
"#;

    #[test]
    fn a_compose_file_becomes_session_services() {
        let (services, warnings) = read_text(FILE).unwrap();
        let db = &services["db"];
        assert_eq!(db.image, "postgres:15");
        assert_eq!(
            db.command.as_deref(),
            Some(&["postgres".to_string(), "-c".into(), "fsync=off".into()][..])
        );
        assert_eq!(db.env["POSTGRES_USER"], "app");
        assert_eq!(db.env["PORT"], "5432");
        assert_eq!(db.ports, vec![5432, 6000, 7000]);
        assert_eq!(
            db.ready.0,
            vec![Ready::Exec(vec![
                "pg_isready".into(),
                "-U".into(),
                "app".into()
            ])]
        );
        assert_eq!(db.memory, Some(Memory(512 << 20)));
        assert_eq!(db.cpus, Some(0.5));
        assert_eq!(db.tmpfs, vec!["/var/lib/postgresql/data".to_string()]);
        assert!(
            matches!(&db.mounts[0], Mount::Named { name, target } if name == "data" && target == "/data")
        );
        assert!(matches!(&db.mounts[1], Mount::Anonymous { target } if target == "/anon"));
        assert!(matches!(
            &db.mounts[2],
            Mount::Bind {
                read_only: true,
                ..
            }
        ));
        assert_eq!(services["api"].depends_on, vec!["db".to_string()]);
        assert_eq!(services["api"].env.get("A").map(String::as_str), Some("1"));
        assert_eq!(
            warnings,
            vec![
                "`version` is ignored".to_string(),
                "service `db`: `container_name` is ignored".to_string()
            ]
        );
    }

    #[test]
    fn unsupported_keys_and_values_are_errors_naming_them() {
        for (text, says) in [
            (
                "services:\n  a:\n    image: x\n    privileged: true\n",
                "`privileged`",
            ),
            ("services:\n  a:\n    build: .\n", "does not build images"),
            ("services:\n  a:\n    command: x\n", "no `image`"),
            (
                "services:\n  a:\n    image: x\n    ports: [\"53/udp\"]\n",
                "tcp",
            ),
            (
                "services:\n  a:\n    image: x\n    depends_on:\n      b: { condition: service_completed_successfully }\n",
                "service_completed_successfully",
            ),
            ("services:\n  a:\n    image: x\nconfigs: {}\n", "`configs`"),
            (
                "services:\n  a:\n    image: x\nvolumes:\n  v: { external: true }\n",
                "external",
            ),
            ("services: [\n", ""),
        ] {
            let err = read_text(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
