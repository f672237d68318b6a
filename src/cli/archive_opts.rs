//! Running from an archive (`cargo cleantest archive`): where it is, where it unpacks, and where the
//! workspace's files are on this machine.

use std::path::PathBuf;

/// `--archive-file`, `--workspace-remap`, `--extract-to`.
#[derive(clap::Args, Debug, Default, Clone)]
#[command(next_help_heading = "Archive Options")]
pub(crate) struct ArchiveOpts {
    /// Run the tests of this archive (made by `cargo cleantest archive`): no cargo, no build, no source
    #[arg(long, value_name = "PATH")]
    pub archive_file: Option<PathBuf>,
    /// The workspace's checkout on this machine: CARGO_MANIFEST_DIR and the working directories point
    /// into it, and the config is read there [default: the archive's own copy]
    #[arg(long, value_name = "DIR", requires = "archive_file")]
    pub workspace_remap: Option<PathBuf>,
    /// Unpack into this directory and keep it for the next run of the same archive [default: a
    /// directory of the session, removed with it]
    #[arg(long, value_name = "DIR", requires = "archive_file")]
    pub extract_to: Option<PathBuf>,
}
