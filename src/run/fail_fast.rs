//! Fail-fast as cargo test does it. cargo test runs its binaries one after another in a fixed order
//! (package, then lib, bins, tests, benches, examples, then name; the doctests last) and stops after
//! the first binary that fails. We run several at once and start the doctests first, so "the first
//! failing binary" is the failing one earliest in that order, which may be found late: a binary
//! earlier in the order still runs to its end (cargo test would have run it), and may itself fail and
//! move the cut earlier. Whatever comes after the cut is not started, is stopped if it is running,
//! and its results are not counted, so the counts are the ones cargo test reports.
//!
//! `--max-fail N` replaces it: `MaxFail` says when N tests or processes have failed, after which no
//! unit starts.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::report::RunSummary;
use super::unit::UnitSpec;

/// Where fail-fast cuts the run, and what it has left out.
#[derive(Debug, Default)]
pub(crate) struct FailFast {
    /// The order of the earliest failing binary.
    cut: Option<usize>,
    /// Binary id → its order, for the results of the run.
    orders: HashMap<String, usize>,
    /// Binaries left out, by order.
    left_out: BTreeMap<usize, String>,
}

/// How many units of each run order are not finished yet (queued or running): the lowest is where
/// fail-fast may still cut, so result lines past it wait (`report::gate`).
#[derive(Debug, Default)]
pub(crate) struct Unfinished(BTreeMap<usize, usize>);

impl Unfinished {
    pub(crate) fn of(queue: &VecDeque<UnitSpec>) -> Unfinished {
        let mut out = Unfinished::default();
        for spec in queue {
            out.add(spec.order);
        }
        out
    }

    pub(crate) fn add(&mut self, order: usize) {
        *self.0.entry(order).or_default() += 1;
    }

    pub(crate) fn done(&mut self, order: usize) {
        if let Some(n) = self.0.get_mut(&order) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&order);
            }
        }
    }

    /// The lowest order with a unit not finished, or `usize::MAX` when all are.
    pub(crate) fn frontier(&self) -> usize {
        self.0.keys().next().copied().unwrap_or(usize::MAX)
    }
}

impl FailFast {
    pub(crate) fn new(queue: &VecDeque<UnitSpec>) -> FailFast {
        FailFast {
            orders: queue
                .iter()
                .map(|s| (s.binary_id.clone(), s.order))
                .collect(),
            ..Default::default()
        }
    }

    /// Whether this unit is past the cut: it is not started (or its results are not counted), and
    /// its binary is recorded as left out.
    pub(crate) fn leaves_out(&mut self, spec: &UnitSpec) -> bool {
        if !self.excludes(spec.order) {
            return false;
        }
        self.left_out.insert(spec.order, spec.binary_id.clone());
        true
    }

    /// The order of the earliest failing binary, once one failed.
    pub(crate) fn cut(&self) -> Option<usize> {
        self.cut
    }

    /// Whether a binary at this order is past the cut.
    pub(crate) fn excludes(&self, order: usize) -> bool {
        self.cut.is_some_and(|cut| order > cut)
    }

    /// A binary at `order` failed; returns whether the cut moved (units past it are to be stopped).
    pub(crate) fn trip(&mut self, order: usize) -> bool {
        if self.cut.is_some_and(|cut| cut <= order) {
            return false;
        }
        self.cut = Some(order);
        true
    }

    /// Drops the results counted before the cut moved in front of them, and names every binary left
    /// out in the summary.
    pub(crate) fn apply(mut self, summary: &mut RunSummary) {
        let Some(cut) = self.cut else { return };
        let past = |binary: &str| self.orders.get(binary).is_some_and(|&o| o > cut);
        let mut dropped: Vec<(usize, String)> = Vec::new();
        let mut note_dropped = |binary: &str| {
            dropped.push((self.orders[binary], binary.to_string()));
        };
        summary.results.retain(|r| {
            let out = past(&r.binary);
            if out {
                note_dropped(&r.binary);
            }
            !out
        });
        summary.problems.retain(|p| {
            let out = past(&p.binary);
            if out {
                note_dropped(&p.binary);
            }
            !out
        });
        summary.not_run.retain(|n| !past(&n.binary));
        summary.stray.retain(|(binary, _)| !past(binary));
        self.left_out.extend(dropped);
        summary.fail_fast_skipped = self.left_out.into_values().collect();
    }
}

/// `--max-fail N`, with the failures counted as results come in: the loop asks on every event, and
/// rescanning every result each time grows with the run.
#[derive(Debug, Default)]
pub(crate) struct MaxFail {
    pub limit: Option<u32>,
    /// Results already looked at, and the failures among them.
    seen: usize,
    failed: usize,
}

impl MaxFail {
    pub(crate) fn new(limit: Option<u32>) -> MaxFail {
        MaxFail {
            limit,
            ..MaxFail::default()
        }
    }

    /// Failed tests and failed processes have reached the limit. Results are only ever appended while
    /// the run goes, so only the new ones are looked at.
    pub(super) fn reached(&mut self, summary: &RunSummary) -> bool {
        let Some(limit) = self.limit else {
            return false;
        };
        let new = summary.results.get(self.seen..).unwrap_or_default();
        self.failed += new.iter().filter(|r| r.outcome.is_failure()).count();
        self.seen = summary.results.len();
        self.failed + summary.problems.len() >= limit as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::report::{Outcome, TestResult};
    use crate::run::unit::UnitKind;

    fn spec(binary: &str, order: usize) -> UnitSpec {
        UnitSpec {
            kind: UnitKind::Shared,
            binary_id: binary.into(),
            binary: None,
            tests: vec!["t".into()],
            threads: 1,
            attempt: 0,
            order,
            recovery: false,
            retry: 0,
            exact: false,
        }
    }

    #[test]
    fn a_later_failure_is_cut_by_an_earlier_one() {
        let queue: VecDeque<UnitSpec> = [spec("a", 0), spec("b", 1), spec("c", 2), spec("doc", 3)]
            .into_iter()
            .collect();
        let mut ff = FailFast::new(&queue);
        assert!(ff.trip(2));
        assert!(!ff.leaves_out(&queue[1]));
        assert!(ff.leaves_out(&queue[3]));
        assert!(ff.trip(1), "an earlier failing binary moves the cut");
        assert!(!ff.trip(2));
        let mut summary = RunSummary::default();
        for (b, o) in [("a", Outcome::Passed), ("b", Outcome::Failed)] {
            summary.results.push(TestResult::new(b, "t".into(), o));
        }
        summary
            .results
            .push(TestResult::new("c", "t".into(), Outcome::Failed));
        summary
            .results
            .push(TestResult::new("doc", "x".into(), Outcome::Passed));
        ff.apply(&mut summary);
        let kept: Vec<&str> = summary.results.iter().map(|r| r.binary.as_str()).collect();
        assert_eq!(kept, ["a", "b"]);
        assert_eq!(summary.fail_fast_skipped, ["c", "doc"]);
    }
}
