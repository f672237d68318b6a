//! What the proxy changes in a request: the labels of create calls, and an API version prefix newer than
//! the engine speaks. Pure functions over paths and bodies; everything else passes through untouched.

use serde_json::{Map, Value};

use cleantest_contract::is_session_id;

/// `(version, rest)` for `/v1.41/containers/json` → `(Some("1.41"), "/containers/json")`.
pub fn split_version(path: &str) -> (Option<&str>, &str) {
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

/// `%XX` escapes decoded as Go's `url.PathUnescape` decodes them; a malformed escape is left as it is
/// (the engine refuses such a request itself).
pub fn percent_decode(path: &str) -> String {
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
pub fn translate_version(path_and_query: &str, engine_max: Option<&str>) -> Option<String> {
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

/// Why a create body cannot be labelled with certainty; the proxy answers 400 with it, so nothing is
/// ever created unlabelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "the create body is not JSON the proxy can read with certainty ({0}); \
         send one JSON object, without trailing data, lone surrogates or deep nesting"
    )]
    Unreadable(String),
    #[error("the create body is not a JSON object")]
    NotAnObject,
    #[error("`{0}` in the create body is not an object of string labels")]
    BadLabels(String),
    #[error("{0}")]
    BadHostConfig(String),
}

/// Merges `labels` into a create body's labels, keeping the caller's other labels; ours win.
///
/// The engine reads the body with Go's decoder, which matches keys case-insensitively (`"labels"`, and
/// even `"LABEL\u017f"`, fill `Labels`) and merges every spelling present, a `null` clearing what came
/// before. So every such key is merged, in document order, into one `Labels`. An empty body becomes
/// `{"Labels": {...}}` (a volume create may have none). A body serde cannot read exactly (trailing data,
/// a lone surrogate, nesting beyond its limit: Go accepts all three) is refused, never forwarded as is.
///
/// When the caller had set `session_key` to another valid session id (a `cargo cleantest` run nested in
/// this one), that id is kept under `nested_prefix<id>`, so the inner session's sweep still finds it.
pub fn merge_labels(
    body: &[u8],
    labels: &[(String, String)],
    session_key: &str,
    nested_prefix: &str,
) -> Result<Vec<u8>, Refusal> {
    let mut value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body).map_err(|e| Refusal::Unreadable(e.to_string()))?
    };
    let object = value.as_object_mut().ok_or(Refusal::NotAnObject)?;
    let spellings: Vec<String> = object
        .keys()
        .filter(|k| go_fold(k) == "labels")
        .cloned()
        .collect();
    let mut merged = Map::new();
    for key in spellings {
        match object.remove(&key) {
            Some(Value::Null) => merged.clear(),
            Some(Value::Object(map)) if map.values().all(Value::is_string) => merged.extend(map),
            _ => return Err(Refusal::BadLabels(key)),
        }
    }
    let ours = labels
        .iter()
        .find(|(k, _)| k == session_key)
        .map(|(_, v)| v.as_str());
    if let Some(Value::String(theirs)) = merged.get(session_key)
        && Some(theirs.as_str()) != ours
        && is_session_id(theirs)
    {
        merged.insert(
            format!("{nested_prefix}{theirs}"),
            Value::String(String::new()),
        );
    }
    for (key, val) in labels {
        merged.insert(key.clone(), Value::String(val.clone()));
    }
    object.insert("Labels".into(), Value::Object(merged));
    serde_json::to_vec(&value).map_err(|e| Refusal::Unreadable(e.to_string()))
}

/// A key as Go's decoder compares it: ASCII case folded, and the two non-ASCII letters whose simple case
/// folding reaches ASCII (U+017F long s, U+212A Kelvin sign) taken as `s` and `k`.
pub(super) fn go_fold(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '\u{17f}' => 's',
            '\u{212a}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::table::Create;
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

    fn create_kind(method: &str, path: &str) -> Option<Create> {
        let routed = percent_decode(path);
        match super::super::table::rule_for(method, split_version(&routed).1)?.rule {
            super::super::table::Rule::Label(kind) => Some(kind),
            _ => None,
        }
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

    fn merge(body: &[u8]) -> Result<Vec<u8>, Refusal> {
        merge_labels(body, &labels(), "cleantest.session", "cleantest.nested.")
    }

    #[test]
    fn merges_labels_keeping_the_callers() {
        let out = merge(br#"{"Image":"x","Labels":{"team":"db"}}"#).unwrap();
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
            let v = parse(&merge(body).unwrap());
            assert_eq!(
                v["Labels"]["cleantest.binary"],
                "pkg::it",
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn bodies_that_cannot_be_labelled_with_certainty_are_refused() {
        assert!(matches!(merge(b"not json"), Err(Refusal::Unreadable(_))));
        assert_eq!(merge(b"[1,2]"), Err(Refusal::NotAnObject));
        assert_eq!(merge(b"null"), Err(Refusal::NotAnObject));
        assert_eq!(
            merge(br#"{"Labels":"oops"}"#),
            Err(Refusal::BadLabels("Labels".into()))
        );
        assert!(merge(br#"{"labels":{"a":1}}"#).is_err());
        // Go reads all three; serde does not, so they must not be forwarded unlabelled.
        assert!(matches!(
            merge(br#"{"Image":"x"} {"Labels":{}}"#),
            Err(Refusal::Unreadable(_))
        ));
        assert!(matches!(
            merge(br#"{"Image":"\ud800"}"#),
            Err(Refusal::Unreadable(_))
        ));
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        assert!(matches!(
            merge(deep.as_bytes()),
            Err(Refusal::Unreadable(_))
        ));
    }

    #[test]
    fn every_spelling_of_labels_is_merged_and_ours_win() {
        let out = merge(
            br#"{"Image":"x","labels":{"cleantest.session":"zzz","a":"1"},"LABEL\u017f":{"b":"2"}}"#,
        )
        .unwrap();
        let v = parse(&out);
        let object = v.as_object().unwrap();
        assert_eq!(
            object.keys().filter(|k| go_fold(k) == "labels").count(),
            1,
            "{v}"
        );
        assert_eq!(v["Labels"]["cleantest.session"], "abc");
        assert_eq!(v["Labels"]["a"], "1");
        assert_eq!(v["Labels"]["b"], "2");
        // The other session the caller named keeps a key of its own (a nested run's sweep finds it).
        assert_eq!(v["Labels"]["cleantest.nested.zzz"], "");
        // A null spelling clears what came before it, as Go does; ours are still set.
        let v = parse(&merge(br#"{"Labels":{"a":"1"},"labels":null}"#).unwrap());
        assert_eq!(v["Labels"].as_object().unwrap().len(), 2, "{v}");
        // A caller's value that is not a session id is overwritten and not kept.
        let v = parse(&merge(br#"{"Labels":{"cleantest.session":"A B"}}"#).unwrap());
        assert_eq!(v["Labels"].as_object().unwrap().len(), 2, "{v}");
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
