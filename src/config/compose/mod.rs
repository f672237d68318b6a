//! `compose-file = "docker-compose.test.yml"`: the services of a compose file become services of the
//! session, read with a YAML parser (serde-saphyr; no compose binary is needed). Supported per service:
//! `image`, `command`, `entrypoint`, `environment` (map or list), `ports` (their container side),
//! `healthcheck` (an `exec` readiness check), `depends_on` (list, or map with `service_started` or
//! `service_healthy`), `deploy.resources.limits` (memory, cpus), `tmpfs`, `volumes` (named ones
//! labelled and swept with the session, anonymous ones removed with their container, binds) and
//! `networks` (collapsed onto the session network). Keys in `IGNORED` (and the top-level `version` and
//! `name`) are warned about and ignored; `x-` extension keys are ignored; anything else is an error
//! naming the key and the file. `model` holds the YAML's shapes.

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
    for file in service.env_file.map(|p| p.0).unwrap_or_default() {
        let path = base.join(&file);
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
mod tests {
    use super::*;

    /// Reads `text` as a compose file, beside `files` (`.env`, env files), with compose profiles `active`.
    fn read_with(text: &str, files: &[(&str, &str)], active: &[&str]) -> Result<Read, String> {
        let dir = std::env::temp_dir().join(format!(
            "cleantest-compose-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("compose.yml");
        std::fs::write(&path, text).unwrap();
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
        let active: Vec<String> = active.iter().map(|p| p.to_string()).collect();
        let out = read(&path, &active);
        std::fs::remove_dir_all(&dir).unwrap();
        out
    }

    fn read_text(text: &str) -> Result<Read, String> {
        read_with(text, &[], &[])
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
        let Read {
            services,
            warnings,
            notes,
        } = read_text(FILE).unwrap();
        let db = &services["db"];
        assert_eq!(db.image, "postgres:15");
        assert_eq!(
            db.command.as_deref(),
            Some(&["postgres".to_string(), "-c".into(), "fsync=off".into()][..])
        );
        assert_eq!(db.env["POSTGRES_USER"], "app");
        assert_eq!(db.env["PORT"], "5432");
        assert_eq!(db.ports, vec![5432, 6000, 7000]);
        // The host side the file fixes is kept, and said.
        assert_eq!(db.fixed_ports, BTreeMap::from([(5432, 15432)]));
        assert!(
            notes.iter().any(|n| n.contains("fixed host port 15432")),
            "{notes:?}"
        );
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
        // `version` is obsolete: nothing said. Ignored keys: one line for the file.
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("db: container_name"), "{warnings:?}");
    }

    #[test]
    fn values_are_interpolated_from_the_environment_and_the_dot_env_file() {
        let text = r#"
services:
  db:
    image: "postgres:${PG_TAG:-14}"
    environment:
      POSTGRES_USER: "${DB_USER}"
      PLAIN: "$$HOME ${NOT_SET_ANYWHERE}"
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U $${POSTGRES_USER}"]
"#;
        let read = read_with(text, &[(".env", "PG_TAG=15\nDB_USER=app\n")], &[]).unwrap();
        let db = &read.services["db"];
        assert_eq!(db.image, "postgres:15");
        assert_eq!(db.env["POSTGRES_USER"], "app");
        assert_eq!(db.env["PLAIN"], "$HOME ");
        assert_eq!(
            db.ready.0,
            vec![Ready::Exec(vec![
                "sh".into(),
                "-c".into(),
                "pg_isready -U ${POSTGRES_USER}".into()
            ])]
        );
        assert!(
            read.warnings.iter().any(|w| w.contains("NOT_SET_ANYWHERE")),
            "{:?}",
            read.warnings
        );
        let err = read_text(
            "services:\n  a:\n    image: \"${NO_TAG_HERE:?set NO_TAG_HERE to the tag}\"\n",
        )
        .unwrap_err();
        assert!(err.contains("set NO_TAG_HERE to the tag"), "{err}");
        let err = read_text("services:\n  a:\n    image: x\n    command: [\"echo\", \"$ x\"]\n")
            .unwrap_err();
        assert!(err.contains("$$"), "{err}");
    }

    #[test]
    fn a_string_healthcheck_runs_verbatim_in_a_shell() {
        let text = "services:\n  db:\n    image: x\n    healthcheck:\n      test: psql -U postgres -tAc 'select 1'\n";
        let read = read_text(text).unwrap();
        assert_eq!(
            read.services["db"].ready.0,
            vec![Ready::Exec(vec![
                "sh".into(),
                "-c".into(),
                "psql -U postgres -tAc 'select 1'".into()
            ])]
        );
    }

    #[test]
    fn engine_keys_profiles_and_env_files_are_read() {
        let text = r#"
services:
  db:
    image: postgres:15
    env_file: [db.env]
    environment: { B: from-environment }
    shm_size: 256m
    user: "999:999"
    working_dir: /srv
    tmpfs: ["/data:size=64m,mode=1777"]
    deploy:
      replicas: 1
      restart_policy: { condition: on-failure }
    restart: always
  debug:
    image: busybox
    profiles: [tools]
"#;
        let files = [("db.env", "A=from-file\nB=from-file\n")];
        let read = read_with(text, &files, &[]).unwrap();
        let db = &read.services["db"];
        assert_eq!(db.env["A"], "from-file");
        assert_eq!(db.env["B"], "from-environment");
        assert_eq!(db.shm_size, Some(Memory(256 << 20)));
        assert_eq!(db.user.as_deref(), Some("999:999"));
        assert_eq!(db.working_dir.as_deref(), Some("/srv"));
        assert_eq!(db.tmpfs, vec!["/data:size=64m,mode=1777".to_string()]);
        assert!(!read.services.contains_key("debug"));
        assert!(
            read.notes.iter().any(|n| n.contains("debug (tools)")),
            "{:?}",
            read.notes
        );
        let ignored = read.warnings.join("\n");
        assert!(
            ignored.contains("deploy.replicas") && ignored.contains("deploy.restart_policy"),
            "{ignored}"
        );
        let read = read_with(text, &files, &["tools"]).unwrap();
        assert!(read.services.contains_key("debug"));
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
