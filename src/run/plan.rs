//! Planning: how each binary runs (`unit_kind`, from its harness and the mode), and turning the listed
//! tests into the queue of units the scheduler runs (the doctests first, then one unit per binary in
//! shared mode, one per test in isolated mode, one whole unit per binary that cannot be followed), with
//! the results known without running anything.

use std::collections::VecDeque;
use std::sync::Arc;

use super::cargo::TestBinary;
use super::harness::Harness;
use super::list::Listing;
use super::partition::{self, Items, Sharding};
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
    /// `partition hash:2/3: 20 of 61 tests`, with `--partition`.
    pub partition_line: Option<String>,
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

/// Builds the queue: the doctests first, then each binary's units as `unit_kind` says; with a
/// partition, only this shard's tests (the others count as filtered out).
pub(crate) fn plan(
    binaries: Vec<Arc<TestBinary>>,
    listings: Vec<Option<Listing>>,
    isolate: bool,
    threads: usize,
    doctests: bool,
    sharding: Option<Sharding<'_>>,
) -> Plan {
    let partition = sharding.map(|s| s.partition);
    let mut plan = Plan::default();
    let runs_whole: Vec<bool> = binaries
        .iter()
        .zip(&listings)
        .map(|(b, l)| l.is_none() || unit_kind(b.harness, isolate) == UnitKind::Whole)
        .collect();
    let shard = sharding.map(|sharding| in_shard(sharding, &binaries, &listings, &runs_whole));
    let (mut listed, mut taken, mut whole_taken) = (0, 0, 0);
    for (index, (binary, listing)) in binaries.into_iter().zip(listings).enumerate() {
        let in_shard = |i: usize| shard.as_ref().is_none_or(|s| s[index][i]);
        let spec = |kind, tests, threads| UnitSpec {
            kind,
            binary_id: binary.id.clone(),
            binary: Some(binary.clone()),
            tests,
            threads,
            attempt: 0,
            order: binary.order,
            recovery: false,
            retry: 0,
            exact: false,
        };
        let mut listing = match listing {
            Some(listing) if !runs_whole[index] => listing,
            _ => {
                if in_shard(0) {
                    whole_taken += 1;
                    plan.queue
                        .push_back(spec(UnitKind::Whole, Vec::new(), threads));
                }
                continue;
            }
        };
        listed += listing.tests.len();
        let all = std::mem::take(&mut listing.tests);
        let before = all.len();
        listing.tests = all
            .into_iter()
            .enumerate()
            .filter_map(|(i, t)| in_shard(i).then_some(t))
            .collect();
        taken += listing.tests.len();
        // Another shard's tests are filtered out here, as a filter would have left them out.
        plan.filtered_out += listing.filtered_out + before - listing.tests.len();
        plan.total += listing.tests.len();
        if listing.tests.is_empty() {
            continue;
        }
        if !isolate {
            // A shard names its tests exactly: the user's filters alone would run the other shards'.
            plan.queue.push_back(UnitSpec {
                exact: shard.is_some(),
                ..spec(UnitKind::Shared, listing.tests, threads)
            });
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
    let doctests = doctests && partition.is_none_or(partition::takes_doctests);
    if let Some(sharding) = sharding {
        let counts = ShardCounts {
            taken,
            listed,
            whole_taken,
            doctests,
        };
        plan.partition_line = Some(partition_line(sharding, counts, &plan.queue));
    }
    if doctests {
        plan.queue
            .push_front(doctests_unit(threads, after_binaries));
    }
    plan
}

/// What a shard took, for its line.
struct ShardCounts {
    taken: usize,
    listed: usize,
    whole_taken: usize,
    doctests: bool,
}

/// `partition hash:2/3: 20 of 61 tests, and the doctests`; a weighted shard adds the time its tests
/// took in the run its durations come from.
fn partition_line(
    sharding: Sharding<'_>,
    counts: ShardCounts,
    queue: &VecDeque<UnitSpec>,
) -> String {
    let ShardCounts {
        taken,
        listed,
        whole_taken,
        doctests,
    } = counts;
    let mut line = format!(
        "partition {}: {taken} of {listed} tests",
        sharding.partition
    );
    if whole_taken > 0 {
        line.push_str(&format!(", and {whole_taken} binaries run whole"));
    }
    if doctests {
        line.push_str(", and the doctests");
    }
    if let Some(durations) = sharding.durations {
        let known = queue.iter().flat_map(|spec| {
            let whole = spec.tests.is_empty().then_some(None);
            let tests = spec.tests.iter().map(|t| Some(t.as_str()));
            whole
                .into_iter()
                .chain(tests)
                .map(|t| durations.of(&spec.binary_id, t))
        });
        let (micros, unknown) = known.fold((0u64, 0usize), |(sum, unknown), d| match d {
            Some(d) => (sum + d, unknown),
            None => (sum, unknown + 1),
        });
        let doc = if doctests {
            durations.of(DOCTESTS_ID, None).unwrap_or(0)
        } else {
            0
        };
        line.push_str(&format!(
            " ({:.1}s of test time by the durations",
            (micros + doc) as f64 / 1e6
        ));
        if unknown > 0 {
            line.push_str(&format!(", {unknown} not in them"));
        }
        line.push(')');
    }
    line
}

/// For each binary, whether each of its items is in the shard (`partition::assign`).
fn in_shard(
    sharding: Sharding<'_>,
    binaries: &[Arc<TestBinary>],
    listings: &[Option<Listing>],
    runs_whole: &[bool],
) -> Vec<Vec<bool>> {
    let items: Vec<Items<'_>> = binaries
        .iter()
        .zip(listings)
        .zip(runs_whole)
        .map(|((b, l), whole)| Items {
            binary_id: &b.id,
            order: b.order,
            tests: l.as_ref().filter(|_| !whole).map(|l| l.tests.as_slice()),
        })
        .collect();
    partition::assign(sharding.partition, &items, sharding.durations)
}

/// The doctests' unit. First in the queue, not last: `cargo test --doc` spends most of its time
/// starting cargo and compiling the doctests, which overlaps well with the test binaries.
fn doctests_unit(threads: usize, after_binaries: usize) -> UnitSpec {
    UnitSpec {
        kind: UnitKind::Whole,
        binary_id: DOCTESTS_ID.into(),
        binary: None,
        tests: Vec::new(),
        threads,
        attempt: 0,
        // cargo test runs the doctests after every binary.
        order: after_binaries,
        recovery: false,
        retry: 0,
        exact: false,
    }
}
