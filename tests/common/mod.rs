//! Shared helpers for the integration tests: running the real `cargo-cleantest` binary against the
//! fixture workspaces, reading its total line, and checking the process table for survivors.

#![allow(dead_code)]

pub mod docker;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The counts of a cargo-test-style `test result:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub ignored: usize,
    pub filtered_out: usize,
}

/// The results the output shows as counted: `test NAME ... ok|FAILED|TIMEOUT|INTERRUPTED|ignored`
/// lines, without the marker of a result the total leaves out. The total line must agree with them.
pub fn shown_counts(text: &str) -> Totals {
    let mut t = Totals::default();
    for line in text
        .lines()
        .filter(|l| l.starts_with("test ") && !l.contains("not counted"))
    {
        let Some((_, verdict)) = line.rsplit_once(" ... ") else {
            continue;
        };
        match verdict.split(' ').next().unwrap_or("") {
            "ok" => t.passed += 1,
            "FAILED" | "TIMEOUT" | "INTERRUPTED" => t.failed += 1,
            "ignored" => t.ignored += 1,
            _ => {}
        }
    }
    t
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("fixtures").join(name)
}

/// The target directory the test suite was built in (`CARGO_TARGET_DIR` or `<root>/target`): scratch
/// files of the tests go there, never into the source tree.
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is <target>/tmp")
        .to_path_buf()
}

/// One target directory for every fixture, so their dependencies are built once.
pub fn fixture_target_dir() -> PathBuf {
    target_dir().join("fixtures")
}

/// A marker unique to one test in this process; every process of a run inherits it.
pub fn unique_mark(label: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{label}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// `--timeout T --grace-period G`: the limits of a run whose tests hang on purpose.
pub fn limits(timeout: &str, grace: &str) -> [String; 4] {
    [
        "--timeout".into(),
        timeout.into(),
        "--grace-period".into(),
        grace.into(),
    ]
}

/// `cargo-cleantest` in a fixture workspace, tagged with `mark`.
pub fn cleantest(fixture_name: &str, mark: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"));
    in_fixture(&mut command, fixture_name, mark);
    command
}

/// The directory and environment of a run in a fixture workspace (`cleantest`), for a command that
/// starts `cargo-cleantest` some other way.
pub fn in_fixture(command: &mut Command, fixture_name: &str, mark: &str) {
    command
        .current_dir(fixture(fixture_name))
        .env("CARGO_TARGET_DIR", fixture_target_dir())
        .env("CT_IT_MARK", mark)
        // Each run its own environment lock (tests of the lock pass --lock, which wins) and a state
        // directory of the test suite's, not the user's.
        .env("CLEANTEST_LOCK", mark)
        .env("CLEANTEST_STATE_DIR", target_dir().join("it-state"))
        // Machine-wide locks, but the suite's own directory of them.
        .env("CLEANTEST_LOCK_DIR", target_dir().join("it-locks"))
        .env("CI", "true")
        .env_remove("CLEANTEST_PROFILE")
        // A run id only where a test sets one, whatever CI runs the suite.
        .env_remove("CLEANTEST_RUN_ID")
        .env_remove("GITHUB_RUN_ID")
        .env_remove("CI_PIPELINE_ID")
        .env_remove("BUILDKITE_BUILD_ID")
        .env_remove("CLEANTEST_TIMEOUT")
        .env_remove("CLEANTEST_GRACE_PERIOD")
        .env_remove("CLEANTEST_ISOLATE")
        .env_remove("RUST_TEST_THREADS");
}

/// `cargo test` in a fixture workspace, with the same target directory.
pub fn cargo_test(fixture_name: &str) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .arg("test")
        .current_dir(fixture(fixture_name))
        .env("CARGO_TARGET_DIR", fixture_target_dir())
        .env_remove("RUST_TEST_THREADS");
    command
}

pub fn run(command: &mut Command) -> Output {
    command.output().expect("the command starts")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn parse_totals(line: &str) -> Option<Totals> {
    let rest = line.strip_prefix("test result: ")?;
    let (_, counts) = rest.split_once(". ")?;
    let mut t = Totals::default();
    for part in counts.split("; ") {
        let Some((n, what)) = part.split_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse() else { continue };
        match what {
            "passed" => t.passed = n,
            "failed" => t.failed = n,
            "ignored" => t.ignored = n,
            "filtered out" => t.filtered_out = n,
            _ => {}
        }
    }
    Some(t)
}

/// The runner's total: its last stdout line, which must be a `test result:` line.
pub fn last_totals(output: &Output) -> Totals {
    let text = stdout(output);
    let last = text.trim_end().lines().last().unwrap_or("");
    parse_totals(last).unwrap_or_else(|| {
        panic!(
            "last line is not a total: {last:?}\nstdout:\n{text}\nstderr:\n{}",
            stderr(output)
        )
    })
}

/// cargo test's totals: the sum of every `test result:` line it printed.
pub fn sum_totals(output: &Output) -> Totals {
    let mut sum = Totals::default();
    for t in stdout(output).lines().filter_map(parse_totals) {
        sum.passed += t.passed;
        sum.failed += t.failed;
        sum.ignored += t.ignored;
        sum.filtered_out += t.filtered_out;
    }
    sum
}

/// Pids of live processes whose environment holds `CT_IT_MARK=<mark>`.
pub fn processes_with_mark(mark: &str) -> Vec<u32> {
    let needle = format!("CT_IT_MARK={mark}");
    let mut out = Vec::new();
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|var| var == needle.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// Asserts that no process of the run survives. SIGKILLed processes need a moment to be torn down
/// by the kernel, so this waits for that (bounded), then fails naming the survivors.
pub fn assert_no_survivors(mark: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = processes_with_mark(mark);
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let described: Vec<String> = left
                .iter()
                .map(|pid| {
                    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    format!("{pid} {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
                })
                .collect();
            panic!("processes of the run survived it: {described:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the process `pid` has exited (gone, or a zombie nobody has reaped yet).
pub fn is_gone(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
        .map_or(true, |s| s.contains(") Z "))
}

/// Waits until `path` exists (a fixture test announcing it is running); fails after `limit`.
pub fn wait_for_file(path: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `text` to `path` as an executable script (mode 0755).
pub fn write_executable(path: &Path, text: impl AsRef<[u8]>) {
    std::fs::write(path, text).unwrap();
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(path, perms).unwrap();
}

/// A crate of its own in a fresh directory: `lib` as its `src/lib.rs`, and `config`, if any, as its
/// `.config/cleantest.toml`.
pub fn scratch_crate(label: &str, lib: &str, config: Option<&str>) -> TempDir {
    let dir = temp_dir(label);
    std::fs::create_dir_all(dir.join(".config")).unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"ct-{}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[workspace]\n",
            label
                .to_lowercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        ),
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), lib).unwrap();
    if let Some(config) = config {
        std::fs::write(dir.join(".config/cleantest.toml"), config).unwrap();
    }
    dir
}

/// A fresh empty directory under the target directory (`it-tmp/`), removed with what is in it when
/// dropped: when its test ends, failed or not (as nextest's `TempProject`). Removal never follows a
/// symlink out of it (`remove_dir_all` removes a link, not its target).
pub fn temp_dir(label: &str) -> TempDir {
    let dir = target_dir().join("it-tmp").join(unique_mark(label));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// A fresh empty directory under the target directory, for a run whose directory no scope of the test
/// holds (a command built by a helper, a child that outlives the statement that started it): removed
/// when the test binary ends (`remove_run_dirs`, from the harness's main), whatever its tests did.
pub fn run_dir(label: &str) -> PathBuf {
    fresh_until_the_end(target_dir().join("it-tmp").join(unique_mark(label)))
}

/// A fresh directory of this test binary's own in the system's temporary directory (outside any cargo
/// workspace, as tests that make a workspace there expect), removed with the `run_dir`s when the
/// binary ends.
pub fn binary_temp_dir() -> PathBuf {
    fresh_until_the_end(std::env::temp_dir().join(format!("cleantest-it-{}", std::process::id())))
}

/// `dir`, made fresh and empty, and noted for `remove_run_dirs`.
fn fresh_until_the_end(dir: PathBuf) -> PathBuf {
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    RUN_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir.clone());
    dir
}

/// The directories `run_dir` made in this binary.
static RUN_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes every directory `run_dir` made, each by its own name.
pub fn remove_run_dirs() {
    let dirs = std::mem::take(&mut *RUN_DIRS.lock().unwrap_or_else(|e| e.into_inner()));
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A directory of a test's own, removed when dropped (`temp_dir`).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Its own name, made by `temp_dir` under `it-tmp/`: never a computed parent.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Spawns a fixture run and returns once each of `tests` has announced it is running (the fixtures
/// write `$CT_FIXTURE_MARK_DIR/<test>.started`, holding their pid). Returns the run and the marker dir.
pub fn spawn_until_started(
    command: &mut Command,
    tests: &[&str],
) -> (std::process::Child, TempDir) {
    let dir = temp_dir("marks");
    let child = command
        .env("CT_FIXTURE_MARK_DIR", &*dir)
        .spawn()
        .expect("the run starts");
    for test in tests {
        wait_for_file(
            &dir.join(format!("{test}.started")),
            Duration::from_secs(120),
        );
    }
    (child, dir)
}

/// One test case of a JUnit report, by name: from its `name=` to the next case or the suite's end.
pub fn junit_case<'a>(xml: &'a str, name: &str) -> &'a str {
    let start = xml
        .find(&format!("name=\"{name}\""))
        .unwrap_or_else(|| panic!("{name} not in {xml}"));
    // A case ends where the next case or the suite begins (passing cases are self-closing).
    let rest = &xml[start..];
    let end = ["<testcase", "</testsuite>"]
        .iter()
        .filter_map(|t| rest.find(t))
        .min()
        .map_or(xml.len(), |e| start + e);
    &xml[start..end]
}
