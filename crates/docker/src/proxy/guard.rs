//! The resource guard at the proxy: a container create that would take the session over
//! `max-containers` or `max-memory` is answered with an HTTP error naming the limit and where it is set
//! (the test sees the failure; nothing is created), and a create that sets no memory limit gets
//! `default-memory`. Creates are admitted one at a time, so two at once cannot both take the last place.

use hyper::{Method, StatusCode};
use serde_json::{Map, Value};

use super::client::{Upstream, call};
use super::host_config;
use super::rewrite::go_fold;
use super::shared::Shared;

use crate::locked;
use crate::usage::human_bytes;
use cleantest_contract::{ROLE_LABEL, SESSION_LABEL};

/// A limit and where it was set (`--max-containers`, `max-containers in .config/cleantest.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub value: u64,
    pub source: String,
}

/// The guard of one session; every limit is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    pub max_containers: Option<Limit>,
    pub max_memory: Option<Limit>,
    /// Bytes given to container creates that set no memory limit.
    pub default_memory: Option<u64>,
    pub min_free_memory: Option<Limit>,
    /// Refuse to start below `min_free_memory`, rather than warn.
    pub require_free_memory: bool,
}

impl Guard {
    /// Whether the proxy has anything to check or change in a container create.
    pub fn limits_creates(&self) -> bool {
        self.max_containers.is_some() || self.max_memory.is_some() || self.default_memory.is_some()
    }
}

/// Why the guard refuses a call: the message the client reads, naming the limit and where it is set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// The status of a refusal: the engine's own for a request it will not carry out.
pub const REFUSED: StatusCode = StatusCode::FORBIDDEN;

/// `body` (a container create) with `HostConfig.Memory` set to `bytes` when it sets none (or 0, which
/// the engine reads as none). Keys are matched as the engine's decoder matches them.
pub fn with_default_memory(body: &[u8], bytes: u64) -> Vec<u8> {
    let Ok(Value::Object(mut root)) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    if memory_of_root(&root) != 0 {
        return body.to_vec();
    }
    // Where the engine reads it: the HostConfig, or the top level when there is none (a HostConfig
    // added here would hide the top-level fields from the engine).
    let set = |fields: &mut Map<String, Value>| {
        fields.retain(|k, _| go_fold(k) != "memory");
        fields.insert("Memory".into(), Value::from(bytes));
    };
    match root.get_mut("HostConfig") {
        Some(Value::Object(host)) => set(host),
        _ => set(&mut root),
    }
    serde_json::to_vec(&Value::Object(root)).unwrap_or_else(|_| body.to_vec())
}

/// The memory limit a container create asks for (0: none).
pub fn memory_of(body: &[u8]) -> u64 {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(root)) => memory_of_root(&root),
        _ => 0,
    }
}

fn memory_of_root(root: &Map<String, Value>) -> u64 {
    host_config::field(&host_config::effective(root), "Memory")
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// Whether the session may create one more container asking for `memory` bytes: Ok is how many it has
/// now, Err the message of the refusal. The engine is asked what the session has now, so removed
/// containers free their place.
pub async fn admit(shared: &Shared, memory: u64) -> Result<u64, Refusal> {
    let guard = &shared.guard;
    let containers = session_containers(&shared.upstream, &shared.session).await?;
    if let Some(max) = &guard.max_containers
        && containers.len() as u64 >= max.value
    {
        return Err(Refusal(format!(
            "cleantest: this session already has {} containers ({}); remove some first, or raise the limit",
            containers.len(),
            max.source,
        )));
    }
    if let Some(max) = &guard.max_memory {
        if memory == 0 {
            return Err(Refusal(format!(
                "cleantest: this container sets no memory limit, so it cannot be counted against {} ({}); \
                 give it one, or set default-memory",
                human_bytes(max.value),
                max.source
            )));
        }
        let used = running_limits(&shared.upstream, &containers, None).await;
        if used + memory > max.value {
            return Err(Refusal(format!(
                "cleantest: this session's running containers already have {} of memory limits; {} more \
                 would go over {} ({})",
                human_bytes(used),
                human_bytes(memory),
                human_bytes(max.value),
                max.source
            )));
        }
    }
    Ok(containers.len() as u64)
}

/// Whether the session's container `id` may have its memory limit set to `memory` (`docker update`):
/// with the other running containers' limits, it must stay within `max-memory`.
pub async fn admit_update(shared: &Shared, id: &str, memory: u64) -> Result<(), Refusal> {
    let Some(max) = &shared.guard.max_memory else {
        return Ok(());
    };
    let (_, body) = call(
        &shared.upstream,
        Method::GET,
        &format!("/containers/{id}/json"),
        None,
    )
    .await
    .map_err(|e| {
        Refusal(format!(
            "cleantest: cannot check the update against {}: {e}",
            max.source
        ))
    })?;
    let full_id = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| Some(v.get("Id")?.as_str()?.to_string()))
        .unwrap_or_default();
    let containers = session_containers(&shared.upstream, &shared.session).await?;
    let used = running_limits(&shared.upstream, &containers, Some(&full_id)).await;
    if used + memory > max.value {
        return Err(Refusal(format!(
            "cleantest: this session's other running containers have {} of memory limits; raising this \
             one to {} would go over {} ({})",
            human_bytes(used),
            human_bytes(memory),
            human_bytes(max.value),
            max.source
        )));
    }
    Ok(())
}

/// A create admitted with `before` containers in the session succeeded: the session has one more.
pub fn created(shared: &Shared, before: u64) {
    let mut peak = locked(&shared.peak);
    *peak = (*peak).max(before + 1);
}

/// The session's containers (id, running), the engine-side reaper left out: it is not the tests'.
async fn session_containers(
    upstream: &Upstream,
    session: &str,
) -> Result<Vec<(String, bool)>, Refusal> {
    let filters =
        serde_json::json!({ "label": [format!("{SESSION_LABEL}={session}")] }).to_string();
    let path = format!(
        "/containers/json?all=1&filters={}",
        super::query::encode(&filters)
    );
    let (status, body) = call(upstream, Method::GET, &path, None)
        .await
        .map_err(|e| {
            Refusal(format!(
                "cleantest: cannot count the session's containers: {e}"
            ))
        })?;
    let list: Vec<Value> = serde_json::from_slice(&body)
        .ok()
        .filter(|_| status.is_success())
        .ok_or_else(|| {
            Refusal(format!(
                "cleantest: cannot count the session's containers: {status}"
            ))
        })?;
    Ok(list
        .iter()
        .filter(|c| c.pointer(&format!("/Labels/{ROLE_LABEL}")).is_none())
        .filter_map(|c| {
            let id = c.get("Id")?.as_str()?.to_string();
            Some((
                id,
                c.get("State").and_then(Value::as_str) == Some("running"),
            ))
        })
        .collect())
}

/// The memory limits of the running ones of `containers` (id, running), `except` one, added up.
async fn running_limits(
    upstream: &Upstream,
    containers: &[(String, bool)],
    except: Option<&str>,
) -> u64 {
    let mut used = 0;
    for (id, running) in containers {
        if *running && Some(id.as_str()) != except {
            used += limit_of(upstream, id).await;
        }
    }
    used
}

/// A container's memory limit (0 when it has none or the engine does not say).
async fn limit_of(upstream: &Upstream, id: &str) -> u64 {
    let Ok((status, body)) = call(
        upstream,
        Method::GET,
        &format!("/containers/{id}/json"),
        None,
    )
    .await
    else {
        return 0;
    };
    serde_json::from_slice::<Value>(&body)
        .ok()
        .filter(|_| status.is_success())
        .and_then(|v| v.pointer("/HostConfig/Memory")?.as_u64())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_memory_fills_only_a_missing_or_zero_limit() {
        let set = with_default_memory(br#"{"Image":"x"}"#, 512 << 20);
        assert_eq!(memory_of(&set), 512 << 20);
        let zero = with_default_memory(br#"{"HostConfig":{"memory":0}}"#, 64 << 20);
        assert_eq!(memory_of(&zero), 64 << 20);
        let own = br#"{"HostConfig":{"Memory":100000000}}"#;
        assert_eq!(with_default_memory(own, 64 << 20), own.to_vec());
        // Deprecated top-level fields: the limit goes where the engine reads it.
        let top = with_default_memory(br#"{"Image":"x","Binds":["a:/a"]}"#, 1 << 20);
        assert!(!String::from_utf8_lossy(&top).contains("HostConfig"));
        assert_eq!(memory_of(&top), 1 << 20);
        let own = br#"{"Memory":100000000}"#;
        assert_eq!(with_default_memory(own, 64 << 20), own.to_vec());
        assert_eq!(memory_of(b"not json"), 0);
        assert_eq!(with_default_memory(b"[1]", 1), b"[1]".to_vec());
    }
}
