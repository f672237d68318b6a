//! Containers the runner starts itself (session services): a user-defined network, a container created
//! from a `ContainerSpec` and started, its published ports, its state, a command run in it, its log.
//! Labels and names are the caller's; this module knows nothing of sessions or of the config file.
//! Every call is bounded by the client's request timeout.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
    PortBinding,
};
use bollard::query_parameters::{CreateImageOptionsBuilder, LogsOptionsBuilder};
use futures_util::StreamExt;

use super::error::within;
use super::{Engine, Error, block_on};

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// The container's name (`cleantest-<session>-<service>`), so `docker ps` says whose it is.
    pub name: Option<String>,
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    /// Container ports (tcp) to publish on `publish_ip`, each at a free host port.
    pub ports: Vec<u16>,
    /// The host IP ports are published on (`context::published_at`).
    pub publish_ip: String,
    pub labels: Vec<(String, String)>,
    /// The network to join, and the alias to be known by on it.
    pub network: String,
    pub alias: String,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    /// `PATH[:OPTIONS]` (`/data:size=64m,mode=1777`).
    pub tmpfs: Vec<String>,
    /// Container port → a fixed host port (others get a free one).
    pub fixed_ports: BTreeMap<u16, u16>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    /// Bytes of `/dev/shm`.
    pub shm_size: Option<u64>,
    /// `SOURCE:TARGET[:ro]`: named volumes and host paths.
    pub binds: Vec<String>,
    /// Targets of anonymous volumes.
    pub anonymous: Vec<String>,
}

/// A container's state, as far as the runner cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Running, with the pid of its init on the engine's host.
    Running {
        pid: i64,
    },
    Exited {
        code: i64,
        oom_killed: bool,
    },
    Gone,
}

/// Creates a network with these labels; returns its id.
pub fn create_network(
    engine: &Engine,
    name: &str,
    labels: &[(String, String)],
) -> Result<String, Error> {
    let request = NetworkCreateRequest {
        name: name.to_string(),
        labels: Some(labels.iter().cloned().collect()),
        ..NetworkCreateRequest::default()
    };
    block_on(engine.docker.create_network(request))
        .map(|r| r.id)
        .map_err(Error::engine(format!("create the network {name}")))
}

/// Whether a network of this name exists.
pub fn network_exists(engine: &Engine, name: &str) -> bool {
    block_on(engine.docker.inspect_network(
        name,
        None::<bollard::query_parameters::InspectNetworkOptions>,
    ))
    .is_ok()
}

/// Creates a volume with these labels (an existing one of that name is fine: the caller names it).
pub fn create_volume(
    engine: &Engine,
    name: &str,
    labels: &[(String, String)],
) -> Result<(), Error> {
    let request = bollard::models::VolumeCreateRequest {
        name: Some(name.to_string()),
        labels: Some(labels.iter().cloned().collect()),
        ..Default::default()
    };
    block_on(engine.docker.create_volume(request))
        .map(|_| ())
        .map_err(Error::engine(format!("create the volume {name}")))
}

/// Whether the engine has `image`; if not, one pull is tried, bounded (no registry may be reachable).
pub fn ensure_image(engine: &Engine, image: &str, bound: Duration) -> Result<(), Error> {
    if block_on(engine.docker.inspect_image(image)).is_ok() {
        return Ok(());
    }
    let options = CreateImageOptionsBuilder::default()
        .from_image(image)
        .build();
    let pulled = block_on(async {
        within(bound, "answer", async {
            let mut progress = engine.docker.create_image(Some(options), None, None);
            while let Some(step) = progress.next().await {
                let step = step.map_err(Error::engine(""))?;
                if let Some(said) = step.error_detail.and_then(|d| d.message) {
                    return Err(Error::said(said));
                }
            }
            Ok(())
        })
        .await
    });
    pulled.map_err(|e| Error::NoImage {
        image: image.to_string(),
        source: Box::new(e),
    })
}

/// Creates and starts a container; returns its id. A container created and not started is removed.
pub fn run(engine: &Engine, spec: &ContainerSpec) -> Result<String, Error> {
    let port_key = |p: &u16| format!("{p}/tcp");
    let bindings = spec
        .ports
        .iter()
        .map(|p| {
            let binding = PortBinding {
                host_ip: Some(spec.publish_ip.clone()),
                host_port: Some(
                    spec.fixed_ports
                        .get(p)
                        .map_or(String::new(), u16::to_string),
                ),
            };
            (port_key(p), Some(vec![binding]))
        })
        .collect();
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.entrypoint.clone(),
        cmd: spec.cmd.clone(),
        env: Some(spec.env.clone()),
        labels: Some(spec.labels.iter().cloned().collect()),
        exposed_ports: Some(spec.ports.iter().map(port_key).collect()),
        volumes: Some(spec.anonymous.clone()),
        user: spec.user.clone(),
        working_dir: spec.working_dir.clone(),
        host_config: Some(HostConfig {
            shm_size: spec.shm_size.map(|b| b as i64),
            port_bindings: Some(bindings),
            network_mode: Some(spec.network.clone()),
            memory: spec.memory.map(|m| m as i64),
            nano_cpus: spec.cpus.map(|c| (c * 1e9) as i64),
            tmpfs: Some(
                spec.tmpfs
                    .iter()
                    .map(|t| match t.split_once(':') {
                        Some((path, options)) => (path.to_string(), options.to_string()),
                        None => (t.clone(), String::new()),
                    })
                    .collect(),
            ),
            binds: Some(spec.binds.clone()),
            ..HostConfig::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                spec.network.clone(),
                EndpointSettings {
                    aliases: Some(vec![spec.alias.clone()]),
                    ..EndpointSettings::default()
                },
            )])),
        }),
        ..ContainerCreateBody::default()
    };
    let options = spec.name.as_deref().map(|name| {
        bollard::query_parameters::CreateContainerOptionsBuilder::default()
            .name(name)
            .build()
    });
    let id = block_on(engine.docker.create_container(options, body))
        .map(|r| r.id)
        .map_err(Error::engine(format!(
            "create a container of {}",
            spec.image
        )))?;
    if let Err(e) = block_on(engine.docker.start_container(&id, None)) {
        super::sidecar::remove(engine, &id);
        return Err(Error::engine(format!(
            "start the container of {}",
            spec.image
        ))(e));
    }
    Ok(id)
}

/// The host port each published container port got.
pub fn host_ports(engine: &Engine, id: &str) -> Result<Vec<(u16, u16)>, Error> {
    let inspect = block_on(engine.docker.inspect_container(id, None))
        .map_err(Error::engine(format!("inspect the container {id}")))?;
    let mut out = Vec::new();
    let ports = inspect
        .network_settings
        .and_then(|n| n.ports)
        .unwrap_or_default();
    for (key, bindings) in ports {
        let Some(Ok(container)) = key.strip_suffix("/tcp").map(str::parse::<u16>) else {
            continue;
        };
        let host = bindings
            .unwrap_or_default()
            .iter()
            .find_map(|b| b.host_port.as_deref()?.parse::<u16>().ok());
        if let Some(host) = host {
            out.push((container, host));
        }
    }
    Ok(out)
}

/// The container's state.
pub fn state(engine: &Engine, id: &str) -> State {
    let Ok(inspect) = block_on(engine.docker.inspect_container(id, None)) else {
        return State::Gone;
    };
    let state = inspect.state.unwrap_or_default();
    match (state.running, state.pid) {
        (Some(true), Some(pid)) => State::Running { pid },
        _ => State::Exited {
            code: state.exit_code.unwrap_or(-1),
            oom_killed: state.oom_killed.unwrap_or(false),
        },
    }
}

/// Starts `argv` in the container, its output attached (and its stdin, when `stdin`): the exec's id and
/// its streams.
pub async fn start_exec(
    engine: &Engine,
    id: &str,
    argv: &[String],
    stdin: bool,
) -> Result<(String, StartExecResults), Error> {
    let options = CreateExecOptions {
        cmd: Some(argv.to_vec()),
        attach_stdin: Some(stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..CreateExecOptions::default()
    };
    let exec = engine
        .docker
        .create_exec(id, options)
        .await
        .map_err(Error::engine(""))?;
    let started = engine
        .docker
        .start_exec(&exec.id, Some(StartExecOptions::default()))
        .await
        .map_err(Error::engine(""))?;
    Ok((exec.id, started))
}

/// Runs `argv` in the container and returns its exit code, within `bound`.
pub fn exec(
    engine: &Engine,
    id: &str,
    argv: &[String],
    bound: Duration,
) -> Result<(i64, String), Error> {
    /// What is kept of the command's output: its last bytes, enough to say why it failed.
    const TAIL: usize = 2048;
    block_on(async {
        within(bound, "exit", async {
            let (exec, started) = start_exec(engine, id, argv, false).await?;
            let mut tail: Vec<u8> = Vec::new();
            if let StartExecResults::Attached { mut output, .. } = started {
                while let Some(chunk) = output.next().await {
                    if let Ok(chunk) = chunk {
                        tail.extend_from_slice(&chunk.into_bytes());
                        if tail.len() > TAIL {
                            tail.drain(..tail.len() - TAIL);
                        }
                    }
                }
            }
            let inspect = engine
                .docker
                .inspect_exec(&exec)
                .await
                .map_err(Error::engine(""))?;
            let code = inspect
                .exit_code
                .ok_or_else(|| Error::said("the command did not finish"))?;
            Ok((code, String::from_utf8_lossy(&tail).trim().to_string()))
        })
        .await
    })
}

/// Extracts `archive` (a tar) into the directory `path` of the container.
pub fn upload(engine: &Engine, id: &str, path: &str, archive: Vec<u8>) -> Result<(), Error> {
    let options = bollard::query_parameters::UploadToContainerOptionsBuilder::new()
        .path(path)
        .build();
    block_on(engine.docker.upload_to_container(
        id,
        Some(options),
        bollard::body_full(archive.into()),
    ))
    .map_err(Error::engine(""))
}

/// The container's log (stdout and stderr), the last `tail` lines or all of it.
pub fn logs(engine: &Engine, id: &str, tail: Option<usize>) -> Result<String, Error> {
    let tail = tail.map_or("all".to_string(), |n| n.to_string());
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&tail)
        .build();
    block_on(async {
        let mut out = Vec::new();
        let mut stream = engine.docker.logs(id, Some(options));
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(Error::engine(""))?.into_bytes());
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    })
}

/// Blocks until the container is not running (it exited, or was removed), however long that takes.
pub fn wait_stopped(engine: &Engine, id: &str) {
    let options = bollard::query_parameters::WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    loop {
        // The answer (or an error: a non-zero exit code comes back as one) ends the wait; the client's
        // request timeout ends it too, and then the container may well still run.
        block_on(async {
            let mut wait = engine.docker.wait_container(id, Some(options.clone()));
            let _ = wait.next().await;
        });
        if !matches!(state(engine, id), State::Running { .. }) {
            return;
        }
    }
}
