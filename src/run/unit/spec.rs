//! What a unit is before it starts: its kind, its tests, and the command line that runs it (the test
//! binary with libtest's arguments, or `cargo test --doc`), with the session's environment.

use std::ffi::OsString;
use std::process::Command;
use std::sync::Arc;

use crate::cli::TestArgs;
use crate::contract::{ENV_BINARY, ENV_TEST};
use crate::run::cargo::TestBinary;
use crate::run::cargo_env::cargo_program;
use crate::run::harness::Harness;
use crate::session::Session;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnitKind {
    /// A whole test binary, its tests in one process as under cargo test.
    Shared,
    /// One test of a binary, alone in its process.
    Isolated,
    /// A process followed as a whole, counted by the result lines it prints: `cargo test --doc` (no
    /// binary), or a binary whose running tests cannot be followed, run as cargo test runs it.
    Whole,
}

/// Everything needed to start (or restart) a unit.
#[derive(Debug, Clone)]
pub(crate) struct UnitSpec {
    pub kind: UnitKind,
    pub binary_id: String,
    pub binary: Option<Arc<TestBinary>>,
    /// The tests this process will run, in libtest's order (empty for doctests).
    pub tests: Vec<String>,
    /// Tests run at once inside the process.
    pub threads: usize,
    /// 0 for the first run of a binary; reruns after a timeout or crash count up.
    pub attempt: u32,
    /// The binary's place in cargo test's run order (the doctests come last): fail-fast stops by it.
    pub order: usize,
    /// A rerun of a failed test, alone, only to recover the output its killed binary never printed:
    /// its result is not counted, its output goes to the original failure.
    pub recovery: bool,
    /// A retry of a failed test (`--retries`): which one, from 1; 0 for a first run.
    pub retry: u32,
    /// Name the tests exactly even on a first shared run (a partition's share of a binary).
    pub exact: bool,
}

/// What the unit commands are built from.
pub(crate) struct CommandContext<'a> {
    pub args: &'a TestArgs,
    pub session: &'a Session,
    /// `cargo test --doc` arguments before `--`.
    pub doc_cargo_args: &'a [String],
    /// Package directories and names, to name doctests (`cargo::doctest_name`).
    pub doc_prefixes: &'a [(String, String)],
    /// The databases of the services that isolate: each unit process gets its own.
    pub databases: &'a crate::services::Databases,
    /// What the session's services tell every process (`CLEANTEST_SERVICE_*`, their exports).
    pub service_env: &'a [(String, String)],
    /// `--keep-on-failure`: a failed test's databases are kept and named.
    pub keep_on_failure: bool,
    /// The units' temporary directories.
    pub temps: &'a crate::run::temp_pool::TempPool,
}

impl UnitSpec {
    /// This unit's spec with other tests: every field copied but the test list, which in shared mode
    /// names every test of the binary and is not cloned only to be replaced.
    pub(crate) fn with_tests(&self, tests: Vec<String>) -> UnitSpec {
        UnitSpec {
            kind: self.kind,
            binary_id: self.binary_id.clone(),
            binary: self.binary.clone(),
            tests,
            threads: self.threads,
            attempt: self.attempt,
            order: self.order,
            recovery: self.recovery,
            retry: self.retry,
            exact: self.exact,
        }
    }

    /// The same binary again, for the tests that had not finished.
    pub(crate) fn rerun(&self, tests: Vec<String>) -> UnitSpec {
        UnitSpec {
            attempt: self.attempt + 1,
            ..self.with_tests(tests)
        }
    }

    /// One failed test alone, `--exact`, to recover its output (see `recovery`).
    pub(crate) fn recovery(&self, test: String) -> UnitSpec {
        UnitSpec {
            kind: UnitKind::Isolated,
            threads: 1,
            attempt: self.attempt + 1,
            recovery: true,
            ..self.with_tests(vec![test])
        }
    }

    /// One failed test again, alone with `--exact`: retry number `retry` (`--retries`).
    pub(crate) fn retry(&self, test: String, retry: u32) -> UnitSpec {
        UnitSpec {
            kind: UnitKind::Isolated,
            threads: 1,
            attempt: self.attempt + 1,
            recovery: false,
            retry,
            ..self.with_tests(vec![test])
        }
    }

    pub(crate) fn command(&self, ctx: &CommandContext<'_>) -> Command {
        let mut command = match (&self.binary, self.kind) {
            (Some(binary), kind) => {
                let mut c = binary.command();
                if kind == UnitKind::Whole {
                    // Exactly what cargo test gives a `harness = false` binary: TESTNAME and the
                    // arguments after `--`, nothing of libtest's.
                    c.args(&ctx.args.raw);
                } else {
                    c.args(self.test_args(ctx.args, binary.harness));
                }
                c
            }
            (None, _) => {
                let mut c = Command::new(cargo_program());
                // The doctest unit has no binary of its own; `TestBinary::command` names the others.
                c.env(ENV_BINARY, &self.binary_id);
                c.args(["test", "--doc"]).args(ctx.doc_cargo_args).arg("--");
                c.args(ctx.args.doctest_args(self.threads));
                c
            }
        };
        ctx.session
            .configure(&mut command)
            .envs(ctx.service_env.iter().cloned());
        if self.kind == UnitKind::Isolated {
            command.env(ENV_TEST, &self.tests[0]);
        }
        command
    }

    fn test_args(&self, args: &TestArgs, harness: Harness) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        if self.names_by_filter() {
            out.extend(args.selection().into_iter().map(OsString::from));
        } else {
            // Reruns and isolated tests name their tests exactly; the ignored mode still decides
            // whether libtest runs an ignored test or reports it ignored. A name that looks like a
            // flag (a harness may call a test `--list`) goes after `--`, at the end.
            if !self.names_look_like_flags() {
                out.extend(self.tests.iter().map(OsString::from));
            }
            out.push("--exact".into());
            out.extend(args.ignored_flag().map(OsString::from));
        }
        // Custom harnesses get only what nextest gives them (`--exact NAME --nocapture`): some reject
        // libtest's other flags.
        if harness == Harness::Libtest || self.kind == UnitKind::Shared {
            out.push("--test-threads".into());
            out.push(self.threads.to_string().into());
        }
        if self.kind == UnitKind::Isolated || args.nocapture {
            out.push("--nocapture".into());
        }
        if args.show_output && self.kind == UnitKind::Shared {
            out.push("--show-output".into());
        }
        out.extend(args.passthrough.iter().map(OsString::from));
        if !self.names_by_filter() && self.names_look_like_flags() {
            out.push("--".into());
            out.extend(self.tests.iter().map(OsString::from));
        }
        out
    }

    /// A first shared run selects its tests with the user's own filters, as cargo test does; every
    /// other run names them exactly.
    fn names_by_filter(&self) -> bool {
        self.kind == UnitKind::Shared && self.attempt == 0 && !self.exact
    }

    fn names_look_like_flags(&self) -> bool {
        self.tests.iter().any(|t| t.starts_with('-'))
    }
}
