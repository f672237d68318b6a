//! A new user's first hour (issue 25): the command line refuses what it would misread, says where things
//! go, and names its version; config mistakes are reported before cargo builds anything, in words that
//! say what to write; completions and the man page come from the parser; the `cleantest` crate's errors
//! are readable where plain `cargo test` shows them. Each case drives the real binary, and asserts exit
//! codes, files and what a user reads.

use crate::common;

use std::path::Path;

use common::*;

/// A crate of one passing test in a fresh directory, with `config` as its `.config/cleantest.toml`.
fn crate_with_config(label: &str, config: &str) -> common::TempDir {
    scratch_crate(label, "#[test]\nfn passes() {}\n", Some(config))
}

/// A run in `dir` with a target directory of its own, which stays absent unless cargo builds.
fn run_in(dir: &Path, args: &[&str]) -> std::process::Output {
    run(cleantest("mixed", "first-hour")
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .args(args))
}

#[test]
fn an_option_before_a_command_is_refused_and_runs_nothing() {
    let dir = temp_dir("option-first");
    let touched = dir.join("ran");
    for options in [&["--timeout", "5s"][..], &["-P", "ci"], &["--isolate"]] {
        let out = run(cleantest("mixed", "option-first")
            .args(options)
            .args(["exec", "--", "touch"])
            .arg(&touched));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{options:?}: {err}");
        assert!(!touched.exists(), "{options:?}: the command ran");
        assert!(
            !stdout(&out).contains("test result:"),
            "{options:?}: tests ran"
        );
        assert!(
            err.contains("cargo cleantest exec [OPTIONS]"),
            "{options:?}: the error doesn't say where `exec` goes: {err}"
        );
    }
    // As the error says: the command first, then its options.
    let out = run(cleantest("mixed", "option-first")
        .args(["exec", "--timeout", "5s", "--no-lock", "--", "touch"])
        .arg(&touched));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(touched.exists());
}

#[test]
fn help_lists_every_command_and_an_unknown_one_is_an_error() {
    let out = run(cleantest("mixed", "help").arg("--help"));
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    for command in ["exec", "sweep", "services", "completions", "man", "help"] {
        assert!(
            help.contains(&format!("cargo cleantest {command}"))
                || help.contains(&format!("\n  {command} ")),
            "`{command}` is not in --help:\n{help}"
        );
    }
    let usage = help
        .split("\n\n")
        .find(|p| p.starts_with("Usage:"))
        .unwrap();
    assert!(usage.contains("cargo cleantest services"), "{usage}");

    for (word, near) in [("bogus", None), ("swep", Some("sweep"))] {
        let out = run(cleantest("mixed", "help").args(["help", word]));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "help {word}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        if let Some(near) = near {
            assert!(err.contains(&format!("`{near}`")), "{err}");
        }
    }
    let out = run(cleantest("mixed", "help").args(["help", "exec"]));
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("cargo cleantest exec"));
}

#[test]
fn exec_without_the_separator_says_where_the_command_goes() {
    let out = run(cleantest("mixed", "exec-sep").args(["exec", "true"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("-- true"), "no hint at `--`: {err}");
    // A command that is not there: cargo's `error:` prefix, and a shell's 127.
    let out = run(cleantest("mixed", "exec-sep").args([
        "exec",
        "--no-lock",
        "--",
        "no-such-command-here",
    ]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(127), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: ") && l.contains("no-such-command-here")),
        "{err}"
    );
}

#[test]
fn the_version_names_the_commit_and_its_date() {
    let out = run(cleantest("mixed", "version").arg("--version"));
    let line = stdout(&out);
    let line = line.trim();
    assert_eq!(out.status.code(), Some(0));
    let version = line
        .strip_prefix(&format!("cargo-cleantest {}", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{line}"));
    if root().join(".git").exists() {
        // ` (5385722 2026-12-03)`, as cargo's `cargo 1.95.0 (f2d3ce0bd 2026-03-21)`.
        let inner = version
            .strip_prefix(" (")
            .and_then(|v| v.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no commit in {line}"));
        let (commit, date) = inner.split_once(' ').unwrap();
        assert!(
            commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
            "{line}"
        );
        assert!(date.len() == 10 && date.as_bytes()[4] == b'-', "{line}");
    }
}

#[test]
fn completions_and_the_man_page_come_from_the_parser() {
    let help = stdout(&run(cleantest("mixed", "complete").arg("--help")));
    let bash = run(cleantest("mixed", "complete").args(["completions", "bash"]));
    assert_eq!(bash.status.code(), Some(0));
    let script = stdout(&bash);
    // Every long flag of --help is completed, and the script parses.
    let flags: Vec<&str> = help
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| l.split([' ', ',']))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .collect();
    assert!(flags.len() > 40, "{flags:?}");
    for flag in flags {
        let flag = flag.trim_end_matches('.');
        assert!(script.contains(flag), "{flag} is not completed");
    }
    let dir = temp_dir("complete");
    std::fs::write(dir.join("cargo-cleantest.bash"), &script).unwrap();
    let syntax = run(std::process::Command::new("bash")
        .arg("-n")
        .arg(dir.join("cargo-cleantest.bash")));
    assert!(syntax.status.success(), "{}", stderr(&syntax));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = run(cleantest("mixed", "complete").args(["completions", shell]));
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(stdout(&out).contains("keep-on-failure"), "{shell}");
    }
    let out = run(cleantest("mixed", "complete").args(["completions", "tcsh"]));
    assert_eq!(out.status.code(), Some(2));

    let man = run(cleantest("mixed", "complete").arg("man"));
    assert_eq!(man.status.code(), Some(0));
    let page = stdout(&man);
    assert!(
        page.starts_with(".ie") || page.contains("\n.TH "),
        "not roff: {page}"
    );
    for needle in [
        "timeout",
        "keep\\-on\\-failure",
        "exec",
        "sweep",
        "services",
    ] {
        assert!(page.contains(needle), "`{needle}` is not in the man page");
    }
}

#[test]
fn config_mistakes_are_reported_before_anything_is_built() {
    let cases: &[(&str, &str, &[&str], &[&str])] = &[
        (
            "duration",
            "[profile.default]\ntimeout = \"forever\"\n",
            &[],
            &["line 2", "`forever` is not a duration", "90s"],
        ),
        (
            "no-image",
            "# services\n\n[services.db]\nports = [5432]\n",
            &[],
            &["line 3", "[services.db]", "`image`"],
        ),
        (
            "no-profile",
            "[profile.ci]\nretries = 1\n[profile.nightly]\nisolate = true\n",
            &["-P", "nosuchprofile"],
            &["nosuchprofile", "default, ci, nightly"],
        ),
    ];
    for (label, config, args, needles) in cases {
        let dir = crate_with_config(label, config);
        let out = run_in(&dir, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{label}: {err}");
        for needle in *needles {
            assert!(err.contains(needle), "{label}: no `{needle}` in: {err}");
        }
        assert!(!err.contains("expected number at"), "{label}: {err}");
        assert!(!err.contains("or remove it"), "{label}: {err}");
        assert!(
            !dir.join("target").join("debug").exists(),
            "{label}: cargo built before the config was checked"
        );
    }
}

#[test]
fn the_crates_errors_say_what_to_do_under_plain_cargo_test() {
    // Without the session host (tests/engine/any_runner.rs covers it and the error when no binary is found).
    let out = cargo_test("plain")
        .env_remove("CLEANTEST_SESSION")
        .env_remove("CLEANTEST_CONTROL")
        .env("CLEANTEST_HOST", "off")
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out.status.success(), "{text}");
    // `.expect("db")`, `.unwrap()` and a test returning `Result`: three failures, each with the hint.
    let hints = text
        .matches("run the tests with `cargo cleantest` instead of `cargo test`")
        .count();
    assert_eq!(hints, 3, "{text}");
    assert!(!text.contains("NotInSession"), "{text}");
    assert!(
        !text.contains("cargo install cargo-cleantest"),
        "a hint that doesn't resolve: {text}"
    );
}
