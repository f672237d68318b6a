//! # cleantest
//!
//! The test-author side of cargo-cleantest (`cargo test` that leaves nothing behind): typed endpoints
//! for the session services a suite declares in `.config/cleantest.toml`, and shared containers declared
//! in test code that the runner starts once for the whole session, shares with every test process
//! (every binary, every isolated test, every doctest) and removes when the session ends.
//!
//! It is blocking, needs nothing but std and serde_json (through `cleantest-protocol`, the control
//! socket's wire, which it shares with the runner), and works the same from sync tests and from
//! any async runtime. Add it as a dev-dependency:
//!
//! ```toml
//! [dev-dependencies]
//! # Not on crates.io yet: a path to a checkout of cargo-cleantest (or `git = "URL"` of its repository).
//! cleantest = { path = "../cargo-cleantest/cleantest" }
//! ```
//!
//! A service declared in the config file:
//!
//! ```
//! match cleantest::service("db") {
//!     Ok(db) => {
//!         let url = db.render("postgres://postgres@{host}:{port:5432}/postgres").unwrap();
//!         assert!(url.starts_with("postgres://"));
//!     }
//!     // Under plain `cargo test`, or without a `db` service: an error that says what to do.
//!     Err(e) => eprintln!("{e}"),
//! }
//! ```
//!
//! A container declared in test code, started on demand by the runner, the same one for every caller
//! in the session:
//!
//! ```
//! use std::time::Duration;
//!
//! let cache = cleantest::Service::new("cache", "cleantest-redis:7")
//!     .command(["redis-server", "--save", ""])
//!     .port(6379)
//!     .ready_tcp(6379)
//!     .ready_timeout(Duration::from_secs(60))
//!     .start();
//! match cache {
//!     Ok(cache) => println!("redis at {}:{}", cache.host(), cache.port(6379).unwrap()),
//!     Err(e) => eprintln!("{e}"),
//! }
//! ```
//!
//! A database of the test's own, on a service that isolates (`isolate = "database"` or `"db-index"`
//! in `.config/cleantest.toml`): see [`database`].
//!
//! # Under any runner
//!
//! Outside `cargo cleantest` (plain `cargo test`, `cargo nextest run`, an IDE's "Run test"), the first
//! call in a test process finds or starts a *session host* for the whole cargo invocation: the
//! installed `cargo-cleantest` in a hidden mode, found by `CLEANTEST_RUNNER`, then PATH, then
//! `$CARGO_HOME/bin`. It is keyed by the nearest ancestor `cargo` (or `cargo-*`) process, so every
//! test binary and per-test process of one invocation shares its containers, and it removes them when
//! that process exits. It reads `[services.NAME]` from the workspace's `.config/cleantest.toml` and
//! starts each on the first [`service`] call, with its readiness checks; its `export`s come with the
//! endpoint ([`Endpoint::export`]). It says once on stderr that it started.
//!
//! | runner | containers shared by | removed when |
//! | --- | --- | --- |
//! | `cargo cleantest` | every process of the run | the run ends, however it ends |
//! | `cargo test` | every binary and doctest of that invocation | cargo exits (pass, fail, Ctrl-C, killed) |
//! | `cargo nextest run` | every per-test process | cargo-nextest exits |
//! | IDE (`cargo test -- --exact NAME`) | that invocation | cargo exits |
//!
//! `CLEANTEST_HOST=off` turns the host off: then every function returns [`Error::NotInSession`],
//! whose message says how to run the tests. With no binary found, [`Error::NoRunner`] says how to
//! install it.

mod control;
mod database;
mod host;
mod service;

pub use database::{database, Database};
pub use service::Service;

use std::collections::BTreeMap;
use std::fmt;

/// The session id's variable, set by the runner for every process of the session.
const ENV_SESSION: &str = "CLEANTEST_SESSION";
/// `CLEANTEST_SERVICE_<NAME>_HOST` and `_PORT_<CONTAINER_PORT>`.
const ENV_SERVICE_PREFIX: &str = "CLEANTEST_SERVICE_";

/// What went wrong. Every message says what to do about it.
///
/// `Debug` prints the same message as `Display` (as `anyhow` does), because `.unwrap()`, `.expect()`
/// and a test returning `Result` show an error through `Debug`, and a variant's name alone doesn't say
/// what to do. `{:#?}` adds the variant's fields.
///
/// ```
/// let e = cleantest::Error::NotInSession;
/// assert_eq!(format!("{e:?}"), e.to_string());
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Not running under `cargo cleantest`.
    NotInSession,
    /// The session has no service of that name.
    UnknownService { name: String, known: Vec<String> },
    /// The service does not publish that container port.
    UnknownPort {
        service: String,
        port: u16,
        published: Vec<u16>,
    },
    /// A template names something that cannot be rendered.
    Template { template: String, reason: String },
    /// The runner could not start the service, or it is not healthy.
    Start { service: String, reason: String },
    /// The runner's control socket could not be used.
    Control { reason: String },
    /// Outside `cargo cleantest`, no `cargo-cleantest` binary was found to host the session.
    NoRunner,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotInSession => f.write_str(
                "not running under cargo cleantest: run the tests with `cargo cleantest` instead of \
                 `cargo test` (install it from its repository: `cargo install --locked --path \
                 PATH-OF-A-CHECKOUT`; see its README's Quick start)",
            ),
            Error::UnknownService { name, known } if known.is_empty() => write!(
                f,
                "this session has no service `{name}`: declare it as [services.{name}] in \
                 .config/cleantest.toml, or start it with cleantest::Service"
            ),
            Error::UnknownService { name, known } => write!(
                f,
                "this session has no service `{name}` (it has: {}); declare it as [services.{name}] \
                 in .config/cleantest.toml, or start it with cleantest::Service",
                known.join(", ")
            ),
            Error::UnknownPort {
                service,
                port,
                published,
            } => write!(
                f,
                "service `{service}` does not publish container port {port} (it publishes: {}); add \
                 it to the service's ports",
                published
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Error::Template { template, reason } => write!(f, "cannot render {template:?}: {reason}"),
            Error::Start { service, reason } => write!(f, "service `{service}`: {reason}"),
            Error::Control { reason } => write!(
                f,
                "cannot reach cargo cleantest's control socket: {reason}"
            ),
            Error::NoRunner => f.write_str(
                "no cargo-cleantest binary was found to host this test session (looked at \
                 CLEANTEST_RUNNER, PATH and $CARGO_HOME/bin): install it from its repository with \
                 `cargo install --locked --path PATH-OF-A-CHECKOUT` (see its README's Quick start), \
                 or set CLEANTEST_RUNNER to its path",
            ),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)?;
        if f.alternate() {
            write!(f, "\n\n{}", self.fields())?;
        }
        Ok(())
    }
}

impl Error {
    /// The variant and its fields, for `{:#?}`.
    fn fields(&self) -> String {
        match self {
            Error::NotInSession => "NotInSession".into(),
            Error::UnknownService { name, known } => {
                format!("UnknownService {{ name: {name:?}, known: {known:?} }}")
            }
            Error::UnknownPort {
                service,
                port,
                published,
            } => format!(
                "UnknownPort {{ service: {service:?}, port: {port}, published: {published:?} }}"
            ),
            Error::Template { template, reason } => {
                format!("Template {{ template: {template:?}, reason: {reason:?} }}")
            }
            Error::Start { service, reason } => {
                format!("Start {{ service: {service:?}, reason: {reason:?} }}")
            }
            Error::Control { reason } => format!("Control {{ reason: {reason:?} }}"),
            Error::NoRunner => "NoRunner".into(),
        }
    }
}

impl std::error::Error for Error {}

/// The control socket to ask: the runner's under `cargo cleantest`, else the session host's (found or
/// started once per process), unless `CLEANTEST_HOST=off`.
fn socket() -> Result<String, Error> {
    if session().is_some() {
        return std::env::var(control::ENV_CONTROL).map_err(|_| Error::Control {
            reason: format!(
                "{} is not set: the run has --no-services, or this cargo cleantest is too old to \
                 start services from test code (update it)",
                control::ENV_CONTROL
            ),
        });
    }
    if !host::enabled() {
        return Err(Error::NotInSession);
    }
    host::socket()
}

/// The id of the session this process belongs to (`CLEANTEST_SESSION`), if it runs under
/// `cargo cleantest`.
///
/// ```
/// if let Some(id) = cleantest::session() {
///     println!("session {id}");
/// }
/// ```
pub fn session() -> Option<String> {
    std::env::var(ENV_SESSION).ok().filter(|s| !s.is_empty())
}

/// Where a service is reached from the tests: its host and its published ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    name: String,
    host: String,
    /// Container port → published host port.
    ports: BTreeMap<u16, u16>,
    /// A config service's `export`s, rendered, as a session host answers them (under `cargo
    /// cleantest` they are environment variables instead).
    exports: BTreeMap<String, String>,
}

impl Endpoint {
    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One of a config service's `export`s (`export = { DATABASE_URL = "..." }`), rendered: under
    /// `cargo cleantest` every process has it in its environment, under any other runner the session
    /// host answers it with the endpoint. None if neither has it.
    ///
    /// ```
    /// let db = cleantest::Endpoint::for_tests("db", "127.0.0.1", &[(5432, 49153)]);
    /// // No export of that name here, and none in this process's environment.
    /// assert_eq!(db.export("CLEANTEST_DOC_NO_SUCH_EXPORT"), None);
    /// ```
    pub fn export(&self, name: &str) -> Option<String> {
        self.exports
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }

    /// The host that reaches it (`127.0.0.1` with a local engine).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The published host port of container port `container`.
    pub fn port(&self, container: u16) -> Result<u16, Error> {
        self.ports
            .get(&container)
            .copied()
            .ok_or_else(|| Error::UnknownPort {
                service: self.name.clone(),
                port: container,
                published: self.ports.keys().copied().collect(),
            })
    }

    /// `template` with `{host}`, `{port:N}` and `{name}` filled in; `{{` and `}}` are braces.
    ///
    /// ```
    /// # fn main() -> Result<(), cleantest::Error> {
    /// # let db = cleantest::Endpoint::for_tests("db", "127.0.0.1", &[(5432, 49153)]);
    /// let url = db.render("postgres://postgres@{host}:{port:5432}/{name}")?;
    /// assert_eq!(url, "postgres://postgres@127.0.0.1:49153/db");
    /// # Ok(())
    /// # }
    /// ```
    pub fn render(&self, template: &str) -> Result<String, Error> {
        let fail = |reason: String| Error::Template {
            template: template.to_string(),
            reason,
        };
        let mut out = String::new();
        let mut rest = template;
        while let Some(at) = rest.find(['{', '}']) {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                out.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err(fail("a lone `}` (write `}}` for a brace)".into()));
            }
            let end = tail
                .find('}')
                .ok_or_else(|| fail("a `{` is not closed".into()))?;
            match &tail[1..end] {
                "host" => out.push_str(&self.host),
                "name" => out.push_str(&self.name),
                other => match other.strip_prefix("port:").map(str::parse::<u16>) {
                    Some(Ok(port)) => out.push_str(&self.port(port)?.to_string()),
                    _ => {
                        return Err(fail(format!(
                            "unknown placeholder `{{{other}}}` (known: {{host}}, {{name}}, {{port:N}})"
                        )));
                    }
                },
            }
            rest = &tail[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// An endpoint made by hand, for examples and tests of code that takes one.
    pub fn for_tests(name: &str, host: &str, ports: &[(u16, u16)]) -> Endpoint {
        Endpoint {
            name: name.to_string(),
            host: host.to_string(),
            ports: ports.iter().copied().collect(),
            exports: BTreeMap::new(),
        }
    }
}

/// `<NAME>` of the environment names: upper case, every character outside `[A-Z0-9]` as `_`.
fn env_name(service: &str) -> String {
    service
        .chars()
        .map(|c| match c.to_ascii_uppercase() {
            c @ ('A'..='Z' | '0'..='9') => c,
            _ => '_',
        })
        .collect()
}

/// A service of the session: one declared in `.config/cleantest.toml` (or its compose file), or one a
/// test started with [`Service::start`]. Read from the environment the runner gives every process.
pub fn service(name: &str) -> Result<Endpoint, Error> {
    if session().is_none() {
        // Under any other runner the session host starts it, from the same config file.
        let socket = socket()?;
        return control::service(name, &socket);
    }
    let prefix = format!("{ENV_SERVICE_PREFIX}{}_", env_name(name));
    let Ok(host) = std::env::var(format!("{prefix}HOST")) else {
        return Err(Error::UnknownService {
            name: name.to_string(),
            known: known_services(),
        });
    };
    let port_prefix = format!("{prefix}PORT_");
    let ports = std::env::vars()
        .filter_map(|(k, v)| {
            let container = k.strip_prefix(&port_prefix)?.parse().ok()?;
            Some((container, v.parse().ok()?))
        })
        .collect();
    Ok(Endpoint {
        name: name.to_string(),
        host,
        ports,
        exports: BTreeMap::new(),
    })
}

/// The services the environment names (as their environment names, lower-cased).
fn known_services() -> Vec<String> {
    let mut known: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| {
            let rest = k.strip_prefix(ENV_SERVICE_PREFIX)?;
            Some(rest.strip_suffix("_HOST")?.to_ascii_lowercase())
        })
        .collect();
    known.sort();
    known
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_placeholders_and_names_what_is_wrong() {
        let db = Endpoint::for_tests("db", "127.0.0.1", &[(5432, 49153)]);
        assert_eq!(
            db.render("{{x}} {host}:{port:5432}/{name}").unwrap(),
            "{x} 127.0.0.1:49153/db"
        );
        assert!(matches!(
            db.render("{port:6379}"),
            Err(Error::UnknownPort { port: 6379, .. })
        ));
        for bad in ["{hots}", "{host", "a}b"] {
            let e = db.render(bad).unwrap_err();
            assert!(matches!(e, Error::Template { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn names_become_environment_names() {
        assert_eq!(env_name("my-cache.v2"), "MY_CACHE_V2");
    }

    #[test]
    fn the_error_outside_a_session_says_how_to_run_the_tests() {
        let message = Error::NotInSession.to_string();
        assert!(message.contains("cargo cleantest") && message.contains("cargo install"));
    }
}
