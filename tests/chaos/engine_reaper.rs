//! The engine-side reaper cells of issue 12 (E): a runner that is PID 1 of its PID namespace takes its
//! host reaper with it when killed; the reaper container on the engine must sweep the session. (Its
//! 5 s target is measured by `cargo xtask bench`, not here.) And when the run ends by itself, the
//! reaper container is dismissed and gone, never kept.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::docker::*;
use super::common::*;
use libtest_mimic::Failed;

/// How long the cell waits for the sweep: a bound on a hang, not the speed target.
const SWEPT_WITHIN: Duration = Duration::from_secs(60);

pub(crate) fn cells() -> Vec<Cell> {
    let mut killed = trial(
        "a_runner_killed_as_pid_1_of_its_namespace_is_swept_by_the_engine_reaper",
        namespace_killed,
    );
    killed.unavailable = pid_namespace_problem();
    vec![
        killed,
        trial(
            "the_engine_reaper_is_dismissed_when_the_run_ends_and_never_kept",
            dismissed_and_never_kept,
        ),
    ]
}

/// Why this machine cannot start a PID namespace of our own, if it cannot (it needs root).
fn pid_namespace_problem() -> Option<String> {
    let out = Command::new("unshare")
        .args(["--fork", "--pid", "--mount-proc", "true"])
        .output();
    match out {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "unshare --fork --pid --mount-proc fails here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("unshare cannot be run: {e}")),
    }
}

/// The labels-only view of what a session still has on the engine: containers, networks, volumes.
fn session_resources(session: &str) -> Vec<String> {
    let filter = format!("label=cleantest.session={session}");
    let mut left = Vec::new();
    for kind in ["container", "network", "volume"] {
        let list = match kind {
            "container" => docker(&["ps", "-aq", "--filter", &filter]),
            _ => docker(&[kind, "ls", "-q", "--filter", &filter]),
        };
        left.extend(list.lines().map(|l| format!("{kind} {l}")));
    }
    left
}

/// The pid of the only child of `pid` (the namespace's init, under `unshare --fork`).
fn child_of(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// `unshare --fork --pid` runs the runner as PID 1 of a new namespace (the engine-side reaper is on by
/// itself there); the session creates a container with an anonymous volume, a network and a volume.
/// Killing the runner kills everything in the namespace, its host reaper included.
fn namespace_killed() -> Result<(), Failed> {
    let mark = unique_mark("pid-ns");
    let state = temp_dir("pid-ns");
    let said = state.join("said");
    let script = format!(
        "set -e; id=$(docker run -d --label ct-it.mark={mark} -v /data {image} sleep 1000); \
         docker network create --label ct-it.mark={mark} {mark}-net >/dev/null; \
         docker volume create --label ct-it.mark={mark} {mark}-vol >/dev/null; \
         anon=$(docker inspect -f '{{{{range .Mounts}}}}{{{{.Name}}}}{{{{end}}}}' $id); \
         echo \"$CLEANTEST_SESSION $anon\" > {said}.tmp; mv {said}.tmp {said}; sleep 1000",
        image = image::IMAGE,
        said = said.display(),
    );
    let mut unshare = Command::new("unshare");
    unshare
        .args(["--fork", "--pid", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_cargo-cleantest"))
        .args(["exec", "--no-lock", "--", "sh", "-c", &script])
        .env("CLEANTEST_STATE_DIR", &*state)
        .env("CT_IT_MARK", &mark)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut unshare = unshare.spawn()?;
    wait_for_file(&said, Duration::from_secs(60));
    let text = std::fs::read_to_string(&said).unwrap_or_default();
    let mut words = text.split_whitespace();
    let (session, anonymous) = (
        words.next().unwrap_or_default().to_string(),
        words.next().unwrap_or_default().to_string(),
    );
    let init = child_of(unshare.id());
    let result = judge_namespace_kill(init, &session, &anonymous);
    let _ = unshare.kill();
    let _ = unshare.wait();
    clean_marked(&mark, &anonymous);
    let _ = std::fs::remove_dir_all(&state);
    result
}

fn judge_namespace_kill(init: Option<u32>, session: &str, anonymous: &str) -> Result<(), Failed> {
    let init = init.ok_or("the namespace's init was not found")?;
    check(!session.is_empty() && !anonymous.is_empty(), || {
        "the session did not say its id and anonymous volume".into()
    })?;
    check(session_resources(session).len() >= 3, || {
        format!("the session's resources: {:?}", session_resources(session))
    })?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let killed = Instant::now();
    let mut left = session_resources(session);
    let mut anonymous_left = true;
    while killed.elapsed() < SWEPT_WITHIN {
        left = session_resources(session);
        anonymous_left = !docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name={anonymous}"),
        ])
        .trim()
        .is_empty();
        if left.is_empty() && !anonymous_left {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = killed.elapsed();
    check(left.is_empty() && !anonymous_left, || {
        format!(
            "{took:?} after the namespace was killed, the session still has {left:?} \
             (anonymous volume left: {anonymous_left})"
        )
    })
}

/// What a failed cell leaves: its marked resources and the anonymous volume (gone already is fine).
fn clean_marked(mark: &str, anonymous: &str) {
    let quietly = |args: &[&str]| {
        let _ = Command::new("docker").args(args).output();
    };
    for id in marked(mark) {
        quietly(&["rm", "-f", &id]);
    }
    let filter = format!("label=ct-it.mark={mark}");
    for kind in ["network", "volume"] {
        for id in docker(&[kind, "ls", "-q", "--filter", &filter]).lines() {
            quietly(&[kind, "rm", id]);
        }
    }
    if !anonymous.is_empty() {
        quietly(&["volume", "rm", anonymous]);
    }
}

/// With `--engine-reaper=on` and `--keep-on-failure`, a failed run keeps the test's container but not
/// the reaper's: it was dismissed and removed before the session listed what to keep.
fn dismissed_and_never_kept() -> Result<(), Failed> {
    let mark = unique_mark("dismissed");
    let state = temp_dir("dismissed");
    let said = state.join("said");
    let script = format!(
        "docker run -d --label ct-it.mark={mark} {} sleep 1000 >/dev/null; \
         echo $CLEANTEST_SESSION > {}; exit 1",
        image::IMAGE,
        said.display()
    );
    let out = exec_in_session(&mark, &state)
        .args(["--engine-reaper=on", "--keep-on-failure", "--"])
        .args(["sh", "-c", &script])
        .output()?;
    let session = std::fs::read_to_string(&said).unwrap_or_default();
    let session = session.trim();
    let kept = marked(&mark);
    let reapers = reapers_of(session);
    if !session.is_empty() {
        let _ = Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"))
            .env("CLEANTEST_STATE_DIR", &*state)
            .args(["sweep", "--session", session])
            .output();
    }
    clean_marked(&mark, "");
    let _ = std::fs::remove_dir_all(&state);
    check(out.status.code() == Some(1), || {
        format!("exit {:?}: {}", out.status.code(), stderr(&out))
    })?;
    check(!session.is_empty() && kept.len() == 1, || {
        format!(
            "the test's container was not kept: {kept:?}; {}",
            stderr(&out)
        )
    })?;
    check(reapers.is_empty(), || {
        format!("the reaper container outlived the run: {reapers:?}")
    })
}

fn reapers_of(session: &str) -> Vec<String> {
    let session = format!("label=cleantest.session={session}");
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &session,
        "--filter",
        "label=cleantest.role=reaper",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}
