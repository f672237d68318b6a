//! `--durations JUNIT`: how long each test took in an earlier run, read from its JUnit report (ours, or
//! cargo-nextest's: both name a case by its test and its binary id, the `classname`, inside a suite
//! named by the binary id). What `--partition weighted:K/N` balances the shards by. Given more than
//! once (the reports of an earlier run's shards), the reports are read as one.

use std::collections::HashMap;
use std::path::Path;

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use crate::cli::{CiOpts, PartitionKind};
use crate::errors::Error;

/// The durations `--partition weighted:K/N` balances by, read from `--durations`; none for another
/// kind. Either flag without the other is a usage error: weighted shards balanced by nothing, or a
/// report read for nothing, is a mistake worth saying before anything builds.
pub(crate) fn for_partition(ci: &CiOpts) -> Result<Option<Durations>, Error> {
    let weighted = ci
        .partition
        .is_some_and(|p| p.kind == PartitionKind::Weighted);
    match (ci.durations.as_slice(), weighted) {
        ([], false) => Ok(None),
        ([], true) => Err(Error::Usage(
            "--partition weighted:K/N needs --durations JUNIT, the JUnit report of an earlier run \
             (--junit PATH, or cargo-nextest's)"
                .into(),
        )),
        (_, false) => Err(Error::Usage(
            "--durations is read only by --partition weighted:K/N; drop it, or use a weighted \
             partition"
                .into(),
        )),
        (paths, true) => {
            let mut all = Durations::default();
            for path in paths {
                all.absorb(Durations::load(path)?);
            }
            Ok(Some(all))
        }
    }
}

/// The time of each test of an earlier run, in microseconds.
#[derive(Debug, Default)]
pub(crate) struct Durations {
    /// `(binary id, test name)` → its time.
    tests: HashMap<(String, String), u64>,
    /// Binary id → the time of all its tests: what a binary that runs whole weighs.
    binaries: HashMap<String, u64>,
}

impl Durations {
    /// Reads the JUnit report at `path`. An unreadable file, XML that does not parse, or a report
    /// without a single timed test case is an error naming the file: the shards would otherwise be
    /// balanced by nothing, quietly.
    pub(crate) fn load(path: &Path) -> Result<Durations, Error> {
        let fail = |reason: String| Error::Durations {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let durations = Durations::parse(&text).map_err(fail)?;
        if durations.tests.is_empty() {
            return Err(fail("it holds no test case with a time".into()));
        }
        Ok(durations)
    }

    fn parse(text: &str) -> Result<Durations, String> {
        let mut reader = Reader::from_str(text);
        let mut durations = Durations::default();
        let mut suite = String::new();
        loop {
            let event = reader.read_event().map_err(|e| {
                format!(
                    "not a JUnit report: {e} (at byte {})",
                    reader.error_position()
                )
            })?;
            match event {
                Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                    b"testsuite" => suite = attribute(&e, b"name").unwrap_or_default(),
                    b"testcase" => durations.add_case(&e, &suite),
                    _ => {}
                },
                Event::Eof => {
                    durations.recount();
                    return Ok(durations);
                }
                _ => {}
            }
        }
    }

    /// One `<testcase>`: its binary is its `classname`, else the suite's name. A case without a name
    /// or a readable `time` is left out (the test is then spread by hash).
    fn add_case(&mut self, case: &BytesStart<'_>, suite: &str) {
        let Some(name) = attribute(case, b"name") else {
            return;
        };
        let binary = attribute(case, b"classname").unwrap_or_else(|| suite.to_string());
        let Some(micros) = attribute(case, b"time").and_then(|t| micros(&t)) else {
            return;
        };
        let slot = self.tests.entry((binary, name)).or_default();
        // A test named twice (a report of retries): its longest time.
        *slot = (*slot).max(micros);
    }

    /// Adds another report's tests: a test in both keeps its longest time, and each binary's total is
    /// counted again from its tests, so a test in two reports is not counted twice.
    fn absorb(&mut self, other: Durations) {
        for (key, micros) in other.tests {
            let slot = self.tests.entry(key).or_default();
            *slot = (*slot).max(micros);
        }
        self.recount();
    }

    /// Each binary's total, from its tests.
    fn recount(&mut self) {
        self.binaries.clear();
        for ((binary, _), micros) in &self.tests {
            *self.binaries.entry(binary.clone()).or_default() += micros;
        }
    }

    /// How long the test took, or for `None`, the binary's tests together.
    pub(crate) fn of(&self, binary: &str, test: Option<&str>) -> Option<u64> {
        match test {
            Some(test) => self
                .tests
                .get(&(binary.to_string(), test.to_string()))
                .copied(),
            None => self.binaries.get(binary).copied(),
        }
    }
}

#[cfg(test)]
impl Durations {
    /// Durations as a report would give them: `(binary, test, µs)`.
    pub(crate) fn of_cases(cases: &[(&str, &str, u64)]) -> Durations {
        let mut d = Durations::default();
        for (binary, test, micros) in cases {
            d.tests
                .insert((binary.to_string(), test.to_string()), *micros);
        }
        d.recount();
        d
    }
}

fn attribute(element: &BytesStart<'_>, key: &[u8]) -> Option<String> {
    element
        .attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == key)
        .and_then(|a| {
            a.normalized_value(XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

/// `0.123` seconds as 123000 µs; nothing for a negative, infinite or unreadable time.
fn micros(seconds: &str) -> Option<u64> {
    let seconds: f64 = seconds.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| (seconds * 1e6).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As cargo-cleantest writes it (quick-junit), and as cargo-nextest does.
    const OURS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="cargo-cleantest" tests="3" failures="0" errors="0" time="1.5">
    <testsuite name="ct-demo::users" tests="2" disabled="0" errors="0" failures="0">
        <testcase name="adds &amp; removes" classname="ct-demo::users" time="0.250"/>
        <testcase name="slow" classname="ct-demo::users" time="1.000">
            <system-out>text</system-out>
        </testcase>
    </testsuite>
    <testsuite name="ct-demo" tests="1" disabled="0" errors="0" failures="0">
        <testcase name="tests::unit" classname="ct-demo" time="0.000"/>
    </testsuite>
</testsuites>"#;

    #[test]
    fn cases_are_read_by_binary_and_name() {
        let d = Durations::parse(OURS).unwrap();
        assert_eq!(
            d.of("ct-demo::users", Some("adds & removes")),
            Some(250_000)
        );
        assert_eq!(d.of("ct-demo::users", Some("slow")), Some(1_000_000));
        assert_eq!(d.of("ct-demo", Some("tests::unit")), Some(0));
        assert_eq!(d.of("ct-demo::users", None), Some(1_250_000));
        assert_eq!(d.of("ct-demo::users", Some("missing")), None);
    }

    #[test]
    fn the_reports_of_several_shards_are_read_as_one() {
        let mut all = Durations::of_cases(&[("b", "t1", 100), ("b", "t2", 200)]);
        all.absorb(Durations::of_cases(&[("b", "t2", 300), ("c", "t3", 50)]));
        assert_eq!(
            all.of("b", Some("t2")),
            Some(300),
            "the longest time of a test in both"
        );
        assert_eq!(
            all.of("b", None),
            Some(400),
            "a test in both is counted once"
        );
        assert_eq!(all.of("c", Some("t3")), Some(50));
    }

    #[test]
    fn a_case_without_a_classname_belongs_to_its_suite() {
        let d = Durations::parse(
            r#"<testsuites><testsuite name="b"><testcase name="t" time="2"/></testsuite></testsuites>"#,
        )
        .unwrap();
        assert_eq!(d.of("b", Some("t")), Some(2_000_000));
    }

    #[test]
    fn unreadable_times_are_left_out_and_bad_xml_is_an_error() {
        let d = Durations::parse(
            r#"<testsuite name="b"><testcase name="t" time="soon"/><testcase name="u" time="-1"/><testcase name="v" time="NaN"/></testsuite>"#,
        )
        .unwrap();
        assert!(d.tests.is_empty());
        let err = Durations::parse("<testsuite><testcase name=\"t\" time=\"1\"></testsuite>")
            .unwrap_err();
        assert!(err.starts_with("not a JUnit report"), "{err}");
    }

    #[test]
    fn a_missing_or_empty_report_is_an_error_naming_the_file() {
        let err = Durations::load(Path::new("/nonexistent/junit.xml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/junit.xml"), "{err}");
        let dir = std::env::temp_dir().join(format!("cleantest-durations-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.xml");
        std::fs::write(&empty, "<testsuites/>").unwrap();
        let err = Durations::load(&empty).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("no test case with a time"), "{err}");
    }
}
