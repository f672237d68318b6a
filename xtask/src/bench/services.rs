//! The session-services rows of `cargo xtask bench`: 40 tests in 4 binaries, each needing postgres
//! (connect, create a table, insert, select, through the host's psql), on `cleantest-postgres:15`,
//! three ways: (a) a container per test, created, waited for and removed by the test, as careful
//! testcontainers users do; (b) one container per binary in a `static`, never removed (the leak the
//! runner's sweep cleans); (c) a session service; (c′) the same service declared in test code
//! (`cleantest::Service`, started on demand through the control socket); (d) and (d′): (c′) and
//! (c) under plain `cargo test`, through the crate's session host. Then a cold build with a session service: how long
//! after the build's end the first test starts. Every way must leave 0 containers.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::{Opts, Row, Samples, in_ws, push, row, sh, timed};

/// The generated workspace's library: the three ways, chosen by `BENCH_PG_MODE`.
const LIB: &str = r#"
use std::process::Command;
use std::sync::OnceLock;

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Starts a postgres container and waits until it accepts connections: (its id, its URL).
fn start() -> (String, String) {
    let id = run("docker", &["run", "-d", "-p", "127.0.0.1::5432", "--tmpfs", "/var/lib/postgresql/data",
        "cleantest-postgres:15", "postgres", "-c", "fsync=off"]);
    let port = run("docker", &["port", &id, "5432/tcp"]);
    let port = port.lines().next().unwrap().rsplit(':').next().unwrap().to_string();
    loop {
        let ready = Command::new("docker")
            .args(["exec", &id, "/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1", "-q"])
            .status()
            .unwrap();
        if ready.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (id, format!("postgres://postgres@127.0.0.1:{port}/postgres"))
}

fn work(url: &str, table: &str) {
    let sql = format!("create table {table} (n int); insert into {table} values (1), (2); select sum(n) from {table};");
    let out = run("psql", &[url, "-v", "ON_ERROR_STOP=1", "-At", "-c", &sql]);
    assert_eq!(out.lines().last(), Some("3"), "{out}");
}

static SHARED: OnceLock<String> = OnceLock::new();

/// One test's work, the way `BENCH_PG_MODE` says.
pub fn test(table: &str) {
    if let Ok(dir) = std::env::var("BENCH_MARKS") {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let _ = std::fs::write(format!("{dir}/{table}"), now.as_nanos().to_string());
    }
    match std::env::var("BENCH_PG_MODE").as_deref() {
        Ok("per-test") => {
            let (id, url) = start();
            work(&url, table);
            run("docker", &["rm", "-f", "-v", &id]);
        }
        Ok("per-binary") => work(SHARED.get_or_init(|| start().1), table),
        Ok("in-code") => {
            let db = cleantest::Service::new("db", "cleantest-postgres:15")
                .command(["postgres", "-c", "fsync=off"])
                .port(5432)
                .tmpfs("/var/lib/postgresql/data")
                .ready_exec(["/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1", "-q"])
                .start()
                .unwrap_or_else(|e| panic!("{e}"));
            work(&db.render("postgres://postgres@{host}:{port:5432}/postgres").unwrap(), table)
        }
        // Under plain cargo test: the config's service, through the session host.
        Ok("host-config") => {
            let db = cleantest::service("db").unwrap_or_else(|e| panic!("{e}"));
            work(&db.render("postgres://postgres@{host}:{port:5432}/postgres").unwrap(), table)
        }
        _ => work(&std::env::var("DATABASE_URL").unwrap(), table),
    }
}
"#;

const CONFIG: &str = r#"
[services.db]
image = "cleantest-postgres:15"
command = ["postgres", "-c", "fsync=off"]
ports = [5432]
ready = { exec = ["/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1", "-q"] }
tmpfs = ["/var/lib/postgresql/data"]
export = { DATABASE_URL = "postgres://postgres@{host}:{port:5432}/postgres" }

# The same database declared in test code (cleantest::Service) instead.
[profile.code]
services = []
"#;

/// The rows, or why they are not measured here.
pub(super) fn rows(opts: &Opts, bin: &Path) -> Result<Vec<Row>, String> {
    if sh("command -v psql").is_err() {
        eprintln!("bench: no psql on PATH: the services rows are not measured");
        return Ok(Vec::new());
    }
    crate::service_image::build("postgres", false)?;
    let (binaries, per_binary) = if opts.smoke { (2, 2) } else { (4, 10) };
    let ws = workspace(opts, binaries, per_binary, false)?;
    let runs = opts.runs.min(3);
    let (mut per_test, mut per_binary_static, mut service, mut in_code) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let (mut host_code, mut host_config) = (Samples::default(), Samples::default());
    for _ in 0..runs {
        push(&mut per_test, way(bin, &ws, "per-test")?);
        push(&mut per_binary_static, way(bin, &ws, "per-binary")?);
        push(&mut service, way(bin, &ws, "service")?);
        push(&mut in_code, way(bin, &ws, "in-code")?);
        push(&mut host_code, plain_way(bin, &ws, "in-code")?);
        push(&mut host_config, plain_way(bin, &ws, "host-config")?);
    }
    let tests = binaries * per_binary;
    // (c) and (c′) against (a) and (b), with the issue's targets.
    let mut rows = Vec::new();
    for (ours, how) in [
        (&service, "a session service"),
        (&in_code, "declared in code (cleantest::Service)"),
        (
            &host_code,
            "plain `cargo test`, declared in code, through the session host",
        ),
        (
            &host_config,
            "plain `cargo test`, the config's service, through the session host",
        ),
    ] {
        for (theirs, other, target) in [
            (&per_test, "a container per test", 0.15),
            (
                &per_binary_static,
                "a container per binary in a `static`",
                0.6,
            ),
        ] {
            let what = format!("{tests} postgres tests: {how} vs {other} (wall)");
            rows.push(row(&what, ours, theirs, "s", target, true));
        }
    }
    rows.push(cold_build(opts, bin, binaries, per_binary)?);
    Ok(rows)
}

/// Writes and builds the workspace: `heavy` adds a dependency (regex) so that a cold build takes as
/// long as a real project's.
fn workspace(
    opts: &Opts,
    binaries: usize,
    per_binary: usize,
    heavy: bool,
) -> Result<PathBuf, String> {
    let name = if heavy { "services-cold" } else { "services" };
    let dir = crate::target_dir(&opts.root).join("bench").join(name);
    let _ = std::fs::remove_dir_all(dir.join("tests"));
    for sub in ["tests", "src", ".config"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
    }
    let cleantest = opts.root.join("cleantest");
    let mut deps = format!(
        "cleantest = {{ path = {:?} }}\n",
        cleantest.display().to_string()
    );
    if heavy {
        deps.push_str("regex = \"1\"\n");
    }
    let manifest = format!(
        "[package]\nname = \"bench-{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n{deps}\n[workspace]\n"
    );
    let write =
        |path: &str, text: &str| std::fs::write(dir.join(path), text).map_err(|e| e.to_string());
    write("Cargo.toml", &manifest)?;
    let lib = if heavy {
        format!(
            "{LIB}\npub fn heavy() -> bool {{ regex::Regex::new(\"a+\").unwrap().is_match(\"aa\") }}\n"
        )
    } else {
        LIB.to_string()
    };
    write("src/lib.rs", &lib)?;
    write(".config/cleantest.toml", CONFIG)?;
    for b in 0..binaries {
        let mut text = String::new();
        for t in 0..per_binary {
            text.push_str(&format!(
                "#[test]\nfn t{t:03}() {{ bench_{}::test(\"b{b}_t{t}\"); }}\n",
                name.replace('-', "_")
            ));
        }
        write(&format!("tests/b{b:02}.rs"), &text)?;
    }
    super::build_workspace(&dir, name)?;
    Ok(dir)
}

/// A run id of its own for one timed run (`CLEANTEST_RUN_ID`): what it leaves is told apart from what
/// other runs on the same engine (a test suite beside the bench) have at the time.
fn run_id(mode: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("bench-{mode}-{}-{nanos}", std::process::id())
}

/// Containers labelled with the run id `run`, in any state.
fn containers_of(run: &str) -> Result<usize, String> {
    Ok(
        sh(&format!("docker ps -aq --filter label=cleantest.run={run}"))?
            .lines()
            .filter(|l| !l.is_empty())
            .count(),
    )
}

/// One run of the workspace one way (`mode`: the tests' own containers; None: the session service).
fn way(bin: &Path, ws: &Path, mode: &str) -> Result<f64, String> {
    let run = run_id(mode);
    let mut args = vec!["cleantest", "--no-lock"];
    match mode {
        // The tests start their own containers: no session service.
        "per-test" | "per-binary" => args.push("--no-services"),
        // No config service, the control socket on.
        "in-code" => args.extend(["-P", "code"]),
        _ => {}
    }
    let mut command = in_ws(bin, ws, &args);
    command
        .env("BENCH_PG_MODE", mode)
        .env("CLEANTEST_RUN_ID", &run);
    let (seconds, _) = timed(&mut command)?;
    let left = containers_of(&run)?;
    if left > 0 {
        return Err(format!("{mode} left {left} container(s)"));
    }
    Ok(seconds)
}

/// How long the session host may take to sweep after cargo's exit.
const HOST_SWEEP_BOUND: Duration = Duration::from_secs(10);

/// One run of the workspace under plain `cargo test` (no `cargo cleantest`): the crate starts a session
/// host (`cargo-cleantest` is first on PATH). Timed until cargo exits, as a user waits; then the host
/// must have removed its containers within `HOST_SWEEP_BOUND`.
fn plain_way(bin: &Path, ws: &Path, mode: &str) -> Result<f64, String> {
    let run = run_id(mode);
    let mut command = in_ws(bin, ws, &["test"]);
    command
        .env("BENCH_PG_MODE", mode)
        .env("CLEANTEST_RUN_ID", &run)
        .env_remove("CLEANTEST_SESSION")
        .env_remove("CLEANTEST_CONTROL")
        .env_remove("CLEANTEST_HOST");
    let (seconds, _) = timed(&mut command)?;
    let deadline = std::time::Instant::now() + HOST_SWEEP_BOUND;
    while containers_of(&run)? > 0 {
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "plain cargo test ({mode}): the session host left postgres containers after {HOST_SWEEP_BOUND:?}"
            ));
        }
        // Polling the engine for a condition it sends no event of, within the bound.
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(seconds)
}

/// A cold build (the workspace's own crates and regex rebuilt) with a session service: seconds from the
/// build's end (the newest test binary's modification time) to the first test's start.
fn cold_build(opts: &Opts, bin: &Path, binaries: usize, per_binary: usize) -> Result<Row, String> {
    let ws = workspace(opts, binaries, per_binary, true)?;
    let marks = ws.join("marks");
    let mut samples = Samples::default();
    for _ in 0..opts.runs.min(3) {
        let _ = std::fs::remove_dir_all(ws.join("target"));
        let _ = std::fs::remove_dir_all(&marks);
        std::fs::create_dir_all(&marks).map_err(|e| e.to_string())?;
        let mut command = in_ws(bin, &ws, &["cleantest", "--no-lock"]);
        command.env("BENCH_MARKS", &marks);
        timed(&mut command)?;
        let first_test = earliest_mark(&marks)?;
        let build_end = newest_test_binary(&ws.join("target/debug/deps"))?;
        push(&mut samples, (first_test - build_end).max(0.0));
    }
    let met = samples.median() <= 1.0;
    Ok(Row {
        what: "cold build with a postgres session service: first test starts after the build's end"
            .into(),
        ours: samples.show("s"),
        theirs: "—".into(),
        ratio: f64::NAN,
        target: "≤ 1 s".into(),
        met: Some(met),
    })
}

/// The earliest test start written in `marks` (seconds since the epoch).
fn earliest_mark(marks: &Path) -> Result<f64, String> {
    std::fs::read_dir(marks)
        .map_err(|e| e.to_string())?
        .flatten()
        .filter_map(|e| {
            std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse::<u128>()
                .ok()
        })
        .min()
        .map(|nanos| nanos as f64 / 1e9)
        .ok_or_else(|| "no test wrote its start".to_string())
}

/// When the newest test binary in `deps` was written (seconds since the epoch).
fn newest_test_binary(deps: &Path) -> Result<f64, String> {
    std::fs::read_dir(deps)
        .map_err(|e| e.to_string())?
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with('b') && !name.contains('.')
        })
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
        .map(|t| {
            t.duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64()
        })
        .ok_or_else(|| "no test binary was built".to_string())
}
