//! The session options shared by test runs and `exec`: the environment lock, keeping evidence, the
//! stale sweep and the proxy.

use std::time::Duration;

use super::parse_duration;

/// When the session runs an engine-side reaper (`--engine-reaper`, profile key `engine-reaper`).
#[derive(clap::ValueEnum, serde::Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EngineReaperMode {
    /// When the runner is in a PID namespace of its own, in a container, or the engine is remote.
    #[default]
    Auto,
    On,
    Off,
}

/// Session options shared by test runs and `exec`: the environment lock, keeping evidence, stale sweep.
#[derive(clap::Args, Debug, Default, Clone)]
pub(crate) struct SessionOpts {
    /// On failure keep the session's containers, networks and volumes (processes are still killed)
    #[arg(long, help_heading = "Session Options")]
    pub keep_on_failure: bool,
    /// Name of the environment lock to hold (shared by checkouts that use the same ports or databases)
    #[arg(
        long,
        value_name = "NAME",
        env = "CLEANTEST_LOCK",
        help_heading = "Session Options"
    )]
    pub lock: Option<String>,
    /// Do not take the environment lock (wins over --lock)
    #[arg(long, help_heading = "Session Options")]
    pub no_lock: bool,
    /// Give up when the environment lock is not free within this time [default: wait]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Session Options")]
    pub lock_timeout: Option<Duration>,
    /// Do not sweep the resources of dead sessions of this host at start
    #[arg(long, help_heading = "Session Options")]
    pub no_stale_sweep: bool,
    /// Do not route the session's Docker traffic through the labelling proxy
    #[arg(long, help_heading = "Session Options")]
    pub no_proxy: bool,
    /// Run a reaper container on the engine that sweeps the session if the runner dies with its host
    /// [default: auto: on in a PID namespace of its own, in a container, or with a remote engine]
    #[arg(
        long,
        value_name = "WHEN",
        value_enum,
        help_heading = "Session Options"
    )]
    pub engine_reaper: Option<EngineReaperMode>,
    /// Leave TMPDIR alone: the processes write into the runner's own temporary directory, which
    /// nothing removes [default: a directory of the session's, removed at its end]
    #[arg(
        long,
        env = "CLEANTEST_NO_TMPDIR",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::SetTrue,
        help_heading = "Session Options"
    )]
    pub no_tmpdir: bool,
    /// Start none of the session services of the config file
    #[arg(long, help_heading = "Session Options")]
    pub no_services: bool,
    #[command(flatten)]
    pub guard: super::GuardOpts,
}
