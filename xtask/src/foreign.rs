//! `cargo xtask check-foreign`: `cargo check` and `cargo clippy -D warnings` of the whole workspace,
//! all targets, for `aarch64-apple-darwin`, from Linux. Nothing is linked or run (there is no Apple
//! SDK here): this keeps the macOS backend (`crates/sys/src/macos.rs`) and every `cfg` compiling.
//!
//! It needs a rustc whose own std source is at hand, for `-Zbuild-std`: Debian's `rustc-web`,
//! `cargo-web`, `rust-web-src` and `rust-web-clippy`, all of one version (rustup's toolchains fail to
//! build `core` from another version's source, and are never touched here: `/usr/bin/cargo` and
//! `/usr/bin/rustc` are called by path). ring's C is compiled by clang in its no-sysroot mode, with a
//! stub of Apple's `TargetConditionals.h`. As root (CI), missing packages are installed.

use std::path::Path;
use std::process::Command;

const TARGET: &str = "aarch64-apple-darwin";
const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "rust-web-clippy",
    "clang",
    "llvm",
];
/// The four Rust packages must be of one version.
const MATCHED: &[&str] = &["rustc-web", "cargo-web", "rust-web-src", "rust-web-clippy"];

/// Enough of Apple's header for ring's C: it only asks which Apple OS it is built for.
const TARGET_CONDITIONALS: &str = "\
/* A stub of Apple's TargetConditionals.h, for compiling ring's C without an SDK. */
#ifndef CLEANTEST_TARGET_CONDITIONALS
#define CLEANTEST_TARGET_CONDITIONALS
#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 1
#define TARGET_OS_IPHONE 0
#define TARGET_OS_IOS 0
#endif
";

pub(crate) fn run(root: &Path) -> Result<(), String> {
    ensure_packages()?;
    let stub = crate::target_dir(root).join("foreign-stub");
    std::fs::create_dir_all(&stub).map_err(|e| format!("create {}: {e}", stub.display()))?;
    std::fs::write(stub.join("TargetConditionals.h"), TARGET_CONDITIONALS)
        .map_err(|e| format!("write the header stub: {e}"))?;
    let target_dir = crate::target_dir(root).join("foreign");
    for (what, args) in [("check", vec!["check"]), ("clippy", vec!["clippy"])] {
        let mut command = Command::new("/usr/bin/cargo");
        command
            .current_dir(root)
            .args(&args)
            .args(["-Zbuild-std=std,panic_abort,test", "--target", TARGET])
            .args(["--workspace", "--all-targets"]);
        if what == "clippy" {
            command.args(["--", "-D", "warnings"]);
        }
        command
            // -Zbuild-std on a stable rustc.
            .env("RUSTC_BOOTSTRAP", "1")
            .env("RUSTC", "/usr/bin/rustc")
            .env("CARGO_TARGET_DIR", &target_dir)
            // Debian's clippy-driver first: rustup's would be of another version than the rustc.
            .env(
                "PATH",
                format!("/usr/bin:{}", std::env::var("PATH").unwrap_or_default()),
            )
            .env_remove("RUSTUP_TOOLCHAIN")
            .env("CC_aarch64_apple_darwin", "clang")
            .env("AR_aarch64_apple_darwin", "llvm-ar")
            .env(
                "CFLAGS_aarch64_apple_darwin",
                format!(
                    "-nostdlibinc -ffreestanding -DRING_CORE_NOSTDLIBINC=1 -isystem {}",
                    stub.display()
                ),
            );
        crate::step(&format!("cargo {what} for {TARGET}"), &mut command)?;
    }
    Ok(())
}

/// The packages, installed (as root) when missing, all of one version.
fn ensure_packages() -> Result<(), String> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| version(p).is_none())
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            return Err(format!(
                "find Debian's {}; install them (apt-get install {})",
                missing.join(", "),
                PACKAGES.join(" ")
            ));
        }
        // One apt call: the packages of one version come together.
        crate::step(
            &format!("install {}", missing.join(", ")),
            Command::new("apt-get")
                .args(["install", "-y", "-qq"])
                .args(PACKAGES)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    let versions: Vec<(String, String)> = MATCHED
        .iter()
        .map(|p| (p.to_string(), version(p).unwrap_or_default()))
        .collect();
    if versions.iter().any(|(_, v)| *v != versions[0].1) {
        return Err(format!(
            "use Rust packages of one version (rustc and its std source must match): {versions:?}"
        ));
    }
    Ok(())
}

/// The installed version of a Debian package, if it is installed.
fn version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}", package])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text.strip_prefix("install ok installed ")?;
    Some(version.trim().to_string())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
