//! The run's second stage: each binary listed and the listings planned into a queue of units, with
//! cargo test's reading of the filters; a name as the runner prints it (`BINARY-ID::NAME`) is read when
//! that reading matches nothing.

use std::sync::Arc;

use super::cargo::TestBinary;
use super::list::{self, Lister};
use super::partition::Sharding;
use super::plan::{self, Plan};
use super::prepare::Prepared;
use crate::cli::{RunArgs, TestArgs, near_subcommand};
use crate::session::Session;

/// What the run runs, and how many at once.
pub(super) struct Selection {
    pub plan: Plan,
    /// The test arguments as the plan reads them (narrowed by a `BINARY-ID::NAME` name).
    pub test_args: TestArgs,
    /// Units at once.
    pub slots: usize,
}

/// Lists and plans the run's tests.
pub(super) fn select(
    args: &RunArgs,
    test_args: TestArgs,
    prepared: &Prepared,
    session: &Session,
    sharding: Option<Sharding<'_>>,
) -> Selection {
    let settings = &prepared.settings;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
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
    let planner = Planner {
        prepared,
        lister: Lister {
            session,
            service_env: &prepared.services.env,
            timeout: settings.list_timeout,
        },
        cpus,
        threads,
        sharding,
    };
    let plan = planner.plan(prepared.binaries.clone(), &test_args, prepared.doctests);
    let (plan, test_args) = match args.testname.as_deref() {
        Some(name) if plan.total == 0 => planner.by_printed_name(name, plan, test_args),
        _ => (plan, test_args),
    };
    if let Some(line) = &plan.partition_line {
        crate::output::err(line);
        if plan.queue.is_empty() {
            crate::output::err("note: nothing to run in this shard");
        }
    }
    if let Some(name) = args.testname.as_deref().filter(|_| plan.total == 0) {
        warn_no_match(name, &prepared.binaries);
    }
    Selection {
        plan,
        test_args,
        slots: slots.max(1),
    }
}

/// Listing and planning with the run's settings.
struct Planner<'a> {
    prepared: &'a Prepared,
    lister: Lister<'a>,
    cpus: usize,
    threads: usize,
    sharding: Option<Sharding<'a>>,
}

impl Planner<'_> {
    fn plan(&self, binaries: Vec<Arc<TestBinary>>, test_args: &TestArgs, doctests: bool) -> Plan {
        let isolate = self.prepared.settings.isolate;
        let listings = list::list_all(
            &binaries,
            test_args,
            |b| plan::unit_kind(b.harness, isolate),
            self.lister,
            self.cpus,
        );
        plan::plan(
            binaries,
            listings,
            isolate,
            self.threads,
            doctests,
            self.sharding,
        )
    }

    /// `cargo cleantest ct-demo::users::adds`, a name as the runner prints it: when it matches nothing
    /// as cargo test reads it, its binary id picks the binary and the rest is the filter. Only then, so
    /// that a name that does match keeps cargo test's meaning and counts.
    fn by_printed_name(&self, name: &str, plan: Plan, test_args: TestArgs) -> (Plan, TestArgs) {
        let Some((binary, rest)) = qualified(name, &self.prepared.binaries) else {
            return (plan, test_args);
        };
        let mut narrowed_args = test_args.clone();
        narrowed_args.filters[0] = rest.to_string();
        if let Some(raw) = narrowed_args.raw.first_mut() {
            *raw = rest.to_string();
        }
        let mut narrowed = self.plan(vec![binary.clone()], &narrowed_args, false);
        if narrowed.total == 0 {
            return (plan, test_args);
        }
        crate::output::err(format!(
            "note: `{name}` names a test of {}: running its tests matching `{rest}`",
            binary.id
        ));
        // What cargo test would count as filtered out: every test of the run but these.
        narrowed.filtered_out = plan.filtered_out.saturating_sub(narrowed.total);
        (narrowed, narrowed_args)
    }
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

/// A filter that matches no test: a mistyped subcommand, or how names are written.
fn warn_no_match(name: &str, binaries: &[Arc<TestBinary>]) {
    match near_subcommand(name) {
        Some(sub) => crate::output::err(format!(
            "warning: no test matches `{name}`; did you mean `cargo cleantest {sub}`?"
        )),
        None => crate::output::err(format!(
            "warning: no test matches `{name}`; a filter is part of a test's name \
             (`tests::adds`), or its name as printed, BINARY-ID::NAME (`{}::tests::adds`)",
            binaries.first().map_or("my-crate", |b| b.id.as_str())
        )),
    }
}
