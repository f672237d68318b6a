//! The client side of the runner's control socket (`CLEANTEST_CONTROL`, a unix socket in the session's
//! state directory): one request line, one answer line, in the wire of the `cleantest-protocol` crate
//! (the runner speaks the same crate, so the version is defined once).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use cleantest_protocol::{Answer, Request, Spec};

use super::{Database, Endpoint, Error};

/// The socket's path, set by the runner for every process of the session.
pub(crate) const ENV_CONTROL: &str = "CLEANTEST_CONTROL";

/// Asks the runner (or the session host) at `path` to start `service` (or get it, if started), on
/// behalf of the code at `site`.
pub(crate) fn start(name: &str, spec: Spec, site: &str, path: &str) -> Result<Endpoint, Error> {
    let request = Request::Start {
        name: name.to_string(),
        site: site.to_string(),
        spec,
    };
    endpoint(name, answer(path, &request, name)?)
}

/// Asks the session host at `path` for the service `name` of the workspace's
/// `.config/cleantest.toml`, started on demand (under `cargo cleantest` these are in the environment).
pub(crate) fn service(name: &str, path: &str) -> Result<Endpoint, Error> {
    let request = Request::Service {
        name: name.to_string(),
    };
    endpoint(name, answer(path, &request, name)?)
}

/// Asks for the database of the isolating service `name` for the test `key`.
pub(crate) fn database(name: &str, key: &str, path: &str) -> Result<Database, Error> {
    let request = Request::Database {
        name: name.to_string(),
        key: key.to_string(),
    };
    match answer(path, &request, name)? {
        Answer::Database(database) => Ok(Database::new(
            name,
            database.name,
            database.exports.into_iter().collect(),
        )),
        _ => Err(Error::Control {
            reason: "the runner's answer has no database".into(),
        }),
    }
}

/// Gives the database `database` of `name` back to the session host at `path` (best effort: what is
/// not given back goes with the container).
pub(crate) fn release(name: &str, database: &str, path: &str) {
    let request = Request::Release {
        name: name.to_string(),
        database: database.to_string(),
    };
    let _ = answer(path, &request, name);
}

/// One request line, one answer line: the answer when it is not a refusal, else the error it gives.
fn answer(path: &str, request: &Request, name: &str) -> Result<Answer, Error> {
    let fail = |e: std::io::Error| Error::Control {
        reason: format!("{path}: {e}"),
    };
    let mut stream = UnixStream::connect(path).map_err(fail)?;
    let mut line = request.to_line();
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(fail)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(fail)?;
    checked(name, &answer)
}

/// The runner's answer when it is not a refusal, or the error it gives.
fn checked(name: &str, answer: &str) -> Result<Answer, Error> {
    match Answer::parse(answer) {
        Err(e) => Err(Error::Control {
            reason: e.to_string(),
        }),
        // The host's config has no service of that name.
        Ok(Answer::Refused {
            known: Some(known), ..
        }) => Err(Error::UnknownService {
            name: name.to_string(),
            known,
        }),
        Ok(Answer::Refused { error, known: None }) => Err(Error::Start {
            service: name.to_string(),
            reason: error,
        }),
        Ok(answer) => Ok(answer),
    }
}

/// The endpoint in the runner's answer.
fn endpoint(name: &str, answer: Answer) -> Result<Endpoint, Error> {
    let Answer::Endpoint(endpoint) = answer else {
        return Err(Error::Control {
            reason: "the runner's answer has no endpoint".into(),
        });
    };
    Ok(Endpoint {
        name: name.to_string(),
        host: endpoint.host,
        ports: endpoint.ports,
        exports: endpoint.exports.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer line as `start` reads it.
    fn parse(name: &str, answer: &str) -> Result<Endpoint, Error> {
        endpoint(name, checked(name, answer)?)
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
}
