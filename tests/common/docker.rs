//! Helpers for the Docker test harnesses (libtest-mimic, so a missing engine reports the tests as
//! ignored with the reason, or fails them under `CLEANTEST_REQUIRE_DOCKER=1`).

#[path = "../../xtask/src/image.rs"]
pub mod image;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub type Test = Box<dyn FnOnce() -> Result<(), Failed> + Send + 'static>;

/// A named trial, and why it cannot run here (beyond the engine), if it cannot.
pub struct Cell {
    pub name: String,
    pub test: Test,
    pub unavailable: Option<String>,
    /// Why it is ignored here even under `CLEANTEST_REQUIRE_DOCKER=1`: it needs a tool that CI does not
    /// install (cargo-nextest), and runs wherever the tool is.
    pub optional: Option<String>,
}

/// A named trial.
pub fn trial(
    name: impl Into<String>,
    f: impl FnOnce() -> Result<(), Failed> + Send + 'static,
) -> Cell {
    Cell {
        name: name.into(),
        test: Box::new(f),
        unavailable: None,
        optional: None,
    }
}

/// Runs the trials. Without a usable engine (or what a trial needs besides) a trial is reported ignored
/// with the reason, or failed when `CLEANTEST_REQUIRE_DOCKER=1`.
pub fn run_trials(cells: Vec<Cell>) {
    run_cells(cells, engine_problem());
}

/// Cells that need the engine: without a usable one (checked once per binary, which builds the fixture
/// image), each is unavailable with the reason.
pub fn engine_cells(cells: Vec<Cell>) -> Vec<Cell> {
    static PROBLEM: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let engine = PROBLEM.get_or_init(|| {
        let problem = engine_problem();
        if let Some(reason) = &problem {
            eprintln!("docker tests: no usable engine: {reason}");
        }
        problem
    });
    cells
        .into_iter()
        .map(|mut cell| {
            cell.unavailable = engine.clone().or(cell.unavailable);
            cell
        })
        .collect()
}

/// Cells that need no engine (each may still be unavailable for a reason of its own).
pub fn plain_cells(cells: Vec<Cell>) -> Vec<Cell> {
    cells
}

/// Runs trials that need no engine: one that cannot run here (its `unavailable`) is reported ignored
/// with the reason, or failed under `CLEANTEST_REQUIRE_DOCKER=1`, which CI sets to mean "everything this
/// suite needs is installed".
pub fn run_plain_trials(cells: Vec<Cell>) {
    run_cells(cells, None);
}

fn run_cells(cells: Vec<Cell>, engine: Option<String>) {
    let args = Arguments::from_args();
    let required = std::env::var("CLEANTEST_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    if let Some(reason) = &engine {
        eprintln!("docker tests: no usable engine: {reason}");
    }
    let trials = cells
        .into_iter()
        .map(|cell| {
            if let Some(reason) = &cell.optional {
                eprintln!("{}: ignored: {reason}", cell.name);
                return Trial::test(cell.name, || Ok(())).with_ignored_flag(true);
            }
            let problem = engine.clone().or(cell.unavailable);
            if let (Some(reason), false) = (&problem, required) {
                eprintln!("{}: ignored: {reason}", cell.name);
            }
            let ignored = problem.is_some() && !required;
            let test = cell.test;
            Trial::test(cell.name, move || match problem {
                Some(reason) if required => Err(format!("cannot run here: {reason}").into()),
                _ => test(),
            })
            .with_ignored_flag(ignored)
        })
        .collect();
    // Every process this binary starts keeps its temporary files here, runners their sessions'
    // temporary directories among them: a cell that kills a runner and its reaper together (a PID
    // namespace's end) leaves that directory to "the next run" on a state directory the cell then
    // removes. This directory goes with the binary's end.
    // SAFETY: set before libtest-mimic starts the threads that run the trials; nothing else of this
    // process reads the environment meanwhile.
    unsafe { std::env::set_var("TMPDIR", super::binary_temp_dir()) };
    let conclusion = libtest_mimic::run(&args, trials);
    super::remove_run_dirs();
    conclusion.exit();
}

/// Why a mount namespace with a tmpfs in it cannot be made here, if it cannot.
pub fn mount_namespace_problem() -> Option<String> {
    let ok = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("d=$(mktemp -d) && mount -t tmpfs t \"$d\" && umount \"$d\" && rmdir \"$d\"")
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| "needs root and `unshare --mount` to mount a tmpfs in a namespace".into())
}

/// Why Docker tests cannot run here, if they cannot: no engine, or the fixture image cannot be built.
pub fn engine_problem() -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let docker = match bollard::Docker::connect_with_defaults() {
            Ok(d) => d,
            Err(e) => return Some(e.to_string()),
        };
        match tokio::time::timeout(Duration::from_secs(5), docker.ping()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Some(e.to_string()),
            Err(_) => return Some("the engine did not answer within 5s".into()),
        }
        let docker = match docker.negotiate_version().await {
            Ok(d) => d,
            Err(e) => return Some(e.to_string()),
        };
        image::ensure(&docker, false).await.err()
    })
}

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Ids of containers, networks and volumes carrying `ct-it.mark=<mark>`.
pub fn marked(mark: &str) -> Vec<String> {
    marked_at(None, mark)
}

/// `marked` on the engine at `host` (a `unix://` URL), or the default one.
pub fn marked_at(host: Option<&str>, mark: &str) -> Vec<String> {
    matching(host, &format!("label=ct-it.mark={mark}"))
}

/// Ids of containers (in every state), networks and volumes matching a docker CLI `--filter`.
pub fn matching(host: Option<&str>, filter: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for what in [
        &["ps", "-aq"][..],
        &["network", "ls", "-q"],
        &["volume", "ls", "-q"],
    ] {
        let mut args: Vec<&str> = host.map(|h| vec!["-H", h]).unwrap_or_default();
        args.extend(what);
        args.extend(["--filter", filter]);
        ids.extend(docker(&args).lines().map(str::to_string));
    }
    ids
}

pub fn check(condition: bool, message: impl FnOnce() -> String) -> Result<(), Failed> {
    if condition {
        Ok(())
    } else {
        Err(message().into())
    }
}

/// Fails with the run's status and stderr unless it exited 0.
pub fn check_success(out: &std::process::Output) -> Result<(), Failed> {
    check(out.status.success(), || {
        format!("{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr))
    })
}

/// A container that belongs to nobody's session, which every sweep must leave alone.
pub struct Foreign(pub String);

impl Foreign {
    pub fn start(mark: &str) -> Foreign {
        let label = format!("ct-it.foreign={mark}");
        Foreign(docker(&[
            "run",
            "-d",
            "--label",
            &label,
            image::IMAGE,
            "sleep",
            "1000",
        ]))
    }

    pub fn running(&self) -> bool {
        docker(&["inspect", "-f", "{{.State.Running}}", &self.0]) == "true"
    }

    /// A network that belongs to nobody's session, `<mark>-net`, labelled as the container is (its
    /// caller removes it by that label).
    pub fn network(mark: &str) -> String {
        let label = format!("ct-it.foreign={mark}");
        docker(&[
            "network",
            "create",
            "--label",
            &label,
            &format!("{mark}-net"),
        ])
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.0])
            .stdout(Stdio::null())
            .status();
    }
}

/// A run that is interrupted (and so cleans up) however the test ends.
pub struct Interrupting(pub Option<std::process::Child>);

impl Interrupting {
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("interrupted once");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
        child.wait().unwrap()
    }
}

impl Drop for Interrupting {
    fn drop(&mut self) {
        if self.0.is_some() {
            self.interrupt();
        }
    }
}

/// The reaper the runner `runner` started (its child running `__reaper`), if any.
pub fn reaper_of(runner: u32) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{runner}/task")).ok()?;
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.split(|b| *b == 0).any(|arg| arg == b"__reaper") {
                return Some(pid);
            }
        }
    }
    None
}

/// A Docker engine of the test's own (own socket, data root, exec root, pidfile, config and network
/// namespace, `--bridge=none`), so a cell can stop and restart an engine without touching the shared one.
pub struct PrivateEngine {
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
    /// Whether the host had the shared engine's `docker0` when this engine started.
    host_bridge: bool,
    /// Also listening on `tcp://127.0.0.1:PORT` of its network namespace (loopback brought up).
    tcp: Option<u16>,
    /// With TLS on that port: the directory of `ca.pem`, `server-cert.pem` and `server-key.pem`.
    tls: Option<std::path::PathBuf>,
}

fn host_bridge_exists() -> bool {
    Path::new("/sys/class/net/docker0").exists()
}

/// Why a private engine cannot be started here, if it cannot.
pub fn private_engine_problem() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("a private dockerd needs root".into());
    }
    if Command::new("dockerd").arg("--version").output().is_err() {
        return Some("no dockerd binary".into());
    }
    if Command::new("unshare").arg("--version").output().is_err() {
        return Some("no unshare binary (util-linux) to give it a network namespace".into());
    }
    None
}

impl PrivateEngine {
    /// Starts it in a short directory under /tmp (unix socket paths are limited to 108 bytes).
    pub fn start() -> Result<PrivateEngine, Failed> {
        Self::start_with(None, None)
    }

    /// Starts it also listening on TCP, at `127.0.0.1:port` of its own network namespace: a remote
    /// engine for a runner started in that namespace (`in_namespace`).
    pub fn start_with_tcp(port: u16) -> Result<PrivateEngine, Failed> {
        Self::start_with(Some(port), None)
    }

    /// `start_with_tcp` with `--tlsverify` and the certificates in `certs`.
    pub fn start_with_tls(port: u16, certs: &Path) -> Result<PrivateEngine, Failed> {
        Self::start_with(Some(port), Some(certs.to_path_buf()))
    }

    fn start_with(
        tcp: Option<u16>,
        tls: Option<std::path::PathBuf>,
    ) -> Result<PrivateEngine, Failed> {
        let dir = std::path::PathBuf::from(format!("/tmp/ct-{}", crate::common::unique_mark("e")));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("daemon.json"), "{}")?;
        let mut engine = PrivateEngine {
            dir,
            child: None,
            host_bridge: host_bridge_exists(),
            tcp,
            tls,
        };
        engine.up()?;
        let load = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save {} | docker -H {} load",
                image::IMAGE,
                engine.host()
            ))
            .output()?;
        check(load.status.success(), || {
            String::from_utf8_lossy(&load.stderr).into_owned()
        })?;
        Ok(engine)
    }

    /// Fails if the host's `docker0` disappeared while this engine ran (the shared engine needs it).
    pub fn check_host_untouched(&self) -> Result<(), Failed> {
        check(!self.host_bridge || host_bridge_exists(), || {
            "the host's docker0 interface disappeared: the private engine touched the shared one"
                .into()
        })
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("d.sock").display())
    }

    /// Starts the daemon and waits until it answers.
    pub fn up(&mut self) -> Result<(), Failed> {
        let d = &self.dir;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("log"))?;
        // A network namespace of its own: a dockerd started with `--bridge=none` deletes the default
        // `docker0` interface it finds at start, which in the host's namespace belongs to the shared engine.
        let mut command = Command::new("unshare");
        command.arg("--net");
        if let Some(port) = self.tcp {
            // The new namespace's loopback is down: up first, then dockerd in the same process.
            command
                .args([
                    "sh",
                    "-c",
                    "ip link set lo up && exec \"$@\"",
                    "sh",
                    "dockerd",
                ])
                .args(["--host", &format!("tcp://127.0.0.1:{port}")]);
            if let Some(certs) = &self.tls {
                command
                    .arg("--tlsverify")
                    .arg("--tlscacert")
                    .arg(certs.join("ca.pem"))
                    .arg("--tlscert")
                    .arg(certs.join("server-cert.pem"))
                    .arg("--tlskey")
                    .arg(certs.join("server-key.pem"));
            }
        } else {
            command.arg("dockerd");
        }
        let child = command
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .args(["--host", &self.host()])
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("x"))
            .arg("--pidfile")
            .arg(d.join("d.pid"))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new("docker")
                .args(["-H", &self.host(), "info"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return Ok(());
            }
            check(std::time::Instant::now() < deadline, || {
                "the private dockerd did not start".into()
            })?;
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `nsenter` into the engine's network namespace, where its TCP address is reachable: prefix of
    /// a command to run there.
    pub fn in_namespace(&self, program: &str) -> Command {
        let pid = self.child.as_ref().map_or(0, |c| c.id());
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .arg("--")
            .arg(program);
        command
    }

    /// Freezes the daemon (SIGSTOP): it accepts connections and answers nothing, a hung engine.
    pub fn pause(&self) {
        if let Some(child) = &self.child {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGSTOP);
        }
    }

    /// Lets a paused daemon go on (SIGCONT).
    pub fn resume(&self) {
        if let Some(child) = &self.child {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
        }
    }

    /// Stops the daemon (SIGTERM to the pid this test started) and waits for it to exit.
    pub fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused daemon would never see the SIGTERM.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.resume();
            // Remove what is left on it, then stop it and delete its directory.
            let host = self.host();
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "docker -H {host} ps -aq | xargs -r docker -H {host} rm -f"
                ))
                .output();
            self.down();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A workspace outside this repository (whose own config would be found first) whose default profile
/// holds `profile` (TOML lines); `Workspace::drop` removes what it made, by name.
pub struct Workspace(pub std::path::PathBuf);

impl Workspace {
    pub fn with_profile(mark: &str, profile: &str) -> Workspace {
        let dir = std::env::temp_dir().join(format!("ct-{mark}"));
        std::fs::create_dir_all(dir.join(".config")).expect("create the workspace");
        std::fs::write(
            dir.join(".config/cleantest.toml"),
            format!("[profile.default]\n{profile}\n"),
        )
        .expect("write its config");
        Workspace(dir)
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0.join(".config/cleantest.toml"));
        let _ = std::fs::remove_dir(self.0.join(".config"));
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `cargo-cleantest exec --no-lock` with the test's state directory and mark; the caller adds
/// `-- CMD ARGS...` (and any other option).
pub fn exec_in_session(mark: &str, state: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"));
    command
        .env("CLEANTEST_STATE_DIR", state)
        .env("CT_IT_MARK", mark)
        .args(["exec", "--no-lock"]);
    command
}

/// Containers (any state) whose owner is the runner `pid` (its owner label `cleantest.pid`): what a
/// run started directly left, when the runner is the test's own child.
pub fn owned_by(pid: u32) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=cleantest.pid={pid}"),
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// Networks whose owner is the runner `pid`.
pub fn networks_owned_by(pid: u32) -> Vec<String> {
    docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label=cleantest.pid={pid}"),
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// Runs to the end with its output captured: the runner's pid (for `owned_by`) and its output.
pub fn run_owned(mut command: Command) -> Result<(u32, std::process::Output), Failed> {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    Ok((pid, child.wait_with_output()?))
}

/// The run exited with `code`; else its exit code and both outputs.
pub fn check_exit(output: &std::process::Output, code: i32) -> Result<(), Failed> {
    check(output.status.code() == Some(code), || {
        format!(
            "exit {:?}, not {code}\n{}\n{}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// No container and no network of the runner `pid` is left.
pub fn check_nothing_owned(pid: u32) -> Result<(), Failed> {
    let (containers, networks) = (owned_by(pid), networks_owned_by(pid));
    check(containers.is_empty() && networks.is_empty(), || {
        format!("left: containers {containers:?}, networks {networks:?}")
    })
}
