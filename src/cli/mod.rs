//! The command line: `cargo test`'s own flags and the runner's options (`run_args`), the session options
//! shared with `exec` (`session_opts`), and the test-binary arguments after `--` (`test_args`).
//!
//! Parsing only: nothing here runs anything. Every layer above may read these types; this module imports
//! nothing of the crate but `contract`.

mod archive_args;
mod archive_opts;
mod cargo_flags;
mod ci_opts;
mod flags;
mod guard_opts;
mod memory;
mod profile_arg;
mod run_args;
mod runner_opts;
mod session_opts;
mod targets;
mod test_args;

use std::time::Duration;

pub(crate) use archive_args::ArchiveArgs;
pub(crate) use archive_opts::ArchiveOpts;
pub(crate) use ci_opts::{CiOpts, FlakyResult, Partition, PartitionKind};
pub(crate) use guard_opts::GuardOpts;
pub(crate) use memory::{Memory, human_bytes};
pub(crate) use profile_arg::ProfileArg;
pub(crate) use run_args::RunArgs;
pub(crate) use runner_opts::RunnerOpts;
pub(crate) use session_opts::{EngineReaperMode, SessionOpts};
pub(crate) use targets::TargetSelection;
pub(crate) use test_args::{RunIgnored, TestArgs};

/// The longest duration accepted anywhere: far beyond any run, and far from overflowing an `Instant`.
const LONGEST: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Parses `--grace-period 1m30s`, `500ms`, `0s`: humantime's syntax, at most ten years.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    // humantime's own words ("expected number at 0") don't say what a duration looks like.
    let duration = humantime::parse_duration(text.trim()).map_err(|_| {
        format!(
            "`{}` is not a duration: write a number and a unit, such as 500ms, 90s, 5m or 1m30s",
            text.trim()
        )
    })?;
    if duration > LONGEST {
        return Err(format!(
            "`{}` is longer than the longest duration accepted, 10 years",
            text.trim()
        ));
    }
    Ok(duration)
}

/// Parses a limit (`--timeout`, `--list-timeout`): a duration that is not zero.
pub(crate) fn parse_limit(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!(
            "`{}` is no limit: a limit must be longer than zero (write e.g. 30s)",
            text.trim()
        )),
        limit => Ok(limit),
    }
}

/// The subcommands, for `help` and for "did you mean".
pub(crate) const SUBCOMMANDS: &[&str] = &[
    "exec",
    "sweep",
    "services",
    "archive",
    "completions",
    "man",
    "help",
];

/// The subcommand `word` is one typo away from (two for longer words), if any: `swep` → `sweep`.
pub(crate) fn near_subcommand(word: &str) -> Option<&'static str> {
    SUBCOMMANDS
        .iter()
        .copied()
        .find(|sub| *sub != word && edit_distance(sub, word) <= sub.len().div_ceil(3).min(2))
}

/// Levenshtein distance, over chars.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_of_subcommands_are_found() {
        assert_eq!(near_subcommand("swep"), Some("sweep"));
        assert_eq!(near_subcommand("sweeep"), Some("sweep"));
        assert_eq!(near_subcommand("exce"), Some("exec"));
        assert_eq!(near_subcommand("sweep"), None);
        assert_eq!(near_subcommand("db"), None);
        assert_eq!(near_subcommand("parse"), None);
    }

    #[test]
    fn limits_are_positive_and_bounded() {
        assert_eq!(parse_limit("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_limit("0s").is_err());
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("300000000000y").is_err());
        assert!(parse_duration("11y").is_err());
    }
}
