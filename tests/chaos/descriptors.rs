//! The proxy at a low descriptor limit (issue 12, B). When `accept` fails with EMFILE, the pending
//! connection stays queued and the next `accept` fails at once: an accept loop that retries at once
//! spins a core for as long as the clients hold their connections. It must back off, and serve again
//! once descriptors are free.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::common::docker::*;
use super::common::*;
use libtest_mimic::Failed;

/// The runner's descriptor limit in the cell.
const LIMIT: u32 = 64;
/// Connections held open: more than the runner can accept, fewer than the listener's backlog (128 or
/// more), so that no connect blocks.
const HELD: usize = 120;
/// The measurement window, and the CPU the runner may use in it (clock ticks, 100 a second): a loop that
/// spins uses the whole window, one that backs off next to nothing.
const WINDOW: Duration = Duration::from_secs(2);
const MAX_TICKS: u64 = 20;

pub(crate) fn cells() -> Vec<Cell> {
    vec![trial(
        "the_proxy_backs_off_when_out_of_descriptors_and_serves_again",
        out_of_descriptors,
    )]
}

/// User plus system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start with the state (field 3); utime and stime
    // are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The proxy socket of the only session in `state`.
fn proxy_socket(state: &Path) -> Option<PathBuf> {
    std::fs::read_dir(state.join("sessions"))
        .ok()?
        .flatten()
        .map(|d| d.path().join("docker.sock"))
        .find(|p| p.exists())
}

fn out_of_descriptors() -> Result<(), Failed> {
    let mark = unique_mark("emfile");
    let state = temp_dir("emfile");
    let ready = state.join("ready");
    let script = format!(
        "ulimit -n {LIMIT} && exec {} exec --no-lock -- sh -c 'touch {}; exec sleep 1000'",
        env!("CARGO_BIN_EXE_cargo-cleantest"),
        ready.display()
    );
    let mut runner = Command::new("sh")
        .args(["-c", &script])
        .env("CLEANTEST_STATE_DIR", &state)
        .env("CT_IT_MARK", &mark)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_for_file(&ready, Duration::from_secs(60));
    let result = judge(runner.id(), &state);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runner.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = runner.wait();
    assert_no_survivors(&mark);
    let _ = std::fs::remove_dir_all(&state);
    result
}

fn judge(runner: u32, state: &Path) -> Result<(), Failed> {
    let socket = proxy_socket(state).ok_or("the session has no proxy socket")?;
    let held: Vec<UnixStream> = (0..HELD)
        .filter_map(|_| UnixStream::connect(&socket).ok())
        .collect();
    check(held.len() == HELD, || {
        format!("only {} of {HELD} connections were made", held.len())
    })?;
    let before = cpu_ticks(runner).ok_or("the runner is gone")?;
    // A measurement window, not a wait for an event.
    std::thread::sleep(WINDOW);
    let used = cpu_ticks(runner).ok_or("the runner is gone")? - before;
    drop(held);
    check(used <= MAX_TICKS, || {
        format!(
            "the runner used {used} ticks of CPU in {WINDOW:?} with its descriptors exhausted \
             (at most {MAX_TICKS}): the accept loop spins"
        )
    })?;
    // Descriptors free again: the proxy serves the next client.
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .output()?;
    check(out.status.success(), || {
        format!(
            "the proxy did not serve again: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
