//! The archive's table of contents (`cleantest-archive.json`, its first member): which binaries it
//! holds, how cargo test would start each, and where the build machine kept them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The first member of every archive.
pub(super) const MANIFEST: &str = "cleantest-archive.json";
/// Members under this prefix unpack into the target directory.
pub(super) const TARGET_PREFIX: &str = "target";
/// Members under this prefix unpack into the workspace.
pub(super) const WORKSPACE_PREFIX: &str = "workspace";
/// The layout this runner reads and writes; another is refused, naming both.
pub(super) const FORMAT: u32 = 1;
/// What every manifest says of itself, so a foreign JSON file is told apart from an old format.
pub(super) const KIND: &str = "cargo-cleantest archive";

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(super) struct Manifest {
    pub kind: String,
    pub format: u32,
    /// The runner that made it (`--version`'s text).
    pub made_by: String,
    /// The target triple the tests were built for.
    pub target: String,
    /// The workspace root and the target directory on the build machine: environment values under
    /// them are moved to where the archive unpacks.
    pub workspace_root: PathBuf,
    pub target_dir: PathBuf,
    pub packages: Vec<Package>,
    pub binaries: Vec<Binary>,
    /// The workspace's files it carries (relative to the root): the config, what it names, and
    /// `[archive] include`.
    pub files: Vec<PathBuf>,
    /// Every other file it carries, relative to the target directory: shared libraries, the
    /// packages' binaries (`CARGO_BIN_EXE_*`) and build scripts' `OUT_DIR` files.
    pub support: Vec<PathBuf>,
    /// Whether the workspace has doctests, which no archive can hold.
    pub doctests_left_out: bool,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(super) struct Package {
    pub name: String,
    /// Relative to the workspace root (empty for a package at the root).
    pub dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(super) struct Binary {
    pub id: String,
    pub package: String,
    /// Relative to the target directory.
    pub executable: PathBuf,
    /// `(package, kind rank, target name)`: cargo's run order.
    pub sort_key: (String, u8, String),
    pub is_lib: bool,
    /// Declared with `harness = false`.
    pub custom_harness: bool,
    /// The environment cargo test gives it, as the build machine had it (`CARGO` and
    /// `LD_LIBRARY_PATH` are set anew where it runs).
    pub env: Vec<(String, String)>,
}

/// Where the build machine's paths are on this one.
pub(super) struct Remap<'a> {
    pub manifest: &'a Manifest,
    pub workspace: &'a Path,
    pub target: &'a Path,
}

impl Remap<'_> {
    /// `value` moved here when it is a path under the build machine's target directory or workspace
    /// root (the target directory first: it is usually inside the root); any other value as it is.
    pub(super) fn value(&self, value: &str) -> String {
        let path = Path::new(value);
        let moved = [
            (&self.manifest.target_dir, self.target),
            (&self.manifest.workspace_root, self.workspace),
        ]
        .into_iter()
        .find_map(|(from, to)| {
            let rest = path.strip_prefix(from).ok()?;
            Some(match rest.as_os_str().is_empty() {
                true => to.to_path_buf(),
                false => to.join(rest),
            })
        });
        match moved {
            Some(path) => path.to_string_lossy().into_owned(),
            None => value.to_string(),
        }
    }
}

/// `(arch, os)` of a target triple: `x86_64-unknown-linux-gnu` → `(x86_64, linux)`,
/// `aarch64-apple-darwin` → `(aarch64, darwin)`.
pub(super) fn platform(triple: &str) -> (&str, &str) {
    let mut parts = triple.split('-');
    let arch = parts.next().unwrap_or("");
    let os = parts.nth(1).unwrap_or("");
    (arch, os)
}

/// This machine's `(arch, os)`, in the triples' words.
pub(super) fn here() -> (&'static str, &'static str) {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    (std::env::consts::ARCH, os)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_the_build_machines_directories_move_and_others_stay() {
        let manifest = Manifest {
            kind: KIND.into(),
            format: FORMAT,
            made_by: String::new(),
            target: String::new(),
            workspace_root: "/build/ws".into(),
            target_dir: "/build/ws/target".into(),
            packages: Vec::new(),
            binaries: Vec::new(),
            files: Vec::new(),
            support: Vec::new(),
            doctests_left_out: false,
        };
        let remap = Remap {
            manifest: &manifest,
            workspace: Path::new("/here/checkout"),
            target: Path::new("/here/x/target"),
        };
        assert_eq!(remap.value("/build/ws/crates/a"), "/here/checkout/crates/a");
        assert_eq!(
            remap.value("/build/ws/target/debug/build/a-1/out"),
            "/here/x/target/debug/build/a-1/out"
        );
        assert_eq!(remap.value("/build/wsx/a"), "/build/wsx/a");
        assert_eq!(remap.value("0.1.0"), "0.1.0");
        assert_eq!(remap.value("/build/ws"), "/here/checkout");
    }

    #[test]
    fn triples_name_their_platform() {
        assert_eq!(platform("x86_64-unknown-linux-gnu"), ("x86_64", "linux"));
        assert_eq!(platform("aarch64-apple-darwin"), ("aarch64", "darwin"));
        assert_eq!(platform("x86_64-unknown-linux-musl"), ("x86_64", "linux"));
        assert_eq!(platform("garbage"), ("garbage", ""));
    }
}
