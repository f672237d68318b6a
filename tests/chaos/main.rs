//! The chaos suite: real processes, real signals, the real engine. Every cell asserts that nothing of
//! the session is left (no process carrying its mark, no container, network or volume with its label),
//! that foreign resources are untouched, and the documented exit code, in both execution modes.

#[path = "../common/mod.rs"]
mod common;
mod descriptors;
mod engine_reaper;
mod escape;
mod foreign;
mod mount_point;
mod never_hang;
mod never_lie;
mod pinned;
mod trust;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::docker::*;
use common::*;
use libtest_mimic::Failed;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const MODES: [(&str, Option<&str>); 2] = [("shared", None), ("isolated", Some("--isolate"))];

fn main() {
    let mut cells = Vec::new();
    for (mode_name, mode) in MODES {
        for (test, code) in [
            ("pass", 0),
            ("fail", 101),
            ("panic", 101),
            ("timeout", 101),
            ("ignore_term", 101),
            ("background_child", 0),
            ("setsid_escape", 0),
            ("double_fork_daemon", 0),
        ] {
            cells.push(trial(format!("{test}_{mode_name}"), move || {
                outcome(test, code, mode)
            }));
        }
        for (name, sig, code) in [
            ("sigint", Signal::SIGINT, 130),
            ("sigterm", Signal::SIGTERM, 143),
            ("sighup", Signal::SIGHUP, 129),
        ] {
            cells.push(trial(format!("{name}_{mode_name}"), move || {
                first_signal(sig, code, mode)
            }));
        }
        cells.push(trial(format!("double_sigint_{mode_name}"), move || {
            double_sigint(mode)
        }));
        cells.push(trial(
            format!("runner_sigkill_reaper_{mode_name}"),
            move || runner_sigkill(mode),
        ));
    }
    cells.push(trial(
        "eight_concurrent_sessions_among_twenty_foreign_containers",
        concurrent_sessions,
    ));
    type Cell = fn() -> Result<(), Failed>;
    let restart_cells: [(&str, Cell); 2] = [
        (
            "engine_restarted_during_the_run",
            engine_restarted_during_the_run,
        ),
        (
            "engine_down_when_the_sweep_starts_and_back_within_its_bound",
            engine_back_during_the_sweep,
        ),
    ];
    cells.extend(trust::cells());
    cells.extend(foreign::cells());
    cells.extend(pinned::cells());
    cells.extend(never_hang::cells());
    cells.extend(escape::cells());
    cells.extend(never_lie::cells());
    cells.extend(engine_reaper::cells());
    cells.extend(descriptors::cells());
    cells.extend(mount_point::cells());
    for (name, f) in restart_cells {
        let mut cell = trial(name, f);
        cell.unavailable = private_engine_problem();
        cells.push(cell);
    }
    run_trials(cells);
}

fn chaos_run(mark: &str, mode: Option<&str>) -> Command {
    let mut command = cleantest("docker", mark);
    command
        .env("CLEANTEST_STATE_DIR", run_dir("chaos-state"))
        .args(mode)
        .args(["--no-lock", "--test", "chaos"]);
    command
}

/// Nothing of the run is left and the foreign container still runs.
fn assert_clean(mark: &str, foreign: &Foreign, what: &str) -> Result<(), Failed> {
    assert_no_survivors(mark);
    let left = marked(mark);
    check(left.is_empty(), || format!("{what}: left {left:?}"))?;
    check(foreign.running(), || {
        format!("{what}: the foreign container was touched")
    })
}

fn outcome(test: &str, code: i32, mode: Option<&str>) -> Result<(), Failed> {
    let mark = unique_mark(test);
    let foreign = Foreign::start(&mark);
    let out = run(chaos_run(&mark, mode)
        .args(limits("3s", "1s"))
        .args(["--", "--exact", test]));
    check(out.status.code() == Some(code), || {
        format!(
            "{test} {mode:?}: {:?}\n{}{}",
            out.status,
            stdout(&out),
            stderr(&out)
        )
    })?;
    assert_clean(&mark, &foreign, test)
}

/// Starts a run whose test hangs with a child ignoring SIGTERM and SIGINT; returns once it runs.
fn start_hanging(
    mark: &str,
    mode: Option<&str>,
    test: &str,
    grace: &str,
) -> (Child, common::TempDir) {
    spawn_until_started(
        chaos_run(mark, mode)
            .args(limits("5m", grace))
            .args(["--", "--exact", test])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        &[test],
    )
}

fn first_signal(sig: Signal, code: i32, mode: Option<&str>) -> Result<(), Failed> {
    let mark = unique_mark("signal");
    let foreign = Foreign::start(&mark);
    let (mut child, _) = start_hanging(&mark, mode, "ignore_term", "2s");
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
    let status = child.wait().unwrap();
    check(status.code() == Some(code), || {
        format!("{sig:?} {mode:?}: {status:?}")
    })?;
    assert_clean(&mark, &foreign, sig.as_str())
}

fn double_sigint(mode: Option<&str>) -> Result<(), Failed> {
    let mark = unique_mark("double-sigint");
    let foreign = Foreign::start(&mark);
    let (mut child, dir) = start_hanging(&mark, mode, "ignore_term", "60s");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    // Signals sent back to back merge into one: wait until the first reached the test process.
    wait_until_dead(&std::fs::read_to_string(dir.join("ignore_term.started")).unwrap())?;
    let sent = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    check(status.code() == Some(130), || format!("{status:?}"))?;
    // The child ignoring SIGINT would hold the run for its 60 s grace period without the second signal.
    check(sent.elapsed() < Duration::from_secs(30), || {
        format!("took {:?}", sent.elapsed())
    })?;
    assert_clean(&mark, &foreign, "double SIGINT")
}

fn wait_until_dead(pid: &str) -> Result<(), Failed> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_gone(pid) {
        check(Instant::now() < deadline, || {
            "the first signal did not reach the test".into()
        })?;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn runner_sigkill(mode: Option<&str>) -> Result<(), Failed> {
    let mark = unique_mark("sigkill");
    let foreign = Foreign::start(&mark);
    let (mut child, _) = start_hanging(&mark, mode, "escape_and_hang", "5s");
    check(reaper_of(child.id()).is_some(), || {
        "no reaper was started".into()
    })?;
    let killed = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    let _ = child.wait();
    // The reaper now ends every process of the session (the escaped one included) and sweeps.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !processes_with_mark(&mark).is_empty() || !marked(&mark).is_empty() {
        check(Instant::now() < deadline, || {
            format!(
                "after 30 s: processes {:?}, resources {:?}",
                processes_with_mark(&mark),
                marked(&mark)
            )
        })?;
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "runner SIGKILL {mode:?}: everything gone {:?} after the kill",
        killed.elapsed()
    );
    assert_clean(&mark, &foreign, "runner SIGKILL")
}

fn concurrent_sessions() -> Result<(), Failed> {
    let mark = unique_mark("concurrent");
    let foreign: Vec<Foreign> = (0..20).map(|_| Foreign::start(&mark)).collect();
    let runs: Vec<(String, Child)> = (0..8)
        .map(|i| {
            let run_mark = unique_mark("concurrent-run");
            let test = if i % 2 == 0 { "pass" } else { "fail" };
            let child = chaos_run(&run_mark, None)
                .args(["--", "--exact", test])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            (run_mark, child)
        })
        .collect();
    for (i, (run_mark, mut child)) in runs.into_iter().enumerate() {
        let status = child.wait().unwrap();
        let code = if i % 2 == 0 { 0 } else { 101 };
        check(status.code() == Some(code), || {
            format!("run {i}: {status:?}")
        })?;
        assert_no_survivors(&run_mark);
        let left = marked(&run_mark);
        check(left.is_empty(), || format!("run {i} left {left:?}"))?;
    }
    for f in &foreign {
        check(f.running(), || "a foreign container was touched".into())?;
    }
    Ok(())
}

/// A run against a private engine whose test created a container and hangs until the timeout.
fn start_on_private(engine: &PrivateEngine, mark: &str, timeout: &str) -> (Child, common::TempDir) {
    spawn_until_started(
        chaos_run(mark, None)
            .env("DOCKER_HOST", engine.host())
            .args(limits(timeout, "1s"))
            .args(["--", "--exact", "timeout"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
        &["timeout"],
    )
}

fn engine_restarted_during_the_run() -> Result<(), Failed> {
    let mut engine = PrivateEngine::start()?;
    let mark = unique_mark("restart");
    let (child, _) = start_on_private(&engine, &mark, "8s");
    // The daemon goes away and comes back while the test still hangs.
    engine.down();
    engine.up()?;
    let out = child.wait_with_output().unwrap();
    check(out.status.code() == Some(101), || {
        format!("{:?}\n{}", out.status, stdout(&out))
    })?;
    assert_no_survivors(&mark);
    let left = marked_at(Some(&engine.host()), &mark);
    check(left.is_empty(), || {
        format!("left on the restarted engine: {left:?}")
    })?;
    engine.check_host_untouched()
}

fn engine_back_during_the_sweep() -> Result<(), Failed> {
    use std::io::{BufRead, BufReader};
    let mut engine = PrivateEngine::start()?;
    let mark = unique_mark("back");
    let (mut child, _) = start_on_private(&engine, &mark, "3s");
    engine.down();
    // The test's TIMEOUT line comes just before the run ends and sweeps: bring the engine back then, so
    // the sweep finds it down and must retry until it answers.
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut rest = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("TIMEOUT") {
            break;
        }
    }
    engine.up()?;
    for line in lines {
        rest.push_str(&line.unwrap());
        rest.push('\n');
    }
    let status = child.wait().unwrap();
    check(status.code() == Some(101), || format!("{status:?}\n{rest}"))?;
    assert_no_survivors(&mark);
    let left = marked_at(Some(&engine.host()), &mark);
    check(left.is_empty(), || {
        format!("left after the engine came back: {left:?}\n{rest}")
    })?;
    engine.check_host_untouched()
}
