//! The `cleantest` crate under any runner (`fixtures/any-runner`): without `cargo cleantest`, the
//! crate's session host shares one container per service across every test process of one cargo
//! invocation, and removes them when cargo exits, however it exits; `CLEANTEST_HOST=off` gives the
//! plain error; under `cargo cleantest` no host is started. Real engine, real redis, real signals.

use crate::common;
use crate::service_image;

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::docker::*;
use common::*;
use libtest_mimic::Failed;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// How long after cargo's exit the host's containers may still be there.
const GONE_BOUND: Duration = Duration::from_secs(5);

/// The cells of this module.
pub fn cells() -> Vec<Cell> {
    let redis = (!Path::new("/usr/bin/redis-server").exists())
        .then(|| "redis-server is not installed (apt-get install redis-server)".to_string());
    type Case = fn() -> Result<(), Failed>;
    let cases: [(&str, Case); 9] = [
        ("plain_cargo_test_shares_one_container_per_service", plain),
        ("per_test_processes_share_one_host", per_test_processes),
        ("an_ide_run_of_one_exact_test_leaves_nothing", exact),
        ("cargo_test_sigint_leaves_nothing", || {
            interrupted(Kill::Sigint)
        }),
        ("cargo_test_sigkill_leaves_nothing", || {
            interrupted(Kill::Cargo)
        }),
        ("the_host_sigkilled_leaves_nothing", || {
            interrupted(Kill::Host)
        }),
        ("two_checkouts_at_once_get_two_hosts", two_checkouts),
        ("under_cargo_cleantest_no_host_is_started", under_cleantest),
        (
            "a_process_outside_cargo_holding_the_session_id_is_refused_by_the_host",
            outsider_refused,
        ),
    ];
    let mut cells: Vec<Cell> = cases
        .into_iter()
        .map(|(name, f)| {
            let mut cell = trial(name, f);
            cell.unavailable = redis.clone();
            cell
        })
        .collect();
    let mut nextest = trial(
        "cargo_nextest_run_shares_one_container_per_service",
        nextest,
    );
    nextest.unavailable = redis.clone();
    nextest.optional = (!tool_works(&["nextest", "--version"]))
        .then(|| "cargo-nextest is not installed (cargo install --locked cargo-nextest)".into());
    cells.push(nextest);
    cells.push(trial("with_the_host_off_the_error_is_todays", host_off));
    cells.push(trial(
        "with_no_binary_found_the_error_says_how_to_install_it",
        no_binary_found,
    ));
    engine_cells(cells)
}

fn tool_works(args: &[&str]) -> bool {
    Command::new(cargo())
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// One run's directories and marks: its run id labels every container the host starts.
struct Run {
    mark: String,
    state: TempDir,
    out: TempDir,
}

impl Run {
    fn new(label: &str) -> Run {
        Run {
            mark: unique_mark(label),
            state: temp_dir("host-state"),
            out: temp_dir("host-probes"),
        }
    }

    /// `cargo ARGS` in `workspace`, outside any session, with the host binary named.
    fn cargo(&self, workspace: &Path, target: &Path) -> Command {
        let mut command = Command::new(cargo());
        self.environment(&mut command, workspace, target);
        command
    }

    fn environment(&self, command: &mut Command, workspace: &Path, target: &Path) {
        command
            .current_dir(workspace)
            .env("CARGO_TARGET_DIR", target)
            .env("CLEANTEST_RUNNER", env!("CARGO_BIN_EXE_cargo-cleantest"))
            .env("CLEANTEST_STATE_DIR", &*self.state)
            .env("CLEANTEST_RUN_ID", &self.mark)
            .env("CT_IT_OUT", &*self.out)
            .env("CT_IT_MARK", &self.mark)
            .env_remove("CLEANTEST_SESSION")
            .env_remove("CLEANTEST_CONTROL")
            .env_remove("CLEANTEST_HOST")
            .env_remove("CLEANTEST_PROFILE")
            // This harness's own (cargo sets it for the test binary it runs): not the fixture's.
            .env_remove("CARGO_MANIFEST_DIR")
            .env_remove("RUST_TEST_THREADS");
    }

    /// How many tests wrote probes, and the distinct server run ids of `cache` and of `store`.
    fn seen(&self) -> (usize, BTreeSet<String>, BTreeSet<String>) {
        let (mut probes, mut cache, mut store) = (0, BTreeSet::new(), BTreeSet::new());
        for entry in std::fs::read_dir(&self.out).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with("hanging") {
                continue;
            }
            probes += 1;
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for line in text.lines() {
                if let Some(id) = line.strip_prefix("cache ") {
                    cache.insert(id.to_string());
                } else if let Some(id) = line.strip_prefix("store ") {
                    store.insert(id.to_string());
                }
            }
        }
        (probes, cache, store)
    }

    /// Checks `tests` probes saw one server per service.
    fn check_shared(&self, tests: usize) -> Result<(), Failed> {
        let (probes, cache, store) = self.seen();
        check(
            probes == tests && cache.len() == 1 && store.len() == 1,
            || {
                format!(
                    "{probes} tests (of {tests}) saw cache servers {cache:?} and store servers {store:?}"
                )
            },
        )
    }

    /// Containers, networks and volumes labelled with this run's id.
    fn left(&self) -> Vec<String> {
        let filter = format!("label=cleantest.run={}", self.mark);
        let mut left = matching(None, &filter);
        for kind in ["network", "volume"] {
            let names = docker(&[kind, "ls", "-q", "--filter", &filter]);
            left.extend(names.lines().map(|n| format!("{kind} {n}")));
        }
        left
    }

    /// Nothing of the run is left within `GONE_BOUND` (the host sweeps once it sees cargo gone).
    fn check_gone(&self) -> Result<(), Failed> {
        let deadline = Instant::now() + GONE_BOUND;
        loop {
            let left = self.left();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("left {GONE_BOUND:?} after cargo's exit: {left:?}").into());
            }
            // Polling the engine for a condition it sends no event of, within the bound.
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The pid the session host wrote in its address file (its second line).
    fn host_pid(&self) -> Option<i32> {
        let hosts = self.state.join("hosts");
        std::fs::read_dir(hosts)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".socket"))
            .find_map(|e| {
                let text = std::fs::read_to_string(e.path()).ok()?;
                text.lines().nth(1)?.trim().parse().ok()
            })
    }

    /// The address and lock files in the hosts directory.
    fn host_files(&self) -> Vec<String> {
        std::fs::read_dir(self.state.join("hosts"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".socket") || n.ends_with(".lock"))
            .collect()
    }

    /// Whether any session host was started (its files in the state directory).
    fn hosts_started(&self) -> bool {
        std::fs::read_dir(self.state.join("hosts"))
            .into_iter()
            .flatten()
            .next()
            .is_some()
    }
}

fn workspace() -> PathBuf {
    fixture("any-runner")
}

fn target() -> PathBuf {
    fixture_target_dir().join("any-runner")
}

fn plain() -> Result<(), Failed> {
    service_image::build("redis", false)?;
    let run = Run::new("host-plain");
    let out = run.cargo(&workspace(), &target()).arg("test").output()?;
    check_success(&out)?;
    run.check_shared(20)?;
    run.check_gone()
}

/// Each test in a process of its own, as nextest runs them, from a parent that is not cargo and has no
/// cargo above it (a shell detached with `setsid -f`, so this harness's cargo is not its ancestor):
/// the host is keyed by that parent, and sweeps when it exits.
fn per_test_processes() -> Result<(), Failed> {
    service_image::build("redis", false)?;
    let run = Run::new("host-procs");
    let binaries = test_binaries(&run)?;
    let done = run.out.join("hanging.done");
    let mut script = String::from("(set -e\n");
    for binary in &binaries {
        let bin = if binary.contains("/a-") { "a" } else { "b" };
        for n in [
            "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        ] {
            script.push_str(&format!(
                "'{binary}' --exact {bin}_{n} --nocapture >/dev/null\n"
            ));
        }
    }
    // `true` last: a shell runs its last command by exec, and that test's parent would be another.
    script.push_str("true\n");
    script.push_str(&format!(
        ") </dev/null >/dev/null 2>&1; echo $? > '{}.tmp'; mv '{0}.tmp' '{0}'\n",
        done.display()
    ));
    let mut shell = Command::new("setsid");
    run.environment(&mut shell, &workspace(), &target());
    let out = shell.args(["-f", "sh", "-c", &script]).output()?;
    check_success(&out)?;
    wait_for_file(&done, Duration::from_secs(300));
    let status = std::fs::read_to_string(&done)?;
    check(status.trim() == "0", || {
        format!("the per-test processes exited {status}")
    })?;
    run.check_shared(20)?;
    run.check_gone()
}

/// The fixture's two test binaries (`a`, `b`), built.
fn test_binaries(run: &Run) -> Result<Vec<String>, Failed> {
    let built = run
        .cargo(&workspace(), &target())
        .args(["test", "--no-run", "--message-format", "json"])
        .output()?;
    check(built.status.success(), || stderr(&built))?;
    let binaries: Vec<String> = stdout(&built)
        .lines()
        .filter(|l| l.contains("\"test\":true") && l.contains("\"kind\":[\"test\"]"))
        .filter_map(|l| {
            let at = l.find("\"executable\":\"")? + "\"executable\":\"".len();
            Some(l[at..].split('"').next()?.to_string())
        })
        .collect();
    check(binaries.len() == 2, || {
        format!("test binaries: {binaries:?}")
    })?;
    Ok(binaries)
}

/// No `cargo-cleantest` on PATH or in `$CARGO_HOME/bin`, and no `CLEANTEST_RUNNER`: the test fails
/// with the error that says how to install it, and nothing starts.
fn no_binary_found() -> Result<(), Failed> {
    let run = Run::new("host-none");
    let binary = test_binaries(&run)?
        .into_iter()
        .find(|b| b.contains("/a-"))
        .ok_or("no binary a")?;
    let home = temp_dir("empty-home");
    let out = Command::new(binary)
        .args(["--exact", "a_one"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &*home)
        .env("CLEANTEST_STATE_DIR", &*run.state)
        .env("CLEANTEST_RUN_ID", &run.mark)
        .output()?;
    let text = format!("{}{}", stdout(&out), stderr(&out));
    check(!out.status.success(), || {
        "the test passed with no runner".into()
    })?;
    check(
        text.contains("no cargo-cleantest binary was found") && text.contains("cargo install"),
        || format!("the error does not say how to install it:\n{text}"),
    )?;
    check(run.host_pid().is_none(), || {
        "a session host was started".into()
    })?;
    check(run.left().is_empty(), || "a container was started".into())
}

fn exact() -> Result<(), Failed> {
    service_image::build("redis", false)?;
    let run = Run::new("host-exact");
    let out = run
        .cargo(&workspace(), &target())
        .args(["test", "--test", "a", "--", "--exact", "a_three"])
        .output()?;
    check_success(&out)?;
    run.check_shared(1)?;
    run.check_gone()
}

fn nextest() -> Result<(), Failed> {
    service_image::build("redis", false)?;
    let run = Run::new("host-nextest");
    let out = run
        .cargo(&workspace(), &target())
        .args(["nextest", "run"])
        .output()?;
    check_success(&out)?;
    run.check_shared(20)?;
    run.check_gone()
}

#[derive(Debug, Clone, Copy)]
enum Kill {
    /// SIGINT to cargo's process group, as a terminal's Ctrl-C.
    Sigint,
    /// SIGKILL to cargo alone.
    Cargo,
    /// SIGKILL to the session host: its reaper sweeps.
    Host,
}

/// A test that uses both services and hangs; once it says so, `how` ends the run.
/// Plain `cargo test` of a test that hangs once it has its services (so a host serves it): cargo, in
/// a process group of its own, and the hanging test's pid.
fn start_hanging(run: &Run) -> Result<(std::process::Child, i32), Failed> {
    let mut command = run.cargo(&workspace(), &target());
    command
        .args(["test", "--test", "b", "--", "--ignored", "--exact", "hangs"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    // A shell that runs this suite in the background (no job control) leaves SIGINT ignored, and an
    // ignored signal stays ignored across exec: cargo would never see the Ctrl-C these cells send.
    // SAFETY: between fork and exec only sigaction is called, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            for signal in [Signal::SIGINT, Signal::SIGQUIT] {
                nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl)
                    .map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    let mut cargo = command.spawn()?;
    let hanging = run.out.join("hanging");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !hanging.exists() {
        let ended = cargo.try_wait()?;
        if ended.is_some() || Instant::now() > deadline {
            // Cleaned up on failure too: cargo's whole group, which holds the test and its host's key.
            let _ = killpg(Pid::from_raw(cargo.id() as i32), Signal::SIGKILL);
            let _ = cargo.wait();
            return Err(format!("the hanging test never started (cargo: {ended:?})").into());
        }
        // Waiting for a file the fixture writes once it runs: no event to wait on from here.
        std::thread::sleep(Duration::from_millis(20));
    }
    let test_pid: i32 = std::fs::read_to_string(&hanging)?.trim().parse()?;
    Ok((cargo, test_pid))
}

/// A process that is not of the cargo invocation (this harness's child) sets `CLEANTEST_SESSION` to the
/// host's session id, which the socket's path shows, and asks for a service: the host refuses it. It
/// used to serve any process carrying the id.
fn outsider_refused() -> Result<(), Failed> {
    service_image::build("redis", false)?;
    let run = Run::new("host-peer");
    let (mut cargo, _) = start_hanging(&run)?;
    let address = std::fs::read_dir(run.state.join("hosts"))?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".socket"))
        .map(|e| e.path());
    let socket = address
        .and_then(|a| std::fs::read_to_string(a).ok())
        .and_then(|text| Some(PathBuf::from(text.lines().next()?.trim())));
    let answer = socket.as_ref().map(|socket| {
        let session = socket
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Command::new("python3")
            .arg("-c")
            .arg(
                "import os, socket\n\
                 s = socket.socket(socket.AF_UNIX)\n\
                 s.connect(os.environ['CT_SOCKET'])\n\
                 s.sendall(b'{\"v\":1,\"op\":\"service\",\"name\":\"cache\"}\\n')\n\
                 print(s.makefile().readline())\n",
            )
            .env("CT_SOCKET", socket)
            .env("CLEANTEST_SESSION", &session)
            .output()
    });
    let _ = killpg(Pid::from_raw(cargo.id() as i32), Signal::SIGINT);
    let _ = cargo.wait();
    run.check_gone()?;
    let answer = answer
        .ok_or("no session host named its socket")?
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())?;
    check(answer.contains("is not part of session"), || {
        format!("an outsider holding the session id got {answer:?}")
    })
}

fn interrupted(how: Kill) -> Result<(), Failed> {
    service_image::build("redis", false)?;
    let run = Run::new("host-kill");
    let (mut cargo, test_pid) = start_hanging(&run)?;
    let cargo_pid = Pid::from_raw(cargo.id() as i32);
    let host = run.host_pid();
    match how {
        Kill::Sigint => {
            let _ = killpg(cargo_pid, Signal::SIGINT);
        }
        Kill::Cargo => {
            let _ = kill(cargo_pid, Signal::SIGKILL);
        }
        Kill::Host => {
            let Some(host) = host else {
                let _ = killpg(cargo_pid, Signal::SIGKILL);
                let _ = cargo.wait();
                return Err("no session host wrote its pid".into());
            };
            let _ = kill(Pid::from_raw(host), Signal::SIGKILL);
        }
    }
    // After a SIGKILL of cargo or of the host, the hanging test runs on: it is ours to end, and the
    // sweep must have happened without its help.
    let swept = run.check_gone();
    let _ = kill(Pid::from_raw(test_pid), Signal::SIGKILL);
    let _ = killpg(cargo_pid, Signal::SIGKILL);
    let _ = cargo.wait();
    swept?;
    // The host exits once it has swept (a zombie until its parent, the killed test, is gone).
    let host_gone = || host.is_some_and(|h| is_gone(&h.to_string()));
    let deadline = Instant::now() + GONE_BOUND;
    while !host_gone() && Instant::now() < deadline {
        // Polling for an exit of a process that is not ours to wait for, within the bound.
        std::thread::sleep(Duration::from_millis(20));
    }
    check(host_gone(), || {
        format!("the session host {host:?} is still running ({how:?})")
    })?;
    if let Kill::Host = how {
        // The killed host left its files; the next host in this state directory forgets them (their
        // key, the killed cargo, is gone).
        let before = run.host_files();
        let out = run
            .cargo(&workspace(), &target())
            .args(["test", "--test", "a", "--", "--exact", "a_one"])
            .output()?;
        check_success(&out)?;
        run.check_gone()?;
        let after = run.host_files();
        check(
            !before.is_empty() && before.iter().all(|f| !after.contains(f)),
            || format!("a killed host's files {before:?} are still there: {after:?}"),
        )?;
    }
    Ok(())
}

/// Two copies of the workspace tested at once: each its own host, its own containers, nothing left.
fn two_checkouts() -> Result<(), Failed> {
    service_image::build("redis", false)?;
    let runs = [Run::new("host-two-a"), Run::new("host-two-b")];
    let mut children = Vec::new();
    let mut copies = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let copy = temp_dir("checkout");
        copy_tree(&workspace(), &copy)?;
        // The cleantest path dependency is relative: point it at this repository's crate.
        let manifest = copy.join("ct-any/Cargo.toml");
        let text = std::fs::read_to_string(&manifest)?.replace(
            "../../../cleantest",
            &root().join("cleantest").display().to_string(),
        );
        std::fs::write(&manifest, text)?;
        let target = fixture_target_dir().join(format!("any-runner-{i}"));
        children.push(
            run.cargo(&copy, &target)
                .arg("test")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?,
        );
        // Kept until the cargo test in it is done.
        copies.push(copy);
    }
    for child in &mut children {
        let status = child.wait()?;
        check(status.success(), || {
            format!("a checkout's cargo test: {status}")
        })?;
    }
    let mut ids = BTreeSet::new();
    for run in &runs {
        run.check_shared(20)?;
        let (_, cache, store) = run.seen();
        ids.extend(cache);
        ids.extend(store);
    }
    check(ids.len() == 4, || {
        format!("the checkouts shared servers: {ids:?}")
    })?;
    for run in &runs {
        run.check_gone()?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&dest)?;
            copy_tree(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

/// Under `cargo cleantest` the crate talks to the runner, as before: no host, one container per
/// service, nothing left.
fn under_cleantest() -> Result<(), Failed> {
    service_image::build("redis", false)?;
    let run = Run::new("host-runner");
    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"));
    in_fixture(&mut command, "any-runner", &run.mark);
    let out = command
        .env("CLEANTEST_STATE_DIR", &*run.state)
        .env("CT_IT_OUT", &*run.out)
        .env("CLEANTEST_RUN_ID", &run.mark)
        .env("CARGO_TARGET_DIR", target())
        .arg("--no-lock")
        .output()?;
    check_success(&out)?;
    run.check_shared(20)?;
    check(!run.hosts_started(), || "a session host was started".into())?;
    let left = matching(None, &format!("label=cleantest.run={}", run.mark));
    check(left.is_empty(), || format!("left {left:?}"))
}

/// `CLEANTEST_HOST=off`: the tests fail with the error that says how to run them, and nothing starts.
fn host_off() -> Result<(), Failed> {
    let run = Run::new("host-off");
    let out = run
        .cargo(&workspace(), &target())
        .args(["test", "--test", "a", "--", "--exact", "a_one"])
        .env("CLEANTEST_HOST", "off")
        .output()?;
    let text = format!("{}{}", stdout(&out), stderr(&out));
    check(!out.status.success(), || {
        "the test passed with the host off".into()
    })?;
    check(
        text.contains("run the tests with `cargo cleantest`") && text.contains("cargo install"),
        || format!("the error does not say how to run the tests:\n{text}"),
    )?;
    check(!run.hosts_started(), || "a session host was started".into())?;
    check(run.left().is_empty(), || "a container was started".into())
}
