//! Per-test overrides: `[[profile.NAME.overrides]]` with a glob `filter` over test names.

use std::time::Duration;

use globset::{Glob, GlobMatcher};
use serde::Deserialize;

use super::duration::ConfigDuration;

/// One `[[profile.NAME.overrides]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct OverrideConfig {
    /// Glob over the test name (`db::*`) or over `BINARY-ID::NAME`.
    pub filter: String,
    pub timeout: Option<ConfigDuration>,
    pub grace_period: Option<ConfigDuration>,
    /// How many times a failed test matching the filter runs again.
    pub retries: Option<u32>,
}

/// A compiled override.
#[derive(Debug, Clone)]
pub(crate) struct Override {
    matcher: GlobMatcher,
    pub timeout: Option<Duration>,
    pub grace_period: Option<Duration>,
    pub retries: Option<u32>,
}

impl Override {
    pub(crate) fn compile(config: &OverrideConfig) -> Result<Override, String> {
        let glob = Glob::new(&config.filter).map_err(|e| {
            format!(
                "override filter `{}` is not a valid glob: {e}",
                config.filter
            )
        })?;
        Ok(Override {
            matcher: glob.compile_matcher(),
            timeout: config.timeout.map(|d| d.0),
            grace_period: config.grace_period.map(|d| d.0),
            retries: config.retries,
        })
    }

    /// Matches the bare test name or the name qualified by its binary id.
    pub(crate) fn matches(&self, binary_id: &str, test: &str) -> bool {
        self.matcher.is_match(test) || self.matcher.is_match(format!("{binary_id}::{test}"))
    }
}
