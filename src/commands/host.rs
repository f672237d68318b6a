//! `cargo-cleantest __host`: the session host the `cleantest` crate starts when tests run without
//! `cargo cleantest` (plain `cargo test`, `cargo nextest run`, an IDE's test button).
//!
//! It is a session like a run's (its record in the state directory, the host reaper, the engine-side
//! reaper where `auto` would use one, the owner labels and the run id on everything it creates) that
//! starts no process of its own: it serves the control socket to the descendants of its key process
//! (the `cargo` the tests run under) and starts their services, code-declared and from the config, on
//! demand. When the key process exits it sweeps its session and exits. It never signals a test
//! process: it did not start them. Killed itself, its reaper and the next stale sweep finish the job.
//!
//! The crate starts it with a pipe on stdout and waits for one line: `ready SOCKET` once it serves, or
//! `error MESSAGE`. Its stderr is `hosts/<key>.log` from its start, kept only when it holds a warning
//! or an error, or the sweep left something. It then leaves the terminal's session (`setsid`), so a Ctrl-C of `cargo test` goes
//! to cargo and the tests, and the host cleans up once cargo has gone.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cli::{ProfileArg, RunnerOpts, SessionOpts};
use crate::config::Settings;
use crate::session::{CleanupGuard, Profile, Session, open, signals};

/// The hidden subcommand.
pub(crate) const SUBCOMMAND: &str = "__host";

/// How long one wait for the key process lasts before signals are looked at again.
const WATCH_STEP: Duration = Duration::from_millis(250);

/// What the crate passes.
#[derive(Debug, PartialEq, Eq)]
struct HostArgs {
    /// The process whose exit ends the session (the cargo process the tests run under).
    key_pid: i32,
    /// Its start time as the crate read it (`/proc/PID/stat`'s 22nd field on Linux), if passed.
    key_start: Option<String>,
    /// The file that names the socket, for the key's later test processes.
    address: PathBuf,
    /// The package of the test that started the host (`CARGO_MANIFEST_DIR`): its workspace's config.
    manifest_dir: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<HostArgs, String> {
    let mut key_pid = None;
    let mut key_start = None;
    let mut address = None;
    let mut manifest_dir = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--key-pid" => {
                key_pid = Some(
                    value
                        .parse::<i32>()
                        .ok()
                        .filter(|p| *p > 1)
                        .ok_or_else(|| format!("--key-pid {value:?} is not a process id"))?,
                )
            }
            "--key-start" => key_start = Some(value.clone()),
            "--address" => address = Some(PathBuf::from(value)),
            "--manifest-dir" => manifest_dir = (!value.is_empty()).then(|| PathBuf::from(value)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(HostArgs {
        key_pid: key_pid.ok_or("--key-pid is missing")?,
        key_start,
        address: address.ok_or("--address is missing")?,
        manifest_dir,
    })
}

/// Runs the host; its exit code.
pub(crate) fn run(args: &[String]) -> i32 {
    let answer = |line: &str| {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let args = match parse(args) {
        Ok(args) => args,
        Err(e) => {
            answer(&format!("error {e}"));
            return crate::contract::EXIT_USAGE;
        }
    };
    let key = match Key::of(args.key_pid, args.key_start.as_deref()) {
        Ok(key) => key,
        Err(e) => {
            answer(&format!("error {e}"));
            return crate::contract::EXIT_USAGE;
        }
    };
    // Out of the terminal's session and process group: Ctrl-C and a hangup are cargo's business; the
    // host ends when cargo has gone.
    let _ = nix::unistd::setsid();
    // What it says on stderr from now on (a stale sweep, a refused reaper, a service that died) goes
    // to its log: the crate reads only its stdout.
    let log = args.address.with_extension("log");
    redirect(&[2], &log);
    if let Some(dir) = &args.manifest_dir {
        let _ = std::env::set_current_dir(dir);
    }
    let session = Session::new();
    let _cleanup = CleanupGuard(session.clone());
    let (tx, rx) = mpsc::channel();
    let served = signals::install(session.clone(), tx)
        .map_err(|e| e.to_string())
        .and_then(|()| serve(&session, &args));
    match served {
        Ok(socket) => answer(&format!("ready {}", socket.display())),
        Err(e) => {
            answer(&format!("error {e}"));
            return crate::contract::EXIT_TEST_FAILED;
        }
    }
    // Nobody reads stdout from now on: anything written there must not fail (or kill) the host.
    redirect(&[0, 1], Path::new("/dev/null"));
    watch(key, &session, &rx);
    remove_address(&args.address, &session);
    // The key process is gone, so no test process of it can wait on the lock any more.
    let _ = std::fs::remove_file(args.address.with_extension("lock"));
    let left = match session.finish(false) {
        Some(end) => {
            let left = end.docker.as_ref().is_some_and(|d| d.left_something());
            for line in end.docker_report(session.id()) {
                crate::output::err(line.trim_start_matches('\n'));
            }
            left
        }
        None => false,
    };
    // Kept only when it has something to say: a warning, an error, or a sweep that left something.
    let worth_keeping = left
        || std::fs::read_to_string(&log)
            .is_ok_and(|text| text.contains("warning:") || text.contains("error:"));
    if !worth_keeping {
        let _ = std::fs::remove_file(&log);
    }
    0
}

/// Starts the session (no lock, no proxy: the host runs no command) and serves its control socket;
/// names the socket in the address file. The socket's path.
fn serve(session: &std::sync::Arc<Session>, args: &HostArgs) -> Result<PathBuf, String> {
    let workspace = super::exec::workspace_root();
    let runner = RunnerOpts {
        profile: ProfileArg::from_env(),
        ..RunnerOpts::default()
    };
    let opts = SessionOpts {
        no_lock: true,
        no_proxy: true,
        ..SessionOpts::default()
    };
    let settings = Settings::load(&workspace, &runner, &opts.guard).map_err(|e| e.to_string())?;
    let profile = Profile {
        lock: None,
        proxy: false,
        // It starts no test process, so it has none to give a temporary directory.
        tmpdir: false,
        ..Profile::of(&settings)
    };
    let connecting = crate::docker::Connecting::start();
    open(session, &opts, profile, &workspace, connecting).map_err(|e| e.to_string())?;
    let socket = crate::services::serve_host(session, settings.services.clone(), args.key_pid)
        .map_err(|e| format!("cannot serve the control socket: {e}"))?;
    write_address(&args.address, &socket)
        .map_err(|e| format!("{}: {e}", args.address.display()))?;
    if let Some(hosts) = args.address.parent() {
        forget_dead_hosts(hosts, crate::sys::is_live);
    }
    Ok(socket)
}

/// Names `socket` (and this host's pid) in the address file, whole or not at all (written aside, then
/// renamed).
fn write_address(address: &Path, socket: &Path) -> std::io::Result<()> {
    let aside = address.with_extension(format!("{}.tmp", std::process::id()));
    // The socket, then this host's pid (for tools and tests; the crate reads the first line).
    std::fs::write(
        &aside,
        format!("{}\n{}\n", socket.display(), std::process::id()),
    )?;
    std::fs::rename(&aside, address)
}

/// Removes the files of hosts that were killed (a SIGKILLed host leaves its address and lock files):
/// those whose key process, the pid their name starts with, no longer runs. No test process of a dead
/// key can come for them; a pid that was reused keeps its files, which is harmless. Logs are kept.
fn forget_dead_hosts(hosts: &Path, is_live: impl Fn(i32) -> bool) {
    let Ok(entries) = std::fs::read_dir(hosts) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name
            .strip_suffix(".socket")
            .or_else(|| name.strip_suffix(".lock"))
        else {
            continue;
        };
        let pid = stem.split('-').next().and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|pid| pid > 1 && !is_live(pid)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Removes the address file if it still names this host's socket (a later host may have replaced it).
fn remove_address(address: &Path, session: &Session) {
    if std::fs::read_to_string(address).is_ok_and(|text| text.contains(session.id())) {
        let _ = std::fs::remove_file(address);
    }
}

/// Points the descriptors `fds` at `path` (a log, made 0600, or /dev/null); left as they are if it
/// cannot be opened.
fn redirect(fds: &[i32], path: &Path) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let log = path != Path::new("/dev/null");
    let Ok(file) = std::fs::OpenOptions::new()
        .read(!log)
        .write(true)
        .create(log)
        .truncate(log)
        .mode(0o600)
        .open(path)
    else {
        return;
    };
    for &fd in fds {
        // SAFETY: dup2 onto a standard descriptor of this process, from a descriptor it owns.
        unsafe { libc::dup2(file.as_raw_fd(), fd) };
    }
}

/// The key process: its pid and start time, which together name it for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    pid: i32,
    start_time: u64,
}

impl Key {
    /// The running process `pid`; with `start` (the crate's reading), only if it started then.
    fn of(pid: i32, start: Option<&str>) -> Result<Key, String> {
        let stat = crate::sys::stat(pid)
            .filter(|_| crate::sys::is_live(pid))
            .ok_or_else(|| format!("the key process {pid} is not running"))?;
        // The crate reads the start time as `/proc` gives it on Linux; elsewhere in another form, and
        // the process is this host's ancestor's, alive while the crate waits for the host's answer.
        if let (true, Some(start)) = (cfg!(target_os = "linux"), start)
            && start.parse::<u64>().ok() != Some(stat.start_time)
        {
            return Err(format!(
                "the key process {pid} started at {}, not at {start}: it is not the process that asked for a host",
                stat.start_time
            ));
        }
        Ok(Key {
            pid,
            start_time: stat.start_time,
        })
    }

    /// Whether the key still runs: its pid live, and still naming the process that started then (a
    /// reused pid is the key's exit).
    fn runs(&self) -> bool {
        crate::sys::is_live(self.pid)
            && crate::sys::stat(self.pid).is_some_and(|s| s.start_time == self.start_time)
    }
}

/// Blocks until the key process has exited, or a signal asks the host to stop.
fn watch(key: Key, session: &Session, signals: &mpsc::Receiver<crate::session::process::Event>) {
    loop {
        if session.interrupted_by().is_some() || !key.runs() {
            return;
        }
        let started = Instant::now();
        if crate::sys::exits_within(key.pid, WATCH_STEP) {
            return;
        }
        // Where the exit cannot be waited for (no pidfd), the signal channel paces the loop.
        let left = WATCH_STEP.saturating_sub(started.elapsed());
        if !left.is_zero() {
            let _ = signals.recv_timeout(left);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_its_pid_and_start_time() {
        let me = std::process::id() as i32;
        let key = Key::of(me, None).unwrap();
        assert!(key.runs());
        let start = key.start_time.to_string();
        assert_eq!(Key::of(me, Some(&start)).unwrap(), key);
        // A reused pid: the same number, another process.
        let reused = Key {
            start_time: key.start_time + 1,
            ..key
        };
        assert!(!reused.runs());
        if cfg!(target_os = "linux") {
            let other = (key.start_time + 1).to_string();
            assert!(
                Key::of(me, Some(&other))
                    .unwrap_err()
                    .contains("not the process")
            );
        }
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn files_of_hosts_whose_key_is_gone_are_forgotten() {
        let dir = std::env::temp_dir().join(format!("ct-hosts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for file in [
            "100-5.socket",
            "100-5.lock",
            "100-5.log",
            "200-7.socket",
            "200-7.lock",
            "x.lock",
        ] {
            std::fs::write(dir.join(file), "").unwrap();
        }
        // 100 is gone, 200 runs.
        forget_dead_hosts(&dir, |pid| pid == 200);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["100-5.log", "200-7.lock", "200-7.socket", "x.lock"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_crates_arguments_are_read_and_bad_ones_refused() {
        let ok = parse(&args(&[
            "--key-pid",
            "4242",
            "--address",
            "/s/hosts/4242-1.socket",
            "--manifest-dir",
            "/w/pkg",
        ]))
        .unwrap();
        assert_eq!(ok.key_pid, 4242);
        assert_eq!(ok.key_start, None);
        assert_eq!(ok.manifest_dir.as_deref(), Some(Path::new("/w/pkg")));
        for bad in [
            &["--key-pid"][..],
            &["--key-pid", "x", "--address", "a"],
            &["--key-pid", "1", "--address", "a"],
            &["--address", "a"],
            &["--key-pid", "5"],
            &["--nope", "1"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
