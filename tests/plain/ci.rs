//! CI at scale without an engine: `--partition` (every test of `fixtures/ci` in exactly one shard, in
//! both modes, for hash and slice), `--retries` with FLAKY reporting and JUnit's flaky elements,
//! `flaky-result = "fail"`, per-override retries, and `--max-fail`, on `fixtures/flaky`.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use common::*;

/// The test cases of a JUnit report as `classname::name`, with the elements inside each case.
fn cases(xml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for chunk in xml.split("<testcase ").skip(1) {
        let attr = |key: &str| {
            let start = chunk.find(&format!("{key}=\""))? + key.len() + 2;
            let len = chunk[start..].find('"')?;
            Some(chunk[start..start + len].to_string())
        };
        let (Some(name), Some(class)) = (attr("name"), attr("classname")) else {
            continue;
        };
        let body = match chunk.find("/>") {
            Some(end) if !chunk[..end].contains('>') => String::new(),
            _ => chunk[..chunk.find("</testcase>").unwrap_or(chunk.len())].to_string(),
        };
        out.push((format!("{class}::{name}"), body));
    }
    out
}

fn junit_run(
    fixture: &str,
    dir: &Path,
    label: &str,
    args: &[&str],
) -> (Output, Vec<(String, String)>) {
    let junit = dir.join(format!("{label}.xml"));
    let mark = unique_mark(label);
    let out = run(cleantest(fixture, &mark)
        .arg("--junit")
        .arg(&junit)
        .args(args)
        .env("CT_CI_FLAKY_DIR", dir));
    assert_no_survivors(&mark);
    let xml = std::fs::read_to_string(&junit).unwrap_or_default();
    (out, cases(&xml))
}

fn names(cases: &[(String, String)]) -> BTreeSet<String> {
    cases.iter().map(|(n, _)| n.clone()).collect()
}

#[test]
fn shards_are_disjoint_and_cover_every_test_in_both_modes() {
    let dir = temp_dir("partitions");
    let (out, all) = junit_run("ci", &dir, "all", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let all = names(&all);
    assert_eq!(all.len(), 61, "60 tests and a doctest: {all:?}");
    for mode in [None, Some("--isolate")] {
        for kind in ["hash", "slice"] {
            let mut seen: BTreeSet<String> = BTreeSet::new();
            for shard in 1..=3 {
                let spec = format!("{kind}:{shard}/3");
                let mut args = vec!["--partition", spec.as_str()];
                args.extend(mode);
                let (out, cases) = junit_run("ci", &dir, &format!("{kind}-{shard}"), &args);
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{spec} {mode:?}: {}",
                    stderr(&out)
                );
                let mine = names(&cases);
                assert!(
                    mine.is_disjoint(&seen),
                    "{spec} {mode:?} runs tests another shard ran: {:?}",
                    mine.intersection(&seen).collect::<Vec<_>>()
                );
                let listed = mine.iter().filter(|n| !n.starts_with("doctests::")).count();
                let line = format!("partition {spec}: {listed} of 60 tests");
                assert!(
                    stdout(&out).contains(&line),
                    "{spec}: no `{line}` in\n{}",
                    stdout(&out)
                );
                let totals = last_totals(&out);
                assert_eq!(totals.passed, mine.len(), "{spec} {mode:?}");
                assert_eq!(totals.filtered_out, 60 - listed, "{spec} {mode:?}");
                seen.extend(mine);
            }
            assert_eq!(seen, all, "{kind} shards in {mode:?} cover every test");
        }
    }
}

#[test]
fn a_malformed_partition_is_one_line_and_exit_2() {
    for bad in ["hash:4/3", "slice:0/2", "count:1", "modulo:1/2", "hash:a/b"] {
        let out = run(cleantest("ci", &unique_mark("bad-partition")).args(["--partition", bad]));
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let errors: Vec<String> = stderr(&out)
            .lines()
            .filter(|l| l.starts_with("error"))
            .map(String::from)
            .collect();
        assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
        assert!(errors[0].contains("--partition"), "{bad}: {errors:?}");
    }
}

#[test]
fn a_shard_with_no_test_is_not_an_error() {
    let dir = temp_dir("empty-shard");
    // The filter leaves one test (and no doctests): slice 3 of 3 gets none of it.
    let (out, cases) = junit_run("ci", &dir, "empty", &["--partition", "slice:3/3", "lib_07"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(cases.is_empty(), "{cases:?}");
    assert!(
        stdout(&out).contains("partition slice:3/3: 0 of 1 tests"),
        "{}",
        stdout(&out)
    );
    assert_eq!(last_totals(&out).passed, 0);
}

#[test]
fn a_test_that_passes_on_a_retry_is_flaky_in_both_modes() {
    for mode in [None, Some("--isolate")] {
        let dir = temp_dir("flaky");
        let mut args = vec!["--retries", "1"];
        args.extend(mode);
        args.extend(["--", "flaky_once", "steady"]);
        let (out, cases) = junit_run("flaky", &dir, "flaky", &args);
        assert_eq!(out.status.code(), Some(0), "{mode:?}: {}", stdout(&out));
        let totals = last_totals(&out);
        assert_eq!((totals.passed, totals.failed), (2, 0), "{mode:?}");
        assert!(
            stdout(&out).contains("ct-flaky::unsteady::flaky_once FLAKY"),
            "{}",
            stdout(&out)
        );
        let (_, flaky) = cases
            .iter()
            .find(|(n, _)| n.ends_with("::flaky_once"))
            .unwrap();
        assert!(flaky.contains("<flakyFailure"), "{mode:?}: {flaky}");
        assert!(!flaky.contains("<failure"), "{mode:?}: {flaky}");

        // Without a retry, the same first run is a failure.
        let dir = temp_dir("not-retried");
        let (out, _) = junit_run("flaky", &dir, "once", &["--", "flaky_once"]);
        assert_eq!(out.status.code(), Some(101), "{}", stdout(&out));
        assert_eq!(last_totals(&out).failed, 1);
    }
}

#[test]
fn flaky_result_fail_and_per_override_retries_from_the_profile() {
    let dir = temp_dir("strict");
    let (out, cases) = junit_run(
        "flaky",
        &dir,
        "strict",
        &["-P", "strict", "--", "flaky_once", "broken_a"],
    );
    assert_eq!(out.status.code(), Some(101), "{}", stdout(&out));
    let totals = last_totals(&out);
    assert_eq!((totals.passed, totals.failed), (0, 2), "{}", stdout(&out));
    let case = |name: &str| {
        cases
            .iter()
            .find(|(n, _)| n.ends_with(name))
            .unwrap()
            .1
            .clone()
    };
    let flaky = case("::flaky_once");
    assert!(
        flaky.contains("<failure") && flaky.contains("<flakyFailure"),
        "{flaky}"
    );
    // broken_a: three retries by its override, so three earlier runs besides the last failure.
    let broken = case("::broken_a");
    assert_eq!(broken.matches("<rerunFailure").count(), 3, "{broken}");
    assert!(broken.contains("<failure"), "{broken}");
}

#[test]
fn max_fail_starts_nothing_after_the_limit() {
    let dir = temp_dir("max-fail");
    let args = ["--isolate", "--max-fail", "1", "--", "--test-threads", "1"];
    let (out, cases) = junit_run("flaky", &dir, "max-fail", &args);
    assert_eq!(out.status.code(), Some(101), "{}", stdout(&out));
    let failures = cases.iter().filter(|(_, b)| b.contains("<failure")).count();
    let skipped = cases
        .iter()
        .filter(|(_, b)| b.contains("--max-fail 1"))
        .count();
    assert_eq!(failures, 1, "{cases:?}");
    assert!(
        skipped >= 1,
        "the tests after the failure are listed as not run: {cases:?}"
    );
    assert_eq!(last_totals(&out).failed, 1);

    // --no-fail-fast and --max-fail contradict each other.
    let out =
        run(cleantest("flaky", &unique_mark("both")).args(["--no-fail-fast", "--max-fail", "2"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn engines_the_proxy_cannot_reach_are_refused_before_any_test_runs() {
    let dir = temp_dir("no-certs");
    let cases: [(&str, Option<&Path>); 2] = [
        // An ssh endpoint whose port is not a number.
        ("ssh://ci@example.invalid:ssh", None),
        // TLS asked for, and no certificate to present.
        ("tcp://127.0.0.1:9", Some(&dir)),
    ];
    for (host, certs) in cases {
        let mut command = cleantest("ci", &unique_mark("refused-engine"));
        command.env("DOCKER_HOST", host);
        if let Some(certs) = certs {
            command
                .env("DOCKER_TLS_VERIFY", "1")
                .env("DOCKER_CERT_PATH", certs);
        }
        let out = run(&mut command);
        assert_eq!(out.status.code(), Some(2), "{host}: {}", stderr(&out));
        assert!(!stdout(&out).contains("test result"), "{host}: no test ran");
    }
}

#[test]
fn an_ssh_engine_that_refuses_is_said_plainly_and_never_waited_for() {
    // Nothing listens on port 9 of loopback: ssh is refused at once, and says so.
    let out = run(cleantest("ci", &unique_mark("ssh-refused"))
        .env("DOCKER_HOST", "ssh://ci@127.0.0.1:9")
        .args(["--test", "alpha", "--", "--exact", "alpha_00"]));
    let err = stderr(&out);
    assert!(
        err.contains("ssh: connect to host 127.0.0.1 port 9: Connection refused"),
        "{err}"
    );
}

#[test]
fn list_with_a_partition_lists_the_shards_tests() {
    let listed = |args: &[&str]| -> BTreeSet<String> {
        let out = run(cleantest("ci", &unique_mark("list-shard"))
            .args(args)
            .args(["--", "--list"]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stdout(&out)
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .map(str::to_string)
            .collect()
    };
    let all = listed(&[]);
    assert_eq!(all.len(), 61, "{all:?}");
    let mut union = BTreeSet::new();
    for shard in 1..=3 {
        let mine = listed(&["--partition", &format!("hash:{shard}/3")]);
        assert!(mine.is_disjoint(&union), "shard {shard}");
        union.extend(mine);
    }
    assert_eq!(union, all);
}

#[test]
fn min_free_memory_warns_and_refuses_with_require_free_memory() {
    // No host has a thousand terabytes available.
    let huge = ["--min-free-memory", "1000000g"];
    let out = run(cleantest("ci", &unique_mark("free-memory"))
        .args(huge)
        .arg("lib_07"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "a warning only: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("min-free-memory"), "{}", stderr(&out));
    assert_eq!(last_totals(&out).passed, 1);
    let out = run(cleantest("ci", &unique_mark("free-memory"))
        .args(huge)
        .args(["--require-free-memory", "lib_07"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!stdout(&out).contains("test result"), "no test ran");
}

/// Three slow tests and ten quick ones, in a crate of their own.
const SKEWED: &str = r#"
#[cfg(test)]
mod t {
    fn pause(ms: u64) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    #[test] fn slow_a() { pause(400) }
    #[test] fn slow_b() { pause(400) }
    #[test] fn slow_c() { pause(400) }
    #[test] fn quick_0() {} #[test] fn quick_1() {} #[test] fn quick_2() {} #[test] fn quick_3() {}
    #[test] fn quick_4() {} #[test] fn quick_5() {} #[test] fn quick_6() {} #[test] fn quick_7() {}
    #[test] fn quick_8() {} #[test] fn quick_9() {}
}
"#;

/// A run of the scratch crate `dir` with `args`, and the test cases of its JUnit report.
fn scratch_junit(dir: &Path, label: &str, args: &[&str]) -> (Output, Vec<(String, String)>) {
    let junit = dir.join(format!("{label}.xml"));
    let mark = unique_mark(label);
    let out = run(cleantest("ci", &mark)
        .current_dir(dir)
        .arg("--junit")
        .arg(&junit)
        .args(args));
    assert_no_survivors(&mark);
    let xml = std::fs::read_to_string(&junit).unwrap_or_default();
    (out, cases(&xml))
}

/// Runs the three weighted shards of the scratch crate `dir` by the reports `durations` (each shard's
/// JUnit goes to `weighted-K.xml`): every test runs in exactly one of them, each shard gets one slow
/// test, and each says its time by the durations.
fn assert_weighted_shards(dir: &Path, durations: &[&Path], all: &BTreeSet<String>, what: &str) {
    let mut seen = Vec::new();
    for shard in 1..=3 {
        let partition = format!("weighted:{shard}/3");
        let label = format!("weighted-{shard}");
        let mut args = vec!["--partition".to_string(), partition.clone()];
        for d in durations {
            args.extend(["--durations".to_string(), d.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, cases) = scratch_junit(dir, &label, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{what} shard {shard}: {err}");
        assert!(
            err.contains(&format!("partition {partition}: "))
                && err.contains("s of test time by the durations"),
            "{what} shard {shard}: {err}"
        );
        let slow = cases.iter().filter(|(n, _)| n.contains("::slow_")).count();
        assert_eq!(slow, 1, "{what} shard {shard} has one slow test: {cases:?}");
        seen.extend(names(&cases));
    }
    let mut once: Vec<String> = seen.clone();
    once.sort();
    once.dedup();
    assert_eq!(
        once.len(),
        seen.len(),
        "{what}: a test ran in two shards: {seen:?}"
    );
    assert_eq!(once.into_iter().collect::<BTreeSet<_>>(), *all, "{what}");
}

#[test]
fn weighted_shards_balance_by_an_earlier_runs_durations_ours_or_nextests() {
    let dir = scratch_crate("weighted", SKEWED, None);
    let (out, all) = scratch_junit(&dir, "all", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let all = names(&all);
    assert_eq!(all.len(), 13, "{all:?}");
    assert_weighted_shards(&dir, &[&dir.join("all.xml")], &all, "our report");

    // The three shards' reports of that run, read as one (copied: the next runs write theirs again).
    let shard_reports: Vec<std::path::PathBuf> = (1..=3)
        .map(|k| {
            let copy = dir.join(format!("shard-{k}.xml"));
            std::fs::copy(dir.join(format!("weighted-{k}.xml")), &copy).unwrap();
            copy
        })
        .collect();
    let shard_reports: Vec<&Path> = shard_reports.iter().map(|p| p.as_path()).collect();
    assert_weighted_shards(&dir, &shard_reports, &all, "the shards' reports");

    // cargo-nextest's report of the same crate serves as well.
    std::fs::write(
        dir.join(".config/nextest.toml"),
        "[profile.default.junit]\npath = \"junit.xml\"\n",
    )
    .unwrap();
    let nextest = run(std::process::Command::new(
        std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
    )
    .args(["nextest", "run", "--no-fail-fast"])
    .current_dir(&dir)
    .env("CARGO_TARGET_DIR", fixture_target_dir()));
    assert_eq!(nextest.status.code(), Some(0), "{}", stderr(&nextest));
    // nextest keeps its store under the workspace's own `target/`, whatever the target directory.
    let report = dir.join("target/nextest/default/junit.xml");
    let copied = dir.join("nextest.xml");
    std::fs::copy(&report, &copied).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; nextest said: {}",
            report.display(),
            stderr(&nextest)
        )
    });
    assert_weighted_shards(&dir, &[&copied], &all, "nextest's report");
}

#[test]
fn weighted_without_durations_or_with_a_bad_report_is_exit_2_before_building() {
    let dir = scratch_crate("weighted-bad", SKEWED, None);
    std::fs::write(dir.join("not-xml.xml"), "<testsuite><testcase name=").unwrap();
    std::fs::write(dir.join("empty.xml"), "<testsuites/>").unwrap();
    let missing = dir.join("missing.xml");
    let cases: [(&[&str], &str); 5] = [
        (&["--partition", "weighted:1/2"], "needs --durations"),
        (
            &["--partition", "hash:1/2", "--durations", "empty.xml"],
            "read only by --partition weighted",
        ),
        (
            &[
                "--partition",
                "weighted:1/2",
                "--durations",
                missing.to_str().unwrap(),
            ],
            "missing.xml",
        ),
        (
            &["--partition", "weighted:1/2", "--durations", "not-xml.xml"],
            "not a JUnit report",
        ),
        (
            &["--partition", "weighted:1/2", "--durations", "empty.xml"],
            "no test case with a time",
        ),
    ];
    for (args, says) in cases {
        let mark = unique_mark("weighted-bad");
        let out = run(cleantest("ci", &mark).current_dir(&dir).args(args));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("Compiling"), "{args:?} built first: {err}");
    }
}
