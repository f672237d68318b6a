//! The command line: `cargo test`'s own flags and the runner's options (`run_args`), the session options
//! shared with `exec` (`session_opts`), and the test-binary arguments after `--` (`test_args`).
//!
//! Parsing only: nothing here runs anything. Every layer above may read these types; this module imports
//! nothing of the crate but `contract`.

mod cargo_flags;
mod flags;
mod run_args;
mod runner_opts;
mod session_opts;
mod targets;
mod test_args;

use std::time::Duration;

pub(crate) use run_args::RunArgs;
pub(crate) use runner_opts::RunnerOpts;
pub(crate) use session_opts::SessionOpts;
pub(crate) use targets::TargetSelection;
pub(crate) use test_args::{RunIgnored, TestArgs};

/// Parses `--timeout 30s`, `--grace-period 1m30s`, `500ms`: humantime's syntax.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e} (write a duration such as 90s, 5m or 1m30s)"))
}
