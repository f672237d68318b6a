//! Admission: one call, before anything of it is forwarded. Its row of the table (`table`), the body
//! read (bounded) when the rule needs it, every object it names found once (`refs`), each resolved
//! once by asking the engine (`resolve`), checked, and the call rewritten to name the ids that were
//! checked (`pin`). Then the row's own rewrites (labels in a build's or import's query, the session's
//! filter in a prune's) and checks (an empty start body, an update within `max-memory`). A refusal is the
//! answer the client gets instead of the engine's.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Response, StatusCode};
use serde_json::{Map, Value};

use super::client::{ProxyBody, error_response};
use super::pin::{self, Denied};
use super::refs::{self, Reference};
use super::resolve::resolve_all;
use super::rewrite::{percent_decode, split_version};
use super::shared::{Shared, Unit, labels_for};
use super::table::{self, Create, Row, Rule};
use super::{guard, host_config, query};
use cleantest_contract::SESSION_LABEL;

/// What the proxy may forward besides its table's rules (the profile's `proxy` key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyPolicy {
    /// `Own` rows act on objects of other sessions, or of nobody's, too.
    pub allow_foreign: bool,
    /// `METHOD /pattern` entries forwarded untouched though the table does not list them.
    pub allow: Vec<String>,
    /// Container creates that would make a test root on the host are refused (`host_config::host_access`).
    pub refuse_host_access: bool,
}

/// The largest request body the proxy reads to check or rewrite. Real ones are a few KiB; without a
/// bound a client could grow the runner without limit (a 1.4 GB body did), so a larger one gets 413.
pub const MAX_BODY: usize = 16 << 20;

/// A refusal: the answer the client gets instead of the engine's (boxed: a response is large).
pub type Refused = Box<Response<ProxyBody>>;

/// A call admitted: what to forward.
pub struct Admitted {
    /// A create whose body gets the session's labels.
    pub create: Option<Create>,
    /// The body: read (and pinned) when the rule needed it, else the client's, streamed.
    pub body: Outgoing,
}

/// A request body on its way to the engine.
pub enum Outgoing {
    Read(Bytes),
    Stream(Incoming),
}

/// Admits the call in `parts` (rewriting its path, query and body to what was checked), or answers
/// it with a refusal.
pub async fn admit(
    shared: &Shared,
    unit: &Unit,
    parts: &mut hyper::http::request::Parts,
    body: Incoming,
) -> Result<Admitted, Refused> {
    let (version, path) = routed(parts.uri.path()).map_err(refuse)?;
    let method = parts.method.as_str().to_string();
    let call_name = format!("{method} {path}");
    let row = row_of(shared, &method, &path, &call_name)?;
    let mut body = match reads_body(row.rule) {
        true => Outgoing::Read(read_body(body).await?),
        false => Outgoing::Stream(body),
    };
    let mut json = match (&body, json_body(row.rule)) {
        (Outgoing::Read(bytes), true) => Some(object_of(bytes).map_err(refuse)?),
        _ => None,
    };
    let query = parts.uri.query().map(str::to_string);
    let references =
        refs::of_call(&row, query.as_deref(), json.as_mut()).map_err(|e| refuse(e.into()))?;
    let resolved = resolve_all(shared, &references).await.map_err(refuse)?;
    let call = pin::Call {
        name: &call_name,
        method: &method,
        row: &row,
        query: query.as_deref(),
    };
    let allow_foreign = shared.policy.allow_foreign;
    let pinned =
        pin::apply(&call, json.as_mut(), &references, &resolved, allow_foreign).map_err(refuse)?;
    let path = pinned.path.unwrap_or(path);
    let query = row_query(shared, unit, row.rule, pinned.query).map_err(refuse)?;
    if let (Some(json), Some(_)) = (&json, refs::body_of(row.rule)) {
        body = Outgoing::Read(Bytes::from(written(json).map_err(refuse)?));
    }
    let read = match &body {
        Outgoing::Read(bytes) => Some(bytes.as_ref()),
        Outgoing::Stream(_) => None,
    };
    check_row(
        shared,
        row.rule,
        &path_pin(&references, &pinned.pins),
        read,
        json.as_ref(),
    )
    .await?;
    set_uri(parts, version, &path, query.as_deref()).map_err(refuse)?;
    let create = match row.rule {
        Rule::Label(kind) => Some(kind),
        _ => None,
    };
    Ok(Admitted { create, body })
}

/// `Denied` as the answer the client gets.
fn refuse(denied: Denied) -> Refused {
    Box::new(error_response(denied.status(), &denied.to_string()))
}

/// The path as the engine routes it (decoded) and its version prefix. A `.` or `..` segment is
/// refused: the engine would clean it into another path than the one the table matched.
fn routed(raw: &str) -> Result<(Option<String>, String), Denied> {
    let decoded = percent_decode(raw);
    let (version, path) = split_version(&decoded);
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err(Denied::BadRequest(format!(
            "the path {path} has a `.` or `..` segment, which the engine would read as another path"
        )));
    }
    Ok((version.map(str::to_string), path.to_string()))
}

/// The table's row for the call; a call it does not list, or refuses, passes only when `proxy.allow`
/// lists it.
fn row_of(shared: &Shared, method: &str, path: &str, call_name: &str) -> Result<Row, Refused> {
    let row = table::rule_for(method, path);
    let listed = |row: &Option<Row>| {
        row.as_ref()
            .is_some_and(|r| !matches!(r.rule, Rule::Refuse(_)))
    };
    if !listed(&row)
        && shared
            .policy
            .allow
            .iter()
            .any(|entry| table::allowed(entry, method, path))
    {
        return Ok(table::passed(path));
    }
    match row {
        Some(Row {
            rule: Rule::Refuse(why),
            ..
        }) => Err(refuse_message(
            StatusCode::FORBIDDEN,
            &format!(
                "cleantest proxy: `{call_name}` is refused: {why}. Allow it with \
                 `proxy.allow = [\"{call_name}\"]` in the profile ({})",
                cleantest_contract::CONFIG_PATH
            ),
        )),
        Some(row) => Ok(row),
        None => Err(unlisted(call_name)),
    }
}

/// Whether the rule needs the body before it decides (creates, and the checks of start, update and
/// connect).
fn reads_body(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::Label(_) | Rule::Start | Rule::Update | Rule::Connect
    )
}

/// Whether the body is read as a JSON object: the bodies with references, and an update's.
fn json_body(rule: Rule) -> bool {
    refs::body_of(rule).is_some() || rule == Rule::Update
}

/// A request body, bounded by `MAX_BODY` (413 past it).
async fn read_body(body: Incoming) -> Result<Bytes, Refused> {
    match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(refuse_message(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "cleantest proxy: a request body over {} MiB is refused",
                MAX_BODY >> 20
            ),
        )),
        Err(e) => Err(refuse_message(
            StatusCode::BAD_REQUEST,
            &format!("cleantest proxy: reading the request body: {e}"),
        )),
    }
}

/// A body as the engine reads it (`host_config::read_body`).
fn object_of(bytes: &[u8]) -> Result<Map<String, Value>, Denied> {
    host_config::read_body(bytes).map_err(|e| Denied::BadRequest(e.0))
}

fn written(json: &Map<String, Value>) -> Result<Vec<u8>, Denied> {
    serde_json::to_vec(json).map_err(|e| Denied::BadRequest(format!("writing the body back: {e}")))
}

/// The query a row's own rewrite gives: a build's and an import's labels, a prune's scope.
fn row_query(
    shared: &Shared,
    unit: &Unit,
    rule: Rule,
    query: Option<String>,
) -> Result<Option<String>, Denied> {
    let query = query.as_deref();
    Ok(Some(match rule {
        Rule::LabelBuild => query::build(query, &labels_for(shared, unit))?,
        Rule::LabelImport => query::import(query, &labels_for(shared, unit))?,
        Rule::Scope => query::scoped(query, SESSION_LABEL, &shared.session)?,
        _ => return Ok(query.map(str::to_string)),
    }))
}

/// The id the path's object was pinned to, if it has one.
fn path_pin(references: &[Reference], pins: &pin::Pins) -> Option<String> {
    let reference = references.iter().find(|r| r.site == refs::Site::Path)?;
    pins.get(&(reference.object, reference.name.clone()))
        .cloned()
}

/// The checks of a start body (empty), an update (within `max-memory`) and, with
/// `proxy.refuse-host-access`, a container create's host access, once the body is read.
async fn check_row(
    shared: &Shared,
    rule: Rule,
    pinned: &Option<String>,
    bytes: Option<&[u8]>,
    json: Option<&Map<String, Value>>,
) -> Result<(), Refused> {
    match rule {
        Rule::Label(Create::Container) if shared.policy.refuse_host_access => {
            let found = json.map(|j| host_config::host_access(&host_config::effective(j)));
            match found.filter(|f| !f.is_empty()) {
                None => Ok(()),
                Some(found) => Err(refuse_message(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "cleantest proxy: this container would be root on the host ({}), which \
                         `proxy.refuse-host-access = true` in the profile ({}) refuses",
                        found.join(", "),
                        cleantest_contract::CONFIG_PATH
                    ),
                )),
            }
        }
        Rule::Start => check_start_body(bytes.unwrap_or_default()),
        Rule::Update => match (json.map(update_memory).unwrap_or(0), pinned) {
            (0, _) | (_, None) => Ok(()),
            (memory, Some(id)) => guard::admit_update(shared, id, memory)
                .await
                .map_err(|refusal| refuse_message(guard::REFUSED, &refusal.0)),
        },
        _ => Ok(()),
    }
}

/// `parts`' URI set to the version prefix, `path` and `query` (path segments escaped as sent).
fn set_uri(
    parts: &mut hyper::http::request::Parts,
    version: Option<String>,
    path: &str,
    query: Option<&str>,
) -> Result<(), Denied> {
    let prefix = version.map(|v| format!("/v{v}")).unwrap_or_default();
    let path: Vec<String> = path.split('/').map(pin::encode_segment).collect();
    let uri = match query {
        Some(query) => format!("{prefix}{}?{query}", path.join("/")),
        None => format!("{prefix}{}", path.join("/")),
    };
    parts.uri = uri
        .parse()
        .map_err(|e| Denied::BadRequest(format!("rewriting the request's address: {e}")))?;
    Ok(())
}

/// `error_response`, boxed.
fn refuse_message(status: StatusCode, message: &str) -> Refused {
    Box::new(error_response(status, message))
}

/// The refusal of a call the table does not list.
pub fn unlisted(call_name: &str) -> Refused {
    refuse_message(
        StatusCode::FORBIDDEN,
        &format!(
            "cleantest proxy: `{call_name}` is not in the proxy's endpoint table, so it is refused: the proxy \
             forwards only calls it can keep to the session. Allow it with `proxy.allow = [\"{call_name}\"]` \
             in the profile ({}); `*` stands for one path segment",
            cleantest_contract::CONFIG_PATH
        ),
    )
}

/// A start body (HostConfig at start, API versions before 1.24) would create mounts and volumes that
/// no create body showed: only an empty one (or `{}`, `null`) is forwarded.
pub fn check_start_body(body: &[u8]) -> Result<(), Refused> {
    let empty = body.iter().all(u8::is_ascii_whitespace)
        || match serde_json::from_slice::<Value>(body) {
            Ok(Value::Null) => true,
            Ok(Value::Object(m)) => m.is_empty(),
            _ => false,
        };
    if empty {
        Ok(())
    } else {
        Err(refuse_message(
            StatusCode::BAD_REQUEST,
            "cleantest proxy: a container start with a body (HostConfig at start, before API 1.24) is \
             refused: what it would mount cannot be labelled; give the HostConfig to the create instead",
        ))
    }
}

/// The memory limit an update body sets (0: it leaves the limit as it is).
pub fn update_memory(top: &Map<String, Value>) -> u64 {
    host_config::field(top, "Memory")
        .and_then(Value::as_u64)
        .unwrap_or(0)
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
        let object = object_of(br#"{"memory":4294967296}"#).unwrap();
        assert_eq!(update_memory(&object), 4 << 30);
        assert_eq!(update_memory(&object_of(br#"{"CpuShares":2}"#).unwrap()), 0);
        assert!(object_of(b"[]").is_err());
        assert!(object_of(br#"{"Memory":1} trailing"#).is_err());
        assert!(object_of(b" ").unwrap().is_empty());
    }

    #[test]
    fn dot_segments_are_refused() {
        assert!(routed("/v1.41/images/../containers/x").is_err());
        assert!(routed("/images/%2e%2e/containers/x").is_err());
        assert_eq!(
            routed("/v1.41/containers/%63reate").unwrap(),
            (Some("1.41".into()), "/containers/create".into())
        );
    }
}
