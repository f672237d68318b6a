//! What the proxy changes in a request: the labels of create calls, and an API version prefix newer than
//! the engine speaks. Pure functions over paths and bodies; everything else passes through untouched.

use serde_json::{Map, Value};

/// Which create call a request is, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    Container,
    Network,
    Volume,
}

/// `(version, rest)` for `/v1.41/containers/json` → `(Some("1.41"), "/containers/json")`.
pub(crate) fn split_version(path: &str) -> (Option<&str>, &str) {
    let Some((version, rest)) = path
        .strip_prefix("/v")
        .and_then(|after| Some(after.split_at(after.find('/')?)))
    else {
        return (None, path);
    };
    if !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.') {
        (Some(version), rest)
    } else {
        (None, path)
    }
}

/// The create call a `POST` to `path` (query string excluded) is. The engine routes on the decoded
/// path (`/containers/%63reate` is a container create to it), so the path is decoded first: matching
/// the raw path would let an encoded create through unlabelled.
pub(crate) fn create_kind(method: &str, path: &str) -> Option<Create> {
    if method != "POST" {
        return None;
    }
    let decoded = percent_decode(path);
    match split_version(&decoded).1 {
        "/containers/create" => Some(Create::Container),
        "/networks/create" => Some(Create::Network),
        "/volumes/create" => Some(Create::Volume),
        _ => None,
    }
}

/// `%XX` escapes decoded as Go's `url.PathUnescape` decodes them; a malformed escape is left as it is
/// (the engine refuses such a request itself).
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Rewrites `/v1.NN/...` down to the engine's maximum version when the client asked for a newer one
/// (clients such as testcontainers-rs send a fixed recent version that older engines refuse with 400).
/// Returns None when nothing changes.
pub(crate) fn translate_version(path_and_query: &str, engine_max: Option<&str>) -> Option<String> {
    let engine_max = engine_max?;
    let (Some(version), rest) = split_version(path_and_query) else {
        return None;
    };
    (compare_versions(version, engine_max) == std::cmp::Ordering::Greater)
        .then(|| format!("/v{engine_max}{rest}"))
}

fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| {
        v.split('.')
            .map(|p| p.parse::<u64>().unwrap_or(0))
            .collect::<Vec<_>>()
    };
    parts(a).cmp(&parts(b))
}

/// Merges `labels` into a create body's `Labels`, keeping the caller's other labels. An empty body
/// becomes `{"Labels": {...}}` (a volume create may have none); a body that is not a JSON object is
/// returned as None so it goes through unchanged and the engine answers with its own error.
pub(crate) fn merge_labels(body: &[u8], labels: &[(String, String)]) -> Option<Vec<u8>> {
    let mut value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body).ok()?
    };
    let object = value.as_object_mut()?;
    let entry = object
        .entry("Labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if entry.is_null() {
        *entry = Value::Object(Map::new());
    }
    let existing = entry.as_object_mut()?;
    for (key, val) in labels {
        existing.insert(key.clone(), Value::String(val.clone()));
    }
    serde_json::to_vec(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<(String, String)> {
        vec![
            ("cleantest.session".into(), "abc".into()),
            ("cleantest.binary".into(), "pkg::it".into()),
        ]
    }

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn create_calls_with_and_without_version_prefix() {
        assert_eq!(
            create_kind("POST", "/containers/create"),
            Some(Create::Container)
        );
        assert_eq!(
            create_kind("POST", "/v1.41/networks/create"),
            Some(Create::Network)
        );
        assert_eq!(
            create_kind("POST", "/v1.53/volumes/create"),
            Some(Create::Volume)
        );
        assert_eq!(create_kind("GET", "/containers/create"), None);
        assert_eq!(create_kind("POST", "/containers/abc/exec"), None);
        assert_eq!(create_kind("POST", "/vX/containers/create"), None);
        // The engine decodes the path before routing: so do we.
        assert_eq!(
            create_kind("POST", "/containers/%63reate"),
            Some(Create::Container)
        );
        assert_eq!(
            create_kind("POST", "/v1.41/%6e%65tworks/create"),
            Some(Create::Network)
        );
        assert_eq!(
            create_kind("POST", "/%76olumes%2Fcreate"),
            Some(Create::Volume)
        );
        assert_eq!(create_kind("POST", "/containers/%zzcreate"), None);
    }

    #[test]
    fn merges_labels_keeping_the_callers() {
        let out = merge_labels(br#"{"Image":"x","Labels":{"team":"db"}}"#, &labels()).unwrap();
        let v = parse(&out);
        assert_eq!(v["Labels"]["team"], "db");
        assert_eq!(v["Labels"]["cleantest.session"], "abc");
        assert_eq!(v["Image"], "x");
    }

    #[test]
    fn null_missing_and_empty_bodies_get_labels() {
        for body in [
            &br#"{"Name":"n","Labels":null}"#[..],
            br#"{"Name":"n"}"#,
            b"",
            b"  ",
        ] {
            let v = parse(&merge_labels(body, &labels()).unwrap());
            assert_eq!(
                v["Labels"]["cleantest.binary"],
                "pkg::it",
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn bodies_that_are_not_objects_pass_unchanged() {
        assert_eq!(merge_labels(b"not json", &labels()), None);
        assert_eq!(merge_labels(b"[1,2]", &labels()), None);
        assert_eq!(merge_labels(br#"{"Labels":"oops"}"#, &labels()), None);
    }

    #[test]
    fn newer_versions_are_translated_down_only() {
        assert_eq!(
            translate_version("/v1.47/containers/json?all=1", Some("1.41")).as_deref(),
            Some("/v1.41/containers/json?all=1")
        );
        assert_eq!(
            translate_version("/v1.40/containers/json", Some("1.41")),
            None
        );
        assert_eq!(translate_version("/containers/json", Some("1.41")), None);
        assert_eq!(translate_version("/v1.47/_ping", None), None);
        assert_eq!(
            translate_version("/v1.100/x", Some("1.53")).as_deref(),
            Some("/v1.53/x")
        );
    }
}
