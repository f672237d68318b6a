//! Resolving the objects a call names, once each: the engine is asked (an inspect) what each name
//! names now, and says its immutable id, whether it is the session's (its labels, or an anonymous
//! volume the proxy recorded) and, for an image, whether it was made on this engine and which of its
//! names the reference is. Admission (`policy`) then decides and pins from these answers (`pin`).

use hyper::{Method, StatusCode};
use serde_json::Value;

use super::client::call;
use super::pin::{self, Denied, Resolutions, Resolved};
use super::query;
use super::refs::{self, Reference};
use super::shared::Shared;
use super::table::Object;
use cleantest_contract::{NESTED_LABEL_PREFIX, SESSION_LABEL};

/// Each object the call names, asked of the engine once.
pub async fn resolve_all(shared: &Shared, references: &[Reference]) -> Result<Resolutions, Denied> {
    let mut resolved = Resolutions::new();
    for reference in references {
        let key = (reference.object, reference.name.clone());
        if let std::collections::hash_map::Entry::Vacant(slot) = resolved.entry(key) {
            slot.insert(resolve(shared, reference.object, &reference.name).await?);
        }
    }
    Ok(resolved)
}

/// What the engine says of the object `name` names: its id, and whether it is the session's. None when
/// it has no such object.
async fn resolve(shared: &Shared, object: Object, name: &str) -> Result<Option<Resolved>, Denied> {
    let segment = match object {
        Object::Image => pin::encode_segment(name),
        _ => query::encode(name),
    };
    let (path, labels) = match object {
        Object::Container => (format!("/containers/{segment}/json"), "/Config/Labels"),
        Object::Network => (format!("/networks/{segment}"), "/Labels"),
        Object::Volume => (format!("/volumes/{segment}"), "/Labels"),
        Object::Image => (format!("/images/{segment}/json"), "/Config/Labels"),
        Object::Exec => return resolve_exec(shared, &segment).await,
    };
    let Some(value) = inspect(shared, &path).await? else {
        return Ok(None);
    };
    let text = |pointer: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let id = match object {
        Object::Volume => text("/Name"),
        _ => text("/Id"),
    };
    let Some(id) = id else {
        return Err(Denied::Engine {
            status: 502,
            message: format!("cleantest proxy: the engine's answer to {path} names no id"),
        });
    };
    let ours = carries_session(value.pointer(labels), &shared.session)
        || (object == Object::Volume && shared.recorded_volume(&id));
    let strings = |pointer: &str| -> Vec<String> {
        value
            .pointer(pointer)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (named, made_here) = match object {
        Object::Image => {
            let digests = strings("/RepoDigests");
            (
                named_as(name, &strings("/RepoTags"), &digests),
                digests.is_empty(),
            )
        }
        _ => (None, false),
    };
    Ok(Some(Resolved {
        id,
        ours,
        made_here,
        named,
    }))
}

/// An exec instance: its id, and its container's ownership.
async fn resolve_exec(shared: &Shared, segment: &str) -> Result<Option<Resolved>, Denied> {
    let Some(value) = inspect(shared, &format!("/exec/{segment}/json")).await? else {
        return Ok(None);
    };
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    let (Some(id), Some(container)) = (text("ID"), text("ContainerID")) else {
        return Ok(None);
    };
    let ours = Box::pin(resolve(shared, Object::Container, &container))
        .await?
        .is_some_and(|c| c.ours);
    Ok(Some(Resolved {
        id,
        ours,
        made_here: false,
        named: None,
    }))
}

/// The image reference `given` as one of the image's own names (`RepoTags`, `RepoDigests`), spelled
/// out with its tag as the engine shows it; None when it named the image by id.
fn named_as(given: &str, tags: &[String], digests: &[String]) -> Option<String> {
    let (full, names) = match given.contains('@') {
        true => (given.to_string(), digests),
        false => (refs::image_name(given, "")?, tags),
    };
    let familiar = familiar(&full);
    names.contains(&familiar).then_some(familiar)
}

/// A name as the engine shows it: Docker Hub's default registry and `library/` left out.
fn familiar(name: &str) -> String {
    for prefix in [
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
        "index.docker.io/",
    ] {
        if let Some(rest) = name.strip_prefix(prefix)
            && !rest.is_empty()
        {
            return rest.to_string();
        }
    }
    name.to_string()
}

/// An inspect's JSON; None for a 404; the engine's answer for any other failure.
async fn inspect(shared: &Shared, path: &str) -> Result<Option<Value>, Denied> {
    let (status, body) = call(&shared.upstream, Method::GET, path, None)
        .await
        .map_err(|e| Denied::Engine {
            status: 502,
            message: format!(
                "cleantest proxy: engine unreachable: {}",
                super::client::with_causes(e.as_ref())
            ),
        })?;
    if status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let value = serde_json::from_slice::<Value>(&body).ok();
    if !status.is_success() {
        let message = value
            .as_ref()
            .and_then(|v| Some(v.get("message")?.as_str()?.to_string()))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(Denied::Engine {
            status: status.as_u16(),
            message,
        });
    }
    value.map(Some).ok_or_else(|| Denied::Engine {
        status: 502,
        message: format!("cleantest proxy: the engine's answer to {path} is not JSON"),
    })
}

/// Whether labels carry this session: as its own, or as a nested session's outer one.
fn carries_session(labels: Option<&Value>, session: &str) -> bool {
    let Some(labels) = labels.and_then(Value::as_object) else {
        return false;
    };
    labels.get(SESSION_LABEL).and_then(Value::as_str) == Some(session)
        || labels.contains_key(&format!("{NESTED_LABEL_PREFIX}{session}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_removed_by_name_stays_a_removal_of_that_name() {
        let tags = ["team/pg:15".to_string(), "busybox:latest".to_string()];
        assert_eq!(
            named_as("team/pg:15", &tags, &[]).as_deref(),
            Some("team/pg:15")
        );
        assert_eq!(
            named_as("docker.io/library/busybox", &tags, &[]).as_deref(),
            Some("busybox:latest")
        );
        // An id, or a prefix of one, is no name: pinned to the full id instead.
        assert_eq!(named_as("sha256:0123", &tags, &[]), None);
        assert_eq!(named_as("0123abc", &tags, &[]), None);
    }

    #[test]
    fn nested_sessions_own_what_their_outer_proxy_relabelled() {
        let labels =
            serde_json::json!({"cleantest.session": "outer", "cleantest.nested.inner": ""});
        assert!(carries_session(Some(&labels), "outer"));
        assert!(carries_session(Some(&labels), "inner"));
        assert!(!carries_session(Some(&labels), "other"));
        assert!(!carries_session(None, "outer"));
    }
}
