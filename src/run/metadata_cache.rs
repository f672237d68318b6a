//! What `cargo metadata --no-deps` said of a workspace, remembered between runs: one cargo process
//! (10–25 ms of CPU, on start-up's critical path on a small machine) fewer at every start where the
//! workspace did not change.
//!
//! An entry is used only when everything its answer was made from is as it was: the same cargo
//! executable (path, size, modification time), the same directory and manifest flags, the exact text
//! of the root manifest and of every member's, and the same README files beside each member (cargo
//! infers `package.readme` from them). What no file shows, a member added under a glob (`crates/*`),
//! shows in the build: a test binary of a package the entry does not know sends the run back to
//! `cargo metadata` (`Workspace::knows`). With `--config`, or without `CARGO` (the runner started
//! outside cargo, whose toolchain a rustup proxy may choose per directory), nothing is remembered.
//!
//! Entries live in the state directory, `metadata/<key>.json`, one per directory and manifest. An
//! unreadable, foreign or stale entry is ignored and replaced; failing to write one costs the next run
//! its `cargo metadata`, nothing else, so no error leaves this module. Entries unused for 30 days are
//! removed when another is written.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cargo_metadata::Metadata;
use serde::{Deserialize, Serialize};

use crate::contract::METADATA_CACHE_DIR;

/// Bumped when an entry's layout changes: older entries are then ignored.
const FORMAT: u32 = 1;
/// The README names cargo looks for when a manifest names none, in the order of its bit in a stamp.
const READMES: [&str; 3] = ["README.md", "README.txt", "README"];
/// How long an entry nobody wrote again stays.
const UNUSED_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a `cargo metadata` answer depends on besides the files: checked in full, not only hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Query {
    cargo: PathBuf,
    cargo_stamp: (u64, i64, i64),
    cwd: PathBuf,
    manifest_path: Option<PathBuf>,
    flags: Vec<String>,
}

impl Query {
    /// The query of a run, or `None` where an answer must not be remembered (see the module's notes).
    pub(crate) fn of(manifest_path: Option<&Path>, flags: &[String]) -> Option<Query> {
        if flags.iter().any(|f| f == "--config") {
            return None;
        }
        let cargo = PathBuf::from(std::env::var_os("CARGO")?);
        let meta = std::fs::metadata(&cargo).ok()?;
        Some(Query {
            cargo_stamp: stamp_of(&meta),
            cargo,
            cwd: std::env::current_dir().ok()?,
            manifest_path: manifest_path.map(Path::to_path_buf),
            flags: flags.to_vec(),
        })
    }

    /// The entry's file, named by a hash of the query that stays the same from one build of the runner
    /// to the next (`stable_hash`).
    fn file(&self, state: &Path) -> PathBuf {
        let text =
            serde_json::to_string(&(&self.cwd, &self.manifest_path, &self.flags, &self.cargo))
                .unwrap_or_default();
        let hash = super::stable_hash::fnv1a(text.bytes());
        state
            .join(METADATA_CACHE_DIR)
            .join(format!("{hash:016x}.json"))
    }
}

/// One remembered answer, with what it was made from.
#[derive(Serialize, Deserialize)]
struct Entry {
    format: u32,
    query: Query,
    /// Each manifest read, with its text.
    manifests: Vec<(PathBuf, String)>,
    /// Each member's directory, with the README files in it (a bit per name of `READMES`).
    readmes: Vec<(PathBuf, u8)>,
    metadata: Metadata,
}

/// The remembered answer to `query`, if everything it was made from is unchanged.
pub(crate) fn recall(state: &Path, query: &Query) -> Option<Metadata> {
    let text = std::fs::read(query.file(state)).ok()?;
    let entry: Entry = serde_json::from_slice(&text).ok()?;
    let unchanged = entry.format == FORMAT
        && entry.query == *query
        && entry
            .manifests
            .iter()
            .all(|(path, was)| std::fs::read_to_string(path).is_ok_and(|now| now == *was))
        && entry
            .readmes
            .iter()
            .all(|(dir, was)| readme_bits(dir) == *was);
    unchanged.then_some(entry.metadata)
}

/// Remembers `metadata` as the answer to `query`: written whole or not at all (a temporary file,
/// then a rename), and only when every manifest it names could be read.
pub(crate) fn remember(state: &Path, query: &Query, metadata: &Metadata) {
    let Some(entry) = entry_of(query, metadata) else {
        return;
    };
    let Ok(bytes) = serde_json::to_vec(&entry) else {
        return;
    };
    let file = query.file(state);
    let Some(dir) = file.parent() else {
        return;
    };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    prune(dir);
    let temp = file.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&temp, bytes).is_ok() && std::fs::rename(&temp, &file).is_ok() {
        return;
    }
    let _ = std::fs::remove_file(&temp);
}

fn entry_of(query: &Query, metadata: &Metadata) -> Option<Entry> {
    let root = metadata.workspace_root.as_std_path().join("Cargo.toml");
    let mut paths = vec![root];
    let mut readmes = Vec::new();
    for package in metadata.workspace_packages() {
        let manifest = package.manifest_path.as_std_path();
        if !paths.iter().any(|p| p == manifest) {
            paths.push(manifest.to_path_buf());
        }
        let dir = manifest.parent()?.to_path_buf();
        readmes.push((readme_bits(&dir), dir));
    }
    let manifests = paths
        .into_iter()
        .map(|path| std::fs::read_to_string(&path).ok().map(|text| (path, text)))
        .collect::<Option<Vec<_>>>()?;
    Some(Entry {
        format: FORMAT,
        query: query.clone(),
        manifests,
        readmes: readmes.into_iter().map(|(bits, dir)| (dir, bits)).collect(),
        metadata: metadata.clone(),
    })
}

/// Which of cargo's README names are files in `dir`.
fn readme_bits(dir: &Path) -> u8 {
    READMES
        .iter()
        .enumerate()
        .filter(|(_, name)| dir.join(name).is_file())
        .fold(0, |bits, (i, _)| bits | (1 << i))
}

/// Removes this directory's entries (by their own names: 16 hex digits and `.json`) that nobody wrote
/// for `UNUSED_FOR`. A symlink is removed itself, never followed.
fn prune(dir: &Path) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for item in read.flatten() {
        let name = item.file_name();
        let ours = name.to_str().is_some_and(|n| {
            n.strip_suffix(".json")
                .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        });
        let old = item
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > UNUSED_FOR));
        if ours && old {
            let _ = std::fs::remove_file(item.path());
        }
    }
}

fn stamp_of(meta: &std::fs::Metadata) -> (u64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    (meta.len(), meta.mtime(), meta.mtime_nsec())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::run::test_dir::TestDir;

    fn dir(label: &str) -> TestDir {
        let d = TestDir::fresh(&format!("metadata-{label}"));
        std::fs::create_dir_all(d.0.join("ws/src")).unwrap();
        std::fs::write(
            d.0.join("ws/Cargo.toml"),
            "[package]\nname = \"p\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        std::fs::write(d.0.join("ws/src/lib.rs"), "").unwrap();
        d
    }

    /// A metadata answer for the workspace `ws` in `dir`, as cargo would give it (one member).
    fn metadata(dir: &Path) -> Metadata {
        let ws = dir.join("ws");
        let text = serde_json::json!({
            "packages": [{
                "name": "p", "version": "0.1.0", "id": format!("path+file://{}#p@0.1.0", ws.display()),
                "license": null, "license_file": null, "description": null, "source": null,
                "dependencies": [], "targets": [], "features": {},
                "manifest_path": ws.join("Cargo.toml"), "authors": [], "categories": [],
                "keywords": [], "readme": null, "repository": null, "homepage": null,
                "documentation": null, "edition": "2021", "links": null, "publish": null,
                "default_run": null, "rust_version": null, "metadata": null
            }],
            "workspace_members": [format!("path+file://{}#p@0.1.0", ws.display())],
            "workspace_default_members": [format!("path+file://{}#p@0.1.0", ws.display())],
            "resolve": null,
            "target_directory": ws.join("target"),
            "version": 1,
            "workspace_root": ws,
            "metadata": null
        });
        serde_json::from_value(text).unwrap()
    }

    fn query(dir: &Path) -> Query {
        Query {
            cargo: dir.join("cargo"),
            cargo_stamp: (1, 2, 3),
            cwd: dir.join("ws"),
            manifest_path: None,
            flags: Vec::new(),
        }
    }

    #[test]
    fn an_unchanged_workspace_is_recalled() {
        let d = dir("same");
        let (q, m) = (query(&d.0), metadata(&d.0));
        assert!(recall(&d.0, &q).is_none(), "nothing remembered yet");
        remember(&d.0, &q, &m);
        let back = recall(&d.0, &q).expect("recalled");
        assert_eq!(back.workspace_root, m.workspace_root);
        assert_eq!(back.packages.len(), 1);
    }

    #[test]
    fn any_change_to_what_the_answer_was_made_from_forgets_it() {
        let d = dir("change");
        let (q, m) = (query(&d.0), metadata(&d.0));
        remember(&d.0, &q, &m);
        // Another cargo (a toolchain update), another flag: another query.
        let mut other = q.clone();
        other.cargo_stamp.2 += 1;
        assert!(recall(&d.0, &other).is_none());
        let mut other = q.clone();
        other.flags.push("--locked".into());
        assert!(recall(&d.0, &other).is_none());
        // A README appears: cargo would now name it.
        std::fs::write(d.0.join("ws/README.md"), "hi").unwrap();
        assert!(recall(&d.0, &q).is_none());
        std::fs::remove_file(d.0.join("ws/README.md")).unwrap();
        assert!(recall(&d.0, &q).is_some());
        // The manifest changes by one byte, even at the same size and within the same clock tick.
        std::fs::write(
            d.0.join("ws/Cargo.toml"),
            "[package]\nname = \"p\"\nversion = \"0.1.1\"\n",
        )
        .unwrap();
        assert!(recall(&d.0, &q).is_none());
        // Removed: nothing to compare with.
        std::fs::remove_file(d.0.join("ws/Cargo.toml")).unwrap();
        assert!(recall(&d.0, &q).is_none());
    }

    #[test]
    fn a_damaged_entry_is_ignored_and_replaced() {
        let d = dir("damaged");
        let (q, m) = (query(&d.0), metadata(&d.0));
        remember(&d.0, &q, &m);
        let file = q.file(&d.0);
        std::fs::write(&file, b"{\"format\": 1, \"query\": ").unwrap();
        assert!(recall(&d.0, &q).is_none());
        remember(&d.0, &q, &m);
        assert!(recall(&d.0, &q).is_some());
    }

    #[test]
    fn old_entries_are_pruned_by_their_own_names_only() {
        let d = dir("prune");
        let cache = d.0.join(METADATA_CACHE_DIR);
        std::fs::create_dir_all(&cache).unwrap();
        let old = SystemTime::now() - UNUSED_FOR - Duration::from_secs(60);
        let set_old = |p: &Path| {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(old)
                .unwrap()
        };
        let ours = cache.join("0123456789abcdef.json");
        let other = cache.join("notes.json");
        std::fs::write(&ours, "{}").unwrap();
        std::fs::write(&other, "{}").unwrap();
        set_old(&ours);
        set_old(&other);
        remember(&d.0, &query(&d.0), &metadata(&d.0));
        assert!(!ours.exists(), "an old entry of ours is removed");
        assert!(other.exists(), "a file of another name is left alone");
        assert!(query(&d.0).file(&d.0).exists());
    }

    #[test]
    fn no_query_with_a_config_override() {
        assert!(Query::of(None, &["--config".into(), "x=1".into()]).is_none());
    }
}
