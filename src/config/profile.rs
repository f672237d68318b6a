//! One `[profile.NAME]` table: the runner settings a profile may set.

use serde::Deserialize;

use super::duration::ConfigDuration;
use super::memory::Memory;
use super::overrides::OverrideConfig;
use super::proxy::ProxyConfig;
use crate::cli::{EngineReaperMode, FlakyResult, RunnerOpts};

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
    /// Route Docker traffic through the labelling proxy (`--no-proxy` sets false), and what it
    /// forwards beyond its table (`config::proxy`).
    pub proxy: Option<ProxyConfig>,
    /// `auto`, `on` or `off`: the engine-side reaper (`--engine-reaper`).
    pub engine_reaper: Option<EngineReaperMode>,
    /// Give the run's processes a `TMPDIR` of the session's, removed at its end (`--no-tmpdir` and
    /// `CLEANTEST_NO_TMPDIR` turn it off whatever the profile says).
    pub tmpdir: Option<bool>,
    /// Which `[services.NAME]` start (default: all defined).
    pub services: Option<Vec<String>>,
    /// A compose file whose services become services of the session (relative to the workspace root).
    pub compose_file: Option<String>,
    /// The compose profiles that are active (default: `COMPOSE_PROFILES`, as docker-compose).
    pub compose_profiles: Option<Vec<String>>,
    /// How many times a failed test runs again (`--retries`).
    pub retries: Option<u32>,
    /// `pass` or `fail`: what a flaky test counts as (`--flaky-result`).
    pub flaky_result: Option<FlakyResult>,
    /// The resource guard (`config::guard`).
    pub max_containers: Option<u64>,
    pub max_memory: Option<Memory>,
    pub default_memory: Option<Memory>,
    pub min_free_memory: Option<Memory>,
    #[serde(default)]
    pub overrides: Vec<OverrideConfig>,
}

impl ProfileConfig {
    /// The command line as a layer: the flags (and the `CLEANTEST_*` variables clap reads into them)
    /// that a profile may set too. Only what was given is set.
    pub(crate) fn command_line(args: &RunnerOpts) -> ProfileConfig {
        let duration = |d: Option<std::time::Duration>| d.map(ConfigDuration);
        ProfileConfig {
            timeout: duration(args.timeout),
            list_timeout: duration(args.list_timeout),
            grace_period: duration(args.grace_period),
            heartbeat: duration(args.heartbeat),
            isolate: args.isolate_given.then_some(args.isolate),
            leak: args.leak.as_deref().map(|policy| match policy {
                "fail" => LeakPolicy::Fail,
                _ => LeakPolicy::Report,
            }),
            retries: args.ci.retries,
            flaky_result: args.ci.flaky_result,
            ..ProfileConfig::default()
        }
    }

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
            proxy: match (&self.proxy, &base.proxy) {
                (Some(top), Some(base)) => Some(top.over(base)),
                (top, base) => top.clone().or_else(|| base.clone()),
            },
            engine_reaper: self.engine_reaper.or(base.engine_reaper),
            tmpdir: self.tmpdir.or(base.tmpdir),
            services: self.services.clone().or_else(|| base.services.clone()),
            compose_file: self
                .compose_file
                .clone()
                .or_else(|| base.compose_file.clone()),
            compose_profiles: self
                .compose_profiles
                .clone()
                .or_else(|| base.compose_profiles.clone()),
            retries: self.retries.or(base.retries),
            flaky_result: self.flaky_result.or(base.flaky_result),
            max_containers: self.max_containers.or(base.max_containers),
            max_memory: self.max_memory.or(base.max_memory),
            default_memory: self.default_memory.or(base.default_memory),
            min_free_memory: self.min_free_memory.or(base.min_free_memory),
            overrides: self
                .overrides
                .iter()
                .chain(&base.overrides)
                .cloned()
                .collect(),
        }
    }
}
