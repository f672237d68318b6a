//! Build script: the commit and date of the checkout, for `--version` (as cargo's own
//! `cargo 1.95.0 (f2d3ce0bd 2026-03-21)`). Outside a git checkout (a packaged crate) the version is
//! the bare number.

use std::process::Command;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
    };
    // Only this package's own checkout: a crate unpacked inside another repository is not its commit.
    let top = git(&["rev-parse", "--show-toplevel"]);
    let ours =
        top.is_some_and(|top| std::fs::canonicalize(top).ok() == std::fs::canonicalize(&dir).ok());
    let version = env!("CARGO_PKG_VERSION");
    let long = match (ours, git(&["log", "-1", "--format=%h %cs"])) {
        (true, Some(commit)) => format!("{version} ({commit})"),
        _ => version.to_string(),
    };
    println!("cargo:rustc-env=CLEANTEST_LONG_VERSION={long}");
    // The triple this runner is built for: what an archive names when rustc cannot say.
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=CLEANTEST_TARGET={target}");
    // A new commit moves HEAD or the ref it names (a directory is scanned whole).
    for name in ["HEAD", "refs", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", name]) {
            let path = std::path::Path::new(&dir).join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
