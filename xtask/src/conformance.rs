//! `cargo xtask conformance [--ci] [--only NAME]`: drop-in fidelity on code nobody here wrote.
//!
//! Pinned crates.io packages (they ship their tests) are downloaded by cargo through a throwaway
//! manifest, copied into `<target>/conformance/`, and tested with `cargo test` and with `cargo
//! cleantest` in shared and isolated mode, `--no-fail-fast` and a few selection flags, with
//! `RUST_BACKTRACE=0` on both sides. Counts (passed, failed, ignored, measured, filtered out) and exit
//! codes must be equal. The full corpus writes `CONFORMANCE.md` with the wall-time ratios; `--ci` runs
//! the subset CI can afford and writes its table under the target dir.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// Runs of each side per case; the report shows the median time.
const ROUNDS: usize = 3;

/// One run of the corpus: a workspace made of pinned packages, and the flags to test it with.
struct Case {
    name: &'static str,
    /// What this case covers.
    covers: &'static str,
    /// `(package, exact version)`; more than one makes a workspace of them.
    packages: &'static [(&'static str, &'static str)],
    args: &'static [&'static str],
    /// Also run with `--isolate` (a process per test).
    isolate: bool,
    /// Part of the CI subset.
    ci: bool,
}

const CORPUS: &[Case] = &[
    Case {
        name: "either",
        covers: "plain libtest and doctests",
        packages: &[("either", "1.15.0")],
        args: &[],
        isolate: true,
        ci: true,
    },
    Case {
        name: "either-filter",
        covers: "a TESTNAME filter and `-- --skip`",
        packages: &[("either", "1.15.0")],
        args: &["--lib", "basic", "--", "--skip", "error"],
        isolate: true,
        ci: true,
    },
    Case {
        name: "url",
        covers: "a plain-`main` `harness = false` test (`url_wpt`)",
        packages: &[("url", "2.5.8")],
        args: &[],
        isolate: true,
        ci: true,
    },
    Case {
        name: "url-benches",
        covers: "bencher benches under `--benches` (measured counts)",
        packages: &[("url", "2.5.8")],
        args: &["--benches"],
        isolate: true,
        ci: false,
    },
    Case {
        name: "idna",
        covers: "the libtest-compatible `tester` harness, 12,808 tests in one binary",
        packages: &[("idna", "1.1.0")],
        args: &[],
        isolate: false,
        ci: true,
    },
    Case {
        name: "idna-unit",
        covers: "idna's plain-libtest `unit` target, both modes",
        packages: &[("idna", "1.1.0")],
        args: &["--test", "unit"],
        isolate: true,
        ci: false,
    },
    Case {
        name: "semver-benches",
        covers: "criterion benches under `--benches` (criterion rejects `--test-threads`)",
        packages: &[("semver", "1.0.28")],
        args: &["--benches"],
        isolate: true,
        ci: false,
    },
    Case {
        name: "datatest-stable",
        covers: "a datatest-stable (libtest-mimic) harness",
        packages: &[("datatest-stable", "0.3.3")],
        args: &["--test", "example"],
        isolate: true,
        ci: false,
    },
    Case {
        name: "workspace",
        covers: "a multi-member workspace (itoa, semver, either), `--workspace`",
        packages: &[
            ("itoa", "1.0.15"),
            ("semver", "1.0.28"),
            ("either", "1.15.0"),
        ],
        args: &["--workspace", "--lib", "--tests"],
        isolate: true,
        ci: false,
    },
];

/// The counts of a run and how it ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    passed: usize,
    failed: usize,
    ignored: usize,
    measured: usize,
    filtered_out: usize,
    exit: Option<i32>,
}

impl Counts {
    fn show(&self) -> String {
        format!(
            "{}/{}/{}/{}/{} exit {}",
            self.passed,
            self.failed,
            self.ignored,
            self.measured,
            self.filtered_out,
            self.exit.map_or("signal".into(), |c| c.to_string())
        )
    }
}

struct Row {
    case: &'static Case,
    cargo: (Counts, f64),
    shared: (Counts, f64),
    isolated: Option<(Counts, f64)>,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let ci = args.iter().any(|a| a == "--ci");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .map_err(|e| e.to_string())?;
    let cases: Vec<&Case> = CORPUS
        .iter()
        .filter(|c| !ci || c.ci)
        .filter(|c| only.is_none_or(|o| o == c.name))
        .collect();
    if cases.is_empty() {
        return Err("select a case: --only takes one of the corpus names".into());
    }
    let work = crate::target_dir(&root).join("conformance");
    let bin = build_runner(&root, ci)?;
    let sources = fetch(&work, &cases)?;
    let mut rows = Vec::new();
    let mut mismatches = Vec::new();
    for case in cases {
        let dir = prepare(&work, case, &sources)?;
        let row = run_case(&work, &dir, &bin, case)?;
        let mut sides = vec![("shared", row.shared.0)];
        sides.extend(row.isolated.map(|i| ("--isolate", i.0)));
        for (mode, counts) in sides {
            if counts != row.cargo.0 {
                mismatches.push(format!(
                    "{} ({mode}): cargo test {} vs cargo cleantest {}",
                    case.name,
                    row.cargo.0.show(),
                    counts.show()
                ));
            }
        }
        rows.push(row);
    }
    let report = render(&rows, ci);
    let out = if ci {
        work.join("CONFORMANCE.md")
    } else {
        root.join("CONFORMANCE.md")
    };
    std::fs::write(&out, &report).map_err(|e| format!("write {}: {e}", out.display()))?;
    eprintln!("{report}\nconformance: wrote {}", out.display());
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "match cargo test on the corpus:\n  {}",
            mismatches.join("\n  ")
        ))
    }
}

/// The release build for the timed corpus; the CI subset checks counts only, on the debug build the
/// test suite has already built.
fn build_runner(root: &Path, ci: bool) -> Result<PathBuf, String> {
    let profile = if ci { "debug" } else { "release" };
    let mut command = crate::cargo();
    command
        .current_dir(root)
        .args(["build", "--package", "cargo-cleantest"]);
    if !ci {
        command.arg("--release");
    }
    crate::step(&format!("build cargo-cleantest ({profile})"), &mut command)?;
    Ok(crate::target_dir(root)
        .join(profile)
        .join("cargo-cleantest"))
}

/// Where each `(package, version)` of the corpus was unpacked.
type Sources = Vec<((String, String), PathBuf)>;

/// Downloads every pinned package through one throwaway manifest and returns where cargo unpacked
/// each one: `cargo metadata` makes cargo fetch and unpack them, and tells their paths.
fn fetch(work: &Path, cases: &[&Case]) -> Result<Sources, String> {
    let fetch_dir = work.join("fetch");
    std::fs::create_dir_all(fetch_dir.join("src")).map_err(|e| e.to_string())?;
    let mut manifest = String::from(
        "[package]\nname = \"conformance-fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
         publish = false\n\n[workspace]\n\n[dependencies]\n",
    );
    let mut seen = Vec::new();
    for (name, version) in cases.iter().flat_map(|c| c.packages) {
        if !seen.contains(&(name, version)) {
            seen.push((name, version));
            // Two versions of one crate need two names.
            let _ = writeln!(
                manifest,
                "{name}-{} = {{ package = \"{name}\", version = \"={version}\" }}",
                version.replace('.', "-")
            );
        }
    }
    std::fs::write(fetch_dir.join("Cargo.toml"), manifest).map_err(|e| e.to_string())?;
    std::fs::write(fetch_dir.join("src/lib.rs"), "").map_err(|e| e.to_string())?;
    let out = crate::cargo()
        .current_dir(&fetch_dir)
        .args(["metadata", "--format-version", "1"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err("download the corpus with cargo metadata".into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found = Vec::new();
    for (name, version) in seen {
        // `"name":"x","version":"v",...,"manifest_path":"..."` of that package.
        let key = format!("\"name\":\"{name}\",\"version\":\"{version}\"");
        let at = text
            .find(&key)
            .ok_or_else(|| format!("find {name} {version} in cargo metadata"))?;
        let rest = &text[at..];
        let path = rest
            .split("\"manifest_path\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .ok_or_else(|| format!("find {name}'s manifest path"))?;
        let dir = Path::new(path)
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        found.push(((name.to_string(), version.to_string()), dir));
    }
    Ok(found)
}

/// Copies a case's packages into a workspace of its own (fresh each time: tests may write files).
fn prepare(work: &Path, case: &Case, sources: &Sources) -> Result<PathBuf, String> {
    let dir = work.join("cases").join(case.name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let source = |name: &str, version: &str| {
        sources
            .iter()
            .find(|((n, v), _)| n == name && v == version)
            .map(|(_, d)| d.clone())
            .ok_or_else(|| format!("find the source of {name} {version}"))
    };
    let copy = |from: &Path, to: &Path| {
        let status = Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .map_err(|e| e.to_string())?;
        status
            .success()
            .then_some(())
            .ok_or_else(|| format!("copy {}", from.display()))
    };
    if let [(name, version)] = case.packages {
        let pkg = dir.join("pkg");
        copy(&source(name, version)?, &pkg)?;
        // A workspace of its own, so that it is not taken for a member of ours.
        append(&pkg.join("Cargo.toml"), "\n[workspace]\n")?;
        return Ok(pkg);
    }
    let mut members = Vec::new();
    for (name, version) in case.packages {
        copy(&source(name, version)?, &dir.join(name))?;
        members.push(format!("\"{name}\""));
    }
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[workspace]\nmembers = [{}]\nresolver = \"2\"\n",
            members.join(", ")
        ),
    )
    .map_err(|e| e.to_string())?;
    Ok(dir)
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    let mut content = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    content.push_str(text);
    std::fs::write(path, content).map_err(|e| e.to_string())
}

fn run_case(work: &Path, dir: &Path, bin: &Path, case: &'static Case) -> Result<Row, String> {
    let target = work.join("target");
    let command = |program: &Path, runner: bool| {
        let mut c = Command::new(program);
        if !runner {
            c.arg("test");
        }
        c.current_dir(dir)
            .env("CARGO_TARGET_DIR", &target)
            .env("RUST_BACKTRACE", "0")
            .env("CI", "true")
            .stdin(Stdio::null());
        c
    };
    let cargo = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let (flags, after): (Vec<&str>, Vec<&str>) = match case.args.iter().position(|a| *a == "--") {
        Some(i) => (case.args[..i].to_vec(), case.args[i..].to_vec()),
        None => (case.args.to_vec(), Vec::new()),
    };
    // Build first, so that both sides are timed on running tests, not on compiling.
    crate::step(
        &format!("build the {} case", case.name),
        command(&cargo, false).args(["--no-run"]).args(&flags),
    )?;
    let timed = |mut c: Command, sum: bool| -> Result<(Counts, f64), String> {
        let started = Instant::now();
        let out = c
            .arg("--no-fail-fast")
            .args(&flags)
            .args(&after)
            .output()
            .map_err(|e| e.to_string())?;
        Ok((counts(&out, sum), started.elapsed().as_secs_f64()))
    };
    // Alternating rounds, the median time of each side: one run is at the mercy of the machine.
    let mut samples: Vec<Vec<(Counts, f64)>> = vec![Vec::new(); if case.isolate { 3 } else { 2 }];
    for round in 0..ROUNDS {
        eprintln!("conformance: {}: round {}/{ROUNDS}", case.name, round + 1);
        samples[0].push(timed(command(&cargo, false), true)?);
        samples[1].push(timed(command(bin, true), false)?);
        if case.isolate {
            let mut c = command(bin, true);
            c.arg("--isolate");
            samples[2].push(timed(c, false)?);
        }
    }
    let median = |side: &Vec<(Counts, f64)>| -> Result<(Counts, f64), String> {
        // Counts must not change from run to run either: a flaky count is a mismatch.
        let first = side[0].0;
        if side.iter().any(|(c, _)| *c != first) {
            let all: Vec<String> = side.iter().map(|(c, _)| c.show()).collect();
            return Err(format!(
                "get stable counts for {}: {}",
                case.name,
                all.join(" / ")
            ));
        }
        let mut times: Vec<f64> = side.iter().map(|(_, t)| *t).collect();
        times.sort_by(|a, b| a.total_cmp(b));
        Ok((first, times[times.len() / 2]))
    };
    let cargo_side = median(&samples[0])?;
    let shared = median(&samples[1])?;
    let isolated = samples.get(2).map(median).transpose()?;
    Ok(Row {
        case,
        cargo: cargo_side,
        shared,
        isolated,
    })
}

/// cargo test's counts are the sum of its `test result:` lines; ours are its last line.
fn counts(out: &Output, sum: bool) -> Counts {
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Counts> = text.lines().filter_map(parse_result).collect();
    let mut total = Counts {
        exit: out.status.code(),
        ..Counts::default()
    };
    let chosen: Vec<Counts> = if sum {
        lines
    } else {
        lines.last().copied().into_iter().collect()
    };
    for c in chosen {
        total.passed += c.passed;
        total.failed += c.failed;
        total.ignored += c.ignored;
        total.measured += c.measured;
        total.filtered_out += c.filtered_out;
    }
    total
}

fn parse_result(line: &str) -> Option<Counts> {
    let (_, counts) = line.strip_prefix("test result: ")?.split_once(". ")?;
    let mut c = Counts::default();
    for part in counts.split("; ") {
        let Some((n, what)) = part.split_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse() else { continue };
        match what {
            "passed" => c.passed = n,
            "failed" => c.failed = n,
            "ignored" => c.ignored = n,
            "measured" => c.measured = n,
            "filtered out" => c.filtered_out = n,
            _ => {}
        }
    }
    Some(c)
}

fn render(rows: &[Row], ci: bool) -> String {
    let mut s = String::from("# Conformance\n\n");
    s.push_str(
        "`cargo xtask conformance`: pinned crates.io packages tested with `cargo test` and with \
         `cargo cleantest` (shared mode, and `--isolate`), all with `--no-fail-fast` and \
         `RUST_BACKTRACE=0`, after one build. Counts are passed/failed/ignored/measured/filtered \
         out and the exit code: cargo test's summed over its `test result:` lines, ours from the \
         total line. Times are wall-clock medians of 3 alternating runs, on the machine that wrote this file.\n\n",
    );
    if ci {
        s.push_str(
            "(The CI subset, on the debug build: the counts are the point, not the times.)\n\n",
        );
    }
    s.push_str(
        "| case | covers | flags | cargo test | shared | ratio | `--isolate` | ratio | equal |\n",
    );
    s.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for r in rows {
        let ratio = |t: f64| format!("{:.2}x", t / r.cargo.1.max(1e-9));
        let side = |(c, t): (Counts, f64)| format!("{} ({t:.2}s)", c.show());
        let equal = r.shared.0 == r.cargo.0 && r.isolated.is_none_or(|i| i.0 == r.cargo.0);
        let _ = writeln!(
            s,
            "| {} | {} | `{}` | {} | {} | {} | {} | {} | {} |",
            r.case.name,
            r.case.covers,
            r.case.args.join(" "),
            side(r.cargo),
            side(r.shared),
            ratio(r.shared.1),
            r.isolated.map_or("—".into(), side),
            r.isolated.map_or("—".into(), |i| ratio(i.1)),
            if equal { "yes" } else { "**no**" }
        );
    }
    let versions: Vec<String> = rows
        .iter()
        .flat_map(|r| r.case.packages)
        .map(|(n, v)| format!("{n} {v}"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let _ = writeln!(s, "\nPackages: {}.", versions.join(", "));
    s
}
