//! Query strings the proxy rewrites: a prune's `filters` get the session's label, a build's `labels`
//! get the session's labels and `forcerm`. Read as the engine reads them (Go's `url.ParseQuery`: `+`
//! is a space, escapes decoded in keys and values, the first of repeated keys wins) and written back
//! with every other parameter untouched. Pure functions.

use serde_json::{Map, Value};

/// Why a query cannot be rewritten with certainty; the call is refused with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryRefusal {
    #[error("`{0}` in the query is not JSON the proxy can read ({1})")]
    Unreadable(&'static str, String),
    #[error("a `;` in the query: the engine's reading of it is not certain")]
    Semicolon,
    #[error("a malformed `%` escape in the query: the engine refuses such a query")]
    Malformed,
}

/// The first value of parameter `name`, decoded, as the engine reads it (`r.Form.Get`).
pub fn first(query: Option<&str>, name: &str) -> Result<Option<String>, QueryRefusal> {
    take(query, name).map(|(_, found)| found)
}

/// Every value of parameter `name`, decoded, in order (as the engine reads a list: `r.Form[name]`).
pub fn all(query: Option<&str>, name: &str) -> Result<Vec<String>, QueryRefusal> {
    take(query, name)?;
    Ok(query
        .unwrap_or("")
        .split('&')
        .filter_map(|param| {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            (decode(k) == name).then(|| decode(v))
        })
        .collect())
}

/// The query with every spelling of `name` replaced by one `name=value`.
pub fn replace(query: Option<&str>, name: &str, value: &str) -> Result<String, QueryRefusal> {
    let (mut params, _) = take(query, name)?;
    params.push(format!("{}={}", encode(name), encode(value)));
    Ok(params.join("&"))
}

/// A prune's query with `label=<key>=<value>` added to its `filters`, so only what carries it goes.
pub fn scoped(query: Option<&str>, key: &str, value: &str) -> Result<String, QueryRefusal> {
    let (mut params, found) = take(query, "filters")?;
    let mut filters = match found {
        Some(text) if !text.is_empty() => read_object(&text, "filters")?,
        _ => Map::new(),
    };
    let ours = format!("{key}={value}");
    match filters.get_mut("label") {
        Some(Value::Object(map)) => {
            map.insert(ours, Value::Bool(true));
        }
        Some(Value::Array(list)) => list.push(Value::String(ours)),
        _ => {
            filters.insert("label".into(), serde_json::json!({ ours: true }));
        }
    }
    params.push(format!(
        "filters={}",
        encode(&Value::Object(filters).to_string())
    ));
    Ok(params.join("&"))
}

/// A build's query with `labels` merged (ours win) and `forcerm=1`: the classic builder then removes
/// its intermediate containers even when a step fails.
pub fn build(query: Option<&str>, labels: &[(String, String)]) -> Result<String, QueryRefusal> {
    let (params, found) = take(query, "labels")?;
    let mut merged = match found {
        Some(text) if !text.is_empty() => read_object(&text, "labels")?,
        _ => Map::new(),
    };
    for (k, v) in labels {
        merged.insert(k.clone(), Value::String(v.clone()));
    }
    let (mut params, _) = take(Some(&params.join("&")), "forcerm")?;
    params.push(format!(
        "labels={}",
        encode(&Value::Object(merged).to_string())
    ));
    params.push("forcerm=1".into());
    Ok(params.join("&"))
}

/// An image create's query: an import (`fromSrc`) gets the session's labels as `changes` (`LABEL`
/// instructions, which the engine applies to the imported image); a pull is left as it is.
pub fn import(query: Option<&str>, labels: &[(String, String)]) -> Result<String, QueryRefusal> {
    let (mut params, from_src) = take(query, "fromSrc")?;
    let Some(from_src) = from_src else {
        return Ok(query.unwrap_or("").to_string());
    };
    params.push(format!("fromSrc={}", encode(&from_src)));
    for (k, v) in labels {
        let change = format!(
            "LABEL {}={}",
            Value::String(k.clone()),
            Value::String(v.clone())
        );
        params.push(format!("changes={}", encode(&change)));
    }
    Ok(params.join("&"))
}

/// The query's parameters without every `name` (raw, as sent), and the first `name`'s decoded value.
fn take(query: Option<&str>, name: &str) -> Result<(Vec<String>, Option<String>), QueryRefusal> {
    let query = query.unwrap_or("");
    if query.contains(';') {
        return Err(QueryRefusal::Semicolon);
    }
    if malformed_escape(query) {
        return Err(QueryRefusal::Malformed);
    }
    let mut kept = Vec::new();
    let mut found = None;
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = param.split_once('=').unwrap_or((param, ""));
        if decode(k) == name {
            found.get_or_insert_with(|| decode(v));
        } else {
            kept.push(param.to_string());
        }
    }
    Ok((kept, found))
}

/// Whether a `%` is not followed by two hex digits (Go's `url.ParseQuery` fails on it).
fn malformed_escape(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().any(|(i, b)| {
        *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

fn read_object(text: &str, name: &'static str) -> Result<Map<String, Value>, QueryRefusal> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(QueryRefusal::Unreadable(name, "not an object".into())),
        Err(e) => Err(QueryRefusal::Unreadable(name, e.to_string())),
    }
}

/// `+` as a space and `%XX` escapes decoded (as Go's `url.QueryUnescape`); a malformed escape is kept
/// as it is. A `+` written as `%2B` is still a `+`: spaces are put in before escapes are decoded.
fn decode(text: &str) -> String {
    super::rewrite::percent_decode(&text.replace('+', " "))
}

/// A query value with everything but unreserved characters escaped.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters_of(query: &str) -> Value {
        let (_, found) = take(Some(query), "filters").unwrap();
        serde_json::from_str(&found.unwrap()).unwrap()
    }

    #[test]
    fn a_prune_without_filters_gets_the_session_label() {
        let q = scoped(None, "cleantest.session", "s1").unwrap();
        assert_eq!(
            filters_of(&q),
            serde_json::json!({"label": {"cleantest.session=s1": true}})
        );
    }

    #[test]
    fn the_callers_filters_are_kept_in_both_forms() {
        let map = encode(r#"{"until":{"24h":true},"label":{"team=db":true}}"#);
        let q = scoped(Some(&format!("x=1&filters={map}")), "k", "v").unwrap();
        assert!(q.starts_with("x=1&"), "{q}");
        let f = filters_of(&q);
        assert_eq!(f["label"]["team=db"], true);
        assert_eq!(f["label"]["k=v"], true);
        assert_eq!(f["until"]["24h"], true);
        let list = encode(r#"{"label":["team=db"]}"#);
        let f = filters_of(&scoped(Some(&format!("filters={list}")), "k", "v").unwrap());
        assert_eq!(f["label"], serde_json::json!(["team=db", "k=v"]));
    }

    #[test]
    fn every_spelling_of_filters_is_replaced_by_ours() {
        // The engine reads the first; a second must not survive beside ours.
        let q = scoped(Some("filters=%7B%7D&%66ilters=%7B%7D"), "k", "v").unwrap();
        assert_eq!(q.matches("filters=").count(), 1, "{q}");
        assert!(scoped(Some("filters=nope"), "k", "v").is_err());
        assert!(scoped(Some("filters=%5B%5D"), "k", "v").is_err());
        assert!(scoped(Some("a=1;filters=x"), "k", "v").is_err());
    }

    #[test]
    fn imports_get_label_changes_and_pulls_nothing() {
        let labels = [("cleantest.session".to_string(), "s1".to_string())];
        let q = import(Some("fromSrc=-&repo=x&changes=ENV%20A%3D1"), &labels).unwrap();
        assert!(q.contains("changes=ENV%20A%3D1"), "{q}");
        assert!(
            q.contains(&format!(
                "changes={}",
                encode(r#"LABEL "cleantest.session"="s1""#)
            )),
            "{q}"
        );
        assert_eq!(
            import(Some("fromImage=busybox&tag=1"), &labels).unwrap(),
            "fromImage=busybox&tag=1"
        );
    }

    #[test]
    fn builds_get_labels_and_forcerm() {
        let theirs = encode(r#"{"team":"db"}"#);
        let q = build(
            Some(&format!("t=x&forcerm=0&labels={theirs}")),
            &[("cleantest.session".into(), "s1".into())],
        )
        .unwrap();
        assert!(q.contains("forcerm=1") && !q.contains("forcerm=0"), "{q}");
        let (_, labels) = take(Some(&q), "labels").unwrap();
        let labels: Value = serde_json::from_str(&labels.unwrap()).unwrap();
        assert_eq!(labels["team"], "db");
        assert_eq!(labels["cleantest.session"], "s1");
        assert_eq!(decode("a+b%2Fc%zz"), "a b/c%zz");
        assert_eq!(build(Some("t=a%zz"), &[]), Err(QueryRefusal::Malformed));
    }

    #[test]
    fn values_are_read_as_the_engine_reads_them() {
        let q = Some("t=a%3A1&%74=b&repo=x+y&repo=z");
        assert_eq!(all(q, "t").unwrap(), ["a:1", "b"]);
        assert_eq!(first(q, "repo").unwrap().as_deref(), Some("x y"));
        assert_eq!(first(q, "tag").unwrap(), None);
        let replaced = replace(Some("container=a&c%6fntainer=b&x=1"), "container", "id:1").unwrap();
        assert_eq!(replaced, "x=1&container=id%3A1");
    }
}
