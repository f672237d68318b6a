//! A container create's HostConfig as the engine reads it. The engine's decoder matches keys without
//! case and merges every spelling of `HostConfig` into one; without one, the deprecated top-level
//! fields (`Binds`, `Memory`, ... beside `Image`) are the HostConfig; with one, five of them
//! (`Memory`, `MemorySwap`, `CpuShares`, `CpusetCpus`, `VolumeDriver`) still fill its empty ones
//! (the engine's `runconfig.ContainerConfigWrapper.getHostConfig`).
//!
//! So the proxy first folds the spellings into a single `HostConfig` key (`normalize`), forwards that
//! body, and reads volumes and memory from `effective` of the same body: what it checks is what the
//! engine gets.

use serde_json::{Map, Value};

use super::rewrite::go_fold;

/// What is wrong with a request body, as the 400 answer says it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadBody(pub String);

/// The top-level fields that fill an empty field of an explicit HostConfig.
const PROMOTED: [&str; 5] = [
    "Memory",
    "MemorySwap",
    "CpuShares",
    "CpusetCpus",
    "VolumeDriver",
];

/// Every spelling of `HostConfig` merged, in document order, into one `HostConfig` key (a `null`
/// clears what came before, as it does in Go). Err when one is neither an object nor null.
pub fn normalize(root: &mut Map<String, Value>) -> Result<(), BadBody> {
    fold_spellings(root, "HostConfig", |into, k, v| {
        replace_field(into, k, v);
        Ok(())
    })
}

/// Every spelling of `NetworkingConfig` merged, in document order, into one `NetworkingConfig` key, and
/// every spelling of its `EndpointsConfig` into one map, as Go's decoder fills them: a struct decoded
/// again keeps the fields it had, a map decoded again keeps its keys, and a `null` clears either.
pub fn normalize_networking(root: &mut Map<String, Value>) -> Result<(), BadBody> {
    fold_spellings(root, "NetworkingConfig", |into, k, v| {
        if go_fold(&k) != "endpointsconfig" {
            replace_field(into, k, v);
            return Ok(());
        }
        match v {
            Value::Null => {
                into.remove("EndpointsConfig");
            }
            Value::Object(endpoints) => {
                let slot = into
                    .entry("EndpointsConfig")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(have) = slot {
                    have.extend(endpoints);
                }
            }
            _ => {
                return Err(BadBody(format!(
                    "`{k}` in the create body is not an object"
                )));
            }
        }
        Ok(())
    })
}

/// The field `k` set to `v`, every other spelling of it gone (a later spelling wins, as in Go).
fn replace_field(into: &mut Map<String, Value>, k: String, v: Value) {
    let folded = go_fold(&k);
    into.retain(|have, _| go_fold(have) != folded);
    into.insert(k, v);
}

/// Every spelling of `key` merged, in document order, into one `key`, each field of each spelling put
/// in by `put`; a `null` clears what came before. Err when a spelling is neither an object nor null.
fn fold_spellings(
    root: &mut Map<String, Value>,
    key: &str,
    put: impl Fn(&mut Map<String, Value>, String, Value) -> Result<(), BadBody>,
) -> Result<(), BadBody> {
    let folded = go_fold(key);
    let spellings: Vec<String> = root
        .keys()
        .filter(|k| go_fold(k) == folded)
        .cloned()
        .collect();
    if spellings.is_empty() {
        return Ok(());
    }
    let mut merged: Option<Map<String, Value>> = None;
    for spelling in spellings {
        match root.remove(&spelling) {
            Some(Value::Null) => merged = None,
            Some(Value::Object(fields)) => {
                let into = merged.get_or_insert_with(Map::new);
                for (k, v) in fields {
                    put(into, k, v)?;
                }
            }
            _ => {
                return Err(BadBody(format!(
                    "`{spelling}` in the create body is not an object"
                )));
            }
        }
    }
    if let Some(merged) = merged {
        root.insert(key.into(), Value::Object(merged));
    }
    Ok(())
}

/// A request body as the engine reads it: one JSON object (an empty body is an empty one), its
/// `HostConfig` and `NetworkingConfig` spellings folded into one each. What serde cannot read exactly
/// (trailing data, a lone surrogate, deep nesting: Go reads all three) is an error, so that it is
/// refused, never forwarded as it is.
pub fn read_body(bytes: &[u8]) -> Result<Map<String, Value>, BadBody> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let mut root = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(root)) => root,
        Ok(_) => return Err(BadBody("the body is not a JSON object".into())),
        Err(e) => {
            return Err(BadBody(format!(
                "the body is not JSON the proxy can read with certainty ({e}); send one JSON object, \
                 without trailing data, lone surrogates or deep nesting"
            )));
        }
    };
    normalize(&mut root)?;
    normalize_networking(&mut root)?;
    Ok(root)
}

/// What in a container create's HostConfig (`effective`) would make the test root on the host: a
/// privileged container, the host's pid, ipc, user, uts or cgroup namespace, added capabilities,
/// devices, a bind of a host path, or an unconfined security profile. Empty when there is none.
pub fn host_access(host: &Map<String, Value>) -> Vec<String> {
    let mut found = Vec::new();
    if field(host, "Privileged") == Some(&Value::Bool(true)) {
        found.push("Privileged".to_string());
    }
    for mode in [
        "PidMode",
        "IpcMode",
        "UsernsMode",
        "UTSMode",
        "CgroupnsMode",
    ] {
        if field(host, mode).and_then(Value::as_str) == Some("host") {
            found.push(format!("{mode}: host"));
        }
    }
    for list in ["CapAdd", "Devices", "DeviceRequests"] {
        if field(host, list)
            .and_then(Value::as_array)
            .is_some_and(|l| !l.is_empty())
        {
            found.push(list.to_string());
        }
    }
    let strings = |key| {
        field(host, key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    };
    for bind in strings("Binds") {
        if bind
            .split(':')
            .next()
            .is_some_and(|s| s.starts_with('/') || s.starts_with('.'))
        {
            found.push(format!("the host bind {bind}"));
        }
    }
    for opt in strings("SecurityOpt") {
        if opt.contains("unconfined") {
            found.push(format!("SecurityOpt {opt}"));
        }
    }
    let mounts = field(host, "Mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for mount in mounts.filter_map(Value::as_object) {
        if field(mount, "Type").and_then(Value::as_str) == Some("bind") {
            let source = field(mount, "Source").and_then(Value::as_str).unwrap_or("");
            found.push(format!("the host bind mount {source}"));
        }
    }
    found
}

/// The HostConfig the engine uses for a normalized create body.
pub fn effective(root: &Map<String, Value>) -> Map<String, Value> {
    let Some(Value::Object(inner)) = root.get("HostConfig") else {
        return root.clone();
    };
    let mut host = inner.clone();
    for name in PROMOTED {
        let top = field(root, name).filter(|v| !is_zero(v));
        if let (Some(top), true) = (top, field(&host, name).is_none_or(is_zero)) {
            let folded = go_fold(name);
            host.retain(|k, _| go_fold(k) != folded);
            host.insert(name.into(), top.clone());
        }
    }
    host
}

/// A key of a JSON object, matched as the engine's decoder matches it (the last match wins).
pub fn field<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    let key = go_fold(key);
    object
        .iter()
        .rev()
        .find(|(k, _)| go_fold(k) == key)
        .map(|(_, v)| v)
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn spellings_merge_into_one_key() {
        let mut root = object(
            r#"{"Image":"x","HostConfig":{"Binds":["a:/a"]},"hostconfig":{"Memory":5},"HOSTCONFIG":{"binds":["b:/b"]}}"#,
        );
        normalize(&mut root).unwrap();
        assert_eq!(
            root.keys().filter(|k| go_fold(k) == "hostconfig").count(),
            1
        );
        let host = effective(&root);
        assert_eq!(field(&host, "Binds"), Some(&serde_json::json!(["b:/b"])));
        assert_eq!(field(&host, "Memory"), Some(&serde_json::json!(5)));
        let mut cleared = object(r#"{"HostConfig":{"Binds":["a:/a"]},"hostconfig":null}"#);
        normalize(&mut cleared).unwrap();
        assert!(!cleared.contains_key("HostConfig"));
        assert!(normalize(&mut object(r#"{"HostConfig":[1]}"#)).is_err());
    }

    #[test]
    fn networking_spellings_merge_as_go_fills_them() {
        let mut root = object(
            r#"{"NetworkingConfig":{"EndpointsConfig":{"a":{}}},"networkingconfig":{"endpointsconfig":{"b":{}}}}"#,
        );
        normalize_networking(&mut root).unwrap();
        let endpoints = root["NetworkingConfig"]["EndpointsConfig"]
            .as_object()
            .unwrap();
        assert_eq!(endpoints.keys().collect::<Vec<_>>(), ["a", "b"]);
        let mut cleared =
            object(r#"{"NetworkingConfig":{"EndpointsConfig":{"a":{}}},"NETWORKINGCONFIG":null}"#);
        normalize_networking(&mut cleared).unwrap();
        assert!(!cleared.contains_key("NetworkingConfig"));
        assert!(
            normalize_networking(&mut object(
                r#"{"NetworkingConfig":{"EndpointsConfig":[1]}}"#
            ))
            .is_err()
        );
    }

    #[test]
    fn host_access_is_named() {
        let host = object(
            r#"{"privileged":true,"PidMode":"host","Binds":["vol:/v","/etc:/e"],"CapAdd":["SYS_ADMIN"],
                "Mounts":[{"Type":"bind","Source":"/"},{"Type":"volume","Source":"v"}],"SecurityOpt":["seccomp=unconfined"]}"#,
        );
        assert_eq!(
            host_access(&host),
            [
                "Privileged",
                "PidMode: host",
                "CapAdd",
                "the host bind /etc:/e",
                "SecurityOpt seccomp=unconfined",
                "the host bind mount /"
            ]
        );
        assert!(host_access(&object(r#"{"Binds":["v:/v"],"NetworkMode":"host"}"#)).is_empty());
    }

    #[test]
    fn top_level_fields_without_a_host_config() {
        let root = object(r#"{"Image":"x","Binds":["existing:/data"],"Memory":7}"#);
        let host = effective(&root);
        assert_eq!(
            field(&host, "Binds"),
            Some(&serde_json::json!(["existing:/data"]))
        );
        // With a HostConfig, top-level Binds are ignored but Memory fills an empty limit.
        let root = object(r#"{"Binds":["x:/x"],"memory":7,"HostConfig":{"Memory":0}}"#);
        let host = effective(&root);
        assert_eq!(field(&host, "Binds"), None);
        assert_eq!(field(&host, "Memory"), Some(&serde_json::json!(7)));
    }
}
