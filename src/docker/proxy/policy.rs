//! Applying the endpoint table's rules (`table`) to one call before it is forwarded: whether the object
//! an action names is the session's, as the engine says (its labels, or an anonymous volume the proxy
//! recorded for the session), and the checks of start, update and connect bodies. A refusal is the
//! answer the client gets instead of the engine's.

use bytes::Bytes;
use hyper::{Method, Response, StatusCode};
use serde_json::Value;

use super::create::labels_for;
use super::forward::{ProxyBody, Shared, Unit, error_response};
use super::host_config::field;
use super::rewrite::{Create, route};
use super::table::{self, Object, Rule};
use super::volumes::call;
use super::{guard, query};
use crate::contract::{NESTED_LABEL_PREFIX, SESSION_LABEL};

/// A refusal: the answer the client gets instead of the engine's (boxed: a response is large).
pub(crate) type Refused = Box<Response<ProxyBody>>;

/// The status of refusals by policy: the docker CLI shows the message, and clients do not retry.
pub(crate) const FORBIDDEN: StatusCode = StatusCode::FORBIDDEN;

/// What `admit` found out about a call, for the rest of its handling.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    /// A create whose body gets the session's labels.
    pub create: Option<Create>,
    /// A body to read and check before it is forwarded.
    pub body_check: Option<BodyCheck>,
}

/// The body checks of the table's `Start`, `Update` and `Connect` rules.
#[derive(Debug)]
pub(crate) enum BodyCheck {
    Start,
    /// The container being updated.
    Update(String),
    /// The call, for the refusal's message.
    Connect(String),
}

/// Applies the table's rule for the call in `parts` (rewriting its query for builds and prunes), or
/// answers it with a refusal.
pub(crate) async fn admit(
    shared: &Shared,
    unit: &Unit,
    parts: &mut hyper::http::request::Parts,
) -> Result<Checked, Refused> {
    let method = parts.method.as_str().to_string();
    let path = route(parts.uri.path());
    let call_name = format!("{method} {path}");
    let (rule, object) = match table::rule_for(&method, &path) {
        Some(found) => found,
        None if shared
            .policy
            .allow
            .iter()
            .any(|entry| table::allowed(entry, &method, &path)) =>
        {
            (Rule::Pass, None)
        }
        None => return Err(unlisted(&call_name)),
    };
    let object = object.unwrap_or_default();
    let mut checked = Checked::default();
    match rule {
        Rule::Pass => {}
        Rule::Label(kind) => checked.create = Some(kind),
        Rule::LabelBuild => {
            let labels = labels_for(shared, unit);
            set_query(parts, query::build(parts.uri.query(), &labels))?;
        }
        Rule::LabelImport => {
            let labels = labels_for(shared, unit);
            set_query(parts, query::import(parts.uri.query(), &labels))?;
        }
        Rule::Scope => set_query(
            parts,
            query::scoped(parts.uri.query(), SESSION_LABEL, &shared.session),
        )?,
        Rule::Own(kind) => check_owned(shared, kind, &object, &call_name).await?,
        Rule::Start => {
            check_owned(shared, Object::Container, &object, &call_name).await?;
            checked.body_check = Some(BodyCheck::Start);
        }
        Rule::Update => {
            check_owned(shared, Object::Container, &object, &call_name).await?;
            checked.body_check = Some(BodyCheck::Update(object));
        }
        Rule::Connect => {
            check_owned(shared, Object::Network, &object, &call_name).await?;
            checked.body_check = Some(BodyCheck::Connect(call_name));
        }
        Rule::Refuse(why) => {
            return Err(refuse(
                FORBIDDEN,
                &format!("cleantest proxy: `{call_name}` is refused: {why}"),
            ));
        }
    }
    Ok(checked)
}

/// The checks of a body `admit` asked for, once it is read.
pub(crate) async fn check_body(
    shared: &Shared,
    checked: &Checked,
    body: &[u8],
) -> Result<(), Refused> {
    match &checked.body_check {
        None => Ok(()),
        Some(BodyCheck::Start) => check_start_body(body),
        Some(BodyCheck::Update(id)) => match update_memory(body) {
            0 => Ok(()),
            memory => guard::admit_update(shared, id, memory)
                .await
                .map_err(|refusal| refuse(guard::REFUSED, &refusal)),
        },
        Some(BodyCheck::Connect(call_name)) => match connect_container(body) {
            Some(container) => check_owned(shared, Object::Container, &container, call_name).await,
            None => Ok(()),
        },
    }
}

/// `error_response`, boxed.
fn refuse(status: StatusCode, message: &str) -> Refused {
    Box::new(error_response(status, message))
}

fn set_query(
    parts: &mut hyper::http::request::Parts,
    query: Result<String, query::QueryRefusal>,
) -> Result<(), Refused> {
    let refuse =
        |why: String| error_response(StatusCode::BAD_REQUEST, &format!("cleantest proxy: {why}"));
    let query = query.map_err(|e| refuse(e.to_string()))?;
    let uri = format!("{}?{query}", parts.uri.path());
    parts.uri = uri
        .parse()
        .map_err(|e| refuse(format!("rewriting the query: {e}")))?;
    Ok(())
}

/// Whether labels carry this session: as its own, or as a nested session's outer one.
fn carries_session(labels: Option<&Value>, session: &str) -> bool {
    let Some(labels) = labels.and_then(Value::as_object) else {
        return false;
    };
    labels.get(SESSION_LABEL).and_then(Value::as_str) == Some(session)
        || labels.contains_key(&format!("{NESTED_LABEL_PREFIX}{session}"))
}

/// Forwarded only if `id` names an object of the session (or `proxy.allow-foreign` is set). An object
/// the engine does not know gets the engine's own answer (404), so a name cannot be created between
/// the check and the call.
pub(crate) async fn check_owned(
    shared: &Shared,
    object: Object,
    id: &str,
    call_name: &str,
) -> Result<(), Refused> {
    if shared.policy.allow_foreign {
        return Ok(());
    }
    let (path, labels) = match object {
        Object::Container => (format!("/containers/{id}/json"), "/Config/Labels"),
        Object::Network => (format!("/networks/{id}"), "/Labels"),
        Object::Volume => (format!("/volumes/{id}"), "/Labels"),
        Object::Image => (format!("/images/{id}/json"), "/Config/Labels"),
        Object::Exec => {
            let (status, body) = inspect(shared, &format!("/exec/{id}/json")).await?;
            let container = serde_json::from_slice::<Value>(&body)
                .ok()
                .filter(|_| status.is_success())
                .and_then(|v| Some(v.get("ContainerID")?.as_str()?.to_string()));
            return match container {
                Some(container) => {
                    Box::pin(check_owned(
                        shared,
                        Object::Container,
                        &container,
                        call_name,
                    ))
                    .await
                }
                None => Err(engine_answer(status, body)),
            };
        }
    };
    let (status, body) = inspect(shared, &path).await?;
    if !status.is_success() {
        return Err(engine_answer(status, body));
    }
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let ours = carries_session(value.pointer(labels), &shared.session)
        || (object == Object::Volume && shared.recorded_volume(id));
    if ours {
        Ok(())
    } else {
        Err(foreign(call_name, object, id))
    }
}

async fn inspect(shared: &Shared, path: &str) -> Result<(StatusCode, Bytes), Refused> {
    call(&shared.upstream, Method::GET, path, None)
        .await
        .map_err(|e| {
            refuse(
                StatusCode::BAD_GATEWAY,
                &format!("cleantest proxy: engine unreachable: {e}"),
            )
        })
}

fn engine_answer(status: StatusCode, body: Bytes) -> Refused {
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| Some(v.get("message")?.as_str()?.to_string()))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    Box::new(error_response(status, &message))
}

fn foreign(call_name: &str, object: Object, id: &str) -> Refused {
    let kind = format!("{object:?}").to_lowercase();
    refuse(
        FORBIDDEN,
        &format!(
            "cleantest proxy: `{call_name}` acts on {kind} {id}, which is not this session's; the proxy \
             refuses actions on what the session did not create. Set `proxy.allow-foreign = true` in \
             the profile ({}) to allow them",
            crate::contract::CONFIG_PATH
        ),
    )
}

/// The refusal of a call the table does not list.
pub(crate) fn unlisted(call_name: &str) -> Refused {
    refuse(
        FORBIDDEN,
        &format!(
            "cleantest proxy: `{call_name}` is not in the proxy's endpoint table, so it is refused: the proxy \
             forwards only calls it can keep to the session. Allow it with `proxy.allow = [\"{call_name}\"]` \
             in the profile ({}); `*` stands for one path segment",
            crate::contract::CONFIG_PATH
        ),
    )
}

/// A start body (HostConfig at start, API versions before 1.24) would create mounts and volumes that
/// no create body showed: only an empty one (or `{}`, `null`) is forwarded.
pub(crate) fn check_start_body(body: &[u8]) -> Result<(), Refused> {
    let empty = body.iter().all(u8::is_ascii_whitespace)
        || match serde_json::from_slice::<Value>(body) {
            Ok(Value::Null) => true,
            Ok(Value::Object(m)) => m.is_empty(),
            _ => false,
        };
    if empty {
        Ok(())
    } else {
        Err(refuse(
            StatusCode::BAD_REQUEST,
            "cleantest proxy: a container start with a body (HostConfig at start, before API 1.24) is \
             refused: what it would mount cannot be labelled; give the HostConfig to the create instead",
        ))
    }
}

/// The `Container` a connect/disconnect body names, as the engine reads it.
pub(crate) fn connect_container(body: &[u8]) -> Option<String> {
    let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    field(&top, "Container")?.as_str().map(str::to_string)
}

/// The memory limit an update body sets (0: it leaves the limit as it is).
pub(crate) fn update_memory(body: &[u8]) -> u64 {
    let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(body) else {
        return 0;
    };
    field(&top, "Memory").and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_empty_start_bodies_pass() {
        for ok in [&b""[..], b" ", b"{}", b"null"] {
            assert!(check_start_body(ok).is_ok());
        }
        assert!(check_start_body(br#"{"Binds":["x:/x"]}"#).is_err());
        assert!(check_start_body(b"garbage").is_err());
    }

    #[test]
    fn bodies_read_as_the_engine_reads_them() {
        assert_eq!(
            connect_container(br#"{"container":"a","Container":"b"}"#).as_deref(),
            Some("b")
        );
        assert_eq!(connect_container(b"[]"), None);
        assert_eq!(update_memory(br#"{"memory":4294967296}"#), 4 << 30);
        assert_eq!(update_memory(br#"{"CpuShares":2}"#), 0);
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
