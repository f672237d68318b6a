//! Per-test databases (`isolate`) against the real engine, on the postgres and redis images built
//! from Debian's packages (`fixtures/isolation`). The fixture's tests collide when they share a
//! database: each inserts a fixed primary key, then counts the rows and looks for the migration's seed
//! row. They pass in shared mode through the crate, under `--isolate` through `DATABASE_URL`, and under
//! plain `cargo test` and nextest through the crate; the same tests fail when a whole binary shares one
//! database, which shows that the check can fail. A server with the user's own create and drop commands
//! (the fixture image) does the same. A failing migration is exit 5 with psql's words;
//! `--keep-on-failure` names the failed test's database; a SIGKILLed runner leaves nothing.

use crate::common;
use crate::service_image;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::docker::*;
use common::*;
use libtest_mimic::Failed;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The fixture's postgres tests.
const PG_TESTS: usize = 8;

/// The cells of this module.
pub fn cells() -> Vec<Cell> {
    let mut cells = vec![
        trial(
            "in_shared_mode_every_test_gets_its_own_database_through_the_crate",
            shared_through_the_crate,
        ),
        trial(
            "under_isolate_database_url_names_each_tests_own_database",
            isolated_through_the_environment,
        ),
        trial(
            "the_same_tests_fail_when_a_binary_shares_one_database",
            without_isolation,
        ),
        trial(
            "plain_cargo_test_gets_each_test_its_own_database_and_leaves_nothing",
            || under_another_runner(&["test"]),
        ),
        trial(
            "a_failing_migration_stops_the_run_with_exit_5_and_what_psql_said",
            failing_migration,
        ),
        trial(
            "keep_on_failure_names_the_failed_tests_database_ready_for_psql",
            keep_on_failure,
        ),
        trial("sigkill_of_the_runner_leaves_no_database_server", sigkill),
    ];
    for cell in &mut cells {
        cell.unavailable = clients_problem();
    }
    let mut dirs = trial(
        "create_and_drop_commands_give_each_test_a_database_of_the_services_own_making",
        commands_of_the_user,
    );
    dirs.unavailable = clients_problem();
    cells.push(dirs);
    let mut small = trial(
        "when_every_index_is_held_the_next_holder_is_refused_never_given_one_in_use",
        exhausted,
    );
    small.unavailable = clients_problem();
    cells.push(small);
    let mut redis = trial(
        "db_index_gives_each_redis_test_its_own_index",
        redis_db_index,
    );
    redis.unavailable = clients_problem();
    cells.push(redis);
    let mut nextest = trial(
        "nextest_gets_each_test_its_own_database_through_the_crate",
        || under_another_runner(&["nextest", "run"]),
    );
    nextest.unavailable = clients_problem();
    nextest.optional = (!tool_works(&["nextest", "--version"]))
        .then(|| "cargo-nextest is not installed (cargo install cargo-nextest)".to_string());
    cells.push(nextest);
    engine_cells(cells)
}

/// Why the images or the host's clients are missing here, if they are.
fn clients_problem() -> Option<String> {
    if !Path::new("/usr/lib/postgresql/15/bin/postgres").exists() {
        return Some("postgresql-15 is not installed (apt-get install postgresql-15)".into());
    }
    for (tool, package) in [("psql", "postgresql-client"), ("redis-cli", "redis-tools")] {
        let works = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !works {
            return Some(format!(
                "{tool} is not installed (apt-get install {package})"
            ));
        }
    }
    if !Path::new("/usr/bin/redis-server").exists() {
        return Some("redis-server is not installed (apt-get install redis-server)".into());
    }
    None
}

fn tool_works(args: &[&str]) -> bool {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A run of the fixture: its mark, state directory and the directory its tests write probes to.
struct Run {
    mark: String,
    state: TempDir,
    out: TempDir,
}

impl Run {
    fn new(label: &str) -> Result<Run, Failed> {
        service_image::build("postgres", false)?;
        service_image::build("redis", false)?;
        Ok(Run {
            mark: unique_mark(label),
            state: temp_dir("iso-state"),
            out: temp_dir("iso-probes"),
        })
    }

    /// `cargo cleantest ARGS` in the fixture; its tests get their databases `via` the crate or env.
    fn cleantest(&self, via: &str) -> Command {
        let mut command = cleantest("isolation", &self.mark);
        command
            .env("CLEANTEST_STATE_DIR", &*self.state)
            .env("CT_IT_OUT", &*self.out)
            .env("CT_VIA", via)
            .env_remove("CT_FAIL")
            .env_remove("CT_HANG")
            .arg("--no-lock");
        command
    }

    /// What each test wrote (the database it saw), by test.
    fn seen(&self) -> Vec<String> {
        let mut seen: Vec<String> = std::fs::read_dir(&self.out)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            })
            .collect();
        seen.sort();
        seen
    }

    /// `tests` probes, each naming a database no other test saw.
    fn check_distinct(&self, tests: usize) -> Result<(), Failed> {
        let seen = self.seen();
        let distinct: BTreeSet<&String> = seen.iter().collect();
        check(seen.len() == tests && distinct.len() == tests, || {
            format!(
                "{} probes (of {tests}), {} distinct: {seen:?}",
                seen.len(),
                distinct.len()
            )
        })
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state);
        let _ = std::fs::remove_dir_all(&self.out);
    }
}

fn shared_through_the_crate() -> Result<(), Failed> {
    let run = Run::new("iso-shared")?;
    let (pid, out) = run_owned(run.cleantest("crate"))?;
    check_exit(&out, 0)?;
    check(stderr(&out).contains("Prepared databases of db"), || {
        stderr(&out)
    })?;
    run.check_distinct(PG_TESTS)?;
    check_nothing_owned(pid)
}

fn isolated_through_the_environment() -> Result<(), Failed> {
    let run = Run::new("iso-isolate")?;
    let (pid, out) = run_owned({
        let mut c = run.cleantest("env");
        c.arg("--isolate");
        c
    })?;
    check_exit(&out, 0)?;
    run.check_distinct(PG_TESTS)?;
    check_nothing_owned(pid)
}

/// In shared mode the environment's database is the binary process's: its tests share it, and all
/// but the first to insert fail on the fixed key.
fn without_isolation() -> Result<(), Failed> {
    let run = Run::new("iso-none")?;
    let (pid, out) = run_owned(run.cleantest("env"))?;
    check_exit(&out, 101)?;
    let totals = last_totals(&out);
    check(totals.passed == 1 && totals.failed == PG_TESTS - 1, || {
        format!("{totals:?}\n{}", stdout(&out))
    })?;
    check(stdout(&out).contains("duplicate key"), || stdout(&out))?;
    check_nothing_owned(pid)
}

/// Outside `cargo cleantest`: the session host starts the service, prepares its template and hands
/// each test its own database; everything is gone once cargo exits.
fn under_another_runner(args: &[&str]) -> Result<(), Failed> {
    let run = Run::new("iso-host")?;
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(args)
        .current_dir(fixture("isolation"))
        .env("CARGO_TARGET_DIR", fixture_target_dir())
        .env("CLEANTEST_RUNNER", env!("CARGO_BIN_EXE_cargo-cleantest"))
        .env("CLEANTEST_STATE_DIR", &*run.state)
        .env("CLEANTEST_RUN_ID", &run.mark)
        .env("CT_IT_OUT", &*run.out)
        .env("CT_IT_MARK", &run.mark)
        .env("CT_VIA", "crate")
        .env_remove("CLEANTEST_SESSION")
        .env_remove("CLEANTEST_CONTROL")
        .env_remove("CLEANTEST_HOST")
        .env_remove("CLEANTEST_PROFILE")
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("RUST_TEST_THREADS")
        .output()?;
    check_success(&out)?;
    run.check_distinct(PG_TESTS)?;
    let filter = format!("label=cleantest.run={}", run.mark);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matching(None, &filter).is_empty() && Instant::now() < deadline {
        // Polling the engine for a condition it sends no event of, within the bound.
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = matching(None, &filter);
    check(left.is_empty(), || {
        format!("left after cargo's exit: {left:?}")
    })
}

fn redis_db_index() -> Result<(), Failed> {
    let run = Run::new("iso-redis")?;
    let (pid, out) = run_owned({
        let mut c = run.cleantest("crate");
        c.args(["-P", "redis", "--test", "redis", "--", "--ignored"]);
        c
    })?;
    check_exit(&out, 0)?;
    let totals = last_totals(&out);
    check(totals.passed == 6, || {
        format!("{totals:?}\n{}", stdout(&out))
    })?;
    // Indexes are reused once flushed: never index 0, the one a client without a database reads.
    let seen = run.seen();
    check(
        seen.len() == 6 && seen.iter().all(|u| !u.ends_with("/0")),
        || format!("{seen:?}"),
    )?;
    check_nothing_owned(pid)
}

/// `isolate = { create, drop }` on the fixture image: each test reads back, over HTTP, the file its
/// database's `create` command wrote.
fn commands_of_the_user() -> Result<(), Failed> {
    let run = Run::new("iso-dirs")?;
    let (pid, out) = run_owned({
        let mut c = run.cleantest("crate");
        c.args(["-P", "dirs", "--test", "dirs", "--", "--ignored"]);
        c
    })?;
    check_exit(&out, 0)?;
    run.check_distinct(4)?;
    check_nothing_owned(pid)
}

fn exhausted() -> Result<(), Failed> {
    let run = Run::new("iso-small")?;
    let (pid, out) = run_owned({
        let mut c = run.cleantest("crate");
        c.args(["-P", "small", "--test", "exhaust", "--", "--ignored"]);
        c
    })?;
    check_exit(&out, 0)?;
    let seen = run.seen();
    check(seen == ["1 2 refused"] || seen == ["2 1 refused"], || {
        format!("{seen:?}")
    })?;
    check_nothing_owned(pid)
}

fn failing_migration() -> Result<(), Failed> {
    let run = Run::new("iso-broken")?;
    let (pid, out) = run_owned({
        let mut c = run.cleantest("crate");
        c.args(["-P", "broken"]);
        c
    })?;
    check_exit(&out, 5)?;
    let err = stderr(&out);
    check(
        err.contains("002_typo.sql") && err.contains("TABEL") && !stdout(&out).contains("test "),
        || err.clone(),
    )?;
    check_nothing_owned(pid)
}

fn keep_on_failure() -> Result<(), Failed> {
    let run = Run::new("iso-keep")?;
    let (pid, out) = run_owned({
        let mut c = run.cleantest("crate");
        c.env("CT_FAIL", "pg_3")
            .env("CLEANTEST_RUN_ID", &run.mark)
            .arg("--keep-on-failure");
        c
    })?;
    let checked = check_kept(&out, &stderr(&out));
    let kept = owned_by(pid);
    // What was kept is swept (by the run's id) whatever the checks found.
    let mut sweep = cleantest("isolation", &run.mark);
    sweep
        .env("CLEANTEST_STATE_DIR", &*run.state)
        .args(["sweep", "--run", &run.mark]);
    check_success(&run_owned(sweep)?.1)?;
    checked?;
    check(kept.len() == 1, || format!("kept containers: {kept:?}"))?;
    check_nothing_owned(pid)
}

/// The run failed, and named pg_3's database with a URL that reaches it, holding what pg_3 wrote.
fn check_kept(out: &std::process::Output, err: &str) -> Result<(), Failed> {
    check_exit(out, 101)?;
    let line = err
        .lines()
        .find(|l| l.contains("kept database") && l.contains("pg::pg_3:"))
        .ok_or_else(|| format!("no kept database for pg_3:\n{err}"))?;
    let url = line
        .split("DATABASE_URL=")
        .nth(1)
        .ok_or_else(|| format!("no URL in {line:?}"))?
        .trim();
    let read = Command::new("psql")
        .args([url, "-X", "-At", "-c", "SELECT owner FROM items"])
        .output()?;
    check(stdout(&read).trim() == "pg_3", || {
        format!("{url}: {} {}", stdout(&read), stderr(&read))
    })
}

fn sigkill() -> Result<(), Failed> {
    let run = Run::new("iso-kill")?;
    let mut child = run
        .cleantest("crate")
        .env("CT_HANG", "pg_1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    wait_for_file(&run.out.join("pg_1"), Duration::from_secs(120));
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL)?;
    child.wait()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(owned_by(pid).is_empty() && networks_owned_by(pid).is_empty())
        && Instant::now() < deadline
    {
        // The reaper sweeps after the runner is gone: no event to wait on from here.
        std::thread::sleep(Duration::from_millis(100));
    }
    check_nothing_owned(pid)?;
    assert_no_survivors(&run.mark);
    Ok(())
}
