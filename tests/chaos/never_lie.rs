//! The "never lie" cells (issue 12, D): what the run reports is what the tests did.

use super::common::docker::*;
use super::common::*;
use libtest_mimic::Failed;

pub(crate) fn cells() -> Vec<Cell> {
    vec![trial(
        "a_child_cannot_fake_another_tests_result",
        child_fakes_a_result,
    )]
}

/// A test's child prints `test b_fails ... ok` to the inherited stdout before `b_fails` fails for
/// real (shared mode, where both share one output). Before, `b_fails` was reported passed and its
/// panic lost; it must be reported failed, with its panic, and the run must fail.
fn child_fakes_a_result() -> Result<(), Failed> {
    let mark = unique_mark("fake-result");
    let junit = temp_dir("fake-result").join("junit.xml");
    let out = run(cleantest("hang", &mark)
        .args(["--test", "fake_result", "--junit"])
        .arg(&junit));
    check(out.status.code() == Some(101), || {
        format!("{:?}\n{}{}", out.status, stdout(&out), stderr(&out))
    })?;
    let xml = std::fs::read_to_string(&junit)?;
    let b = junit_case(&xml, "b_fails");
    check(
        b.contains("<failure") && b.contains("the real failure of b_fails"),
        || format!("b_fails not reported failed with its panic:\n{xml}"),
    )?;
    check(
        !junit_case(&xml, "a_child_fakes_a_result").contains("<failure"),
        || format!("the faking test itself passed:\n{xml}"),
    )?;
    assert_no_survivors(&mark);
    Ok(())
}
