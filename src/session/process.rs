//! Processes: spawning a command in a process group of its own, following it from threads that report
//! to the scheduler's channel, and finding what it left behind in its group.
//!
//! Spawning uses `CommandExt::process_group(0)` and nothing else, which keeps std on its posix_spawn
//! path (a `pre_exec` would force fork+exec, markedly slower per test). stdout and stderr share one pipe
//! so a test's output keeps its order and one reader thread suffices.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::locked;
use super::{Session, signal_group};

/// Index of a unit in the scheduler's table.
pub(crate) type UnitId = usize;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitKind {
    Code(i32),
    Signal(i32),
}

impl ExitKind {
    pub(crate) fn success(self) -> bool {
        self == ExitKind::Code(0)
    }
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitKind::Code(c) => write!(f, "exit code {c}"),
            ExitKind::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "signal {} ({})", s, sig.as_str()),
                Err(_) => write!(f, "signal {s}"),
            },
        }
    }
}

/// What the scheduler hears from units and from the signal thread.
#[derive(Debug)]
pub(crate) enum Event {
    Line(UnitId, String),
    Eof(UnitId),
    Exited(UnitId, ExitKind),
    Signal(Signal, usize),
    /// The answer to an end-of-unit leak check: the containers `unit` (of run order `order`) left
    /// running, asked for off the scheduler's thread.
    Leaked {
        unit: String,
        order: usize,
        containers: Vec<String>,
    },
}

/// Spawns `command` as the leader of a new process group, registered with the session, with its
/// output lines and its exit sent to `events`. Returns the pid (which is also the group id).
pub(crate) fn spawn_unit(
    command: &mut Command,
    id: UnitId,
    events: &Sender<Event>,
    session: &Session,
) -> std::io::Result<i32> {
    let (reader, writer) = std::io::pipe()?;
    command
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0);
    let spawning = session.spawning();
    let child = command.spawn();
    // The command holds the pipe's write ends; drop them now or the reader never sees end-of-file.
    command.stdout(Stdio::null()).stderr(Stdio::null());
    let pid = child?.id() as i32;
    session.add_group(pid);
    drop(spawning);

    let tx = events.clone();
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(64 * 1024, reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match read_capped_line(&mut reader, &mut buf, MAX_LINE) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    BACKLOG.reserve(line.len());
                    if tx.send(Event::Line(id, line)).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Event::Eof(id));
    });
    let tx = events.clone();
    std::thread::spawn(move || {
        let _ = tx.send(Event::Exited(id, wait_exit(pid)));
    });
    Ok(pid)
}

/// Line bytes sent to the scheduler and not yet handled, across all units. Readers wait while it is
/// over `BACKLOG_CAP`, so a test that prints faster than the scheduler reads is slowed to its pace
/// (as a terminal would slow it) instead of queueing its output in the runner's memory.
pub(crate) static BACKLOG: Backlog = Backlog {
    bytes: AtomicUsize::new(0),
    waiters: AtomicUsize::new(0),
    lock: std::sync::Mutex::new(()),
    drained: std::sync::Condvar::new(),
};

/// The most line bytes queued for the scheduler at once.
const BACKLOG_CAP: usize = 8 << 20;

/// See `BACKLOG`. The count is an atomic so that the scheduler's release of each line costs no lock
/// and no wake-up while no reader waits (the hot path of a test that prints a lot).
pub(crate) struct Backlog {
    bytes: AtomicUsize,
    waiters: AtomicUsize,
    lock: std::sync::Mutex<()>,
    drained: std::sync::Condvar,
}

impl Backlog {
    /// Counts `len` bytes about to be queued, first waiting while the queue is full. The wait is
    /// bounded per round (a missed wake-up costs 100 ms, never a hang).
    pub(crate) fn reserve(&self, len: usize) {
        if self.try_reserve(len) {
            return;
        }
        let mut held = locked(&self.lock);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        while !self.try_reserve(len) {
            held = self
                .drained
                .wait_timeout(held, std::time::Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Takes `len` bytes of room if there is room (an empty queue always has room for one line).
    fn try_reserve(&self, len: usize) -> bool {
        self.bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |queued| {
                (queued == 0 || queued + len <= BACKLOG_CAP).then_some(queued + len)
            })
            .is_ok()
    }

    /// `len` queued bytes were handled; a waiting reader is woken.
    pub(crate) fn release(&self, len: usize) {
        let _ = self
            .bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                Some(q.saturating_sub(len))
            });
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _held = locked(&self.lock);
            self.drained.notify_all();
        }
    }
}

/// The longest line passed on whole: a longer one is passed on in pieces of this size. The runner's
/// memory would otherwise grow with the longest line a test prints (a 512 MB line took it to 780 MB).
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// `read_until(b'\n')` that stops at `cap` bytes: the rest of a longer line comes with the next call.
/// Returns the bytes taken (0 at end of file).
pub(crate) fn read_capped_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<usize> {
    let mut taken = 0;
    while buf.len() < cap {
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break;
        }
        let room = cap - buf.len();
        let (used, done) = match available.iter().take(room).position(|b| *b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len().min(room), false),
        };
        buf.extend_from_slice(&available[..used]);
        reader.consume(used);
        taken += used;
        if done {
            break;
        }
    }
    Ok(taken)
}

/// Waits for one child to exit, by pid, **without reaping it** (`WNOWAIT`): the exited leader stays a
/// zombie, and a zombie keeps its pid, so its number can be neither a new process's pid nor a new
/// group's id. Signalling the group by that number (`kill_leftovers`, the session's signals) therefore
/// reaches only this group's own members until `release` reaps the leader, after the group's last kill.
/// Never `waitpid(-1)`: that would steal other children's status.
pub(crate) fn wait_exit(pid: i32) -> ExitKind {
    match crate::sys::wait_exit_keeping(pid) {
        Some(crate::sys::Exit::Code(code)) => ExitKind::Code(code),
        Some(crate::sys::Exit::Signal(signal)) => ExitKind::Signal(signal),
        None => ExitKind::Code(-1),
    }
}

/// Reaps a unit's leader once its group has been killed for the last time (see `wait_exit`); only for a
/// leader whose exit was seen, so this never blocks.
pub(crate) fn release(pid: i32) {
    while let Err(nix::errno::Errno::EINTR) = waitpid(Pid::from_raw(pid), None) {}
}

/// Kills whatever is left in a process group whose leader has exited, and describes it. Safe against
/// pid reuse: the leader is not reaped until `release`, so the group id still names this group.
/// The common case (nothing left) costs one `kill(-pgid, 0)`.
pub(crate) fn kill_leftovers(pgid: i32) -> Vec<String> {
    if killpg(Pid::from_raw(pgid), None).is_err() {
        return Vec::new();
    }
    let found = group_members(pgid);
    signal_group(pgid, Signal::SIGKILL);
    found
}

/// `pid command line` of every live process in a group whose leader has exited.
///
/// Only processes that can be in the group are read (`candidates`): a scan of all of /proc reads every
/// process of the machine, once per unit (the isolated bench's 1,000 units spent a third of the
/// runner's CPU there). A process that joined the group from elsewhere (`setpgid` by an older
/// process) may not be described, but the group's SIGKILL (`kill_leftovers`) still reaches it.
///
/// Live means running by the kernel's own account (`orphans::is_live`), never "has a command line": a
/// child that a test spawned just before returning can still be inside `execve`, with no arguments to
/// read yet, when the scan comes. Taking that for "already exiting" once let one leak in five pass
/// `--leak fail` under load.
pub(crate) fn group_members(pgid: i32) -> Vec<String> {
    let candidates = candidates(pgid);
    let mut out = Vec::new();
    for pid in candidates {
        if crate::sys::stat(pid).map(|s| s.pgid) != Some(pgid) {
            continue;
        }
        // A probed pid may be a thread's id: one line per process.
        if !crate::sys::is_process(pid) || !super::orphans::is_live(pid) {
            continue;
        }
        out.push(format!("{pid} {}", super::orphans::command_line(pid)));
    }
    out
}

/// How many pids above a leader are looked up one by one rather than by listing the processes. A
/// lookup that fails costs about 5 µs; listing `/proc` costs about 60 µs for 70 processes and names
/// processes only, where the range also holds every thread (a libtest binary starts one per test: a
/// unit of 100 tests left 100 dead pids to probe, and the trivial bench's run 2,000 failed lookups).
/// Only the listed pids above the leader are read.
const PROBE_LIMIT: i32 = 32;

/// The processes that can be members of the group `leader` started: those created after it (a pid
/// above its, or any pid once pids have wrapped since: the last pid handed out is below the
/// leader's). A member is the leader's descendant or joined the group later, so it was created after
/// the leader: without a wrap, every member is in `leader+1..=last`, and a short range is probed pid by
/// pid (most are gone, and a missing one costs one failed lookup). The runner's subtree is not walked
/// as well: it holds every thread of every running test binary, and reading their `children` files cost
/// a unit's end up to a millisecond while finding nothing the range does not hold.
fn candidates(leader: i32) -> std::collections::BTreeSet<i32> {
    match crate::sys::last_pid() {
        Some(last) if last >= leader && last - leader <= PROBE_LIMIT => {
            (leader + 1..=last).collect()
        }
        Some(last) if last >= leader => crate::sys::all_pids()
            .into_iter()
            .filter(|&p| p > leader)
            .collect(),
        // Wrapped since the leader (or unknown): anything may be newer.
        _ => crate::sys::all_pids().into_iter().collect(),
    }
}

/// The output of a short command run to completion (listing a binary's tests).
#[derive(Debug)]
pub(crate) struct Captured {
    pub exit: ExitKind,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// Runs a command in its own process group and collects its output, killing it after `timeout`.
pub(crate) fn capture(
    command: &mut Command,
    session: &Session,
    timeout: Duration,
) -> std::io::Result<Captured> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let spawning = session.spawning();
    let mut child = command.spawn()?;
    let pid = child.id() as i32;
    session.add_group(pid);
    drop(spawning);
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = r.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("piped")));
    let stderr = read_all(Box::new(child.stderr.take().expect("piped")));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(wait_exit(pid));
    });
    let (exit, timed_out) = match rx.recv_timeout(timeout) {
        Ok(exit) => (exit, false),
        Err(_) => {
            signal_group(pid, Signal::SIGKILL);
            (rx.recv().unwrap_or(ExitKind::Signal(9)), true)
        }
    };
    kill_leftovers(pid);
    // Released before it is forgotten: until then its exited leader is a known child, not an orphan.
    release(pid);
    session.remove_group(pid);
    Ok(Captured {
        exit,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        timed_out,
    })
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    use super::*;

    #[test]
    fn long_lines_come_in_pieces_and_short_ones_whole() {
        let text = format!("short\n{}\nend", "x".repeat(10));
        let mut reader = std::io::BufReader::with_capacity(3, text.as_bytes());
        let mut lines = Vec::new();
        loop {
            let mut buf = Vec::new();
            if read_capped_line(&mut reader, &mut buf, 4).unwrap() == 0 {
                break;
            }
            lines.push(String::from_utf8(buf).unwrap());
        }
        assert_eq!(lines, ["shor", "t\n", "xxxx", "xxxx", "xx\n", "end"]);
    }

    /// A leftover with several threads is one process, though /proc answers for each thread's id.
    #[test]
    fn a_leftover_with_threads_is_reported_once() {
        let script = "import threading, time\n\
                      for _ in range(3): threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n\
                      print('ready', flush=True)\n\
                      time.sleep(60)\n";
        // The group's leader (sh) leaves python running in its group and exits.
        let mut leader = Command::new("sh")
            .arg("-c")
            .arg("python3 -c \"$0\" &")
            .arg(script)
            .process_group(0)
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh starts");
        let pgid = leader.id() as i32;
        let mut line = String::new();
        let mut out = std::io::BufReader::new(leader.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        leader.wait().unwrap();
        let found = group_members(pgid);
        signal_group(pgid, Signal::SIGKILL);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("python3"), "{found:?}");
    }
}
