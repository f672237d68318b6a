//! The layering of `src/` (ARCHITECTURE.md), checked on the source itself: a module may import only the
//! layers below it and its own folder, so no import cycle can run between folders. Also: every module
//! starts with a doc comment, and no file grows past ~500 lines without saying why in that comment.

use std::path::{Path, PathBuf};

/// The layers, lowest first. A file in layer `i` may import layers `0..=i`.
const LAYERS: &[&[&str]] = &[
    &["contract"],
    &["sys"],
    &["errors"],
    &["cli"],
    &["config"],
    &["docker"],
    &["session"],
    &["services"],
    &["run"],
    &["commands"],
    &["main"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `src/run/unit/spec.rs` → `run`, `src/contract.rs` → `contract`.
fn owner(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    Path::new(first)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Every `crate::NAME` a file mentions, with its line number.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `use crate::{a, b}` names several modules at once.
            if name.is_empty() && after.starts_with('{') {
                let inner = &after[1..after.find('}').unwrap_or(after.len())];
                for part in inner.split(',') {
                    let part = part.trim().split("::").next().unwrap_or("").to_string();
                    if !part.is_empty() {
                        out.push((n + 1, part));
                    }
                }
            } else if !name.is_empty() {
                out.push((n + 1, name));
            }
            rest = after;
        }
    }
    out
}

fn all_sources() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    (src, files)
}

#[test]
fn imports_only_flow_down() {
    let (src, files) = all_sources();
    let mut wrong = Vec::new();
    for file in &files {
        let module = owner(&src, file);
        let Some(own) = rank(&module) else {
            wrong.push(format!(
                "{}: module `{module}` has no layer",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, target) in crate_paths(&text) {
            match rank(&target) {
                Some(r) if r <= own => {}
                Some(_) => wrong.push(format!(
                    "{}:{line}: `{module}` imports `{target}`, a higher layer",
                    file.display()
                )),
                None => wrong.push(format!(
                    "{}:{line}: `crate::{target}` is no known layer",
                    file.display()
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn every_module_has_a_doc_comment_and_long_files_say_why() {
    let (_, files) = all_sources();
    let mut wrong = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let first = text.lines().next().unwrap_or("");
        // `sweep_tests.rs`-style files are test bodies pulled in with `#[path]`; a `//!` is still asked of them.
        if !first.starts_with("//!") {
            wrong.push(format!("{}: no `//!` module doc", file.display()));
        }
        let lines = text.lines().count();
        let doc: String = text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        if lines > 520 && !doc.contains("lines") {
            wrong.push(format!(
                "{}: {lines} lines, and its module doc does not say why",
                file.display()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The platform room (ARCHITECTURE.md, `sys/`): `/proc` is read in `src/sys/linux.rs` and nowhere else,
/// so every other layer is written against the platform-neutral API.
#[test]
fn proc_is_read_only_in_the_linux_backend() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        if file.ends_with("sys/linux.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("/proc") {
                wrong.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "/proc outside src/sys/linux.rs:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_and_plain_imports() {
    let paths = crate_paths(
        "use crate::{cli::RunArgs, contract};\nlet x = crate::run::go(); // crate::nope\n",
    );
    let names: Vec<&str> = paths.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["cli", "contract", "run"]);
}
