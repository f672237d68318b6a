//! The interrupt, crash and pid-namespace rows: a run of hanging tests with containers, stopped by
//! SIGINT or SIGKILL (or its namespace's init killed), timed until nothing of it is left.

use std::path::Path;
use std::time::{Duration, Instant};

use super::*;

/// How the run is stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// SIGINT to the runner.
    Interrupt,
    /// SIGKILL to the runner (its host reaper cleans up).
    Crash,
    /// SIGKILL to PID 1 of the run's PID namespace, which takes the host reaper along (the engine-side
    /// reaper cleans up).
    Namespace,
}

/// 20 hanging isolated tests with containers (interrupt: 50 containers; crash and namespace: 20
/// containers and an escaped process each); the run stopped once every container runs, timed until
/// nothing of the run is left: no process with its mark, no container of its session.
pub(super) fn interrupt_or_crash(opts: &Opts, bin: &Path, stop: Stop) -> Result<Row, String> {
    let crash = stop != Stop::Interrupt;
    let (tests, containers) = match (opts.smoke, crash) {
        (true, _) => (2, 4),
        (false, true) => (20, 20),
        (false, false) => (20, 50),
    };
    let name = match stop {
        Stop::Interrupt => "interrupt",
        Stop::Crash => "crash",
        Stop::Namespace => "pidns",
    };
    let ws = generate_workspace(opts, name, 1, tests, &|t| {
        hanging_test(
            containers / tests + usize::from(t < containers % tests),
            crash,
        )
    })?;
    let mut samples = Samples::default();
    for _ in 0..opts.runs {
        let marks = ws.join("marks");
        let _ = std::fs::remove_dir_all(&marks);
        std::fs::create_dir_all(&marks).map_err(|e| e.to_string())?;
        let threads = tests.to_string();
        let args = [
            "cleantest",
            "--no-lock",
            "--isolate",
            "--tests",
            "--",
            "--test-threads",
            &threads,
        ];
        let mut command = match stop {
            Stop::Namespace => in_pid_namespace(bin, ws.as_path(), &args),
            _ => in_ws(bin, ws.as_path(), &args),
        };
        let mark = format!("bench-{name}-{}", std::process::id());
        command
            .env("BENCH_MARKS", &marks)
            .env("CT_BENCH_MARK", &mark);
        let mut child = command.spawn().map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::fs::read_dir(&marks).map(|d| d.count()).unwrap_or(0) < tests {
            if Instant::now() > deadline || child.try_wait().map_err(|e| e.to_string())?.is_some() {
                let _ = child.kill();
                return Err(format!("{name}: the tests did not all start"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let running = bench_containers(&mark)?;
        if running != containers {
            let _ = child.kill();
            return Err(format!(
                "{name}: expected {containers} containers running, found {running}"
            ));
        }
        let session = session_of(&marks)?;
        let (signal, target) = match stop {
            Stop::Interrupt => ("INT", child.id()),
            Stop::Crash => ("KILL", child.id()),
            Stop::Namespace => ("KILL", namespace_init(child.id())?),
        };
        let started = Instant::now();
        sh(&format!("kill -{signal} {target}"))?;
        let _ = child.wait();
        // Done when no process carries the mark and no container of the session exists.
        loop {
            let procs = sh(&format!(
                "grep -l 'CT_BENCH_MARK={mark}' /proc/[0-9]*/environ 2>/dev/null | wc -l"
            ))
            .unwrap_or_default();
            if procs.trim() == "0"
                && bench_containers(&mark)? == 0
                && session_containers(&session)? == 0
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!("{name}: the session was not cleaned within 60 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        push(&mut samples, started.elapsed().as_secs_f64());
    }
    if stop == Stop::Namespace {
        // The host reaper died with the namespace: the session's temporary directory is left to the next
        // run on this state directory, as the guarantees say. Removed here as `sweep --stale` would.
        let _ = in_ws(bin, ws.as_path(), &["cleantest", "sweep", "--stale"]).status();
    }
    let (what, target) = match stop {
        Stop::Crash => (
            format!(
                "runner SIGKILLed with {containers} containers and {tests} escaped processes → all gone"
            ),
            5.0,
        ),
        Stop::Namespace => (
            format!(
                "runner as PID 1 of a PID namespace, killed with {containers} containers → all gone"
            ),
            5.0,
        ),
        Stop::Interrupt => (
            format!(
                "SIGINT with {tests} hanging tests and {containers} containers → runner exited, nothing left"
            ),
            DEFAULT_GRACE_SECS + 2.0,
        ),
    };
    let met = samples.median() <= target;
    Ok(Row {
        what,
        ours: samples.show("s"),
        theirs: "—".into(),
        ratio: f64::NAN,
        target: format!("≤ {target} s"),
        met: Some(met),
    })
}

/// The runner's default grace period: the interrupt target is that plus 2 s.
const DEFAULT_GRACE_SECS: f64 = 5.0;

/// The body of one hanging test: starts `containers` containers carrying the run's bench mark (and, for
/// the crash, a process that leaves the test's process group), then says so in a file and hangs.
fn hanging_test(containers: usize, crash: bool) -> String {
    let escape = if crash {
        r#"std::process::Command::new("setsid").args(["sleep", "1000"]).spawn().unwrap();"#
    } else {
        ""
    };
    format!(
        r#"let mark = format!("ct-bench.mark={{}}", std::env::var("CT_BENCH_MARK").unwrap());
    for _ in 0..{containers} {{
        let out = std::process::Command::new("docker")
            .args(["run", "-d", "--label", &mark, "cleantest-fixture:latest", "sleep", "1000"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{{}}", String::from_utf8_lossy(&out.stderr));
    }}
    {escape}
    std::fs::write(format!("{{}}/{{}}", std::env::var("BENCH_MARKS").unwrap(), std::process::id()), std::env::var("CLEANTEST_SESSION").unwrap()).unwrap();
    loop {{ std::thread::sleep(std::time::Duration::from_millis(100)); }}"#
    )
}

/// The session id the tests wrote in their marks.
fn session_of(marks: &Path) -> Result<String, String> {
    let file = std::fs::read_dir(marks)
        .map_err(|e| e.to_string())?
        .flatten()
        .next()
        .ok_or("no test wrote its mark")?;
    std::fs::read_to_string(file.path()).map_err(|e| e.to_string())
}

/// The init of the PID namespace `unshare --fork` (pid `unshare`) made: its only child.
fn namespace_init(unshare: u32) -> Result<u32, String> {
    std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
        .ok()
        .and_then(|c| c.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| "the PID namespace's init was not found".to_string())
}

/// Containers (in any state) of the session, the engine-side reaper's included.
fn session_containers(session: &str) -> Result<usize, String> {
    let ids = sh(&format!(
        "docker ps -aq --filter label=cleantest.session={session}"
    ))?;
    Ok(ids.lines().filter(|l| !l.is_empty()).count())
}

/// Containers (in any state) that the bench run marked `mark` started.
fn bench_containers(mark: &str) -> Result<usize, String> {
    let ids = sh(&format!(
        "docker ps -aq --filter label=ct-bench.mark={mark}"
    ))?;
    Ok(ids.lines().filter(|l| !l.is_empty()).count())
}
