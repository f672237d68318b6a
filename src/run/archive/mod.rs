//! Build once, run anywhere: `cargo cleantest archive` packs a build's test binaries, what they need
//! at run time and the workspace's config files into one zstd-compressed tar (`pack`); a run with
//! `--archive-file` unpacks it and hands `prepare` the binaries a build would have described
//! (`unpack`), so everything after the build runs unchanged. `manifest` is the archive's table of
//! contents and the paths it moves from the build machine to this one.

mod manifest;
mod pack;
mod select;
mod unpack;
mod zstd;

pub(crate) use pack::archive;
pub(crate) use unpack::{Extracted, open};
