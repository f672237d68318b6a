//! What Cargo cannot see of the layering (ARCHITECTURE.md). The stable layers are crates (`crates/`), so
//! Cargo enforces that they never import the runner; inside the runner (`src/`), a module may import only
//! the layers below it and its own folder. Also, over every tree of the workspace (`src/`, `crates/`,
//! `xtask/`, `cleantest/`): every module starts with a doc comment, no file grows past 520 lines without
//! a `//! Length:` line saying why, no import circle runs between the files of one folder, and `/proc`
//! is read only in the Linux backend.
//!
//! The source is read as code: comments and string literals are blanked first, `use crate::{…}` groups
//! may span lines, and `super::super::` paths are resolved against the file's own module path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The runner's layers, lowest first. A file in layer `i` may import layers `0..=i`. `contract`,
/// `sys` and `docker` are crates of their own, named in `src/main.rs` by `use … as`.
const LAYERS: &[&[&str]] = &[
    &["contract", "sys", "docker"],
    &["errors", "output"],
    &["cli"],
    &["config"],
    &["session"],
    &["services"],
    &["run"],
    &["commands"],
    &["main"],
];

/// Every tree the rules apply to, from the workspace root.
const TREES: &[&str] = &["src", "crates", "xtask/src", "cleantest/src"];

/// Past this many lines a file says why in a `//! Length:` line of its module doc.
const LONG_FILE: usize = 520;

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !path.ends_with("target") {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn files_of(tree: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    sources(&root().join(tree), &mut files);
    files.sort();
    files
}

/// `text` with comments and the contents of string and char literals replaced by spaces (newlines
/// kept, so line numbers stay), so that `crate::` in a message or a comment is not read as a path.
fn code_of(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if b[i] == b'r' && matches!(b.get(i + 1), Some(b'"' | b'#')) && !ident(b, i) {
            // A raw string: r"…", r#"…"#.
            let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
            if b.get(i + 1 + hashes) != Some(&b'"') {
                out.push(b[i]);
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain((0..hashes).map(|_| b'#'))
                .collect();
            out.extend(std::iter::repeat_n(b' ', hashes + 2));
            i += hashes + 2;
            while i < b.len() && !b[i..].starts_with(&close) {
                blank(&mut out, b[i]);
                i += 1;
            }
            out.extend(std::iter::repeat_n(b' ', close.len().min(b.len() - i)));
            i += close.len();
        } else if b[i] == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                let step = if b[i] == b'\\' { 2 } else { 1 };
                for c in &b[i..(i + step).min(b.len())] {
                    blank(&mut out, *c);
                }
                i += step;
            }
            out.push(b' ');
            i += 1;
        } else if b[i] == b'\'' && is_char_literal(b, i) {
            let end = if b[i + 1] == b'\\' {
                b[i + 3..]
                    .iter()
                    .position(|c| *c == b'\'')
                    .map_or(b.len() - 1, |k| i + 3 + k)
            } else {
                let width = std::str::from_utf8(&b[i + 1..])
                    .ok()
                    .and_then(|r| r.chars().next())
                    .map_or(1, char::len_utf8);
                i + 1 + width
            };
            out.extend(std::iter::repeat_n(b' ', end + 1 - i));
            i = end + 1;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out.truncate(text.len());
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the byte before `i` continues an identifier (`br"…"` aside, `r` then starts no raw string).
fn ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// Whether the `'` at `i` opens a char literal (`'a'`, `'\n'`, `'\''`), not a lifetime (`'a`).
fn is_char_literal(b: &[u8], i: usize) -> bool {
    match b.get(i + 1) {
        Some(b'\\') => true,
        Some(_) => {
            // One character (possibly multi-byte) then a quote.
            let rest = std::str::from_utf8(&b[i + 1..]).ok();
            rest.and_then(|r| r.chars().next())
                .is_some_and(|c| b.get(i + 1 + c.len_utf8()) == Some(&b'\''))
        }
        None => false,
    }
}

/// The names a path names after `at` (where `prefix::` ended): one name, or each head of a `{…}` group
/// (which may span lines), with the 1-based line each is on.
fn heads(code: &str, at: usize) -> Vec<(usize, String)> {
    let line_of = |pos: usize| code[..pos].matches('\n').count() + 1;
    let after = &code[at..];
    let name: String = after
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if !name.is_empty() {
        return vec![(line_of(at), name)];
    }
    let Some(inner) = after.strip_prefix('{') else {
        return Vec::new();
    };
    let mut depth = 0;
    let mut start = 0;
    let mut out = Vec::new();
    for (k, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                push_head(&inner[start..k], at + 1 + start, &line_of, &mut out);
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                push_head(&inner[start..k], at + 1 + start, &line_of, &mut out);
                start = k + 1;
            }
            _ => {}
        }
    }
    out
}

fn push_head(
    part: &str,
    pos: usize,
    line_of: &dyn Fn(usize) -> usize,
    out: &mut Vec<(usize, String)>,
) {
    let trimmed = part.trim_start();
    let name: String = trimmed
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if !name.is_empty() {
        out.push((line_of(pos + part.len() - trimmed.len()), name));
    }
}

/// A file's module path inside its tree: `run/unit/finish.rs` → `[run, unit, finish]`,
/// `run/unit/mod.rs` → `[run, unit]`, `main.rs` → `[]`.
fn module_path(tree: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(tree).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "main" | "lib")
    ) {
        parts.pop();
    }
    parts
}

/// Every absolute module path a file names, as `(line, path)`: `crate::a::b`, and `super::…` resolved
/// against `module` (the file's module path).
fn paths_named(code: &str, module: &[String]) -> Vec<(usize, Vec<String>)> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find("::") {
        let colons = from + found;
        from = colons + 2;
        // The segment before `::`, and the ones before it (`super::super::`).
        let mut start = colons;
        while start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            start -= 1;
        }
        let word = &code[start..colons];
        if start > 0 && bytes[start - 1] == b':' {
            continue; // the middle of a longer path, read from its head
        }
        let base: Vec<String> = match word {
            "crate" => Vec::new(),
            "super" => {
                let mut at = colons + 2;
                let mut up = 1;
                while code[at..].starts_with("super::") {
                    up += 1;
                    at += "super::".len();
                }
                from = at;
                // A file's own module is `module`; `super` of a non-`mod.rs` file is its folder.
                module[..module.len().saturating_sub(up)].to_vec()
            }
            _ => continue,
        };
        for (line, head) in heads(code, from) {
            let mut path = base.clone();
            path.push(head);
            out.push((line, path));
        }
    }
    out
}

/// The runner's layering: a file of `src/` imports its own top-level module and the layers below.
#[test]
fn imports_only_flow_down() {
    let tree = root().join("src");
    let mut wrong = Vec::new();
    for file in files_of("src") {
        let module = module_path(&tree, &file);
        let owner = module.first().map_or("main", String::as_str).to_string();
        let Some(own) = rank(&owner) else {
            wrong.push(format!("{}: module `{owner}` has no layer", file.display()));
            continue;
        };
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        for (line, path) in paths_named(&code, &module) {
            let Some(target) = path.first() else { continue };
            if *target == owner {
                continue;
            }
            match rank(target) {
                Some(r) if r <= own => {}
                Some(_) => wrong.push(format!(
                    "{}:{line}: `{owner}` imports `{target}`, a higher layer",
                    file.display()
                )),
                // A name at the crate root that is no module (an item of main.rs) is the top's.
                None if module.is_empty() => {}
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
    let mut wrong = Vec::new();
    for tree in TREES {
        for file in files_of(tree) {
            let text = std::fs::read_to_string(&file).unwrap();
            if !text.starts_with("//!") {
                wrong.push(format!("{}: no `//!` module doc", file.display()));
            }
            let lines = text.lines().count();
            let says_why = text.lines().take_while(|l| l.starts_with("//!")).any(|l| {
                l.trim_start_matches("//!")
                    .trim_start()
                    .starts_with("Length:")
            });
            if lines > LONG_FILE && !says_why {
                wrong.push(format!(
                    "{}: {lines} lines, and no `//! Length:` line of its module doc says why",
                    file.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The sibling files (and folders with a `mod.rs`) a file of `folder` names.
fn sibling_refs(code: &str, module: &[String], siblings: &BTreeSet<String>) -> BTreeSet<String> {
    let folder = &module[..module.len().saturating_sub(1)];
    paths_named(code, module)
        .into_iter()
        .filter_map(|(_, path)| {
            let rest = path.strip_prefix(folder)?;
            rest.first().filter(|s| siblings.contains(*s)).cloned()
        })
        .filter(|s| module.last() != Some(s))
        .collect()
}

/// A circle in `graph`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            return Some(path[at..].to_vec());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// No import circle between the files of one folder (its `mod.rs` or `lib.rs` aside, which declares
/// them). Test modules (`#[cfg(test)] mod tests`) count: a circle is a circle to a reader.
#[test]
fn no_circle_between_the_files_of_a_folder() {
    let mut wrong = Vec::new();
    for tree in TREES {
        let tree_root = root().join(tree);
        let mut folders: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
        for file in files_of(tree) {
            let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
            if !matches!(stem.as_str(), "mod" | "lib" | "main") {
                folders
                    .entry(file.parent().unwrap().into())
                    .or_default()
                    .push(file);
            }
        }
        for (folder, files) in folders {
            let stem = |f: &PathBuf| f.file_stem().unwrap().to_string_lossy().into_owned();
            let siblings: BTreeSet<String> = files.iter().map(stem).collect();
            let crate_root = tree_root.join(
                folder
                    .strip_prefix(&tree_root)
                    .unwrap()
                    .components()
                    .take_while(|c| c.as_os_str() != "src")
                    .collect::<PathBuf>(),
            );
            let src = if crate_root.join("src").is_dir() && *tree == "crates" {
                crate_root.join("src")
            } else {
                tree_root.clone()
            };
            let graph: BTreeMap<String, BTreeSet<String>> = files
                .iter()
                .map(|file| {
                    let code = code_of(&std::fs::read_to_string(file).unwrap());
                    let module = module_path(&src, file);
                    (stem(file), sibling_refs(&code, &module, &siblings))
                })
                .collect();
            if let Some(found) = circle(&graph) {
                wrong.push(format!("{}: {}", folder.display(), found.join(" → ")));
            }
        }
    }
    assert!(wrong.is_empty(), "import circles:\n{}", wrong.join("\n"));
}

/// The platform room (ARCHITECTURE.md, `crates/sys`): `/proc` is read in `crates/sys/src/linux.rs` and
/// nowhere else, so every other layer is written against the platform-neutral API.
#[test]
fn proc_is_read_only_in_the_linux_backend() {
    let mut wrong = Vec::new();
    for tree in ["src", "crates"] {
        for file in files_of(tree) {
            if file.ends_with("crates/sys/src/linux.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let code = code_of(&text);
            for (n, (line, original)) in code.lines().zip(text.lines()).enumerate() {
                // In a string too: `/proc/...` is a path the code opens.
                let comment_free = original.split("//").next().unwrap_or("");
                if line.contains("/proc") || comment_free.contains("/proc") {
                    wrong.push(format!("{}:{}: {}", file.display(), n + 1, original.trim()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "/proc outside crates/sys/src/linux.rs:\n{}",
        wrong.join("\n")
    );
}

/// One printer: in the runner and the layer crates, only `src/output.rs` uses a print macro; every
/// other file sends it lines (ARCHITECTURE.md, "Output").
#[test]
fn only_the_output_module_prints() {
    let mut wrong = Vec::new();
    for tree in ["src", "crates"] {
        for file in files_of(tree) {
            if file.ends_with("src/output.rs") {
                continue;
            }
            let code = code_of(&std::fs::read_to_string(&file).unwrap());
            for (n, line) in code.lines().enumerate() {
                let printing = ["println!", "eprintln!", "print!", "eprint!"]
                    .iter()
                    .any(|m| {
                        line.match_indices(m).any(|(at, _)| {
                            at == 0 || !line.as_bytes()[at - 1].is_ascii_alphanumeric()
                        })
                    });
                if printing {
                    wrong.push(format!("{}:{}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "print macros outside src/output.rs:\n{}",
        wrong.join("\n")
    );
}

/// The docker crate's API says what failed in types (`docker::Error`), never as a bare string.
#[test]
fn the_docker_layer_returns_typed_errors() {
    let mut wrong = Vec::new();
    for file in files_of("crates/docker") {
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        let flat: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
        for (at, _) in flat.match_indices("Result<") {
            let rest = &flat[at..];
            let end = rest
                .find('{')
                .or_else(|| rest.find(';'))
                .unwrap_or(rest.len());
            if rest[..end].contains(", String>") {
                wrong.push(format!("{}: {}", file.display(), &rest[..end.min(80)]));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "Result<_, String> in the docker crate:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_reads_code_as_code() {
    let module: Vec<String> = ["run", "unit", "finish"].map(String::from).to_vec();
    let text = "use crate::{\n    cli::RunArgs,\n    contract,\n};\nlet m = \"crate::nope\"; let x = crate::run::go(); // crate::nope\nuse super::super::super::session::X;\nuse super::spec;\n/* crate::nope */ let c = '\"'; let y = crate::config::Z;\n";
    let code = code_of(text);
    let named: Vec<(usize, String)> = paths_named(&code, &module)
        .into_iter()
        .map(|(line, path)| (line, path.join("::")))
        .collect();
    let expected: Vec<(usize, String)> = [
        (2, "cli"),
        (3, "contract"),
        (5, "run"),
        (6, "session"),
        (7, "run::unit::spec"),
        (8, "config"),
    ]
    .map(|(l, p)| (l, p.to_string()))
    .to_vec();
    assert_eq!(named, expected);
    let siblings: BTreeSet<String> = ["spec", "finish"].map(String::from).into();
    assert_eq!(
        sibling_refs(&code, &module, &siblings),
        ["spec".to_string()].into()
    );
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), ["b".to_string()].into()),
        ("b".to_string(), ["a".to_string()].into()),
    ]
    .into();
    assert!(circle(&graph).is_some());
}
