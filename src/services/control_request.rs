//! What a control-socket request asks (`control`): the protocol crate's request, with a `start`
//! request's spec checked as a config service is.

use cleantest_protocol::{Ready as WireReady, Request as Wire};

use crate::config::services::{self as config, Ready, ServiceSpec};

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

/// The request on `line`, checked, or why it is refused.
pub(super) fn request(line: &str) -> Result<Request, String> {
    match Wire::parse(line).map_err(|e| e.to_string())? {
        Wire::Start { name, site, spec } => {
            let key = spec.to_value().to_string();
            let ready = spec.ready.into_iter().map(ready).collect();
            let mut checked = config::on_demand(
                &name,
                spec.image,
                spec.command,
                spec.env,
                spec.ports,
                ready,
                spec.ready_timeout,
            )?;
            checked.tmpfs = spec.tmpfs;
            Ok(Request::Start {
                name,
                site,
                spec: Box::new(checked),
                key,
            })
        }
        Wire::Service { name } => Ok(Request::Service(name)),
        Wire::Database { name, key } => Ok(Request::Database { name, key }),
        Wire::Release { name, database } => Ok(Request::Release { name, database }),
    }
}

fn ready(check: WireReady) -> Ready {
    match check {
        WireReady::Tcp(port) => Ready::Tcp(port),
        WireReady::Log(text) => Ready::Log { text, times: 1 },
        WireReady::Exec(argv) => Ready::Exec(argv),
        WireReady::Http { port, path } => Ready::Http { port, path },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
