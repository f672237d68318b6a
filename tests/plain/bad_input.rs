//! Bad input gets a short error that says what is wrong and what to do: exit 2 for usage and config
//! errors, 101 for what cargo test would also fail on; never a panic.

use crate::common;

use common::*;
use std::process::Command;

fn assert_clean_error(out: &std::process::Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !stdout(out).contains("test result:"),
        "nothing ran: {}",
        stdout(out)
    );
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = run(cleantest("mixed", "bad-flag").arg("--frobnicate"));
    assert_clean_error(&out, 2, "--frobnicate");
}

#[test]
fn unknown_test_binary_output_flag_is_refused() {
    let out = run(cleantest("mixed", "bad-format").args(["--", "--format", "json"]));
    assert_clean_error(&out, 2, "--format");
}

#[test]
fn missing_manifest_names_the_path() {
    let out =
        run(cleantest("mixed", "no-manifest").args(["--manifest-path", "/nonexistent/Cargo.toml"]));
    assert_clean_error(&out, 101, "/nonexistent/Cargo.toml");
}

#[test]
fn malformed_config_names_file_line_and_key() {
    let dir = temp_dir("bad-config");
    std::fs::create_dir_all(dir.join(".config")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"ct-badcfg\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[workspace]\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/lib.rs"), "").unwrap();
    std::fs::write(
        dir.join(".config/cleantest.toml"),
        "[profile.default]\ntimeout = \"5s\"\ntimeuot = \"1s\"\n",
    )
    .unwrap();
    let out = run(cleantest("mixed", "bad-config").current_dir(&dir));
    assert_clean_error(&out, 2, "cleantest.toml");
    let err = stderr(&out);
    assert!(err.contains("line 3") && err.contains("timeuot"), "{err}");
}

#[test]
fn binary_that_is_not_libtest_is_run_as_cargo_test_runs_it_never_refused() {
    // Its output is not libtest's: it is run once, whole, and passes as under cargo test.
    let out = run(&mut cleantest("badlist", "bad-list"));
    let cargo = run(&mut cargo_test("badlist"));
    assert_eq!(out.status.code(), cargo.status.code(), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("ct-badlist::odd ... ok"),
        "{}",
        stdout(&out)
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[test]
fn build_failure_exits_101_and_runs_nothing() {
    let out = run(cleantest("mixed", "bad-build").args(["--features", "no-such-feature"]));
    assert_eq!(out.status.code(), Some(101), "{}", stderr(&out));
    assert!(!stdout(&out).contains("test result:"));
}

#[test]
fn a_profile_without_a_config_file_says_there_is_none() {
    let out = run(cleantest("harness", "no-config-file").args(["-P", "ci"]));
    assert_clean_error(&out, 2, "there is no");
}

#[test]
fn a_bad_docker_host_is_one_warning() {
    let out = run(cleantest("mixed", "bad-docker-host")
        .args(["-p", "ct-beta"])
        .env("DOCKER_HOST", "bogus://nowhere"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let warnings = err
        .lines()
        .filter(|l| l.starts_with("warning:") && l.contains("bogus://nowhere"))
        .count();
    assert_eq!(warnings, 1, "{err}");
}

/// A mistyped test-binary option is refused before anything is built or started, naming the option and
/// the nearest one (cargo test would hand it to libtest, which runs no test; counting that as a failed
/// test was wrong).
#[test]
fn a_mistyped_test_binary_option_is_refused_with_the_nearest_one() {
    let out = run(cleantest("mixed", "exactt").args(["--", "--exactt"]));
    assert_clean_error(&out, 2, "did you mean `--exact`?");
    assert!(
        !stdout(&out).contains("FAILED"),
        "no test counted: {}",
        stdout(&out)
    );
}

/// A duration written as a bare number says what a duration looks like.
#[test]
fn a_duration_without_a_unit_says_how_to_write_one() {
    let dir = scratch_crate(
        "bare-duration",
        "#[test]\nfn passes() {}\n",
        Some("[profile.default]\ntimeout = 10\n"),
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"));
    let out = run(command
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env("CLEANTEST_STATE_DIR", dir.join("state"))
        .arg("--no-lock"));
    assert_clean_error(&out, 2, "write a duration such as \"10s\"");
    assert!(
        !stderr(&out).contains("expected a string"),
        "{}",
        stderr(&out)
    );
}

/// Services with no engine say where the client looked and what it found, not "none is configured"
/// (which was printed with `DOCKER_HOST` set).
#[test]
fn services_without_an_engine_say_where_it_was_looked_for() {
    let dir = scratch_crate(
        "no-engine-services",
        "#[test]\nfn passes() {}\n",
        Some("[services.db]\nimage = \"cleantest-postgres:15\"\n"),
    );
    let socket = dir.join("no-such-docker.sock");
    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"));
    let out = run(command
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env("CLEANTEST_STATE_DIR", dir.join("state"))
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .arg("--no-lock"));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains(&format!("no socket at {}", socket.display())),
        "{err}"
    );
    assert!(!err.contains("none is configured"), "{err}");
}

/// The rerun hint names the manifest as the file is, not as the path reached it.
#[test]
fn the_rerun_hint_names_the_manifest_without_dot_dot() {
    let roundabout = fixture("bypass").join("../bypass/Cargo.toml");
    let out = run(cleantest("bypass", "rerun-manifest")
        .arg("--manifest-path")
        .arg(&roundabout)
        .args(["--", "alone", "--test-threads", "1"]));
    let text = stdout(&out);
    let hint = text
        .lines()
        .skip_while(|l| *l != "to rerun the failures:")
        .nth(1)
        .unwrap_or_else(|| panic!("no rerun hint:\n{text}"));
    let canonical = std::fs::canonicalize(fixture("bypass").join("Cargo.toml")).unwrap();
    assert!(
        hint.contains(&canonical.display().to_string()) && !hint.contains("/../"),
        "{hint}"
    );
}
