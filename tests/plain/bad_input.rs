//! Bad input gets a short error that says what is wrong and what to do: exit 2 for usage and config
//! errors, 101 for what cargo test would also fail on; never a panic.

use crate::common;

use common::*;

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
