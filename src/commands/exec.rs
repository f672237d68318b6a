//! `cargo cleantest exec -- CMD ARGS...`: any command inside a session (its environment, its own process
//! group, the lock, a timeout for the whole command, signal handling, the sweep, `--keep-on-failure`),
//! so `cargo nextest run`, shell scripts or `docker-compose` get the same cleanup.

use std::io::{ErrorKind, IsTerminal};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::signal::Signal;

use crate::cli::{ProfileArg, RunnerOpts, SessionOpts, parse_duration};
use crate::config::Settings;
use crate::contract::{ENV_BINARY, EXEC_ID, EXIT_LEFTOVERS, EXIT_NOT_FOUND, EXIT_TIMEOUT};
use crate::errors::Error;
use crate::run::cargo_program;
use crate::session::process::{Event, ExitKind, kill_leftovers, release, wait_exit};
use crate::session::{CleanupGuard, Profile, Session, TempEnd, open, signal_group, signals};

/// `cargo cleantest exec [OPTIONS] -- CMD ARGS...`
#[derive(Parser, Debug)]
#[command(name = "cargo-cleantest exec", bin_name = "cargo cleantest exec")]
#[command(
    about = "Run any command inside a session: own process group, lock, timeout, cleanup on every exit"
)]
pub(crate) struct ExecArgs {
    /// Stop the command after this long (SIGTERM to its group, SIGKILL after the grace period)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    pub grace_period: Duration,
    // The profile: its services, lock and proxy settings apply, as for a test run.
    #[command(flatten)]
    pub profile: ProfileArg,
    #[command(flatten)]
    pub session: SessionOpts,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub(crate) fn run(args: ExecArgs) -> Result<i32, Error> {
    let session = Session::new();
    let _cleanup = CleanupGuard(session.clone());
    let (tx, rx) = mpsc::channel();
    signals::install(session.clone(), tx.clone())?;
    let connecting = crate::docker::Connecting::start();
    let workspace = workspace_root();
    // The selected profile (`-P`, `CLEANTEST_PROFILE`), as for a test run: its services, lock, proxy,
    // engine-side reaper and resource guard apply.
    let runner = RunnerOpts {
        profile: args.profile.clone(),
        ..RunnerOpts::default()
    };
    let settings = Settings::load(&workspace, &runner, &args.session.guard)?;
    let _lock = open(
        &session,
        &args.session,
        Profile::of(&settings),
        &workspace,
        connecting,
    )?;
    let (env, kept_lines) = match services_env(&args, &session, &settings)? {
        Step::Next(services) => services,
        Step::Exit(code) => return Ok(code),
    };
    let pid = match spawn(&args, &session, &env)? {
        Step::Next(pid) => pid,
        Step::Exit(code) => return Ok(code),
    };
    let waiter = tx.clone();
    std::thread::spawn(move || {
        let exit = wait_exit(pid);
        let _ = waiter.send(Event::Exited(0, exit));
    });
    let (exit, timed_out) = supervise(&args, &session, pid, &rx);
    // The last moment what left the command's group is still linked to it (see `lineage`).
    session.observe_lineage();
    let leftovers = kill_leftovers(pid);
    if !leftovers.is_empty() {
        crate::output::err(format!(
            "warning: the command left {} process(es) behind; killed them",
            leftovers.len()
        ));
    }
    release(pid);
    session.remove_group(pid);
    let failed = timed_out || !exit.success();
    let end = session
        .finish(args.session.keep_on_failure && failed)
        .unwrap_or_default();
    if !end.escaped.is_empty() {
        crate::output::err(format!(
            "warning: killed {} process(es) that escaped the command's group",
            end.escaped.len()
        ));
    }
    let left_something = end.docker.as_ref().is_some_and(|e| e.left_something());
    for line in end.docker_report(session.id()) {
        crate::output::err(line.trim_start_matches('\n'));
    }
    if end.kept_any() {
        kept_lines.iter().for_each(crate::output::err);
    }
    match &end.temp {
        Some(TempEnd::Removed(tidied)) if !tidied.is_empty() => crate::output::err(format!(
            "note: the command left {} file(s) in its temporary directory; removed them{}",
            tidied.files,
            match tidied.problems.is_empty() {
                true => String::new(),
                false => format!(" but for: {}", tidied.problems.join("; ")),
            }
        )),
        Some(TempEnd::Kept(dir)) => crate::output::err(format!(
            "kept the command's temporary directory: {} (cargo cleantest sweep --session {} removes it)",
            dir.display(),
            session.id()
        )),
        _ => {}
    }
    Ok(if let Some(signal) = session.interrupted_by() {
        signals::exit_code(signal)
    } else if timed_out {
        EXIT_TIMEOUT
    } else if left_something {
        EXIT_LEFTOVERS
    } else {
        match exit {
            ExitKind::Code(code) => code,
            ExitKind::Signal(sig) => 128 + sig,
        }
    })
}

/// A step of `exec` that goes on with a value, or ends the command with an exit code.
enum Step<T> {
    Next(T),
    Exit(i32),
}

/// What the services give the command: its environment, and the lines that say how to reach them
/// when they are kept.
type ForCommand = (Vec<(String, String)>, Vec<String>);

/// What the profile's services tell the command (with a database of its own of each service that
/// isolates), and the lines that say how to reach them if they are kept; or the exit code, when a
/// signal came while they started.
fn services_env(
    args: &ExecArgs,
    session: &Arc<Session>,
    settings: &Settings,
) -> Result<Step<ForCommand>, Error> {
    if args.session.no_services {
        return Ok(Step::Next((Vec::new(), Vec::new())));
    }
    // Its deaths are said on stderr as they happen; exec has no report to add them to.
    let started =
        crate::services::start_or_keep(session, &settings.services, args.session.keep_on_failure);
    // Interrupted while the services started: the signal decides the exit code.
    if let (Err(_), Some(signal)) = (&started, session.interrupted_by()) {
        return Ok(Step::Exit(signals::exit_code(signal)));
    }
    let started = started?;
    // The command is a process of its own: it gets its own database of each service that isolates.
    let databases = started
        .databases
        .for_process()
        .map_err(|e| Error::Service {
            name: e.service().unwrap_or("?").to_string(),
            reason: e.to_string(),
            log: String::new(),
            help: "run fewer processes at once, or look at the service's log with \
                   --keep-on-failure"
                .into(),
        })?;
    let kept_lines = started.kept_lines();
    let mut env = started.env;
    env.extend(databases.env.iter().cloned());
    Ok(Step::Next((env, kept_lines)))
}

/// Starts the command in a process group of its own, registered with the session: its pid, or the
/// shell's exit code for a command that is not there (127) or cannot run (126).
fn spawn(args: &ExecArgs, session: &Session, env: &[(String, String)]) -> Result<Step<i32>, Error> {
    let mut command = Command::new(&args.command[0]);
    command
        .args(&args.command[1..])
        .env(ENV_BINARY, EXEC_ID)
        // In a process group of its own the command is not in the terminal's foreground: reading the
        // terminal would stop it, so it gets no stdin from a terminal.
        .stdin(if std::io::stdin().is_terminal() {
            Stdio::null()
        } else {
            Stdio::inherit()
        })
        .process_group(0);
    session.configure(&mut command).envs(env.iter().cloned());
    let spawning = session.spawning();
    let child = match command.spawn() {
        Ok(child) => child,
        // As a shell says it: 127 for a command that is not there, 126 for one that cannot run.
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied) => {
            let code = if e.kind() == ErrorKind::NotFound {
                EXIT_NOT_FOUND
            } else {
                EXIT_NOT_FOUND - 1
            };
            crate::output::err(format!("error: cannot run `{}`: {e}", args.command[0]));
            return Ok(Step::Exit(code));
        }
        Err(source) => {
            return Err(Error::Spawn {
                program: args.command[0].clone(),
                source,
            });
        }
    };
    let pid = child.id() as i32;
    session.add_group(pid);
    drop(spawning);
    // The child is not reaped until its group has been killed for the last time (see `wait_exit`).
    drop(child);
    Ok(Step::Next(pid))
}

/// Waits for the command's exit, stopping it at its timeout (SIGTERM, then SIGKILL after the grace
/// period) or after a signal; how it exited, and whether it timed out.
fn supervise(
    args: &ExecArgs,
    session: &Session,
    pid: i32,
    rx: &mpsc::Receiver<Event>,
) -> (ExitKind, bool) {
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let mut kill_at: Option<Instant> = None;
    let mut timed_out = false;
    let exit = loop {
        let next = [deadline.filter(|_| !timed_out), kill_at]
            .into_iter()
            .flatten()
            .min();
        let mut wait = next.map_or(Duration::from_secs(3600), |t| {
            t.saturating_duration_since(Instant::now())
        });
        if session.watches_lineage() {
            // No subreaper: snapshots of the process tree say what came from the command.
            session.observe_lineage_if_due();
            wait = wait.min(crate::session::SNAPSHOT_EVERY);
        }
        match rx.recv_timeout(wait) {
            Ok(Event::Exited(_, exit)) => break exit,
            Ok(Event::Signal(_, 1)) => {
                kill_at.get_or_insert(Instant::now() + args.grace_period);
            }
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                if kill_at.is_some_and(|t| now >= t) {
                    signal_group(pid, Signal::SIGKILL);
                    kill_at = None;
                } else if deadline.is_some_and(|t| now >= t) && !timed_out {
                    timed_out = true;
                    crate::output::err("warning: the command ran past its timeout; stopping it");
                    signal_group(pid, Signal::SIGTERM);
                    kill_at = Some(now + args.grace_period);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break ExitKind::Code(-1),
        }
    };
    (exit, timed_out)
}

/// The cargo workspace around the current directory (so `exec` shares the test runs' default lock),
/// else the current directory.
pub(crate) fn workspace_root() -> std::path::PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    let out = Command::new(cargo_program())
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let manifest = String::from_utf8_lossy(&o.stdout).trim().to_string();
            std::path::Path::new(&manifest)
                .parent()
                .map_or(cwd, |p| p.to_path_buf())
        }
        _ => cwd,
    }
}
