//! Session cleanup against the real Docker engine. A libtest-mimic harness, so that without an engine
//! the tests are reported ignored with the reason (and fail when `CLEANTEST_REQUIRE_DOCKER=1`).
//!
//! Every test uses a state directory of its own (sweeps of stale or kept sessions must not reach other
//! tests' sessions) and finds what its run created by the `ct-it.mark` label the fixture adds.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::docker::*;
use common::*;
use libtest_mimic::Failed;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The cells of this module.
pub fn cells() -> Vec<Cell> {
    engine_cells(vec![
        trial(
            "session_resources_are_removed_in_both_modes",
            session_resources_are_removed_in_both_modes,
        ),
        trial(
            "keep_on_failure_keeps_then_sweep_removes",
            keep_on_failure_keeps_then_sweep_removes,
        ),
        trial(
            "killed_runner_and_reaper_leave_a_stale_session_swept_later",
            killed_runner_is_swept_later,
        ),
        trial("exec_leaves_nothing_behind", exec_leaves_nothing_behind),
        trial(
            "an_unreachable_engine_leaves_no_record_and_a_kept_one_can_be_forgotten",
            unreachable_engine_records,
        ),
        trial(
            "sweep_removes_many_containers_networks_and_volumes",
            sweep_removes_many,
        ),
        trial(
            "passing_run_sweeps_and_exits_zero",
            passing_run_sweeps_and_exits_zero,
        ),
        trial(
            "a_dry_run_with_nothing_to_sweep_says_so",
            dry_run_with_nothing_says_so,
        ),
        podman_cell(),
    ])
}

fn docker_run(mark: &str, state: &Path) -> Command {
    let mut command = cleantest("docker", mark);
    command
        .env("CLEANTEST_STATE_DIR", state)
        .args(["--no-lock", "--test", "containers"]);
    command
}

fn session_resources_are_removed_in_both_modes() -> Result<(), Failed> {
    for mode in [None, Some("--isolate")] {
        let mark = unique_mark("docker-both");
        let state = temp_dir("state");
        let foreign = Foreign::start(&mark);
        let out = run(docker_run(&mark, &state)
            .args(mode)
            .args(limits("4s", "1s"))
            .args(["--no-fail-fast"]));
        check(out.status.code() == Some(101), || {
            format!("{mode:?}: {:?}\n{}", out.status, stdout(&out))
        })?;
        let totals = last_totals(&out);
        check(totals.passed == 1 && totals.failed == 3, || {
            format!("{mode:?}: {totals:?}\n{}", stdout(&out))
        })?;
        let left = marked(&mark);
        check(left.is_empty(), || {
            format!("{mode:?}: left behind: {left:?}\n{}", stdout(&out))
        })?;
        check(foreign.running(), || {
            format!("{mode:?}: the foreign container was touched")
        })?;
        assert_no_survivors(&mark);
    }
    Ok(())
}

/// The session id the run printed in its `cargo cleantest sweep --session ID` hint.
fn kept_session(text: &str) -> Option<String> {
    let at = text.find("cargo cleantest sweep --session ")?;
    text[at..].split_whitespace().nth(4).map(str::to_string)
}

fn keep_on_failure_keeps_then_sweep_removes() -> Result<(), Failed> {
    let state = temp_dir("state");
    for how in ["--session", "--kept"] {
        let mark = unique_mark("docker-keep");
        let out = run(docker_run(&mark, &state)
            .args(limits("4s", "1s"))
            .args(["--keep-on-failure", "--no-fail-fast"]));
        check(out.status.code() == Some(101), || {
            format!("{:?}\n{}", out.status, stdout(&out))
        })?;
        let kept = marked(&mark);
        check(kept.len() >= 5, || {
            format!("expected the session's resources kept, found {kept:?}")
        })?;
        assert_no_survivors(&mark);
        let text = stdout(&out);
        let session =
            kept_session(&text).ok_or_else(|| format!("no sweep command printed:\n{text}"))?;
        check(text.contains("docker logs "), || {
            format!("no inspect command printed:\n{text}")
        })?;
        let dry = run(Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"))
            .env("CLEANTEST_STATE_DIR", &*state)
            .args(["sweep", "--dry-run", "--session", &session]));
        check(dry.status.success(), || stderr(&dry))?;
        // Each kept resource, and the failed tests' temporary directories, kept with them.
        let listed = stdout(&dry);
        let temp_line = format!("would remove the temporary directory of session {session}: ");
        let kept_temp = listed.lines().find_map(|l| l.strip_prefix(&temp_line));
        check(
            listed.lines().count() == kept.len() + 1 && kept_temp.is_some(),
            || format!("dry run listed:\n{listed}"),
        )?;
        let kept_temp = std::path::PathBuf::from(kept_temp.unwrap_or_default());
        check(marked(&mark).len() == kept.len(), || {
            "--dry-run removed something".into()
        })?;
        let mut sweep = Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"));
        sweep.env("CLEANTEST_STATE_DIR", &*state).arg("sweep");
        if how == "--session" {
            sweep.args(["--session", &session]);
        } else {
            sweep.arg("--kept");
        }
        let out = run(&mut sweep);
        check(out.status.success(), || {
            format!("sweep {how}: {}{}", stdout(&out), stderr(&out))
        })?;
        let left = marked(&mark);
        check(left.is_empty(), || format!("sweep {how} left {left:?}"))?;
        check(!kept_temp.exists(), || {
            format!("sweep {how} left {}", kept_temp.display())
        })?;
    }
    Ok(())
}

/// Starts a run of the hanging container test and waits until its container exists.
fn start_hanging(mark: &str, state: &Path) -> std::process::Child {
    spawn_until_started(
        docker_run(mark, state)
            .args(["--timeout", "5m", "--", "--exact", "container_then_hang"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        &["container_then_hang"],
    )
    .0
}

/// SIGKILLs the reaper and then the runner (as when the whole machine's processes die), then the test
/// processes nobody can stop now: the session is left stale.
fn kill_runner(mut child: std::process::Child, mark: &str) {
    let reaper = reaper_of(child.id()).expect("the runner started a reaper");
    kill(Pid::from_raw(reaper as i32), Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    let _ = child.wait();
    for pid in processes_with_mark(mark) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    assert_no_survivors(mark);
}

fn killed_runner_is_swept_later() -> Result<(), Failed> {
    let state = temp_dir("state");
    // The next run's start-of-run stale sweep, and `sweep --stale`, each clean a dead session; a live one
    // on the same engine and state directory keeps its container.
    for how in ["next-run", "sweep-stale"] {
        let dead = unique_mark("docker-dead");
        let runner = start_hanging(&dead, &state);
        kill_runner(runner, &dead);
        check(!marked(&dead).is_empty(), || {
            "the killed run's container should still exist".into()
        })?;

        let live = unique_mark("docker-live");
        let mut live_runner = Interrupting(Some(start_hanging(&live, &state)));
        let out = if how == "next-run" {
            let quiet = unique_mark("docker-next");
            run(docker_run(&quiet, &state).args(["--", "--exact", "network_and_container_pass"]))
        } else {
            run(Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"))
                .env("CLEANTEST_STATE_DIR", &*state)
                .args(["sweep", "--stale"]))
        };
        check(out.status.success(), || {
            format!("{how}: {}{}", stdout(&out), stderr(&out))
        })?;
        let left = marked(&dead);
        check(left.is_empty(), || {
            format!("{how}: the dead session's resources remain: {left:?}")
        })?;
        check(!marked(&live).is_empty(), || {
            format!("{how}: the live session's container was removed")
        })?;

        let status = live_runner.interrupt();
        check(status.code() == Some(130), || {
            format!("live run ended with {status:?}")
        })?;
        let left = marked(&live);
        check(left.is_empty(), || {
            format!("the interrupted live run left {left:?}")
        })?;
        assert_no_survivors(&live);
    }
    Ok(())
}

fn exec_leaves_nothing_behind() -> Result<(), Failed> {
    let mark = unique_mark("docker-exec");
    let state = temp_dir("state");
    let script = format!(
        "docker run -d --label cleantest.session=$CLEANTEST_SESSION --label ct-it.mark=$CT_IT_MARK {} sleep 1000",
        image::IMAGE
    );
    let out = run(exec_in_session(&mark, &state).args(["--", "sh", "-c", &script]));
    check_success(&out)?;
    let left = marked(&mark);
    check(left.is_empty(), || format!("exec left {left:?}"))?;
    Ok(())
}

/// An engine that never answered during a run cannot hold anything of it, so the run leaves no record
/// and later runs don't warn about it. A record that is kept because its engine is unreachable (its
/// runner and reaper were killed) says so, is kept by `sweep --session` as it says, and goes with
/// `--forget`.
fn unreachable_engine_records() -> Result<(), Failed> {
    const NOWHERE: &str = "tcp://127.0.0.1:1";
    let state = temp_dir("state");
    let sessions = state.join("sessions");
    let records = || {
        std::fs::read_dir(&sessions)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    for attempt in 0..2 {
        let mark = unique_mark("docker-nowhere");
        let out = run(cleantest("order", &mark)
            .env("CLEANTEST_STATE_DIR", &*state)
            .env("DOCKER_HOST", NOWHERE)
            .arg("--no-lock"));
        check(out.status.success(), || {
            format!("run {attempt}: {}{}", stdout(&out), stderr(&out))
        })?;
        check(!stderr(&out).contains("stale sweep"), || {
            format!("run {attempt} warns of an earlier one: {}", stderr(&out))
        })?;
        check(records().is_empty(), || {
            format!("run {attempt} left a record: {:?}", records())
        })?;
    }
    let sweep = |args: &[&str]| {
        run(Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"))
            .env("CLEANTEST_STATE_DIR", &*state)
            .env_remove("DOCKER_HOST")
            .arg("sweep")
            .args(args))
    };
    let out = sweep(&["--stale"]);
    check(out.status.success(), || {
        format!("sweep --stale: {}", stderr(&out))
    })?;

    // A runner and its reaper killed while their engine is unreachable: the record stays.
    let mark = unique_mark("docker-forget");
    let mut child = exec_in_session(&mark, &state)
        .env("DOCKER_HOST", NOWHERE)
        .args(["--", "sleep", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let sleeping = || {
        processes_with_mark(&mark).into_iter().any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })
    };
    while (records().is_empty() || !sleeping()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_runner_of(&mut child, &mark);
    let ids = records();
    check(ids.len() == 1, || format!("records: {ids:?}"))?;
    let id = ids[0].clone();
    let out = sweep(&["--stale"]);
    check(out.status.code() == Some(3), || {
        format!("sweep --stale: {:?} {}", out.status, stdout(&out))
    })?;
    check(
        stdout(&out).contains(&id) && stdout(&out).contains("--forget"),
        || {
            format!(
                "sweep --stale does not say how to forget it: {}",
                stdout(&out)
            )
        },
    )?;
    let out = sweep(&["--session", &id]);
    check(
        out.status.code() == Some(3) && records() == [id.clone()],
        || {
            format!(
                "sweep --session said the record is kept, then: {:?} {:?} {}",
                out.status,
                records(),
                stdout(&out)
            )
        },
    )?;
    let out = sweep(&["--session", &id, "--forget"]);
    check(out.status.success() && records().is_empty(), || {
        format!(
            "sweep --forget: {:?} {:?} {}{}",
            out.status,
            records(),
            stdout(&out),
            stderr(&out)
        )
    })?;
    Ok(())
}

/// SIGKILLs the reaper and the runner of `child`, then what of its session still runs.
fn kill_runner_of(child: &mut std::process::Child, mark: &str) {
    if let Some(reaper) = reaper_of(child.id()) {
        let _ = kill(Pid::from_raw(reaper as i32), Signal::SIGKILL);
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = child.wait();
    for pid in processes_with_mark(mark) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    assert_no_survivors(mark);
}

/// `sweep --stale --dry-run` where there is nothing to sweep says so, instead of printing nothing.
fn dry_run_with_nothing_says_so() -> Result<(), Failed> {
    let state = temp_dir("state");
    let out = Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"))
        .env("CLEANTEST_STATE_DIR", state.path())
        .args(["sweep", "--stale", "--dry-run"])
        .output()?;
    check(out.status.success(), || format!("{out:?}"))?;
    check(stdout(&out).contains("nothing to sweep"), || {
        format!("{}{}", stdout(&out), stderr(&out))
    })
}

fn sweep_removes_many() -> Result<(), Failed> {
    let mark = unique_mark("docker-many");
    let state = temp_dir("state");
    // A container of nobody's session, attached to one of the session's networks by its owner (past the
    // proxy, which refuses to connect what is not the session's): the sweep must disconnect it, remove
    // the network, and leave it running.
    let foreign = Foreign::start(&mark);
    // 100 containers: 10 with a named volume each, 90 spread over 10 networks, 5 of them only created.
    let labels = "--label cleantest.session=$CLEANTEST_SESSION --label ct-it.mark=$CT_IT_MARK";
    let image = image::IMAGE;
    let script = format!(
        "set -e; export p=ct-$(echo $CLEANTEST_SESSION | cut -c1-10)
         for n in $(seq 1 10); do docker network create {labels} $p-net$n >/dev/null; docker volume create {labels} $p-vol$n >/dev/null; done
         DOCKER_HOST={engine} docker network connect $p-net1 {foreign}
         seq 1 10 | xargs -P 4 -I N sh -c \"docker run -d {labels} -v $p-volN:/data {image} sleep 1000 >/dev/null\"
         seq 11 95 | xargs -P 4 -I N sh -c \"docker run -d {labels} --network $p-net\\$((N % 10 + 1)) {image} sleep 1000 >/dev/null\"
         seq 96 100 | xargs -P 4 -I N sh -c \"docker create {labels} --network $p-net\\$((N % 10 + 1)) {image} sleep 1 >/dev/null\"",
        foreign = foreign.0,
        engine = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into()),
    );
    let out = run(exec_in_session(&mark, &state).args(["--", "sh", "-c", &script]));
    check_success(&out)?;
    let left = marked(&mark);
    check(left.is_empty(), || {
        format!("left {left:?}\n{}", stderr(&out))
    })?;
    let err = stderr(&out);
    check(
        err.contains("swept 100 containers, 10 networks, 10 volumes"),
        || err.clone(),
    )?;
    check(foreign.running(), || {
        "the foreign container on a session network was touched".into()
    })?;
    eprintln!(
        "{}",
        err.lines().find(|l| l.starts_with("swept")).unwrap_or("")
    );
    Ok(())
}

fn passing_run_sweeps_and_exits_zero() -> Result<(), Failed> {
    let mark = unique_mark("docker-pass");
    let state = temp_dir("state");
    let out = run(docker_run(&mark, &state).args(["--", "--exact", "network_and_container_pass"]));
    check(out.status.success(), || {
        format!("{:?}\n{}{}", out.status, stdout(&out), stderr(&out))
    })?;
    let left = marked(&mark);
    check(left.is_empty(), || format!("left {left:?}"))?;
    // A session that ended clean leaves no record behind.
    let records = std::fs::read_dir(state.join("sessions"))
        .map(|d| d.count())
        .unwrap_or(0);
    check(records == 0, || {
        format!("{records} session record(s) left in the state directory")
    })
}

/// A podman API service of the test's own, on a socket in a temporary directory; stopped (by the pid
/// the test started) when dropped.
struct PodmanService {
    child: std::process::Child,
    socket: std::path::PathBuf,
    conf: std::path::PathBuf,
    /// Its socket's and config's directory, removed with the service.
    _dir: TempDir,
}

impl PodmanService {
    fn start() -> Result<PodmanService, Failed> {
        let dir = temp_dir("podman");
        // Podman's default rlimits exceed what this kind of sandbox allows.
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n",
        )?;
        let socket = dir.join("podman.sock");
        let child = Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .env("CONTAINERS_CONF", &conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let service = PodmanService {
            child,
            socket,
            conf,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !service.socket.exists() {
            check(std::time::Instant::now() < deadline, || {
                "the podman service did not start".into()
            })?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(service)
    }

    fn podman(&self, args: &[&str]) -> std::process::Output {
        Command::new("podman")
            .args(args)
            .env("CONTAINERS_CONF", &self.conf)
            .output()
            .expect("podman")
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The podman cell: ignored with the reason where podman is missing (failed instead under
/// `CLEANTEST_REQUIRE_DOCKER=1`, as CI installs it), never passed without checking.
fn podman_cell() -> Cell {
    let mut cell = trial("podman_socket_is_swept_too", podman_socket_is_swept_too);
    let missing = Command::new("podman").arg("--version").output().is_err();
    cell.unavailable =
        missing.then(|| "podman is not installed (CI installs Debian's podman)".into());
    cell
}

fn podman_socket_is_swept_too() -> Result<(), Failed> {
    let service = PodmanService::start()?;
    // Podman keeps its own image store: copy the fixture image into it.
    if !service
        .podman(&["image", "exists", "localhost/cleantest-fixture:latest"])
        .status
        .success()
    {
        let save = Command::new("sh")
            .arg("-c")
            .arg(format!("docker save {} | podman load", image::IMAGE))
            .env("CONTAINERS_CONF", &service.conf)
            .output()?;
        check(save.status.success(), || {
            String::from_utf8_lossy(&save.stderr).into_owned()
        })?;
    }
    let mark = unique_mark("podman");
    let state = temp_dir("state");
    let script = "L=\"--label cleantest.session=$CLEANTEST_SESSION --label ct-it.mark=$CT_IT_MARK\"
        p=ct-pod-$(echo $CLEANTEST_SESSION | cut -c1-10)
        docker network create $L $p-net >/dev/null && docker volume create $L $p-vol >/dev/null &&
        docker run -d $L --network $p-net localhost/cleantest-fixture:latest sleep 1000 >/dev/null &&
        docker run -d $L -v $p-vol:/data localhost/cleantest-fixture:latest sleep 1000 >/dev/null";
    let started = std::time::Instant::now();
    let out = run(exec_in_session(&mark, &state)
        .env(
            "DOCKER_HOST",
            format!("unix://{}", service.socket.display()),
        )
        .env("CONTAINERS_CONF", &service.conf)
        .args(["--", "sh", "-c", script]));
    check_success(&out)?;
    check(
        stderr(&out).contains("swept 2 containers, 1 network, 1 volume"),
        || stderr(&out),
    )?;
    let filter = format!("label=ct-it.mark={mark}");
    for what in [
        &["ps", "-aq"][..],
        &["network", "ls", "-q"],
        &["volume", "ls", "-q"],
    ] {
        let mut args = what.to_vec();
        args.extend(["--filter", &filter]);
        let left = service.podman(&args);
        check(left.stdout.is_empty(), || {
            format!(
                "podman {what:?} still lists {}",
                String::from_utf8_lossy(&left.stdout)
            )
        })?;
    }
    // Killing before removing keeps podman from waiting out its 10 s stop timeout per container.
    check(started.elapsed() < Duration::from_secs(20), || {
        format!("took {:?}", started.elapsed())
    })
}
