//! The rerun hint at the end of a failed run, as cargo test's `to rerun pass --lib`, but whole and
//! paste-ready: one `cargo cleantest` command per failing binary that selects that binary and, with
//! `--exact`, its failed tests.

use std::collections::BTreeMap;

use super::RunSummary;
use crate::contract::DOCTESTS_ID;

/// At most this many binaries get a line; at most this many names go on one.
const BINARIES: usize = 5;
const NAMES: usize = 20;

/// The lines of the hint (empty when nothing failed). `flags` are the run's own flags that decide
/// what is built and how it runs (features, profile, `-P`, `--isolate`, ...), already quoted.
pub(crate) fn hint(summary: &RunSummary, flags: &[String]) -> Vec<String> {
    let mut by_binary: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in summary.results.iter().filter(|r| r.outcome.is_failure()) {
        by_binary.entry(&r.binary).or_default().push(&r.name);
    }
    for p in &summary.problems {
        by_binary.entry(&p.binary).or_default().push("");
    }
    let mut out = Vec::new();
    for (binary, names) in by_binary.iter().take(BINARIES) {
        let mut words = vec!["cargo cleantest".to_string()];
        words.extend(flags.iter().cloned());
        words.extend(selection(binary));
        // A doctest's shown name is not rustdoc's (`cargo::doctest_name`), and a binary-level failure
        // has none: those rerun the whole target.
        let exact: Vec<&str> = names.iter().copied().filter(|n| !n.is_empty()).collect();
        if *binary != DOCTESTS_ID
            && !exact.is_empty()
            && exact.len() == names.len()
            && exact.len() <= NAMES
        {
            words.push("--".into());
            words.push("--exact".into());
            words.extend(exact.iter().map(|n| quote(n)));
        }
        out.push(words.join(" "));
    }
    if by_binary.len() > BINARIES {
        out.push(format!(
            "(and {} more binaries with failures)",
            by_binary.len() - BINARIES
        ));
    }
    out
}

/// The target selection of a binary id: `pkg` → `-p pkg --lib`, `pkg::it` → `-p pkg --test it`,
/// `pkg::bin/tool` → `-p pkg --bin tool`, `doctests` → `--doc`.
fn selection(binary: &str) -> Vec<String> {
    if binary == DOCTESTS_ID {
        return vec!["--doc".into()];
    }
    match binary.split_once("::") {
        None => vec!["-p".into(), quote(binary), "--lib".into()],
        Some((package, target)) => {
            let (kind, name) = target.split_once('/').unwrap_or(("test", target));
            vec![
                "-p".into(),
                quote(package),
                format!("--{kind}"),
                quote(name),
            ]
        }
    }
}

/// A word as a POSIX shell reads it back: as it is when it is plain, else in single quotes.
pub(crate) fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::report::{Outcome, TestResult};

    fn failed(binary: &str, name: &str) -> TestResult {
        TestResult::new(binary, name.to_string(), Outcome::Failed)
    }

    #[test]
    fn each_failing_binary_gets_a_command_that_selects_it_and_its_tests() {
        let summary = RunSummary {
            results: vec![
                failed("ct-demo", "tests::adds"),
                failed("ct-demo::it", "talks to db"),
                failed("ct-demo::bin/tool", "it's"),
                TestResult::new("ct-demo", "tests::passes".into(), Outcome::Passed),
                failed(DOCTESTS_ID, "ct-demo/src/lib.rs - add (line 5)"),
            ],
            ..Default::default()
        };
        let lines = hint(&summary, &["--isolate".into()]);
        assert_eq!(
            lines,
            vec![
                "cargo cleantest --isolate -p ct-demo --lib -- --exact tests::adds",
                "cargo cleantest --isolate -p ct-demo --bin tool -- --exact 'it'\\''s'",
                "cargo cleantest --isolate -p ct-demo --test it -- --exact 'talks to db'",
                "cargo cleantest --isolate --doc",
            ]
        );
    }

    #[test]
    fn nothing_failed_no_hint() {
        assert!(hint(&RunSummary::default(), &[]).is_empty());
    }
}
