//! The test run, start to end: build → list → plan → schedule units → report. Data flows one way
//! through these modules, each handing the next its output:
//!
//! - `cargo` builds with cargo and describes the test binaries; `cargo_env` rebuilds the environment
//!   cargo test gives them;
//! - `list` asks each binary for its tests; `plan` turns listings into a queue of units;
//! - `schedule` runs the queue; `unit` follows one process from spawn to results, with `tracker`
//!   reading libtest's output;
//! - `report` shows results live and at the end, and writes JUnit.
//!
//! The session's cleanup guard is taken first, so every way out of here (return, error, panic) ends the
//! session's processes. Nothing below `run` imports it.

mod amend;
mod cargo;
mod cargo_env;
mod databases;
mod fail_fast;
mod harness;
mod leak_check;
mod leftovers;
mod list;
mod list_mode;
mod partition;
mod plan;
mod report;
mod retry;
mod schedule;
mod target_runner;
mod tracker;
#[cfg(test)]
mod tracker_props;
mod unit;

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

pub(crate) use cargo_env::cargo_program;

use crate::cli::{RunArgs, TestArgs, human_bytes, near_subcommand};
use crate::config::Settings;
use crate::contract::{EXIT_LEFTOVERS, EXIT_OK, EXIT_TEST_FAILED, SERVICE_LOGS_DIR};
use crate::errors::Error;
use crate::services::Started;
use crate::session::state;
use crate::session::{CleanupGuard, Session, docker_lines, signals, start};
use cargo::{Built, TestBinary, Workspace};
use report::Reporter;
use schedule::Scheduler;
use unit::CommandContext;

/// The flags of this run that a rerun of its failures needs too: what decides the build (features,
/// profile, target, manifest) and how tests run (`-P`, `--isolate`), quoted for a shell.
fn rerun_flags(args: &RunArgs, isolate: bool) -> Vec<String> {
    let mut out = Vec::new();
    args.features.push_flags(&mut out);
    if args.compilation.release {
        out.push("--release".into());
    }
    if let Some(profile) = &args.compilation.profile {
        out.extend(["--profile".into(), profile.clone()]);
    }
    for target in &args.compilation.target {
        out.extend(["--target".into(), target.clone()]);
    }
    if let Some(path) = &args.manifest.manifest_path {
        out.extend(["--manifest-path".into(), path.display().to_string()]);
    }
    if let Some(profile) = &args.runner.profile.config_profile {
        out.extend(["-P".into(), profile.clone()]);
    }
    if isolate {
        out.push("--isolate".into());
    }
    out.iter().map(|w| report::quote(w)).collect()
}

/// The binary a printed name `BINARY-ID::NAME` names, and `NAME`: the longest id that prefixes it.
fn qualified<'a>(
    name: &'a str,
    binaries: &[Arc<TestBinary>],
) -> Option<(Arc<TestBinary>, &'a str)> {
    binaries
        .iter()
        .filter_map(|b| {
            let rest = name.strip_prefix(b.id.as_str())?.strip_prefix("::")?;
            (!rest.is_empty()).then(|| (b.clone(), rest))
        })
        .max_by_key(|(b, _)| b.id.len())
}

/// Runs the tests and returns the process exit code.
pub(crate) fn run(args: RunArgs) -> Result<i32, Error> {
    let started = Instant::now();
    let test_args = TestArgs::parse(args.testname.as_deref(), &args.test_args)
        .map_err(|e| Error::TestArgs(e.0))?;
    if args.targets.doc && args.targets.selects_targets() {
        return Err(Error::DocMixed);
    }
    let session = Session::new();
    let _cleanup = CleanupGuard(session.clone());
    let events = mpsc::channel();
    signals::install(session.clone(), events.0.clone())?;

    // The config is read and checked before cargo builds anything: a typo in it, or an unknown `-P`,
    // must not cost a build first. `cargo metadata --no-deps` is quick, and it finds the config.
    let workspace = Workspace::load(&args)?;
    let settings = Settings::load(&workspace.root, &args.runner, &args.session.guard)?;
    // Starting the session (record, reaper, engine, stale sweep, proxy, lock) needs no build: it happens
    // while cargo builds, off start-up's critical path.
    let runs_tests = !args.no_run && !test_args.list;
    let (prepared, built) = std::thread::scope(|scope| {
        let prepare = scope.spawn(|| -> Result<_, Error> {
            let runners =
                target_runner::Runners::load(&args.compilation.target, &args.cargo_config);
            let lock = if runs_tests {
                let profile = start::Profile {
                    lock: settings.lock.as_deref(),
                    proxy: settings.proxy,
                    engine_reaper: settings.engine_reaper,
                    guard: &settings.guard,
                    proxy_policy: &settings.proxy_policy,
                };
                let lock = start::start(&session, &args.session, profile, &workspace.root)?;
                let services = if args.session.no_services {
                    Started::default()
                } else {
                    crate::services::start_or_keep(
                        &session,
                        &settings.services,
                        args.session.keep_on_failure,
                    )?
                };
                (lock, services)
            } else {
                (None, Started::default())
            };
            Ok((runners, lock))
        });
        let built = if args.targets.doc {
            Ok(Built::default())
        } else {
            cargo::build(&args, &session)
        };
        (
            prepare
                .join()
                .expect("the preparation thread does not panic"),
            built,
        )
    });
    // A signal during the build ends cargo too: the signal decides the exit code, not the failed build.
    if let Some(signal) = session.interrupted_by() {
        return Ok(signals::exit_code(signal));
    }
    let built = built?;
    let (runners, (_env_lock, started_services)) = prepared?;
    let services = started_services.monitor.clone();
    let binaries = workspace.test_binaries(built, &runners);
    if args.no_run {
        return Ok(EXIT_OK);
    }
    let binaries: Vec<Arc<TestBinary>> = binaries.into_iter().map(Arc::new).collect();
    // Doctests run when cargo test would run them: `--doc`, or the default selection of a workspace with
    // a library and no positional TESTNAME (cargo skips doctests for `cargo test NAME`).
    let doctests = args.targets.doc
        || (!args.targets.selects_targets()
            && args.testname.is_none()
            && binaries.iter().any(|b| b.is_lib));
    // Not cargo's `--quiet`: cargo passes it on to the doctests as libtest's `-q`, whose dots carry no
    // test names to count. The runner's own output is quiet already.
    let mut doc_cargo_args: Vec<String> = args
        .cargo_common_flags()
        .into_iter()
        .filter(|a| a != "--quiet")
        .collect();
    if args.no_fail_fast {
        doc_cargo_args.push("--no-fail-fast".into());
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if test_args.list {
        let listing = list_mode::ListMode {
            binaries: &binaries,
            test_args: &test_args,
            session: &session,
            settings: &settings,
            doctests,
            doc_cargo_args: &doc_cargo_args,
        };
        return match args.runner.ci.partition {
            Some(partition) => listing.shard(partition, cpus),
            None => listing.all(),
        };
    }

    let threads = test_args
        .test_threads
        .or(settings.test_threads)
        .or_else(|| {
            std::env::var("RUST_TEST_THREADS")
                .ok()?
                .parse()
                .ok()
                .filter(|n| *n > 0)
        })
        .unwrap_or(cpus);
    let slots = if settings.isolate {
        threads
    } else {
        args.compilation.jobs_count().unwrap_or(cpus)
    };
    let listings = list::list_all(
        &binaries,
        &test_args,
        |b| plan::unit_kind(b.harness, settings.isolate),
        &session,
        cpus,
        settings.list_timeout,
    );
    let partition = args.runner.ci.partition;
    let every_binary = binaries.clone();
    let mut plan = plan::plan(
        binaries,
        listings,
        settings.isolate,
        threads,
        doctests,
        partition,
    );
    // `cargo cleantest ct-demo::users::adds`, a name as the runner prints it: when it matches nothing
    // as cargo test reads it, its binary id picks the binary and the rest is the filter. Only then,
    // so that a name that does match keeps cargo test's meaning and counts.
    let mut test_args = test_args;
    if plan.total == 0
        && let Some((binary, rest)) = args
            .testname
            .as_deref()
            .and_then(|name| qualified(name, &every_binary))
    {
        let mut narrowed_args = test_args.clone();
        narrowed_args.filters[0] = rest.to_string();
        if let Some(raw) = narrowed_args.raw.first_mut() {
            *raw = rest.to_string();
        }
        let chosen = vec![binary.clone()];
        let listings = list::list_all(
            &chosen,
            &narrowed_args,
            |b| plan::unit_kind(b.harness, settings.isolate),
            &session,
            cpus,
            settings.list_timeout,
        );
        let mut narrowed = plan::plan(
            chosen,
            listings,
            settings.isolate,
            threads,
            false,
            partition,
        );
        if narrowed.total > 0 {
            eprintln!(
                "note: `{}` names a test of {}: running its tests matching `{rest}`",
                args.testname.as_deref().unwrap_or_default(),
                binary.id
            );
            // What cargo test would count as filtered out: every test of the run but these.
            narrowed.filtered_out = plan.filtered_out.saturating_sub(narrowed.total);
            plan = narrowed;
            test_args = narrowed_args;
        }
    }
    if let Some(line) = &plan.partition_line {
        eprintln!("{line}");
        if plan.queue.is_empty() {
            eprintln!("note: nothing to run in this shard");
        }
    }
    let partition_line = plan.partition_line.clone();
    if let Some(name) = args.testname.as_deref().filter(|_| plan.total == 0) {
        match near_subcommand(name) {
            Some(sub) => eprintln!(
                "warning: no test matches `{name}`; did you mean `cargo cleantest {sub}`?"
            ),
            None => eprintln!(
                "warning: no test matches `{name}`; a filter is part of a test's name \
                 (`tests::adds`), or its name as printed, BINARY-ID::NAME (`{}::tests::adds`)",
                every_binary.first().map_or("my-crate", |b| b.id.as_str())
            ),
        }
    }
    let fail_fast = !args.no_fail_fast && args.runner.ci.max_fail.is_none();
    let doc_prefixes = workspace.doc_prefixes();
    let orders = plan
        .queue
        .iter()
        .map(|s| (s.binary_id.clone(), s.order))
        .collect();
    // Units whose tests the plan's total could not know: the doctests, and binaries run whole that
    // were not listed.
    let apart = plan
        .queue
        .iter()
        .filter(|s| s.kind == unit::UnitKind::Whole && s.tests.is_empty())
        .map(|s| s.binary_id.clone())
        .collect();
    let reporter = Reporter::new(
        args.quiet || test_args.quiet,
        test_args.nocapture,
        test_args.show_output,
        plan.total,
    )
    .with_order(orders, fail_fast, apart);
    let scheduler = Scheduler {
        settings: &settings,
        ctx: CommandContext {
            args: &test_args,
            session: &session,
            doc_cargo_args: &doc_cargo_args,
            doc_prefixes: &doc_prefixes,
            databases: &started_services.databases,
            keep_on_failure: args.session.keep_on_failure,
        },
        reporter,
        slots: slots.max(1),
        // `--max-fail N` replaces cargo test's fail-fast; `--no-fail-fast` is no limit at all.
        fail_fast,
        events,
        leaks: Default::default(),
        services: services.clone(),
        retries: Default::default(),
        max_fail: fail_fast::MaxFail::new(args.runner.ci.max_fail),
        origins: Default::default(),
    };
    let (mut summary, reporter, origins) = scheduler.run(plan, started);
    let tests_failed =
        !summary.problems.is_empty() || summary.results.iter().any(|r| r.outcome.is_failure());
    let keep = args.session.keep_on_failure && tests_failed;
    // Asked before the session ends: its sweep stops the services, which is no news.
    summary.service_deaths = services.deaths();
    if tests_failed || !summary.service_deaths.is_empty() {
        summary.service_logs = state::state_dir()
            .ok()
            .and_then(|dir| services.save_logs(&dir.join(SERVICE_LOGS_DIR).join(session.id())));
    }
    let mut end = session.finish(keep).unwrap_or_default();
    summary.kept = keep;
    summary.partition = partition_line;
    summary.peak = end.peak.filter(|p| p.containers > 0).map(|p| match p.memory {
        // Containers that lived between two samples of the engine's stats show no memory: that is
        // "not measured", not "none used".
        0 => format!(
            "session peak: {} container(s) at once; memory not sampled (they ran between samples of the engine's stats)",
            p.containers
        ),
        memory => format!(
            "session peak: {} container(s) at once, {} of memory in use (sampled from the engine's stats)",
            p.containers,
            human_bytes(memory)
        ),
    });
    let left_something = end.docker.as_ref().is_some_and(|e| e.left_something());
    // Found by the session's end: named by the unit each came from, and failing the run under
    // `--leak fail` like any other leftover.
    leftovers::report_escaped(
        &reporter,
        &mut summary,
        settings.leak_fails,
        &origins,
        std::mem::take(&mut end.escaped),
    );
    summary.docker_lines = std::mem::take(&mut end.stale);
    summary.docker_lines.extend(
        end.docker
            .map(|e| docker_lines(&e, session.id()))
            .unwrap_or_default(),
    );
    let junit_result = args
        .runner
        .junit
        .as_deref()
        .map(|path| report::write_junit(path, &summary));
    if let Some(Err(e)) = &junit_result {
        reporter.warn(&format!("failed to {e}"));
    }
    summary.rerun = report::rerun_hint(&summary, &rerun_flags(&args, settings.isolate));
    let interrupted = session.interrupted_by();
    reporter.finish(&summary, interrupted.map(|s| s.as_str()));
    Ok(match interrupted {
        Some(signal) => signals::exit_code(signal),
        None if left_something => EXIT_LEFTOVERS,
        None if summary.failed() => EXIT_TEST_FAILED,
        None => EXIT_OK,
    })
}
