//! `cargo cleantest services [-P PROFILE]`: the session services the selected profile starts, in start
//! order, with what each exports to every process of the session. Starts nothing.

use clap::Parser;

use crate::cli::{ProfileArg, RunnerOpts};
use crate::config::Settings;
use crate::config::services::ServiceSpec;
use crate::contract::ENV_SERVICE_PREFIX;
use crate::errors::Error;
use crate::services::env_name;

/// `cargo cleantest services [-P PROFILE]`
#[derive(Parser, Debug)]
#[command(
    name = "cargo-cleantest services",
    bin_name = "cargo cleantest services"
)]
#[command(
    about = "Print the session services of a profile, their start order and what they export"
)]
pub(crate) struct ServicesArgs {
    #[command(flatten)]
    pub profile: ProfileArg,
}

pub(crate) fn run(args: ServicesArgs) -> Result<i32, Error> {
    let workspace = super::exec::workspace_root();
    let opts = RunnerOpts {
        profile: args.profile.clone(),
        ..RunnerOpts::default()
    };
    let settings = Settings::load(&workspace, &opts, &Default::default())?;
    let profile = args.profile.config_profile.as_deref().unwrap_or("default");
    if settings.services.is_empty() {
        crate::output::out(format!("profile `{profile}` starts no services"));
        return Ok(0);
    }
    crate::output::out(format!("profile `{profile}` starts, in this order:"));
    for spec in &settings.services {
        for line in describe(spec) {
            crate::output::out(line);
        }
    }
    Ok(0)
}

/// A service's lines: what it runs, what it waits for, what it exports.
fn describe(spec: &ServiceSpec) -> Vec<String> {
    let mut head = format!("  {}: {}", spec.name, spec.image);
    if !spec.depends_on.is_empty() {
        head.push_str(&format!(" (after {})", spec.depends_on.join(", ")));
    }
    let mut out = vec![head];
    let ready: Vec<String> = spec.ready.iter().map(ToString::to_string).collect();
    out.push(format!(
        "    ready: {} (within {})",
        if ready.is_empty() {
            "once running".to_string()
        } else {
            ready.join(", ")
        },
        humantime::format_duration(spec.ready_timeout)
    ));
    let name = env_name(&spec.name);
    let (host, _) = crate::docker::context::published_at(&crate::docker::engine::endpoint());
    out.push(format!("    {ENV_SERVICE_PREFIX}{name}_HOST={host}"));
    for port in &spec.ports {
        out.push(format!(
            "    {ENV_SERVICE_PREFIX}{name}_PORT_{port}=<host port published for {port}>"
        ));
    }
    for (key, template) in &spec.export {
        out.push(format!("    {key}={template}"));
    }
    out
}
