//! Target selection: cargo test's `--lib`, `--bins`, `--test NAME`, ..., `--doc`, passed to cargo as
//! given. Selecting targets turns doctests off, as under cargo test.

use super::flags::{push_each, push_flag};

/// The target selection flags.
#[derive(clap::Args, Debug, Default, Clone)]
#[command(next_help_heading = "Target Selection")]
pub(crate) struct TargetSelection {
    /// Test only this package's library
    #[arg(long)]
    pub lib: bool,
    /// Test all binaries
    #[arg(long)]
    pub bins: bool,
    /// Test only the specified binary
    #[arg(long = "bin", value_name = "NAME")]
    pub bin: Vec<String>,
    /// Test all targets that have `test = true` set
    #[arg(long)]
    pub tests: bool,
    /// Test only the specified test target
    #[arg(long = "test", value_name = "NAME")]
    pub test: Vec<String>,
    /// Test all examples
    #[arg(long)]
    pub examples: bool,
    /// Test only the specified example
    #[arg(long = "example", value_name = "NAME")]
    pub example: Vec<String>,
    /// Test all targets that have `bench = true` set
    #[arg(long)]
    pub benches: bool,
    /// Test only the specified bench target
    #[arg(long = "bench", value_name = "NAME")]
    pub bench: Vec<String>,
    /// Test all targets (does not include doctests)
    #[arg(long)]
    pub all_targets: bool,
    /// Test only this library's documentation
    #[arg(long)]
    pub doc: bool,
}

impl TargetSelection {
    /// True when a flag selects targets, which (as for cargo test) turns doctests off unless `--doc`.
    pub(crate) fn selects_targets(&self) -> bool {
        !self.flags().is_empty()
    }

    /// The selection flags, for the build only (cargo refuses them together with `--doc`).
    pub(crate) fn flags(&self) -> Vec<String> {
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
}
