//! The client side of the runner's control socket (`CLEANTEST_CONTROL`, a unix socket in the session's
//! state directory): one request line of JSON, one answer line, protocol version 1 (documented in
//! cargo-cleantest's ARCHITECTURE.md).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use serde_json::{json, Value};

use std::collections::BTreeMap;

use super::{Database, Endpoint, Error, Ready, Service};

/// The socket's path, set by the runner for every process of the session.
pub(crate) const ENV_CONTROL: &str = "CLEANTEST_CONTROL";
/// The protocol version this crate speaks.
const VERSION: u64 = 1;

/// Asks the runner (or the session host) at `path` to start `service` (or get it, if started), on
/// behalf of the code at `site`.
pub(crate) fn start(service: &Service, site: &str, path: &str) -> Result<Endpoint, Error> {
    let request = json!({
        "v": VERSION,
        "op": "start",
        "name": service.name,
        "site": site,
        "spec": spec(service),
    });
    ask(path, &request, &service.name)
}

/// Asks the session host at `path` for the service `name` of the workspace's
/// `.config/cleantest.toml`, started on demand (under `cargo cleantest` these are in the environment).
pub(crate) fn service(name: &str, path: &str) -> Result<Endpoint, Error> {
    let request = json!({"v": VERSION, "op": "service", "name": name});
    ask(path, &request, name)
}

/// Asks for the database of the isolating service `name` for the test `key`.
pub(crate) fn database(name: &str, key: &str, path: &str) -> Result<Database, Error> {
    let request = json!({"v": VERSION, "op": "database", "name": name, "key": key});
    let value = answer(path, &request, name)?;
    let database = value.get("database").ok_or_else(|| Error::Control {
        reason: "the runner's answer has no database".into(),
    })?;
    let db_name = database
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Control {
            reason: "the runner's answer names no database".into(),
        })?;
    Ok(Database::new(name, db_name.to_string(), exports(database)))
}

/// Gives the database `database` of `name` back to the session host at `path` (best effort: what is
/// not given back goes with the container).
pub(crate) fn release(name: &str, database: &str, path: &str) {
    let request = json!({"v": VERSION, "op": "release", "name": name, "database": database});
    let _ = answer(path, &request, name);
}

/// One request line, one answer line: the endpoint it gives.
fn ask(path: &str, request: &Value, name: &str) -> Result<Endpoint, Error> {
    endpoint(name, &answer(path, request, name)?)
}

/// One request line, one answer line: the answer when it is `ok`, else the error it gives.
fn answer(path: &str, request: &Value, name: &str) -> Result<Value, Error> {
    let fail = |e: std::io::Error| Error::Control {
        reason: format!("{path}: {e}"),
    };
    let mut stream = UnixStream::connect(path).map_err(fail)?;
    let mut line = request.to_string();
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(fail)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(fail)?;
    checked(name, &answer)
}

/// The `exports` object of an answer's endpoint or database: the rendered exports, by name.
fn exports(value: &Value) -> BTreeMap<String, String> {
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

/// The spec as the runner reads it.
fn spec(service: &Service) -> Value {
    let ready: Vec<Value> = service
        .ready
        .iter()
        .map(|r| match r {
            Ready::Tcp(port) => json!({ "tcp": port }),
            Ready::Log(text) => json!({ "log": text }),
            Ready::Exec(argv) => json!({ "exec": argv }),
            Ready::Http(port, path) => json!({ "http": port, "path": path }),
        })
        .collect();
    json!({
        "image": service.image,
        "command": service.command,
        "env": service.env,
        "ports": service.ports,
        "tmpfs": service.tmpfs,
        "ready": ready,
        "ready_timeout_ms": service.ready_timeout.map(|d| d.as_millis() as u64),
    })
}

/// The runner's answer when it is `ok`, or the error it gives.
fn checked(name: &str, answer: &str) -> Result<Value, Error> {
    let value: Value = serde_json::from_str(answer.trim()).map_err(|e| Error::Control {
        reason: format!("the runner's answer is not JSON ({e}): {:?}", answer.trim()),
    })?;
    if let Some(known) = value.get("known").and_then(Value::as_array) {
        // The host's config has no service of that name.
        return Err(Error::UnknownService {
            name: name.to_string(),
            known: known
                .iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect(),
        });
    }
    if value.get("ok").and_then(Value::as_bool) != Some(true) {
        let reason = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("the runner gave no reason")
            .to_string();
        return Err(Error::Start {
            service: name.to_string(),
            reason,
        });
    }
    Ok(value)
}

/// The endpoint in the runner's answer.
fn endpoint(name: &str, value: &Value) -> Result<Endpoint, Error> {
    let endpoint = value.get("endpoint").ok_or_else(|| Error::Control {
        reason: "the runner's answer has no endpoint".into(),
    })?;
    let host = endpoint
        .get("host")
        .and_then(Value::as_str)
        .unwrap_or("127.0.0.1")
        .to_string();
    let ports = endpoint
        .get("ports")
        .and_then(Value::as_object)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|(c, h)| Some((c.parse().ok()?, u16::try_from(h.as_u64()?).ok()?)))
                .collect()
        })
        .unwrap_or_default();
    let exports = exports(endpoint);
    Ok(Endpoint {
        name: name.to_string(),
        host,
        ports,
        exports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer line as `ask` reads it.
    fn parse(name: &str, answer: &str) -> Result<Endpoint, Error> {
        endpoint(name, &checked(name, answer)?)
    }

    #[test]
    fn answers_become_endpoints_or_errors() {
        let ok = r#"{"v":1,"ok":true,"endpoint":{"host":"127.0.0.1","ports":{"6379":49153}}}"#;
        let cache = parse("cache", ok).unwrap();
        assert_eq!(cache.port(6379), Ok(49153));
        let db = r#"{"v":1,"ok":true,"endpoint":{"host":"h","ports":{"5432":1},"exports":{"DATABASE_URL":"postgres://h:1/db"}}}"#;
        let db = parse("db", db).unwrap();
        assert_eq!(
            db.export("DATABASE_URL").as_deref(),
            Some("postgres://h:1/db")
        );
        let refused = r#"{"v":1,"ok":false,"error":"container abc has died"}"#;
        assert!(matches!(parse("cache", refused), Err(Error::Start { .. })));
        let unknown = r#"{"v":1,"ok":false,"error":"no service","known":["db"]}"#;
        assert_eq!(
            parse("cache", unknown),
            Err(Error::UnknownService {
                name: "cache".into(),
                known: vec!["db".into()]
            })
        );
        assert!(matches!(
            parse("cache", "garbage"),
            Err(Error::Control { .. })
        ));
    }

    #[test]
    fn a_spec_carries_every_setting() {
        let s = Service::new("cache", "redis")
            .command(["redis-server"])
            .env("K", "V")
            .port(6379)
            .ready_tcp(6379)
            .ready_http(8080, "/h");
        let v = spec(&s);
        assert_eq!(v["image"], "redis");
        assert_eq!(v["ports"][0], 6379);
        assert_eq!(v["ready"][1]["path"], "/h");
        assert_eq!(v["env"][0][1], "V");
    }
}
