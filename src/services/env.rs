//! What every process of the session learns of a service: `CLEANTEST_SERVICE_<NAME>_HOST`,
//! `CLEANTEST_SERVICE_<NAME>_PORT_<CONTAINER_PORT>` (the published host port), and the service's own
//! `export`s, rendered.

use super::Running;
use crate::contract::ENV_SERVICE_PREFIX;

/// `<NAME>` of the environment names: the service's name upper-cased, every character outside
/// `[A-Z0-9]` turned into `_`.
pub(crate) fn env_name(service: &str) -> String {
    service
        .chars()
        .map(|c| match c.to_ascii_uppercase() {
            c @ ('A'..='Z' | '0'..='9') => c,
            _ => '_',
        })
        .collect()
}

/// The environment a running service gives every process of the session.
pub(crate) fn env_of(service: &Running) -> Vec<(String, String)> {
    let name = env_name(&service.name);
    let mut env = vec![(
        format!("{ENV_SERVICE_PREFIX}{name}_HOST"),
        service.host.clone(),
    )];
    for (container, host) in &service.ports {
        env.push((
            format!("{ENV_SERVICE_PREFIX}{name}_PORT_{container}"),
            host.to_string(),
        ));
    }
    env.extend(service.exports.iter().cloned());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_upper_case_with_underscores() {
        assert_eq!(env_name("db"), "DB");
        assert_eq!(env_name("my-cache.v2"), "MY_CACHE_V2");
        assert_eq!(env_name("Queue_1"), "QUEUE_1");
    }

    #[test]
    fn a_service_exports_host_ports_and_its_own_keys() {
        let running = Running {
            name: "db".into(),
            id: "x".into(),
            host: "127.0.0.1".into(),
            ports: vec![(5432, 49153)],
            exports: vec![("DATABASE_URL".into(), "postgres://127.0.0.1:49153".into())],
            export: Vec::new(),
        };
        assert_eq!(
            env_of(&running),
            vec![
                (
                    "CLEANTEST_SERVICE_DB_HOST".to_string(),
                    "127.0.0.1".to_string()
                ),
                (
                    "CLEANTEST_SERVICE_DB_PORT_5432".to_string(),
                    "49153".to_string()
                ),
                (
                    "DATABASE_URL".to_string(),
                    "postgres://127.0.0.1:49153".to_string()
                ),
            ]
        );
    }
}
