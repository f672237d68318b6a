//! A container of this very binary (`own_image`) on the engine, linked to this process by an attached
//! stream: what this process writes arrives on the container's stdin, what the container prints comes
//! back. The stream is a plain socket (std, blocking) held by this process alone, so it breaks when this
//! process dies, however it dies: the kernel closes the socket, the engine closes the container's stdin
//! (`StdinOnce`), and the container reads end-of-file.
//!
//! The container gets the engine's socket (a bind mount, as Ryuk does), no network, and `AutoRemove`:
//! it removes itself when its command exits. Labels and arguments are the caller's; this module knows
//! nothing of sessions.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio_rustls::rustls::{ClientConnection, StreamOwned};

use super::own_image::{self, OwnImage};
use super::{Engine, Error, block_on};

/// Where the engine's socket is mounted in the container.
pub const SOCKET_IN_CONTAINER: &str = "/var/run/docker.sock";
/// The engine's socket on a remote engine's host, where the client's endpoint does not say.
const REMOTE_SOCKET: &str = "/var/run/docker.sock";
/// The largest output frame read from the container (ours prints a line at a time).
const MAX_FRAME: usize = 1 << 20;
/// How long connecting the stream and its first answers may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The binary's arguments (after the image's entry).
    pub args: Vec<String>,
    pub labels: Vec<(String, String)>,
}

/// A running sidecar and the stream to it.
pub struct Sidecar {
    pub id: String,
    link: Link,
    /// Bytes of the container's output received and not yet returned as lines.
    output: Vec<u8>,
}

impl std::fmt::Debug for Sidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sidecar").field("id", &self.id).finish()
    }
}

/// Imports the image if needed, creates the container, attaches to it and starts it. `endpoint` is the
/// engine's address as the client sees it (`unix://…`, `tcp://…`).
pub fn start(engine: &Engine, endpoint: &str, spec: &Spec) -> Result<Sidecar, Error> {
    let image = block_on(own_image::ensure(engine))?;
    let id = block_on(create(engine, endpoint, &image, spec))?;
    let started = attach(endpoint, &id).and_then(|link| {
        block_on(engine.docker.start_container(&id, None))
            .map_err(Error::engine(format!("start the container {id}")))?;
        Ok(link)
    });
    match started {
        Ok(link) => Ok(Sidecar {
            id,
            link,
            output: Vec::new(),
        }),
        Err(e) => {
            remove(engine, &id);
            Err(e)
        }
    }
}

async fn create(
    engine: &Engine,
    endpoint: &str,
    image: &OwnImage,
    spec: &Spec,
) -> Result<String, Error> {
    // The socket path as the engine's host sees it: the client's own path is the Mac's, not the VM's,
    // when the engine runs in one (Docker Desktop, colima, OrbStack).
    let override_socket = std::env::var(cleantest_contract::ENV_ENGINE_SOCKET).ok();
    let socket = match (&override_socket, engine.vm) {
        (Some(path), _) if !path.is_empty() => path.as_str(),
        (_, Some(_)) => REMOTE_SOCKET,
        _ => endpoint.strip_prefix("unix://").unwrap_or(REMOTE_SOCKET),
    };
    let body = ContainerCreateBody {
        image: Some(image.reference.clone()),
        entrypoint: Some(image.entry.clone()),
        cmd: Some(spec.args.clone()),
        env: Some(vec![format!("DOCKER_HOST=unix://{SOCKET_IN_CONTAINER}")]),
        labels: Some(spec.labels.iter().cloned().collect::<HashMap<_, _>>()),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{socket}:{SOCKET_IN_CONTAINER}")]),
            auto_remove: Some(true),
            network_mode: Some("none".into()),
            memory: Some(64 << 20),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let options = CreateContainerOptionsBuilder::default().build();
    engine
        .docker
        .create_container(Some(options), body)
        .await
        .map(|r| r.id)
        .map_err(Error::engine(format!(
            "create a container of {}",
            image.reference
        )))
}

/// Waits (up to `bound`) until the engine has removed the container, as `AutoRemove` does when its
/// command exits; removes it by force if not by then.
pub fn wait_removed(engine: &Engine, id: &str, bound: Duration) {
    let options = WaitContainerOptionsBuilder::default()
        .condition("removed")
        .build();
    let waited = block_on(async {
        let mut wait = engine.docker.wait_container(id, Some(options));
        tokio::time::timeout(bound, async { while wait.next().await.is_some() {} }).await
    });
    if waited.is_err() {
        remove(engine, id);
    }
}

/// Removes a sidecar by id (it is one of ours: the caller created it). Gone already is fine.
pub fn remove(engine: &Engine, id: &str) {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    let _ = block_on(engine.docker.remove_container(id, Some(options)));
}

impl Sidecar {
    /// Sends one line to the container's stdin.
    pub fn send(&mut self, line: &str) -> std::io::Result<()> {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        self.link.write_all(&bytes)
    }

    /// The next line the container printed, waiting until `deadline`; None at end of stream.
    pub fn line(&mut self, deadline: Instant) -> std::io::Result<Option<String>> {
        loop {
            if let Some(at) = self.output.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.output.drain(..=at).collect();
                return Ok(Some(
                    String::from_utf8_lossy(&line[..at]).trim_end().to_string(),
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            self.link.set_read_timeout(Some(left))?;
            match read_frame(&mut self.link)? {
                Some(payload) => self.output.extend(payload),
                None if self.output.is_empty() => return Ok(None),
                None => self.output.push(b'\n'),
            }
        }
    }
}

/// The attached stream: a unix or TCP socket, after the engine's HTTP upgrade.
enum Link {
    Unix(BufReader<UnixStream>),
    Tcp(BufReader<TcpStream>),
    Tls(Box<BufReader<StreamOwned<ClientConnection, TcpStream>>>),
}

impl Link {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Link::Unix(s) => s.get_mut().write_all(bytes),
            Link::Tcp(s) => s.get_mut().write_all(bytes),
            Link::Tls(s) => s.get_mut().write_all(bytes),
        }
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        match self {
            Link::Unix(s) => s.get_ref().set_read_timeout(timeout),
            Link::Tcp(s) => s.get_ref().set_read_timeout(timeout),
            Link::Tls(s) => s.get_ref().sock.set_read_timeout(timeout),
        }
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Link::Unix(s) => s.read(buf),
            Link::Tcp(s) => s.read(buf),
            Link::Tls(s) => s.read(buf),
        }
    }
}

impl BufRead for Link {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        match self {
            Link::Unix(s) => s.fill_buf(),
            Link::Tcp(s) => s.fill_buf(),
            Link::Tls(s) => s.fill_buf(),
        }
    }

    fn consume(&mut self, n: usize) {
        match self {
            Link::Unix(s) => s.consume(n),
            Link::Tcp(s) => s.consume(n),
            Link::Tls(s) => s.consume(n),
        }
    }
}

/// Connects to the engine and upgrades `POST /containers/ID/attach` to a raw stream (as the docker CLI
/// does for `docker run -i`), before the container starts, so that nothing it prints is missed.
fn attach(endpoint: &str, id: &str) -> Result<Link, Error> {
    let fail =
        |e: std::io::Error| Error::io(format!("attach to the container {id} at {endpoint}"))(e);
    let mut link = if let Some(target) = super::ssh::Target::parse(endpoint) {
        Link::Unix(BufReader::new(target?.dial().map_err(fail)?.0))
    } else if let Some(path) = endpoint.strip_prefix("unix://") {
        Link::Unix(BufReader::new(UnixStream::connect(path).map_err(fail)?))
    } else {
        let address = endpoint
            .strip_prefix("tcp://")
            .or_else(|| endpoint.strip_prefix("http://"))
            .ok_or_else(|| {
                Error::Setup(format!(
                    "attach at {endpoint}: not a unix:// or tcp:// address"
                ))
            })?;
        let address = address.trim_end_matches('/');
        let stream = TcpStream::connect(address).map_err(fail)?;
        match super::tls::Tls::from_env()? {
            Some(tls) if endpoint.starts_with("tcp://") => {
                let name = super::tls::server_name(address)?;
                let connection = ClientConnection::new(tls.client_config()?, name)
                    .map_err(|e| Error::Setup(format!("attach at {endpoint}: {e}")))?;
                Link::Tls(Box::new(BufReader::new(StreamOwned::new(
                    connection, stream,
                ))))
            }
            _ => Link::Tcp(BufReader::new(stream)),
        }
    };
    link.set_read_timeout(Some(IO_TIMEOUT)).map_err(fail)?;
    let request = format!(
        "POST /containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n\
         Host: docker\r\nUpgrade: tcp\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n"
    );
    link.write_all(request.as_bytes()).map_err(fail)?;
    let mut status = String::new();
    link.read_line(&mut status).map_err(fail)?;
    // 101 after an upgrade; engines that do not upgrade answer 200 and stream all the same.
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code != "101" && code != "200" {
        return Err(Error::Said {
            doing: format!("attach to the container {id}"),
            said: format!("the engine answered {}", status.trim()),
        });
    }
    loop {
        let mut header = String::new();
        if link.read_line(&mut header).map_err(fail)? == 0 || header.trim().is_empty() {
            return Ok(link);
        }
    }
}

/// One frame of a multiplexed attach stream (`[stream, 0, 0, 0, size: u32 BE]` then the payload); None
/// at end of stream.
fn read_frame(link: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 8];
    match link.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if size > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "a frame of {size} bytes on the attached stream"
        )));
    }
    let mut payload = vec![0u8; size];
    link.read_exact(&mut payload)?;
    Ok(Some(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_one_by_one_and_end_of_stream_is_none() {
        let mut bytes = vec![1, 0, 0, 0, 0, 0, 0, 3];
        bytes.extend(b"ab\n");
        bytes.extend([2, 0, 0, 0, 0, 0, 0, 1]);
        bytes.extend(b"x");
        let mut input = bytes.as_slice();
        assert_eq!(read_frame(&mut input).unwrap(), Some(b"ab\n".to_vec()));
        assert_eq!(read_frame(&mut input).unwrap(), Some(b"x".to_vec()));
        assert_eq!(read_frame(&mut input).unwrap(), None);
    }

    #[test]
    fn a_truncated_frame_is_an_error_not_a_panic() {
        let mut input: &[u8] = &[1, 0, 0, 0, 0, 0, 0, 9, b'a'];
        assert!(read_frame(&mut input).is_err());
    }
}
