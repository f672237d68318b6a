//! A `[services.NAME]` table without an `image` adds to the compose service of the same name what a
//! compose file cannot say: `export` (a `DATABASE_URL` made from its address), and `ready` or
//! `ready-timeout` in place of its healthcheck. Anything else belongs in the compose file, so it is
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
    if !overlay.ready.0.is_empty() {
        service.ready = overlay.ready.clone();
    }
    if overlay.ready_timeout.is_some() {
        service.ready_timeout = overlay.ready_timeout;
    }
    Ok(())
}
