//! Forwarding a create call: its body normalized (HostConfig spellings, `host_config`), the named
//! volumes a container create would make unlabelled created labelled first, the resource guard's
//! admission, and the anonymous volumes the create made recorded for the session's sweep.

use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use serde_json::Value;

use super::forward::{BoxError, ProxyBody, Shared, Unit, error_response, send};
use super::rewrite::Refusal;
use super::{guard, host_config, volumes};
use crate::contract::{BINARY_LABEL, SESSION_LABEL, TEST_LABEL};

/// Forwards a create: the named volumes a container create would make unlabelled are created labelled
/// first, and the anonymous volumes the new container got are recorded for the sweep.
pub(super) async fn create(
    slot: &tokio::sync::Mutex<Option<SendRequest<ProxyBody>>>,
    shared: &Shared,
    request: Request<ProxyBody>,
    plan: volumes::VolumePlan,
    labels: &[(String, String)],
    is_container: bool,
) -> Result<Response<ProxyBody>, BoxError> {
    let upstream = &shared.upstream;
    let admitted = if is_container && shared.guard.limits_creates() {
        let held = shared.admission.lock().await;
        match guard::admit(shared, plan.memory).await {
            Ok(before) => Some((held, before)),
            Err(refusal) => return Ok(error_response(guard::REFUSED, &refusal)),
        }
    } else {
        None
    };
    let named: Vec<String> = plan.wanted.iter().map(|w| w.name.clone()).collect();
    volumes::create_missing(upstream, plan.wanted, labels).await?;
    // Which volumes exist before the create proves which the create made (`record_anonymous`); only
    // asked when the container can get anonymous volumes.
    let may_get_anonymous = is_container
        && (plan.declares_anonymous
            || match &plan.image {
                Some(image) => {
                    volumes::image_has_volumes(upstream, &shared.image_volumes, image).await
                }
                None => true,
            });
    let before = if may_get_anonymous {
        volumes::existing(upstream).await
    } else {
        None
    };
    let response = send(slot, upstream, request).await?;
    if let (Some((_held, before)), true) = (&admitted, response.status().is_success()) {
        guard::created(shared, *before);
    }
    // Only a container that can have anonymous volumes is inspected for them: one that declares some,
    // or whose image does (asked once per image). Without the list of volumes before, nothing is proven.
    let before = match before {
        Some(before) if response.status().is_success() => before,
        _ => return Ok(response.map(|b| b.map_err(BoxError::from).boxed())),
    };
    // A create's answer is a small JSON object (`{"Id":…,"Warnings":[]}`): read it for the id.
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let id = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| Some(v.get("Id")?.as_str()?.to_string()));
    if let Some(id) = id {
        let recorded =
            volumes::record_anonymous(upstream, &id, &named, &before, &shared.anonymous_volumes)
                .await;
        shared
            .recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(recorded.names.iter().cloned());
        if let Some(why) = recorded.unwritten {
            *shared.unwritten.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        }
        if let (Some(sink), false) = (&shared.volume_sink, recorded.names.is_empty()) {
            (sink.0)(&recorded.names);
        }
    }
    Ok(Response::from_parts(
        parts,
        Full::new(bytes).map_err(|never| match never {}).boxed(),
    ))
}

/// A container create body with its HostConfig spellings folded into one (`host_config`).
pub(super) fn normalized(body: &[u8]) -> Result<Vec<u8>, Refusal> {
    let Ok(Value::Object(mut root)) = serde_json::from_slice::<Value>(body) else {
        return Err(Refusal::NotAnObject);
    };
    host_config::normalize(&mut root).map_err(Refusal::BadHostConfig)?;
    serde_json::to_vec(&Value::Object(root)).map_err(|e| Refusal::Unreadable(e.to_string()))
}

pub(super) fn labels_for(shared: &Shared, unit: &Unit) -> Vec<(String, String)> {
    let mut labels = vec![(SESSION_LABEL.to_string(), shared.session.clone())];
    labels.extend(shared.fixed.iter().cloned());
    if let Some(binary) = &unit.binary {
        labels.push((BINARY_LABEL.into(), binary.clone()));
    }
    if let Some(test) = &unit.test {
        labels.push((TEST_LABEL.into(), test.clone()));
    }
    labels
}
