//! The session host: how this crate works outside `cargo cleantest` (plain `cargo test`, `cargo nextest
//! run`, an IDE's "Run test" button).
//!
//! The first call in a test process finds or starts one host process (`cargo-cleantest __host`) for
//! the whole `cargo` invocation: it is keyed by the nearest ancestor process named `cargo` or
//! `cargo-*` (its pid and start time; cargo `exec`s a subcommand such as cargo-nextest in place), so
//! every test binary and every per-test process of one `cargo test` or `cargo nextest run` shares it; with no cargo ancestor (a binary run directly), by the parent process.
//! Starting is serialised by a lock file in the state directory, so two binaries starting at once end
//! up with one host. The host serves the runner's control socket, labels what it starts as a session
//! does, and sweeps it all when its key process exits; if the host itself is killed, its session's
//! reaper and the next run's stale sweep remove what it left.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::Error;

/// `off`: no host; outside `cargo cleantest` every call returns [`Error::NotInSession`].
const ENV_HOST: &str = "CLEANTEST_HOST";
/// The `cargo-cleantest` binary to run as the host (else PATH, then `$CARGO_HOME/bin`).
const ENV_RUNNER: &str = "CLEANTEST_RUNNER";
/// The runner's state directory (as `cargo cleantest` reads it).
const ENV_STATE_DIR: &str = "CLEANTEST_STATE_DIR";
/// The runner's hidden subcommand.
const SUBCOMMAND: &str = "__host";

/// The host of this process's cargo invocation: its control socket, found or started once per process.
pub(crate) fn socket() -> Result<String, Error> {
    static HOST: OnceLock<Result<String, Error>> = OnceLock::new();
    HOST.get_or_init(find_or_start).clone()
}

/// Whether a host may be used (`CLEANTEST_HOST` is not `off`).
pub(crate) fn enabled() -> bool {
    std::env::var(ENV_HOST).map_or(true, |v| v != "off")
}

/// The process a host is keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    pub pid: u32,
    /// Its start time, as the platform tells it: with the pid, it names one process.
    pub start: String,
    /// Whether it is a `cargo` process (else the test process's parent).
    pub cargo: bool,
}

impl Key {
    /// The name of the key's files in the hosts directory.
    fn file_stem(&self) -> String {
        let start: String = self
            .start
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("{}-{start}", self.pid)
    }
}

fn find_or_start() -> Result<String, Error> {
    let key = key()?;
    let dir = state_dir()?.join("hosts");
    {
        use std::os::unix::fs::DirBuilderExt;
        // Private, as the state directory is: the sockets in it start containers.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| control(format!("{}: {e}", dir.display())))?;
    }
    let stem = key.file_stem();
    let lock_path = dir.join(format!("{stem}.lock"));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| control(format!("{}: {e}", lock_path.display())))?;
    // Held until the host answers: a second binary starting now waits, then finds it.
    lock.lock()
        .map_err(|e| control(format!("{}: {e}", lock_path.display())))?;
    let address = dir.join(format!("{stem}.socket"));
    if let Some(socket) = live_socket(&address) {
        return Ok(socket);
    }
    let socket = spawn(&key, &address)?;
    let (what, exits) = if key.cargo {
        ("cargo", "cargo")
    } else {
        ("the parent process", "it")
    };
    // Straight to the process's stderr, past libtest's capture: it is said once, when it happens.
    let _ = writeln!(
        std::io::stderr(),
        "cleantest: started a session host for {what} pid {}; its containers are removed when {exits} exits",
        key.pid
    );
    drop(lock);
    Ok(socket)
}

/// The socket named in `address`, if a host answers there.
fn live_socket(address: &Path) -> Option<String> {
    let text = std::fs::read_to_string(address).ok()?;
    let socket = text.lines().next()?.trim().to_string();
    UnixStream::connect(&socket).ok().map(|_| socket)
}

/// Starts the host, detached, and waits for its first line: `ready SOCKET` or `error MESSAGE`.
fn spawn(key: &Key, address: &Path) -> Result<String, Error> {
    let runner = runner().ok_or(Error::NoRunner)?;
    let workspace = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let mut child = Command::new(&runner)
        .args([SUBCOMMAND, "--key-pid", &key.pid.to_string()])
        .args(["--key-start", &key.start])
        .args(["--address", &address.display().to_string()])
        .args(["--manifest-dir", &workspace])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| control(format!("cannot run {}: {e}", runner.display())))?;
    let mut line = String::new();
    let read = child
        .stdout
        .take()
        .map(|out| BufReader::new(out).read_line(&mut line));
    let line = line.trim();
    if let Some(socket) = line.strip_prefix("ready ") {
        return Ok(socket.to_string());
    }
    // It did not start: reap it (it has exited or is about to) and say why.
    let _ = child.wait();
    let reason = match (line.strip_prefix("error "), read) {
        (Some(message), _) => message.to_string(),
        (None, Some(Err(e))) => format!("reading its answer: {e}"),
        (None, _) => format!(
            "{} {SUBCOMMAND} exited without answering (is it older than this crate? update it)",
            runner.display()
        ),
    };
    Err(control(format!("the session host did not start: {reason}")))
}

fn control(reason: String) -> Error {
    Error::Control { reason }
}

/// The `cargo-cleantest` binary: `CLEANTEST_RUNNER`, then PATH, then `$CARGO_HOME/bin` (default
/// `~/.cargo/bin`).
pub(crate) fn runner() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(ENV_RUNNER).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let name = "cargo-cleantest";
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin").join(name));
    on_path.chain(cargo_home).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The runner's state directory: `CLEANTEST_STATE_DIR`, `$XDG_STATE_HOME/cleantest`, or
/// `~/.local/state/cleantest`, as `cargo cleantest` finds it.
fn state_dir() -> Result<PathBuf, Error> {
    let set = |name: &str| std::env::var_os(name).filter(|d| !d.is_empty());
    if let Some(dir) = set(ENV_STATE_DIR) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(xdg) = set("XDG_STATE_HOME") {
        return Ok(PathBuf::from(xdg).join("cleantest"));
    }
    set("HOME")
        .map(|home| PathBuf::from(home).join(".local/state/cleantest"))
        .ok_or_else(|| control("HOME is not set: set CLEANTEST_STATE_DIR".into()))
}

/// The nearest ancestor named `cargo` or `cargo-*`, else this process's parent.
pub(crate) fn key() -> Result<Key, Error> {
    let parent = std::os::unix::process::parent_id();
    let mut pid = parent;
    // A bounded walk: a process tree is not deeper than this in practice, and a garbled one cannot loop.
    for _ in 0..64 {
        let Some(process) = process(pid) else { break };
        if is_cargo(&process.name) {
            return Ok(Key {
                pid,
                start: process.start,
                cargo: true,
            });
        }
        if process.ppid <= 1 || process.ppid == pid {
            break;
        }
        pid = process.ppid;
    }
    // Orphaned (re-parented to init), the parent would never exit: then this process is the key.
    let pid = if parent <= 1 {
        std::process::id()
    } else {
        parent
    };
    let process = process(pid).ok_or_else(|| control(format!("cannot read the process {pid}")))?;
    Ok(Key {
        pid,
        start: process.start,
        cargo: false,
    })
}

/// `cargo`, or a cargo subcommand (`cargo-nextest`, ...): cargo runs an external subcommand by
/// `exec`ing it in place, so under `cargo nextest run` the cargo process *is* cargo-nextest.
/// `cargo-cleantest` is not one: under it the crate talks to its session, and a process that lost that
/// session's environment must not live on a host keyed by a runner that may run for hours.
fn is_cargo(name: &str) -> bool {
    name == "cargo" || (name.starts_with("cargo-") && name != "cargo-cleantest")
}

/// What the key walk needs of a process.
struct Process {
    ppid: u32,
    name: String,
    start: String,
}

/// A process's parent, name and start time: from `/proc` on Linux, from `ps` elsewhere.
fn process(pid: u32) -> Option<Process> {
    if cfg!(target_os = "linux") {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        parse_stat(&stat)
    } else {
        let out = Command::new("ps")
            .args(["-o", "ppid=", "-o", "lstart=", "-o", "comm=", "-p"])
            .arg(pid.to_string())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        parse_ps(&String::from_utf8_lossy(&out.stdout))
    }
}

/// `/proc/PID/stat`: `pid (comm) state ppid ...`, the start time the 22nd field. The name may hold
/// spaces and parentheses: it runs to the last `)`.
fn parse_stat(stat: &str) -> Option<Process> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    Some(Process {
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.to_string(),
        name,
    })
}

/// `ps -o ppid= -o lstart= -o comm=`: the parent, a five-word start date, then the command's path.
fn parse_ps(line: &str) -> Option<Process> {
    let mut words = line.split_whitespace();
    let ppid = words.next()?.parse().ok()?;
    let start: Vec<&str> = words.by_ref().take(5).collect();
    if start.len() < 5 {
        return None;
    }
    let command: Vec<&str> = words.collect();
    let command = command.join(" ");
    let name = command.rsplit('/').next().unwrap_or("").to_string();
    Some(Process {
        ppid,
        name,
        start: start.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_parent_name_and_start() {
        let line =
            "4242 (cargo) S 4100 4242 4100 34816 4242 4194560 2114 0 0 0 9 3 0 0 20 0 1 0 987654 \
                    12345678 900 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let p = parse_stat(line).unwrap();
        assert_eq!(
            (p.ppid, p.name.as_str(), p.start.as_str()),
            (4100, "cargo", "987654")
        );
        // A name with spaces and parentheses runs to the last `)`.
        let odd = "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0";
        let p = parse_stat(odd).unwrap();
        assert_eq!(
            (p.name.as_str(), p.ppid, p.start.as_str()),
            ("a (b) c", 1, "55")
        );
        for bad in ["", "7 (x", "7 (x) R", "7 x) R 1"] {
            assert!(parse_stat(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn ps_lines_give_parent_name_and_start() {
        let p = parse_ps("  812 Fri Dec  4 19:53:53 2026     /Users/a/.cargo/bin/cargo\n").unwrap();
        assert_eq!((p.ppid, p.name.as_str()), (812, "cargo"));
        assert_eq!(p.start, "Fri Dec 4 19:53:53 2026");
        assert!(parse_ps("812 Fri Dec").is_none());
        assert!(parse_ps("").is_none());
    }

    #[test]
    fn cargo_and_its_subcommands_are_keys() {
        assert!(is_cargo("cargo") && is_cargo("cargo-nextest") && is_cargo("cargo-llvm-cov"));
        assert!(!is_cargo("cargoX") && !is_cargo("rust-analyzer") && !is_cargo("sh"));
        assert!(!is_cargo("cargo-cleantest"));
    }

    #[test]
    fn key_files_are_named_by_pid_and_start() {
        let key = Key {
            pid: 812,
            start: "Fri Dec 4 19:53:53 2026".into(),
            cargo: true,
        };
        assert_eq!(key.file_stem(), "812-Fri_Dec_4_19_53_53_2026");
    }

    #[test]
    fn this_test_process_has_a_key() {
        // Under cargo test (or cargo cleantest) the walk finds cargo; run directly, the parent.
        let key = key().unwrap();
        assert!(key.pid > 0 && !key.start.is_empty());
    }
}
