//! `--partition`: which of the run's tests this shard runs, with cargo-nextest's three kinds. Every
//! test falls into exactly one shard. A binary that runs whole (it cannot be listed or followed) is one
//! item of its binary, named by its id alone; the doctests, one unit, run in shard 1.
//!
//! The order the shards count in is cargo's run order of the binaries (`TestBinary::order`, then the
//! id), and libtest's order within one: the same on every machine of a CI matrix that built the same
//! code, which is what lets each shard decide alone.

use crate::cli::{Partition, PartitionKind};

/// One binary's items to assign: its listed tests, or none for a binary that runs whole.
pub(crate) struct Items<'a> {
    pub binary_id: &'a str,
    pub order: usize,
    /// None: the binary runs whole, as one item.
    pub tests: Option<&'a [String]>,
}

/// For each binary (in the order given), whether each of its items is in this shard: one flag per test,
/// or a single flag for a binary that runs whole.
pub(crate) fn assign(partition: Partition, binaries: &[Items<'_>]) -> Vec<Vec<bool>> {
    let mut out: Vec<Vec<bool>> = binaries
        .iter()
        .map(|b| vec![false; b.tests.map_or(1, <[String]>::len)])
        .collect();
    let mut by_order: Vec<usize> = (0..binaries.len()).collect();
    by_order.sort_by_key(|&i| (binaries[i].order, binaries[i].binary_id));
    let shard = partition.shard - 1;
    let mut slice_index: u64 = 0;
    for i in by_order {
        let binary = &binaries[i];
        let names: Vec<&str> = match binary.tests {
            Some(tests) => tests.iter().map(String::as_str).collect(),
            None => vec![""],
        };
        for (index, name) in names.iter().enumerate() {
            let bucket = match partition.kind {
                PartitionKind::Hash => stable_hash(binary.binary_id, name),
                PartitionKind::Count => index as u64,
                PartitionKind::Slice => {
                    slice_index += 1;
                    slice_index - 1
                }
            };
            out[i][index] = bucket % partition.total == shard;
        }
    }
    out
}

/// Whether the doctests, as one unit, run in this shard.
pub(crate) fn takes_doctests(partition: Partition) -> bool {
    partition.shard == 1
}

/// 64-bit FNV-1a of the binary id and the test name: fixed by its definition, so every machine and
/// every build of the runner puts a test in the same shard (std's hasher promises no such thing).
fn stable_hash(binary_id: &str, name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in binary_id.bytes().chain([0]).chain(name.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
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
            assign(partition, &binaries),
            vec![vec![false, true], vec![true, false]]
        );
    }

    #[test]
    fn the_hash_is_fixed() {
        assert_eq!(stable_hash("", ""), 0xaf63_bd4c_8601_b7df);
    }
}
