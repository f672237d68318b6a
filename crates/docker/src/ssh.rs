//! `ssh://[USER@]HOST[:PORT]` engines, reached as the docker CLI reaches them: the system's `ssh` runs
//! `docker system dial-stdio` on the host, one process per connection, so the user's `~/.ssh/config`,
//! agent and known hosts apply. The process's standard input and output are one end of a socket pair;
//! the other end is the connection, a unix socket like any other (with timeouts, and async through
//! tokio). `BatchMode` makes a missing key a refusal instead of a prompt, `ConnectTimeout` bounds the
//! connect and `ServerAlive*` notices a connection that died: never a hang.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// The prefix of the endpoints this module serves.
pub const SCHEME: &str = "ssh://";

/// Seconds `ssh` may take to connect, and between its keep-alive probes (three unanswered end it).
const CONNECT_TIMEOUT: u32 = 10;
const ALIVE_INTERVAL: u32 = 5;

/// Where `ssh` connects: the destination as written (`user@host`, or a `Host` alias of the user's
/// config) and the port, if the endpoint names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub destination: String,
    pub port: Option<u16>,
}

impl Target {
    /// `ssh://[USER@]HOST[:PORT][/]`; None for any other endpoint.
    pub fn parse(endpoint: &str) -> Option<Result<Target, crate::Error>> {
        let rest = endpoint.strip_prefix(SCHEME)?;
        let rest = rest.trim_end_matches('/');
        let bad = |why: &str| {
            crate::Error::Setup(format!(
                "use the engine at {endpoint}: {why}; write ssh://[USER@]HOST[:PORT]"
            ))
        };
        if rest.is_empty() || rest.contains('/') || rest.starts_with('-') {
            return Some(Err(bad("it names no host")));
        }
        let (user, host_port) = match rest.rsplit_once('@') {
            Some((user, hp)) => (Some(user), hp),
            None => (None, rest),
        };
        // `[v6]:port`, `[v6]`, `host:port`, `host`.
        let (host, port) = match host_port.strip_prefix('[') {
            Some(inner) => match inner.split_once(']') {
                Some((host, rest)) => (host, rest.strip_prefix(':')),
                None => return Some(Err(bad("its `[` is not closed"))),
            },
            None => match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        let port = match port.map(str::parse::<u16>) {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(_)) => return Some(Err(bad("its port is not a number"))),
        };
        if host.is_empty() || user.is_some_and(str::is_empty) {
            return Some(Err(bad("it names no host")));
        }
        let destination = match user {
            Some(user) => format!("{user}@{host}"),
            None => host.to_string(),
        };
        Some(Ok(Target { destination, port }))
    }

    /// The host part of the destination (a user's `Host` alias stays an alias: `address` resolves it).
    pub fn host(&self) -> &str {
        self.destination
            .rsplit_once('@')
            .map_or(self.destination.as_str(), |(_, h)| h)
    }

    /// The address the engine's host has for this machine's clients: what `ssh -G` says `HostName` is
    /// (a `Host` alias of the user's config resolved), else the host as written.
    pub fn address(&self) -> String {
        let resolved = Command::new("ssh")
            .arg("-G")
            .args(self.port.map(|p| format!("-p{p}")))
            .arg("--")
            .arg(&self.destination)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("hostname ").map(str::to_string))
            });
        resolved.unwrap_or_else(|| self.host().to_string())
    }

    /// `ssh … HOST docker system dial-stdio`.
    fn command(&self) -> Command {
        let mut command = Command::new("ssh");
        command
            .args(["-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!("ConnectTimeout={CONNECT_TIMEOUT}"))
            .arg("-o")
            .arg(format!("ServerAliveInterval={ALIVE_INTERVAL}"))
            .args(["-o", "ServerAliveCountMax=3", "-T"])
            .args(self.port.map(|p| format!("-p{p}")))
            .arg("--")
            .arg(&self.destination)
            .args(["docker", "system", "dial-stdio"]);
        command
    }

    /// A connection to the engine: a fresh `ssh` whose standard input and output are the other end of
    /// the returned socket. What `ssh` says on its standard error is kept (`Said`) for the error a
    /// failed connection becomes.
    pub fn dial(&self) -> std::io::Result<(UnixStream, Said)> {
        let (ours, theirs) = UnixStream::pair()?;
        // Registered while the spawn is under way: a session that asks about the pid meanwhile waits.
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        let mut child = self
            .command()
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs.try_clone()?)))
            .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot start `ssh` (is it installed?): {e}"),
                )
            })?;
        let pid = child.id();
        running.insert(pid);
        drop(running);
        let said = Said::default();
        let stderr = child.stderr.take();
        let log = said.clone();
        // One thread per connection: it keeps what ssh says, then reaps it when it exits (its input
        // ends with our end of the pair).
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut stderr) = stderr {
                let _ = stderr.read_to_string(&mut text);
            }
            let _ = child.wait();
            RUNNING
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&pid);
            log.set(text);
        });
        Ok((ours, said))
    }

    /// `dial`, as a tokio stream.
    pub fn dial_async(&self) -> std::io::Result<(tokio::net::UnixStream, Said)> {
        let (stream, said) = self.dial()?;
        stream.set_nonblocking(true)?;
        Ok((tokio::net::UnixStream::from_std(stream)?, said))
    }
}

/// The pids of the `ssh` processes of this process's connections, until each is reaped.
static RUNNING: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Whether `pid` is one of this process's `ssh` connections: a child of the runner that is neither a
/// test's nor an escapee, and must not be killed as one.
pub fn is_connection(pid: i32) -> bool {
    u32::try_from(pid).is_ok_and(|pid| {
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&pid)
    })
}

/// What one `ssh` said on its standard error, once it has exited.
#[derive(Clone, Default)]
pub struct Said(Arc<(Mutex<Option<String>>, Condvar)>);

impl Said {
    fn set(&self, text: String) {
        let (lock, exited) = &*self.0;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
        exited.notify_all();
    }

    /// What it said, in one line, waiting at most `limit` for it to exit (it exits once its
    /// connection failed); empty if it said nothing or has not exited.
    pub fn line(&self, limit: Duration) -> String {
        let (lock, exited) = &*self.0;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = exited
            .wait_timeout_while(guard, limit, |text| text.is_none())
            .unwrap_or_else(|e| e.into_inner());
        guard.as_deref().map(said_line).unwrap_or_default()
    }
}

/// The error a failed exchange over `ssh` is: what ssh said, when it said something.
pub fn failed(error: impl std::fmt::Display, said: &Said) -> std::io::Error {
    said_error(
        said,
        Duration::from_secs(2),
        std::io::ErrorKind::Other,
        format!("over ssh: {error}"),
    )
}

/// What ssh said (waited for at most `wait`) as an error of `kind`, else `otherwise`.
fn said_error(
    said: &Said,
    wait: Duration,
    kind: std::io::ErrorKind,
    otherwise: String,
) -> std::io::Error {
    match said.line(wait) {
        line if line.is_empty() => std::io::Error::new(kind, otherwise),
        // ssh's own lines start with `ssh:` (`ssh: connect to host …`); the remote side's do not.
        line if line.starts_with("ssh:") => std::io::Error::new(kind, line),
        line => std::io::Error::new(kind, format!("ssh: {line}")),
    }
}

/// A connection over `ssh` that ends, if it ends before the engine said anything, with what ssh said
/// (a refused connection, an unknown host, a key it cannot use) instead of a bare end of stream: the
/// proxy's error to a test's docker client then names the cause.
pub struct Connection {
    io: tokio::net::UnixStream,
    said: Said,
    answered: bool,
}

impl Connection {
    pub fn open(target: &Target) -> std::io::Result<Connection> {
        let (io, said) = target.dial_async()?;
        Ok(Connection {
            io,
            said,
            answered: false,
        })
    }
}

impl tokio::io::AsyncRead for Connection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.io).poll_read(cx, buf) {
            std::task::Poll::Ready(Ok(())) if buf.filled().len() == before && !this.answered => {
                // ssh has exited: what it said is complete a moment later. Only on this failure path.
                let error = failed_quickly(&this.said);
                std::task::Poll::Ready(Err(error))
            }
            std::task::Poll::Ready(Ok(())) => {
                this.answered = true;
                std::task::Poll::Ready(Ok(()))
            }
            std::task::Poll::Ready(Err(e)) if !this.answered && ended(&e) => {
                std::task::Poll::Ready(Err(failed_quickly(&this.said)))
            }
            other => other,
        }
    }
}

/// An error that says only that the other end went away.
fn ended(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
    )
}

fn failed_quickly(said: &Said) -> std::io::Error {
    said_error(
        said,
        Duration::from_millis(300),
        std::io::ErrorKind::UnexpectedEof,
        "ssh ended the connection before the engine answered".into(),
    )
}

impl tokio::io::AsyncWrite for Connection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.io).poll_write(cx, buf) {
            // The request meets an ssh that has already exited.
            std::task::Poll::Ready(Err(e)) if !this.answered && ended(&e) => {
                std::task::Poll::Ready(Err(failed_quickly(&this.said)))
            }
            other => other,
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

fn said_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A bollard client whose every request goes over `ssh` to `target`: connections are kept while
/// idle and reused, and a new one is dialled when none is free.
pub fn client(
    target: Target,
    timeout: u64,
    version: &bollard::ClientVersion,
) -> Result<bollard::Docker, bollard::errors::Error> {
    let pool = Arc::new(Pool {
        target,
        idle: Mutex::new(Vec::new()),
    });
    let transport = move |request: bollard::BollardRequest| {
        let pool = pool.clone();
        async move { pool.send(request).await }
    };
    bollard::Docker::connect_with_custom_transport(
        transport,
        Some("http://docker"),
        timeout,
        version,
    )
}

struct Pool {
    target: Target,
    idle: Mutex<Vec<(SendRequest<Body>, Said)>>,
}

impl Pool {
    async fn send(
        &self,
        request: bollard::BollardRequest,
    ) -> Result<hyper::Response<hyper::body::Incoming>, bollard::errors::Error> {
        let (mut parts, body) = request.into_parts();
        // Origin form, as a client of a unix socket sends it.
        if let Some(path) = parts.uri.path_and_query() {
            parts.uri = path.as_str().parse().unwrap_or(parts.uri);
        }
        parts.headers.insert(
            hyper::header::HOST,
            hyper::header::HeaderValue::from_static("docker"),
        );
        let request = hyper::Request::from_parts(parts, body.boxed_unsync());
        let io = |err| bollard::errors::Error::IOError { err };
        let (mut sender, said) = match self.take() {
            Some(idle) => idle,
            None => self.connect().await.map_err(io)?,
        };
        match sender.send_request(request).await {
            Ok(response) => {
                self.idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((sender, said));
                Ok(response)
            }
            Err(e) => Err(io(failed(e, &said))),
        }
    }

    /// An idle connection ready for a request; busy or closed ones are let go (a busy one closes once
    /// its exchange is done, having no sender left).
    fn take(&self) -> Option<(SendRequest<Body>, Said)> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((sender, said)) = idle.pop() {
            if sender.is_ready() {
                return Some((sender, said));
            }
        }
        None
    }

    async fn connect(&self) -> std::io::Result<(SendRequest<Body>, Said)> {
        let (stream, said) = self.target.dial_async()?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(e, &said))?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Ok((sender, said))
    }
}

/// Whether `ssh` can be started at all (the run refuses an `ssh://` engine without it, exit 2).
pub fn available() -> bool {
    Command::new("ssh")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(endpoint: &str) -> Result<Target, crate::Error> {
        Target::parse(endpoint).expect("an ssh endpoint")
    }

    #[test]
    fn endpoints_name_a_destination_and_maybe_a_port() {
        let t = |d: &str, p: Option<u16>| Target {
            destination: d.into(),
            port: p,
        };
        assert_eq!(parsed("ssh://build-node").unwrap(), t("build-node", None));
        assert_eq!(
            parsed("ssh://ci@10.0.0.5:2222").unwrap(),
            t("ci@10.0.0.5", Some(2222))
        );
        assert_eq!(parsed("ssh://ci@node/").unwrap(), t("ci@node", None));
        assert_eq!(parsed("ssh://[::1]:22").unwrap(), t("::1", Some(22)));
        assert_eq!(parsed("ssh://[::1]").unwrap(), t("::1", None));
        assert!(Target::parse("tcp://x:1").is_none());
        for bad in [
            "ssh://",
            "ssh://host:port",
            "ssh://@host",
            "ssh://-oProxyCommand=x",
            "ssh://a/b",
        ] {
            assert!(parsed(bad).is_err(), "{bad}");
        }
        assert_eq!(parsed("ssh://ci@node:22").unwrap().host(), "node");
    }
}
