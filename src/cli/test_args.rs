//! The arguments after `--`, meant for the test binaries: which of them the runner must understand
//! (filters, ignored mode, capture, threads) and which it passes through untouched.

use std::fmt;

/// Which tests libtest runs with respect to `#[ignore]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum RunIgnored {
    #[default]
    No,
    Only,
    Include,
}

/// The parsed test-binary arguments.
#[derive(Debug, Clone, Default)]
pub(crate) struct TestArgs {
    pub filters: Vec<String>,
    pub exact: bool,
    pub skip: Vec<String>,
    pub ignored: RunIgnored,
    pub nocapture: bool,
    pub show_output: bool,
    pub test_threads: Option<usize>,
    pub list: bool,
    pub quiet: bool,
    /// Unknown arguments, given to the test binaries as they are.
    pub passthrough: Vec<String>,
    /// TESTNAME and every argument after `--`, as given: what cargo test hands a `harness = false`
    /// binary that is run whole.
    pub raw: Vec<String>,
}

/// A test-binary argument the runner cannot honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TestArgError(pub String);

impl fmt::Display for TestArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// libtest's options the runner passes on without reading them (`--help` of any libtest binary).
const PASSED_ON: &[&str] = &[
    "--force-run-in-process",
    "--exclude-should-panic",
    "--test",
    "--bench",
    "--report-time",
    "--ensure-time",
    "-h",
    "--help",
];

/// The options of libtest the runner reads (or refuses), for the nearest-name hint with `PASSED_ON`.
const READ: &[&str] = &[
    "--exact",
    "--skip",
    "--ignored",
    "--include-ignored",
    "--nocapture",
    "--no-capture",
    "--show-output",
    "--list",
    "--quiet",
    "--test-threads",
    "--color",
    "--format",
    "--logfile",
    "--shuffle",
    "--shuffle-seed",
];

/// An option no libtest binary takes: named, with the nearest one when it looks like a slip.
fn unknown_option(flag: &str) -> TestArgError {
    let nearest = READ
        .iter()
        .chain(PASSED_ON)
        .map(|known| (super::edit_distance(flag, known), *known))
        .min()
        .filter(|(distance, _)| *distance <= 2);
    TestArgError(match nearest {
        Some((_, known)) => format!(
            "`{flag}` after `--` is not an option of the test binaries (libtest); did you mean `{known}`?"
        ),
        None => format!(
            "`{flag}` after `--` is not an option of the test binaries (libtest); \
             `cargo cleantest -- --help` lists theirs"
        ),
    })
}

impl TestArgs {
    /// Parses the arguments after `--`; `testname` is cargo's positional filter, which cargo also
    /// hands to every binary as a filter.
    pub(crate) fn parse(testname: Option<&str>, args: &[String]) -> Result<TestArgs, TestArgError> {
        let mut out = TestArgs::default();
        out.filters.extend(testname.map(str::to_string));
        out.raw = out.filters.iter().chain(args).cloned().collect();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (arg.as_str(), None),
            };
            let mut value = |name: &str| -> Result<String, TestArgError> {
                inline
                    .clone()
                    .or_else(|| iter.next().cloned())
                    .ok_or_else(|| TestArgError(format!("`{name}` after `--` needs a value")))
            };
            match flag {
                "--exact" => out.exact = true,
                "--skip" => out.skip.push(value("--skip")?),
                "--ignored" => out.ignored = RunIgnored::Only,
                "--include-ignored" => out.ignored = RunIgnored::Include,
                "--nocapture" | "--no-capture" => out.nocapture = true,
                "--show-output" => out.show_output = true,
                "--list" => out.list = true,
                "-q" | "--quiet" => out.quiet = true,
                "--test-threads" => {
                    let text = value("--test-threads")?;
                    let n = text.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        TestArgError(format!(
                            "`--test-threads {text}` is not a positive number; give e.g. `--test-threads 4`"
                        ))
                    })?;
                    out.test_threads = Some(n);
                }
                "--format" | "--logfile" | "-Z" | "--shuffle" | "--shuffle-seed" => {
                    return Err(TestArgError(format!(
                        "`{flag}` after `--` changes libtest's output or order, which the runner reads to \
                         enforce per-test timeouts; remove it (use --junit PATH for a machine-readable report)"
                    )));
                }
                "--color" => {
                    let v = value("--color")?;
                    out.passthrough.push(format!("--color={v}"));
                }
                // libtest's own, given to the binaries as they are.
                _ if PASSED_ON.contains(&flag) => out.passthrough.push(arg.clone()),
                // Any other option is refused before anything starts, as libtest refuses it (where it
                // would have run no test, and a shared unit would have counted as failed).
                _ if flag.starts_with('-') => return Err(unknown_option(flag)),
                _ => out.filters.push(arg.clone()),
            }
        }
        Ok(out)
    }

    /// True when the arguments narrow the set of tests, so libtest reports some as "filtered out".
    pub(crate) fn narrows(&self) -> bool {
        !self.filters.is_empty() || !self.skip.is_empty() || self.ignored == RunIgnored::Only
    }

    /// Arguments selecting tests: for `--list` and for the shared-mode run.
    pub(crate) fn selection(&self) -> Vec<String> {
        let mut out = self.filters.clone();
        if self.exact {
            out.push("--exact".into());
        }
        for skip in &self.skip {
            out.push("--skip".into());
            out.push(skip.clone());
        }
        out.extend(self.ignored_flag().map(str::to_string));
        out
    }

    /// `--ignored` or `--include-ignored`, when given.
    pub(crate) fn ignored_flag(&self) -> Option<&'static str> {
        match self.ignored {
            RunIgnored::No => None,
            RunIgnored::Only => Some("--ignored"),
            RunIgnored::Include => Some("--include-ignored"),
        }
    }

    /// The arguments `cargo test --doc -- ...` receives: everything the user gave, in libtest's words.
    pub(crate) fn doctest_args(&self, threads: usize) -> Vec<String> {
        let mut out = self.selection();
        out.push("--test-threads".into());
        out.push(threads.to_string());
        if self.nocapture {
            out.push("--nocapture".into());
        }
        if self.show_output {
            out.push("--show-output".into());
        }
        out.extend(self.passthrough.iter().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<TestArgs, TestArgError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        TestArgs::parse(None, &args)
    }

    #[test]
    fn understands_libtest_flags_and_keeps_unknown_ones() {
        let args = parse(&[
            "foo",
            "--exact",
            "--skip",
            "bar",
            "--skip=baz",
            "--include-ignored",
            "--test-threads=3",
            "--no-capture",
            "--force-run-in-process",
        ])
        .unwrap();
        assert_eq!(args.filters, vec!["foo"]);
        assert!(args.exact && args.nocapture);
        assert_eq!(args.skip, vec!["bar", "baz"]);
        assert_eq!(args.ignored, RunIgnored::Include);
        assert_eq!(args.test_threads, Some(3));
        assert_eq!(args.passthrough, vec!["--force-run-in-process"]);
        assert_eq!(
            args.selection(),
            vec![
                "foo",
                "--exact",
                "--skip",
                "bar",
                "--skip",
                "baz",
                "--include-ignored"
            ]
        );
    }

    #[test]
    fn unknown_options_are_refused_with_the_nearest_one() {
        let err = parse(&["--exactt"]).unwrap_err().0;
        assert!(
            err.contains("`--exactt`") && err.contains("did you mean `--exact`"),
            "{err}"
        );
        let err = parse(&["--frobnicate"]).unwrap_err().0;
        assert!(
            err.contains("`--frobnicate`") && !err.contains("did you mean"),
            "{err}"
        );
        assert!(parse(&["--report-time", "--exclude-should-panic"]).is_ok());
    }

    #[test]
    fn rejects_output_format_changes_and_bad_thread_counts() {
        assert!(parse(&["--format", "json"]).is_err());
        assert!(parse(&["--test-threads", "0"]).is_err());
        assert!(parse(&["--skip"]).is_err());
    }

    #[test]
    fn testname_is_a_filter_and_narrows() {
        let args = TestArgs::parse(Some("db"), &[]).unwrap();
        assert_eq!(args.filters, vec!["db"]);
        assert!(args.narrows());
        assert!(!parse(&["--include-ignored"]).unwrap().narrows());
    }
}
