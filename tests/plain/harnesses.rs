//! Test binaries that are not libtest: classified without running them, run the way cargo test runs
//! them, and counted as cargo test counts them (fixture `harness`: a plain `main`, a silent one, a
//! harness that rejects `--test-threads` like criterion, and a plain `main` that fails).

use crate::common;

use common::*;

#[test]
fn harnesses_that_do_not_list_run_once_as_cargo_test_runs_them_in_both_modes() {
    let cargo = run(cargo_test("harness").arg("--no-fail-fast"));
    let expected = sum_totals(&cargo);
    assert_eq!(cargo.status.code(), Some(101), "{}", stderr(&cargo));
    for mode in [None, Some("--isolate")] {
        let mark = unique_mark("harness");
        let dir = temp_dir("harness");
        let junit = dir.join("junit.xml");
        let out = run(cleantest("harness", &mark)
            .env("CT_FIXTURE_MARK_DIR", &*dir)
            .args(mode)
            .arg("--no-fail-fast")
            .arg("--junit")
            .arg(&junit));
        let text = stdout(&out);
        // Never refused: every binary ran, and the failing plain `main` fails the run, as under cargo test.
        assert_eq!(
            out.status.code(),
            Some(101),
            "{mode:?}\n{text}\n{}",
            stderr(&out)
        );
        assert_eq!(last_totals(&out), expected, "{mode:?}\n{text}");
        // The plain `main` ran once, to run, not to list, with no libtest arguments.
        let runs = std::fs::read_to_string(dir.join("plain_main.runs")).unwrap_or_default();
        assert_eq!(
            runs.lines().collect::<Vec<_>>(),
            [""],
            "{mode:?}: its runs: {runs:?}"
        );
        // The failing one is a binary-level result, with its output, in the report and in JUnit.
        assert!(
            text.contains("ct-harness::plain_fail FAILED") && text.contains("plain failure"),
            "{mode:?}\n{text}"
        );
        let xml = std::fs::read_to_string(&junit).unwrap();
        assert!(
            xml.contains("testsuite name=\"ct-harness::plain_fail\"") && xml.contains("<failure"),
            "{mode:?}\n{xml}"
        );
        assert!(
            xml.contains("testsuite name=\"ct-harness::silent\""),
            "{xml}"
        );
        assert_no_survivors(&mark);
    }
}

/// JUnit counts what the total line counts: a passing binary run whole that prints no results (a
/// plain `main`, criterion) is no test case, as cargo test counts no test for it.
#[test]
fn junit_counts_what_the_total_line_counts() {
    for mode in [None, Some("--isolate")] {
        let mark = unique_mark("harness-junit");
        let dir = temp_dir("harness-junit");
        let junit = dir.join("junit.xml");
        let out = run(cleantest("harness", &mark)
            .env("CT_FIXTURE_MARK_DIR", &*dir)
            .args(mode)
            .args([
                "--test",
                "plain_main",
                "--test",
                "silent",
                "--test",
                "picky",
            ])
            .arg("--junit")
            .arg(&junit));
        assert_eq!(out.status.code(), Some(0), "{mode:?}\n{}", stdout(&out));
        let totals = last_totals(&out);
        let xml = std::fs::read_to_string(&junit).unwrap();
        let root = xml
            .lines()
            .find(|l| l.trim_start().starts_with("<testsuites"))
            .unwrap_or_else(|| panic!("{xml}"));
        let tests: usize = root
            .split("tests=\"")
            .nth(1)
            .and_then(|t| t.split('"').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{root}"));
        assert_eq!(
            tests,
            totals.passed + totals.failed + totals.ignored,
            "{mode:?}: JUnit's count against the total line\n{xml}\n{}",
            stdout(&out)
        );
        // Each binary still has its suite, saying how it ended.
        assert!(
            xml.contains("testsuite name=\"ct-harness::silent\""),
            "{xml}"
        );
        assert!(xml.contains("cleantest.exit-status"), "{xml}");
        // The line shown for it says that it is not counted.
        let shown = shown_counts(&stdout(&out));
        assert_eq!(shown.passed, totals.passed, "{mode:?}\n{}", stdout(&out));
        assert_no_survivors(&mark);
    }
}

#[test]
fn a_harness_that_rejects_test_threads_passes_as_under_cargo_test() {
    for mode in [None, Some("--isolate")] {
        let mark = unique_mark("picky");
        let out = run(cleantest("harness", &mark)
            .args(mode)
            .args(["--test", "picky"]));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{mode:?}\n{}\n{}",
            stdout(&out),
            stderr(&out)
        );
        assert_eq!(last_totals(&out).passed, 1, "{}", stdout(&out));
    }
}

#[test]
fn doc_mixed_with_other_targets_is_refused_as_cargo_test_refuses_it() {
    let mark = unique_mark("docmix");
    let out = run(cleantest("harness", &mark).args(["--doc", "--lib"]));
    assert_eq!(out.status.code(), Some(101), "{}", stderr(&out));
    assert!(stderr(&out).contains("--doc"), "{}", stderr(&out));
}

#[test]
fn a_zero_timeout_is_a_usage_error() {
    for flag in ["--timeout", "--list-timeout"] {
        let mark = unique_mark("zero");
        let out = run(cleantest("harness", &mark).args([flag, "0s"]));
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", stderr(&out));
    }
}

/// A target runner set in `.cargo/config.toml` (found from the current directory, as cargo finds it):
/// a wrapper that logs each call and runs the binary.
fn runner_dir(label: &str) -> common::TempDir {
    let dir = temp_dir(label);
    let wrapper = dir.join("wrapper.sh");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$CT_RUNNER_LOG\"\nexec \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join(".cargo")).unwrap();
    std::fs::write(
        dir.join(".cargo/config.toml"),
        format!(
            "[target.'cfg(unix)']\nrunner = [\"{}\"]\n",
            wrapper.display()
        ),
    )
    .unwrap();
    dir
}

#[test]
fn the_target_runner_wraps_every_binary_for_listing_and_running() {
    let cwd = runner_dir("runner");
    let cargo_log = cwd.join("cargo.log");
    let manifest = fixture("mixed").join("Cargo.toml");
    let cargo = run(cargo_test("mixed")
        .current_dir(&cwd)
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["-p", "ct-beta", "--no-fail-fast"])
        .env("CT_RUNNER_LOG", &cargo_log));
    let cargo_runs = std::fs::read_to_string(&cargo_log).unwrap_or_default();
    assert!(!cargo_runs.is_empty(), "cargo test used no runner");
    for mode in [None, Some("--isolate")] {
        let log = cwd.join(format!("ours-{}.log", mode.is_some()));
        let mark = unique_mark("runner");
        let out = run(cleantest("mixed", &mark)
            .current_dir(&cwd)
            .arg("--manifest-path")
            .arg(&manifest)
            .args(mode)
            .args(["-p", "ct-beta", "--no-fail-fast"])
            .env("CT_RUNNER_LOG", &log));
        assert_eq!(out.status.code(), cargo.status.code(), "{}", stderr(&out));
        assert_eq!(last_totals(&out), sum_totals(&cargo), "{}", stdout(&out));
        let ours = std::fs::read_to_string(&log).unwrap_or_default();
        // Every binary cargo test ran through the runner, we listed and ran through it too.
        for line in cargo_runs.lines().filter(|l| l.contains("/deps/")) {
            let exe = line.split_whitespace().next().unwrap();
            assert!(
                ours.lines()
                    .any(|l| l.starts_with(exe) && l.contains("--list")),
                "{exe} not listed through the runner under {mode:?}:\n{ours}"
            );
            assert!(
                ours.lines()
                    .any(|l| l.starts_with(exe) && !l.contains("--list")),
                "{exe} not run through the runner under {mode:?}:\n{ours}"
            );
        }
        assert_no_survivors(&mark);
    }
}
