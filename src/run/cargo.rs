//! Cargo build & discovery: the workspace's packages (`cargo metadata`) and its test binaries
//! (`cargo test --no-run --message-format=json-render-diagnostics`).
//!
//! The build goes through cargo itself, so every selection flag means exactly what it means to cargo and
//! compiler diagnostics reach the user as cargo renders them. escargot is not used: its
//! `CargoBuild::tests()` runs `cargo build --tests`, which selects a different set of binaries than
//! `cargo test` for flags such as `--lib`, and it hides the compiler's errors.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use cargo_metadata::{Message, Metadata, MetadataCommand, Package, TargetKind};

use super::cargo_env::{self, cargo_program};
use super::harness::{self, Harness};
use super::metadata_cache;
use super::target_runner::{Runners, TargetRunner};
use crate::cli::RunArgs;
use crate::contract::ENV_BINARY;
use crate::errors::Error;
use crate::session::{Session, state};

/// What the runner needs to know of one workspace package.
#[derive(Debug)]
pub(crate) struct PackageInfo {
    pub name: String,
    pub dir: PathBuf,
    /// Variables cargo sets for this package's tests (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...).
    pub env: Vec<(String, String)>,
    /// `(kind, target name)` of targets declared with `harness = false`.
    custom_harness: HashSet<(String, String)>,
}

impl PackageInfo {
    /// A package as an archive describes it: its binaries carry their whole environment and harness.
    pub(crate) fn restored(name: String, dir: PathBuf) -> PackageInfo {
        PackageInfo {
            name,
            dir,
            env: Vec::new(),
            custom_harness: HashSet::new(),
        }
    }
}

/// The workspace as `cargo metadata` describes it.
#[derive(Debug)]
pub(crate) struct Workspace {
    pub root: PathBuf,
    /// Where cargo builds (`CARGO_TARGET_DIR` and the config already applied).
    pub target_dir: PathBuf,
    packages: HashMap<String, Arc<PackageInfo>>,
}

/// What `cargo test --no-run` reported: the test executables and the package binaries.
#[derive(Debug, Default)]
pub(crate) struct Built {
    tests: Vec<cargo_metadata::Artifact>,
    /// Package id → its binaries (`CARGO_BIN_EXE_<name>`).
    bin_exes: HashMap<String, Vec<(String, PathBuf)>>,
    /// Package id → its build script's output directory (`OUT_DIR`, which cargo test also sets when
    /// the tests run).
    out_dirs: HashMap<String, PathBuf>,
}

impl Built {
    /// Package id → its build script's `OUT_DIR`.
    pub(crate) fn out_dirs(&self) -> &HashMap<String, PathBuf> {
        &self.out_dirs
    }
}

/// One test executable cargo built.
#[derive(Debug)]
pub(crate) struct TestBinary {
    /// `pkg`, `pkg::it`, `pkg::bin/tool`, ...: stable, readable, also the value of `CLEANTEST_BINARY`.
    pub id: String,
    pub executable: PathBuf,
    pub package: Arc<PackageInfo>,
    /// How it runs its tests (libtest, a libtest-compatible harness, or something to run whole).
    pub harness: Harness,
    /// The library's unit-test binary.
    pub is_lib: bool,
    /// Its library's doctests run under cargo test (`doctest = false` turns them off).
    pub doctests: bool,
    /// The complete environment cargo test would add for this binary.
    pub env: Vec<(String, OsString)>,
    /// The target runner cargo would put in front of it, if one is configured.
    pub runner: Option<TargetRunner>,
    /// Its place in the order cargo test runs binaries (package, then lib, bins, tests, benches,
    /// examples, then name): what fail-fast stops by.
    pub order: usize,
    /// `(package, kind rank, target name)`: sorts as cargo's run order.
    pub sort_key: (String, u8, String),
    /// The package's id in cargo's metadata (empty for a binary restored from an archive).
    pub package_id: String,
}

impl TestBinary {
    /// The binary as cargo test starts it: its environment, `CLEANTEST_BINARY`, and the package root as
    /// the working directory. The caller adds the arguments.
    pub(crate) fn command(&self) -> Command {
        let mut command = match &self.runner {
            Some(runner) => runner.command(&self.executable),
            None => Command::new(&self.executable),
        };
        command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(ENV_BINARY, &self.id)
            .current_dir(&self.package.dir);
        command
    }
}

impl Workspace {
    /// Each package's directory relative to the workspace root (`crates/foo/`, or empty for a package
    /// at the root) and its name, longest directory first: what names a doctest (`doctest_name`).
    pub(crate) fn doc_prefixes(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .packages
            .values()
            .filter_map(|p| {
                let rel = p.dir.strip_prefix(&self.root).ok()?.to_str()?.to_string();
                let rel = if rel.is_empty() {
                    rel
                } else {
                    format!("{rel}/")
                };
                Some((rel, p.name.clone()))
            })
            .collect();
        out.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.1.cmp(&b.1)));
        out
    }

    /// Reads the workspace with `cargo metadata --no-deps`, and remembers the answer for the next run
    /// (`metadata_cache`).
    pub(crate) fn load(args: &RunArgs) -> Result<Workspace, Error> {
        let mut command = MetadataCommand::new();
        command
            .cargo_path(cargo_program())
            .no_deps()
            .other_options(args.manifest_flags());
        if let Some(path) = &args.manifest.manifest_path {
            command.manifest_path(path);
        }
        let metadata = command
            .exec()
            .map_err(|e| Error::Metadata(first_error_line(&e)))?;
        if let (Some(query), Ok(state)) = (cache_query(args), state::state_dir()) {
            metadata_cache::remember(&state, &query, &metadata);
        }
        Ok(Workspace::of(&metadata))
    }

    /// The workspace as the last run's `cargo metadata` described it, when nothing it was made from
    /// has changed since. Whether it knows every package of the build is `knows`'s to say.
    pub(crate) fn recall(args: &RunArgs) -> Option<Workspace> {
        let state = state::state_dir().ok()?;
        metadata_cache::recall(&state, &cache_query(args)?).map(|m| Workspace::of(&m))
    }

    /// Whether every test binary of `built` belongs to a package this workspace knows: a member added
    /// under a glob changes no file a remembered answer was checked against, but shows here.
    pub(crate) fn knows(&self, built: &Built) -> bool {
        built
            .tests
            .iter()
            .all(|a| self.packages.contains_key(&a.package_id.repr))
    }

    /// A workspace as an archive describes it, rooted at `root`.
    pub(crate) fn restored(
        root: PathBuf,
        target_dir: PathBuf,
        packages: Vec<Arc<PackageInfo>>,
    ) -> Workspace {
        let packages = packages.into_iter().map(|p| (p.name.clone(), p)).collect();
        Workspace {
            root,
            target_dir,
            packages,
        }
    }

    fn of(metadata: &Metadata) -> Workspace {
        let packages = metadata
            .packages
            .iter()
            .map(|p| (p.id.repr.clone(), Arc::new(package_info(p))))
            .collect();
        Workspace {
            root: metadata.workspace_root.clone().into_std_path_buf(),
            target_dir: metadata.target_directory.clone().into_std_path_buf(),
            packages,
        }
    }

    /// Describes the test binaries of a build, in the order cargo test runs them.
    pub(crate) fn test_binaries(&self, built: &Built, runners: &Runners) -> Vec<TestBinary> {
        let binaries: Vec<TestBinary> = built
            .tests
            .iter()
            .filter_map(|artifact| self.describe(artifact, built, runners))
            .collect();
        in_cargo_order(binaries)
    }

    fn describe(
        &self,
        artifact: &cargo_metadata::Artifact,
        built: &Built,
        runners: &Runners,
    ) -> Option<TestBinary> {
        let package = self.packages.get(&artifact.package_id.repr)?.clone();
        let executable = artifact.executable.clone()?.into_std_path_buf();
        let kind = kind_name(&artifact.target.kind);
        let name = artifact.target.name.clone();
        let id = match kind {
            "lib" => package.name.clone(),
            "test" => format!("{}::{name}", package.name),
            other => format!("{}::{other}/{name}", package.name),
        };
        let custom_harness = package
            .custom_harness
            .contains(&(kind.to_string(), name.clone()))
            || (kind == "lib" && package.custom_harness.iter().any(|(k, _)| k == "lib"));
        let harness = harness::classify(&executable, custom_harness);
        // cargo gives integration tests and benches the paths of their package's binaries.
        let bins = match kind {
            "test" | "bench" => built
                .bin_exes
                .get(&artifact.package_id.repr)
                .cloned()
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let out_dir = built.out_dirs.get(&artifact.package_id.repr);
        let env = cargo_env::binary_env(&package.env, &executable, &bins, out_dir);
        let rank = kind_rank(kind);
        Some(TestBinary {
            id,
            runner: runners.for_executable(&executable),
            sort_key: (package.name.clone(), rank, name),
            executable,
            package,
            harness,
            is_lib: kind == "lib",
            doctests: kind == "lib" && artifact.target.doctest,
            env,
            order: 0,
            package_id: artifact.package_id.repr.clone(),
        })
    }
}

/// The binaries sorted as cargo test runs them, each once, numbered in that order.
pub(crate) fn in_cargo_order(mut binaries: Vec<TestBinary>) -> Vec<TestBinary> {
    binaries.sort_by(|a, b| a.sort_key.cmp(&b.sort_key));
    binaries.dedup_by(|a, b| a.executable == b.executable);
    for (i, binary) in binaries.iter_mut().enumerate() {
        binary.order = i;
    }
    binaries
}

/// cargo's `TargetKind` order, which its test run is sorted by.
pub(crate) fn kind_rank(kind: &str) -> u8 {
    match kind {
        "lib" => 0,
        "bin" => 1,
        "test" => 2,
        "bench" => 3,
        _ => 4,
    }
}

fn cache_query(args: &RunArgs) -> Option<metadata_cache::Query> {
    metadata_cache::Query::of(
        args.manifest.manifest_path.as_deref(),
        &args.manifest_flags(),
    )
}

/// Builds the selected test binaries the way `cargo test` would (no `cargo metadata` needed, so it can
/// run while the workspace is read).
pub(crate) fn build(args: &RunArgs, session: &Session) -> Result<Built, Error> {
    let mut command = Command::new(cargo_program());
    command
        .args([
            "test",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .args(args.cargo_common_flags())
        .args(args.targets.flags())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    session.configure(&mut command);
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        program: "cargo test --no-run".into(),
        source,
    })?;
    // The build stays in the runner's process group (the terminal's Ctrl-C reaches cargo directly), so
    // it is signalled by pid; its own children are cargo's to stop.
    session.add_group_member(child.id() as i32);
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut tests = Vec::new();
    let mut bin_exes: HashMap<String, Vec<(String, PathBuf)>> = HashMap::new();
    let mut out_dirs = HashMap::new();
    for message in Message::parse_stream(BufReader::new(stdout)) {
        match message {
            Ok(Message::CompilerArtifact(artifact)) => {
                let Some(exe) = artifact.executable.clone() else {
                    continue;
                };
                if artifact.profile.test {
                    tests.push(artifact);
                } else if artifact.target.kind.contains(&TargetKind::Bin) {
                    bin_exes
                        .entry(artifact.package_id.repr.clone())
                        .or_default()
                        .push((artifact.target.name.clone(), exe.into_std_path_buf()));
                }
            }
            Ok(Message::BuildScriptExecuted(script)) => {
                out_dirs.insert(script.package_id.repr, script.out_dir.into_std_path_buf());
            }
            Ok(Message::TextLine(line)) => crate::output::err(line),
            Ok(_) => {}
            Err(e) => crate::output::err(format!("warning: unreadable message from cargo: {e}")),
        }
    }
    let status = child.wait().map_err(|source| Error::Spawn {
        program: "cargo".into(),
        source,
    })?;
    session.remove_group_member(child.id() as i32);
    if !status.success() {
        return Err(Error::Build(status.to_string()));
    }
    Ok(Built {
        tests,
        bin_exes,
        out_dirs,
    })
}

fn kind_name(kinds: &[TargetKind]) -> &'static str {
    let has = |k: TargetKind| kinds.contains(&k);
    if has(TargetKind::Test) {
        "test"
    } else if has(TargetKind::Bin) {
        "bin"
    } else if has(TargetKind::Example) {
        "example"
    } else if has(TargetKind::Bench) {
        "bench"
    } else {
        "lib"
    }
}

fn package_info(package: &Package) -> PackageInfo {
    let dir = package
        .manifest_path
        .parent()
        .map(|p| p.as_std_path().to_path_buf())
        .unwrap_or_default();
    PackageInfo {
        name: package.name.to_string(),
        env: cargo_env::package_env(package),
        custom_harness: custom_harness_targets(package.manifest_path.as_std_path()),
        dir,
    }
}

/// Reads the manifest for targets with `harness = false` (cargo metadata does not report it).
fn custom_harness_targets(manifest: &Path) -> HashSet<(String, String)> {
    let Ok(text) = std::fs::read_to_string(manifest) else {
        return HashSet::new();
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return HashSet::new();
    };
    let no_harness = |t: &toml::Table| t.get("harness").and_then(|v| v.as_bool()) == Some(false);
    let name = |t: &toml::Table| {
        t.get("name")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let mut out = HashSet::new();
    for (key, kind) in [
        ("test", "test"),
        ("bench", "bench"),
        ("bin", "bin"),
        ("example", "example"),
    ] {
        for target in table
            .get(key)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(t) = target.as_table().filter(|t| no_harness(t)) {
                out.insert((kind.to_string(), name(t)));
            }
        }
    }
    if let Some(lib) = table
        .get("lib")
        .and_then(|v| v.as_table())
        .filter(|t| no_harness(t))
    {
        out.insert(("lib".to_string(), name(lib)));
    }
    out
}

/// cargo's own one-line reason (`error: manifest path ... does not exist`), without its noise.
fn first_error_line(error: &cargo_metadata::Error) -> String {
    let text = match error {
        cargo_metadata::Error::CargoMetadata { stderr } => stderr.clone(),
        other => other.to_string(),
    };
    text.lines()
        .find(|l| l.starts_with("error"))
        .or_else(|| text.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("cargo metadata failed")
        .trim_start_matches("error: ")
        .to_string()
}

/// A doctest's name by one rule whatever the layout: `PACKAGE/PATH-IN-PACKAGE - item (line N)`.
/// rustdoc names the file relative to the workspace root, so the same doctest was `src/lib.rs - add`
/// in a single package and `ct-demo/src/lib.rs - add` in a workspace.
pub(crate) fn doctest_name(raw: &str, prefixes: &[(String, String)]) -> String {
    prefixes
        .iter()
        .find(|(rel, _)| raw.starts_with(rel.as_str()))
        .map_or_else(
            || raw.to_string(),
            |(rel, name)| format!("{name}/{}", &raw[rel.len()..]),
        )
}

#[cfg(test)]
mod doctest_names {
    use super::doctest_name;

    #[test]
    fn a_doctest_is_named_by_its_package_in_any_layout() {
        let workspace = vec![
            ("crates/ct-demo/".to_string(), "ct-demo".to_string()),
            (String::new(), "root".to_string()),
        ];
        assert_eq!(
            doctest_name("crates/ct-demo/src/lib.rs - add (line 5)", &workspace),
            "ct-demo/src/lib.rs - add (line 5)"
        );
        assert_eq!(
            doctest_name("src/lib.rs - top (line 1)", &workspace),
            "root/src/lib.rs - top (line 1)"
        );
        let single = vec![(String::new(), "ct-demo".to_string())];
        assert_eq!(
            doctest_name("src/lib.rs - add (line 5)", &single),
            "ct-demo/src/lib.rs - add (line 5)"
        );
    }
}
