//! The session's Docker API proxy: a unix socket in the session's state directory (0600, in a 0700
//! directory; no TCP listener) that every unit gets as `DOCKER_HOST`. It forwards to the real engine and
//! merges `cleantest.session` (and `cleantest.binary`/`cleantest.test` of the calling unit, found from
//! the caller's pid) into the labels of every container, network and volume created through it, so
//! unmodified code — the docker CLI, bollard, testcontainers-rs, docker-compose — is swept with the
//! session.

// The engine client, at the bottom.
mod client;
// Pure rules: what a call is and names, and how it is rewritten.
mod host_config;
mod pin;
mod query;
mod refs;
pub mod rewrite;
pub mod table;
// State, and admission: resolve, check, pin; the guard and the volumes a create makes.
mod guard;
mod in_flight;
mod policy;
mod resolve;
mod shared;
mod volumes;
// Serving, on top.
mod create;
mod forward;
#[cfg(test)]
mod props;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::locked;
use client::Upstream;
pub use guard::{Guard, Limit};
use in_flight::InFlight;
pub use policy::ProxyPolicy;
use shared::Shared;

/// The most client connections the proxy serves at once; each holds two of the runner's descriptors
/// (client and engine side). Past it, a connection gets a 503 saying so and is closed, so a test that
/// opens connections without end cannot take the runner's descriptors from everything else.
const MAX_CONNECTIONS: usize = 1024;

/// How long the accept loop waits after `accept` fails (EMFILE at a low `ulimit -n`).
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// How long stopping the proxy waits for the engine to answer the creates it has already forwarded.
/// Real creates answer in well under a second; a hung engine leaves the session on record instead.
const IN_FLIGHT_BOUND: std::time::Duration = std::time::Duration::from_secs(20);

/// Told the names of the anonymous volumes the proxy records, as it records them: the engine-side
/// reaper needs them too, and cannot read the session's state directory.
#[derive(Clone)]
pub struct VolumeSink(pub Arc<VolumeCallback>);

/// What a `VolumeSink` calls with the names recorded.
pub type VolumeCallback = dyn Fn(&[String]) + Send + Sync;

impl std::fmt::Debug for VolumeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VolumeSink")
    }
}

/// A running proxy; stopped when dropped.
pub struct Proxy {
    socket: PathBuf,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<bool>>,
}

impl Proxy {
    /// Whether the proxy ever connected to the engine.
    pub fn reached_engine(&self) -> bool {
        client::REACHED.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Listens on `socket` and forwards to the engine `DOCKER_HOST` names (or the default socket).
    /// `engine_max` is the engine's maximum API version, when known; `fixed` are labels set on every
    /// resource besides the session's own; `volume_sink`, if any, is told the anonymous volumes recorded.
    pub fn start(
        socket: &Path,
        session: &str,
        fixed: Vec<(String, String)>,
        engine_max: Option<String>,
        volume_sink: Option<VolumeSink>,
        guard: crate::proxy::Guard,
        policy: crate::proxy::ProxyPolicy,
    ) -> Result<Proxy, crate::Error> {
        let upstream = Upstream::from_env()?;
        let _ = std::fs::remove_file(socket);
        let listener = std::os::unix::net::UnixListener::bind(socket)
            .map_err(crate::Error::io(format!("listen on {}", socket.display())))?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
            .map_err(crate::Error::io(format!("restrict {}", socket.display())))?;
        listener
            .set_nonblocking(true)
            .map_err(crate::Error::io(format!("listen on {}", socket.display())))?;
        let shared = Arc::new(Shared {
            upstream,
            engine_max,
            session: session.to_string(),
            fixed,
            created: Mutex::default(),
            in_flight: Arc::new(InFlight::new(
                socket.with_file_name(cleantest_contract::CREATES_IN_FLIGHT_FILE),
            )),
            anonymous_volumes: socket.with_file_name(cleantest_contract::ANONYMOUS_VOLUMES_FILE),
            volume_sink,
            image_volumes: Mutex::default(),
            guard,
            admission: tokio::sync::Mutex::default(),
            peak: Mutex::default(),
            policy,
            recorded: Mutex::default(),
            unwritten: Mutex::default(),
        });
        let (shutdown, mut stop) = tokio::sync::oneshot::channel::<()>();
        let for_thread = shared.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(crate::Error::io("start the proxy's runtime"))?;
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let thread = std::thread::Builder::new()
            .name("docker-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::UnixListener::from_std(listener) else {
                        return true;
                    };
                    loop {
                        tokio::select! {
                            accepted = listener.accept() => match accepted {
                                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                                    Ok(slot) => {
                                        let shared = for_thread.clone();
                                        tokio::spawn(async move {
                                            forward::serve(stream, shared).await;
                                            drop(slot);
                                        });
                                    }
                                    Err(_) => {
                                        tokio::spawn(forward::refuse_busy(stream, MAX_CONNECTIONS));
                                    }
                                },
                                // Out of descriptors (EMFILE) or a transient error: the pending
                                // connection stays queued and accept fails again at once, so wait a
                                // little instead of spinning, and let open connections finish.
                                Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
                            },
                            _ = &mut stop => break,
                        }
                    }
                    // Accepting has stopped; what the engine was already asked to create must be
                    // answered before the sweep lists, or it appears after it.
                    drop(listener);
                    for_thread.in_flight.settle(IN_FLIGHT_BOUND).await
                })
            })
            .map_err(crate::Error::io("start the proxy's thread"))?;
        Ok(Proxy {
            socket: socket.to_path_buf(),
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The most containers the session had at a create's admission (0 when the guard is off).
    pub fn peak_containers(&self) -> u64 {
        *locked(&self.shared.peak)
    }

    /// The anonymous volumes recorded for the session (the file may have missed some: `unwritten`).
    pub fn recorded_volumes(&self) -> Vec<String> {
        let recorded = locked(&self.shared.recorded);
        recorded.iter().cloned().collect()
    }

    /// Why some recorded volumes could not be written to the session's file, if so.
    pub fn unwritten(&self) -> Option<String> {
        locked(&self.shared.unwritten).clone()
    }

    /// `unix://<socket>`, the `DOCKER_HOST` units get.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Whether the unit created a container through the proxy (only those are checked for leaks).
    pub fn created_by(&self, binary: &str, test: Option<&str>) -> bool {
        let created = locked(&self.shared.created);
        created
            .iter()
            .any(|(b, t)| b == binary && (test.is_none() || t.as_deref() == test))
    }

    /// Stops accepting, waits (bounded) for the answers to the creates already forwarded, and stops.
    /// True when no create can still complete; false when the engine did not answer them all in time.
    pub fn stop(mut self) -> bool {
        self.halt()
    }

    fn halt(&mut self) -> bool {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let settled = match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(false),
            None => true,
        };
        let _ = std::fs::remove_file(&self.socket);
        settled
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.halt();
    }
}
