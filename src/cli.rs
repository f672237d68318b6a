//! The command line: cargo's own `cargo test` flags, the runner's options, and the split between them.
//!
//! Everything cargo understands is kept as given so it can be handed to cargo unchanged; the test-binary
//! arguments after `--` are parsed in `test_args`.

use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser};

/// `cargo cleantest [OPTIONS] [TESTNAME] [-- TEST-BINARY-ARGS]`
#[derive(Parser, Debug, Default)]
#[command(
    name = "cargo-cleantest",
    bin_name = "cargo cleantest",
    version,
    about = "cargo test that leaves nothing behind: every test binary in its own process group, \
             per-test timeouts that really stop the test, and cleanup on every exit.",
    after_help = "Arguments after `--` go to the test binaries, as with cargo test \
                  (filters, --exact, --skip, --ignored, --include-ignored, --nocapture, \
                  --show-output, --test-threads, --list, -q)."
)]
pub(crate) struct RunArgs {
    /// Run only the tests whose names contain this string (passed to the test binaries)
    #[arg(value_name = "TESTNAME")]
    pub testname: Option<String>,

    /// Arguments for the test binaries
    #[arg(last = true, value_name = "TEST-BINARY-ARGS")]
    pub test_args: Vec<String>,

    // ---- package and target selection (passed to cargo) ----
    /// Package to test (see `cargo help pkgid`)
    #[arg(
        short = 'p',
        long = "package",
        value_name = "SPEC",
        help_heading = "Package Selection"
    )]
    pub package: Vec<String>,
    /// Test all packages in the workspace
    #[arg(long, visible_alias = "all", help_heading = "Package Selection")]
    pub workspace: bool,
    /// Exclude packages from the test
    #[arg(long, value_name = "SPEC", help_heading = "Package Selection")]
    pub exclude: Vec<String>,
    /// Test only this package's library
    #[arg(long, help_heading = "Target Selection")]
    pub lib: bool,
    /// Test all binaries
    #[arg(long, help_heading = "Target Selection")]
    pub bins: bool,
    /// Test only the specified binary
    #[arg(long = "bin", value_name = "NAME", help_heading = "Target Selection")]
    pub bin: Vec<String>,
    /// Test all targets that have `test = true` set
    #[arg(long, help_heading = "Target Selection")]
    pub tests: bool,
    /// Test only the specified test target
    #[arg(long = "test", value_name = "NAME", help_heading = "Target Selection")]
    pub test: Vec<String>,
    /// Test all examples
    #[arg(long, help_heading = "Target Selection")]
    pub examples: bool,
    /// Test only the specified example
    #[arg(
        long = "example",
        value_name = "NAME",
        help_heading = "Target Selection"
    )]
    pub example: Vec<String>,
    /// Test all targets that have `bench = true` set
    #[arg(long, help_heading = "Target Selection")]
    pub benches: bool,
    /// Test only the specified bench target
    #[arg(long = "bench", value_name = "NAME", help_heading = "Target Selection")]
    pub bench: Vec<String>,
    /// Test all targets (does not include doctests)
    #[arg(long, help_heading = "Target Selection")]
    pub all_targets: bool,
    /// Test only this library's documentation
    #[arg(long, help_heading = "Target Selection")]
    pub doc: bool,

    // ---- features and compilation (passed to cargo) ----
    /// Space or comma separated list of features to activate
    #[arg(
        short = 'F',
        long,
        value_name = "FEATURES",
        help_heading = "Feature Selection"
    )]
    pub features: Vec<String>,
    /// Activate all available features
    #[arg(long, help_heading = "Feature Selection")]
    pub all_features: bool,
    /// Do not activate the `default` feature
    #[arg(long, help_heading = "Feature Selection")]
    pub no_default_features: bool,
    /// Build artifacts in release mode, with optimizations
    #[arg(short = 'r', long, help_heading = "Compilation Options")]
    pub release: bool,
    /// Build artifacts with the specified cargo profile
    #[arg(
        long,
        value_name = "PROFILE-NAME",
        help_heading = "Compilation Options"
    )]
    pub profile: Option<String>,
    /// Build for the target triple
    #[arg(long, value_name = "TRIPLE", help_heading = "Compilation Options")]
    pub target: Vec<String>,
    /// Directory for all generated artifacts
    #[arg(long, value_name = "DIRECTORY", help_heading = "Compilation Options")]
    pub target_dir: Option<PathBuf>,
    /// Number of parallel build jobs, and of test binaries run at once in shared mode
    #[arg(
        short = 'j',
        long,
        value_name = "N",
        help_heading = "Compilation Options"
    )]
    pub jobs: Option<String>,
    /// Path to Cargo.toml
    #[arg(long, value_name = "PATH", help_heading = "Manifest Options")]
    pub manifest_path: Option<PathBuf>,
    /// Assert that `Cargo.lock` will remain unchanged
    #[arg(long, help_heading = "Manifest Options")]
    pub locked: bool,
    /// Run without accessing the network
    #[arg(long, help_heading = "Manifest Options")]
    pub offline: bool,
    /// Equivalent to specifying both --locked and --offline
    #[arg(long, help_heading = "Manifest Options")]
    pub frozen: bool,
    /// Override a cargo configuration value
    #[arg(long = "config", value_name = "KEY=VALUE|PATH")]
    pub cargo_config: Vec<String>,
    /// Compile, but don't run tests
    #[arg(long)]
    pub no_run: bool,
    /// Run all tests regardless of failure
    #[arg(long)]
    pub no_fail_fast: bool,
    /// Do not print cargo log messages, nor a line per passing test
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Use verbose output (-vv very verbose)
    #[arg(short = 'v', long, action = ArgAction::Count)]
    pub verbose: u8,
    /// Coloring: auto, always, never
    #[arg(long, value_name = "WHEN", value_parser = ["auto", "always", "never"])]
    pub color: Option<String>,

    // ---- the runner's own options ----
    /// Per-test timeout; the test is stopped with SIGTERM, then SIGKILL after the grace period [default: 5m]
    #[arg(long, value_name = "DURATION", env = "CLEANTEST_TIMEOUT", value_parser = parse_duration, help_heading = "Runner Options")]
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when a test is stopped [default: 5s]
    #[arg(long, value_name = "DURATION", env = "CLEANTEST_GRACE_PERIOD", value_parser = parse_duration, help_heading = "Runner Options")]
    pub grace_period: Option<Duration>,
    /// Run every test in a process of its own (like cargo-nextest)
    #[arg(long, env = "CLEANTEST_ISOLATE", value_parser = clap::builder::BoolishValueParser::new(), action = ArgAction::SetTrue, help_heading = "Runner Options")]
    pub isolate: bool,
    /// Write a JUnit XML report to this path
    #[arg(long, value_name = "PATH", help_heading = "Runner Options")]
    pub junit: Option<PathBuf>,
    /// What a test that leaves processes behind is: `report`ed (default) or a `fail`ure
    #[arg(long, value_name = "POLICY", env = "CLEANTEST_LEAK", value_parser = ["report", "fail"], help_heading = "Runner Options")]
    pub leak: Option<String>,
    /// Profile of .config/cleantest.toml to use [default: default]
    #[arg(
        short = 'P',
        long = "config-profile",
        value_name = "NAME",
        env = "CLEANTEST_PROFILE",
        help_heading = "Runner Options"
    )]
    pub config_profile: Option<String>,

    #[command(flatten)]
    pub session: SessionOpts,

    /// Whether `--isolate` came from the command line or the environment (so the profile may not override it).
    #[arg(skip)]
    pub isolate_given: bool,
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
}

/// Parses `--timeout 30s`, `--grace-period 1m30s`, `500ms`: humantime's syntax.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e} (write a duration such as 90s, 5m or 1m30s)"))
}

impl RunArgs {
    /// Parses the runner's arguments (without the program name and the `cleantest` word cargo adds).
    pub(crate) fn parse_from_args(args: &[String]) -> Result<RunArgs, clap::Error> {
        let argv = std::iter::once("cargo-cleantest".to_string()).chain(args.iter().cloned());
        let matches: ArgMatches = RunArgs::command().try_get_matches_from(argv)?;
        let mut parsed = RunArgs::from_arg_matches(&matches)?;
        parsed.isolate_given = !matches!(
            matches.value_source("isolate"),
            None | Some(ValueSource::DefaultValue)
        );
        Ok(parsed)
    }

    /// True when a flag selects targets, which (as for cargo test) turns doctests off unless `--doc`.
    pub(crate) fn selects_targets(&self) -> bool {
        self.lib
            || self.bins
            || !self.bin.is_empty()
            || self.tests
            || !self.test.is_empty()
            || self.examples
            || !self.example.is_empty()
            || self.benches
            || !self.bench.is_empty()
            || self.all_targets
    }

    /// Flags that select packages and configure the build: shared by the build and the doctest run.
    pub(crate) fn cargo_common_flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        push_each(&mut out, "--package", &self.package);
        push_flag(&mut out, "--workspace", self.workspace);
        push_each(&mut out, "--exclude", &self.exclude);
        push_each(&mut out, "--features", &self.features);
        push_flag(&mut out, "--all-features", self.all_features);
        push_flag(&mut out, "--no-default-features", self.no_default_features);
        push_flag(&mut out, "--release", self.release);
        push_opt(&mut out, "--profile", &self.profile);
        push_each(&mut out, "--target", &self.target);
        push_opt(
            &mut out,
            "--target-dir",
            &self.target_dir.as_ref().map(|p| path_string(p)),
        );
        push_opt(
            &mut out,
            "--manifest-path",
            &self.manifest_path.as_ref().map(|p| path_string(p)),
        );
        push_opt(&mut out, "--jobs", &self.jobs);
        out.extend(self.manifest_flags());
        push_flag(&mut out, "--quiet", self.quiet);
        for _ in 0..self.verbose {
            out.push("--verbose".into());
        }
        push_opt(&mut out, "--color", &self.color);
        out
    }

    /// `--frozen`, `--locked`, `--offline` and `--config`: also given to `cargo metadata`.
    pub(crate) fn manifest_flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        push_flag(&mut out, "--frozen", self.frozen);
        push_flag(&mut out, "--locked", self.locked);
        push_flag(&mut out, "--offline", self.offline);
        push_each(&mut out, "--config", &self.cargo_config);
        out
    }

    /// Target selection flags, for the build only (cargo refuses them together with `--doc`).
    pub(crate) fn cargo_target_flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        push_flag(&mut out, "--lib", self.lib);
        push_flag(&mut out, "--bins", self.bins);
        push_each(&mut out, "--bin", &self.bin);
        push_flag(&mut out, "--tests", self.tests);
        push_each(&mut out, "--test", &self.test);
        push_flag(&mut out, "--examples", self.examples);
        push_each(&mut out, "--example", &self.example);
        push_flag(&mut out, "--benches", self.benches);
        push_each(&mut out, "--bench", &self.bench);
        push_flag(&mut out, "--all-targets", self.all_targets);
        out
    }

    /// The number given to `-j`, when it is a positive number.
    pub(crate) fn jobs_count(&self) -> Option<usize> {
        self.jobs
            .as_deref()?
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
    }
}

fn path_string(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

fn push_flag(out: &mut Vec<String>, flag: &str, on: bool) {
    if on {
        out.push(flag.to_string());
    }
}

fn push_opt(out: &mut Vec<String>, flag: &str, value: &Option<String>) {
    if let Some(value) = value {
        out.push(flag.to_string());
        out.push(value.clone());
    }
}

fn push_each(out: &mut Vec<String>, flag: &str, values: &[String]) {
    for value in values {
        out.push(flag.to_string());
        out.push(value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> RunArgs {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        RunArgs::parse_from_args(&args).expect("parses")
    }

    #[test]
    fn runner_flags_after_cargo_flags_are_the_runners() {
        let args = parse(&[
            "-p",
            "alpha",
            "--timeout",
            "5s",
            "--isolate",
            "name",
            "--",
            "--exact",
        ]);
        assert_eq!(args.package, vec!["alpha"]);
        assert_eq!(args.timeout, Some(Duration::from_secs(5)));
        assert!(args.isolate && args.isolate_given);
        assert_eq!(args.testname.as_deref(), Some("name"));
        assert_eq!(args.test_args, vec!["--exact"]);
    }

    #[test]
    fn bad_duration_is_a_usage_error() {
        let args = vec!["--timeout".to_string(), "soon".to_string()];
        let err = RunArgs::parse_from_args(&args).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn target_flags_turn_doctests_off() {
        assert!(parse(&["--test", "it"]).selects_targets());
        assert!(!parse(&["-p", "alpha", "--release"]).selects_targets());
    }
}
