//! One client connection of the proxy: an HTTP/1 server (hyper) for the client, one upstream connection
//! to the real engine for the same lifetime (so keep-alive stays 1:1), requests and responses streamed
//! through unbuffered except the create calls whose labels are rewritten, and hijacked connections
//! (attach, exec; both the `101 Upgrade` form and the `200 raw-stream` form) turned into a raw tunnel
//! that passes half-closes on in each direction.

use std::collections::HashSet;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, TRANSFER_ENCODING, UPGRADE,
};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::rustls::ClientConfig;

use super::create::{create, labels_for, normalized};
use super::guard;
use super::in_flight::InFlight;
use super::policy;
use super::rewrite::{Create, merge_labels, split_version, translate_version};
use super::volumes;
use crate::contract::{ENV_BINARY, ENV_TEST, NESTED_LABEL_PREFIX, SESSION_LABEL};

/// The largest create body the proxy buffers to rewrite. Real ones are a few KiB; without a bound a
/// client could grow the runner without limit (a 1.4 GB body did), so a larger one gets 413.
pub(crate) const MAX_CREATE_BODY: usize = 16 << 20;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type ProxyBody = BoxBody<Bytes, BoxError>;

/// Where the real engine is.
#[derive(Debug, Clone)]
pub(crate) enum Upstream {
    Unix(PathBuf),
    Tcp(String),
    /// `tcp://` with `DOCKER_TLS_VERIFY` (`docker::tls`).
    Tls {
        address: String,
        name: ServerName<'static>,
        config: Arc<ClientConfig>,
    },
}

impl Upstream {
    /// The engine the user's client would use (`DOCKER_HOST`, the selected context, the default socket):
    /// `unix://PATH`, `tcp://HOST:PORT` or `http://HOST:PORT`.
    pub(crate) fn from_env() -> Result<Upstream, String> {
        let host = crate::docker::engine::endpoint();
        if let Some(path) = host.strip_prefix("unix://") {
            Ok(Upstream::Unix(PathBuf::from(path)))
        } else if let Some(addr) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            let address = addr.trim_end_matches('/').to_string();
            match crate::docker::tls::Tls::from_env()? {
                Some(tls) if host.starts_with("tcp://") => Ok(Upstream::Tls {
                    name: crate::docker::tls::server_name(&address)?,
                    config: tls.client_config()?,
                    address,
                }),
                _ => Ok(Upstream::Tcp(address)),
            }
        } else {
            Err(format!(
                "the Docker endpoint {host} is not a unix:// or tcp:// address the proxy can forward to"
            ))
        }
    }
}

/// What all connections of one proxy share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub upstream: Upstream,
    /// The engine's maximum API version, for translating newer version prefixes down.
    pub engine_max: Option<String>,
    pub session: String,
    /// Labels set on every resource created through the proxy besides the session's (its owner).
    pub fixed: Vec<(String, String)>,
    /// Units (binary, test) that created a container through the proxy.
    pub created: Mutex<HashSet<(String, Option<String>)>>,
    /// Creates forwarded and not yet answered.
    pub in_flight: InFlight,
    /// Where the anonymous volumes of created containers are recorded.
    pub anonymous_volumes: PathBuf,
    /// Told the anonymous volumes recorded, besides the file.
    pub volume_sink: Option<super::VolumeSink>,
    /// Whether an image declares `VOLUME`s, by image as create bodies name it.
    pub image_volumes: Mutex<std::collections::HashMap<String, bool>>,
    /// The resource guard's limits (`guard`).
    pub guard: crate::config::guard::Guard,
    /// Held from a container create's admission to its answer: creates are admitted one at a time.
    pub admission: tokio::sync::Mutex<()>,
    /// The most containers the session had, as counted at admissions.
    pub peak: Mutex<u64>,
    /// What the proxy forwards beyond its table (`proxy.allow-foreign`, `proxy.allow`).
    pub policy: crate::config::proxy::ProxyPolicy,
    /// The anonymous volumes recorded for the session, kept in memory as well as in the file: a full
    /// disk must not lose them, and removing one through the proxy is an action on the session's own.
    pub recorded: Mutex<HashSet<String>>,
    /// Why recorded names could not be written to the file, if they could not.
    pub unwritten: Mutex<Option<String>>,
}

impl Shared {
    /// Whether `name` is an anonymous volume the proxy recorded for the session.
    pub(crate) fn recorded_volume(&self, name: &str) -> bool {
        self.recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }
}

/// The unit a client process belongs to: `CLEANTEST_BINARY`/`CLEANTEST_TEST` from its environment or
/// that of its nearest ancestor that has them (the process tree the runner started).
#[derive(Debug, Clone, Default)]
pub(super) struct Unit {
    pub binary: Option<String>,
    pub test: Option<String>,
}

fn attribute(mut pid: i32) -> Unit {
    for _ in 0..32 {
        let env = crate::sys::environ(pid).unwrap_or_default();
        let mut unit = Unit::default();
        for kv in env.split(|b| *b == 0) {
            let Ok(text) = std::str::from_utf8(kv) else {
                continue;
            };
            match text.split_once('=') {
                Some((k, v)) if k == ENV_BINARY => unit.binary = Some(v.to_string()),
                Some((k, v)) if k == ENV_TEST => unit.test = Some(v.to_string()),
                _ => {}
            }
        }
        if unit.binary.is_some() {
            return unit;
        }
        match crate::sys::stat(pid).map(|s| s.ppid) {
            Some(p) if p > 1 => pid = p,
            _ => break,
        }
    }
    Unit::default()
}

/// Serves one client connection to its end; a hijacked one (attach, exec) ends as a raw tunnel.
pub(crate) async fn serve(stream: UnixStream, shared: Arc<Shared>) {
    let unit = stream
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .map(attribute)
        .unwrap_or_default();
    let upstream: UpstreamSlot = Arc::default();
    let hijacked: Arc<Mutex<Option<OnUpgrade>>> = Arc::default();
    let slot = hijacked.clone();
    let service = hyper::service::service_fn(move |req| {
        let (shared, unit, upstream, slot) =
            (shared.clone(), unit.clone(), upstream.clone(), slot.clone());
        Box::pin(
            async move { Ok::<_, Infallible>(handle(req, &shared, &unit, &upstream, &slot).await) },
        )
    });
    // Without shutdown: when hyper is done with the connection (after a 101, or a response that ends
    // it), the raw connection and any bytes already read come back for the tunnel.
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let Ok(parts) = connection.without_shutdown().await else {
        return;
    };
    let pending = hijacked.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(pending) = pending else { return };
    let Ok(up) = pending.await else { return };
    let mut up = TokioIo::new(up);
    let mut down = parts.io.into_inner();
    if !parts.read_buf.is_empty() && up.write_all(&parts.read_buf).await.is_err() {
        return;
    }
    // Copies both ways; when one side half-closes, the other side's write half is shut down and the
    // opposite direction keeps flowing until it ends too (the CLI closes stdin and still reads output).
    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
}

/// Answers a connection past the proxy's limit with a 503 and closes it, without reading more than the
/// engine would need to: the client sees why, at once.
pub(crate) async fn refuse_busy(mut stream: UnixStream, limit: usize) {
    let body = serde_json::json!({
        "message": format!(
            "cleantest proxy: this session already has {limit} connections open to the Docker proxy; \
             close some (a client per test, not per call) before opening more"
        )
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.write_all(answer.as_bytes()),
    )
    .await;
    let _ = stream.shutdown().await;
}

/// A request body the proxy reads to rewrite or check, bounded by `MAX_CREATE_BODY` (413 past it).
async fn read_body(body: Incoming) -> Result<Bytes, Response<ProxyBody>> {
    match http_body_util::Limited::new(body, MAX_CREATE_BODY)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "cleantest proxy: a request body over {} MiB is refused",
                MAX_CREATE_BODY >> 20
            ),
        )),
        Err(e) => Err(error_response(
            StatusCode::BAD_REQUEST,
            &format!("cleantest proxy: reading the request body: {e}"),
        )),
    }
}

/// `bytes` as the request's whole body, its framing headers set to match.
fn buffered(parts: &mut hyper::http::request::Parts, bytes: impl Into<Bytes>) -> ProxyBody {
    let bytes = bytes.into();
    parts.headers.remove(TRANSFER_ENCODING);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// `POST /containers/{id}/attach` and `POST /exec/{id}/start`: the engine hijacks these connections.
fn is_hijack(method: &str, path: &str) -> bool {
    let path = split_version(path).1;
    method == "POST"
        && ((path.starts_with("/containers/") && path.ends_with("/attach"))
            || (path.starts_with("/exec/") && path.ends_with("/start")))
}

type UpstreamSlot = Arc<tokio::sync::Mutex<Option<SendRequest<ProxyBody>>>>;

async fn handle(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    unit: &Unit,
    upstream: &UpstreamSlot,
    hijacked: &Mutex<Option<OnUpgrade>>,
) -> Response<ProxyBody> {
    let hijack = is_hijack(req.method().as_str(), req.uri().path());
    let (mut parts, body) = req.into_parts();
    let checked = match policy::admit(shared, unit, &mut parts).await {
        Ok(checked) => checked,
        Err(refusal) => return *refusal,
    };
    let kind = checked.create;
    let translated = parts
        .uri
        .path_and_query()
        .and_then(|pq| translate_version(pq.as_str(), shared.engine_max.as_deref()));
    if let Some(Ok(uri)) = translated.map(|p| p.parse()) {
        parts.uri = uri;
    }
    // The engine also hijacks without an Upgrade header (answering 200 raw-stream), but a proxy can only
    // take the upstream connection back from a 101: always ask the engine to upgrade.
    let client_upgrade = parts.headers.contains_key(UPGRADE);
    if hijack && !client_upgrade {
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        parts
            .headers
            .insert(UPGRADE, HeaderValue::from_static("tcp"));
    }
    let mut volume_plan = volumes::VolumePlan::default();
    let body: ProxyBody = match kind {
        Some(_) => {
            let bytes = match read_body(body).await {
                Ok(bytes) => bytes,
                Err(refusal) => return refusal,
            };
            let labels = labels_for(shared, unit);
            let merged = merge_labels(&bytes, &labels, SESSION_LABEL, NESTED_LABEL_PREFIX);
            let merged = match merged {
                Ok(new) if kind == Some(Create::Container) => normalized(&new),
                other => other,
            };
            let new = match merged {
                Ok(new) if kind == Some(Create::Container) => {
                    let new = match shared.guard.default_memory {
                        Some(bytes) => guard::with_default_memory(&new, bytes),
                        None => new,
                    };
                    volume_plan = volumes::plan(&new);
                    volume_plan.memory = guard::memory_of(&new);
                    Bytes::from(new)
                }
                Ok(new) => Bytes::from(new),
                Err(refusal) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        &format!("cleantest proxy: {refusal}"),
                    );
                }
            };
            // The body is JSON now even where the client sent none (`docker commit` sends no body
            // and no Content-Type; the engine refuses a body without it).
            parts
                .headers
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            buffered(&mut parts, new)
        }
        None if checked.body_check.is_some() => {
            let bytes = match read_body(body).await {
                Ok(bytes) => bytes,
                Err(refusal) => return refusal,
            };
            if let Err(refusal) = policy::check_body(shared, &checked, &bytes).await {
                return *refusal;
            }
            buffered(&mut parts, bytes)
        }
        None => body.map_err(BoxError::from).boxed(),
    };
    let request = Request::from_parts(parts, body);
    let sent = if kind.is_some() {
        // Sent from a task of its own, which the client going away does not cancel: the engine
        // completes a create it has received anyway, and the end of the session waits for its answer.
        let forwarded = InFlight::forward(shared);
        let slot = upstream.clone();
        let labels = labels_for(shared, unit);
        let is_container = kind == Some(Create::Container);
        let for_task = shared.clone();
        let task = tokio::spawn(async move {
            let answer = create(
                &slot,
                &for_task,
                request,
                volume_plan,
                &labels,
                is_container,
            );
            let answer = answer.await;
            drop(forwarded);
            answer
        });
        task.await.unwrap_or_else(|e| Err(BoxError::from(e)))
    } else {
        send(upstream, &shared.upstream, request)
            .await
            .map(|r| r.map(|b| b.map_err(BoxError::from).boxed()))
    };
    let mut response = match sent {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_GATEWAY,
                &format!("cleantest proxy: engine unreachable: {e}"),
            );
        }
    };
    if let (Some(Create::Container), true, Some(binary)) =
        (kind, response.status().is_success(), &unit.binary)
    {
        shared
            .created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((binary.clone(), unit.test.clone()));
    }
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        *hijacked.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(hyper::upgrade::on(&mut response));
        if !client_upgrade {
            // What the engine itself answers such a client: 200 and the raw stream on this connection.
            // Close-delimited, as the engine's own: no Content-Length (which makes clients stop reading)
            // and no chunking, which HTTP/1.0 framing with a body of unknown length gives.
            let empty =
                futures_util::stream::empty::<Result<hyper::body::Frame<Bytes>, BoxError>>();
            let mut raw = Response::new(http_body_util::StreamBody::new(empty).boxed());
            *raw.version_mut() = hyper::Version::HTTP_10;
            let content_type = response.headers().get(CONTENT_TYPE).cloned();
            raw.headers_mut().insert(
                CONTENT_TYPE,
                content_type.unwrap_or(HeaderValue::from_static(
                    "application/vnd.docker.raw-stream",
                )),
            );
            // Ends hyper's part of the connection, so the tunnel can take it over.
            raw.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return raw;
        }
    }
    response
}

/// Sends a request on this client connection's upstream connection, opening it on first use (or again
/// after the engine closed it).
pub(super) async fn send(
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
pub(super) static REACHED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

pub(super) async fn connect(upstream: &Upstream) -> Result<SendRequest<ProxyBody>, BoxError> {
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
    })
}

pub(crate) fn error_response(status: StatusCode, message: &str) -> Response<ProxyBody> {
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
