//! Which engine the user's docker client would talk to: `DOCKER_HOST`, else the selected Docker context
//! (`DOCKER_CONTEXT`, else `currentContext` in `$DOCKER_CONFIG/config.json`), else the default socket.
//! The session's proxy forwards there and its sweep looks there; a context `docker context use` selected
//! must not silently send the tests to another engine.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// The default engine socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// The engine endpoint (`unix://…`, `tcp://…`, …), as the docker CLI resolves it.
pub fn endpoint() -> String {
    if let Some(host) = non_empty_env("DOCKER_HOST") {
        return host;
    }
    match selected_context() {
        Some(name) => context_host(&name).unwrap_or_else(|e| format!("context:{name} ({e})")),
        None => format!("unix://{DEFAULT_SOCKET}"),
    }
}

/// Where the engine publishes ports: `(host, bind)`, the address tests reach a published port at and
/// the host IP it is published on. A `tcp://` or `http://` engine publishes on its own host: on every
/// interface of it (`0.0.0.0`), reached at the endpoint's host name, unless that name is a loopback
/// address, which keeps the ports on loopback. A local engine publishes on `127.0.0.1`.
pub fn published_at(endpoint: &str) -> (String, String) {
    const LOOPBACK: &str = "127.0.0.1";
    match remote_host(endpoint) {
        Some(host) if is_loopback(&host) => (host, LOOPBACK.into()),
        Some(host) => (host, "0.0.0.0".into()),
        None => (LOOPBACK.into(), LOOPBACK.into()),
    }
}

/// The host of a `tcp://HOST:PORT` or `http://HOST:PORT` endpoint (brackets of an IPv6 address taken
/// off), or of an `ssh://` one (its `HostName`, a `Host` alias of the user's ssh config resolved).
fn remote_host(endpoint: &str) -> Option<String> {
    if let Some(target) = super::ssh::Target::parse(endpoint) {
        return target.ok().map(|t| t.address());
    }
    let rest = endpoint
        .strip_prefix("tcp://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .or_else(|| endpoint.strip_prefix("https://"))?;
    let host = super::tls::host_of(rest.split('/').next().unwrap_or(rest));
    (!host.is_empty()).then(|| host.to_string())
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why the runner cannot use the engine at `endpoint`, if it cannot: an `ssh://` endpoint that names no
/// host, or without an `ssh` to run; TLS files that cannot be read. Tests sent there unproxied would
/// create unlabelled resources, so such a run is refused rather than run without cleanup.
pub fn unsupported(endpoint: &str) -> Option<String> {
    if let Some(target) = super::ssh::Target::parse(endpoint) {
        return match target {
            Err(e) => Some(e.to_string()),
            Ok(_) if !super::ssh::available() => Some(format!(
                "use the engine at {endpoint}: there is no `ssh` on PATH to reach it with (the docker \
                 CLI uses the system's ssh too); install OpenSSH's client"
            )),
            Ok(_) => None,
        };
    }
    if !endpoint.starts_with("tcp://") {
        return None;
    }
    let tls =
        super::tls::Tls::from_env().and_then(|tls| tls.map(|t| t.client_config()).transpose());
    tls.err()
        .map(|e| format!("use the TLS engine at {endpoint}: {e}"))
}

/// Whether the user configured an engine (a `DOCKER_HOST`, or a context other than the default).
pub fn configured() -> bool {
    non_empty_env("DOCKER_HOST").is_some() || selected_context().is_some()
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn config_dir() -> Option<PathBuf> {
    non_empty_env("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::home_dir().map(|h| h.join(".docker")))
}

/// The selected context's name, unless it is the built-in `default`.
fn selected_context() -> Option<String> {
    let name = non_empty_env("DOCKER_CONTEXT").or_else(|| {
        let text = std::fs::read_to_string(config_dir()?.join("config.json")).ok()?;
        let config: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(config.get("currentContext")?.as_str()?.to_string())
    })?;
    (!name.is_empty() && name != "default").then_some(name)
}

/// The docker endpoint a named context stores, in `contexts/meta/<sha256 of its name>/meta.json`.
fn context_host(name: &str) -> Result<String, crate::Error> {
    let digest = Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let setup = crate::Error::Setup;
    let dir = config_dir()
        .ok_or_else(|| setup("no home directory to find the Docker contexts in".into()))?;
    let path = dir.join("contexts/meta").join(hex).join("meta.json");
    let text = std::fs::read_to_string(&path).map_err(crate::Error::io(format!(
        "the Docker context is not readable at {}",
        path.display()
    )))?;
    let meta: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        setup(format!(
            "the Docker context at {} is not JSON: {e}",
            path.display()
        ))
    })?;
    meta.pointer("/Endpoints/docker/Host")
        .and_then(|h| h.as_str())
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            setup(format!(
                "the Docker context at {} names no docker host",
                path.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_published_on_the_engines_host() {
        let at = |e: &str| published_at(e);
        assert_eq!(
            at("unix:///var/run/docker.sock"),
            ("127.0.0.1".into(), "127.0.0.1".into())
        );
        assert_eq!(
            at("tcp://127.0.0.1:2375"),
            ("127.0.0.1".into(), "127.0.0.1".into())
        );
        assert_eq!(
            at("tcp://ci-docker:2376"),
            ("ci-docker".into(), "0.0.0.0".into())
        );
        assert_eq!(
            at("tcp://10.1.2.3:2376/"),
            ("10.1.2.3".into(), "0.0.0.0".into())
        );
        assert_eq!(at("tcp://[::1]:2375"), ("::1".into(), "127.0.0.1".into()));
        // An ssh engine's host as ssh resolves it (`ssh -G`; the host as written without an ssh).
        assert_eq!(
            at("ssh://ci@10.1.2.3:2222"),
            ("10.1.2.3".into(), "0.0.0.0".into())
        );
        assert_eq!(
            at("ssh://127.0.0.1"),
            ("127.0.0.1".into(), "127.0.0.1".into())
        );
    }

    #[test]
    fn a_context_is_found_by_the_sha256_of_its_name() {
        // The directory name the docker CLI gives a context named `default` (its own computation).
        let digest = Sha256::digest(b"default");
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "37a8eec1ce19687d132fe29051dca629d164e2c4958ba141d5f4133a33f0688f"
        );
    }
}
