//! The workspace root read from the manifests alone, with no cargo process: what lets the config be
//! checked before cargo builds anything while `cargo metadata` runs beside the build instead of before
//! it (about 30 ms of every run's start). It is a guess, checked against cargo metadata's answer; where
//! the two differ, the run uses cargo's.

use std::path::{Path, PathBuf};

/// The root cargo would find for the manifest at `manifest_path` (or the nearest `Cargo.toml` from
/// the current directory up, as cargo looks): the manifest's own directory when it declares
/// `[workspace]`, the directory its `package.workspace` names, else the nearest parent whose manifest
/// declares `[workspace]`, else the manifest's directory. `None` when a manifest on the way cannot be
/// read or parsed: cargo then says what is wrong.
pub(super) fn guess(manifest_path: Option<&Path>) -> Option<PathBuf> {
    let manifest = match manifest_path {
        Some(path) => std::path::absolute(path).ok()?,
        None => nearest_manifest(&std::env::current_dir().ok()?)?,
    };
    let dir = manifest.parent()?;
    let table = read(&manifest)?;
    if table.contains_key("workspace") {
        return Some(dir.to_path_buf());
    }
    let named = table
        .get("package")
        .and_then(|p| p.get("workspace"))
        .and_then(|w| w.as_str());
    if let Some(named) = named {
        return Some(dir.join(named));
    }
    for parent in dir.ancestors().skip(1) {
        let candidate = parent.join("Cargo.toml");
        if candidate.is_file() && read(&candidate)?.contains_key("workspace") {
            return Some(parent.to_path_buf());
        }
    }
    Some(dir.to_path_buf())
}

/// Whether two paths name the same directory (one may go through a symlink, or hold `..`).
pub(super) fn same(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn nearest_manifest(from: &Path) -> Option<PathBuf> {
    from.ancestors()
        .map(|dir| dir.join("Cargo.toml"))
        .find(|m| m.is_file())
}

fn read(manifest: &Path) -> Option<toml::Table> {
    std::fs::read_to_string(manifest).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::run::test_dir::TestDir;

    fn tree(label: &str, files: &[(&str, &str)]) -> TestDir {
        let root = TestDir::fresh(&format!("root-{label}"));
        for (path, text) in files {
            let path = root.0.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        root
    }

    const PACKAGE: &str = "[package]\nname = \"p\"\nversion = \"0.1.0\"\n";

    #[test]
    fn a_package_on_its_own_is_its_root() {
        let dir = tree("alone", &[("p/Cargo.toml", PACKAGE)]);
        let got = guess(Some(&dir.0.join("p/Cargo.toml")));
        assert_eq!(got, Some(dir.0.join("p")));
    }

    #[test]
    fn a_member_finds_the_workspace_above_it() {
        let dir = tree(
            "member",
            &[
                ("Cargo.toml", "[workspace]\nmembers = [\"crates/p\"]\n"),
                ("crates/p/Cargo.toml", PACKAGE),
            ],
        );
        assert_eq!(
            guess(Some(&dir.0.join("crates/p/Cargo.toml"))),
            Some(dir.0.clone())
        );
    }

    #[test]
    fn package_workspace_names_the_root() {
        let text = format!("{PACKAGE}workspace = \"../ws\"\n");
        let dir = tree(
            "named",
            &[("ws/Cargo.toml", "[workspace]\n"), ("p/Cargo.toml", &text)],
        );
        let got = guess(Some(&dir.0.join("p/Cargo.toml"))).unwrap();
        assert!(same(&got, &dir.0.join("ws")), "{got:?}");
    }

    #[test]
    fn an_unreadable_manifest_is_no_guess() {
        let dir = tree("broken", &[("p/Cargo.toml", "[package\n")]);
        assert_eq!(guess(Some(&dir.0.join("p/Cargo.toml"))), None);
    }
}
