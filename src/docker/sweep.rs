//! The sweep: find what carries a label filter, then remove it — containers (with their anonymous
//! volumes) concurrently with a bounded fan-out, then networks (foreign endpoints force-disconnected),
//! then volumes — within a time bound. Only resources matching the filter are ever touched: never a
//! name pattern, never a prune.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::errors::Error as DockerError;
use bollard::models::NetworkDisconnectRequest;
use bollard::query_parameters::{
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptions,
};
use std::collections::HashSet;

use futures_util::stream::{self, StreamExt};

use super::engine::Engine;

/// Concurrent container removals: the engine, not the client, is the limit on a 2-core machine
/// (8 measured fastest; 16 or 32 were no faster).
const FAN_OUT: usize = 8;
/// Retries of a removal that conflicts (409), or a network with endpoints (403).
const RETRY_DELAYS_MS: [u64; 6] = [50, 100, 200, 400, 800, 1600];

/// One resource found by a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resource {
    pub kind: Kind,
    pub id: String,
    pub name: String,
    pub labels: HashMap<String, String>,
    /// Seconds since the epoch, when the engine says.
    pub created: Option<i64>,
    /// Containers: image, state and published ports, for the kept table.
    pub image: String,
    pub state: String,
    pub ports: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Container,
    Network,
    Volume,
}

impl Kind {
    pub(crate) fn word(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Network => "network",
            Kind::Volume => "volume",
        }
    }
}

/// What a removal could not do.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub resource: Resource,
    pub error: String,
}

/// The result of removing a set of resources.
#[derive(Debug, Default)]
pub(crate) struct Removal {
    pub containers: usize,
    pub networks: usize,
    pub volumes: usize,
    pub failures: Vec<Failure>,
    pub elapsed: Duration,
}

impl Removal {
    /// `swept 12 containers, 2 networks, 3 volumes in 0.41s`
    pub(crate) fn line(&self) -> String {
        format!(
            "swept {} container{}, {} network{}, {} volume{} in {:.2}s",
            self.containers,
            plural(self.containers),
            self.networks,
            plural(self.networks),
            self.volumes,
            plural(self.volumes),
            self.elapsed.as_secs_f64()
        )
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Lists containers (all states), networks and volumes carrying every label of `filter`
/// (`key` or `key=value`; several are ANDed by the engine).
pub(crate) async fn find(engine: &Engine, filter: &[String]) -> Result<Vec<Resource>, DockerError> {
    let filters: HashMap<String, Vec<String>> =
        HashMap::from([("label".to_string(), filter.to_vec())]);
    let docker = &engine.docker;
    let mut out = Vec::new();
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await?;
    for c in containers {
        let ports = c
            .ports
            .unwrap_or_default()
            .iter()
            .filter_map(|p| Some(format!("{}->{}", p.public_port?, p.private_port)))
            .collect::<Vec<_>>()
            .join(",");
        out.push(Resource {
            kind: Kind::Container,
            id: c.id.unwrap_or_default(),
            name: c
                .names
                .unwrap_or_default()
                .first()
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            labels: c.labels.unwrap_or_default(),
            created: c.created,
            image: c.image.unwrap_or_default(),
            state: c.state.map(|s| s.to_string()).unwrap_or_default(),
            ports,
        });
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await?;
    for n in networks {
        out.push(Resource {
            kind: Kind::Network,
            id: n.id.unwrap_or_default(),
            name: n.name.unwrap_or_default(),
            labels: n.labels.unwrap_or_default(),
            created: n.created.map(|t| t.unix_timestamp()),
            image: String::new(),
            state: String::new(),
            ports: String::new(),
        });
    }
    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await?;
    for v in volumes.volumes.unwrap_or_default() {
        out.push(Resource {
            kind: Kind::Volume,
            id: v.name.clone(),
            name: v.name,
            labels: v.labels,
            created: v.created_at.map(|t| t.unix_timestamp()),
            image: String::new(),
            state: String::new(),
            ports: String::new(),
        });
    }
    Ok(out)
}

/// Removes `resources` (containers first, then networks, then volumes), giving up at `deadline`.
pub(crate) async fn remove(engine: &Engine, resources: &[Resource], deadline: Instant) -> Removal {
    let started = Instant::now();
    let mut removal = Removal::default();
    let of = |kind| resources.iter().filter(move |r| r.kind == kind);
    let results: Vec<(Resource, Result<(), String>)> = stream::iter(of(Kind::Container))
        .map(|r| async move { (r.clone(), remove_container(engine, &r.id, deadline).await) })
        .buffer_unordered(FAN_OUT)
        .collect()
        .await;
    tally(&mut removal, results);
    let swept: HashSet<&str> = of(Kind::Container).map(|c| c.id.as_str()).collect();
    let mut network_results = Vec::new();
    for network in of(Kind::Network) {
        network_results.push((
            network.clone(),
            remove_network(engine, &network.id, &swept, deadline).await,
        ));
    }
    tally(&mut removal, network_results);
    let volume_results: Vec<(Resource, Result<(), String>)> = stream::iter(of(Kind::Volume))
        .map(|r| async move { (r.clone(), remove_volume(engine, &r.id, deadline).await) })
        .buffer_unordered(FAN_OUT)
        .collect()
        .await;
    tally(&mut removal, volume_results);
    removal.elapsed = started.elapsed();
    removal
}

fn tally(removal: &mut Removal, results: Vec<(Resource, Result<(), String>)>) {
    for (resource, result) in results {
        match result {
            Ok(()) => match resource.kind {
                Kind::Container => removal.containers += 1,
                Kind::Network => removal.networks += 1,
                Kind::Volume => removal.volumes += 1,
            },
            Err(error) => removal.failures.push(Failure { resource, error }),
        }
    }
}

fn status(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Retries `attempt` on 409 (and 403 when `retry_forbidden`) with backoff until `deadline`; 404 is gone.
async fn with_retries<F, Fut>(
    deadline: Instant,
    retry_forbidden: bool,
    mut attempt: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), DockerError>>,
{
    let mut delays = RETRY_DELAYS_MS.iter().chain(std::iter::repeat(&2000));
    loop {
        let error = match attempt().await {
            Ok(()) => return Ok(()),
            Err(e) if status(&e) == Some(404) => return Ok(()),
            Err(e) => e,
        };
        let retryable = match status(&error) {
            Some(409) | Some(500) => true,
            Some(403) => retry_forbidden,
            None => true, // connection trouble: the daemon may be restarting
            _ => false,
        };
        let delay = Duration::from_millis(*delays.next().expect("infinite"));
        if !retryable || Instant::now() + delay > deadline {
            return Err(error.to_string());
        }
        tokio::time::sleep(delay).await;
    }
}

async fn remove_container(engine: &Engine, id: &str, deadline: Instant) -> Result<(), String> {
    if engine.podman {
        // Podman's force-remove sends SIGTERM and waits the stop timeout; SIGKILL first makes it immediate.
        let kill = KillContainerOptionsBuilder::default()
            .signal("KILL")
            .build();
        let _ = engine.docker.kill_container(id, Some(kill)).await;
    }
    with_retries(deadline, false, || {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        engine.docker.remove_container(id, Some(options))
    })
    .await
}

async fn remove_network(
    engine: &Engine,
    id: &str,
    swept: &HashSet<&str>,
    deadline: Instant,
) -> Result<(), String> {
    // Endpoints left on the network belong to containers outside the sweep: disconnect, never remove them.
    // Containers of the sweep are not disconnected: their removal releases their endpoints, and forcing
    // a disconnect while the engine is still releasing one has left dockerd 20.10 with a stale endpoint
    // that only a daemon restart clears.
    if let Ok(inspect) = engine.docker.inspect_network(id, None).await {
        for container in inspect.containers.unwrap_or_default().into_keys() {
            if swept.contains(container.as_str()) {
                continue;
            }
            let request = NetworkDisconnectRequest {
                container,
                force: Some(true),
            };
            let _ = engine.docker.disconnect_network(id, request).await;
        }
    }
    with_retries(deadline, true, || engine.docker.remove_network(id)).await
}

async fn remove_volume(engine: &Engine, name: &str, deadline: Instant) -> Result<(), String> {
    with_retries(deadline, false, || {
        engine
            .docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
    })
    .await
}

/// The command a user can run to retry what could not be removed.
pub(crate) fn retry_command(failure: &Failure) -> String {
    match failure.resource.kind {
        Kind::Container => format!("docker rm -f -v {}", failure.resource.id),
        Kind::Network => format!("docker network rm {}", failure.resource.id),
        Kind::Volume => format!("docker volume rm {}", failure.resource.id),
    }
}
