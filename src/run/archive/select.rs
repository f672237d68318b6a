//! `-p`, `--exclude`, `--lib`, `--test NAME`, ... on a run from an archive: they choose among the
//! archive's binaries as they would choose among a build's (the rerun hint writes them).

use crate::cli::RunArgs;

/// `(package, kind, target name)` of a binary id: `pkg`, `pkg::it`, `pkg::bin/tool`, ...
fn parts(id: &str) -> (&str, &str, &str) {
    match id.split_once("::") {
        None => (id, "lib", id),
        Some((package, target)) => match target.split_once('/') {
            Some((kind, name)) => (package, kind, name),
            None => (package, "test", target),
        },
    }
}

/// What the flags name that the archive does not hold (as cargo refuses `-p` of no package, or
/// `--test` of no target): a sentence saying what it holds.
pub(super) fn unknown(args: &RunArgs, ids: &[&str]) -> Option<String> {
    let all: Vec<(&str, &str, &str)> = ids.iter().map(|id| parts(id)).collect();
    let packages: std::collections::BTreeSet<&str> = all.iter().map(|p| p.0).collect();
    let selection = &args.package;
    if let Some(p) = selection
        .package
        .iter()
        .chain(&selection.exclude)
        .find(|p| !packages.contains(p.as_str()))
    {
        let known: Vec<&str> = packages.into_iter().collect();
        return Some(format!(
            "the archive has no package `{p}` (it has {})",
            known.join(", ")
        ));
    }
    let t = &args.targets;
    let named = [
        ("bin", &t.bin),
        ("test", &t.test),
        ("bench", &t.bench),
        ("example", &t.example),
    ];
    for (kind, names) in named {
        if let Some(n) = names
            .iter()
            .find(|n| !all.iter().any(|(_, k, name)| k == &kind && name == n))
        {
            return Some(format!("the archive has no {kind} target named `{n}`"));
        }
    }
    None
}

/// Whether the binary `id` (`pkg`, `pkg::it`, `pkg::bin/tool`, ...) is one the flags select.
pub(super) fn selects(args: &RunArgs, id: &str) -> bool {
    let (package, kind, name) = parts(id);
    let selection = &args.package;
    let package_ok = (selection.package.is_empty()
        || selection.package.iter().any(|p| p == package))
        && !selection.exclude.iter().any(|p| p == package);
    package_ok && target_selected(args, kind, name)
}

fn target_selected(args: &RunArgs, kind: &str, name: &str) -> bool {
    let t = &args.targets;
    if !t.selects_targets() || t.all_targets {
        return true;
    }
    let named = |names: &[String]| names.iter().any(|n| n == name);
    match kind {
        "lib" => t.lib || t.tests,
        "bin" => t.bins || t.tests || named(&t.bin),
        "test" => t.tests || named(&t.test),
        "bench" => t.benches || named(&t.bench),
        "example" => t.examples || named(&t.example),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> RunArgs {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        RunArgs::parse_from_args(&words).unwrap()
    }

    #[test]
    fn the_rerun_hints_selections_pick_their_binary() {
        let ids = ["alpha", "alpha::it", "alpha::bin/tool", "beta", "beta::it"];
        let picked = |words: &[&str]| -> Vec<&str> {
            let a = args(words);
            ids.iter().copied().filter(|id| selects(&a, id)).collect()
        };
        assert_eq!(picked(&[]), ids);
        assert_eq!(picked(&["-p", "alpha", "--lib"]), ["alpha"]);
        assert_eq!(picked(&["-p", "beta", "--test", "it"]), ["beta::it"]);
        assert_eq!(
            picked(&["-p", "alpha", "--bin", "tool"]),
            ["alpha::bin/tool"]
        );
        assert_eq!(
            picked(&["--exclude", "alpha", "--workspace"]),
            ["beta", "beta::it"]
        );
        assert_eq!(
            picked(&["--tests"]),
            ["alpha", "alpha::it", "alpha::bin/tool", "beta", "beta::it"]
        );
        let unknown = |words: &[&str]| unknown(&args(words), &ids);
        assert_eq!(unknown(&["-p", "beta", "--test", "it"]), None);
        assert_eq!(
            unknown(&["-p", "gamma"]).as_deref(),
            Some("the archive has no package `gamma` (it has alpha, beta)")
        );
        assert_eq!(
            unknown(&["--test", "nope"]).as_deref(),
            Some("the archive has no test target named `nope`")
        );
    }
}
