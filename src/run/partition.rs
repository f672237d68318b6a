//! `--partition`: which of the run's tests this shard runs, with cargo-nextest's three kinds and
//! `weighted`. Every test falls into exactly one shard. A binary that runs whole (it cannot be listed
//! or followed) is one item of its binary, named by its id alone; the doctests, one unit, run in
//! shard 1.
//!
//! The order the shards count in is cargo's run order of the binaries (`TestBinary::order`, then the
//! id), and libtest's order within one: the same on every machine of a CI matrix that built the same
//! code, which is what lets each shard decide alone. `weighted` adds an earlier run's durations, the
//! same file on every machine: the longest tests go first, each to the shard with the least time so
//! far (the lowest shard on a tie), all in whole microseconds, so no machine can round differently.

use std::cmp::Reverse;

use super::durations::Durations;
use crate::cli::{Partition, PartitionKind};
use crate::contract::DOCTESTS_ID;

/// What a test the durations know counts as at least: every test costs its process or its thread
/// something, and a shard of a thousand 0 ms tests is not free.
const FLOOR_MICROS: u64 = 1_000;

/// The shard a run takes: its partition, and for `weighted`, the durations it balances by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sharding<'a> {
    pub partition: Partition,
    pub durations: Option<&'a Durations>,
}

/// One binary's items to assign: its listed tests, or none for a binary that runs whole.
pub(crate) struct Items<'a> {
    pub binary_id: &'a str,
    pub order: usize,
    /// None: the binary runs whole, as one item.
    pub tests: Option<&'a [String]>,
}

/// For each binary (in the order given), whether each of its items is in this shard: one flag per test,
/// or a single flag for a binary that runs whole. `durations` is read by `weighted` alone (without
/// them, it spreads every test by hash).
pub(crate) fn assign(
    partition: Partition,
    binaries: &[Items<'_>],
    durations: Option<&Durations>,
) -> Vec<Vec<bool>> {
    let buckets = match (partition.kind, durations) {
        (PartitionKind::Weighted, Some(durations)) => {
            weighted(binaries, durations, partition.total)
        }
        _ => counted(partition.kind, binaries),
    };
    buckets
        .into_iter()
        .map(|b| {
            b.into_iter()
                .map(|n| n % partition.total == partition.shard - 1)
                .collect()
        })
        .collect()
}

/// Each item's bucket by hash, by its place in its binary, or by its place in the run.
fn counted(kind: PartitionKind, binaries: &[Items<'_>]) -> Vec<Vec<u64>> {
    let mut out = empty(binaries);
    let mut slice_index: u64 = 0;
    for i in in_order(binaries) {
        let binary = &binaries[i];
        for (index, name) in names(binary).iter().enumerate() {
            out[i][index] = match kind {
                PartitionKind::Count => index as u64,
                PartitionKind::Slice => {
                    slice_index += 1;
                    slice_index - 1
                }
                PartitionKind::Hash | PartitionKind::Weighted => {
                    stable_hash(binary.binary_id, name)
                }
            };
        }
    }
    out
}

/// Each item's shard, longest first to the least loaded; the items the durations do not know by hash.
/// Shard 1 starts with the doctests' time, as it runs them.
fn weighted(binaries: &[Items<'_>], durations: &Durations, total: u64) -> Vec<Vec<u64>> {
    let mut out = counted(PartitionKind::Hash, binaries);
    let mut timed = Vec::new();
    for i in in_order(binaries) {
        let binary = &binaries[i];
        for (index, name) in names(binary).iter().enumerate() {
            let test = binary.tests.is_some().then_some(*name);
            if let Some(micros) = durations.of(binary.binary_id, test) {
                let key = (binary.order, binary.binary_id, *name);
                timed.push((Reverse(micros.max(FLOOR_MICROS)), key, i, index));
            }
        }
    }
    timed.sort();
    let mut loads = vec![0u64; usize::try_from(total).unwrap_or(usize::MAX).max(1)];
    loads[0] = durations.of(DOCTESTS_ID, None).unwrap_or(0);
    for (Reverse(micros), _, i, index) in timed {
        let (least, _) = loads
            .iter()
            .enumerate()
            .min_by_key(|(shard, load)| (**load, *shard))
            .expect("at least one shard");
        loads[least] += micros;
        out[i][index] = least as u64;
    }
    out
}

fn empty(binaries: &[Items<'_>]) -> Vec<Vec<u64>> {
    binaries
        .iter()
        .map(|b| vec![0; b.tests.map_or(1, <[String]>::len)])
        .collect()
}

/// The binaries' indices in cargo's run order.
fn in_order(binaries: &[Items<'_>]) -> Vec<usize> {
    let mut by_order: Vec<usize> = (0..binaries.len()).collect();
    by_order.sort_by_key(|&i| (binaries[i].order, binaries[i].binary_id));
    by_order
}

/// A binary's items: its tests, or one nameless item for a binary that runs whole.
fn names<'a>(binary: &Items<'a>) -> Vec<&'a str> {
    match binary.tests {
        Some(tests) => tests.iter().map(String::as_str).collect(),
        None => vec![""],
    }
}

/// Whether the doctests, as one unit, run in this shard.
pub(crate) fn takes_doctests(partition: Partition) -> bool {
    partition.shard == 1
}

/// The binary id and the test name, hashed (`stable_hash`): every machine and every build of the runner
/// puts a test in the same shard.
fn stable_hash(binary_id: &str, name: &str) -> u64 {
    super::stable_hash::fnv1a(binary_id.bytes().chain([0]).chain(name.bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}::t{i}")).collect()
    }

    #[test]
    fn every_test_falls_into_exactly_one_shard() {
        let (a, b) = (names("a", 7), names("b", 11));
        for kind in [
            PartitionKind::Hash,
            PartitionKind::Slice,
            PartitionKind::Count,
        ] {
            let binaries = [
                Items {
                    binary_id: "pkg::b",
                    order: 2,
                    tests: Some(&b),
                },
                Items {
                    binary_id: "pkg",
                    order: 0,
                    tests: Some(&a),
                },
                Items {
                    binary_id: "pkg::bench",
                    order: 1,
                    tests: None,
                },
            ];
            let shards: Vec<Vec<Vec<bool>>> = (1..=3)
                .map(|shard| {
                    assign(
                        Partition {
                            kind,
                            shard,
                            total: 3,
                        },
                        &binaries,
                        None,
                    )
                })
                .collect();
            for (i, binary) in binaries.iter().enumerate() {
                for t in 0..binary.tests.map_or(1, <[String]>::len) {
                    let taken = shards.iter().filter(|s| s[i][t]).count();
                    assert_eq!(taken, 1, "{kind:?} {} #{t}", binary.binary_id);
                }
            }
        }
    }

    #[test]
    fn slices_count_across_binaries_in_cargo_order() {
        let (a, b) = (names("a", 2), names("b", 2));
        let binaries = [
            Items {
                binary_id: "second",
                order: 1,
                tests: Some(&b),
            },
            Items {
                binary_id: "first",
                order: 0,
                tests: Some(&a),
            },
        ];
        let partition = Partition {
            kind: PartitionKind::Slice,
            shard: 1,
            total: 3,
        };
        // first::0 → 1, first::1 → 2, second::0 → 3, second::1 → 1.
        assert_eq!(
            assign(partition, &binaries, None),
            vec![vec![false, true], vec![true, false]]
        );
    }

    /// The shards `weighted:K/3` gives each of `tests` (all in one binary `b`), and each shard's time.
    fn weighted_shards(tests: &[String], durations: &Durations) -> (Vec<u64>, Vec<u64>) {
        let binaries = [Items {
            binary_id: "b",
            order: 0,
            tests: Some(tests),
        }];
        let mut shard_of = vec![0; tests.len()];
        for shard in 1..=3 {
            let partition = Partition {
                kind: PartitionKind::Weighted,
                shard,
                total: 3,
            };
            for (t, taken) in assign(partition, &binaries, Some(durations))[0]
                .iter()
                .enumerate()
            {
                if *taken {
                    assert_eq!(shard_of[t], 0, "{} is in two shards", tests[t]);
                    shard_of[t] = shard;
                }
            }
        }
        assert!(shard_of.iter().all(|s| *s > 0), "every test has a shard");
        let mut times = vec![0; 3];
        for (t, shard) in shard_of.iter().enumerate() {
            times[*shard as usize - 1] += durations.of("b", Some(&tests[t])).unwrap_or(0);
        }
        (shard_of, times)
    }

    #[test]
    fn weighted_shards_are_balanced_by_time_where_hash_shards_are_not() {
        // Skewed: three long tests, a handful of middling ones, many short ones. Hash puts two of
        // the long ones in shard 3 (9.5 s, 2.55 s and 6.55 s against a mean of 6.2 s).
        let tests = names("b", 40);
        let micros = |t: usize| match t {
            0..=2 => 4_000_000,
            3..=7 => 1_000_000,
            _ => 50_000,
        };
        let cases: Vec<(&str, &str, u64)> = tests
            .iter()
            .enumerate()
            .map(|(t, name)| ("b", name.as_str(), micros(t)))
            .collect();
        let durations = Durations::of_cases(&cases);
        let (_, times) = weighted_shards(&tests, &durations);
        let mean = times.iter().sum::<u64>() as f64 / 3.0;
        let slowest = *times.iter().max().unwrap() as f64;
        assert!(slowest <= 1.3 * mean, "{times:?}");
        // The same suite by hash, for comparison: the goal is not met by chance.
        let binaries = [Items {
            binary_id: "b",
            order: 0,
            tests: Some(&tests),
        }];
        let mut hash_times = vec![0u64; 3];
        for shard in 1..=3u64 {
            let partition = Partition {
                kind: PartitionKind::Hash,
                shard,
                total: 3,
            };
            for (t, taken) in assign(partition, &binaries, None)[0].iter().enumerate() {
                if *taken {
                    hash_times[shard as usize - 1] += micros(t);
                }
            }
        }
        assert!(
            *hash_times.iter().max().unwrap() as f64 > 1.3 * mean,
            "hash happens to balance this suite ({hash_times:?}); pick another"
        );
    }

    #[test]
    fn tests_without_a_duration_are_spread_by_hash_and_the_rest_is_unchanged() {
        let tests = names("b", 12);
        let timed: Vec<(&str, &str, u64)> = tests[..6]
            .iter()
            .map(|n| ("b", n.as_str(), 100_000))
            .collect();
        let (shards, _) = weighted_shards(&tests, &Durations::of_cases(&timed));
        for (t, name) in tests.iter().enumerate().skip(6) {
            assert_eq!(shards[t], stable_hash("b", name) % 3 + 1, "{name}");
        }
        // Greedy over equal times: one after another to the least loaded, lowest shard first.
        assert_eq!(&shards[..6], &[1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn the_doctests_time_counts_in_shard_one() {
        let tests = names("b", 2);
        let durations = Durations::of_cases(&[
            ("b", "b::t0", 1_000_000),
            ("b", "b::t1", 1_000_000),
            (DOCTESTS_ID, "src/lib.rs - x (line 1)", 5_000_000),
        ]);
        let (shards, _) = weighted_shards(&tests, &durations);
        assert_eq!(shards, vec![2, 3], "shard 1 is busy with the doctests");
    }

    #[test]
    fn the_hash_is_fixed() {
        assert_eq!(stable_hash("", ""), 0xaf63_bd4c_8601_b7df);
    }
}
