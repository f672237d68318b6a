//! Three machines run the shards of one archive (issue 40's simulation). Each "machine" is a mount
//! namespace of its own in which the workspace and every `cargo` are hidden; each shard runs the
//! archive with its own session and its own config service, at the same time as the others:
//!
//! - every test runs exactly once across the shards, and the data it reads comes from the archive;
//! - each shard's tests reach its own service, and each session removes only its own containers;
//! - SIGKILL of one shard's runner removes that shard's containers and unpacked archive, and leaves
//!   the other two running to their end;
//! - by a report of skewed durations, the machines' `weighted` shards are within 1.3x of their mean
//!   where their `hash` shards are not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::docker::*;
use super::common::*;
use libtest_mimic::Failed;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub fn cells() -> Vec<Cell> {
    let mut cell = trial(
        "three_machines_run_the_shards_of_one_archive_and_a_killed_one_leaves_the_others",
        three_machines,
    );
    cell.unavailable = mount_namespace_problem();
    engine_cells(vec![
        cell,
        trial(
            "a_dead_runners_unpacked_archive_goes_with_the_next_stale_sweep",
            dead_runners_archive_is_pruned,
        ),
    ])
}

/// What a runner killed with its reaper left in `<state>/archives/` (its lock free) is removed by the
/// next session's stale sweep; a live runner's (its lock held) is not.
fn dead_runners_archive_is_pruned() -> Result<(), Failed> {
    let dir = temp_dir("archive-prune");
    let state = dir.join("state");
    let archives = state.join("archives");
    let (dead, live) = ("deadrunner00000000000001", "liverunner00000000000002");
    for id in [dead, live] {
        std::fs::create_dir_all(archives.join(id).join("target")).unwrap();
        std::fs::write(archives.join(id).join("target/binary"), "x").unwrap();
        std::fs::write(archives.join(format!("{id}.lock")), "").unwrap();
    }
    let held = std::fs::File::open(archives.join(format!("{live}.lock"))).unwrap();
    held.lock().unwrap();
    let mut command = exec_in_session(&unique_mark("archive-prune"), &state);
    let out = run(command.current_dir(&*dir).args(["--", "true"]));
    check_success(&out)?;
    check(
        !archives.join(dead).exists() && !archives.join(format!("{dead}.lock")).exists(),
        || "the dead runner's unpacked archive was left".into(),
    )?;
    check(archives.join(live).join("target/binary").exists(), || {
        "a live runner's unpacked archive was removed".into()
    })
}

/// Nine tests; each checks where it runs, reaches the session's service, writes its name and the
/// service's container id in `CT_MARKS`, and (with `CT_RELEASE`) waits for that file before it ends.
const TESTS: &str = r#"
use std::io::Read;
use std::path::{Path, PathBuf};

fn check(name: &str) {
    assert!(
        !Path::new(env!("CARGO_MANIFEST_DIR")).join("data").exists(),
        "the build machine's workspace is visible here"
    );
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let words = std::fs::read_to_string(dir.join("data/words.txt")).unwrap();
    assert_eq!(words.trim(), "from the archive");
    let mut stream = std::net::TcpStream::connect(std::env::var("QUEUE_ADDR").unwrap()).unwrap();
    let mut id = String::new();
    stream.read_to_string(&mut id).unwrap();
    let marks = std::env::var("CT_MARKS").unwrap();
    std::fs::write(Path::new(&marks).join(name), id.trim()).unwrap();
    if let Ok(release) = std::env::var("CT_RELEASE") {
        while !Path::new(&release).exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

#[test] fn t0() { check("t0") }
#[test] fn t1() { check("t1") }
#[test] fn t2() { check("t2") }
#[test] fn t3() { check("t3") }
#[test] fn t4() { check("t4") }
#[test] fn t5() { check("t5") }
#[test] fn t6() { check("t6") }
#[test] fn t7() { check("t7") }
#[test] fn t8() { check("t8") }
"#;

/// The config: `data` goes into the archive, and one service answers with its container's id.
const CONFIG: &str = r#"
[archive]
include = ["data"]

[services.queue]
image = "cleantest-fixture:latest"
command = ["sh", "-c", "nc -ll -p 4222 -e cat /etc/hostname"]
ports = [4222]
ready = { tcp = 4222 }
export = { QUEUE_ADDR = "{host}:{port:4222}" }
"#;

const SHARDS: usize = 3;

/// The workspace, archived; returns the archive's path.
fn archived(ws: &Path, dir: &Path) -> Result<PathBuf, Failed> {
    std::fs::create_dir_all(ws.join("tests")).unwrap();
    std::fs::create_dir_all(ws.join("data")).unwrap();
    std::fs::write(ws.join("tests/it.rs"), TESTS).unwrap();
    std::fs::write(ws.join("data/words.txt"), "from the archive\n").unwrap();
    let file = dir.join("tests.tar.zst");
    let out = run(Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"))
        .current_dir(ws)
        .env(
            "CARGO_TARGET_DIR",
            fixture_target_dir().join("archive-machines"),
        )
        .args(["archive", "--archive-file"])
        .arg(&file));
    check_success(&out)?;
    Ok(file)
}

/// Shard `k` of 3 on a "machine" of its own: a mount namespace in which the workspace and the
/// rustup and Debian `cargo`s are hidden, then the runner, from the archive.
fn machine(k: usize, ws: &Path, file: &Path, dir: &Path, env: &[(&str, PathBuf)]) -> Child {
    let marks = dir.join(format!("marks-{k}"));
    std::fs::create_dir_all(&marks).unwrap();
    let mut command = on_machine(ws, dir);
    command
        .arg("--archive-file")
        .arg(file)
        .args(["--no-lock", "--partition"])
        .arg(format!("hash:{k}/{SHARDS}"))
        .arg("--junit")
        .arg(dir.join(format!("junit-{k}.xml")))
        .env("CT_MARKS", &marks)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().expect("unshare starts")
}

/// The runner on a "machine": in a mount namespace where the workspace and cargo are hidden. The
/// caller adds the runner's arguments.
fn on_machine(ws: &Path, dir: &Path) -> Command {
    let hide = "mount -t tmpfs none \"$CT_WS\" && \
                for d in \"$HOME/.cargo/bin\" \"$HOME/.rustup\"; do [ -d \"$d\" ] && mount -t tmpfs none \"$d\"; done; \
                for f in /usr/bin/cargo /usr/local/bin/cargo; do [ -e \"$f\" ] && mount --bind /dev/null \"$f\"; done; \
                if command -v cargo >/dev/null; then echo 'cargo is still here' >&2; exit 90; fi; \
                exec \"$0\" \"$@\"";
    std::fs::create_dir_all(dir).unwrap();
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c", hide])
        .arg(env!("CARGO_BIN_EXE_cargo-cleantest"))
        .current_dir(dir)
        .env("CT_WS", ws)
        .env("CLEANTEST_STATE_DIR", dir.join("state"))
        .env("CLEANTEST_LOCK_DIR", dir.join("locks"))
        .env_remove("CARGO")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CLEANTEST_PROFILE");
    command
}

/// Test name → the service container each saw, from one shard's marks.
fn marks(dir: &Path, k: usize) -> BTreeMap<String, String> {
    std::fs::read_dir(dir.join(format!("marks-{k}")))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let id = std::fs::read_to_string(e.path()).unwrap_or_default();
                    (e.file_name().to_string_lossy().into_owned(), id)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for `condition`, checked every 50 ms, for at most `limit`.
fn wait_until(what: &str, limit: Duration, condition: impl Fn() -> bool) -> Result<(), Failed> {
    let deadline = Instant::now() + limit;
    while !condition() {
        check(Instant::now() < deadline, || {
            format!("{what}: not within {limit:?}")
        })?;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn three_machines() -> Result<(), Failed> {
    let ws = scratch_crate("archive-machines", "", Some(CONFIG));
    let dir = temp_dir("archive-machines-run");
    let file = archived(&ws, &dir)?;
    all_shards_complete(&ws, &file, &dir.join("complete"))?;
    a_killed_shard_leaves_the_others(&ws, &file, &dir.join("killed"))?;
    weighted_balances_where_hash_does_not(&ws, &file, &dir.join("weighted"))
}

/// Each machine's shard as `-- --list` names its tests, for `partition` (and `--durations`).
fn listed(
    ws: &Path,
    file: &Path,
    dir: &Path,
    partition: &str,
    durations: Option<&Path>,
) -> Result<Vec<Vec<String>>, Failed> {
    let mut shards = Vec::new();
    for k in 1..=SHARDS {
        let mut command = on_machine(ws, dir);
        command
            .arg("--archive-file")
            .arg(file)
            .arg("--partition")
            .arg(format!("{partition}:{k}/{SHARDS}"));
        if let Some(durations) = durations {
            command.arg("--durations").arg(durations);
        }
        let out = run(command.args(["--", "--list"]));
        check_success(&out)?;
        shards.push(
            stdout(&out)
                .lines()
                .filter_map(|l| l.strip_suffix(": test"))
                .map(str::to_string)
                .collect(),
        );
    }
    Ok(shards)
}

/// The slowest shard's time against the shards' mean.
fn spread(shards: &[Vec<String>], seconds: &dyn Fn(&str) -> f64) -> f64 {
    let times: Vec<f64> = shards
        .iter()
        .map(|tests| tests.iter().map(|t| seconds(t)).sum())
        .collect();
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.iter().copied().fold(0.0, f64::max) / mean
}

/// Skewed durations (made for this suite: two of its long tests in one hash shard, the third in
/// another) in a JUnit report every machine reads: the weighted shards stay within 1.3x of their mean,
/// where the hash shards do not.
fn weighted_balances_where_hash_does_not(ws: &Path, file: &Path, dir: &Path) -> Result<(), Failed> {
    let by_hash = listed(ws, file, dir, "hash", None)?;
    let mut order: Vec<&Vec<String>> = by_hash.iter().filter(|s| !s.is_empty()).collect();
    order.sort_by_key(|s| std::cmp::Reverse(s.len()));
    check(order.len() >= 2 && order[0].len() >= 2, || {
        format!("hash shards: {by_hash:?}")
    })?;
    let long = [
        order[0][0].clone(),
        order[0][1].clone(),
        order[1][0].clone(),
    ];
    let seconds = |test: &str| {
        if long.iter().any(|l| l == test) {
            4.0
        } else {
            0.05
        }
    };
    let cases: String = (0..9)
        .map(|i| {
            let name = format!("t{i}");
            format!(
                "<testcase name=\"{name}\" classname=\"ct-archive-machines::it\" time=\"{}\"/>",
                seconds(&name)
            )
        })
        .collect();
    let durations = dir.join("durations.xml");
    std::fs::write(
        &durations,
        format!("<testsuites><testsuite name=\"ct-archive-machines::it\">{cases}</testsuite></testsuites>"),
    )
    .unwrap();
    let by_weight = listed(ws, file, dir, "weighted", Some(&durations))?;
    let (weighted, hashed) = (spread(&by_weight, &seconds), spread(&by_hash, &seconds));
    check(weighted <= 1.3 && hashed > 1.3, || {
        format!("weighted {weighted:.2}x ({by_weight:?}), hash {hashed:.2}x ({by_hash:?})")
    })
}

/// Three shards at once, to their end: each test once, each shard its own service.
fn all_shards_complete(ws: &Path, file: &Path, dir: &Path) -> Result<(), Failed> {
    let mut children = Shards::start(|k| machine(k, ws, file, dir, &[]));
    let pids = children.pids();
    let mut ran = BTreeMap::new();
    let mut services = Vec::new();
    for (i, pid) in pids.iter().enumerate() {
        let out = children.output(i);
        check(out.status.success(), || {
            format!("shard {}: {}{}", i + 1, stdout(&out), stderr(&out))
        })?;
        let seen = marks(dir, i + 1);
        let mut ids: Vec<&String> = seen.values().collect();
        ids.dedup();
        check(ids.len() == 1, || {
            format!(
                "shard {}'s tests saw {} services: {seen:?}",
                i + 1,
                ids.len()
            )
        })?;
        services.push(ids[0].clone());
        for name in seen.keys() {
            *ran.entry(name.clone()).or_insert(0) += 1;
        }
        check(owned_by(*pid).is_empty(), || {
            format!("shard {} left containers", i + 1)
        })?;
    }
    let expected: BTreeMap<String, i32> = (0..9).map(|i| (format!("t{i}"), 1)).collect();
    check(ran == expected, || {
        format!("every test once across the shards: {ran:?}")
    })?;
    services.sort();
    services.dedup();
    check(services.len() == SHARDS, || {
        format!("the shards shared services: {services:?}")
    })?;
    check(unpacked(dir).is_empty(), || {
        format!("unpacked archives left: {:?}", unpacked(dir))
    })
}

/// The sessions' unpacked archives in the shards' state directory, and their locks.
fn unpacked(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("state/archives"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// How many sessions have an unpacked archive.
fn unpacked_dirs(dir: &Path) -> usize {
    unpacked(dir).iter().filter(|p| p.is_dir()).count()
}

/// Three shards whose tests wait for a release; shard 2's runner is SIGKILLed while they wait.
fn a_killed_shard_leaves_the_others(ws: &Path, file: &Path, dir: &Path) -> Result<(), Failed> {
    let release = dir.join("release");
    let mut children =
        Shards::start(|k| machine(k, ws, file, dir, &[("CT_RELEASE", release.clone())]));
    let pids = children.pids();
    wait_until(
        "every shard running a test",
        Duration::from_secs(120),
        || (1..=SHARDS).all(|k| !marks(dir, k).is_empty()),
    )?;
    let before: Vec<Vec<String>> = pids.iter().map(|p| owned_by(*p)).collect();
    kill(Pid::from_raw(pids[1] as i32), Signal::SIGKILL).unwrap();
    children.wait(1);
    let gone = wait_until(
        "the killed shard's containers and unpacked archive removed",
        Duration::from_secs(60),
        || owned_by(pids[1]).is_empty() && unpacked_dirs(dir) == SHARDS - 1,
    );
    let others_untouched = [0, 2].iter().all(|&i| owned_by(pids[i]) == before[i]);
    std::fs::write(&release, "").unwrap();
    if gone.is_err() {
        return Err(format!(
            "the killed shard left containers {:?} or unpacked archives {:?}",
            owned_by(pids[1]),
            unpacked(dir)
        )
        .into());
    }
    check(!before[1].is_empty() && others_untouched, || {
        format!("the other shards' containers changed: before {before:?}")
    })?;
    for i in [0, 2] {
        let out = children.output(i);
        check(out.status.success(), || {
            format!("shard {}: {}{}", i + 1, stdout(&out), stderr(&out))
        })?;
        check(sum_totals(&out).passed == marks(dir, i + 1).len(), || {
            format!("shard {}: {}", i + 1, stdout(&out))
        })?;
        check(owned_by(pids[i]).is_empty(), || {
            format!("shard {} left containers", i + 1)
        })?;
    }
    check(unpacked(dir).is_empty(), || {
        format!("unpacked archives left: {:?}", unpacked(dir))
    })
}

/// The shards' runners: those not waited for when the cell ends (it failed) get SIGTERM, so their
/// sessions end as a stopped run's do, and are waited for.
struct Shards(Vec<Option<Child>>);

impl Shards {
    /// Shards 1 to `SHARDS`, each started by `start(k)`.
    fn start(start: impl Fn(usize) -> Child) -> Shards {
        Shards((1..=SHARDS).map(|k| Some(start(k))).collect())
    }

    fn pids(&self) -> Vec<u32> {
        self.0.iter().flatten().map(Child::id).collect()
    }

    /// Waits for shard `i + 1`'s runner to end (it keeps its output pipes open, as a running one's).
    fn wait(&mut self, i: usize) {
        if let Some(child) = self.0[i].as_mut() {
            let _ = child.wait();
        }
    }

    /// Shard `i + 1`'s runner, waited for to its end, and what it printed.
    fn output(&mut self, i: usize) -> std::process::Output {
        let child = self.0[i].take().expect("each shard is waited for once");
        child
            .wait_with_output()
            .expect("the shard's runner is waited for")
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        for child in self.0.iter_mut().flatten() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            }
            let _ = child.wait();
        }
    }
}
