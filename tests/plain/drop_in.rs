//! Drop-in behaviour: the same totals, selection, environment and exit codes as `cargo test`.

use crate::common;

use common::*;

/// Runs cargo test and cargo cleantest (both modes) with the same flags; the totals must agree.
fn assert_same_totals(fixture: &str, cargo_args: &[&str], test_args: &[&str]) -> Totals {
    let expected = sum_totals(&run(cargo_test(fixture)
        .arg("--no-fail-fast")
        .args(cargo_args)
        .arg("--")
        .args(test_args)));
    for mode in [None, Some("--isolate")] {
        let mark = unique_mark("same-totals");
        let out = run(cleantest(fixture, &mark)
            .arg("--no-fail-fast")
            .args(mode)
            .args(cargo_args)
            .arg("--")
            .args(test_args));
        assert_eq!(
            last_totals(&out),
            expected,
            "cargo test {cargo_args:?} -- {test_args:?} vs cleantest {mode:?}\n{}",
            stdout(&out)
        );
        let failed = expected.failed > 0;
        assert_eq!(
            out.status.code(),
            Some(if failed { 101 } else { 0 }),
            "{}",
            stderr(&out)
        );
        assert_no_survivors(&mark);
    }
    expected
}

#[test]
fn mixed_outcomes_total_like_cargo_test_in_both_modes() {
    // Lib, bin and integration tests, a libtest-mimic harness, and doctests (passing, failing, ignored).
    let totals = assert_same_totals("mixed", &[], &[]);
    assert!(
        totals.passed >= 10 && totals.failed >= 4 && totals.ignored >= 3,
        "{totals:?}"
    );
}

#[test]
fn all_passing_exits_zero() {
    let totals = assert_same_totals("mixed", &["-p", "ct-beta"], &[]);
    assert_eq!(totals.failed, 0);
}

#[test]
fn package_and_target_selection_match_cargo_test() {
    for cargo_args in [
        &["--lib"][..],
        &["--test", "it"],
        &["--doc"],
        &["--bins"],
        &["-p", "ct-alpha", "--features", "extra", "--lib"],
        &["-p", "ct-mimic"],
        // A libtest-mimic test whose name holds a newline (listed, run and counted, both modes).
        &["-p", "ct-mimic", "--test", "mimic_newline"],
        &["--workspace", "--exclude", "ct-alpha"],
        &["passes"],
    ] {
        assert_same_totals("mixed", cargo_args, &[]);
    }
}

#[test]
fn test_binary_arguments_match_cargo_test() {
    for test_args in [
        &["--exact", "tests::passes"][..],
        &["--skip", "fails"],
        &["--ignored"],
        &["--include-ignored"],
        &["tests::", "--skip", "panics"],
    ] {
        assert_same_totals("mixed", &[], test_args);
    }
}

#[test]
fn tests_see_the_environment_cargo_test_gives_them() {
    let dir = temp_dir("env");
    let (cargo_dump, ours_dump) = (dir.join("cargo.txt"), dir.join("ours.txt"));
    let (cargo_it, ours_it) = (dir.join("cargo-it.txt"), dir.join("ours-it.txt"));
    let out = run(cargo_test("mixed")
        .args(["-p", "ct-alpha", "--lib", "--test", "it", "dump_env"])
        .env("CT_FIXTURE_ENV_DUMP", &cargo_dump)
        .env("CT_FIXTURE_IT_ENV_DUMP", &cargo_it));
    assert!(out.status.success(), "{}", stderr(&out));
    for mode in [None, Some("--isolate")] {
        let mark = unique_mark("env");
        let out = run(cleantest("mixed", &mark)
            .args(mode)
            .args(["-p", "ct-alpha", "--lib", "--test", "it", "dump_env"])
            .env("CT_FIXTURE_ENV_DUMP", &ours_dump)
            .env("CT_FIXTURE_IT_ENV_DUMP", &ours_it));
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
        // CARGO_PKG_*, CARGO_MANIFEST_*, [env] (plain and relative), cwd, LD_LIBRARY_PATH's first entries.
        let ours = read(&ours_dump);
        for line in read(&cargo_dump).lines() {
            if let Some(paths) = line.strip_prefix("LD_LIBRARY_PATH=") {
                let first_two: Vec<&str> = paths.split(':').take(2).collect();
                assert!(
                    ours.contains(&format!("LD_LIBRARY_PATH={}", first_two.join(":"))),
                    "{ours}"
                );
            } else if !line.starts_with("CARGO=") && !line.contains("_ENV_DUMP=") {
                assert!(
                    ours.lines().any(|l| l == line),
                    "missing `{line}` under {mode:?}:\n{ours}"
                );
            }
        }
        let ours_it_text = read(&ours_it);
        for line in read(&cargo_it)
            .lines()
            .filter(|l| l.starts_with("CARGO_BIN_EXE_"))
        {
            assert!(
                ours_it_text.lines().any(|l| l == line),
                "missing `{line}`:\n{ours_it_text}"
            );
        }
        assert!(ours.contains("CARGO_PKG_VERSION_PRE=beta.2"), "{ours}");
        assert_no_survivors(&mark);
    }
}

#[test]
fn junit_report_lists_every_test_with_its_outcome() {
    let dir = temp_dir("junit");
    let path = dir.join("report.xml");
    let mark = unique_mark("junit");
    let out = run(cleantest("mixed", &mark)
        .args(["--no-fail-fast", "--junit"])
        .arg(&path));
    assert_eq!(out.status.code(), Some(101));
    let xml = std::fs::read_to_string(&path).unwrap();
    let totals = last_totals(&out);
    let cases = xml.matches("<testcase ").count();
    assert_eq!(
        cases,
        totals.passed + totals.failed + totals.ignored,
        "{xml}"
    );
    assert_eq!(xml.matches("<failure").count(), totals.failed, "{xml}");
    assert_eq!(xml.matches("<skipped").count(), totals.ignored, "{xml}");
    assert!(xml.contains("name=\"größe ✓ unicode\""), "{xml}");
    assert!(xml.contains("output of the failing test"), "{xml}");
}

/// libtest-mimic heads a failure's output `---- NAME ----` (libtest: `---- NAME stdout ----`): the
/// message must reach the summary and the JUnit report, in both modes.
#[test]
fn libtest_mimic_failure_output_is_kept_in_both_modes_and_junit() {
    for mode in [None, Some("--isolate")] {
        let dir = temp_dir("mimic-junit");
        let path = dir.join("report.xml");
        let mark = unique_mark("mimic-junit");
        let out = run(cleantest("mixed", &mark)
            .args(mode)
            .args(["-p", "ct-mimic", "--junit"])
            .arg(&path));
        assert_eq!(out.status.code(), Some(101), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("mimic failure"),
            "{mode:?}: {}",
            stdout(&out)
        );
        let xml = std::fs::read_to_string(&path).unwrap();
        assert!(xml.contains("mimic failure"), "{mode:?}: {xml}");
    }
}

#[test]
fn cargo_subcommand_form_and_no_run_work() {
    let mark = unique_mark("subcommand");
    // cargo runs us as `cargo-cleantest cleantest ...`.
    let out = run(cleantest("mixed", &mark).args(["cleantest", "-p", "ct-beta", "--no-run"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stdout(&out).contains("test result:"),
        "--no-run runs nothing"
    );
    let out = run(cleantest("mixed", &mark).args(["cleantest", "-p", "ct-beta"]));
    assert_eq!(last_totals(&out).passed, 4, "{}", stdout(&out));
}

#[test]
fn list_prints_each_binarys_tests() {
    let mark = unique_mark("list");
    let out = run(cleantest("mixed", &mark).args(["-p", "ct-beta", "--", "--list"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("tests::beta_one: test"), "{text}");
    assert!(
        text.contains("yes (line"),
        "doctests are listed too: {text}"
    );
}

#[test]
fn show_output_shows_passing_tests_output_in_both_modes() {
    for mode in [None, Some("--isolate")] {
        let mark = unique_mark("show-output");
        let out = run(cleantest("mixed", &mark)
            .args(mode)
            .args(["-p", "ct-beta", "--lib"]));
        assert!(
            !stdout(&out).contains("said by a passing test"),
            "hidden by default: {}",
            stdout(&out)
        );
        let out = run(cleantest("mixed", &mark).args(mode).args([
            "-p",
            "ct-beta",
            "--lib",
            "--",
            "--show-output",
        ]));
        assert!(out.status.success());
        assert!(
            stdout(&out).contains("said by a passing test"),
            "{mode:?}: {}",
            stdout(&out)
        );
    }
}

#[test]
fn fail_fast_counts_what_cargo_test_reaches_and_names_the_rest() {
    // Without --no-fail-fast cargo test stops after the first failing binary, in its own order, and
    // never runs the doctests.
    let cargo = run(&mut cargo_test("mixed"));
    let expected = sum_totals(&cargo);
    assert_eq!(cargo.status.code(), Some(101), "{}", stderr(&cargo));
    for mode in [None, Some("--isolate")] {
        let mark = unique_mark("fail-fast");
        let out = run(cleantest("mixed", &mark).args(mode));
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(101), "{mode:?}\n{}", stderr(&out));
        assert_eq!(last_totals(&out), expected, "{mode:?}\n{text}");
        // Every result shown as counted is counted: a result fail-fast leaves out is never a bare `ok`.
        let shown = shown_counts(&text);
        assert_eq!(
            (shown.passed, shown.failed, shown.ignored),
            (expected.passed, expected.failed, expected.ignored),
            "{mode:?}: the lines shown disagree with the total\n{text}"
        );
        let skipped = text
            .lines()
            .find(|l| l.starts_with("not run after the first failure"))
            .unwrap_or_else(|| panic!("{mode:?}: no fail-fast line\n{text}"));
        assert!(skipped.contains("doctests"), "{skipped}");
        assert!(text.contains("--no-fail-fast"), "{text}");
        assert_no_survivors(&mark);
    }
}

/// A library with `doctest = false` has no doctest run under cargo test, whose `--doc` would run them
/// all the same: nor under cargo cleantest. Its one doc example fails, so running it shows.
#[test]
fn a_library_with_doctests_off_runs_none_as_cargo_test() {
    let dir = scratch_crate(
        "doctests-off",
        "/// ```\n/// assert!(false, \"this doctest must not run\");\n/// ```\npub fn f() {}\n\n#[test]\nfn unit() {}\n",
        None,
    );
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("[workspace]", "[lib]\ndoctest = false\n\n[workspace]"),
    )
    .unwrap();
    let target = dir.join("target");
    let expected = sum_totals(&run(std::process::Command::new(
        std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
    )
    .arg("test")
    .current_dir(&*dir)
    .env("CARGO_TARGET_DIR", &target)));
    assert_eq!(
        (expected.passed, expected.failed),
        (1, 0),
        "cargo test itself"
    );
    for mode in [None, Some("--isolate")] {
        let out = run(
            std::process::Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"))
                .current_dir(&*dir)
                .env("CARGO_TARGET_DIR", &target)
                .env("CLEANTEST_STATE_DIR", dir.join("state"))
                .arg("--no-lock")
                .args(mode),
        );
        assert_eq!(last_totals(&out), expected, "{mode:?}\n{}", stdout(&out));
        assert_eq!(out.status.code(), Some(0), "{mode:?}\n{}", stdout(&out));
    }
}
