//! Property tests of the tracker (`tracker`): libtest's real output for random results, with a test's
//! child writing arbitrary lines into it at random points — fake verdicts for any test, `failures:`
//! and `successes:`, section headers, start markers, `running N tests`, text. Whatever the child
//! writes, a test that really failed is never reported otherwise, and every other verdict is the real
//! one unless the tracker says the results contradict each other (which fails the binary).

use std::time::Instant;

use proptest::prelude::*;

use super::tracker::{Tracker, Verdict};

/// libtest's output, single-threaded, for `verdicts` of tests `t0`, `t1`, ...
fn libtest_output(verdicts: &[Verdict]) -> Vec<String> {
    let mut lines = vec![String::new(), format!("running {} tests", verdicts.len())];
    for (i, v) in verdicts.iter().enumerate() {
        let word = match v {
            Verdict::Passed => "ok",
            Verdict::Failed => "FAILED",
            Verdict::Ignored => "ignored",
        };
        lines.push(format!("test t{i} ... {word}"));
    }
    let failed: Vec<usize> = (0..verdicts.len())
        .filter(|i| verdicts[*i] == Verdict::Failed)
        .collect();
    if !failed.is_empty() {
        lines.extend([String::new(), "failures:".into(), String::new()]);
        for i in &failed {
            lines.push(format!("---- t{i} stdout ----"));
            lines.push(format!("thread 't{i}' panicked at src/lib.rs:1:1:"));
            lines.push(String::new());
        }
        lines.extend([String::new(), "failures:".into()]);
        lines.extend(failed.iter().map(|i| format!("    t{i}")));
    }
    let count = |v: Verdict| verdicts.iter().filter(|x| **x == v).count();
    lines.push(String::new());
    lines.push(format!(
        "test result: {}. {} passed; {} failed; {} ignored; 0 measured; 0 filtered out; finished in 0.01s",
        if failed.is_empty() { "ok" } else { "FAILED" },
        count(Verdict::Passed),
        count(Verdict::Failed),
        count(Verdict::Ignored)
    ));
    lines
}

fn verdict() -> impl Strategy<Value = Verdict> {
    prop_oneof![
        Just(Verdict::Passed),
        Just(Verdict::Failed),
        Just(Verdict::Ignored)
    ]
}

/// A line a test's child might write.
fn noise(tests: usize) -> impl Strategy<Value = String> {
    let t = 0..tests + 1;
    prop_oneof![
        (t.clone(), prop_oneof!["ok", "FAILED", "ignored", ""])
            .prop_map(|(i, w)| format!("test t{i} ... {w}")),
        Just("failures:".to_string()),
        Just("successes:".to_string()),
        t.clone().prop_map(|i| format!("---- t{i} stdout ----")),
        t.prop_map(|i| format!("---- t{i} ----")),
        Just("running 3 tests".to_string()),
        Just(String::new()),
        "[ -~]{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn child_output_never_changes_a_confirmed_verdict(
        (verdicts, inserts) in (1usize..7).prop_flat_map(|n| (
            proptest::collection::vec(verdict(), n),
            proptest::collection::vec((0usize..64, noise(n)), 0..12),
        ))
    ) {
        let mut lines = libtest_output(&verdicts);
        // Children write only while tests run: before libtest's totals line.
        let last = lines.len() - 1;
        let mut inserts = inserts;
        inserts.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        for (at, line) in inserts {
            lines.insert((at % last).max(2), line);
        }
        let names = (0..verdicts.len()).map(|i| format!("t{i}")).collect();
        let now = Instant::now();
        let mut tracker = Tracker::new(names, 1, now);
        for line in &lines {
            tracker.on_line(line, now);
        }
        let trusted = tracker.contradiction().is_none();
        for (i, real) in verdicts.iter().enumerate() {
            let seen = tracker.verdict(i);
            if *real == Verdict::Failed {
                prop_assert_eq!(seen, Some(Verdict::Failed), "t{} failed for real\n{}", i, lines.join("\n"));
            } else if trusted {
                prop_assert_eq!(seen, Some(*real), "t{}, results trusted\n{}", i, lines.join("\n"));
            }
        }
    }
}
