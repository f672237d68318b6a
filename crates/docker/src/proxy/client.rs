//! The bottom of the proxy: the engine client. Where the real engine is (`Upstream`), a connection to
//! it (`connect`), a client connection's own upstream connection (`send`), a one-shot call for the
//! proxy's own questions (`call`, `get`), and the error answer the proxy gives instead of the engine's
//! (`error_response`). Knows nothing of rules, sessions or checks: every other file of the proxy may
//! import it, and it imports none of them.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, TRANSFER_ENCODING};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::rustls::ClientConfig;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Where the real engine is.
#[derive(Debug, Clone)]
pub enum Upstream {
    Unix(PathBuf),
    Tcp(String),
    /// `tcp://` with `DOCKER_TLS_VERIFY` (`docker::tls`).
    Tls {
        address: String,
        name: ServerName<'static>,
        config: Arc<ClientConfig>,
    },
    /// `ssh://`: a `docker system dial-stdio` over the system's `ssh` per connection (`docker::ssh`).
    Ssh(crate::ssh::Target),
}

impl Upstream {
    /// The engine the user's client would use (`DOCKER_HOST`, the selected context, the default socket):
    /// `unix://PATH`, `tcp://HOST:PORT` or `http://HOST:PORT`.
    pub fn from_env() -> Result<Upstream, crate::Error> {
        let host = crate::engine::endpoint();
        if let Some(target) = crate::ssh::Target::parse(&host) {
            Ok(Upstream::Ssh(target?))
        } else if let Some(path) = host.strip_prefix("unix://") {
            Ok(Upstream::Unix(PathBuf::from(path)))
        } else if let Some(addr) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            let address = addr.trim_end_matches('/').to_string();
            match crate::tls::Tls::from_env()? {
                Some(tls) if host.starts_with("tcp://") => Ok(Upstream::Tls {
                    name: crate::tls::server_name(&address)?,
                    config: tls.client_config()?,
                    address,
                }),
                _ => Ok(Upstream::Tcp(address)),
            }
        } else {
            Err(crate::Error::Setup(format!(
                "the Docker endpoint {host} is not a unix://, tcp:// or ssh:// address the proxy can forward to"
            )))
        }
    }
}

/// A client connection's own connection to the engine, opened on first use.
pub type UpstreamSlot = Arc<tokio::sync::Mutex<Option<SendRequest<ProxyBody>>>>;

/// `bytes` as the request's whole body, its framing headers set to match.
pub fn buffered(parts: &mut hyper::http::request::Parts, bytes: impl Into<Bytes>) -> ProxyBody {
    let bytes = bytes.into();
    parts.headers.remove(TRANSFER_ENCODING);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Sends a request on this client connection's upstream connection, opening it on first use (or again
/// after the engine closed it).
pub async fn send(
    slot: &tokio::sync::Mutex<Option<SendRequest<ProxyBody>>>,
    upstream: &Upstream,
    req: Request<ProxyBody>,
) -> Result<Response<Incoming>, BoxError> {
    let mut guard = slot.lock().await;
    if guard.as_ref().is_none_or(|s| s.is_closed()) {
        *guard = Some(connect(upstream).await?);
    }
    let sender = guard.as_mut().expect("connected above");
    sender.ready().await?;
    Ok(sender.send_request(req).await?)
}

/// Whether any connection to the engine was ever made (one proxy per process): a session whose proxy
/// never reached its engine cannot have created anything there.
pub static REACHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub async fn connect(upstream: &Upstream) -> Result<SendRequest<ProxyBody>, BoxError> {
    macro_rules! handshake {
        ($io:expr) => {{
            let io = $io;
            REACHED.store(true, std::sync::atomic::Ordering::SeqCst);
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
            tokio::spawn(async move {
                let _ = connection.with_upgrades().await;
            });
            sender
        }};
    }
    Ok(match upstream {
        Upstream::Unix(path) => handshake!(UnixStream::connect(path).await?),
        Upstream::Tcp(addr) => handshake!(TcpStream::connect(addr).await?),
        Upstream::Tls {
            address,
            name,
            config,
        } => {
            let tcp = TcpStream::connect(address).await?;
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            handshake!(connector.connect(name.clone(), tcp).await?)
        }
        Upstream::Ssh(target) => handshake!(crate::ssh::Connection::open(target)?),
    })
}

/// An error with its causes, as one line (`connection error: ssh: connect to host … refused`): hyper's
/// own words name only the layer that failed.
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !line.ends_with(&text) {
            line = format!("{line}: {text}");
        }
        cause = inner.source();
    }
    line
}

pub fn error_response(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    // The docker CLI shows `message` only from a JSON answer that says it is one.
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// One request on a connection of its own; the status and the whole (small) body.
pub async fn call(
    upstream: &Upstream,
    method: Method,
    path: &str,
    json_body: Option<String>,
) -> Result<(StatusCode, Bytes), BoxError> {
    let mut sender = connect(upstream).await?;
    let body: ProxyBody = Full::new(Bytes::from(json_body.unwrap_or_default()))
        .map_err(|never| match never {})
        .boxed();
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "docker")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(body)?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

/// A GET's JSON answer, when the engine gave one with a success status.
pub async fn get(upstream: &Upstream, path: &str) -> Option<Value> {
    let (status, body) = call(upstream, Method::GET, path, None).await.ok()?;
    if !status.is_success() {
        return None;
    }
    serde_json::from_slice(&body).ok()
}
