//! One `[profile.NAME]` table: the runner settings a profile may set.

use serde::Deserialize;

use super::duration::ConfigDuration;
use super::overrides::OverrideConfig;
use crate::cli::EngineReaperMode;

/// What leaving processes behind is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LeakPolicy {
    #[default]
    Report,
    Fail,
}

/// A profile as written in `.config/cleantest.toml`; every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ProfileConfig {
    pub timeout: Option<ConfigDuration>,
    pub list_timeout: Option<ConfigDuration>,
    pub grace_period: Option<ConfigDuration>,
    /// The CI heartbeat's period (`--heartbeat`).
    pub heartbeat: Option<ConfigDuration>,
    pub isolate: Option<bool>,
    pub test_threads: Option<usize>,
    /// Name of the environment lock (`--lock`).
    pub lock: Option<String>,
    /// `report` or `fail`: what leaving processes behind is (`--leak`).
    pub leak: Option<LeakPolicy>,
    /// Route Docker traffic through the labelling proxy (`--no-proxy` sets false).
    pub proxy: Option<bool>,
    /// `auto`, `on` or `off`: the engine-side reaper (`--engine-reaper`).
    pub engine_reaper: Option<EngineReaperMode>,
    /// Which `[services.NAME]` start (default: all defined).
    pub services: Option<Vec<String>>,
    /// A compose file whose services become services of the session (relative to the workspace root).
    pub compose_file: Option<String>,
    #[serde(default)]
    pub overrides: Vec<OverrideConfig>,
}

impl ProfileConfig {
    /// Layers `self` over `base`: keys set here win, overrides of both apply (these first).
    pub(crate) fn over(&self, base: &ProfileConfig) -> ProfileConfig {
        ProfileConfig {
            timeout: self.timeout.or(base.timeout),
            list_timeout: self.list_timeout.or(base.list_timeout),
            grace_period: self.grace_period.or(base.grace_period),
            heartbeat: self.heartbeat.or(base.heartbeat),
            isolate: self.isolate.or(base.isolate),
            test_threads: self.test_threads.or(base.test_threads),
            lock: self.lock.clone().or_else(|| base.lock.clone()),
            leak: self.leak.or(base.leak),
            proxy: self.proxy.or(base.proxy),
            engine_reaper: self.engine_reaper.or(base.engine_reaper),
            services: self.services.clone().or_else(|| base.services.clone()),
            compose_file: self
                .compose_file
                .clone()
                .or_else(|| base.compose_file.clone()),
            overrides: self
                .overrides
                .iter()
                .chain(&base.overrides)
                .cloned()
                .collect(),
        }
    }
}
