//! Readiness: a service is ready when its container runs and every one of its checks passes, polled
//! with backoff (50 ms doubling to 250 ms) until its `ready-timeout`. A container that exits first fails
//! at once, with its exit code.
//!
//! `tcp`: with a local engine, the container's own socket table (`sys::listening`, of its init,
//! in its network namespace) must show the port listening. A connect to the published port proves
//! nothing there: docker's userland proxy accepts it whether or not the service listens. Where the
//! table cannot be read (a remote engine), a connect to the published port counts only if the peer does
//! not close it at once.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::Failure;
use crate::config::services::{Ready, ServiceSpec};
use crate::docker::Engine;
use crate::docker::container::{self, State};

/// The longest pause between polls: a service is seen ready at most this long after it is, and
/// a poll (an inspect, maybe an exec) costs the engine a few milliseconds.
const MAX_POLL: Duration = Duration::from_millis(250);

/// How one check is reached.
pub(crate) struct Target<'a> {
    pub engine: &'a Engine,
    /// Where published ports are reached (the engine's host).
    pub host: &'a str,
    pub id: &'a str,
    /// (container port, published host port).
    pub ports: &'a [(u16, u16)],
    /// Whether the container's pid is a pid of this host's /proc.
    pub local: bool,
}

/// Waits until the service is ready, it fails, or `abort` says to stop (another service failed, or the
/// run was interrupted).
pub(crate) fn wait(
    target: &Target<'_>,
    spec: &ServiceSpec,
    abort: &dyn Fn() -> bool,
) -> Result<(), Failure> {
    let deadline = Instant::now() + spec.ready_timeout;
    let mut pending: Vec<&Ready> = spec.ready.iter().collect();
    let mut delay = Duration::from_millis(50);
    // What the first pending check said on its last try, and how many tries in a row could not run
    // its command at all.
    let mut last: Option<String> = None;
    let mut unrunnable = 0;
    loop {
        let pid = match container::state(target.engine, target.id) {
            State::Running { pid } => pid,
            State::Exited { code, oom_killed } => return Err(Failure::Exited { code, oom_killed }),
            State::Gone => return Err(Failure::Gone),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let mut first = true;
        pending.retain(|check| {
            let probe = probe(target, pid, check, left);
            if first && let Probe::Failed { why, cannot_run } = &probe {
                last = why.clone();
                unrunnable = if *cannot_run { unrunnable + 1 } else { 0 };
            }
            first = false;
            !matches!(probe, Probe::Passed)
        });
        if pending.is_empty() {
            return Ok(());
        }
        if abort() {
            return Err(Failure::Abandoned);
        }
        if unrunnable >= UNRUNNABLE_TRIES {
            return Err(Failure::Unrunnable {
                check: pending[0].to_string(),
                why: last.unwrap_or_default(),
            });
        }
        if Instant::now() + delay > deadline {
            return Err(Failure::NotReady {
                check: pending[0].to_string(),
                timeout: humantime::format_duration(spec.ready_timeout).to_string(),
                last,
            });
        }
        // Polling the container's state: the engine has no event for "ready".
        std::thread::sleep(delay);
        delay = (delay * 2).min(MAX_POLL);
    }
}

/// Tries in a row whose command the engine could not run (126, 127) before the wait ends early: the
/// image lacks it, and waiting out the timeout would only hide that.
const UNRUNNABLE_TRIES: u32 = 3;

/// What one try of a check found.
enum Probe {
    Passed,
    Failed {
        /// What it said, when it says anything (an exec's exit code and output).
        why: Option<String>,
        /// The command could not be run at all (126 or 127).
        cannot_run: bool,
    },
}

fn probe(target: &Target<'_>, pid: i64, check: &Ready, left: Duration) -> Probe {
    let failed = Probe::Failed {
        why: None,
        cannot_run: false,
    };
    let passed = |ok: bool| if ok { Probe::Passed } else { failed };
    match check {
        Ready::Tcp(port) => passed(
            match target
                .local
                .then(|| listening_in(target, pid, *port))
                .flatten()
            {
                Some(listening) => listening,
                None => published(target, *port).is_some_and(accepts),
            },
        ),
        Ready::Log { text, times } => passed(
            container::logs(target.engine, target.id, None)
                .is_ok_and(|log| log.matches(text.as_str()).count() >= *times as usize),
        ),
        Ready::Exec(argv) => {
            let bound = left.clamp(Duration::from_secs(1), Duration::from_secs(10));
            match container::exec(target.engine, target.id, argv, bound) {
                Ok((0, _)) => Probe::Passed,
                Ok((code, output)) => Probe::Failed {
                    why: Some(match output.is_empty() {
                        true => format!("exit code {code}, no output"),
                        false => format!("exit code {code}: {}", last_lines(&output, 3)),
                    }),
                    cannot_run: matches!(code, 126 | 127),
                },
                Err(e) => Probe::Failed {
                    why: Some(e.to_string()),
                    cannot_run: false,
                },
            }
        }
        Ready::Http { port, path } => {
            passed(published(target, *port).is_some_and(|a| http_ok(a, path)))
        }
    }
}

/// The last `n` lines of `text`, on one line.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

fn published(target: &Target<'_>, port: u16) -> Option<SocketAddr> {
    let published = target.ports.iter().find(|(c, _)| *c == port)?.1;
    (target.host, published).to_socket_addrs().ok()?.next()
}

/// Whether the container's network namespace has a socket listening on `port` (`sys::listening`),
/// read only when its pid is provably the container's on this kernel: an engine in a VM reports pids
/// of the VM's kernel, which here name some other process, or none.
fn listening_in(target: &Target<'_>, pid: i64, port: u16) -> Option<bool> {
    crate::sys::pid_in_container(pid, target.id)
        .then(|| crate::sys::listening(pid, port))
        .flatten()
}

/// A connect that the peer does not close at once (a proxy in front of nothing closes it).
fn accepts(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// `GET path` answered with a 2xx or 3xx status.
fn http_ok(address: SocketAddr, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match stream.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let line = String::from_utf8_lossy(&head[..got]);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    status.is_some_and(|s| (200..400).contains(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn only_a_listening_socket_on_the_port_counts() {
        assert!(crate::sys::table_listens(TABLE, 5432));
        // 8080 (1F90) is an established connection, not a listener.
        assert!(!crate::sys::table_listens(TABLE, 8080));
        assert!(!crate::sys::table_listens(TABLE, 6379));
        assert!(!crate::sys::table_listens("", 5432));
    }

    #[test]
    fn nothing_listening_is_not_ready() {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = unused.local_addr().unwrap();
        drop(unused);
        assert!(!accepts(address));
        assert!(!http_ok(address, "/"));
    }

    #[test]
    fn an_http_server_answering_200_is_ready_and_500_is_not() {
        for (status, ok) in [("200 OK", true), ("302 Found", true), ("500 Oops", false)] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let address = listener.local_addr().unwrap();
            let server = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf);
                let _ = s.write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes());
            });
            assert_eq!(http_ok(address, "/health"), ok, "{status}");
            server.join().unwrap();
        }
    }
}
