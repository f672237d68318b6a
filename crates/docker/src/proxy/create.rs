//! Forwarding a create call: its body normalized (HostConfig spellings, `host_config`), the named
//! volumes a container create would make unlabelled created labelled first, the resource guard's
//! admission, and the anonymous volumes the create made recorded for the session's sweep.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;

use super::client::{BoxError, ProxyBody, UpstreamSlot, buffered, error_response, send};
use super::in_flight::InFlight;
use super::rewrite::{Refusal, merge_labels};
use super::shared::{Shared, Unit, labels_for};
use super::table::Create;
use super::{guard, host_config, volumes};
use crate::locked;
use cleantest_contract::{NESTED_LABEL_PREFIX, SESSION_LABEL};

/// Forwards an admitted create (`bytes`: its body, pinned): the session's labels merged in, the
/// resource guard's default memory, then sent from a task of its own, which the client going away does
/// not cancel: the engine completes a create it has received anyway, and the end of the session waits
/// for its answer. Err is the answer to a body that cannot be labelled with certainty.
pub(super) async fn forward(
    shared: &Arc<Shared>,
    unit: &Unit,
    slot: &UpstreamSlot,
    mut parts: hyper::http::request::Parts,
    kind: Create,
    bytes: &[u8],
) -> Result<Result<Response<ProxyBody>, BoxError>, Response<ProxyBody>> {
    let labels = labels_for(shared, unit);
    let is_container = kind == Create::Container;
    let merged = merge_labels(bytes, &labels, SESSION_LABEL, NESTED_LABEL_PREFIX)
        .and_then(|new| {
            if is_container {
                normalized(&new)
            } else {
                Ok(new)
            }
        })
        .map_err(|refusal| {
            error_response(
                StatusCode::BAD_REQUEST,
                &format!("cleantest proxy: {refusal}"),
            )
        })?;
    let mut plan = volumes::VolumePlan::default();
    let body = match (is_container, shared.guard.default_memory) {
        (true, Some(bytes)) => guard::with_default_memory(&merged, bytes),
        _ => merged,
    };
    if is_container {
        plan = volumes::plan(&body);
        plan.memory = guard::memory_of(&body);
    }
    // The body is JSON now even where the client sent none (`docker commit` sends no body and no
    // Content-Type; the engine refuses a body without it).
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = buffered(&mut parts, Bytes::from(body));
    let request = Request::from_parts(parts, body);
    let forwarded = InFlight::forward(&shared.in_flight);
    let (slot, shared) = (slot.clone(), shared.clone());
    let task = tokio::spawn(async move {
        let answer = create(&slot, &shared, request, plan, &labels, is_container).await;
        drop(forwarded);
        answer
    });
    Ok(task.await.unwrap_or_else(|e| Err(BoxError::from(e))))
}

/// Forwards a create: the named volumes a container create would make unlabelled are created labelled
/// first, and the anonymous volumes the new container got are recorded for the sweep.
async fn create(
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
            Err(refusal) => return Ok(error_response(guard::REFUSED, &refusal.0)),
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
        locked(&shared.recorded).extend(recorded.names.iter().cloned());
        if let Some(why) = recorded.unwritten {
            *locked(&shared.unwritten) = Some(why);
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
fn normalized(body: &[u8]) -> Result<Vec<u8>, Refusal> {
    let Ok(Value::Object(mut root)) = serde_json::from_slice::<Value>(body) else {
        return Err(Refusal::NotAnObject);
    };
    host_config::normalize(&mut root).map_err(|e| Refusal::BadHostConfig(e.0))?;
    serde_json::to_vec(&Value::Object(root)).map_err(|e| Refusal::Unreadable(e.to_string()))
}
