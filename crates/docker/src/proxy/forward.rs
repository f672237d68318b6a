//! One client connection of the proxy: an HTTP/1 server (hyper) for the client, one upstream connection
//! to the real engine for the same lifetime (so keep-alive stays 1:1), requests and responses streamed
//! through unbuffered except the bodies admission reads (`policy`) and creates (`create`), and hijacked connections
//! (attach, exec; both the `101 Upgrade` form and the `200 raw-stream` form) turned into a raw tunnel
//! that passes half-closes on in each direction.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use super::client::{BoxError, ProxyBody, UpstreamSlot, buffered, error_response, send};
use super::create;
use super::policy::{self, Outgoing};
use super::rewrite::{split_version, translate_version};
use super::shared::{Shared, Unit, unit_of};
use super::table::Create;
use crate::locked;

/// Serves one client connection to its end; a hijacked one (attach, exec) ends as a raw tunnel.
pub async fn serve(stream: UnixStream, shared: Arc<Shared>) {
    let unit = stream
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .map(unit_of)
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
    let pending = locked(&hijacked).take();
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
pub async fn refuse_busy(mut stream: UnixStream, limit: usize) {
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

/// `POST /containers/{id}/attach` and `POST /exec/{id}/start`: the engine hijacks these connections.
fn is_hijack(method: &str, path: &str) -> bool {
    let path = split_version(path).1;
    method == "POST"
        && ((path.starts_with("/containers/") && path.ends_with("/attach"))
            || (path.starts_with("/exec/") && path.ends_with("/start")))
}

async fn handle(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    unit: &Unit,
    upstream: &UpstreamSlot,
    hijacked: &Mutex<Option<OnUpgrade>>,
) -> Response<ProxyBody> {
    let hijack = is_hijack(req.method().as_str(), req.uri().path());
    let (mut parts, body) = req.into_parts();
    let admitted = match policy::admit(shared, unit, &mut parts, body).await {
        Ok(admitted) => admitted,
        Err(refusal) => return *refusal,
    };
    let kind = admitted.create;
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
    let sent = match (kind, admitted.body) {
        (Some(kind), Outgoing::Read(bytes)) => {
            match create::forward(shared, unit, upstream, parts, kind, &bytes).await {
                Ok(sent) => sent,
                Err(refusal) => return refusal,
            }
        }
        (_, body) => {
            let body = match body {
                Outgoing::Read(bytes) => buffered(&mut parts, bytes),
                Outgoing::Stream(body) => body.map_err(BoxError::from).boxed(),
            };
            send(upstream, &shared.upstream, Request::from_parts(parts, body))
                .await
                .map(|r| r.map(|b| b.map_err(BoxError::from).boxed()))
        }
    };
    let mut response = match sent {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "cleantest proxy: engine unreachable: {}",
                    super::client::with_causes(e.as_ref())
                ),
            );
        }
    };
    if let (Some(Create::Container), true, Some(binary)) =
        (kind, response.status().is_success(), &unit.binary)
    {
        locked(&shared.created).insert((binary.clone(), unit.test.clone()));
    }
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        *locked(hijacked) = Some(hyper::upgrade::on(&mut response));
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
