//! The sweep: find what carries a label filter, then remove it within a time bound — containers (with
//! their anonymous volumes) concurrently with a bounded fan-out, and each network (foreign endpoints
//! force-disconnected) or volume as soon as the containers of the sweep that use it are gone (the order
//! is `plan`'s). Only resources matching the filter are ever touched: never a name pattern, never a
//! prune.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerSummary, NetworkDisconnectRequest};
use bollard::query_parameters::{
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptions,
};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

use super::engine::Engine;
use super::error::Error;
use super::plan::{Plan, Released};
use super::resource::{Kind, Resource};

/// Concurrent container removals. The engine, not the client, is the limit: on a 2-core machine the
/// sweep of 100 containers over 10 networks took 6.1–6.7 s at 4, 5.2–5.6 s at 8, 5.1–5.4 s at 12,
/// 5.4–5.6 s at 16 and 6.1–6.6 s at 24 (three runs each).
const FAN_OUT: usize = 8;
/// Retries of a removal that conflicts (409), or a network with endpoints (403).
const RETRY_DELAYS_MS: [u64; 6] = [50, 100, 200, 400, 800, 1600];
/// How long a network may be refused for active endpoints while none is attached before the sweep
/// calls its endpoint count stale. Once the removals of its containers have returned, dockerd has
/// released their endpoints, so a refusal that outlasts this is not going to clear.
const STALE_COUNT_AFTER: Duration = Duration::from_secs(2);

/// What a removal could not do.
#[derive(Debug)]
pub struct Failure {
    pub resource: Resource,
    /// What the engine (or the connection) said: `Error::status` tells a 404 from a timeout.
    pub error: Error,
}

/// The result of removing a set of resources.
#[derive(Debug, Default)]
pub struct Removal {
    pub containers: usize,
    pub networks: usize,
    pub volumes: usize,
    /// Images the session built or committed (named only when there were some).
    pub images: usize,
    pub failures: Vec<Failure>,
    pub elapsed: Duration,
}

impl Removal {
    /// Adds another removal's counts, failures and time to this one.
    pub fn absorb(&mut self, other: Removal) {
        self.containers += other.containers;
        self.networks += other.networks;
        self.volumes += other.volumes;
        self.images += other.images;
        self.failures.extend(other.failures);
        self.elapsed += other.elapsed;
    }

    /// Whether anything at all was removed (an image alone counts).
    pub fn removed_any(&self) -> bool {
        self.containers + self.networks + self.volumes + self.images > 0
    }

    /// `swept 12 containers, 2 networks, 3 volumes in 0.41s` (`, 1 image` when there were images)
    pub fn line(&self) -> String {
        let images = match self.images {
            0 => String::new(),
            n => format!(", {n} image{}", plural(n)),
        };
        format!(
            "swept {} container{}, {} network{}, {} volume{}{images} in {:.2}s",
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
/// (`key` or `key=value`; several are ANDed by the engine). The three listings go out together.
pub async fn find(engine: &Engine, filter: &[String]) -> Result<Vec<Resource>, DockerError> {
    let filters: HashMap<String, Vec<String>> =
        HashMap::from([("label".to_string(), filter.to_vec())]);
    let docker = &engine.docker;
    let (containers, networks, volumes, images) = tokio::try_join!(
        docker.list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        )),
        docker.list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        )),
        docker.list_volumes(Some(
            ListVolumesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        )),
        super::images::list(engine, &filters),
    )?;
    Ok(out_of(containers, networks, volumes, images))
}

/// The listings as resources, containers first.
fn out_of(
    containers: Vec<ContainerSummary>,
    networks: Vec<bollard::models::Network>,
    volumes: bollard::models::VolumeListResponse,
    images: Vec<Resource>,
) -> Vec<Resource> {
    let mut out: Vec<Resource> = containers.into_iter().map(container).collect();
    out.extend(networks.into_iter().map(|n| Resource {
        kind: Kind::Network,
        id: n.id.unwrap_or_default(),
        name: n.name.unwrap_or_default(),
        labels: n.labels.unwrap_or_default(),
        created: n.created.map(|t| t.unix_timestamp()),
        ..Resource::default()
    }));
    out.extend(
        volumes
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| Resource {
                kind: Kind::Volume,
                id: v.name.clone(),
                name: v.name,
                labels: v.labels,
                created: v.created_at.map(|t| t.unix_timestamp()),
                ..Resource::default()
            }),
    );
    out.extend(images);
    out
}

fn container(c: ContainerSummary) -> Resource {
    // The engine lists a published port once per address family (0.0.0.0 and ::): show it once.
    let mut ports: Vec<String> = c
        .ports
        .unwrap_or_default()
        .iter()
        .filter_map(|p| Some(format!("{}->{}", p.public_port?, p.private_port)))
        .collect();
    ports.sort();
    ports.dedup();
    let ports = ports.join(",");
    // A created container's endpoints do not exist yet: its networks have a name but no id.
    let networks = c
        .network_settings
        .and_then(|s| s.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, endpoint)| {
            endpoint
                .network_id
                .filter(|id| !id.is_empty())
                .unwrap_or(name)
        })
        .collect();
    let volumes = c
        .mounts
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.typ.as_deref() == Some("volume"))
        .filter_map(|m| m.name)
        .collect();
    Resource {
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
        networks,
        volumes,
    }
}

/// Removes `resources`, giving up at `deadline`: up to `FAN_OUT` containers at a time in `plan`'s
/// order, and alongside them each network or volume once the containers using it are gone.
pub async fn remove(engine: &Engine, resources: &[Resource], deadline: Instant) -> Removal {
    let started = Instant::now();
    let mut plan = Plan::new(resources);
    let swept: HashSet<&str> = resources
        .iter()
        .filter(|r| r.kind == Kind::Container)
        .map(|r| r.id.as_str())
        .collect();
    let (release, released) = mpsc::unbounded_channel::<Released>();
    for r in plan.take_ready() {
        let _ = release.send(r);
    }
    let remove_containers = async move {
        let mut in_flight = FuturesUnordered::new();
        let mut results = Vec::new();
        loop {
            while in_flight.len() < FAN_OUT {
                let Some(c) = plan.next_container() else {
                    break;
                };
                in_flight.push(async move { (c, remove_container(engine, &c.id, deadline).await) });
            }
            // Nothing in flight and nothing handed out: every container is done.
            let Some((c, result)) = in_flight.next().await else {
                break;
            };
            for r in plan.container_done(&c.id, result.is_ok()) {
                let _ = release.send(r);
            }
            results.push((c.clone(), result));
        }
        // `release` drops here: the other lane ends once it has removed what was released.
        results
    };
    let remove_others = async {
        let mut released = released;
        let mut results = Vec::new();
        while let Some(r) = released.recv().await {
            results.push((
                r.resource.clone(),
                remove_other(engine, r, &swept, deadline).await,
            ));
        }
        results
    };
    let (containers, others) = tokio::join!(remove_containers, remove_others);
    let mut removal = Removal::default();
    tally(&mut removal, containers);
    tally(&mut removal, others);
    removal.elapsed = started.elapsed();
    removal
}

async fn remove_other(
    engine: &Engine,
    released: Released<'_>,
    swept: &HashSet<&str>,
    deadline: Instant,
) -> Result<(), Error> {
    // Its users failed to go: the engine refuses until they do, so one attempt, no retries.
    let deadline = if released.users_removed {
        deadline
    } else {
        Instant::now()
    };
    let resource = released.resource;
    let result = match resource.kind {
        Kind::Network => remove_network(engine, &resource.id, swept, deadline).await,
        Kind::Volume => remove_volume(engine, &resource.id, swept, deadline).await,
        Kind::Image => super::images::remove(engine, &resource.id).await,
        Kind::Container => Ok(()),
    };
    result.map_err(|e| {
        if released.users_removed {
            e
        } else {
            Error::InUse {
                source: Box::new(e),
            }
        }
    })
}

fn tally(removal: &mut Removal, results: Vec<(Resource, Result<(), Error>)>) {
    for (resource, result) in results {
        match result {
            Ok(()) => match resource.kind {
                Kind::Container => removal.containers += 1,
                Kind::Network => removal.networks += 1,
                Kind::Volume => removal.volumes += 1,
                Kind::Image => removal.images += 1,
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

/// What one removal attempt came to.
enum Step {
    Done,
    /// Worth another attempt after a pause.
    Again(Error),
    /// Not worth another attempt.
    Stop(Error),
}

impl Step {
    /// 404 is gone; 409 (removal in progress, volume in use), 500 and connection trouble (the daemon
    /// may be restarting) may clear; so may 403 (a network's endpoints) when `endpoints_may_go`.
    fn of(result: Result<(), DockerError>, endpoints_may_go: bool) -> Step {
        let error = match result {
            Ok(()) => return Step::Done,
            Err(e) if status(&e) == Some(404) => return Step::Done,
            Err(e) => e,
        };
        match status(&error) {
            Some(409) | Some(500) | None => Step::Again(Error::engine("")(error)),
            Some(403) if endpoints_may_go => Step::Again(Error::engine("")(error)),
            _ => Step::Stop(Error::engine("")(error)),
        }
    }
}

/// Repeats `attempt` with backoff while it says `Again`, until `deadline`.
async fn retry<F, Fut>(deadline: Instant, mut attempt: F) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Step>,
{
    let mut delays = RETRY_DELAYS_MS.iter().chain(std::iter::repeat(&2000));
    loop {
        let error = match attempt().await {
            Step::Done => return Ok(()),
            Step::Stop(error) => return Err(error),
            Step::Again(error) => error,
        };
        let delay = Duration::from_millis(*delays.next().expect("infinite"));
        if Instant::now() + delay > deadline {
            return Err(error);
        }
        tokio::time::sleep(delay).await;
    }
}

async fn remove_container(engine: &Engine, id: &str, deadline: Instant) -> Result<(), Error> {
    if engine.podman {
        // Podman's force-remove sends SIGTERM and waits the stop timeout; SIGKILL first makes it immediate.
        let kill = KillContainerOptionsBuilder::default()
            .signal("KILL")
            .build();
        let _ = engine.docker.kill_container(id, Some(kill)).await;
    }
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    retry(deadline, || async {
        Step::of(
            engine
                .docker
                .remove_container(id, Some(options.clone()))
                .await,
            false,
        )
    })
    .await
}

async fn remove_network(
    engine: &Engine,
    id: &str,
    swept: &HashSet<&str>,
    deadline: Instant,
) -> Result<(), Error> {
    // Endpoints of containers outside the sweep are disconnected, never their containers removed.
    // Containers of the sweep are never disconnected: see `plan` for why.
    if let Some(attached) = attached_containers(engine, id).await {
        for container in attached.into_iter().filter(|c| !swept.contains(c.as_str())) {
            let request = NetworkDisconnectRequest {
                container,
                force: Some(true),
            };
            let _ = engine.docker.disconnect_network(id, request).await;
        }
    }
    let empty_since = Cell::new(None::<Instant>);
    retry(deadline, || async {
        let result = engine.docker.remove_network(id).await;
        let refused = matches!(&result, Err(e) if status(e) == Some(403));
        if !refused || attached_containers(engine, id).await != Some(Vec::new()) {
            empty_since.set(None);
            return Step::of(result, true);
        }
        // Refused for endpoints while none is attached: dockerd's endpoint count may be stale.
        let since = empty_since.get().unwrap_or_else(Instant::now);
        empty_since.set(Some(since));
        if since.elapsed() < STALE_COUNT_AFTER {
            return Step::of(result, true);
        }
        Step::Stop(Error::said(
            "dockerd refuses it for active endpoints, yet none is attached: dockerd's endpoint \
             count for it is stale (a dockerd bug, moby/moby#43286), and only a dockerd restart \
             clears it; after one, run the retry command",
        ))
    })
    .await
}

/// The containers the engine lists on a network, or `None` if it cannot be inspected.
async fn attached_containers(engine: &Engine, id: &str) -> Option<Vec<String>> {
    let inspect = engine.docker.inspect_network(id, None).await.ok()?;
    Some(inspect.containers.unwrap_or_default().into_keys().collect())
}

/// Removes a volume. The engine refuses one in use (409) for as long as a container uses it: one of
/// the sweep's may still be going, so that is retried, but a container outside the sweep is not going
/// to go, and is named at once rather than waited for until the deadline (60 s, on every later sweep).
async fn remove_volume(
    engine: &Engine,
    name: &str,
    swept: &HashSet<&str>,
    deadline: Instant,
) -> Result<(), Error> {
    let unused_since = Cell::new(None::<Instant>);
    retry(deadline, || async {
        let result = engine
            .docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await;
        if !matches!(&result, Err(e) if status(e) == Some(409)) {
            return Step::of(result, false);
        }
        let Some(users) = volume_users(engine, name).await else {
            return Step::of(result, false);
        };
        let foreign: Vec<&(String, String)> = users
            .iter()
            .filter(|(id, _)| !swept.contains(id.as_str()))
            .collect();
        if !foreign.is_empty() {
            let named: Vec<String> = foreign
                .iter()
                .map(|(id, name)| format!("{name} ({})", &id[..id.len().min(12)]))
                .collect();
            return Step::Stop(Error::said(format!(
                "it is in use by container(s) outside this session: {}; remove or stop using them \
                 (they are not ours to remove), then run the retry command",
                named.join(", ")
            )));
        }
        if !users.is_empty() {
            unused_since.set(None);
            return Step::of(result, false);
        }
        // Refused as in use while no container uses it: give the engine a moment, not the deadline.
        let since = unused_since.get().unwrap_or_else(Instant::now);
        unused_since.set(Some(since));
        if since.elapsed() < STALE_COUNT_AFTER {
            return Step::of(result, false);
        }
        Step::Stop(Error::said(format!(
            "the engine refuses it as in use, yet lists no container using it: {}",
            result.err().map(|e| e.to_string()).unwrap_or_default()
        )))
    })
    .await
}

/// The containers (id, name) the engine lists as using a volume, in any state, or `None` if it cannot
/// list them.
async fn volume_users(engine: &Engine, name: &str) -> Option<Vec<(String, String)>> {
    let filters: HashMap<String, Vec<String>> =
        HashMap::from([("volume".to_string(), vec![name.to_string()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let listed = engine.docker.list_containers(Some(options)).await.ok()?;
    Some(
        listed
            .into_iter()
            .map(|c| {
                let r = container(c);
                (r.id, r.name)
            })
            .collect(),
    )
}

/// The command a user can run to retry what could not be removed.
pub fn retry_command(failure: &Failure) -> String {
    match failure.resource.kind {
        Kind::Container => format!("docker rm -f -v {}", failure.resource.id),
        Kind::Network => format!("docker network rm {}", failure.resource.id),
        Kind::Volume => format!("docker volume rm {}", failure.resource.id),
        Kind::Image => format!("docker rmi {}", failure.resource.id),
    }
}

#[cfg(test)]
#[path = "sweep_tests.rs"]
mod tests;
