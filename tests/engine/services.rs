//! Session services against the real engine (`fixtures/services`, busybox services on the fixture
//! image): the contract's environment in both modes and in doctests, one container per service for the
//! whole run, `depends-on` order and each readiness kind (the services sleep before they listen, and
//! the fixture's probes fail if they run too early), exit 5 with the log tail, `--keep-on-failure`, a
//! service killed mid-run, `--no-services`, and SIGINT or SIGKILL while services start.
//!
//! A run's containers are found by the owner label `cleantest.pid=<runner pid>`: the runner is started
//! directly, so the child's pid is the owner's.

use crate::common;
use crate::service_image;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::docker::*;
use common::*;
use libtest_mimic::Failed;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The cells of this module.
pub fn cells() -> Vec<Cell> {
    let mut postgres = trial(
        "a_real_postgres_service_is_shared_by_every_test_process",
        real_postgres,
    );
    postgres.unavailable = postgres_problem();
    engine_cells(vec![
        postgres,
        trial(
            "every_process_in_both_modes_and_doctests_shares_one_container_per_service",
            shared_by_every_process,
        ),
        trial(
            "a_service_that_exits_stops_the_run_with_exit_5_and_its_log_tail",
            failing_service_exits_5,
        ),
        trial(
            "a_missing_image_says_what_to_do_before_the_sweep_it_caused",
            missing_image_exits_5,
        ),
        trial(
            "a_service_not_ready_within_its_ready_timeout_exits_5",
            slow_service_exits_5,
        ),
        trial(
            "keep_on_failure_keeps_a_failed_service",
            keep_on_failure_keeps_the_service,
        ),
        trial(
            "kept_services_are_named_after_their_session_and_say_how_to_reach_them",
            kept_services_are_named_and_reachable,
        ),
        trial(
            "a_service_killed_mid_run_is_reported_in_junit",
            killed_service_is_reported,
        ),
        trial(
            "no_services_starts_none_and_exec_gets_the_default_ones",
            no_services_and_exec,
        ),
        trial("sigint_while_services_start_leaves_nothing", || {
            stopped_while_starting(Signal::SIGINT)
        }),
        trial("sigkill_while_services_start_leaves_nothing", || {
            stopped_while_starting(Signal::SIGKILL)
        }),
        trial(
            "the_services_command_lists_them_in_start_order",
            services_command,
        ),
        trial(
            "a_compose_files_services_start_healthy_first_and_leave_nothing",
            compose_services,
        ),
        trial(
            "an_overlay_exports_from_a_compose_service_and_exec_takes_its_profile",
            compose_overlay,
        ),
        trial(
            "a_compose_services_mistakes_name_the_compose_file_and_say_why",
            compose_mistakes,
        ),
        docs_example_cell(),
    ])
}

/// `[services.echo]` without `image` adds an export to the compose file's `echo`; `exec -P` and
/// `CLEANTEST_PROFILE` pick the profile for `exec` as for a test run.
fn compose_overlay() -> Result<(), Failed> {
    for how in ["-P", "CLEANTEST_PROFILE"] {
        let mark = unique_mark("compose-overlay");
        let (pid, out) = run_owned({
            let mut c = cleantest("compose-edges", &mark);
            c.env("CLEANTEST_STATE_DIR", run_dir("state")).arg("exec");
            if how == "-P" {
                c.args(["-P", "overlay"]);
            } else {
                c.env("CLEANTEST_PROFILE", "overlay");
            }
            c.args(["--no-lock", "--", "sh", "-c", "echo URL=$ECHO_URL"]);
            c
        })?;
        check_exit(&out, 0)?;
        check(stdout(&out).contains("URL=tcp://127.0.0.1:"), || {
            format!("{how}: no export: {}{}", stdout(&out), stderr(&out))
        })?;
        check_nothing_owned(pid)?;
    }
    Ok(())
}

/// A compose service's mistakes are the compose file's, in compose's words; a check that fails says its
/// exit code and output; one whose command cannot run ends the wait at once.
fn compose_mistakes() -> Result<(), Failed> {
    let run_profile = |profile: &str| {
        run_owned({
            let mut c = cleantest("compose-edges", &unique_mark("compose-mistake"));
            c.env("CLEANTEST_STATE_DIR", run_dir("state")).args([
                "exec",
                "-P",
                profile,
                "--no-lock",
                "--",
                "true",
            ]);
            c
        })
    };
    let (_, out) = run_profile("wrong-file")?;
    check_exit(&out, 2)?;
    let err = stderr(&out);
    check(
        err.contains("wrong-file.yml")
            && err.contains("`depends_on`")
            && !err.contains("[services."),
        || format!("not the compose file's words: {err}"),
    )?;
    let (pid, out) = run_profile("unrunnable")?;
    check_exit(&out, 5)?;
    let err = stderr(&out);
    check(
        err.contains(r#"["redis-cli ping"]"#) && err.contains("cannot run"),
        || format!("the check's argv or why it cannot pass is missing: {err}"),
    )?;
    check_nothing_owned(pid)?;
    let (pid, out) = run_profile("failing")?;
    check_exit(&out, 5)?;
    let err = stderr(&out);
    check(err.contains("exit code 1: still-warming-up"), || {
        format!("the check's last exit code and output are missing: {err}")
    })?;
    check_nothing_owned(pid)
}

/// The first config example of docs/services.md, on this repository's own images: every service ready.
fn docs_example_cell() -> Cell {
    let mut cell = trial(
        "the_guides_services_example_starts_on_our_own_images",
        docs_example,
    );
    cell.unavailable = postgres_problem();
    cell
}

fn docs_example() -> Result<(), Failed> {
    service_image::build("postgres", false)?;
    let guide = std::fs::read_to_string(root().join("docs/services.md"))?;
    let example = guide
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .ok_or("no toml example in docs/services.md")?;
    let dir = scratch_crate("docs-example", "", Some(example));
    let (pid, out) = run_owned({
        let mut c = cleantest("services", &unique_mark("docs-example"));
        c.current_dir(&dir)
            .env("CLEANTEST_STATE_DIR", run_dir("state"))
            .args([
                "exec",
                "--no-lock",
                "--",
                "sh",
                "-c",
                "test -n \"$DATABASE_URL\"",
            ]);
        c
    })?;
    check_exit(&out, 0)?;
    check_nothing_owned(pid)
}

/// Why the postgres image cannot be built or used here, if it cannot.
fn postgres_problem() -> Option<String> {
    if !Path::new("/usr/lib/postgresql/15/bin/postgres").exists() {
        return Some("postgresql-15 is not installed (apt-get install postgresql-15)".into());
    }
    let psql = Command::new("psql").arg("--version").output();
    if !psql.is_ok_and(|o| o.status.success()) {
        return Some("psql is not installed".into());
    }
    None
}

/// The real postgres image as a service: two isolated tests, each its own process, share one server.
fn real_postgres() -> Result<(), Failed> {
    service_image::build("postgres", false)?;
    let mark = unique_mark("services-pg");
    let (state, out) = (temp_dir("state"), temp_dir("probes"));
    let (pid, output) = run_owned({
        let mut c = services_run(&mark, &state, &out);
        c.args([
            "-P",
            "postgres",
            "--isolate",
            "--test",
            "pg",
            "--",
            "--ignored",
        ]);
        c
    })?;
    check_exit(&output, 0)?;
    let (files, seen) = seen_by_service(&out);
    let servers = seen.get("db").cloned().unwrap_or_default();
    check(files == 2 && servers.len() == 1, || {
        format!("{files} probes, servers {servers:?}")
    })?;
    check_nothing_owned(pid)?;
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

fn services_run(mark: &str, state: &Path, out: &Path) -> Command {
    let mut command = cleantest("services", mark);
    command
        .env("CLEANTEST_STATE_DIR", state)
        .env("CT_IT_OUT", out)
        .arg("--no-lock");
    command
}

/// `SERVICE HOSTNAME` lines of every probe file in `dir`, by service.
fn seen_by_service(dir: &Path) -> (usize, BTreeMap<String, BTreeSet<String>>) {
    let mut files = 0;
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        files += 1;
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            if let Some((service, host)) = line.split_once(' ') {
                seen.entry(service.into()).or_default().insert(host.into());
            }
        }
    }
    (files, seen)
}

fn shared_by_every_process() -> Result<(), Failed> {
    let mut hosts_of_runs = Vec::new();
    for mode in [None, Some("--isolate")] {
        let mark = unique_mark("services-shared");
        let (state, out) = (temp_dir("state"), temp_dir("probes"));
        let (pid, output) = run_owned({
            let mut c = services_run(&mark, &state, &out);
            c.args(mode);
            c
        })?;
        check_exit(&output, 0)?;
        let (files, seen) = seen_by_service(&out);
        // a_one, a_two, b_one and the doctest: each a process of its own in isolated mode.
        check(files >= 4, || format!("{mode:?}: {files} probe files"))?;
        for service in ["queue", "logged", "execd", "web"] {
            let hosts = seen.get(service).cloned().unwrap_or_default();
            check(hosts.len() == 1, || {
                format!("{mode:?}: {service} was served by {hosts:?}")
            })?;
        }
        hosts_of_runs.push(seen["queue"].clone());
        check_nothing_owned(pid)?;
        let _ = std::fs::remove_dir_all(&state);
        let _ = std::fs::remove_dir_all(&out);
    }
    check(hosts_of_runs[0] != hosts_of_runs[1], || {
        "two runs shared one container".into()
    })
}

fn failing_service_exits_5() -> Result<(), Failed> {
    let mark = unique_mark("services-broken");
    let (state, out) = (temp_dir("state"), temp_dir("probes"));
    let (pid, output) = run_owned({
        let mut c = services_run(&mark, &state, &out);
        c.args(["-P", "broken"]);
        c
    })?;
    let err = stderr(&output);
    check_exit(&output, 5)?;
    // The tail of the service's own log, both streams.
    check(
        err.contains("broken-service-says-hello") && err.contains("broken-service-gives-up"),
        || format!("no log tail: {err}"),
    )?;
    check(seen_by_service(&out).0 == 0, || "a test ran".into())?;
    check_nothing_owned(pid)?;
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

/// A service whose image is missing: exit 5 with advice a user can follow (pull, build, or change
/// `image`; not `ready-timeout`, not this repository's xtask), and the sweep's line after the error.
fn missing_image_exits_5() -> Result<(), Failed> {
    let mark = unique_mark("services-missing");
    let (state, out) = (temp_dir("state"), temp_dir("probes"));
    let (pid, output) = run_owned({
        let mut c = services_run(&mark, &state, &out);
        c.args(["-P", "missing"]);
        c
    })?;
    let err = stderr(&output);
    check_exit(&output, 5)?;
    let error = err
        .find("error: ")
        .ok_or_else(|| format!("no error line: {err}"))?;
    check(err[error..].contains("cleantest-no-such-image:0"), || {
        err.clone()
    })?;
    check(
        err.contains("docker pull") && err.contains("`image`"),
        || format!("no advice a user can follow: {err}"),
    )?;
    check(
        !err.contains("ready-timeout") && !err.contains("xtask"),
        || format!("advice that does not apply: {err}"),
    )?;
    check(!err[..error].contains("swept"), || {
        format!("the sweep's line comes before the error: {err}")
    })?;
    check(seen_by_service(&out).0 == 0, || "a test ran".into())?;
    check_nothing_owned(pid)?;
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

fn slow_service_exits_5() -> Result<(), Failed> {
    let mark = unique_mark("services-never");
    let (state, out) = (temp_dir("state"), temp_dir("probes"));
    let (pid, output) = run_owned({
        let mut c = services_run(&mark, &state, &out);
        c.args(["-P", "never"]);
        c
    })?;
    let err = stderr(&output);
    check_exit(&output, 5)?;
    check(err.contains("tcp 7000"), || {
        format!("the check is not named: {err}")
    })?;
    check_nothing_owned(pid)?;
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

fn keep_on_failure_keeps_the_service() -> Result<(), Failed> {
    let mark = unique_mark("services-keep");
    let (state, out) = (temp_dir("state"), temp_dir("probes"));
    let (pid, output) = run_owned({
        let mut c = services_run(&mark, &state, &out);
        c.args(["-P", "broken", "--keep-on-failure"]);
        c
    })?;
    let kept = owned_by(pid);
    let session = kept
        .first()
        .map(|id| {
            docker(&[
                "inspect",
                "-f",
                "{{index .Config.Labels \"cleantest.session\"}}",
                id,
            ])
        })
        .unwrap_or_default();
    let swept = Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"))
        .env("CLEANTEST_STATE_DIR", &*state)
        .args(["sweep", "--session", session.trim()])
        .output()?;
    check_exit(&output, 5)?;
    check(kept.len() == 1, || format!("kept: {kept:?}"))?;
    check(swept.status.success() && owned_by(pid).is_empty(), || {
        format!("the kept service was not swept: {}", stderr(&swept))
    })?;
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

/// A command that fails under `exec --keep-on-failure` keeps the profile's services: each container is
/// named `cleantest-<session>-<service>` (not a random Docker name), and the kept table is followed by
/// each service's exports, ready to paste. Then the session's sweep removes them.
fn kept_services_are_named_and_reachable() -> Result<(), Failed> {
    let mark = unique_mark("services-kept-names");
    let (state, out) = (temp_dir("state"), temp_dir("probes"));
    let (pid, output) = run_owned({
        let mut c = cleantest("services", &mark);
        c.env("CLEANTEST_STATE_DIR", state.path())
            .env("CT_IT_OUT", out.path())
            .args(["exec", "--no-lock", "--keep-on-failure", "--", "false"]);
        c
    })?;
    let kept = owned_by(pid);
    let names: Vec<(String, String)> = kept
        .iter()
        .map(|id| {
            let line = docker(&[
                "inspect",
                "-f",
                "{{.Name}} {{index .Config.Labels \"cleantest.session\"}}",
                id,
            ]);
            let (name, session) = line.trim().split_once(' ').unwrap_or_default();
            (name.to_string(), session.to_string())
        })
        .collect();
    let session = names.first().map(|(_, s)| s.clone()).unwrap_or_default();
    let swept = Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"))
        .env("CLEANTEST_STATE_DIR", state.path())
        .args(["sweep", "--session", &session])
        .output()?;
    check_exit(&output, 1)?;
    check(kept.len() == 4, || format!("kept: {names:?}"))?;
    for service in ["queue", "web", "logged", "execd"] {
        let want = format!("/cleantest-{session}-{service}");
        check(names.iter().any(|(n, _)| *n == want), || {
            format!("no container {want}: {names:?}")
        })?;
    }
    let err = stderr(&output);
    check(err.contains("connect:  web: WEB_URL=http://"), || {
        err.clone()
    })?;
    check(swept.status.success() && owned_by(pid).is_empty(), || {
        format!("the kept services were not swept: {}", stderr(&swept))
    })
}

fn killed_service_is_reported() -> Result<(), Failed> {
    let mark = unique_mark("services-victim");
    let (state, out) = (temp_dir("state"), temp_dir("probes"));
    let junit = state.join("junit.xml");
    let (pid, output) = run_owned({
        let mut c = services_run(&mark, &state, &out);
        c.args(["-P", "victim", "--junit"]).arg(&junit).args([
            "--test",
            "a",
            "--",
            "--ignored",
            "kills_its_service_then_fails",
        ]);
        c
    })?;
    let xml = std::fs::read_to_string(&junit).unwrap_or_default();
    check_exit(&output, 101)?;
    check(
        xml.contains("cleantest.service.victim") && xml.contains("exited with code 137"),
        || format!("the service's death is not in the JUnit report:\n{xml}"),
    )?;
    // The failed run kept the service's log, saved before the sweep.
    let logs: Vec<_> = std::fs::read_dir(state.join("service-logs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|session| session.path().join("victim.log"))
        .filter(|log| log.is_file())
        .collect();
    check(logs.len() == 1, || {
        format!("the service's log was not kept: {logs:?}")
    })?;
    check_nothing_owned(pid)?;
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

fn no_services_and_exec() -> Result<(), Failed> {
    let mark = unique_mark("services-exec");
    let state = temp_dir("state");
    let env_of = |extra: &[&str]| -> Result<String, Failed> {
        let output = Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"))
            .current_dir(fixture("services"))
            .env("CLEANTEST_STATE_DIR", &*state)
            .env("CT_IT_MARK", &mark)
            .args(["exec", "--no-lock"])
            .args(extra)
            .args(["--", "env"])
            .output()?;
        check(output.status.success(), || stderr(&output))?;
        Ok(stdout(&output))
    };
    let without = env_of(&["--no-services"])?;
    let with = env_of(&[])?;
    check(!without.contains("CLEANTEST_SERVICE_"), || without.clone())?;
    for name in [
        "CLEANTEST_SERVICE_QUEUE_HOST=127.0.0.1",
        "CLEANTEST_SERVICE_QUEUE_PORT_4222=",
        "CLEANTEST_SERVICE_EXECD_PORT_6000=",
        "WEB_URL=http://127.0.0.1:",
    ] {
        check(with.contains(name), || format!("no {name} in:\n{with}"))?;
    }
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

/// A signal while a service waits for its readiness check (profile `slow`, never ready): the run stops
/// without waiting for the timeout, and nothing of it is left (SIGKILL: the reaper sweeps).
fn stopped_while_starting(signal: Signal) -> Result<(), Failed> {
    let mark = unique_mark("services-stop");
    let (state, out) = (temp_dir("state"), temp_dir("probes"));
    let mut child: Child = services_run(&mark, &state, &out)
        .args(["-P", "slow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while owned_by(pid).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    check(!owned_by(pid).is_empty(), || {
        "the service never started".into()
    })?;
    let stopped = Instant::now();
    kill(Pid::from_raw(pid as i32), signal)?;
    let status = child.wait()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(owned_by(pid).is_empty() && networks_owned_by(pid).is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    check_nothing_owned(pid)?;
    if signal == Signal::SIGINT {
        check(status.code() == Some(130), || format!("{status:?}"))?;
        // Not held up by the service's 60 s ready-timeout.
        check(stopped.elapsed() < Duration::from_secs(30), || {
            format!("the run took {:?} to stop", stopped.elapsed())
        })?;
    }
    assert_no_survivors(&mark);
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

fn services_command() -> Result<(), Failed> {
    let output = Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"))
        .current_dir(fixture("services"))
        .arg("services")
        .output()?;
    let text = stdout(&output);
    let at = |name: &str| text.find(&format!("  {name}: "));
    check(output.status.success(), || stderr(&output))?;
    check(
        matches!((at("queue"), at("web")), (Some(q), Some(w)) if q < w),
        || format!("queue is not listed before web:\n{text}"),
    )?;
    check(
        text.contains("WEB_URL=http://{host}:{port:8080}/queue"),
        || text.clone(),
    )
}

/// The compose profile: `app` waits for `store`'s healthcheck and reads what it wrote into their shared
/// named volume; the named and the anonymous volume go with the session.
fn compose_services() -> Result<(), Failed> {
    let mark = unique_mark("services-compose");
    let (state, out) = (temp_dir("state"), temp_dir("probes"));
    let (pid, output) = run_owned({
        let mut c = services_run(&mark, &state, &out);
        c.args(["-P", "compose", "--test", "compose", "--", "--ignored"]);
        c
    })?;
    check_exit(&output, 0)?;
    let volumes = std::fs::read_to_string(out.join("volumes")).unwrap_or_default();
    let left: Vec<&str> = volumes
        .split_whitespace()
        .filter(|v| {
            Command::new("docker")
                .args(["volume", "inspect", v])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    check(
        volumes.split_whitespace().count() == 2 && left.is_empty(),
        || format!("volumes {volumes:?}, left {left:?}"),
    )?;
    check_nothing_owned(pid)?;
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
