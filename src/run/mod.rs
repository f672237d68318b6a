//! The test run, start to end: build → list → plan → schedule units → report. Data flows one way
//! through these modules, each handing the next its output:
//!
//! - `cargo` builds with cargo and describes the test binaries; `cargo_env` rebuilds the environment
//!   cargo test gives them; `archive` packs them for other machines, and describes them again there
//!   instead of a build (`--archive-file`);
//! - `list` asks each binary for its tests; `plan` turns listings into a queue of units;
//! - `schedule` runs the queue; `unit` follows one process from spawn to results, with `tracker`
//!   reading libtest's output;
//! - `report` shows results live and at the end, and writes JUnit.
//!
//! The session's cleanup guard is taken first, so every way out of here (return, error, panic) ends the
//! session's processes. Nothing below `run` imports it.

mod amend;
mod archive;
mod cargo;
mod cargo_env;
mod conclude;
mod databases;
mod durations;
mod fail_fast;
mod harness;
mod leak_check;
mod leftovers;
mod list;
mod list_mode;
mod metadata_cache;
mod outcome;
mod partition;
mod plan;
mod prepare;
mod report;
mod retry;
mod schedule;
mod select;
mod stable_hash;
mod target_runner;
mod temp_pool;
#[cfg(test)]
mod test_dir;
mod tracker;
#[cfg(test)]
mod tracker_props;
mod unit;
mod workspace_root;

use std::sync::{Arc, mpsc};
use std::time::Instant;

pub(crate) use archive::archive;
pub(crate) use cargo_env::cargo_program;

use crate::cli::{RunArgs, TestArgs};
use crate::errors::Error;
use crate::session::process::Event;
use crate::session::{CleanupGuard, Session, signals};
use conclude::Scheduled;
use prepare::{Prepare, Prepared};
use report::Reporter;
use schedule::Scheduler;
use select::Selection;
use unit::CommandContext;

/// Runs the tests and returns the process exit code: prepare (config, then build beside the session
/// and its services), list and plan, schedule, conclude (end the session, report); the exit code is a
/// function of the outcome (`Outcome::exit_code`).
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
    // Read before anything builds: a missing or unreadable report must not cost a build first.
    let durations = durations::for_partition(&args.runner.ci)?;
    let sharding = args
        .runner
        .ci
        .partition
        .map(|partition| partition::Sharding {
            partition,
            durations: durations.as_ref(),
        });
    let prepared = match prepare::prepare(&args, &test_args, &session)? {
        Prepare::Ready(prepared) => prepared,
        Prepare::Done(code) => return Ok(code),
    };
    if test_args.list {
        return list_tests(&test_args, &prepared, &session, sharding);
    }
    let selection = select::select(&args, test_args, &prepared, &session, sharding);
    let partition_line = selection.plan.partition_line.clone();
    let scheduled = schedule(&args, &prepared, &session, selection, events, started);
    Ok(conclude::conclude(&args, &prepared, &session, scheduled, partition_line).exit_code())
}

/// `--list`: the tests each binary (and the doctests) would run, or a shard's.
fn list_tests(
    test_args: &TestArgs,
    prepared: &Prepared,
    session: &Arc<Session>,
    sharding: Option<partition::Sharding<'_>>,
) -> Result<i32, Error> {
    let listing = list_mode::ListMode {
        binaries: &prepared.binaries,
        test_args,
        session,
        settings: &prepared.settings,
        doctests: prepared.doctests,
        doc_cargo_args: &prepared.doc_cargo_args,
    };
    match sharding {
        Some(sharding) => listing.shard(
            sharding,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        ),
        None => listing.all(),
    }
}

/// Runs the plan's units, `slots` at a time, and follows them to their results.
fn schedule(
    args: &RunArgs,
    prepared: &Prepared,
    session: &Session,
    selection: Selection,
    events: (mpsc::Sender<Event>, mpsc::Receiver<Event>),
    started: Instant,
) -> Scheduled {
    let Selection {
        plan,
        test_args,
        slots,
    } = selection;
    // `--max-fail N` replaces cargo test's fail-fast; `--no-fail-fast` is no limit at all.
    let fail_fast = !args.no_fail_fast && args.runner.ci.max_fail.is_none();
    let doc_prefixes = prepared.workspace.doc_prefixes();
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
    let temps = temp_pool::TempPool::default();
    let scheduler = Scheduler {
        settings: &prepared.settings,
        ctx: CommandContext {
            args: &test_args,
            session,
            doc_cargo_args: &prepared.doc_cargo_args,
            doc_prefixes: &doc_prefixes,
            databases: &prepared.services.databases,
            service_env: &prepared.services.env,
            keep_on_failure: args.session.keep_on_failure,
            temps: &temps,
        },
        reporter,
        slots,
        fail_fast,
        events,
        leaks: Default::default(),
        services: prepared.services.monitor.clone(),
        retries: Default::default(),
        max_fail: fail_fast::MaxFail::new(args.runner.ci.max_fail),
        origins: Default::default(),
    };
    let (summary, reporter, origins) = scheduler.run(plan, started);
    Scheduled {
        summary,
        reporter,
        origins,
    }
}
