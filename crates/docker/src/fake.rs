//! A fake Docker engine for unit tests of the sweep's fault handling (daemon errors, slow or refused
//! removals): a unix socket answering whatever each test's handler says, and a log of every request
//! as it arrived and as it was answered. Everything else is tested against the real engine.

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::engine::Engine;

/// A handler's answer: status and JSON body, possibly after waiting for something.
pub type Answer = Pin<Box<dyn Future<Output = (u16, String)> + Send>>;

/// Requests in order: `METHOD /path` when one arrives, `METHOD /path -> STATUS` when it is answered.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Where `line` first appears.
    pub fn at(&self, line: &str) -> usize {
        let lines = self.lines();
        lines
            .iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("{line:?} not in {lines:#?}"))
    }

    pub fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|l| *l == line).count()
    }
}

pub struct FakeEngine {
    pub engine: Engine,
    pub log: Log,
    dir: PathBuf,
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl FakeEngine {
    /// Serves `handler(method, path without the version prefix, body)` on a socket of its own. Must be
    /// called inside a tokio runtime, which serves it.
    pub fn start(
        handler: impl Fn(&str, &str, &str) -> Answer + Send + Sync + 'static,
    ) -> FakeEngine {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ct-fake-engine-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let log = Log::default();
        let handler = Arc::new(handler);
        let served = log.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, handler) = (served.clone(), handler.clone());
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (log, handler) = (log.clone(), handler.clone());
                    async move {
                        let method = request.method().to_string();
                        let path = without_version(request.uri().path()).to_string();
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        log.push(format!("{method} {path}"));
                        let (status, json) =
                            handler(&method, &path, &String::from_utf8_lossy(&body)).await;
                        log.push(format!("{method} {path} -> {status}"));
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(json)))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        let docker =
            Docker::connect_with_unix(socket.to_str().unwrap(), 10, bollard::API_DEFAULT_VERSION)
                .unwrap();
        FakeEngine {
            engine: Engine {
                docker,
                podman: false,
                api_version: None,
                vm: None,
                memory_total: None,
            },
            log,
            dir,
        }
    }
}

/// `/v1.41/networks/x` → `/networks/x`.
fn without_version(path: &str) -> &str {
    match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.find('/').map_or(path, |slash| &rest[slash..])
        }
        _ => path,
    }
}

/// An answer given at once.
pub fn now(status: u16, json: &str) -> Answer {
    let json = json.to_string();
    Box::pin(async move { (status, json) })
}
