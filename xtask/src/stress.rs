//! `cargo xtask stress [--runs N] [--test NAME]... [FILTER]...`: runs test binaries of this workspace N
//! times each beside a CPU hog, and prints how often each test passed.
//!
//! CI machines are noisy: a test that passes on an idle machine and fails when every core is busy
//! depends on timing luck. The hog is a busy loop on every core, on threads of this process, started
//! before the first run and stopped after the last (it cannot outlive the command). Each binary is built
//! once by cargo (`cargo test --no-run --message-format=json`) and then run directly, as cargo test
//! runs it, with the filters given. Results are read from libtest's own `test NAME ... ok` lines, which
//! libtest-mimic harnesses print too. Anything below N of N exits non-zero.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What runs when no binary is named: the timeout and signal modules of `plain` (where the leak cells
/// live too), and the chaos cells.
const DEFAULT_TESTS: &[(&str, &[&str])] =
    &[("plain", &["timeouts::", "signals::"]), ("chaos", &[])];

struct Options {
    runs: u32,
    /// Each binary, with the filters it alone gets.
    tests: Vec<(String, Vec<String>)>,
    filters: Vec<String>,
    hog: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        runs: 10,
        tests: Vec::new(),
        filters: Vec::new(),
        hog: true,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                let n = args.next().ok_or("read --runs: it takes a number")?;
                options.runs = n
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("read --runs {n}: a whole number above 0"))?;
            }
            "--test" => options.tests.push((
                args.next()
                    .ok_or("read --test: it takes a test target")?
                    .clone(),
                Vec::new(),
            )),
            "--no-hog" => options.hog = false,
            other if other.starts_with('-') => {
                return Err(format!(
                    "read `{other}`: stress takes --runs N, --test NAME, --no-hog and filters"
                ));
            }
            filter => options.filters.push(filter.to_string()),
        }
    }
    if options.tests.is_empty() {
        options.tests = DEFAULT_TESTS
            .iter()
            .map(|(t, f)| (t.to_string(), f.iter().map(|f| f.to_string()).collect()))
            .collect();
    }
    Ok(options)
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let options = parse(args)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let names: Vec<String> = options.tests.iter().map(|(t, _)| t.clone()).collect();
    let binaries = build(&root, &names)?;
    let hog = options.hog.then(Hog::start);
    let mut passed: BTreeMap<String, u32> = BTreeMap::new();
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for run in 1..=options.runs {
        for (target, binary) in &binaries {
            eprintln!("xtask: stress run {run}/{}: {target}", options.runs);
            let own = options.tests.iter().find(|(t, _)| t == target);
            let filters: Vec<String> = own
                .into_iter()
                .flat_map(|(_, f)| f.iter())
                .chain(&options.filters)
                .cloned()
                .collect();
            for (name, ok) in run_once(&root, binary, &filters)? {
                let key = format!("{target}::{name}");
                *seen.entry(key.clone()).or_default() += 1;
                *passed.entry(key).or_default() += u32::from(ok);
            }
        }
    }
    drop(hog);
    let mut short = 0;
    println!(
        "stress: {} run(s){}",
        options.runs,
        if options.hog {
            " beside a busy loop on every core"
        } else {
            ""
        }
    );
    for (name, runs) in &seen {
        let ok = passed.get(name).copied().unwrap_or(0);
        // A test that did not appear in every run (it crashed its binary) is short as well.
        let mark = if ok == options.runs { "  " } else { "!!" };
        if ok != options.runs {
            short += 1;
        }
        println!("{mark} {ok:>3}/{:<3} {name}", options.runs.max(*runs));
    }
    if seen.is_empty() {
        return Err("stress: no test matched the filters".into());
    }
    if short > 0 {
        return Err(format!("pass every stress run: {short} test(s) did not"));
    }
    Ok(())
}

/// Builds the named test targets; their executables by target name.
fn build(root: &Path, tests: &[String]) -> Result<Vec<(String, PathBuf)>, String> {
    let mut command = crate::cargo();
    command
        .current_dir(root)
        .args([
            "test",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped());
    for test in tests {
        command.args(["--test", test]);
    }
    let output = command
        .output()
        .map_err(|e| format!("build the tests: {e}"))?;
    if !output.status.success() {
        return Err(format!("build the tests ({})", output.status));
    }
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = message["target"]["name"].as_str().unwrap_or_default();
        if let Some(exe) = message["executable"].as_str()
            && tests.iter().any(|t| t == name)
        {
            out.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    Ok(out)
}

/// Runs a test binary once; each test's name and whether it passed (ignored tests are left out).
fn run_once(root: &Path, binary: &Path, filters: &[String]) -> Result<Vec<(String, bool)>, String> {
    let mut child = Command::new(binary)
        .args(filters)
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("run {}: {e}", binary.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let mut results = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some((name, verdict)) = verdict(&line) {
            results.push((name.to_string(), verdict == "ok"));
        }
    }
    let _ = child.wait();
    Ok(results)
}

/// `test NAME ... ok|FAILED` (not `ignored`), as libtest and libtest-mimic print it.
fn verdict(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("test ")?;
    let (name, verdict) = rest.rsplit_once(" ... ")?;
    let verdict = verdict.trim();
    matches!(verdict, "ok" | "FAILED").then_some((name, verdict))
}

/// A busy loop on every core until dropped.
struct Hog {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hog {
    fn start() -> Hog {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x: u64 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Hog { stop, threads }
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_lines_are_read_as_libtest_prints_them() {
        assert_eq!(verdict("test a::b ... ok"), Some(("a::b", "ok")));
        assert_eq!(verdict("test x ... FAILED"), Some(("x", "FAILED")));
        assert_eq!(verdict("test x ... ignored, no engine"), None);
        assert_eq!(verdict("test result: ok. 1 passed"), None);
    }

    #[test]
    fn options_default_to_the_leak_timeout_signal_and_chaos_cells() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.runs, 10);
        let names: Vec<&str> = o.tests.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, ["plain", "chaos"]);
        assert_eq!(o.tests[0].1, ["timeouts::", "signals::"]);
        let o = parse(&[
            "--runs".into(),
            "40".into(),
            "--test".into(),
            "plain".into(),
            "leak".into(),
        ])
        .unwrap();
        assert_eq!(
            (o.runs, o.tests, o.filters),
            (
                40,
                vec![("plain".to_string(), Vec::new())],
                vec!["leak".to_string()]
            )
        );
        assert!(parse(&["--runs".into(), "0".into()]).is_err());
        assert!(parse(&["--bogus".into()]).is_err());
    }
}
