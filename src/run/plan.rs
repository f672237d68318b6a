//! Planning: how each binary runs (`unit_kind`, from its harness and the mode), and turning the listed
//! tests into the queue of units the scheduler runs (the doctests first, then one unit per binary in
//! shared mode, one per test in isolated mode, one whole unit per binary that cannot be followed), with
//! the results known without running anything.

use std::collections::VecDeque;
use std::sync::Arc;

use super::cargo::TestBinary;
use super::harness::Harness;
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

/// How a binary's tests run: `Whole` for a binary that cannot be listed (a bench harness, a plain
/// `main`) or whose running tests cannot be followed in one process (libtest-mimic); `Isolated` with
/// `--isolate`; `Shared` otherwise.
pub(crate) fn unit_kind(harness: Harness, isolate: bool) -> UnitKind {
    match harness {
        Harness::Opaque => UnitKind::Whole,
        Harness::Compatible { ordered: false } if !isolate => UnitKind::Whole,
        _ if isolate => UnitKind::Isolated,
        _ => UnitKind::Shared,
    }
}

/// Builds the queue: the doctests first, then each binary's units as `unit_kind` says.
pub(crate) fn plan(
    binaries: Vec<Arc<TestBinary>>,
    listings: Vec<Option<Listing>>,
    isolate: bool,
    threads: usize,
    doctests: bool,
) -> Plan {
    let mut plan = Plan::default();
    for (binary, listing) in binaries.into_iter().zip(listings) {
        let spec = |kind, tests, threads| UnitSpec {
            kind,
            binary_id: binary.id.clone(),
            binary: Some(binary.clone()),
            tests,
            threads,
            attempt: 0,
            order: binary.order,
            recovery: false,
        };
        let listing = match listing {
            Some(listing) if unit_kind(binary.harness, isolate) != UnitKind::Whole => listing,
            _ => {
                plan.queue
                    .push_back(spec(UnitKind::Whole, Vec::new(), threads));
                continue;
            }
        };
        plan.filtered_out += listing.filtered_out;
        plan.total += listing.tests.len();
        if listing.tests.is_empty() {
            continue;
        }
        if !isolate {
            plan.queue
                .push_back(spec(UnitKind::Shared, listing.tests, threads));
            continue;
        }
        for test in listing.tests {
            if listing.ignored.contains(&test) {
                plan.preset
                    .push(TestResult::new(&binary.id, test, Outcome::Ignored));
            } else {
                plan.queue
                    .push_back(spec(UnitKind::Isolated, vec![test], 1));
            }
        }
    }
    let after_binaries = plan.queue.iter().map(|s| s.order + 1).max().unwrap_or(0);
    if doctests {
        // First, not last: `cargo test --doc` spends most of its time starting cargo and compiling the
        // doctests, which overlaps well with the test binaries.
        plan.queue.push_front(UnitSpec {
            kind: UnitKind::Whole,
            binary_id: DOCTESTS_ID.into(),
            binary: None,
            tests: Vec::new(),
            threads,
            attempt: 0,
            // cargo test runs the doctests after every binary.
            order: after_binaries,
            recovery: false,
        });
    }
    plan
}
