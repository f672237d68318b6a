//! Holding back result lines that fail-fast may still leave uncounted, so that a line never says `ok`
//! for a result the total will not count.
//!
//! cargo test runs binaries one after another and stops after the first that fails; we run several at
//! once, so a result of a binary later in cargo's order may come in before an earlier binary fails and
//! cuts it off (`fail_fast`). Such a line is held until every binary earlier in the order has finished:
//! then it is known to count, and is printed as it was; or it is past the cut, and is printed marked
//! `(not counted: after the first failure)`.

use super::Outcome;

/// One held line.
struct Held {
    order: usize,
    line: String,
    outcome: Outcome,
    in_bar: bool,
}

/// What became of a result line: print it now as counted, print it marked, or hold it.
pub(crate) enum Release {
    Counted,
    NotCounted,
    Held,
}

/// The held lines, and what is known of the order so far.
#[derive(Default)]
pub(crate) struct Gate {
    /// The lowest run order of a unit not finished yet: lines of binaries up to it may print.
    frontier: usize,
    /// The order of the earliest failing binary, once one failed.
    cut: Option<usize>,
    held: Vec<Held>,
}

/// The marker of a line whose result fail-fast leaves out of the total.
pub(crate) const NOT_COUNTED: &str = " (not counted: after the first failure)";

impl Gate {
    pub(crate) fn cut(&self) -> Option<usize> {
        self.cut
    }

    /// What to do with a result of the binary at `order`.
    pub(crate) fn decide(&self, order: usize) -> Release {
        if self.cut.is_some_and(|cut| order > cut) {
            Release::NotCounted
        } else if order > self.frontier {
            Release::Held
        } else {
            Release::Counted
        }
    }

    pub(crate) fn hold(&mut self, order: usize, line: String, outcome: Outcome, in_bar: bool) {
        self.held.push(Held {
            order,
            line,
            outcome,
            in_bar,
        });
    }

    /// Moves the frontier and the cut; returns the held lines now decided, in the order they came, each
    /// with whether it counts.
    pub(crate) fn advance(
        &mut self,
        frontier: usize,
        cut: Option<usize>,
    ) -> Vec<(String, Outcome, bool, bool)> {
        // Called on every pass of the scheduler's loop: only a move decides anything.
        if (frontier, cut) == (self.frontier, self.cut) || self.held.is_empty() {
            self.frontier = frontier;
            self.cut = cut;
            return Vec::new();
        }
        self.frontier = frontier;
        self.cut = cut;
        let mut out = Vec::new();
        let mut still = Vec::new();
        for held in std::mem::take(&mut self.held) {
            match self.decide(held.order) {
                Release::Held => still.push(held),
                decided => out.push((
                    held.line,
                    held.outcome,
                    held.in_bar,
                    matches!(decided, Release::Counted),
                )),
            }
        }
        self.held = still;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_past_the_frontier_waits_and_is_marked_if_cut() {
        let mut gate = Gate::default();
        assert!(matches!(gate.decide(0), Release::Counted));
        assert!(matches!(gate.decide(2), Release::Held));
        gate.hold(2, "test b::x ... ok".into(), Outcome::Passed, true);
        gate.hold(3, "test c::y ... ok".into(), Outcome::Passed, true);
        // Binary 1 fails: 2 and 3 are past the cut, though 0 still runs.
        let out = gate.advance(0, Some(1));
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|(_, _, _, counts)| !counts));
        assert!(matches!(gate.decide(1), Release::Held));
        let out = gate.advance(usize::MAX, Some(1));
        assert!(out.is_empty());
        assert!(matches!(gate.decide(1), Release::Counted));
    }

    #[test]
    fn lines_print_in_order_once_earlier_binaries_are_done() {
        let mut gate = Gate::default();
        gate.hold(1, "one".into(), Outcome::Passed, true);
        gate.hold(2, "two".into(), Outcome::Failed, true);
        let out = gate.advance(1, None);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "one");
        assert!(out[0].3);
        let out = gate.advance(usize::MAX, None);
        assert_eq!(out[0].0, "two");
    }
}
