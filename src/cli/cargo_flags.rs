//! cargo test's own flag groups, kept as given and handed back to cargo unchanged: package selection,
//! features, compilation and manifest options. (Target selection has its own file: it also decides
//! whether doctests run.) Each group is shown under its own heading in `--help`, as cargo shows it.

use std::path::PathBuf;

use super::flags::{push_each, push_flag, push_opt};

/// `-p`, `--workspace`, `--exclude`.
#[derive(clap::Args, Debug, Default, Clone)]
#[command(next_help_heading = "Package Selection")]
pub(crate) struct PackageSelection {
    /// Package to test (see `cargo help pkgid`)
    #[arg(short = 'p', long = "package", value_name = "SPEC")]
    pub package: Vec<String>,
    /// Test all packages in the workspace
    #[arg(long, visible_alias = "all")]
    pub workspace: bool,
    /// Exclude packages from the test
    #[arg(long, value_name = "SPEC")]
    pub exclude: Vec<String>,
}

/// `-F`, `--all-features`, `--no-default-features`.
#[derive(clap::Args, Debug, Default, Clone)]
#[command(next_help_heading = "Feature Selection")]
pub(crate) struct FeatureSelection {
    /// Space or comma separated list of features to activate
    #[arg(short = 'F', long, value_name = "FEATURES")]
    pub features: Vec<String>,
    /// Activate all available features
    #[arg(long)]
    pub all_features: bool,
    /// Do not activate the `default` feature
    #[arg(long)]
    pub no_default_features: bool,
}

/// `--release`, `--profile`, `--target`, `--target-dir`, `-j`.
#[derive(clap::Args, Debug, Default, Clone)]
#[command(next_help_heading = "Compilation Options")]
pub(crate) struct CompilationOptions {
    /// Build artifacts in release mode, with optimizations
    #[arg(short = 'r', long)]
    pub release: bool,
    /// Build artifacts with the specified cargo profile
    #[arg(long, value_name = "PROFILE-NAME")]
    pub profile: Option<String>,
    /// Build for the target triple
    #[arg(long, value_name = "TRIPLE")]
    pub target: Vec<String>,
    /// Directory for all generated artifacts
    #[arg(long, value_name = "DIRECTORY")]
    pub target_dir: Option<PathBuf>,
    /// Number of parallel build jobs, and of test binaries run at once in shared mode
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<String>,
}

/// `--manifest-path`, `--locked`, `--offline`, `--frozen`.
#[derive(clap::Args, Debug, Default, Clone)]
#[command(next_help_heading = "Manifest Options")]
pub(crate) struct ManifestOptions {
    /// Path to Cargo.toml
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
    /// Assert that `Cargo.lock` will remain unchanged
    #[arg(long)]
    pub locked: bool,
    /// Run without accessing the network
    #[arg(long)]
    pub offline: bool,
    /// Equivalent to specifying both --locked and --offline
    #[arg(long)]
    pub frozen: bool,
}

impl PackageSelection {
    pub(crate) fn push_flags(&self, out: &mut Vec<String>) {
        push_each(out, "--package", &self.package);
        push_flag(out, "--workspace", self.workspace);
        push_each(out, "--exclude", &self.exclude);
    }
}

impl FeatureSelection {
    pub(crate) fn push_flags(&self, out: &mut Vec<String>) {
        push_each(out, "--features", &self.features);
        push_flag(out, "--all-features", self.all_features);
        push_flag(out, "--no-default-features", self.no_default_features);
    }
}

impl CompilationOptions {
    pub(crate) fn push_flags(&self, out: &mut Vec<String>) {
        push_flag(out, "--release", self.release);
        push_opt(out, "--profile", &self.profile);
        push_each(out, "--target", &self.target);
        let target_dir = self.target_dir.as_ref().map(|p| p.display().to_string());
        push_opt(out, "--target-dir", &target_dir);
        push_opt(out, "--jobs", &self.jobs);
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

impl ManifestOptions {
    /// `--manifest-path`, then `--frozen`, `--locked`, `--offline`.
    pub(crate) fn push_flags(&self, out: &mut Vec<String>) {
        let manifest = self.manifest_path.as_ref().map(|p| p.display().to_string());
        push_opt(out, "--manifest-path", &manifest);
        self.push_lock_flags(out);
    }

    /// `--frozen`, `--locked`, `--offline`: also given to `cargo metadata`.
    pub(crate) fn push_lock_flags(&self, out: &mut Vec<String>) {
        push_flag(out, "--frozen", self.frozen);
        push_flag(out, "--locked", self.locked);
        push_flag(out, "--offline", self.offline);
    }
}
