//! `cargo cleantest [OPTIONS] [TESTNAME] [-- TEST-BINARY-ARGS]`: cargo's own `cargo test` flags and the
//! runner's options. Everything cargo understands is kept as given, so it can be handed to cargo
//! unchanged.

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser};

use super::cargo_flags::{CompilationOptions, FeatureSelection, ManifestOptions, PackageSelection};
use super::flags::{push_each, push_flag, push_opt};
use super::{ArchiveOpts, RunnerOpts, SessionOpts, TargetSelection};

/// `cargo cleantest [OPTIONS] [TESTNAME] [-- TEST-BINARY-ARGS]`
#[derive(Parser, Debug, Default)]
#[command(
    name = "cargo-cleantest",
    bin_name = "cargo cleantest",
    version = env!("CLEANTEST_LONG_VERSION"),
    about = "cargo test that leaves nothing behind: every test binary in its own process group, \
             per-test timeouts that really stop the test, and cleanup on every exit.",
    override_usage = "cargo cleantest [OPTIONS] [TESTNAME] [-- TEST-BINARY-ARGS...]\n       \
                      cargo cleantest exec [OPTIONS] -- CMD [ARGS]...\n       \
                      cargo cleantest sweep [OPTIONS]\n       \
                      cargo cleantest services [-P NAME]\n       \
                      cargo cleantest archive --archive-file PATH [OPTIONS]\n       \
                      cargo cleantest completions SHELL\n       \
                      cargo cleantest man",
    after_help = "Arguments after `--` go to the test binaries, as with cargo test \
                  (filters, --exact, --skip, --ignored, --include-ignored, --nocapture, \
                  --show-output, --test-threads, --list, -q).\n\n\
                  Commands (each goes first, before its options):\n  \
                  exec         Run any command inside a session\n  \
                  sweep        Remove the Docker resources of ended sessions\n  \
                  services     Print the session services of a profile and what they export\n  \
                  archive      Build the tests and pack them for shards that run without cargo\n  \
                  completions  Print a shell completion script (bash, zsh, fish, elvish, powershell)\n  \
                  man          Print the man page (roff)\n  \
                  help         Print this help, or a command's: cargo cleantest help exec"
)]
pub(crate) struct RunArgs {
    /// Run only the tests whose names contain this string (passed to the test binaries)
    #[arg(value_name = "TESTNAME")]
    pub testname: Option<String>,

    /// Arguments for the test binaries
    #[arg(last = true, value_name = "TEST-BINARY-ARGS")]
    pub test_args: Vec<String>,

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

    #[command(flatten)]
    pub package: PackageSelection,
    #[command(flatten)]
    pub targets: TargetSelection,
    #[command(flatten)]
    pub features: FeatureSelection,
    #[command(flatten)]
    pub compilation: CompilationOptions,
    #[command(flatten)]
    pub manifest: ManifestOptions,
    #[command(flatten)]
    pub runner: RunnerOpts,
    #[command(flatten)]
    pub session: SessionOpts,
    #[command(flatten)]
    pub archive: ArchiveOpts,
}

impl RunArgs {
    /// Parses the runner's arguments (without the program name and the `cleantest` word cargo adds).
    pub(crate) fn parse_from_args(args: &[String]) -> Result<RunArgs, clap::Error> {
        let argv = std::iter::once("cargo-cleantest".to_string()).chain(args.iter().cloned());
        let matches: ArgMatches = RunArgs::command().try_get_matches_from(argv)?;
        let mut parsed = RunArgs::from_arg_matches(&matches)?;
        parsed.runner.isolate_given = !matches!(
            matches.value_source("isolate"),
            None | Some(ValueSource::DefaultValue)
        );
        Ok(parsed)
    }

    /// Flags that select packages and configure the build: shared by the build and the doctest run.
    pub(crate) fn cargo_common_flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.package.push_flags(&mut out);
        self.push_build_flags(&mut out);
        out
    }

    /// `cargo_common_flags` with the package selection replaced by `-p` for each of `packages`.
    pub(crate) fn cargo_flags_for_packages(&self, packages: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for package in packages {
            out.extend(["--package".to_string(), package.clone()]);
        }
        self.push_build_flags(&mut out);
        out
    }

    /// Everything of `cargo_common_flags` but the package selection.
    fn push_build_flags(&self, out: &mut Vec<String>) {
        self.features.push_flags(out);
        self.compilation.push_flags(out);
        self.manifest.push_flags(out);
        push_each(out, "--config", &self.cargo_config);
        push_flag(out, "--quiet", self.quiet);
        for _ in 0..self.verbose {
            out.push("--verbose".into());
        }
        push_opt(out, "--color", &self.color);
    }

    /// The build flags given, which a run from an archive cannot honour (its build is made): the
    /// package and target selection aside (they select among the archive's binaries), and `-v`, `-q`
    /// and `--color`.
    pub(crate) fn build_flags_given(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.features.push_flags(&mut out);
        self.compilation.push_flags(&mut out);
        self.manifest.push_flags(&mut out);
        push_each(&mut out, "--config", &self.cargo_config);
        push_flag(&mut out, "--doc", self.targets.doc);
        push_flag(&mut out, "--no-run", self.no_run);
        out
    }

    /// `--frozen`, `--locked`, `--offline` and `--config`: also given to `cargo metadata`.
    pub(crate) fn manifest_flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.manifest.push_lock_flags(&mut out);
        push_each(&mut out, "--config", &self.cargo_config);
        out
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
        assert_eq!(args.package.package, vec!["alpha"]);
        assert_eq!(args.runner.timeout, Some(std::time::Duration::from_secs(5)));
        assert!(args.runner.isolate && args.runner.isolate_given);
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
        assert!(parse(&["--test", "it"]).targets.selects_targets());
        assert!(
            !parse(&["-p", "alpha", "--release"])
                .targets
                .selects_targets()
        );
    }
}
