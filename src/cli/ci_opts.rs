//! The options for CI at scale: `--partition` (one shard of the tests, as cargo-nextest splits them),
//! `--retries` and `--flaky-result` (failed tests run again; one that then passes is flaky), and
//! `--max-fail` (how many failures end the run).

/// How `--partition` splits the tests (cargo-nextest's three kinds, same spellings and meanings, and
/// `weighted`, balanced by an earlier run's durations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartitionKind {
    /// By a stable hash of the binary id and test name: a test stays in its shard when others come
    /// and go.
    Hash,
    /// Round-robin over every test of every binary, in cargo's binary order: even shard sizes.
    Slice,
    /// Round-robin within each binary.
    Count,
    /// By time: the longest tests of an earlier run first, each to the shard with the least time so
    /// far (`--durations`); tests it does not know are spread by hash.
    Weighted,
}

/// `--partition KIND:K/N`: run shard `shard` (from 1) of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Partition {
    pub kind: PartitionKind,
    pub shard: u64,
    pub total: u64,
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            PartitionKind::Hash => "hash",
            PartitionKind::Slice => "slice",
            PartitionKind::Count => "count",
            PartitionKind::Weighted => "weighted",
        };
        write!(f, "{kind}:{}/{}", self.shard, self.total)
    }
}

/// Parses `hash:2/3`, `slice:1/4`, `count:3/3`.
pub(crate) fn parse_partition(text: &str) -> Result<Partition, String> {
    const FORMAT: &str =
        "write hash:K/N, slice:K/N, count:K/N or weighted:K/N with 1 <= K <= N, e.g. hash:1/3";
    let (kind, shards) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` names no kind of partition; {FORMAT}"))?;
    let kind = match kind {
        "hash" => PartitionKind::Hash,
        "slice" => PartitionKind::Slice,
        "count" => PartitionKind::Count,
        "weighted" => PartitionKind::Weighted,
        other => return Err(format!("`{other}` is not a kind of partition; {FORMAT}")),
    };
    let (shard, total) = shards
        .split_once('/')
        .ok_or_else(|| format!("`{shards}` is not K/N; {FORMAT}"))?;
    let number = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("`{s}` is not a whole number; {FORMAT}"))
    };
    let (shard, total) = (number(shard)?, number(total)?);
    if shard == 0 || shard > total {
        return Err(format!(
            "shard {shard} is not between 1 and the number of shards, {total}; {FORMAT}"
        ));
    }
    Ok(Partition { kind, shard, total })
}

/// What a flaky test (failed, then passed on a retry) counts as (`--flaky-result`, profile key
/// `flaky-result`).
#[derive(clap::ValueEnum, serde::Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FlakyResult {
    /// Counted as passed, reported FLAKY.
    #[default]
    Pass,
    /// Counted as failed, reported FLAKY.
    Fail,
}

/// The options of runs split and retried in CI.
#[derive(clap::Args, Debug, Default, Clone)]
#[command(next_help_heading = "CI Options")]
pub(crate) struct CiOpts {
    /// Run one shard of the tests: hash:K/N, slice:K/N or count:K/N (as cargo-nextest), or weighted:K/N (balanced by --durations)
    #[arg(long, value_name = "KIND:K/N", value_parser = parse_partition)]
    pub partition: Option<Partition>,
    /// The JUnit report of an earlier run (ours or cargo-nextest's), whose test times --partition weighted:K/N balances the shards by; repeat it for each shard's report
    #[arg(long, value_name = "JUNIT")]
    pub durations: Vec<std::path::PathBuf>,
    /// Run a failed test again, alone with --exact, up to N times; one that then passes is FLAKY [default: 0]
    #[arg(long, value_name = "N", env = "CLEANTEST_RETRIES")]
    pub retries: Option<u32>,
    /// What a flaky test counts as in the total: pass (default) or fail
    #[arg(long, value_name = "RESULT", value_enum)]
    pub flaky_result: Option<FlakyResult>,
    /// Start no new test after N failures; running ones finish (--no-fail-fast is no limit)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "no_fail_fast")]
    pub max_fail: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_parse_as_nextest_spells_them() {
        assert_eq!(
            parse_partition("hash:2/3"),
            Ok(Partition {
                kind: PartitionKind::Hash,
                shard: 2,
                total: 3
            })
        );
        assert_eq!(
            parse_partition("slice:1/1").unwrap().to_string(),
            "slice:1/1"
        );
        for bad in [
            "",
            "hash",
            "hash:",
            "hash:1",
            "hash:1/",
            "hash:0/2",
            "hash:3/2",
            "hash:m/2",
            "hash:1/n",
            "hash:1/2/3",
            "mod:1/2",
            "1/2",
            "hash:-1/2",
        ] {
            let err = parse_partition(bad).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
