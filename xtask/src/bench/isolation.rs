//! The per-test database rows of `cargo xtask bench`: postgres tests over a migrated schema of 60
//! tables, each test inserting and reading in its database, three ways: (a) every test its own
//! database from the warm pool (`isolate = "database"`, through `cleantest::database`); (b) the tests
//! of a binary sharing one database (its process's, migrated the same way); (c) every test creating a
//! fresh database and running the migrations in it, as `sqlx::test` does. Then how long a test waits
//! for its database from the pool, measured at the test, and the session's peak memory with the pool
//! against without. Every way must leave 0 containers.

use std::path::{Path, PathBuf};

use super::{Opts, Row, Samples, in_ws, push, row, sh, timed};

/// The generated workspace's library: the three ways, chosen by `BENCH_ISO_MODE`.
const LIB: &str = r#"
use std::process::Command;

fn psql(url: &str, args: &[&str]) -> String {
    let out = Command::new("psql").arg(url).args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At"]).args(args).output().unwrap();
    assert!(out.status.success(), "psql {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The test's work: a row of its own, and a read of the schema.
fn work(url: &str, id: u64, name: &str) {
    let sql = format!("INSERT INTO items (id, owner) VALUES ({id}, '{name}'); SELECT count(*) FROM t01;");
    assert_eq!(psql(url, &["-c", &sql]), "200");
}

/// A fresh database with every migration run in it (sqlx::test's way): its URL.
fn migrated(admin: &str, name: &str) -> String {
    let db = format!("m_{name}");
    psql(admin, &["-c", &format!("DROP DATABASE IF EXISTS {db}"), "-c", &format!("CREATE DATABASE {db}")]);
    let url = format!("{}/{db}", admin.rsplit_once('/').unwrap().0);
    let dir = std::env::var("BENCH_MIGRATIONS").unwrap();
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut args = Vec::new();
    for f in &files {
        args.push("-f".to_string());
        args.push(f.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    psql(&url, &args);
    url
}

pub fn test(id: u64, name: &str) {
    let started = std::time::Instant::now();
    match std::env::var("BENCH_ISO_MODE").as_deref() {
        Ok("isolated") => {
            let db = cleantest::database("db").unwrap_or_else(|e| panic!("{e}"));
            let waited = started.elapsed();
            if let Ok(dir) = std::env::var("BENCH_HANDOUT") {
                std::fs::write(format!("{dir}/{name}"), waited.as_nanos().to_string()).unwrap();
            }
            work(db.export("DATABASE_URL").unwrap(), id, name);
        }
        Ok("migrate-each") => {
            let admin = std::env::var("ADMIN_URL").unwrap();
            let url = migrated(&admin, name);
            work(&url, id, name);
            psql(&admin, &["-c", &format!("DROP DATABASE m_{name} WITH (FORCE)")]);
        }
        _ => work(&std::env::var("DATABASE_URL").unwrap(), id, name),
    }
}
"#;

const CONFIG: &str = r#"
[services.db]
image = "cleantest-postgres:15"
command = ["postgres", "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"]
tmpfs = ["/var/lib/postgresql/data"]
ports = [5432]
ready = { exec = ["/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1", "-q"] }
isolate = "database"
migrate = { sql = "migrations" }
export = { DATABASE_URL = "postgres://postgres@{host}:{port:5432}/{database}", ADMIN_URL = "postgres://postgres@{host}:{port:5432}/postgres" }
"#;

/// The schema: 60 tables with an index and 200 rows each, and the table the tests write.
fn migrations() -> (String, String) {
    let mut tables = String::new();
    for i in 1..=60 {
        tables.push_str(&format!(
            "CREATE TABLE t{i:02} (id bigserial PRIMARY KEY, name text NOT NULL, value int NOT NULL);\n\
             CREATE INDEX t{i:02}_name ON t{i:02} (name);\n\
             INSERT INTO t{i:02} (name, value) SELECT 'row ' || n, n FROM generate_series(1, 200) AS n;\n"
        ));
    }
    let items = "CREATE TABLE items (id bigint PRIMARY KEY, owner text NOT NULL);\n".to_string();
    (tables, items)
}

/// One workload's measurements.
#[derive(Default)]
struct Ways {
    isolated: Samples,
    shared: Samples,
    migrate_each: Samples,
    handout_ms: Samples,
    peak_isolated: Samples,
    peak_shared: Samples,
}

/// The rows, or why they are not measured here.
pub(super) fn rows(opts: &Opts, bin: &Path) -> Result<Vec<Row>, String> {
    if sh("command -v psql").is_err() {
        eprintln!("bench: no psql on PATH: the per-test database rows are not measured");
        return Ok(Vec::new());
    }
    crate::service_image::build("postgres", false)?;
    let mut rows = Vec::new();
    let sizes = if opts.smoke {
        [(2, 2), (2, 3)]
    } else {
        [(4, 10), (4, 50)]
    };
    for (binaries, per_binary) in sizes {
        let ws = workspace(opts, binaries, per_binary)?;
        let mut ways = Ways::default();
        for _ in 0..opts.runs.min(3) {
            measure(bin, &ws, &mut ways)?;
        }
        let tests = binaries * per_binary;
        let what = |how: &str| {
            format!("{tests} postgres tests in {binaries} binaries, 60-table schema: {how} (wall)")
        };
        rows.push(row(
            &what("a database per test from the pool vs the tests of a binary sharing one"),
            &ways.isolated,
            &ways.shared,
            "s",
            1.25,
            true,
        ));
        rows.push(row(
            &what("a database per test from the pool vs migrations run in each test's fresh database (sqlx::test's way)"),
            &ways.isolated,
            &ways.migrate_each,
            "s",
            0.3,
            true,
        ));
        rows.push(handout_row(tests, &ways.handout_ms));
        // Reported, with no target: what the pool's databases cost the server.
        let mut memory = row(
            &format!("{tests} postgres tests: the session's peak memory with the pool vs without"),
            &ways.peak_isolated,
            &ways.peak_shared,
            "MiB",
            0.0,
            true,
        );
        memory.target = "reported".into();
        memory.met = None;
        rows.push(memory);
    }
    Ok(rows)
}

/// The median wait for a database from the pool, at the test: an absolute target of 5 ms.
fn handout_row(tests: usize, handout_ms: &Samples) -> Row {
    let median = handout_ms.median();
    Row {
        what: format!(
            "{tests} postgres tests: a test's wait for its database from the warm pool (median, at the test)"
        ),
        ours: handout_ms.show("ms"),
        theirs: "—".into(),
        ratio: f64::NAN,
        target: "≤ 5 ms".into(),
        met: Some(median <= 5.0),
    }
}

/// One run of each way, alternating.
fn measure(bin: &Path, ws: &Path, ways: &mut Ways) -> Result<(), String> {
    let handout = ws.join("handout");
    let _ = std::fs::remove_dir_all(&handout);
    std::fs::create_dir_all(&handout).map_err(|e| e.to_string())?;
    push(&mut ways.isolated, way(bin, ws, "isolated", &handout)?);
    ways.peak_isolated.0.push(session_peak(ws)?);
    push(&mut ways.shared, way(bin, ws, "shared", &handout)?);
    ways.peak_shared.0.push(session_peak(ws)?);
    push(
        &mut ways.migrate_each,
        way(bin, ws, "migrate-each", &handout)?,
    );
    for entry in std::fs::read_dir(&handout)
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let nanos: f64 = std::fs::read_to_string(entry.path())
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        ways.handout_ms.0.push(nanos / 1e6);
    }
    Ok(())
}

/// The session's peak memory in MiB, as the last run's summary says it (`session peak: …`).
fn session_peak(ws: &Path) -> Result<f64, String> {
    let text = std::fs::read_to_string(ws.join("last-stdout.txt")).map_err(|e| e.to_string())?;
    let line = text
        .lines()
        .find(|l| l.starts_with("session peak:"))
        .ok_or("the run printed no session peak")?;
    let amount = line
        .split(", ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .ok_or_else(|| format!("no amount in {line:?}"))?;
    let (number, unit) = amount.split_at(amount.len() - 1);
    let value: f64 = number.parse().map_err(|e| format!("{amount:?}: {e}"))?;
    Ok(match unit {
        "g" => value * 1024.0,
        "k" => value / 1024.0,
        _ => value,
    })
}

/// One run of the workspace one way (`BENCH_ISO_MODE`); it must leave nothing labelled with its id.
fn way(bin: &Path, ws: &Path, mode: &str, handout: &Path) -> Result<f64, String> {
    let run = format!("bench-iso-{mode}-{}", std::process::id());
    let mut command = in_ws(bin, ws, &["cleantest", "--no-lock"]);
    command
        .env("BENCH_ISO_MODE", mode)
        .env("BENCH_HANDOUT", handout)
        .env("BENCH_MIGRATIONS", ws.join("migrations"))
        .env("CLEANTEST_RUN_ID", &run)
        .stdout(std::fs::File::create(ws.join("last-stdout.txt")).map_err(|e| e.to_string())?);
    let (seconds, _) = timed(&mut command)?;
    let left = sh(&format!("docker ps -aq --filter label=cleantest.run={run}"))?;
    if !left.is_empty() {
        return Err(format!("{mode} left containers: {left}"));
    }
    Ok(seconds)
}

/// Writes and builds the workspace: `binaries` test binaries of `per_binary` tests each.
fn workspace(opts: &Opts, binaries: usize, per_binary: usize) -> Result<PathBuf, String> {
    let name = format!("isolation-{binaries}x{per_binary}");
    let dir = crate::target_dir(&opts.root).join("bench").join(&name);
    let _ = std::fs::remove_dir_all(dir.join("tests"));
    for sub in ["tests", "src", ".config", "migrations"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
    }
    let write =
        |path: &str, text: &str| std::fs::write(dir.join(path), text).map_err(|e| e.to_string());
    let cleantest = opts.root.join("cleantest");
    let crate_name = name.replace('-', "_");
    write(
        "Cargo.toml",
        &format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\ncleantest = {{ path = {:?} }}\n\n[workspace]\n",
            cleantest.display().to_string()
        ),
    )?;
    write("src/lib.rs", LIB)?;
    write(".config/cleantest.toml", CONFIG)?;
    let (tables, items) = migrations();
    write("migrations/001_tables.sql", &tables)?;
    write("migrations/002_items.sql", &items)?;
    for b in 0..binaries {
        let mut text = String::new();
        for t in 0..per_binary {
            let id = b * per_binary + t;
            text.push_str(&format!(
                "#[test]\nfn t{t:03}() {{ {crate_name}::test({id}, \"b{b}_t{t}\"); }}\n"
            ));
        }
        write(&format!("tests/b{b:02}.rs"), &text)?;
    }
    super::build_workspace(&dir, &name)?;
    Ok(dir)
}
