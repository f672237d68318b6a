//! Build once, run anywhere (issue 40): `cargo cleantest archive` packs a workspace's tests, and
//! `--archive-file` runs them where neither the workspace nor cargo is, from the archive's own copy of
//! the files the config names, or from a checkout (`--workspace-remap`); bad archives fail before any
//! test runs, naming what is wrong.

use crate::common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// The package's tests: what cargo test gives a test at run time, read where the archive put it.
const IT: &str = r#"
use std::path::PathBuf;

fn manifest_dir() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
}

#[test]
fn reads_the_included_data() {
    let text = std::fs::read_to_string(manifest_dir().join("data/words.txt")).unwrap();
    assert_eq!(text.trim(), std::env::var("CT_EXPECT_WORDS").unwrap_or("from the archive".into()));
}

#[test]
fn reads_the_build_scripts_output() {
    let out = std::env::var("OUT_DIR").unwrap();
    assert_eq!(std::fs::read_to_string(format!("{out}/made.txt")).unwrap(), "made by build.rs");
}

#[test]
fn runs_the_packages_binary() {
    let tool = std::env::var("CARGO_BIN_EXE_tool").unwrap();
    let out = std::process::Command::new(tool).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tool ran");
}

#[test]
fn runs_in_its_package_directory() {
    assert_eq!(std::env::current_dir().unwrap(), manifest_dir());
}

#[test]
fn fails_when_asked() {
    assert!(std::env::var_os("CT_FAIL").is_none(), "asked to fail");
}
"#;

/// A workspace with one package: a library test, a binary, a build script and the tests above;
/// `[archive] include` names its data.
fn workspace(label: &str) -> TempDir {
    let dir = scratch_crate(
        label,
        "#[test]\nfn unit() { assert_eq!(1 + 1, 2); }\n",
        Some("[archive]\ninclude = [\"data\"]\n"),
    );
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let manifest = manifest.replace(
        "edition = \"2021\"\n",
        "edition = \"2021\"\nbuild = \"build.rs\"\n[lib]\ndoctest = false\n[[bin]]\nname = \"tool\"\npath = \"src/tool.rs\"\n",
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    let files = [
        (
            "build.rs",
            "fn main() {\n    let out = std::env::var(\"OUT_DIR\").unwrap();\n    \
             std::fs::write(format!(\"{out}/made.txt\"), \"made by build.rs\").unwrap();\n}\n",
        ),
        ("src/tool.rs", "fn main() { println!(\"tool ran\"); }\n"),
        ("tests/it.rs", IT),
        ("data/words.txt", "from the archive\n"),
    ];
    for (path, text) in files {
        std::fs::create_dir_all(dir.join(path).parent().unwrap()).unwrap();
        std::fs::write(dir.join(path), text).unwrap();
    }
    dir
}

/// `cargo-cleantest` with the suite's target directory and a state directory of the test's, in `cwd`.
fn command_in(cwd: &Path, state: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"));
    command
        .current_dir(cwd)
        .env("CARGO_TARGET_DIR", fixture_target_dir().join("archive"))
        .env("CLEANTEST_STATE_DIR", state)
        .env("CLEANTEST_LOCK_DIR", target_dir().join("it-locks"))
        .env_remove("CLEANTEST_PROFILE")
        .env_remove("RUST_TEST_THREADS");
    command
}

/// A test run (without the environment lock: each test's workspace is its own).
fn runner(cwd: &Path, state: &Path) -> Command {
    let mut command = command_in(cwd, state);
    command.arg("--no-lock");
    command
}

/// Archives the workspace `dir` into `archive`.
fn archive(dir: &Path, state: &Path, archive: &Path) {
    let out = run(command_in(dir, state)
        .args(["archive", "--archive-file"])
        .arg(archive));
    assert_eq!(out.status.code(), Some(0), "archive: {}", stderr(&out));
    assert!(
        stderr(&out).contains("Archived 3 test binaries"),
        "{}",
        stderr(&out)
    );
}

/// A run from `archive` somewhere else, where `cargo` is a stub that writes down being called and
/// fails: nothing of a run from an archive may need it.
fn run_from(dir: &Path, state: &Path, archive: &Path, extra: &[&str]) -> (Output, bool) {
    let stub = dir.join("no-cargo");
    std::fs::create_dir_all(&stub).unwrap();
    let called = stub.join("called");
    let script = stub.join("cargo");
    write_executable(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nexit 101\n",
            called.display()
        ),
    );
    let path = format!("{}:/usr/bin:/bin", stub.display());
    let out = run(runner(dir, state)
        .env("PATH", path)
        .env("CARGO", &script)
        .env_remove("CARGO_TARGET_DIR")
        .arg("--archive-file")
        .arg(archive)
        .args(extra));
    (out, called.exists())
}

fn passed(out: &Output) -> usize {
    sum_totals(out).passed
}

fn archives_left(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state.join("archives"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn an_archive_runs_where_neither_the_workspace_nor_cargo_is() {
    let ws = workspace("archive-anywhere");
    let elsewhere = temp_dir("archive-elsewhere");
    let state = elsewhere.join("state");
    let file = elsewhere.join("tests.tar.zst");
    archive(&ws, &state, &file);
    // The workspace is gone from where it was built; the binaries' compile-time paths lead nowhere.
    let moved = elsewhere.join("moved-away");
    std::fs::rename(&*ws, &moved).unwrap();
    let (out, cargo_called) = run_from(&elsewhere, &state, &file, &["--no-fail-fast"]);
    std::fs::rename(&moved, &*ws).unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(passed(&out), 6, "{text}");
    assert!(!cargo_called, "the run called cargo: {text}");
    assert!(text.contains("Unpacked"), "{text}");
    assert!(
        archives_left(&state).is_empty(),
        "the session's unpacked archive outlived it: {:?}",
        archives_left(&state)
    );
}

#[test]
fn an_extracted_archive_is_reused_and_a_checkout_replaces_its_files() {
    let ws = workspace("archive-reuse");
    let elsewhere = temp_dir("archive-reuse-run");
    let state = elsewhere.join("state");
    let file = elsewhere.join("tests.tar.zst");
    archive(&ws, &state, &file);
    let extract = elsewhere.join("unpacked");
    let extract_arg = extract.to_str().unwrap();
    let (first, _) = run_from(&elsewhere, &state, &file, &["--extract-to", extract_arg]);
    let (second, cargo_called) =
        run_from(&elsewhere, &state, &file, &["--extract-to", extract_arg]);
    for out in [&first, &second] {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
        assert_eq!(passed(out), 6, "{}", stdout(out));
    }
    assert!(!cargo_called);
    assert!(stderr(&first).contains("Unpacked"), "{}", stderr(&first));
    assert!(
        !stderr(&second).contains("Unpacked"),
        "the second run unpacked again: {}",
        stderr(&second)
    );
    assert!(extract.join("cleantest-archive.json").is_file());

    // A checkout of the workspace on this machine: the tests read its files, and run in it.
    let checkout = elsewhere.join("checkout");
    std::fs::create_dir_all(checkout.join("data")).unwrap();
    std::fs::write(checkout.join("data/words.txt"), "from the checkout\n").unwrap();
    let mut command = runner(&elsewhere, &state);
    let with_checkout = run(command
        .env("CT_EXPECT_WORDS", "from the checkout")
        .arg("--archive-file")
        .arg(&file)
        .args(["--extract-to", extract_arg, "--workspace-remap"])
        .arg(&checkout));
    assert_eq!(
        with_checkout.status.code(),
        Some(0),
        "{}{}",
        stdout(&with_checkout),
        stderr(&with_checkout)
    );
    assert_eq!(passed(&with_checkout), 6);
}

#[test]
fn a_failure_from_an_archive_reruns_from_the_archive() {
    let ws = workspace("archive-rerun");
    let elsewhere = temp_dir("archive-rerun-run");
    let state = elsewhere.join("state");
    let file = elsewhere.join("tests.tar.zst");
    archive(&ws, &state, &file);
    let mut command = runner(&elsewhere, &state);
    let out = run(command.env("CT_FAIL", "1").arg("--archive-file").arg(&file));
    assert_eq!(out.status.code(), Some(101), "{}", stderr(&out));
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("cargo cleantest --archive-file"))
        .unwrap_or_else(|| panic!("no rerun line from the archive: {text}"));
    assert!(line.contains("--test it"), "{line}");
    // The hint's words select that binary and that test among the archive's.
    let words: Vec<&str> = line.split_whitespace().skip(2).collect();
    let mut command = runner(&elsewhere, &state);
    let again = run(command.env("CT_FAIL", "1").args(&words));
    let totals = sum_totals(&again);
    assert_eq!((totals.passed, totals.failed), (0, 1), "{}", stdout(&again));
}

/// The archive's members, unpacked with the same crates the runner uses, to be rewritten.
fn members(archive: &Path) -> Vec<(tar::Header, Vec<u8>)> {
    let decoder =
        ruzstd::decoding::StreamingDecoder::new(std::fs::File::open(archive).unwrap()).unwrap();
    let mut tar = tar::Archive::new(decoder);
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (e.header().clone(), bytes)
        })
        .collect()
}

fn repack(archive: &Path, members: Vec<(tar::Header, Vec<u8>)>) {
    let mut tar = tar::Builder::new(Vec::new());
    for (mut header, bytes) in members {
        header.set_size(bytes.len() as u64);
        header.set_cksum();
        tar.append(&header, bytes.as_slice()).unwrap();
    }
    let data = tar.into_inner().unwrap();
    let file = std::fs::File::create(archive).unwrap();
    ruzstd::encoding::compress(
        data.as_slice(),
        file,
        ruzstd::encoding::CompressionLevel::Fastest,
    );
}

#[test]
fn a_bad_archive_fails_before_any_test_naming_what_is_wrong() {
    let ws = workspace("archive-bad");
    let dir = temp_dir("archive-bad-run");
    let state = dir.join("state");
    let good = dir.join("good.tar.zst");
    archive(&ws, &state, &good);
    let original = members(&good);

    let not_archive = dir.join("notes.txt");
    std::fs::write(&not_archive, "just some text\n").unwrap();

    let other_target = dir.join("other-target.tar.zst");
    let mut changed = members(&good);
    let manifest = String::from_utf8(changed[0].1.clone()).unwrap();
    let target = manifest
        .lines()
        .find(|l| l.contains("\"target\""))
        .unwrap()
        .to_string();
    changed[0].1 = manifest
        .replace(&target, "  \"target\": \"riscv64gc-unknown-none-elf\",")
        .into_bytes();
    repack(&other_target, changed);

    let missing = dir.join("missing.tar.zst");
    let lacking: Vec<_> = original
        .iter()
        .filter(|(h, _)| !h.path().unwrap().to_string_lossy().contains("/deps/it-"))
        .cloned()
        .collect();
    repack(&missing, lacking);

    let truncated = dir.join("truncated.tar.zst");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();

    for (file, says) in [
        (&not_archive, "not an archive of cargo cleantest"),
        (&other_target, "built for riscv64gc-unknown-none-elf"),
        (&missing, "is missing from it"),
        (&truncated, "read the archive"),
    ] {
        let (out, _) = run_from(&dir, &state, file, &[]);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{}: {text}", file.display());
        eprintln!("{}: {}", file.display(), text.trim());
        assert!(text.contains(says), "{}: {text}", file.display());
        assert!(
            !stdout(&out).contains("test result"),
            "{}: tests ran: {}",
            file.display(),
            stdout(&out)
        );
    }

    // Build flags: the archive's build decided them.
    let (out, _) = run_from(&dir, &state, &good, &["--features", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--features x"), "{}", stderr(&out));
    // A package the archive does not hold, as cargo refuses `-p` of no package.
    let (out, _) = run_from(&dir, &state, &good, &["-p", "not-there"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the archive has no package `not-there`"),
        "{}",
        stderr(&out)
    );

    // A directory of somebody else's is not unpacked into, and what is there stays.
    let theirs = dir.join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("keep.txt"), "mine").unwrap();
    let (out, _) = run_from(
        &dir,
        &state,
        &good,
        &["--extract-to", theirs.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no archive unpacked"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(theirs.join("keep.txt")).unwrap(),
        "mine"
    );
    assert!(!theirs.join("target").exists());
}

#[test]
fn archive_refuses_what_it_cannot_carry_before_building() {
    let ws = workspace("archive-refuse");
    let dir = temp_dir("archive-refuse-run");
    let state = dir.join("state");
    let file = dir.join("x.tar.zst");
    let base = || {
        let mut command = command_in(&ws, &state);
        command.args(["archive", "--archive-file"]).arg(&file);
        command
    };
    let out = run(base().arg("--doc"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("doctests"), "{}", stderr(&out));
    std::fs::write(
        ws.join(".config/cleantest.toml"),
        "[archive]\ninclude = [\"../elsewhere\"]\n",
    )
    .unwrap();
    let out = run(&mut base());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("leaves the workspace"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("Compiling"),
        "it built first: {}",
        stderr(&out)
    );
    assert!(!file.exists());
}
