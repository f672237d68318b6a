//! Compose files read as docker-compose reads them, judged by docker-compose itself (v1, Debian's).
//! Each case of `fixtures/compose/cases/` is brought up by `docker-compose up -d` (and waited for until
//! healthy) and by `cargo cleantest exec -P <case>`; what the engine holds for each service is compared:
//! image, command, entrypoint, environment, user, working directory, memory and cpu limits, tmpfs with
//! options, shm size, mount points, fixed host ports, and that its healthcheck passes. Then both sides
//! are gone: `docker-compose down -v` and the session's sweep leave nothing.
//!
//! Where the session differs on purpose, the case says so in one line per difference (published host
//! ports, the network, labels, the names and hostnames of containers, restart policies and init, how a
//! healthcheck is run).

use crate::common;
use crate::service_image;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::docker::*;
use common::*;
use libtest_mimic::Failed;
use serde_json::Value;

/// Fields compared, as paths into `docker inspect`'s JSON.
const COMPARED: &[&str] = &[
    "Config.Image",
    "Config.Cmd",
    "Config.Entrypoint",
    "Config.User",
    "Config.WorkingDir",
    "HostConfig.Memory",
    "HostConfig.NanoCpus",
    "HostConfig.Tmpfs",
    "HostConfig.ShmSize",
];

/// What differs on purpose, said once per case.
const ON_PURPOSE: &[&str] = &[
    "host ports: free ones unless the file fixes one (docker-compose binds 0.0.0.0 and picks its own)",
    "network: one network per session, each service aliased by its name (not the file's networks)",
    "labels: the session's (cleantest.*), not com.docker.compose.*",
    "names and hostnames: the engine's (container_name and hostname would collide between sessions)",
    "restart, init, tty, stdin_open, logging: ignored (a test session restarts nothing)",
    "healthcheck: run by the runner until ready, not configured on the container",
];

/// The cells of this module.
pub fn cells() -> Vec<Cell> {
    let compose_problem = Command::new("docker-compose")
        .arg("version")
        .output()
        .map_or(true, |o| !o.status.success())
        .then(|| {
            "docker-compose is not installed (CI installs Debian's docker-compose)".to_string()
        });
    let services_problem = [
        "/usr/lib/postgresql/15/bin/postgres",
        "/usr/bin/redis-server",
    ]
    .iter()
    .find(|p| !Path::new(p).exists())
    .map(|p| format!("{p} is missing (install postgresql-15 and redis-server)"));
    let mut cases: Vec<String> = std::fs::read_dir(fixture("compose").join("cases"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    assert!(cases.len() >= 25, "the corpus has {} cases", cases.len());
    let cells = cases
        .into_iter()
        .map(|case| {
            let name = case.clone();
            let mut cell = trial(case, move || compare(&name));
            cell.unavailable = compose_problem.clone().or_else(|| services_problem.clone());
            cell
        })
        .collect();
    engine_cells(cells)
}

/// The environment both sides run in: what some cases take from it.
fn case_env(command: &mut Command) -> &mut Command {
    command
        .env("CT_FROM_HOST", "from-host")
        .env_remove("CT_FIXTURE_TAG")
        .env_remove("CT_GREETING")
        .env_remove("CT_MODE")
        .env_remove("CT_TAG")
        .env_remove("COMPOSE_PROFILES")
}

fn compare(case: &str) -> Result<(), Failed> {
    service_image_for(case)?;
    let dir = fixture("compose").join("cases").join(case);
    let theirs = compose_side(case, &dir)?;
    let (ours, said) = session_side(case)?;
    // What the session says of a file: `version` nothing, ignored keys one line for the file.
    let warnings = said.lines().filter(|l| l.starts_with("warning:")).count();
    let expected = match case {
        "19-ignored-keys" | "21-deploy-keys" => 1,
        _ => 0,
    };
    check(warnings == expected, || {
        format!("{case}: {warnings} warning lines, not {expected}:\n{said}")
    })?;
    let names = |m: &BTreeMap<String, Value>| m.keys().cloned().collect::<BTreeSet<_>>();
    check(names(&theirs) == names(&ours), || {
        format!(
            "{case}: services started: docker-compose {:?}, cargo cleantest {:?}",
            names(&theirs),
            names(&ours)
        )
    })?;
    let mut differences = Vec::new();
    for (service, their) in &theirs {
        let our = &ours[service];
        for field in COMPARED {
            let (a, b) = (at(their, field), at(our, field));
            if normal(&a) != normal(&b) {
                differences.push(format!("{service}: {field}: docker-compose {a}, ours {b}"));
            }
        }
        let env = |v: &Value| -> BTreeSet<String> {
            at(v, "Config.Env")
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.as_str().map(str::to_string))
                .collect()
        };
        if env(their) != env(our) {
            differences.push(format!(
                "{service}: environment: docker-compose {:?}, ours {:?}",
                env(their),
                env(our)
            ));
        }
        let mounts = |v: &Value| -> BTreeSet<String> {
            at(v, "Mounts")
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["Destination"].as_str().map(str::to_string))
                .collect()
        };
        if mounts(their) != mounts(our) {
            differences.push(format!(
                "{service}: mounts: docker-compose {:?}, ours {:?}",
                mounts(their),
                mounts(our)
            ));
        }
        // A host port the file fixes is the same on both sides.
        let fixed = |v: &Value| -> BTreeSet<String> {
            at(v, "HostConfig.PortBindings")
                .as_object()
                .into_iter()
                .flatten()
                .flat_map(|(port, bindings)| {
                    bindings
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|b| b["HostPort"].as_str())
                        .filter(|h| !h.is_empty())
                        .map(move |h| format!("{port}->{h}"))
                })
                .collect()
        };
        if fixed(their) != fixed(our) {
            differences.push(format!(
                "{service}: fixed host ports: docker-compose {:?}, ours {:?}",
                fixed(their),
                fixed(our)
            ));
        }
    }
    for line in ON_PURPOSE {
        eprintln!("{case}: differs on purpose: {line}");
    }
    check(differences.is_empty(), || {
        format!("{case}:\n  {}", differences.join("\n  "))
    })
}

/// The real service images the case uses, built here when missing (no registry).
fn service_image_for(case: &str) -> Result<(), Failed> {
    let text = std::fs::read_to_string(
        fixture("compose")
            .join("cases")
            .join(case)
            .join("docker-compose.yml"),
    )?;
    for (image, name) in [
        ("cleantest-postgres:15", "postgres"),
        ("cleantest-redis:7", "redis"),
    ] {
        if text.contains(image) {
            service_image::build(name, false)?;
        }
    }
    Ok(())
}

/// docker-compose's containers for the case, by service, once every healthcheck passed; then
/// `down -v`, which must leave nothing of the project.
fn compose_side(case: &str, dir: &Path) -> Result<BTreeMap<String, Value>, Failed> {
    let project = format!(
        "ctc{}",
        unique_mark(case)
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_lowercase()
    );
    let compose = |args: &[&str]| {
        let mut command = Command::new("docker-compose");
        command.current_dir(dir).args(["-p", &project]).args(args);
        case_env(&mut command).output()
    };
    let up = compose(&["up", "-d"])?;
    let inspected = if up.status.success() {
        wait_healthy(&project).and_then(|()| {
            inspect(
                &format!("com.docker.compose.project={project}"),
                "com.docker.compose.service",
            )
        })
    } else {
        Err(format!("docker-compose up: {}", stderr(&up)).into())
    };
    let down = compose(&["down", "-v", "-t", "0"])?;
    check(down.status.success(), || {
        format!("docker-compose down: {}", stderr(&down))
    })?;
    let left = matching(None, &format!("label=com.docker.compose.project={project}"));
    check(left.is_empty(), || format!("docker-compose left {left:?}"))?;
    inspected
}

/// Until every container of the project with a healthcheck is healthy (at most a minute).
fn wait_healthy(project: &str) -> Result<(), Failed> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
            "--format",
            "{{.Names}} {{.Status}}",
        ]);
        let waiting: Vec<&str> = states
            .lines()
            .filter(|l| l.contains("(health: starting)") || l.contains("(unhealthy)"))
            .collect();
        if waiting.is_empty() && !states.trim().is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not healthy within 60s: {states}").into());
        }
        // Polling the engine's view: compose has no "wait" in v1.
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `docker inspect` of the containers carrying `filter`, keyed by their `key` label.
fn inspect(filter: &str, key: &str) -> Result<BTreeMap<String, Value>, Failed> {
    let ids = docker(&["ps", "-aq", "--filter", &format!("label={filter}")]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut args = vec!["inspect"];
    args.extend(&ids);
    let all: Value = serde_json::from_str(&docker(&args))?;
    Ok(all
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let name = c["Config"]["Labels"][key].as_str()?.to_string();
            Some((name, c.clone()))
        })
        .collect())
}

/// The session's containers for the case, while `cargo cleantest exec -P <case>` runs: its command
/// inspects them (the services are ready before it starts). Then nothing of the session is left.
fn session_side(case: &str) -> Result<(BTreeMap<String, Value>, String), Failed> {
    let mark = unique_mark("compose-ours");
    let out_file = run_dir("compose-ours").join("inspect.json");
    let script = format!(
        "ids=$(docker ps -aq --filter label=cleantest.session=$CLEANTEST_SESSION --filter label=cleantest.service); \
         if [ -n \"$ids\" ]; then docker inspect $ids > {0}; else echo '[]' > {0}; fi",
        out_file.display()
    );
    let (pid, out) = run_owned({
        let mut command = cleantest("compose", &mark);
        command
            .env("CLEANTEST_STATE_DIR", run_dir("compose-state"))
            .args(["exec", "-P", case, "--no-lock", "--", "sh", "-c", &script]);
        case_env(&mut command);
        command
    })?;
    check(out.status.success(), || {
        format!(
            "cargo cleantest exec -P {case}: {:?}\n{}",
            out.status,
            stderr(&out)
        )
    })?;
    check_nothing_owned(pid)?;
    let all: Value = serde_json::from_str(&std::fs::read_to_string(&out_file)?)?;
    let by_service = all
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let name = c["Config"]["Labels"]["cleantest.service"]
                .as_str()?
                .to_string();
            Some((name, c.clone()))
        })
        .collect();
    Ok((by_service, stderr(&out)))
}

/// The value at a dotted path.
fn at(value: &Value, path: &str) -> Value {
    path.split('.').fold(value, |v, key| &v[key]).clone()
}

/// Values that mean the same to the engine compared as equal: null, "", 0, [] and {} are "unset".
fn normal(value: &Value) -> Value {
    match value {
        Value::String(s) if s.is_empty() => Value::Null,
        Value::Number(n) if n.as_i64() == Some(0) => Value::Null,
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Object(o) if o.is_empty() => Value::Null,
        other => other.clone(),
    }
}
