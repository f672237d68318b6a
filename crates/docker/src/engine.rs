//! The Docker engine connection: `DOCKER_HOST` (unix or tcp), the selected Docker context, or the
//! default socket (see `context`), API version
//! negotiated before anything else (Debian's 20.10 speaks API 1.41; bollard targets newer), and whether
//! the engine is podman (whose force-remove waits for SIGTERM, so containers are killed first).

use std::future::Future;
use std::time::Duration;

use bollard::{ClientVersion, Docker};

/// How long a ping may take before the engine counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `/info` may take. A wedged dockerd answers `/_ping` and `/version` (they take none of its
/// locks) and hangs on everything else: past this bound it counts as unreachable too, so that no later
/// call of the start waits for it.
const INFO_TIMEOUT: Duration = Duration::from_secs(4);
/// Per-request timeout: a removal that hangs must not hang the sweep.
const REQUEST_TIMEOUT: u64 = 30;
use super::context::DEFAULT_SOCKET;
use super::error::Error;

/// A reachable engine.
#[derive(Clone)]
pub struct Engine {
    pub docker: Docker,
    pub podman: bool,
    /// The highest API version the engine speaks (`1.41` for Debian's 20.10).
    pub api_version: Option<String>,
    /// The VM the engine runs in on this machine, if it does (`vm::classify`).
    pub vm: Option<&'static str>,
    /// The memory the engine's host has in all (`/info`'s `MemTotal`): the VM's, for an engine in one.
    pub memory_total: Option<u64>,
}

/// What connecting found.
pub enum Connection {
    Up(Engine),
    /// No engine answered. `expected` is true when one was configured (`DOCKER_HOST`) or a socket exists.
    Down {
        endpoint: String,
        expected: bool,
        reason: String,
        /// It answered the ping, and then not (a wedged engine): retrying soon will not help.
        wedged: bool,
    },
}

/// Where the engine is expected: `DOCKER_HOST`, else the selected context's, else the default socket.
pub fn endpoint() -> String {
    super::context::endpoint()
}

/// The one runtime every engine call runs on, built at start (`init_runtime`). A runtime per call
/// needed new descriptors (epoll, eventfd) for each, so a runner out of descriptors — a test holding
/// thousands of proxy connections — could not even build one; now only the call's own socket can fail,
/// and that is an error the caller handles.
static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();

/// Builds the shared runtime: called first thing by `main`, while descriptors are plentiful.
pub fn init_runtime() -> std::io::Result<()> {
    runtime().map(|_| ())
}

/// The shared runtime, built on first use.
fn runtime() -> std::io::Result<&'static tokio::runtime::Runtime> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    // Current-thread: whichever caller holds its core drives the I/O for all; the others wait on
    // their own futures meanwhile, and take the core over when it is free.
    let built = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Two first callers at once: one runtime is kept, the other dropped unused.
    Ok(RUNTIME.get_or_init(|| built))
}

/// Runs a future on the shared runtime, from any thread that is not itself async (the runner is
/// thread-based and needs async only for the engine). Several threads may wait on it at once.
pub fn block_on<F: Future>(future: F) -> F::Output {
    match runtime() {
        Ok(runtime) => runtime.block_on(future),
        // Only where the binary's `main` did not build it first (`init_runtime`, whose failure it
        // reports and exits on): unit tests, out of descriptors. There a panic is the report.
        Err(e) => panic!("cannot start the runtime for engine calls: {e}"),
    }
}

/// Connects, pings and negotiates the API version.
pub async fn connect() -> Connection {
    let expected = super::context::configured() || std::path::Path::new(DEFAULT_SOCKET).exists();
    let endpoint = endpoint();
    finish_connect(endpoint.clone(), expected).await
}

/// Connects to a given endpoint (`unix://PATH`, `tcp://HOST:PORT`, `http://HOST:PORT`): the engine a
/// session record names, which may not be the one this run uses.
pub async fn connect_to(endpoint: &str) -> Connection {
    finish_connect(endpoint.to_string(), true).await
}

/// Whether any client can talk to `endpoint` at all: a `DOCKER_HOST` of another scheme (a typo, a
/// bad value) never reached an engine, so nothing of a session can have been made there.
pub fn usable(endpoint: &str) -> bool {
    ["unix://", "tcp://", "http://", super::ssh::SCHEME]
        .iter()
        .any(|p| endpoint.starts_with(p))
}

/// A client of `endpoint` that speaks API `version` (no connection is made before its first call).
fn client_for(endpoint: &str, version: &ClientVersion) -> Result<Docker, Error> {
    if let Some(target) = super::ssh::Target::parse(endpoint) {
        super::ssh::client(target?, REQUEST_TIMEOUT, version).map_err(Error::engine(""))
    } else if let Some(path) = endpoint.strip_prefix("unix://") {
        Docker::connect_with_unix(path, REQUEST_TIMEOUT, version).map_err(Error::engine(""))
    } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
        match super::tls::Tls::from_env()? {
            Some(tls) if endpoint.starts_with("tcp://") => Docker::connect_with_ssl(
                endpoint,
                &tls.key(),
                &tls.cert(),
                &tls.ca(),
                REQUEST_TIMEOUT,
                version,
            ),
            _ => Docker::connect_with_http(endpoint, REQUEST_TIMEOUT, version),
        }
        .map_err(Error::engine(""))
    } else {
        Err(Error::Setup(format!(
            "{endpoint} is not a unix://, tcp:// or ssh:// address"
        )))
    }
}

/// What is wrong with the engine's unix socket at `path`, if a connect to it fails: it is missing,
/// nothing listens on it, or it may not be used.
fn socket_problem(path: &str) -> Option<String> {
    let error = std::os::unix::net::UnixStream::connect(path).err()?;
    Some(match error.kind() {
        std::io::ErrorKind::NotFound => format!("no socket at {path}"),
        std::io::ErrorKind::ConnectionRefused => format!("nothing listens on {path}"),
        std::io::ErrorKind::PermissionDenied => {
            format!("no permission to use {path} (join the docker group, or run as its owner)")
        }
        _ => format!("{path}: {error}"),
    })
}

async fn finish_connect(endpoint: String, expected: bool) -> Connection {
    let down = |reason: String| Connection::Down {
        endpoint: endpoint.clone(),
        expected,
        reason,
        wedged: false,
    };
    // A socket that is not there, or that nothing listens on, is known at once and said plainly (the
    // client's own error says only "client error (Connect)").
    if let Some(problem) = endpoint.strip_prefix("unix://").and_then(socket_problem) {
        return down(problem);
    }
    let docker = match client_for(&endpoint, bollard::API_DEFAULT_VERSION) {
        Ok(d) => d,
        Err(e) => return down(e.to_string()),
    };
    match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return down(e.to_string()),
        Err(_) => return down(format!("no answer within {}s", PING_TIMEOUT.as_secs())),
    }
    // The version and the engine's description are asked for together, once each: each takes the
    // engine about 10 ms (dockerd runs `runc --version` for both), and the session waits for this
    // before its tests start. The client then speaks the older of its API and the engine's.
    let (version, info) = tokio::join!(
        docker.version(),
        tokio::time::timeout(INFO_TIMEOUT, docker.info())
    );
    let version = match version {
        Ok(v) => v,
        Err(e) => return down(format!("version negotiation: {e}")),
    };
    let Some(spoken) = version.api_version.as_deref().and_then(parse_api_version) else {
        return down(format!(
            "version negotiation: the engine names no API version it speaks ({:?})",
            version.api_version
        ));
    };
    let default = bollard::API_DEFAULT_VERSION;
    let docker = match client_for(&endpoint, if spoken < *default { &spoken } else { default }) {
        Ok(d) => d,
        Err(e) => return down(e.to_string()),
    };
    let podman = version
        .components
        .unwrap_or_default()
        .iter()
        .any(|c| c.name.contains("Podman"));
    let api_version = version.api_version;
    let (vm, memory_total) = match info {
        Ok(Ok(info)) => (
            super::vm::of_info(&info, &endpoint, cfg!(target_os = "linux")),
            info.mem_total.and_then(|m| u64::try_from(m).ok()),
        ),
        Ok(Err(_)) => (None, None),
        Err(_) => {
            return Connection::Down {
                endpoint,
                expected,
                reason: format!(
                    "it answers /_ping but not /info within {}s: a wedged engine, which a restart \
                     usually mends",
                    INFO_TIMEOUT.as_secs()
                ),
                wedged: true,
            };
        }
    };
    Connection::Up(Engine {
        docker,
        podman,
        api_version,
        vm,
        memory_total,
    })
}

/// `MAJOR.MINOR` as the engine writes its API version.
fn parse_api_version(text: &str) -> Option<ClientVersion> {
    let (major, minor) = text.trim().split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_version_is_major_dot_minor() {
        let v = parse_api_version("1.41").unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        assert!(v < *bollard::API_DEFAULT_VERSION);
        for bad in ["", "1", "1.", "one.41", "1.41.2"] {
            assert!(parse_api_version(bad).is_none(), "{bad:?}");
        }
    }
}
