//! `-p`, `--exclude`, `--lib`, `--test NAME`, ... on a run from an archive: they choose among the
//! archive's binaries as they would choose among a build's (the rerun hint writes them).

use crate::cli::RunArgs;

/// Whether the binary `id` (`pkg`, `pkg::it`, `pkg::bin/tool`, ...) is one the flags select.
pub(super) fn selects(args: &RunArgs, id: &str) -> bool {
    let (package, kind, name) = match id.split_once("::") {
        None => (id, "lib", id),
        Some((package, target)) => match target.split_once('/') {
            Some((kind, name)) => (package, kind, name),
            None => (package, "test", target),
        },
    };
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
    }
}
