//! [`Service`]: a container declared in test code, shared by the whole session.

use std::time::Duration;

/// A readiness check, as config services have them (the control protocol's).
use cleantest_protocol::{Ready, Spec};

use super::{control, socket, Endpoint, Error};

/// A container shared by the whole session, declared in test code and started by the runner the first
/// time any process of the session asks for it. Every later call, from any process, gets the same
/// container, after a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    name: String,
    image: String,
    command: Option<Vec<String>>,
    env: Vec<(String, String)>,
    ports: Vec<u16>,
    tmpfs: Vec<String>,
    ready: Vec<Ready>,
    ready_timeout: Option<Duration>,
}

impl Service {
    /// A service named `name` (the same name means the same container in one session) of `image`.
    pub fn new(name: &str, image: &str) -> Service {
        Service {
            name: name.to_string(),
            image: image.to_string(),
            command: None,
            env: Vec::new(),
            ports: Vec::new(),
            tmpfs: Vec::new(),
            ready: Vec::new(),
            ready_timeout: None,
        }
    }

    /// The command the container runs (the image's entrypoint stays).
    pub fn command<I, S>(mut self, argv: I) -> Service
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command = Some(argv.into_iter().map(Into::into).collect());
        self
    }

    /// An environment variable of the container.
    pub fn env(mut self, key: &str, value: &str) -> Service {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// A container port to publish on the tests' host, at a free port.
    pub fn port(mut self, container: u16) -> Service {
        self.ports.push(container);
        self
    }

    /// A tmpfs mounted at `path` in the container (a database's data directory, say: faster than the
    /// container's own filesystem, and gone with it).
    pub fn tmpfs(mut self, path: &str) -> Service {
        self.tmpfs.push(path.to_string());
        self
    }

    /// Ready when something listens on this container port (published with [`Service::port`]).
    pub fn ready_tcp(mut self, container: u16) -> Service {
        self.ready.push(Ready::Tcp(container));
        self
    }

    /// Ready when the container's log holds `text`.
    pub fn ready_log(mut self, text: &str) -> Service {
        self.ready.push(Ready::Log(text.to_string()));
        self
    }

    /// Ready when this command, run in the container, exits 0.
    pub fn ready_exec<I, S>(mut self, argv: I) -> Service
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.ready
            .push(Ready::Exec(argv.into_iter().map(Into::into).collect()));
        self
    }

    /// Ready when `GET path` on this container port answers 2xx or 3xx.
    pub fn ready_http(mut self, container: u16, path: &str) -> Service {
        self.ready.push(Ready::Http {
            port: container,
            path: path.to_string(),
        });
        self
    }

    /// How long it may take to become ready (default: 60 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Service {
        self.ready_timeout = Some(timeout);
        self
    }

    /// Asks the runner for the service: the first caller in the session starts it and waits until it
    /// is ready, concurrent callers wait for that start, later callers get it at once. Blocks; the
    /// calling test's timeout keeps counting meanwhile.
    #[track_caller]
    pub fn start(self) -> Result<Endpoint, Error> {
        let site = std::panic::Location::caller().to_string();
        control::start(&self.name, self.spec(), &site, &socket()?)
    }

    /// The spec as the control socket's wire carries it.
    fn spec(&self) -> Spec {
        Spec {
            image: self.image.clone(),
            command: self.command.clone(),
            env: self.env.clone(),
            ports: self.ports.clone(),
            tmpfs: self.tmpfs.clone(),
            ready: self.ready.clone(),
            ready_timeout: self.ready_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_carries_every_setting() {
        let s = Service::new("cache", "redis")
            .command(["redis-server"])
            .env("K", "V")
            .port(6379)
            .ready_tcp(6379)
            .ready_http(8080, "/h");
        let v = s.spec().to_value();
        assert_eq!(v["image"], "redis");
        assert_eq!(v["ports"][0], 6379);
        assert_eq!(v["ready"][1]["path"], "/h");
        assert_eq!(v["env"][0][1], "V");
    }
}
