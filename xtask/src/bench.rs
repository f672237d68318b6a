//! `cargo xtask bench [--smoke] [--runs N] [--only isolation]`: cargo-cleantest measured against cargo
//! test, cargo-nextest and the docker CLI, side by side, alternating runs, medians with min–max. Writes
//! `BENCHMARKS.md` (`--smoke`: tiny sizes, one run, nothing asserted, written under target/bench/
//! instead; `--only isolation`: the per-test database rows alone, in target/bench/ISOLATION.md).

mod analysis;
mod archive;
mod engine_rows;
mod interrupt;
mod isolation;
mod services;
mod weighted;

use analysis::ANALYSIS;
use engine_rows::{proxy, sh, sweep};
use interrupt::{Stop, interrupt_or_crash};

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Opts {
    smoke: bool,
    runs: usize,
    root: PathBuf,
}

/// Samples of one side.
#[derive(Default, Clone)]
struct Samples(Vec<f64>);

impl Samples {
    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            f64::NAN
        } else {
            v[v.len() / 2]
        }
    }
    fn show(&self, unit: &str) -> String {
        let min = self.0.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{:.3}{unit} ({:.3}–{:.3})", self.median(), min, max)
    }
}

/// One comparison row of the report.
struct Row {
    what: String,
    ours: String,
    theirs: String,
    ratio: f64,
    target: String,
    met: Option<bool>,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let smoke = args.iter().any(|a| a == "--smoke");
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if smoke { 1 } else { 5 });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .map_err(|e| e.to_string())?;
    let opts = Opts { smoke, runs, root };
    let bin = build_runner(&opts)?;
    if args
        .windows(2)
        .any(|w| w[0] == "--only" && w[1] == "isolation")
    {
        let rows = isolation::rows(&opts, &bin)?;
        let out = crate::target_dir(&opts.root).join("bench/ISOLATION.md");
        let report = render(&opts, &rows);
        std::fs::write(&out, &report).map_err(|e| e.to_string())?;
        println!("{report}");
        return Ok(());
    }
    let mut rows = Vec::new();
    let (tests, binaries) = if smoke { (20, 2) } else { (1000, 10) };
    let ws = generate_workspace(&opts, "trivial", binaries, tests / binaries, &|_| {
        String::new()
    })?;
    rows.extend(per_test_overhead(&opts, &bin, &ws)?);
    rows.extend(archive::rows(&opts, &bin, &ws)?);
    let empty = generate_workspace(&opts, "empty", 0, 0, &|_| String::new())?;
    rows.extend(startup(&opts, &bin, &empty)?);
    rows.push(no_engine(&opts, &bin, &empty)?);
    rows.extend(weighted::rows(&opts, &bin)?);
    if docker_available() {
        crate::build_image(false)?;
        rows.push(sweep(&opts, &bin)?);
        rows.push(proxy(&opts, &bin)?);
        rows.push(interrupt_or_crash(&opts, &bin, Stop::Interrupt)?);
        rows.push(interrupt_or_crash(&opts, &bin, Stop::Crash)?);
        if pid_namespaces_available() {
            rows.push(interrupt_or_crash(&opts, &bin, Stop::Namespace)?);
        } else {
            eprintln!(
                "bench: unshare --pid is not available here: the PID namespace kill is not measured"
            );
        }
        rows.extend(services::rows(&opts, &bin)?);
        rows.extend(isolation::rows(&opts, &bin)?);
    } else {
        eprintln!(
            "bench: no Docker engine answers: sweep, proxy, interrupt and crash are not measured"
        );
    }
    let report = render(&opts, &rows);
    let out = if smoke {
        crate::target_dir(&opts.root).join("bench/SMOKE.md")
    } else {
        opts.root.join("BENCHMARKS.md")
    };
    std::fs::create_dir_all(out.parent().unwrap()).map_err(|e| e.to_string())?;
    std::fs::write(&out, &report).map_err(|e| e.to_string())?;
    println!("{report}");
    eprintln!("bench: wrote {}", out.display());
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The directory holding the runner measured: the release build, or for `--smoke` the debug build that
/// the test suite has just made (the smoke run checks the harness, not the numbers).
fn build_runner(opts: &Opts) -> Result<PathBuf, String> {
    let profile = if opts.smoke { "dev" } else { "release" };
    let status = cargo()
        .args([
            "build",
            "--quiet",
            "--profile",
            profile,
            "--package",
            "cargo-cleantest",
        ])
        .current_dir(&opts.root)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("build cargo-cleantest ({profile} profile)"));
    }
    Ok(crate::target_dir(&opts.root).join(if opts.smoke { "debug" } else { "release" }))
}

/// A workspace of `binaries` integration-test binaries with `per_binary` tests each; `body(t)` is the
/// body of test number `t` of a binary. Built once, before anything is timed.
fn generate_workspace(
    opts: &Opts,
    name: &str,
    binaries: usize,
    per_binary: usize,
    body: &dyn Fn(usize) -> String,
) -> Result<PathBuf, String> {
    let dir = crate::target_dir(&opts.root).join("bench").join(name);
    let _ = std::fs::remove_dir_all(dir.join("tests"));
    std::fs::create_dir_all(dir.join("tests")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir.join("src")).map_err(|e| e.to_string())?;
    let manifest = format!(
        "[package]\nname = \"bench-{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n"
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("src/lib.rs"), "").map_err(|e| e.to_string())?;
    for b in 0..binaries {
        let mut text = String::new();
        for t in 0..per_binary {
            let _ = writeln!(text, "#[test]\nfn t{t:03}() {{ {} }}", body(t));
        }
        std::fs::write(dir.join(format!("tests/b{b:02}.rs")), text).map_err(|e| e.to_string())?;
    }
    build_workspace(&dir, name)?;
    Ok(dir)
}

/// Builds a generated workspace's tests into its own target directory, before anything is timed.
fn build_workspace(dir: &Path, name: &str) -> Result<(), String> {
    let status = cargo()
        .args(["test", "--no-run", "--quiet"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("build the {name} bench workspace"));
    }
    Ok(())
}

/// `cargo ARGS` in `ws` with our release binary first on PATH, as `cargo cleantest` runs for users.
fn in_ws(bin: &Path, ws: &Path, args: &[&str]) -> Command {
    configure(cargo(), bin, ws, args)
}

/// `in_ws`, as PID 1 of a PID namespace of its own (`unshare --fork --pid`): cargo is the namespace's
/// init, so killing it kills every process of the run, the host reaper included.
fn in_pid_namespace(bin: &Path, ws: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--fork", "--pid", "--mount-proc"])
        .arg(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    configure(c, bin, ws, args)
}

fn pid_namespaces_available() -> bool {
    Command::new("unshare")
        .args(["--fork", "--pid", "--mount-proc", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn configure(mut c: Command, bin: &Path, ws: &Path, args: &[&str]) -> Command {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    c.args(args)
        .current_dir(ws)
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", ws.join("target"))
        .env("CLEANTEST_STATE_DIR", ws.join("state"))
        .env("CI", "true")
        .stdout(Stdio::null())
        // Kept in a file beside the workspace, so that a failing command says why (`timed`).
        .stderr(
            std::fs::File::create(ws.join("last-stderr.txt"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        );
    c
}

fn nextest_available() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the command, returning wall seconds and the peak RSS (KiB) of the subcommand it runs: cargo
/// execs `cargo-cleantest` or `cargo-nextest` in place (after the rustup proxy has exec'd cargo), and
/// the peak resets at each exec, so only samples taken once the process is a `cargo-*` binary count —
/// cargo's own start-up (about 15 MiB) is left out on both sides. A command that fails is an error:
/// its time would measure nothing.
fn timed(command: &mut Command) -> Result<(f64, u64), String> {
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| e.to_string())?;
    let (exe_path, status_path) = (
        format!("/proc/{}/exe", child.id()),
        format!("/proc/{}/status", child.id()),
    );
    let mut peak = 0;
    loop {
        let is_subcommand = std::fs::read_link(&exe_path).is_ok_and(|exe| {
            exe.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("cargo-"))
        });
        if is_subcommand {
            let text = std::fs::read_to_string(&status_path).unwrap_or_default();
            if let Some(kb) = text.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                peak = peak.max(kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0));
            }
        }
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            if !status.success() {
                let why = command
                    .get_current_dir()
                    .and_then(|ws| std::fs::read_to_string(ws.join("last-stderr.txt")).ok())
                    .unwrap_or_default();
                let tail: Vec<&str> = why.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "run {command:?} ({status}); its stderr ends:\n{}",
                    tail.join("\n")
                ));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok((started.elapsed().as_secs_f64(), peak))
}

fn row(
    what: &str,
    ours: &Samples,
    theirs: &Samples,
    unit: &str,
    target: f64,
    lower_is_better: bool,
) -> Row {
    let ratio = ours.median() / theirs.median();
    Row {
        what: what.into(),
        ours: ours.show(unit),
        theirs: theirs.show(unit),
        ratio,
        target: format!("≤ {target}x"),
        met: Some(if lower_is_better {
            ratio <= target
        } else {
            ratio >= target
        }),
    }
}

fn per_test_overhead(opts: &Opts, bin: &Path, ws: &Path) -> Result<Vec<Row>, String> {
    let with_nextest = nextest_available();
    if !with_nextest && !opts.smoke {
        return Err(
            "find cargo-nextest, the other side of the `--isolate` measurement (cargo install cargo-nextest)"
                .into(),
        );
    }
    let (mut ours, mut cargo_test, mut iso, mut nextest) = Default::default();
    let (mut iso_rss, mut nextest_rss) = (Samples::default(), Samples::default());
    for _ in 0..opts.runs {
        push(
            &mut cargo_test,
            timed(&mut in_ws(bin, ws, &["test", "--quiet"]))?.0,
        );
        push(
            &mut ours,
            timed(&mut in_ws(bin, ws, &["cleantest", "--quiet", "--no-lock"]))?.0,
        );
        if with_nextest {
            let (t, rss) = timed(&mut in_ws(bin, ws, &["nextest", "run", "--no-fail-fast"]))?;
            push(&mut nextest, t);
            nextest_rss.0.push(rss as f64 / 1024.0);
        }
        let (t, rss) = timed(&mut in_ws(
            bin,
            ws,
            &["cleantest", "--quiet", "--no-lock", "--isolate", "--tests"],
        ))?;
        push(&mut iso, t);
        iso_rss.0.push(rss as f64 / 1024.0);
    }
    let shared = row(
        "shared mode vs `cargo test` (wall)",
        &ours,
        &cargo_test,
        "s",
        1.2,
        true,
    );
    if !with_nextest {
        eprintln!("bench: cargo-nextest is not installed: `--isolate` is run but not compared");
        return Ok(vec![shared]);
    }
    Ok(vec![
        shared,
        row(
            "`--isolate` vs `cargo nextest run` (wall)",
            &iso,
            &nextest,
            "s",
            0.6,
            true,
        ),
        row(
            "peak RSS of the runner: `--isolate` vs nextest",
            &iso_rss,
            &nextest_rss,
            " MiB",
            1.0,
            true,
        ),
    ])
}

fn push(samples: &mut Samples, value: f64) {
    samples.0.push(value);
}

fn startup(opts: &Opts, bin: &Path, ws: &Path) -> Result<Vec<Row>, String> {
    let (mut ours, mut theirs) = (Samples::default(), Samples::default());
    let (mut ours_tests, mut theirs_tests) = (Samples::default(), Samples::default());
    for _ in 0..opts.runs {
        push(
            &mut theirs,
            timed(&mut in_ws(bin, ws, &["test", "--quiet"]))?.0,
        );
        push(
            &mut ours,
            timed(&mut in_ws(bin, ws, &["cleantest", "--quiet", "--no-lock"]))?.0,
        );
        push(
            &mut theirs_tests,
            timed(&mut in_ws(bin, ws, &["test", "--quiet", "--tests"]))?.0,
        );
        push(
            &mut ours_tests,
            timed(&mut in_ws(
                bin,
                ws,
                &["cleantest", "--quiet", "--no-lock", "--tests"],
            ))?
            .0,
        );
    }
    let mut with_doctests = row(
        "start-up on a workspace with zero tests vs `cargo test`",
        &ours,
        &theirs,
        "s",
        0.0,
        true,
    );
    with_doctests.target = "(no target; measured)".into();
    with_doctests.met = None;
    Ok(vec![
        with_doctests,
        row(
            "start-up on a workspace with zero tests, no doctests (`--tests`) vs `cargo test --tests`",
            &ours_tests,
            &theirs_tests,
            "s",
            1.5,
            true,
        ),
    ])
}

/// The same zero-test workspace with no engine at all (`DOCKER_HOST` names a socket that is not
/// there): what a developer without Docker pays on every run.
fn no_engine(opts: &Opts, bin: &Path, ws: &Path) -> Result<Row, String> {
    let (mut ours, mut theirs) = (Samples::default(), Samples::default());
    let nowhere = "unix:///nonexistent/cleantest-bench/docker.sock";
    for _ in 0..opts.runs {
        let mut cargo_test = in_ws(bin, ws, &["test", "--quiet"]);
        push(
            &mut theirs,
            timed(cargo_test.env("DOCKER_HOST", nowhere))?.0,
        );
        let mut ours_run = in_ws(bin, ws, &["cleantest", "--quiet", "--no-lock"]);
        push(&mut ours, timed(ours_run.env("DOCKER_HOST", nowhere))?.0);
    }
    Ok(row(
        "no Docker engine, a workspace with zero tests vs `cargo test`",
        &ours,
        &theirs,
        "s",
        2.0,
        true,
    ))
}

fn docker_available() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn render(opts: &Opts, rows: &[Row]) -> String {
    let machine =
        sh("echo \"$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r)\"")
            .unwrap_or_default();
    let engine = sh("docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})'")
        .unwrap_or_else(|_| "none".into());
    let date = sh("date -u +%Y-%m-%d").unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Rerun with `cargo xtask bench` (`--runs N`, default 5). Date: {date}. Machine: {machine}; Docker engine {engine}."
    );
    let _ = writeln!(
        out,
        "Method: the {} build of cargo-cleantest, run as `cargo cleantest` (first on PATH), each side {} time(s), sides alternating; medians with min–max in parentheses; wall time of the whole command unless said otherwise. Peak RSS is the VmHWM of the runner itself (`cargo-cleantest`, `cargo-nextest`), sampled every 2 ms once cargo has exec'd it in place; cargo's own start-up is not counted on either side.\n",
        if opts.smoke { "debug" } else { "release" },
        opts.runs
    );
    let _ = writeln!(
        out,
        "| measurement | cargo-cleantest | the other side | ratio | target | met |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
    for r in rows {
        let ratio = if r.ratio.is_nan() {
            "—".into()
        } else {
            format!("{:.2}x", r.ratio)
        };
        let met = match r.met {
            // Tiny sizes and a debug build: the harness is checked, not the numbers.
            _ if opts.smoke => "(smoke)",
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.what, r.ours, r.theirs, ratio, r.target, met
        );
    }
    if !opts.smoke {
        out.push_str(ANALYSIS);
    }
    out
}
