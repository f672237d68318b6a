//! A `[services.NAME]` table without an `image` adds to the compose service of the same name what a
//! compose file cannot say: `export` (a `DATABASE_URL` made from its address), `ready` or
//! `ready-timeout` in place of its healthcheck, and `isolate`/`migrate` (a database per test). Anything else belongs in the compose file, so it is
//! refused here, naming the key.

use super::services::ServiceConfig;

/// Applies `overlay` to the compose service `service`.
pub(crate) fn apply(
    name: &str,
    overlay: &ServiceConfig,
    service: &mut ServiceConfig,
) -> Result<(), String> {
    let set = |on: bool, key: &str| on.then(|| key.to_string());
    let refused: Vec<String> = [
        set(overlay.command.is_some(), "command"),
        set(overlay.entrypoint.is_some(), "entrypoint"),
        set(!overlay.env.is_empty(), "env"),
        set(!overlay.ports.is_empty(), "ports"),
        set(!overlay.depends_on.is_empty(), "depends-on"),
        set(overlay.memory.is_some(), "memory"),
        set(overlay.cpus.is_some(), "cpus"),
        set(!overlay.tmpfs.is_empty(), "tmpfs"),
        set(overlay.user.is_some(), "user"),
        set(overlay.working_dir.is_some(), "working-dir"),
        set(overlay.shm_size.is_some(), "shm-size"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !refused.is_empty() {
        return Err(format!(
            "[services.{name}] adds to the compose service `{name}`, which may only be given \
             `export`, `ready` and `ready-timeout` here; set {} in the compose file",
            refused.join(", ")
        ));
    }
    service.export.extend(overlay.export.clone());
    if overlay.isolate.is_some() {
        service.isolate = overlay.isolate.clone();
    }
    if overlay.migrate.is_some() {
        service.migrate = overlay.migrate.clone();
    }
    if !overlay.ready.0.is_empty() {
        service.ready = overlay.ready.clone();
    }
    if overlay.ready_timeout.is_some() {
        service.ready_timeout = overlay.ready_timeout;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ServiceConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn an_overlay_adds_exports_and_readiness_and_refuses_the_rest() {
        let mut service = parse("image = \"redis\"\nports = [6379]\n");
        apply(
            "cache",
            &parse("export = { URL = \"redis://{host}:{port:6379}\" }\nready-timeout = \"5s\"\n"),
            &mut service,
        )
        .unwrap();
        assert_eq!(service.export["URL"], "redis://{host}:{port:6379}");
        assert!(service.ready_timeout.is_some());
        let err = apply(
            "cache",
            &parse("command = [\"x\"]\nports = [1]\n"),
            &mut service,
        )
        .unwrap_err();
        assert!(
            err.contains("command, ports") && err.contains("compose file"),
            "{err}"
        );
    }
}
