//! The run's first stage: the config read and checked (before cargo builds anything: a typo in it, or
//! an unknown `-P`, must not cost a build first), then cargo's build beside the workspace's reading
//! (`cargo metadata`, or the last run's answer while nothing it was made from changed), the session's
//! opening and its services, which need no build and so stay off start-up's critical path.

use std::path::PathBuf;
use std::sync::Arc;

use super::archive;
use super::cargo::{self, Built, TestBinary, Workspace};
use super::target_runner::Runners;
use super::workspace_root;
use crate::cli::{RunArgs, TestArgs};
use crate::config::Settings;
use crate::contract::EXIT_OK;
use crate::docker;
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
    /// The archive the binaries come from, unpacked (`--archive-file`): kept until the run ends.
    pub _extracted: Option<archive::Extracted>,
}

/// How the first stage ends: ready for the tests, or with the run's exit code already known (a
/// signal during the build, `--no-run`).
pub(super) enum Prepare {
    Ready(Box<Prepared>),
    Done(i32),
}

/// The workspace as cargo metadata describes it, and its config, checked.
struct Read {
    workspace: Workspace,
    settings: Settings,
    /// Whether the workspace is the last run's answer (`metadata_cache`), to be checked against the
    /// build.
    recalled: bool,
}

/// What is known of the workspace before cargo builds: the config of the root the manifests name
/// (cargo metadata runs beside the build, and confirms the root), or, where the manifests cannot tell,
/// all of it.
enum Early {
    Guessed(PathBuf, Settings),
    Read(Read),
}

/// Reads the config, then builds while cargo metadata reads the workspace, the session opens and its
/// services start.
pub(super) fn prepare(
    args: &RunArgs,
    test_args: &TestArgs,
    session: &Arc<Session>,
) -> Result<Prepare, Error> {
    let runs_tests = !args.no_run && !test_args.list;
    if args.archive.archive_file.is_some() {
        return from_archive(args, runs_tests, session);
    }
    // The engine's answers (about 20 ms) come while the workspace is read.
    let connecting = runs_tests.then(docker::Connecting::start);
    // The config is checked before cargo builds anything (a typo in it must not cost a build first).
    let early = match workspace_root::guess(args.manifest.manifest_path.as_deref()) {
        Some(root) => {
            let settings = Settings::load(&root, &args.runner, &args.session.guard)?;
            Early::Guessed(root, settings)
        }
        None => Early::Read(read(args, None)?),
    };
    let (opened, built) = std::thread::scope(|scope| {
        let opening = scope.spawn(move || {
            let read = match early {
                Early::Read(read) => read,
                Early::Guessed(root, settings) => read(args, Some((root, settings)))?,
            };
            let opened = open_session(args, &read.settings, &read.workspace, session, connecting)?;
            Ok::<_, Error>((read, opened))
        });
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
    let (
        Read {
            workspace,
            settings,
            recalled,
        },
        (runners, lock, services),
    ) = opened?;
    // A member the remembered answer does not know (added under a glob): cargo metadata after all.
    let workspace = if recalled && !workspace.knows(&built) {
        Workspace::load(args)?
    } else {
        workspace
    };
    let binaries = workspace.test_binaries(&built, &runners);
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
        _extracted: None,
    })))
}

/// The first stage from an archive (`--archive-file`): no cargo and no build. The archive is checked
/// and unpacked first, since the config it carries decides how the session opens; its binaries are
/// then what a build would have described.
fn from_archive(
    args: &RunArgs,
    runs_tests: bool,
    session: &Arc<Session>,
) -> Result<Prepare, Error> {
    let flags = args.build_flags_given();
    if !flags.is_empty() {
        return Err(crate::errors::ArchiveError::BuildFlags {
            flags: flags.join(" "),
        }
        .into());
    }
    let connecting = runs_tests.then(docker::Connecting::start);
    let unpacked = archive::open(args, session.id())?;
    let settings = Settings::load(&unpacked.workspace.root, &args.runner, &args.session.guard)?;
    let (_, lock, services) =
        open_session(args, &settings, &unpacked.workspace, session, connecting)?;
    let binaries = unpacked.binaries.into_iter().map(Arc::new).collect();
    Ok(Prepare::Ready(Box::new(Prepared {
        workspace: unpacked.workspace,
        settings,
        binaries,
        services,
        _lock: lock,
        doctests: false,
        doc_cargo_args: Vec::new(),
        _extracted: Some(unpacked.dir),
    })))
}

/// The workspace from `cargo metadata --no-deps` (or, where nothing it was made from changed, the last
/// run's answer), and its config: the one read `early` when its root is the one cargo names. Where the
/// manifests misled (a layout the guess does not know), the config of cargo's root is read now, and a
/// mistake in it is reported after the build.
fn read(args: &RunArgs, early: Option<(PathBuf, Settings)>) -> Result<Read, Error> {
    let recalled = early.as_ref().and_then(|_| Workspace::recall(args));
    let (workspace, recalled) = match recalled {
        Some(workspace) => (workspace, true),
        None => (Workspace::load(args)?, false),
    };
    let settings = match early {
        Some((root, settings)) if workspace_root::same(&root, &workspace.root) => settings,
        _ => Settings::load(&workspace.root, &args.runner, &args.session.guard)?,
    };
    Ok(Read {
        workspace,
        settings,
        recalled,
    })
}

/// The target runners, and when the run runs tests (it is `connecting` to the engine), the opened
/// session's lock and its services.
fn open_session(
    args: &RunArgs,
    settings: &Settings,
    workspace: &Workspace,
    session: &Arc<Session>,
    connecting: Option<docker::Connecting>,
) -> Result<(Runners, Option<EnvLock>, Started), Error> {
    let runners = Runners::load(&args.compilation.target, &args.cargo_config);
    let Some(connecting) = connecting else {
        return Ok((runners, None, Started::default()));
    };
    let lock = open(
        session,
        &args.session,
        Profile::of(settings),
        &workspace.root,
        connecting,
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
