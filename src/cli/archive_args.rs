//! `cargo cleantest archive --archive-file PATH [cargo test's selection and build flags]`: the build a run
//! would make, packed for shards that run it elsewhere.

use std::path::PathBuf;

use clap::{ArgAction, Parser};

use super::cargo_flags::{CompilationOptions, FeatureSelection, ManifestOptions, PackageSelection};
use super::{RunArgs, TargetSelection};

/// `cargo cleantest archive --archive-file PATH [OPTIONS]`
#[derive(Parser, Debug, Default)]
#[command(
    name = "cargo-cleantest archive",
    bin_name = "cargo cleantest archive",
    about = "Build the tests as a run would, and pack the test binaries, what they need at run time and \
             the config's files into one archive (tar + zstd), for `cargo cleantest --archive-file` on \
             machines without cargo or the source."
)]
pub(crate) struct ArchiveArgs {
    /// The archive to write (conventionally `*.tar.zst`); an existing file is replaced
    #[arg(long, value_name = "PATH")]
    pub archive_file: PathBuf,
    /// Override a cargo configuration value
    #[arg(long = "config", value_name = "KEY=VALUE|PATH")]
    pub cargo_config: Vec<String>,
    /// Do not print cargo log messages
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
}

impl ArchiveArgs {
    /// The run's arguments that make the same build (`--no-run`).
    pub(crate) fn build_args(&self) -> RunArgs {
        RunArgs {
            cargo_config: self.cargo_config.clone(),
            no_run: true,
            quiet: self.quiet,
            verbose: self.verbose,
            color: self.color.clone(),
            package: self.package.clone(),
            targets: self.targets.clone(),
            features: self.features.clone(),
            compilation: self.compilation.clone(),
            manifest: self.manifest.clone(),
            ..RunArgs::default()
        }
    }
}
