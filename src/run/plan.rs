//! Planning: turning the listed tests into the queue of units the scheduler runs (the doctests first,
//! then one unit per binary in shared mode, one per test in isolated mode or for custom harnesses), and
//! the results known without running anything.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::cargo::TestBinary;
use super::list::Listing;
use super::report::{Outcome, TestResult};
use super::unit::{UnitKind, UnitSpec};
use crate::contract::DOCTESTS_ID;

/// The work of a run, before it starts.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub queue: VecDeque<UnitSpec>,
    /// Results known without running anything (ignored tests in isolated mode).
    pub preset: Vec<TestResult>,
    pub filtered_out: usize,
    /// Tests known before the run (doctests are counted as they finish).
    pub total: usize,
}

/// Builds the queue: the doctests first, then one unit per binary in shared mode, one per test in
/// isolated mode or for custom harnesses (whose running tests cannot be followed).
pub(crate) fn plan(
    binaries: Vec<Arc<TestBinary>>,
    listings: Vec<Listing>,
    isolate: bool,
    threads: usize,
    doctests: bool,
) -> Plan {
    let mut plan = Plan::default();
    for (binary, listing) in binaries.into_iter().zip(listings) {
        plan.filtered_out += listing.filtered_out;
        plan.total += listing.tests.len();
        if listing.tests.is_empty() {
            continue;
        }
        let spec = |kind, tests, threads| UnitSpec {
            kind,
            binary_id: binary.id.clone(),
            binary: Some(binary.clone()),
            tests,
            threads,
            attempt: 0,
        };
        if !(isolate || binary.custom_harness) {
            plan.queue
                .push_back(spec(UnitKind::Shared, listing.tests, threads));
            continue;
        }
        for test in listing.tests {
            if listing.ignored.contains(&test) {
                plan.preset.push(TestResult {
                    binary: binary.id.clone(),
                    name: test,
                    outcome: Outcome::Ignored,
                    duration: Duration::ZERO,
                    output: None,
                    note: None,
                    announced: false,
                });
            } else {
                plan.queue
                    .push_back(spec(UnitKind::Isolated, vec![test], 1));
            }
        }
    }
    if doctests {
        // First, not last: `cargo test --doc` spends most of its time starting cargo and compiling the
        // doctests, which overlaps well with the test binaries.
        plan.queue.push_front(UnitSpec {
            kind: UnitKind::Doctests,
            binary_id: DOCTESTS_ID.into(),
            binary: None,
            tests: Vec::new(),
            threads,
            attempt: 0,
        });
    }
    plan
}
