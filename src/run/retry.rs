//! Retries (`--retries`, profile and override key `retries`): a failed test is held back, not counted,
//! and run again alone with `--exact`, in both modes, until it passes or has no retry left. One that
//! passes after failing is flaky: counted as passed (its failed runs kept as `attempts`), or as failed
//! with `flaky-result = "fail"`. Doctests and binaries run whole are not retried: a single test of
//! them cannot be run alone.

use std::collections::HashMap;

use super::report::{Attempt, Outcome, TestResult};
use super::unit::{UnitKind, UnitSpec};
use crate::config::Settings;

/// The failed results waiting for their retry, by (binary, test).
#[derive(Debug, Default)]
pub(crate) struct Retries {
    held: HashMap<(String, String), TestResult>,
}

/// What to do with a counted result.
pub(crate) enum Next {
    /// Report and count it.
    Count(TestResult),
    /// It is held back; run this retry.
    Retry(UnitSpec),
}

impl Retries {
    /// Takes the result of a test of the unit `spec`: a failure with a retry left is held back and its
    /// retry returned; a retry's result takes the earlier runs along.
    pub(crate) fn take(
        &mut self,
        mut result: TestResult,
        spec: &UnitSpec,
        settings: &Settings,
    ) -> Next {
        let failed = matches!(result.outcome, Outcome::Failed | Outcome::TimedOut);
        if !failed && self.held.is_empty() {
            // Nothing held, nothing to retry: the common case, without building a key.
            return Next::Count(result);
        }
        let key = (result.binary.clone(), result.name.clone());
        if let Some(earlier) = self.held.remove(&key) {
            result.attempts = earlier.attempts.clone();
            result.attempts.push(Attempt {
                outcome: earlier.outcome,
                duration: earlier.duration,
                output: earlier.output,
                note: earlier.note,
            });
        }
        let retriable = failed
            && result.counted
            && !result.name.is_empty()
            && spec.kind != UnitKind::Whole
            && spec.binary.is_some();
        let done = result.attempts.len() as u32;
        if retriable && done < settings.retries_for(&result.binary, &result.name) {
            let retry = spec.retry(result.name.clone(), done + 1);
            self.held.insert(key, result);
            return Next::Retry(retry);
        }
        if result.outcome == Outcome::Passed && !result.attempts.is_empty() && settings.flaky_fails
        {
            result.outcome = Outcome::Failed;
            result.flaky_failed = true;
            result.note = Some(format!(
                "flaky: failed {} time(s), then passed; counted as failed (flaky-result = \"fail\")",
                result.attempts.len()
            ));
        }
        Next::Count(result)
    }

    /// Whether this test of that binary is waiting for a retry (its recovery rerun is not needed: the
    /// retry shows its output).
    pub(crate) fn holds(&self, binary: &str, test: &str) -> bool {
        self.held
            .contains_key(&(binary.to_string(), test.to_string()))
    }

    /// The failures whose retry never ran (the run was interrupted or `--max-fail` was reached): they
    /// count as the failures they were.
    pub(crate) fn drain(&mut self) -> Vec<TestResult> {
        let mut held: Vec<TestResult> = self.held.drain().map(|(_, r)| r).collect();
        held.sort_by(|a, b| (&a.binary, &a.name).cmp(&(&b.binary, &b.name)));
        held
    }
}
