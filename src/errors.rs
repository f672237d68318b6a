//! The runner's error space and the exit code each error maps to.
//!
//! Messages are lowercase fragments that read after "failed to"; `hint` says what to do about it.
//! Every layer returns this one enum, so it sits at the bottom of the graph beside `contract`.

use std::io;
use std::path::PathBuf;

use crate::contract::{EXIT_LOCK_TIMEOUT, EXIT_SERVICE, EXIT_TEST_FAILED, EXIT_USAGE};

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("parse the test-binary arguments after `--`: {0}")]
    TestArgs(String),
    #[error("load {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(
        "use config profile `{name}`: there is no {path}; create it with a [profile.{name}] table, \
         or run without -P/CLEANTEST_PROFILE"
    )]
    NoConfigFile { name: String, path: PathBuf },
    #[error(
        "use config profile `{name}`: {path} defines no [profile.{name}]; the profiles it defines are: {}",
        defined.join(", ")
    )]
    NoProfile {
        name: String,
        path: PathBuf,
        defined: Vec<String>,
    },
    #[error("read the workspace metadata: {0}")]
    Metadata(String),
    #[error("start `{program}`: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("build the tests: cargo exited with {0}")]
    Build(String),
    #[error("list the tests of {binary}: {reason}")]
    List { binary: String, reason: String },
    #[error("install the signal handlers: {0}")]
    Signals(io::Error),
    #[error("write the JUnit report to {path}: {message}")]
    Junit { path: PathBuf, message: String },
    #[error("read the test durations in {path}: {reason}")]
    Durations { path: PathBuf, reason: String },
    #[error("use the state directory: {0}")]
    State(io::Error),
    #[error("take the environment lock `{name}`: {message}")]
    Lock { name: String, message: String },
    #[error("take the environment lock `{name}` within {}", humantime::format_duration(*waited))]
    LockTimeout {
        name: String,
        waited: std::time::Duration,
    },
    #[error("reach the Docker engine at {endpoint}: {reason}")]
    DockerDown { endpoint: String, reason: String },
    #[error("start the engine-side reaper ({why}): {reason}")]
    EngineReaper { why: String, reason: String },
    #[error("start the service `{name}`: {reason}{log}")]
    Service {
        name: String,
        reason: String,
        /// The last lines of its log, indented, each on a line of its own (empty when there is none).
        log: String,
        /// What to do about this failure.
        help: String,
    },
    #[error("select targets: `--doc` can't be mixed with other target selecting options")]
    DocMixed,
    #[error("{0}")]
    Usage(String),
    #[error("write to stdout: {0}")]
    Output(io::Error),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// What went wrong with an archive (`cargo cleantest archive`, `--archive-file`): each names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArchiveError {
    #[error("write the archive {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read the archive {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("put {what} in the archive: {source}")]
    Member {
        what: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("use {path}: it is not an archive of cargo cleantest ({reason})")]
    Foreign { path: PathBuf, reason: String },
    #[error("run {path} here: its tests were built for {target}, and this machine is {here}")]
    Target {
        path: PathBuf,
        target: String,
        here: String,
    },
    #[error("run {path}: {what} is missing from it (the archive is damaged)")]
    Missing { path: PathBuf, what: String },
    #[error("archive `{path}`, which `[archive] include` names: {reason}")]
    Include { path: String, reason: String },
    #[error("run from an archive with {flags}: the archive's build decided what was built")]
    BuildFlags { flags: String },
    #[error(
        "archive the doctests: rustdoc builds them as it runs them, so no archive can hold them"
    )]
    Doctests,
    #[error("unpack the archive into {dir}: {source}")]
    Extract {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Error::TestArgs(_)
            | Error::Config { .. }
            | Error::NoConfigFile { .. }
            | Error::NoProfile { .. }
            | Error::Durations { .. }
            | Error::Archive(_)
            | Error::Usage(_) => EXIT_USAGE,
            Error::LockTimeout { .. } => EXIT_LOCK_TIMEOUT,
            Error::Service { .. } => EXIT_SERVICE,
            _ => EXIT_TEST_FAILED,
        }
    }

    /// What the user can do about it, when there is something to say.
    pub(crate) fn hint(&self) -> Option<std::borrow::Cow<'static, str>> {
        match self {
            Error::Service { help, .. } => return Some(help.clone().into()),
            Error::Config { path, .. }
                if path.extension().is_some_and(|e| e == "yml" || e == "yaml") =>
            {
                return Some(
                    "fix the compose file; docs/services.md (\"Compose files\") says what is read"
                        .into(),
                );
            }
            _ => {}
        }
        self.fixed_hint().map(Into::into)
    }

    fn fixed_hint(&self) -> Option<&'static str> {
        match self {
            Error::Config { .. } => Some(
                "fix the file; every key is listed in docs/configuration.md (`cargo cleantest help` for flags)",
            ),
            Error::NoProfile { .. } => Some(
                "pass one of the defined profiles to -P (or CLEANTEST_PROFILE), or add the table to the file",
            ),
            Error::Metadata(_) => {
                Some("check --manifest-path, or run from inside a cargo workspace")
            }
            Error::List { .. } => Some(
                "a custom test harness must answer `--list --format terse` like libtest (libtest-mimic does); \
                 leave the target out with --test/--lib/--bins, or set `test = false` on it",
            ),
            Error::Build(_) => Some("fix the errors cargo printed above"),
            Error::Durations { .. } => Some(
                "pass the JUnit report of an earlier run (`--junit PATH`, or cargo-nextest's), or another kind of partition",
            ),
            Error::Archive(ArchiveError::BuildFlags { .. }) => Some(
                "select tests with TESTNAME, `--` filters or --partition, or make another archive with these flags",
            ),
            Error::Archive(ArchiveError::Doctests) => Some(
                "leave out --doc; run the doctests with `cargo cleantest --doc` where cargo is",
            ),
            Error::Archive(ArchiveError::Target { .. }) => Some(
                "make the archive on a machine of this kind, or with `--target` set to this machine's triple",
            ),
            Error::Archive(
                ArchiveError::Foreign { .. }
                | ArchiveError::Missing { .. }
                | ArchiveError::Read { .. },
            ) => Some(
                "make it again with `cargo cleantest archive --archive-file PATH`, and copy it whole",
            ),
            Error::Archive(ArchiveError::Include { .. }) => Some(
                "`[archive] include` takes paths relative to the workspace root, to files or directories that exist",
            ),
            Error::DocMixed => {
                Some("run the doctests and the other targets in two runs, as with cargo test")
            }
            Error::LockTimeout { .. } => Some(
                "wait for the other run, raise --lock-timeout, or use --no-lock if the runs cannot collide",
            ),
            Error::State(_) => Some("set CLEANTEST_STATE_DIR to a writable directory"),
            Error::DockerDown { .. } => Some("start the Docker daemon or point DOCKER_HOST at it"),
            Error::EngineReaper { .. } => Some(
                "the engine must be able to run this binary with its socket mounted (docs/guarantees.md, \"Engine-side reaper\"); \
                 --engine-reaper=off runs without it",
            ),
            _ => None,
        }
    }
}
