//! The tracker's unit tests, against libtest's real lines (kept beside `tracker.rs` so that the
//! state machine reads on one screen).

use super::*;
use std::time::Duration;

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

fn running(t: &Tracker) -> Vec<&str> {
    t.running().map(|(i, _)| t.names()[i].as_str()).collect()
}

#[test]
fn running_set_follows_results_in_list_order() {
    let t0 = Instant::now();
    let mut t = Tracker::new(names(&["a", "b", "c", "d"]), 2, t0);
    assert_eq!(running(&t), ["a", "b"]);
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(
        t.on_line("test b ... ok", t1),
        Line::Result(1, Verdict::Passed)
    );
    assert_eq!(running(&t), ["a", "c"]);
    let c_started = t.running().find(|(i, _)| *i == 2).unwrap().1;
    assert_eq!(c_started, t1);
    t.on_line("test a - should panic ... ok", t1);
    t.on_line("test c ... ignored, slow", t1);
    assert_eq!(running(&t), ["d"]);
    t.on_line("test d ... FAILED", t1);
    assert_eq!(t.verdict(3), Some(Verdict::Failed));
    assert_eq!(t.verdict(2), Some(Verdict::Ignored));
    assert!((0..4).all(|i| t.verdict(i).is_some()));
    assert_eq!(t.anomalies, 0);
}

#[test]
fn names_with_spaces_dots_and_unicode() {
    let now = Instant::now();
    let mut t = Tracker::new(names(&["a ... b", "größe ✓ check"]), 1, now);
    assert_eq!(
        t.on_line("test a ... b ... ok", now),
        Line::Result(0, Verdict::Passed)
    );
    assert_eq!(
        t.on_line("test größe ✓ check ... FAILED", now),
        Line::Result(1, Verdict::Failed)
    );
}

#[test]
fn single_threaded_start_marker_and_split_verdict() {
    let now = Instant::now();
    let mut t = Tracker::new(names(&["x"]), 1, now);
    assert_eq!(t.on_line("test x ... hello from x", now), Line::Output);
    assert_eq!(t.on_line("ok", now), Line::Result(0, Verdict::Passed));
}

#[test]
fn libtests_slow_test_warning_is_output_not_a_result() {
    let now = Instant::now();
    let mut t = Tracker::new(names(&["slow"]), 2, now);
    assert_eq!(
        t.on_line("test slow has been running for over 60 seconds", now),
        Line::Output
    );
    assert_eq!(running(&t), ["slow"]);
}

#[test]
fn a_childs_bare_failures_line_does_not_swallow_later_verdicts() {
    let now = Instant::now();
    let mut t = Tracker::new(names(&["a", "b", "c"]), 1, now);
    for line in [
        "running 3 tests",
        "test a ... ok",
        "failures:",
        "test b ... ok",
        "test c ... FAILED",
    ] {
        t.on_line(line, now);
    }
    assert_eq!(t.verdict(1), Some(Verdict::Passed));
    assert_eq!(t.verdict(2), Some(Verdict::Failed));
}

#[test]
fn libtest_mimic_failure_headers_carry_the_output() {
    let now = Instant::now();
    let mut t = Tracker::new(names(&["check::one"]), 1, now);
    for line in [
        "running 1 test",
        "test check::one ... FAILED",
        "",
        "failures:",
        "",
        "---- check::one ----",
        "the reason it failed",
        "",
        "failures:",
        "    check::one",
        "",
        "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
    ] {
        t.on_line(line, now);
    }
    assert!(
        t.output(0).unwrap().contains("the reason it failed"),
        "{:?}",
        t.output(0)
    );
}

#[test]
fn names_with_newlines_are_joined_back() {
    let now = Instant::now();
    let mut t = Tracker::new(names(&["name with\nnewline", "plain"]), 1, now);
    assert_eq!(t.on_line("test name with", now), Line::Output);
    assert_eq!(
        t.on_line("newline ... ok", now),
        Line::Result(0, Verdict::Passed)
    );
    assert_eq!(
        t.on_line("test plain ... ok", now),
        Line::Result(1, Verdict::Passed)
    );
    // Names learned from results (a harness run whole): the same, and totals are not held back.
    let mut open = Tracker::open();
    open.on_line("test name with", now);
    assert_eq!(
        open.on_line("newline ... ok", now),
        Line::Result(0, Verdict::Passed)
    );
    assert_eq!(open.names()[0], "name with\nnewline");
    open.on_line("test something printed by a test", now);
    open.on_line("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s", now);
    assert_eq!(open.summary().map(|s| s.passed), Some(1));
}

#[test]
fn failure_sections_give_each_test_its_output() {
    let now = Instant::now();
    let mut t = Tracker::new(names(&["m::f", "m::g"]), 2, now);
    for line in [
        "",
        "running 2 tests",
        "test m::g ... ok",
        "test m::f ... FAILED",
        "",
        "failures:",
        "",
        "---- m::f stdout ----",
        "printed by f",
        "thread 'm::f' panicked at src/lib.rs:1:1:",
        "",
        "failures:",
        "    m::f",
        "",
        "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 2 filtered out; finished in 0.00s",
    ] {
        t.on_line(line, now);
    }
    assert!(t.output(0).unwrap().contains("printed by f"));
    assert!(!t.output(0).unwrap().contains("m::f\n    m::f"));
    assert_eq!(t.output(1), None);
    assert_eq!(
        t.summary(),
        Some(Summary {
            passed: 1,
            failed: 1,
            ignored: 0,
            measured: 0,
            filtered_out: 2
        })
    );
}

#[test]
fn open_mode_learns_doctest_names_and_sums_summaries() {
    let now = Instant::now();
    let mut t = Tracker::open();
    t.on_line("test src/lib.rs - add (line 3) ... ok", now);
    t.on_line("test src/lib.rs - sub (line 9) ... FAILED", now);
    t.on_line("test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.2s", now);
    t.on_line("test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.1s", now);
    assert_eq!(
        t.names(),
        ["src/lib.rs - add (line 3)", "src/lib.rs - sub (line 9)"]
    );
    assert_eq!(t.summary().unwrap().passed, 3);
    assert_eq!(t.summary().unwrap().ignored, 1);
}

#[test]
fn a_faked_pass_never_hides_the_real_failure() {
    let now = Instant::now();
    let mut t = Tracker::new(names(&["a", "b"]), 2, now);
    t.on_line("test b ... ok", now); // printed by a's child
    assert_eq!(
        t.on_line("test a ... ok", now),
        Line::Result(0, Verdict::Passed)
    );
    assert_eq!(
        t.on_line("test b ... FAILED", now),
        Line::Result(1, Verdict::Failed)
    );
    assert_eq!(t.on_line("test b ... ok", now), Line::Output);
    assert_eq!(t.verdict(1), Some(Verdict::Failed));
    assert!(t.contradiction().unwrap().contains("first: b"));
}

#[test]
fn results_beyond_libtests_totals_are_a_contradiction() {
    let now = Instant::now();
    let mut t = Tracker::new(names(&["a", "b"]), 2, now);
    t.on_line("test a ... ok", now);
    t.on_line("test b ... ok", now);
    t.on_line("test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.1s", now);
    assert!(t.contradiction().unwrap().contains("1 passed, 1 failed"));
    let mut honest = Tracker::new(names(&["a", "b"]), 2, now);
    honest.on_line("test a ... ok", now);
    honest.on_line("test b ... bench:         10 ns/iter (+/- 1)", now);
    honest.on_line("test result: ok. 1 passed; 0 failed; 0 ignored; 1 measured; 0 filtered out; finished in 0.1s", now);
    assert_eq!(honest.contradiction(), None);
}

#[test]
fn a_result_before_its_slot_is_not_final_until_libtests_totals() {
    let now = Instant::now();
    let mut t = Tracker::new(names(&["a", "b", "c"]), 1, now);
    assert_eq!(t.on_line("test c ... ok", now), Line::Output);
    assert_eq!(t.anomalies, 1);
    // Not counted, and the window did not move: `a` is still the one running.
    assert_eq!(t.verdict(2), None);
    assert_eq!(running(&t), ["a"]);
    // A harness that really ran `c` first: libtest's totals make it count.
    t.on_line("test a ... ok", now);
    t.on_line("test b ... ok", now);
    t.on_line("test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.1s", now);
    assert_eq!(t.verdict(2), Some(Verdict::Passed));
    assert!(!t.is_final(2));
}

#[test]
fn an_early_verdict_then_a_hang_blames_the_right_test() {
    let now = Instant::now();
    let mut t = Tracker::new(names(&["a", "b", "c"]), 1, now);
    // `a`'s child prints `b`'s verdict; `a` passes; `b` then hangs (no more lines).
    t.on_line("test b ... ok", now);
    t.on_line("test a ... ok", now);
    assert_eq!(t.verdict(1), None);
    assert_eq!(running(&t), ["b"]);
    // Or `b` fails for real: libtest's verdict wins, as a conflict.
    t.on_line("test b ... FAILED", now);
    assert_eq!(t.verdict(1), Some(Verdict::Failed));
    assert!(t.contradiction().is_some());
}
