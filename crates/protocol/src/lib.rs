//! The wire of cargo-cleantest's control socket (`CLEANTEST_CONTROL`): a client sends one request line
//! of JSON and reads one answer line. This crate holds only that wire — the request and answer types,
//! their JSON, and the protocol version — shared by the runner (which serves it) and the `cleantest`
//! crate (which asks). Who may ask, and what a request does, are the runner's.
//!
//! It depends on `serde_json` alone, so that the `cleantest` crate stays std + serde_json.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_json::{json, Map, Value};

/// The protocol version: every line carries it as `"v"`, and a request of another version is refused.
pub const VERSION: u64 = 1;

/// A readiness check of a service declared in test code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    Tcp(u16),
    Log(String),
    Exec(Vec<String>),
    Http { port: u16, path: String },
}

/// A service as test code declares it (`cleantest::Service`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    pub image: String,
    pub command: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub ports: Vec<u16>,
    pub tmpfs: Vec<String>,
    pub ready: Vec<Ready>,
    pub ready_timeout: Option<Duration>,
}

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `start`: a service declared in test code, started or got, for the code at `site`.
    Start {
        name: String,
        site: String,
        spec: Spec,
    },
    /// `service`: a config service, by name (served by a session host).
    Service { name: String },
    /// `database`: a database of its own on the isolating service `name`, for the test `key`.
    Database { name: String, key: String },
    /// `release`: the caller is done with the database `database` of `name`.
    Release { name: String, database: String },
}

/// A service's endpoint, as an answer gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    /// Host port by container port.
    pub ports: BTreeMap<u16, u16>,
    /// Rendered exports, by name.
    pub exports: Vec<(String, String)>,
}

/// A database handed to a test, as an answer gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Database {
    pub service: String,
    pub name: String,
    pub exports: Vec<(String, String)>,
}

/// One answer line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Endpoint(Endpoint),
    Database(Database),
    /// To a `release`: whether the database was given back.
    Released(bool),
    /// The request was refused; `known` lists the config services there are when it named none of
    /// them.
    Refused {
        error: String,
        known: Option<Vec<String>>,
    },
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A request line that is not JSON.
    RequestNotJson(String),
    /// An answer line that is not JSON (the parse error, the line).
    AnswerNotJson(String, String),
    /// A request of another version (as the line gives it, or none).
    Version(Option<String>),
    UnknownOperation,
    NoName,
    /// A request without the string field it needs.
    Missing(&'static str),
    NoSpec,
    NoImage,
    BadCommand,
    BadPorts,
    UnknownReady(String),
    /// An answer with none of an endpoint, a database or a release.
    NoAnswer,
    NoDatabaseName,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::RequestNotJson(e) => write!(f, "the request is not JSON: {e}"),
            WireError::AnswerNotJson(e, line) => {
                write!(f, "the runner's answer is not JSON ({e}): {line:?}")
            }
            WireError::Version(found) => write!(
                f,
                "protocol version {} is not served (this runner speaks {VERSION}): update cleantest or cargo-cleantest",
                found.as_deref().unwrap_or("none")
            ),
            WireError::UnknownOperation => {
                f.write_str("unknown operation (known: start, service, database, release)")
            }
            WireError::NoName => f.write_str("the request names no service"),
            WireError::Missing(key) => write!(f, "the request has no `{key}`"),
            WireError::NoSpec => f.write_str("the request has no spec"),
            WireError::NoImage => f.write_str("the spec has no image"),
            WireError::BadCommand => f.write_str("`command` is not a list of strings"),
            WireError::BadPorts => f.write_str("`ports` is not a list of port numbers"),
            WireError::UnknownReady(check) => write!(f, "unknown readiness check {check}"),
            WireError::NoAnswer => {
                f.write_str("the runner's answer has no endpoint, database or release")
            }
            WireError::NoDatabaseName => f.write_str("the runner's answer names no database"),
        }
    }
}

impl std::error::Error for WireError {}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn port(v: &Value) -> Option<u16> {
    v.as_u64().and_then(|p| u16::try_from(p).ok())
}

fn pairs_value(pairs: &[(String, String)]) -> Map<String, Value> {
    pairs.iter().map(|(k, v)| (k.clone(), json!(v))).collect()
}

fn pairs_of(value: &Value) -> Vec<(String, String)> {
    value
        .get("exports")
        .and_then(Value::as_object)
        .map(|exports| {
            exports
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

impl Ready {
    fn to_value(&self) -> Value {
        match self {
            Ready::Tcp(port) => json!({ "tcp": port }),
            Ready::Log(text) => json!({ "log": text }),
            Ready::Exec(argv) => json!({ "exec": argv }),
            Ready::Http { port, path } => json!({ "http": port, "path": path }),
        }
    }

    fn from_value(check: &Value) -> Result<Ready, WireError> {
        if let Some(p) = check.get("tcp").and_then(port) {
            Ok(Ready::Tcp(p))
        } else if let Some(text) = text(check, "log") {
            Ok(Ready::Log(text))
        } else if let Some(argv) = strings(check.get("exec")).filter(|a| !a.is_empty()) {
            Ok(Ready::Exec(argv))
        } else if let Some(p) = check.get("http").and_then(port) {
            Ok(Ready::Http {
                port: p,
                path: text(check, "path").unwrap_or_else(|| "/".into()),
            })
        } else {
            Err(WireError::UnknownReady(check.to_string()))
        }
    }
}

impl Spec {
    /// The spec as JSON; also its identity, when two callers' specs are compared.
    pub fn to_value(&self) -> Value {
        let ready: Vec<Value> = self.ready.iter().map(Ready::to_value).collect();
        json!({
            "image": self.image,
            "command": self.command,
            "env": self.env,
            "ports": self.ports,
            "tmpfs": self.tmpfs,
            "ready": ready,
            "ready_timeout_ms": self.ready_timeout.map(|d| d.as_millis() as u64),
        })
    }

    fn from_value(raw: &Value) -> Result<Spec, WireError> {
        let image = text(raw, "image").ok_or(WireError::NoImage)?;
        let command = match raw.get("command").filter(|c| !c.is_null()) {
            Some(c) => Some(strings(Some(c)).ok_or(WireError::BadCommand)?),
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
        let ports = raw
            .get("ports")
            .and_then(Value::as_array)
            .map(|ps| ps.iter().map(port).collect::<Option<Vec<u16>>>())
            .unwrap_or(Some(Vec::new()))
            .ok_or(WireError::BadPorts)?;
        let ready = raw
            .get("ready")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(Ready::from_value)
            .collect::<Result<_, _>>()?;
        Ok(Spec {
            image,
            command,
            env,
            ports,
            tmpfs: strings(raw.get("tmpfs")).unwrap_or_default(),
            ready,
            ready_timeout: raw
                .get("ready_timeout_ms")
                .and_then(Value::as_u64)
                .map(Duration::from_millis),
        })
    }
}

impl Request {
    /// The request line, without its newline.
    pub fn to_line(&self) -> String {
        let value = match self {
            Request::Start { name, site, spec } => json!({
                "v": VERSION, "op": "start", "name": name, "site": site, "spec": spec.to_value(),
            }),
            Request::Service { name } => json!({"v": VERSION, "op": "service", "name": name}),
            Request::Database { name, key } => {
                json!({"v": VERSION, "op": "database", "name": name, "key": key})
            }
            Request::Release { name, database } => {
                json!({"v": VERSION, "op": "release", "name": name, "database": database})
            }
        };
        value.to_string()
    }

    /// The request on `line`, checked field by field.
    pub fn parse(line: &str) -> Result<Request, WireError> {
        let value: Value = serde_json::from_str(line.trim())
            .map_err(|e| WireError::RequestNotJson(e.to_string()))?;
        if value.get("v").and_then(Value::as_u64) != Some(VERSION) {
            return Err(WireError::Version(value.get("v").map(Value::to_string)));
        }
        let name = || text(&value, "name").ok_or(WireError::NoName);
        let field = |key: &'static str| text(&value, key).ok_or(WireError::Missing(key));
        match value.get("op").and_then(Value::as_str) {
            Some("start") => {
                let name = name()?;
                let site = text(&value, "site").unwrap_or_else(|| "an unknown call site".into());
                let spec = Spec::from_value(value.get("spec").ok_or(WireError::NoSpec)?)?;
                Ok(Request::Start { name, site, spec })
            }
            Some("service") => Ok(Request::Service { name: name()? }),
            Some("database") => Ok(Request::Database {
                name: name()?,
                key: field("key")?,
            }),
            Some("release") => Ok(Request::Release {
                name: name()?,
                database: field("database")?,
            }),
            _ => Err(WireError::UnknownOperation),
        }
    }
}

impl Answer {
    /// The answer line, without its newline.
    pub fn to_line(&self) -> String {
        let value = match self {
            Answer::Endpoint(endpoint) => {
                let ports: Map<String, Value> = endpoint
                    .ports
                    .iter()
                    .map(|(c, h)| (c.to_string(), json!(h)))
                    .collect();
                json!({"v": VERSION, "ok": true, "endpoint": {
                    "name": endpoint.name, "host": endpoint.host, "ports": ports,
                    "exports": pairs_value(&endpoint.exports)}})
            }
            Answer::Database(database) => json!({"v": VERSION, "ok": true, "database": {
                "service": database.service, "name": database.name,
                "exports": pairs_value(&database.exports)}}),
            Answer::Released(released) => json!({"v": VERSION, "ok": true, "released": released}),
            Answer::Refused { error, known: None } => {
                json!({"v": VERSION, "ok": false, "error": error})
            }
            Answer::Refused {
                error,
                known: Some(known),
            } => json!({"v": VERSION, "ok": false, "known": known, "error": error}),
        };
        value.to_string()
    }

    /// A refusal.
    pub fn refused(error: impl fmt::Display) -> Answer {
        Answer::Refused {
            error: error.to_string(),
            known: None,
        }
    }

    /// The answer on `line`.
    pub fn parse(line: &str) -> Result<Answer, WireError> {
        let line = line.trim();
        let value: Value = serde_json::from_str(line)
            .map_err(|e| WireError::AnswerNotJson(e.to_string(), line.to_string()))?;
        let known = value.get("known").and_then(Value::as_array).map(|known| {
            known
                .iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        });
        if known.is_some() || value.get("ok").and_then(Value::as_bool) != Some(true) {
            let error = text(&value, "error").unwrap_or_else(|| "the runner gave no reason".into());
            return Ok(Answer::Refused { error, known });
        }
        if let Some(endpoint) = value.get("endpoint") {
            let ports = endpoint
                .get("ports")
                .and_then(Value::as_object)
                .map(|ports| {
                    ports
                        .iter()
                        .filter_map(|(c, h)| Some((c.parse().ok()?, port(h)?)))
                        .collect()
                })
                .unwrap_or_default();
            return Ok(Answer::Endpoint(Endpoint {
                name: text(endpoint, "name").unwrap_or_default(),
                host: text(endpoint, "host").unwrap_or_else(|| "127.0.0.1".into()),
                ports,
                exports: pairs_of(endpoint),
            }));
        }
        if let Some(database) = value.get("database") {
            return Ok(Answer::Database(Database {
                service: text(database, "service").unwrap_or_default(),
                name: text(database, "name").ok_or(WireError::NoDatabaseName)?,
                exports: pairs_of(database),
            }));
        }
        match value.get("released").and_then(Value::as_bool) {
            Some(released) => Ok(Answer::Released(released)),
            None => Err(WireError::NoAnswer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_reads_back_as_written() {
        let spec = Spec {
            image: "redis".into(),
            command: Some(vec!["redis-server".into()]),
            env: vec![("K".into(), "V".into())],
            ports: vec![6379],
            tmpfs: vec!["/data".into()],
            ready: vec![
                Ready::Tcp(6379),
                Ready::Log("ready".into()),
                Ready::Exec(vec!["true".into()]),
                Ready::Http {
                    port: 8080,
                    path: "/h".into(),
                },
            ],
            ready_timeout: Some(Duration::from_millis(5000)),
        };
        for request in [
            Request::Start {
                name: "cache".into(),
                site: "t.rs:3".into(),
                spec,
            },
            Request::Service { name: "db".into() },
            Request::Database {
                name: "db".into(),
                key: "t".into(),
            },
            Request::Release {
                name: "db".into(),
                database: "d1".into(),
            },
        ] {
            assert_eq!(Request::parse(&request.to_line()), Ok(request));
        }
    }

    #[test]
    fn every_answer_reads_back_as_written() {
        for answer in [
            Answer::Endpoint(Endpoint {
                name: "db".into(),
                host: "h".into(),
                ports: [(5432, 1)].into(),
                exports: vec![("DATABASE_URL".into(), "postgres://h:1/db".into())],
            }),
            Answer::Database(Database {
                service: "db".into(),
                name: "d1".into(),
                exports: vec![],
            }),
            Answer::Released(true),
            Answer::refused("container abc has died"),
            Answer::Refused {
                error: "no service".into(),
                known: Some(vec!["db".into()]),
            },
        ] {
            assert_eq!(Answer::parse(&answer.to_line()), Ok(answer));
        }
    }

    #[test]
    fn bad_lines_say_what_is_wrong_and_never_panic() {
        for (line, says) in [
            ("", "not JSON"),
            ("[]", "protocol version none"),
            (r#"{"v":2}"#, "protocol version 2"),
            (r#"{"v":1,"op":"stop"}"#, "unknown operation"),
            (r#"{"v":1,"op":"start"}"#, "names no service"),
            (r#"{"v":1,"op":"start","name":"x"}"#, "no spec"),
            (r#"{"v":1,"op":"start","name":"x","spec":{}}"#, "no image"),
            (
                r#"{"v":1,"op":"start","name":"x","spec":{"image":"i","ports":[70000]}}"#,
                "port numbers",
            ),
            (
                r#"{"v":1,"op":"start","name":"x","spec":{"image":"i","command":[1]}}"#,
                "list of strings",
            ),
            (
                r#"{"v":1,"op":"start","name":"x","spec":{"image":"i","ready":[{"nope":1}]}}"#,
                "unknown readiness",
            ),
            (r#"{"v":1,"op":"database","name":"x"}"#, "no `key`"),
        ] {
            let err = Request::parse(line).unwrap_err().to_string();
            assert!(err.contains(says), "{line}: {err}");
        }
        assert!(matches!(
            Answer::parse("garbage"),
            Err(WireError::AnswerNotJson(..))
        ));
        assert_eq!(
            Answer::parse(r#"{"v":1,"ok":true}"#),
            Err(WireError::NoAnswer)
        );
        assert_eq!(
            Answer::parse(r#"{"v":1,"ok":false}"#),
            Ok(Answer::refused("the runner gave no reason"))
        );
    }
}
