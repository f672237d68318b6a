//! The run's start does only the work that changed (issue 38): what `cargo metadata` said of a
//! workspace is remembered between runs, and asked again when a manifest changes or a member appears
//! under a glob; the `CARGO_PKG_*` variables a test sees always match the manifest cargo built it from.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// A member's only test: the package variables the runner gives it at run time equal the ones cargo
/// compiled into it.
const MEMBER_LIB: &str = r#"
#[test]
fn package_variables_match_the_build() {
    assert_eq!(std::env::var("CARGO_PKG_DESCRIPTION").unwrap(), env!("CARGO_PKG_DESCRIPTION"));
    assert_eq!(std::env::var("CARGO_PKG_VERSION").unwrap(), env!("CARGO_PKG_VERSION"));
}
"#;

fn write_member(root: &Path, name: &str, version: &str, description: &str) {
    let dir = root.join("crates").join(name);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"{version}\"\nedition = \"2021\"\n\
             description = \"{description}\"\n\n[lib]\ndoctest = false\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), MEMBER_LIB).unwrap();
}

/// A workspace whose members are `crates/*`, and a `cargo` in front of the real one that writes down
/// each command it is asked for (`log`), for the runner to use (`CARGO`).
fn glob_workspace(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("ws");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("Cargo.toml"),
        "[workspace]\nmembers = [\"crates/*\"]\nresolver = \"2\"\n",
    )
    .unwrap();
    let real = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let wrapper = dir.join("logging-cargo");
    write_executable(
        &wrapper,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\nexec '{real}' \"$@\"\n",
            dir.join("cargo.log").display()
        ),
    );
    root
}

/// One run of the workspace in `dir`, and how many `cargo metadata` it (and the runs before it) asked.
fn run_counting(dir: &Path, label: &str) -> (Output, usize) {
    let mark = unique_mark(label);
    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"));
    in_fixture(&mut command, "demo", &mark);
    command
        .current_dir(dir.join("ws"))
        .env("CARGO", dir.join("logging-cargo"))
        // A state directory of the test's own: its remembered answer goes with it.
        .env("CLEANTEST_STATE_DIR", dir.join("state"))
        .arg("--no-lock");
    let out = run(&mut command);
    let log = std::fs::read_to_string(dir.join("cargo.log")).unwrap_or_default();
    (out, log.lines().filter(|l| *l == "metadata").count())
}

fn assert_passed(out: &Output, tests: usize, what: &str) {
    let text = format!("{}{}", stdout(out), stderr(out));
    assert_eq!(out.status.code(), Some(0), "{what}: {text}");
    assert_eq!(sum_totals(out).passed, tests, "{what}: {text}");
}

#[test]
fn cargo_metadata_is_asked_again_only_when_the_workspace_changed() {
    let dir = temp_dir("metadata-cache");
    let root = glob_workspace(&dir);
    write_member(&root, "ct-cache-a", "0.1.0", "first words");

    let (out, asked) = run_counting(&dir, "cache-first");
    assert_passed(&out, 1, "the first run");
    assert_eq!(asked, 1, "the first run asks cargo metadata");

    let (out, asked) = run_counting(&dir, "cache-same");
    assert_passed(&out, 1, "an unchanged workspace");
    assert_eq!(asked, 1, "an unchanged workspace is not asked about again");

    // A manifest changes: the test sees the new description and version, as cargo built them.
    write_member(&root, "ct-cache-a", "0.2.0", "other words");
    let (out, asked) = run_counting(&dir, "cache-manifest");
    assert_passed(&out, 1, "a changed manifest");
    assert_eq!(asked, 2, "a changed manifest is asked about");

    // A member appears under the glob: no manifest the answer was checked against changed, but the
    // build shows a package it does not know, and its test runs with its own variables.
    write_member(&root, "ct-cache-b", "0.3.0", "a new member");
    let (out, asked) = run_counting(&dir, "cache-member");
    assert_passed(&out, 2, "a new member");
    assert_eq!(
        asked, 3,
        "a new member sends the run back to cargo metadata"
    );

    let (out, asked) = run_counting(&dir, "cache-again");
    assert_passed(&out, 2, "the grown workspace");
    assert_eq!(asked, 3, "and then it is remembered");
}
