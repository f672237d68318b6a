//! The proxy at a low descriptor limit (issue 12, B). When `accept` fails with EMFILE, the pending
//! connection stays queued and the next `accept` fails at once: an accept loop that retries at once
//! spins a core for as long as the clients hold their connections. It must back off, and serve again
//! once descriptors are free. And floods of connections (issue 35, B.6): neither idle ones nor slow
//! ones from outside the session may keep the session's own requests from being served.

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
    vec![
        trial(
            "the_proxy_backs_off_when_out_of_descriptors_and_serves_again",
            out_of_descriptors,
        ),
        trial(
            "floods_of_connections_grow_neither_threads_nor_descriptors",
            connection_floods,
        ),
        trial(
            "slow_control_connections_from_outside_the_session_never_hold_its_requests",
            slow_outsiders,
        ),
    ]
}

/// The runner's thread count.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// 3,000 idle connections to the control socket (each used to get a thread: 5,000 gave 5,006), then
/// 1,500 to the proxy (past its 1,024): the runner's threads stay bounded, a connection past the
/// proxy's limit is answered 503, and once they close both sockets serve again. Default descriptor
/// limit: the runner raises its soft limit to the hard one.
fn connection_floods() -> Result<(), Failed> {
    let mark = unique_mark("flood");
    let state = temp_dir("flood");
    let ready = state.join("ready");
    let mut runner = Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"));
    runner
        .args(["exec", "--no-lock", "--", "sh", "-c"])
        .arg(format!("touch {}; exec sleep 1000", ready.display()));
    with_runner(runner, &mark, &state, judge_floods)
}

/// Starts `runner` (a session whose command touches `state/ready`, then sleeps), judges it once it is
/// ready, then ends it (SIGTERM) and checks that nothing of the session is left.
fn with_runner(
    mut runner: Command,
    mark: &str,
    state: &Path,
    judge: fn(u32, &Path) -> Result<(), Failed>,
) -> Result<(), Failed> {
    let mut runner = runner
        .env("CLEANTEST_STATE_DIR", state)
        .env("CT_IT_MARK", mark)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_for_file(&state.join("ready"), Duration::from_secs(60));
    let result = judge(runner.id(), state);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runner.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = runner.wait();
    assert_no_survivors(mark);
    let _ = std::fs::remove_dir_all(state);
    result
}

fn judge_floods(runner: u32, state: &Path) -> Result<(), Failed> {
    use std::io::{Read, Write};
    let proxy = proxy_socket(state).ok_or("the session has no proxy socket")?;
    let control = proxy.with_file_name("control.sock");
    let base = threads(runner);
    let held: Vec<UnixStream> = (0..3000)
        .filter_map(|_| UnixStream::connect(&control).ok())
        .collect();
    check(held.len() == 3000, || {
        format!(
            "this test could open only {} control connections (ulimit -n)",
            held.len()
        )
    })?;
    // Each accepted connection is seen by the runner within the window; a thread per connection
    // would show as thousands of tasks.
    std::thread::sleep(WINDOW);
    let during = threads(runner);
    drop(held);
    check(during <= base + 64 + 8, || {
        format!("{during} threads with 3,000 idle control connections (from {base})")
    })?;
    let mut held: Vec<UnixStream> = (0..1500)
        .filter_map(|_| UnixStream::connect(&proxy).ok())
        .collect();
    check(held.len() == 1500, || {
        format!(
            "this test could open only {} proxy connections (ulimit -n)",
            held.len()
        )
    })?;
    // The last connections are past the limit: each is answered 503 at once.
    let mut last = held.pop().ok_or("no proxy connection was made")?;
    last.set_read_timeout(Some(Duration::from_secs(10)))?;
    let _ = last.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n");
    let mut answer = String::new();
    let _ = last.read_to_string(&mut answer);
    drop(held);
    check(answer.starts_with("HTTP/1.1 503"), || {
        format!("a connection past the proxy's limit got {answer:?}")
    })?;
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .env("DOCKER_HOST", format!("unix://{}", proxy.display()))
        .output()?;
    check(out.status.success(), || {
        format!(
            "the proxy did not serve again: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    check(cpu_ticks(runner).is_some(), || "the runner is gone".into())
}

/// 100 connections to the control socket from outside the session (this test process), each having
/// sent one byte of a request it never finishes: once they hold every request thread (64), a request
/// of the session's own was answered "busy". Now a process outside the session is refused before its
/// request is read, on a thread of its own, and the session's request is served.
fn slow_outsiders() -> Result<(), Failed> {
    let mark = unique_mark("slowloris");
    let state = temp_dir("slowloris");
    let go = state.join("go");
    let status = Command::new("mkfifo").arg(&go).status()?;
    check(status.success(), || "mkfifo failed".into())?;
    std::fs::write(
        state.join("request.py"),
        "import os, socket\n\
         s = socket.socket(socket.AF_UNIX)\n\
         s.connect(os.environ['CLEANTEST_CONTROL'])\n\
         s.sendall(b'{\"v\":1,\"op\":\"nope\"}\\n')\n\
         print(s.makefile().readline())\n",
    )?;
    let mut runner = Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"));
    runner.args(["exec", "--no-lock", "--", "sh", "-c"]).arg(format!(
        "cd {state}; touch ready; read line < go; python3 request.py > answer.tmp; mv answer.tmp answer; \
         exec sleep 1000",
        state = state.display()
    ));
    with_runner(runner, &mark, &state, judge_slow_outsiders)
}

fn judge_slow_outsiders(_runner: u32, state: &Path) -> Result<(), Failed> {
    use std::io::{BufRead, Write};
    let control = proxy_socket(state)
        .ok_or("the session has no proxy socket")?
        .with_file_name("control.sock");
    // An outsider that sends its line reads why it is refused.
    let mut whole = UnixStream::connect(&control)?;
    whole.set_read_timeout(Some(Duration::from_secs(10)))?;
    whole.write_all(b"{\"v\":1,\"op\":\"nope\"}\n")?;
    let mut refused = String::new();
    let _ = std::io::BufReader::new(&whole).read_line(&mut refused);
    let mut held: Vec<UnixStream> = (0..100)
        .filter_map(|_| UnixStream::connect(&control).ok())
        .collect();
    for stream in &mut held {
        let _ = stream.write_all(b"{");
    }
    std::fs::write(state.join("go"), "go\n")?;
    wait_for_file(&state.join("answer"), Duration::from_secs(30));
    let answer = std::fs::read_to_string(state.join("answer"))?;
    drop(held);
    check(refused.contains("is not part of session"), || {
        format!("an outsider's request got {refused:?}")
    })?;
    check(
        answer.contains("\"ok\":false") && !answer.contains("busy"),
        || format!("the session's own request got {answer:?}"),
    )
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
    let script = format!(
        "ulimit -n {LIMIT} && exec {} exec --no-lock -- sh -c 'touch {}; exec sleep 1000'",
        env!("CARGO_BIN_EXE_cargo-cleantest"),
        state.join("ready").display()
    );
    let mut runner = Command::new("sh");
    runner.args(["-c", &script]);
    with_runner(runner, &mark, &state, judge)
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
