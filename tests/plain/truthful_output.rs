//! Output that never contradicts itself (issue 25): every line is true when printed, the total agrees
//! with what was shown, failure output that bypassed libtest's capture is shown with its failure,
//! printed names can be pasted back, a failed run ends with a command that reruns its failures, and
//! `--list` interleaves headers with their lists. Each case drives the real binary against a fixture.

use crate::common;

use std::process::Command;

use common::*;

/// `RUST_BACKTRACE=0`, so failure output is short and stable.
fn quiet(mut command: Command) -> Command {
    command.env("RUST_BACKTRACE", "0");
    command
}

/// The text of the section `---- HEADER ----` of a summary, up to the next section or list.
fn section<'a>(text: &'a str, header: &str) -> &'a str {
    let start = text
        .find(&format!("---- {header}"))
        .unwrap_or_else(|| panic!("no section {header} in:\n{text}"));
    let rest = &text[start..];
    let body = &rest[rest.find('\n').map_or(rest.len(), |i| i + 1)..];
    let end = ["\n---- ", "\nfailures:"]
        .iter()
        .filter_map(|m| body.find(m))
        .min()
        .unwrap_or(body.len());
    &body[..end]
}

#[test]
fn output_that_bypassed_the_capture_is_shown_with_its_failure_and_in_junit() {
    let dir = temp_dir("bypass");
    let junit = dir.join("junit.xml");
    let out = run(quiet(cleantest("bypass", "bypass-alone"))
        .arg("--junit")
        .arg(&junit)
        .args(["--", "alone", "--test-threads", "1"]));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(101), "{text}");
    assert!(
        section(&text, "ct-bypass::bypass::alone_a_child_explains FAILED")
            .contains("child-explains-the-failure"),
        "{text}"
    );
    assert!(
        section(
            &text,
            "ct-bypass::bypass::alone_a_direct_write_explains FAILED"
        )
        .contains("direct-write-explains-the-failure"),
        "{text}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("child-explains-the-failure")
            && xml.contains("direct-write-explains-the-failure"),
        "{xml}"
    );

    // Two tests running at once: the lines are the binary's, shown under it, never dropped.
    let junit = dir.join("together.xml");
    let out = run(quiet(cleantest("bypass", "bypass-together"))
        .arg("--junit")
        .arg(&junit)
        .args(["--", "together", "--test-threads", "2"]));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(101), "{text}");
    let binary = section(&text, "ct-bypass::bypass: printed outside");
    assert!(
        binary.contains("together-a-bypass") && binary.contains("together-b-bypass"),
        "{text}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("together-a-bypass") && xml.contains("<system-err>"),
        "{xml}"
    );
}

#[test]
fn captured_output_never_sits_where_a_verdict_belongs() {
    // Isolated runs pass --nocapture, so libtest's `test NAME ... ` line is continued by the test's
    // own output; the report shows the output on its own.
    let out = run(quiet(cleantest("mixed", "verdict-isolated")).args([
        "--isolate",
        "-p",
        "ct-alpha",
        "--lib",
    ]));
    let text = stdout(&out);
    let failure = section(&text, "ct-alpha::tests::fails_with_output FAILED");
    assert!(failure.contains("output of the failing test"), "{text}");
    for line in text
        .lines()
        .filter(|l| l.starts_with("test ") && !l.starts_with("test result:"))
    {
        let verdict = line.rsplit_once(" ... ").map_or("", |(_, v)| v);
        assert!(
            [
                "ok",
                "FAILED",
                "ignored",
                "TIMEOUT",
                "INTERRUPTED",
                "RETRY",
                "FLAKY"
            ]
            .iter()
            .any(|w| verdict.starts_with(w)),
            "output where a verdict belongs: {line}\n{text}"
        );
    }
}

#[test]
fn a_recovery_rerun_is_said_once_and_adds_no_result() {
    let out = run(quiet(cleantest("hang", "recovery")).args([
        "--test",
        "fail_beside_hang",
        "--timeout",
        "2s",
        "--grace-period",
        "1s",
    ]));
    let text = stdout(&out);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(101), "{text}{err}");
    let name = "ct-hang::fail_beside_hang::fails_with_a_reason";
    let verdicts = text
        .lines()
        .filter(|l| l.starts_with(&format!("test {name} ... ")))
        .count();
    assert_eq!(verdicts, 1, "the rerun shows as a second verdict:\n{text}");
    assert!(
        format!("{text}{err}").contains(&format!("rerunning {name} alone to recover its output")),
        "the rerun is not said:\n{text}{err}"
    );
    assert!(section(&text, &format!("{name} FAILED")).contains("the reason this test failed"));
    let (shown, total) = (shown_counts(&text), last_totals(&out));
    assert_eq!(
        (shown.passed, shown.failed),
        (total.passed, total.failed),
        "{text}"
    );
}

#[test]
fn a_printed_name_can_be_pasted_back_as_the_filter() {
    // As printed: BINARY-ID::NAME.
    let out = run(cleantest("mixed", "paste-name").arg("ct-alpha::tests::passes"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let totals = last_totals(&out);
    assert_eq!((totals.passed, totals.failed), (1, 0), "{}", stdout(&out));
    assert!(stdout(&out).contains("test ct-alpha::tests::passes ... ok"));
    // A filter that matches nothing says so, and what form would match.
    let out = run(cleantest("mixed", "paste-none").arg("no_such_test_anywhere"));
    let err = stderr(&out);
    assert!(
        err.contains("no test matches `no_such_test_anywhere`") && err.contains("BINARY-ID::NAME"),
        "{err}"
    );
}

#[test]
fn a_failed_run_ends_with_a_command_that_reruns_its_failures() {
    let out =
        run(quiet(cleantest("bypass", "rerun-hint")).args(["--", "alone", "--test-threads", "1"]));
    let text = stdout(&out);
    assert_eq!(last_totals(&out).failed, 2, "{text}");
    let hint = text
        .lines()
        .skip_while(|l| *l != "to rerun the failures:")
        .nth(1)
        .unwrap_or_else(|| panic!("no rerun hint:\n{text}"))
        .trim();
    let rest = hint.strip_prefix("cargo cleantest ").unwrap();
    // Pasted as it is, into the same directory: the same two failures, nothing else.
    let script = format!("exec \"$0\" {rest}");
    let program = env!("CARGO_BIN_EXE_cargo-cleantest");
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .arg(program)
        .current_dir(fixture("bypass"))
        .env("CARGO_TARGET_DIR", fixture_target_dir())
        .env("CLEANTEST_LOCK_DIR", target_dir().join("it-locks"))
        .env("CLEANTEST_STATE_DIR", target_dir().join("it-state"))
        .env("CLEANTEST_LOCK", "rerun-pasted")
        .env("CI", "true")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let totals = last_totals(&out);
    assert_eq!(
        (totals.passed, totals.failed),
        (0, 2),
        "`{hint}` ran:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn list_headers_come_just_before_their_lists() {
    let program = env!("CARGO_BIN_EXE_cargo-cleantest");
    let out = Command::new("sh")
        .args(["-c", "exec \"$0\" -- --list 2>&1", program])
        .current_dir(fixture("mixed"))
        .env("CARGO_TARGET_DIR", fixture_target_dir())
        .env("CLEANTEST_LOCK_DIR", target_dir().join("it-locks"))
        .env("CLEANTEST_STATE_DIR", target_dir().join("it-state"))
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let after = |header: &str| -> String {
        let mut lines = text.lines().skip_while(|l| !l.contains(header));
        assert!(lines.next().is_some(), "no `{header}` in:\n{text}");
        lines.next().unwrap_or("").to_string()
    };
    assert_eq!(
        after("Running ct-alpha::it ("),
        "it_dump_env: test",
        "{text}"
    );
    assert_eq!(
        after("Doc-tests ct_beta"),
        "ct-beta/src/lib.rs - yes (line 3): test",
        "{text}"
    );
}

#[test]
fn a_doctest_is_named_by_one_rule_in_any_layout() {
    // A package alone at the root of its workspace, and a member in a subdirectory of one.
    let single = run(&mut cleantest("single", "doc-single"));
    assert!(
        stdout(&single).contains("test doctests::ct-single/src/lib.rs - add_one (line 5) ... ok"),
        "{}",
        stdout(&single)
    );
    let workspace = run(cleantest("mixed", "doc-workspace").args(["--doc", "-p", "ct-beta"]));
    assert!(
        stdout(&workspace).contains("test doctests::ct-beta/src/lib.rs - yes (line 3) ... ok"),
        "{}",
        stdout(&workspace)
    );
}

#[test]
fn the_progress_bar_ends_where_the_total_line_does() {
    // A terminal, through `script` (util-linux): the bar is drawn. A recovery rerun beside a timeout
    // must not count as a second failure, and the bar's position never passes its length.
    let program = env!("CARGO_BIN_EXE_cargo-cleantest");
    let command = format!(
        "{program} --test fail_beside_hang --test hang --no-fail-fast --timeout 2s --grace-period 1s"
    );
    let out = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .current_dir(fixture("hang"))
        .env_remove("CI")
        .env("CARGO_TARGET_DIR", fixture_target_dir())
        .env("CLEANTEST_LOCK_DIR", target_dir().join("it-locks"))
        .env("CLEANTEST_STATE_DIR", target_dir().join("it-state"))
        .env("CLEANTEST_LOCK", "progress-bar")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("script (util-linux) runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let total = text
        .lines()
        .rev()
        .find_map(|l| parse_totals(l.trim_start_matches(|c: char| c != 't')))
        .unwrap_or_else(|| panic!("no total line:\n{text}"));
    let counts: Vec<(usize, usize)> = text
        .match_indices(" passed, ")
        .filter_map(|(at, _)| {
            let passed = text[..at]
                .rsplit(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()?;
            let rest = &text[at + " passed, ".len()..];
            let failed = rest.split(' ').next()?.parse().ok()?;
            rest[rest.find(' ')?..]
                .starts_with(" failed")
                .then_some((passed, failed))
        })
        .collect();
    let last = counts
        .last()
        .unwrap_or_else(|| panic!("no bar drawn:\n{text}"));
    assert_eq!(
        *last,
        (total.passed, total.failed),
        "the bar ended elsewhere:\n{text}"
    );
    for frame in text.split(['\r', '\n']) {
        for word in frame.split_whitespace() {
            if let Some((pos, len)) = word.split_once('/')
                && let (Ok(pos), Ok(len)) = (pos.parse::<usize>(), len.parse::<usize>())
            {
                assert!(pos <= len, "the bar passed its length: {word}");
            }
        }
    }
}
