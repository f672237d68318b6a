//! The test-author crate `cleantest` against the real engine (`fixtures/library`): a container declared
//! in test code is started once for the whole session (two binaries, the doctest, `--isolate`), a
//! second spec for a name and a dead service are errors, and plain `cargo test` gets an error that says
//! how to run the tests, with nothing started.

use crate::common;
use crate::service_image;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use common::docker::*;
use common::*;
use libtest_mimic::Failed;

/// The cells of this module.
pub fn cells() -> Vec<Cell> {
    let redis_problem = redis_problem();
    let redis_cells: Vec<Cell> = [
        (
            "a_real_redis_declared_in_code_is_one_container_in_both_modes",
            redis_shared as fn() -> Result<(), Failed>,
        ),
        (
            "a_real_redis_declared_in_code_is_gone_after_a_failure_a_timeout_sigint_and_sigkill",
            redis_gone_however_the_run_ends,
        ),
    ]
    .into_iter()
    .map(|(name, f)| {
        let mut cell = trial(name, f);
        cell.unavailable = redis_problem.clone();
        cell
    })
    .collect();
    let mut cells = redis_cells;
    cells.extend(vec![
        trial(
            "a_service_declared_in_code_is_one_container_for_the_whole_session",
            one_container_per_session,
        ),
        trial(
            "a_second_spec_and_a_dead_service_are_errors",
            conflicts_and_deaths,
        ),
        trial(
            "plain_cargo_test_gets_an_error_that_says_how_to_run_the_tests",
            outside_a_session,
        ),
        trial(
            "a_timeout_while_a_test_waits_for_a_service_says_so",
            timeout_while_waiting,
        ),
        trial(
            "the_control_socket_refuses_processes_outside_the_session",
            outsiders_are_refused,
        ),
    ]);
    engine_cells(cells)
}

fn library_run(mark: &str, state: &Path, out: &Path) -> Command {
    let mut command = cleantest("library", mark);
    command
        .env("CLEANTEST_STATE_DIR", state)
        .env("CT_IT_OUT", out)
        .arg("--no-lock")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn hostnames(dir: &Path) -> (usize, BTreeSet<String>) {
    let mut files = 0;
    let mut hosts = BTreeSet::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        files += 1;
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        hosts.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("echo "))
                .map(str::to_string),
        );
    }
    (files, hosts)
}

fn one_container_per_session() -> Result<(), Failed> {
    for mode in [None, Some("--isolate")] {
        let mark = unique_mark("library");
        let (state, out) = (temp_dir("state"), temp_dir("probes"));
        let child = library_run(&mark, &state, &out).args(mode).spawn()?;
        let pid = child.id();
        let output = child.wait_with_output()?;
        check_exit(&output, 0)?;
        let (files, hosts) = hostnames(&out);
        // Five tests in two binaries, and the doctest.
        check(files == 6 && hosts.len() == 1, || {
            format!("{mode:?}: {files} probes served by {hosts:?}")
        })?;
        check(owned_by(pid).is_empty(), || {
            format!("{mode:?}: left {:?}", owned_by(pid))
        })?;
        let _ = std::fs::remove_dir_all(&state);
        let _ = std::fs::remove_dir_all(&out);
    }
    Ok(())
}

fn conflicts_and_deaths() -> Result<(), Failed> {
    let mark = unique_mark("library-errors");
    let (state, out) = (temp_dir("state"), temp_dir("probes"));
    let child = library_run(&mark, &state, &out)
        .args(["--test", "a", "--", "--ignored"])
        .spawn()?;
    let pid = child.id();
    let output = child.wait_with_output()?;
    check_exit(&output, 0)?;
    check_nothing_owned(pid)?;
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

fn outside_a_session() -> Result<(), Failed> {
    // Other cells run beside this one, but their containers carry a session; one started behind the
    // user's back would not.
    let unlabelled = || {
        docker(&[
            "ps",
            "-a",
            "--filter",
            "ancestor=cleantest-fixture:latest",
            "--format",
            "{{.ID}} {{.Label \"cleantest.session\"}}",
        ])
        .lines()
        .filter(|l| l.split_whitespace().count() == 1)
        .map(str::to_string)
        .collect::<BTreeSet<String>>()
    };
    let before = unlabelled();
    let output = cargo_test("library")
        .args(["--test", "b"])
        .env_remove("CLEANTEST_SESSION")
        .env_remove("CLEANTEST_CONTROL")
        // Today's error, without the session host (tests/engine/any_runner.rs covers the host).
        .env("CLEANTEST_HOST", "off")
        .output()?;
    let after = unlabelled();
    let text = format!("{}{}", stdout(&output), stderr(&output));
    check(!output.status.success(), || {
        "the tests passed without a session".into()
    })?;
    check(
        text.contains("run the tests with `cargo cleantest`") && text.contains("cargo install"),
        || format!("the error does not say how to run the tests:\n{text}"),
    )?;
    check(before == after, || "a container was started".into())
}

fn timeout_while_waiting() -> Result<(), Failed> {
    let mark = unique_mark("library-timeout");
    let (state, out) = (temp_dir("state"), temp_dir("probes"));
    let junit = state.join("junit.xml");
    let child = library_run(&mark, &state, &out)
        .args(["--timeout", "3s", "--isolate", "--junit"])
        .arg(&junit)
        .args([
            "--test",
            "b",
            "--",
            "--ignored",
            "waits_for_a_service_that_never_comes",
        ])
        .spawn()?;
    let pid = child.id();
    let output = child.wait_with_output()?;
    let xml = std::fs::read_to_string(&junit).unwrap_or_default();
    check_exit(&output, 101)?;
    check(xml.contains("timed out waiting for service never"), || {
        format!("the timeout does not say what it waited for:\n{xml}")
    })?;
    check_nothing_owned(pid)?;
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

/// A process that is not part of the session (this test) is refused, whatever it sends, and the
/// runner keeps serving its own.
fn outsiders_are_refused() -> Result<(), Failed> {
    use std::io::{BufRead, BufReader, Write};
    let mark = unique_mark("library-outsider");
    let state = temp_dir("state");
    let said = state.join("control");
    let script = format!(
        "echo $CLEANTEST_CONTROL > {}; exec sleep 1000",
        said.display()
    );
    let mut runner = exec_in_session(&mark, &state)
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_for_file(&said, std::time::Duration::from_secs(60));
    let path = std::fs::read_to_string(&said).unwrap_or_default();
    let mut answers = Vec::new();
    for request in [
        r#"{"v":1,"op":"start","name":"x","spec":{"image":"cleantest-fixture:latest"}}"#,
        "not json at all",
        "",
    ] {
        let mut stream = std::os::unix::net::UnixStream::connect(path.trim())?;
        writeln!(stream, "{request}")?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer)?;
        answers.push(answer);
    }
    let alive = runner.try_wait()?.is_none();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runner.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = runner.wait();
    let _ = std::fs::remove_dir_all(&state);
    check(alive, || "the runner died".into())?;
    for answer in &answers {
        check(
            answer.contains(r#""ok":false"#) && answer.contains("not part of session"),
            || format!("an outsider was served: {answer}"),
        )?;
    }
    assert_no_survivors(&mark);
    Ok(())
}

/// Why the redis image cannot be built here, if it cannot.
fn redis_problem() -> Option<String> {
    (!Path::new("/usr/bin/redis-server").exists())
        .then(|| "redis-server is not installed (apt-get install redis-server)".to_string())
}

fn redis_run(mark: &str, state: &Path, out: &Path) -> Command {
    let mut command = cleantest("shared-redis", mark);
    command
        .env("CLEANTEST_STATE_DIR", state)
        .env("CT_IT_OUT", out)
        .arg("--no-lock");
    command
}

/// The redis run ids the tests wrote.
fn run_ids(dir: &Path) -> (usize, BTreeSet<String>) {
    let mut probes = 0;
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for id in text.lines().filter_map(|l| l.strip_prefix("redis ")) {
            probes += 1;
            ids.insert(id.to_string());
        }
    }
    (probes, ids)
}

/// Ten tests in two binaries, shared mode and `--isolate`: one redis server for the whole session.
fn redis_shared() -> Result<(), Failed> {
    service_image::build("redis", false)?;
    for mode in [None, Some("--isolate")] {
        let mark = unique_mark("redis");
        let (state, out) = (temp_dir("state"), temp_dir("probes"));
        let (pid, output) = run_owned({
            let mut c = redis_run(&mark, &state, &out);
            c.args(mode);
            c
        })?;
        check_exit(&output, 0)?;
        let (probes, ids) = run_ids(&out);
        check(probes == 10 && ids.len() == 1, || {
            format!("{mode:?}: {probes} tests saw servers {ids:?}")
        })?;
        check_nothing_owned(pid)?;
        let _ = std::fs::remove_dir_all(&state);
        let _ = std::fs::remove_dir_all(&out);
    }
    Ok(())
}

/// Whatever way the run ends — a failed test, a timeout, SIGINT, the runner SIGKILLed — nothing of
/// the session's redis is left.
fn redis_gone_however_the_run_ends() -> Result<(), Failed> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    service_image::build("redis", false)?;
    for (name, args) in [
        (
            "fail",
            vec!["--test", "b", "--", "--ignored", "fails_on_purpose"],
        ),
        (
            "timeout",
            vec!["--timeout", "2s", "--test", "b", "--", "--ignored", "hangs"],
        ),
    ] {
        let mark = unique_mark("redis-end");
        let (state, out) = (temp_dir("state"), temp_dir("probes"));
        let (pid, output) = run_owned({
            let mut c = redis_run(&mark, &state, &out);
            c.args(&args);
            c
        })?;
        check(output.status.code() == Some(101), || {
            format!("{name}: exit {:?}", output.status.code())
        })?;
        check(run_ids(&out).0 == 1, || {
            format!("{name}: redis was not used")
        })?;
        check_nothing_owned(pid)?;
        let _ = std::fs::remove_dir_all(&state);
        let _ = std::fs::remove_dir_all(&out);
    }
    for signal in [Signal::SIGINT, Signal::SIGKILL] {
        let mark = unique_mark("redis-signal");
        let (state, out) = (temp_dir("state"), temp_dir("probes"));
        let mut child = redis_run(&mark, &state, &out)
            .args(["--test", "b", "--", "--ignored", "hangs"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let pid = child.id();
        wait_for_file(&out.join("hanging"), std::time::Duration::from_secs(120));
        check(!owned_by(pid).is_empty(), || "no redis ran".into())?;
        kill(Pid::from_raw(pid as i32), signal)?;
        let status = child.wait()?;
        // SIGKILL: the reaper sweeps after the runner; give it its time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !owned_by(pid).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        check_nothing_owned(pid)?;
        if signal == Signal::SIGINT {
            check(status.code() == Some(130), || format!("{status:?}"))?;
        }
        assert_no_survivors(&mark);
        let _ = std::fs::remove_dir_all(&state);
        let _ = std::fs::remove_dir_all(&out);
    }
    Ok(())
}
