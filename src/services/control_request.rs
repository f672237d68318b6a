//! Reading one control-socket request (`control`): who asks — the peer, by its credentials, must be a
//! process of the session — and what, from the request's one JSON line, checked field by field.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;

use crate::config::services::{self as config, Ready, ServiceSpec};

/// Who asks: a process of the session.
pub(super) struct Caller {
    pub pid: i32,
    /// Its unit (`binary`, `test`).
    pub unit: (String, String),
    /// The databases its environment says it was given (`CLEANTEST_DATABASE_<NAME>`), by `<NAME>`.
    pub databases: Vec<(String, String)>,
}

/// The peer, if it is a process of the session: it carries the session's id, or descends from this
/// process, or (for a session host) from the host's key process.
pub(super) fn caller(
    stream: &UnixStream,
    session: &str,
    key: Option<i32>,
) -> Result<Caller, String> {
    let pid =
        crate::sys::peer_pid(stream).map_err(|e| format!("cannot identify the caller: {e}"))?;
    let environ = |pid: i32| crate::sys::environ(pid).unwrap_or_default();
    let var = crate::sys::env_var;
    let env = environ(pid);
    let me = std::process::id() as i32;
    // A session host serves its key's descendants only: its session id can be read in its socket's
    // path, so a value in the environment proves nothing there. The runner serves its descendants, and
    // processes carrying its session (one that escaped its subreaper still does).
    let member = match key {
        Some(key) => descends_from(pid, key),
        None => {
            var(&env, crate::contract::ENV_SESSION).as_deref() == Some(session)
                || descends_from(pid, me)
        }
    };
    if !member {
        return Err(format!(
            "process {pid} is not part of session {session}: only its tests may start its services"
        ));
    }
    let prefix = crate::contract::ENV_DATABASE_PREFIX.as_bytes();
    let databases = env
        .split(|b| *b == 0)
        .filter_map(|pair| pair.strip_prefix(prefix))
        .filter_map(|rest| {
            let text = std::str::from_utf8(rest).ok()?;
            let (name, value) = text.split_once('=')?;
            Some((name.to_string(), value.to_string()))
        })
        .collect();
    Ok(Caller {
        pid,
        unit: (
            var(&env, crate::contract::ENV_BINARY).unwrap_or_default(),
            var(&env, crate::contract::ENV_TEST).unwrap_or_default(),
        ),
        databases,
    })
}

/// Whether `pid`'s ancestry reaches `ancestor`.
fn descends_from(mut pid: i32, ancestor: i32) -> bool {
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        let Some(parent) = crate::sys::stat(pid).map(|s| s.ppid) else {
            return false;
        };
        if parent <= 1 {
            return false;
        }
        pid = parent;
    }
    false
}

/// What a peer asks, from its one request line.
#[derive(Debug)]
pub(super) enum Request {
    /// `start`: a service declared in test code, with its call site, its checked spec, and the spec as
    /// text (to compare callers' specs).
    Start {
        name: String,
        site: String,
        /// Boxed: a spec is large beside a name.
        spec: Box<ServiceSpec>,
        key: String,
    },
    /// `service`: a config service, by name (served by a session host).
    Service(String),
    /// `database`: a database of its own on the isolating service `name`, for the caller's test `key`.
    Database { name: String, key: String },
    /// `release`: the caller is done with the database `database` of `name` (a session host drops it).
    Release { name: String, database: String },
}

/// The protocol version served.
pub(super) const VERSION: u64 = 1;

/// The request on `line`, checked, or why it is refused.
pub(super) fn request(line: &str) -> Result<Request, String> {
    let value: Value =
        serde_json::from_str(line.trim()).map_err(|e| format!("the request is not JSON: {e}"))?;
    if value.get("v").and_then(Value::as_u64) != Some(VERSION) {
        return Err(format!(
            "protocol version {} is not served (this runner speaks {VERSION}): update cleantest or cargo-cleantest",
            value.get("v").map_or("none".to_string(), Value::to_string)
        ));
    }
    let name = || {
        value
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| "the request names no service".to_string())
    };
    let field = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("the request has no `{key}`"))
    };
    match value.get("op").and_then(Value::as_str) {
        Some("start") => start_request(&value, name()?),
        Some("service") => Ok(Request::Service(name()?)),
        Some("database") => Ok(Request::Database {
            name: name()?,
            key: field("key")?,
        }),
        Some("release") => Ok(Request::Release {
            name: name()?,
            database: field("database")?,
        }),
        _ => Err("unknown operation (known: start, service, database, release)".into()),
    }
}

/// A `start` request's call site and spec, checked as a config service is.
fn start_request(value: &Value, name: String) -> Result<Request, String> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let site = text(value, "site").unwrap_or_else(|| "an unknown call site".into());
    let raw = value.get("spec").ok_or("the request has no spec")?;
    let strings = |v: Option<&Value>| -> Option<Vec<String>> {
        v?.as_array()?
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let image = text(raw, "image").ok_or("the spec has no image")?;
    let command = raw.get("command").filter(|c| !c.is_null());
    let command = match command {
        Some(c) => Some(strings(Some(c)).ok_or("`command` is not a list of strings")?),
        None => None,
    };
    let env = raw
        .get("env")
        .and_then(Value::as_array)
        .map(|pairs| {
            pairs
                .iter()
                .filter_map(|p| {
                    Some((
                        p.get(0)?.as_str()?.to_string(),
                        p.get(1)?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let port = |v: &Value| v.as_u64().and_then(|p| u16::try_from(p).ok());
    let ports = raw
        .get("ports")
        .and_then(Value::as_array)
        .map(|ps| ps.iter().map(port).collect::<Option<Vec<u16>>>())
        .unwrap_or(Some(Vec::new()))
        .ok_or("`ports` is not a list of port numbers")?;
    let tmpfs = strings(raw.get("tmpfs")).unwrap_or_default();
    let mut ready = Vec::new();
    for check in raw
        .get("ready")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        ready.push(if let Some(p) = check.get("tcp").and_then(port) {
            Ready::Tcp(p)
        } else if let Some(text) = text(check, "log") {
            Ready::Log { text, times: 1 }
        } else if let Some(argv) = strings(check.get("exec")).filter(|a| !a.is_empty()) {
            Ready::Exec(argv)
        } else if let Some(p) = check.get("http").and_then(port) {
            Ready::Http {
                port: p,
                path: text(check, "path").unwrap_or_else(|| "/".into()),
            }
        } else {
            return Err(format!("unknown readiness check {check}"));
        });
    }
    let timeout = raw
        .get("ready_timeout_ms")
        .and_then(Value::as_u64)
        .map(Duration::from_millis);
    let mut spec = config::on_demand(&name, image, command, env, ports, ready, timeout)?;
    spec.tmpfs = tmpfs;
    Ok(Request::Start {
        name,
        site,
        spec: Box::new(spec),
        key: raw.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_checked_like_a_config_service() {
        let line = r#"{"v":1,"op":"start","name":"cache","site":"t.rs:3","spec":{"image":"redis","command":["redis-server"],"env":[["K","V"]],"ports":[6379],"ready":[{"tcp":6379},{"http":6379,"path":"/h"}],"ready_timeout_ms":5000}}"#;
        let Request::Start {
            name, site, spec, ..
        } = request(line).unwrap()
        else {
            panic!("not a start request: {line}");
        };
        assert_eq!((name.as_str(), site.as_str()), ("cache", "t.rs:3"));
        assert_eq!(spec.ports, vec![6379]);
        assert_eq!(spec.ready_timeout, Duration::from_secs(5));
        assert_eq!(spec.env, vec![("K".to_string(), "V".to_string())]);
    }

    #[test]
    fn bad_requests_say_what_is_wrong_and_never_panic() {
        for (line, says) in [
            ("", "not JSON"),
            ("[]", "protocol version"),
            (r#"{"v":2}"#, "protocol version 2"),
            (r#"{"v":1,"op":"stop"}"#, "unknown operation"),
            (r#"{"v":1,"op":"start"}"#, "names no service"),
            (r#"{"v":1,"op":"start","name":"x","spec":{}}"#, "no image"),
            (
                r#"{"v":1,"op":"start","name":"x","spec":{"image":"i","ready":[{"tcp":1}]}}"#,
                "add it to `ports`",
            ),
            (
                r#"{"v":1,"op":"start","name":"x","spec":{"image":"i","ports":[70000]}}"#,
                "port numbers",
            ),
            (
                r#"{"v":1,"op":"start","name":"-x","spec":{"image":"i"}}"#,
                "service name",
            ),
            (
                r#"{"v":1,"op":"start","name":"x","spec":{"image":"i","ready":[{"nope":1}]}}"#,
                "unknown readiness",
            ),
        ] {
            let err = request(line).unwrap_err();
            assert!(err.contains(says), "{line}: {err}");
        }
    }
}
