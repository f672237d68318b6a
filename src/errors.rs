//! The runner's error space and the exit code each error maps to.
//!
//! Messages are lowercase fragments that read after "failed to"; `hint` says what to do about it.

use std::io;
use std::path::PathBuf;

/// Exit code: every test passed.
pub(crate) const EXIT_OK: i32 = 0;
/// Exit code: a test failed or timed out, the build failed, or tests could not be run (as cargo test).
pub(crate) const EXIT_TEST_FAILED: i32 = 101;
/// Exit code: the command line or the config file is wrong.
pub(crate) const EXIT_USAGE: i32 = 2;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("parse the test-binary arguments after `--`: {0}")]
    TestArgs(String),
    #[error("load {path}: {message}")]
    Config { path: PathBuf, message: String },
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
}

impl Error {
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Error::TestArgs(_) | Error::Config { .. } => EXIT_USAGE,
            _ => EXIT_TEST_FAILED,
        }
    }

    /// What the user can do about it, when there is something to say.
    pub(crate) fn hint(&self) -> Option<&'static str> {
        match self {
            Error::Config { .. } => {
                Some("fix the file (see the README's Config section) or remove it")
            }
            Error::Metadata(_) => {
                Some("check --manifest-path, or run from inside a cargo workspace")
            }
            Error::List { .. } => Some(
                "a custom test harness must answer `--list --format terse` like libtest (libtest-mimic does); \
                 leave the target out with --test/--lib/--bins, or set `test = false` on it",
            ),
            Error::Build(_) => Some("fix the errors cargo printed above"),
            _ => None,
        }
    }
}
