//! The run's first stage: the config read and checked (before cargo builds anything: a typo in it, or
//! an unknown `-P`, must not cost a build first), then cargo's build beside the session's opening and
//! its services, which need no build and so stay off start-up's critical path.

use std::sync::Arc;

use super::cargo::{self, Built, TestBinary, Workspace};
use super::target_runner::Runners;
use crate::cli::{RunArgs, TestArgs};
use crate::config::Settings;
use crate::contract::EXIT_OK;
use crate::errors::Error;
use crate::services::Started;
use crate::session::lock::EnvLock;
use crate::session::{Profile, Session, open, signals};

/// What the later stages run with.
pub(super) struct Prepared {
    pub workspace: Workspace,
    pub settings: Settings,
    pub binaries: Vec<Arc<TestBinary>>,
    /// The session's services (empty when none run).
    pub services: Started,
    /// The environment lock, held until the run ends.
    pub _lock: Option<EnvLock>,
    /// Whether the doctests run: as cargo test would run them.
    pub doctests: bool,
    /// `cargo test --doc` arguments before `--`.
    pub doc_cargo_args: Vec<String>,
}

/// How the first stage ends: ready for the tests, or with the run's exit code already known (a
/// signal during the build, `--no-run`).
pub(super) enum Prepare {
    Ready(Box<Prepared>),
    Done(i32),
}

/// Reads the config, then builds while the session opens and its services start.
pub(super) fn prepare(
    args: &RunArgs,
    test_args: &TestArgs,
    session: &Arc<Session>,
) -> Result<Prepare, Error> {
    // `cargo metadata --no-deps` is quick, and it finds the config.
    let workspace = Workspace::load(args)?;
    let settings = Settings::load(&workspace.root, &args.runner, &args.session.guard)?;
    let runs_tests = !args.no_run && !test_args.list;
    let (opened, built) = std::thread::scope(|scope| {
        let opening =
            scope.spawn(|| open_session(args, &settings, &workspace, session, runs_tests));
        let built = if args.targets.doc {
            Ok(Built::default())
        } else {
            cargo::build(args, session)
        };
        let opened = opening.join().expect("the opening thread does not panic");
        (opened, built)
    });
    // A signal during the build ends cargo too: the signal decides the exit code, not the failed build.
    if let Some(signal) = session.interrupted_by() {
        return Ok(Prepare::Done(signals::exit_code(signal)));
    }
    let built = built?;
    let (runners, lock, services) = opened?;
    let binaries = workspace.test_binaries(built, &runners);
    if args.no_run {
        return Ok(Prepare::Done(EXIT_OK));
    }
    let binaries: Vec<Arc<TestBinary>> = binaries.into_iter().map(Arc::new).collect();
    // Doctests run when cargo test would run them: `--doc`, or the default selection of a workspace with
    // a library whose doctests are on (not `doctest = false`) and no positional TESTNAME (cargo skips
    // doctests for `cargo test NAME`).
    let doctests = args.targets.doc
        || (!args.targets.selects_targets()
            && args.testname.is_none()
            && binaries.iter().any(|b| b.doctests));
    Ok(Prepare::Ready(Box::new(Prepared {
        doc_cargo_args: doc_cargo_args(args, &binaries),
        workspace,
        settings,
        binaries,
        services,
        _lock: lock,
        doctests,
    })))
}

/// The target runners, and when the run runs tests, the opened session's lock and its services.
fn open_session(
    args: &RunArgs,
    settings: &Settings,
    workspace: &Workspace,
    session: &Arc<Session>,
    runs_tests: bool,
) -> Result<(Runners, Option<EnvLock>, Started), Error> {
    let runners = Runners::load(&args.compilation.target, &args.cargo_config);
    if !runs_tests {
        return Ok((runners, None, Started::default()));
    }
    let lock = open(
        session,
        &args.session,
        Profile::of(settings),
        &workspace.root,
    )?;
    let services = if args.session.no_services {
        Started::default()
    } else {
        crate::services::start_or_keep(session, &settings.services, args.session.keep_on_failure)?
    };
    Ok((runners, lock, services))
}

/// Not cargo's `--quiet`: cargo passes it on to the doctests as libtest's `-q`, whose dots carry no
/// test names to count. The runner's own output is quiet already. `cargo test --doc` runs the
/// doctests of every selected library, `doctest = false` or not, where cargo test skips those: when
/// some library has them off, the doctest run names the packages whose doctests are on.
fn doc_cargo_args(args: &RunArgs, binaries: &[Arc<TestBinary>]) -> Vec<String> {
    let some_off = binaries.iter().any(|b| b.is_lib && !b.doctests);
    let flags = if some_off && !args.targets.doc {
        let on: Vec<String> = binaries
            .iter()
            .filter(|b| b.doctests)
            .map(|b| b.package.name.clone())
            .collect();
        args.cargo_flags_for_packages(&on)
    } else {
        args.cargo_common_flags()
    };
    let mut out: Vec<String> = flags.into_iter().filter(|a| a != "--quiet").collect();
    if args.no_fail_fast {
        out.push("--no-fail-fast".into());
    }
    out
}
