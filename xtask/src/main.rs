//! `cargo xtask`: project chores that are not part of the product.
//!
//! - `cargo xtask ci`: what CI checks, in CI's order (formatting, clippy, the test suite, the
//!   benchmark harness at smoke size, the conformance subset, the macOS check), so a developer runs
//!   exactly what `.ci/run` runs.
//! - `cargo xtask demo`: `cargo cleantest` on the demo fixture workspace.
//! - `cargo xtask image [--rebuild]`: the local `cleantest-fixture:latest` image the Docker tests use;
//!   `cargo xtask image postgres|redis [--rebuild]`: real service images from Debian's packages.
//! - `cargo xtask bench [--smoke] [--runs N]`: the benchmarks behind `BENCHMARKS.md`.
//! - `cargo xtask conformance [--ci] [--only NAME]`: counts and exit codes against cargo test on
//!   pinned crates.io packages, behind `CONFORMANCE.md`.
//! - `cargo xtask stress [--runs N] [--test NAME]... [FILTER]...`: test binaries run N times beside a
//!   busy loop on every core, with a pass count per test (default: the timeout, signal and chaos cells).
//! - `cargo xtask check-foreign`: check and clippy for macOS (`aarch64-apple-darwin`), from Linux.

mod bench;
mod conformance;
mod foreign;
mod image;
mod service_image;
mod stress;

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The benchmarks and the conformance corpus run the runner many times: their environment locks go
    // under the target directory, not into the machine-wide /run/lock/cleantest, which would keep one
    // file per workspace they ever ran in.
    if std::env::var_os("CLEANTEST_LOCK_DIR").is_none() {
        let locks = target_dir(&workspace_root()).join("xtask-locks");
        // SAFETY: set before any thread is started; every child the xtask runs inherits it.
        unsafe { std::env::set_var("CLEANTEST_LOCK_DIR", locks) };
    }
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("demo") => demo(&args[1..]),
        Some("image") => {
            let rebuild = args.iter().any(|a| a == "--rebuild");
            match args
                .get(1)
                .map(String::as_str)
                .filter(|a| !a.starts_with('-'))
            {
                Some(name) => service_image::build(name, rebuild),
                None => build_image(rebuild),
            }
        }
        Some("bench") => bench::run(&args[1..]),
        Some("conformance") => conformance::run(&args[1..]),
        Some("stress") => stress::run(&args[1..]),
        Some("check-foreign") => foreign::run(&workspace_root()),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci|check-foreign|demo [ARGS...]|image [postgres|redis] [--rebuild]|bench [--smoke] [--runs N] [--only isolation]|conformance [--ci] [--only NAME]|stress [--runs N] [--test NAME]... [--no-hog] [FILTER]...>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: failed to {message}");
            ExitCode::FAILURE
        }
    }
}

/// The target directory cargo uses for this workspace: `CARGO_TARGET_DIR` (relative to the root), else
/// `<root>/target`.
pub(crate) fn target_dir(root: &std::path::Path) -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn step(what: &str, command: &mut Command) -> Result<(), String> {
    eprintln!("xtask: {what}");
    let status = command.status().map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} ({status})"))
    }
}

fn ci() -> Result<(), String> {
    step(
        "check formatting",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    step(
        "run clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step("run the test suite", cargo().args(["test", "--workspace"]))?;
    // The benchmark harness at tiny sizes, so that it does not rot between real runs.
    eprintln!("xtask: run the benchmark harness at smoke size");
    bench::run(&["--smoke".to_string()])?;
    eprintln!("xtask: run the conformance corpus's CI subset");
    conformance::run(&["--ci".to_string()])?;
    eprintln!("xtask: check the macOS build");
    foreign::run(&workspace_root())
}

/// The workspace root: the parent of this xtask's manifest directory.
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `cargo-cleantest` on PATH (where `cargo install` puts it), if there is one.
fn installed_runner() -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("cargo-cleantest"))
        .find(|path| path.is_file())
}

fn demo(extra: &[String]) -> Result<(), String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = root.join("fixtures/demo/Cargo.toml");
    // The installed runner when there is one (the quick start installs it); else this checkout's,
    // built first. Not `--quiet`: on a fresh checkout that build takes minutes, and cargo's progress
    // is the only sign of life.
    let installed = installed_runner();
    if installed.is_none() {
        step(
            "build cargo-cleantest (a few minutes on a fresh checkout; `cargo install --locked --path .` avoids it next time)",
            cargo().args(["build", "--package", "cargo-cleantest"]),
        )?;
    }
    eprintln!(
        "xtask: build the demo's database image cleantest-postgres:15 (from Debian's postgresql-15)"
    );
    service_image::build("postgres", false)?;
    let mut run = cargo();
    match &installed {
        Some(path) => {
            eprintln!(
                "xtask: run the installed cargo cleantest ({}) on fixtures/demo",
                path.display()
            );
            run.args(["cleantest", "--manifest-path"]);
        }
        None => {
            eprintln!("xtask: run this checkout's cargo cleantest on fixtures/demo");
            run.args([
                "run",
                "--quiet",
                "--package",
                "cargo-cleantest",
                "--",
                "--manifest-path",
            ]);
        }
    }
    let status = run
        .arg(&manifest)
        // Every binary runs, so the summary shows all of it (cargo test would stop at the failure).
        .arg("--no-fail-fast")
        .args(extra)
        .status()
        .map_err(|e| format!("run cargo cleantest on fixtures/demo: {e}"))?;
    // One demo test hangs on purpose and is stopped by its timeout: 101, as cargo test exits for a
    // failed test.
    match status.code() {
        Some(code @ (0 | 101)) => {
            eprintln!(
                "xtask: the demo ran (exit {code}: its hanging test failed by timeout, on purpose)"
            );
            Ok(())
        }
        _ => Err(format!("run cargo cleantest on fixtures/demo ({status})")),
    }
}

pub(crate) fn build_image(rebuild: bool) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start a runtime: {e}"))?;
    runtime.block_on(async {
        let docker = bollard::Docker::connect_with_defaults()
            .map_err(|e| format!("connect to the Docker engine: {e}"))?
            .negotiate_version()
            .await
            .map_err(|e| format!("reach the Docker engine: {e}"))?;
        image::ensure(&docker, rebuild).await
    })?;
    eprintln!("xtask: {} is ready", image::IMAGE);
    Ok(())
}
