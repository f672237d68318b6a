//! The runner's own options: timeouts, isolation, JUnit, the leak policy and the config profile. The
//! config profile supplies what the command line leaves out (`config::Settings`).

use std::path::PathBuf;
use std::time::Duration;

use clap::ArgAction;

use super::{parse_duration, parse_limit};

/// The runner's own options.
#[derive(clap::Args, Debug, Default, Clone)]
#[command(next_help_heading = "Runner Options")]
pub(crate) struct RunnerOpts {
    /// Per-test timeout; the test is stopped with SIGTERM, then SIGKILL after the grace period [default: 5m]
    #[arg(long, value_name = "DURATION", env = "CLEANTEST_TIMEOUT", value_parser = parse_limit)]
    pub timeout: Option<Duration>,
    /// How long one binary may take to list its tests, apart from the per-test timeout [default: 1m]
    #[arg(long, value_name = "DURATION", env = "CLEANTEST_LIST_TIMEOUT", value_parser = parse_limit)]
    pub list_timeout: Option<Duration>,
    /// Without a terminal, print `test X has been running for over N` every DURATION a test runs [default: 60s]
    #[arg(long, value_name = "DURATION", env = "CLEANTEST_HEARTBEAT", value_parser = parse_limit)]
    pub heartbeat: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when a test is stopped [default: 5s]
    #[arg(long, value_name = "DURATION", env = "CLEANTEST_GRACE_PERIOD", value_parser = parse_duration)]
    pub grace_period: Option<Duration>,
    /// Run every test in a process of its own (like cargo-nextest)
    #[arg(long, env = "CLEANTEST_ISOLATE", value_parser = clap::builder::BoolishValueParser::new(), action = ArgAction::SetTrue)]
    pub isolate: bool,
    /// Write a JUnit XML report to this path
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// What a test that leaves processes behind is: `report`ed (default) or a `fail`ure
    #[arg(long, value_name = "POLICY", env = "CLEANTEST_LEAK", value_parser = ["report", "fail"])]
    pub leak: Option<String>,
    #[command(flatten)]
    pub profile: super::ProfileArg,

    #[command(flatten)]
    pub ci: super::CiOpts,

    /// Whether `--isolate` came from the command line or the environment (so the profile may not
    /// override it).
    #[arg(skip)]
    pub isolate_given: bool,
}
