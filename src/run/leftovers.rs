//! What a unit left behind (processes, containers, files in its temporary directory), and which unit
//! it came from.
//!
//! Whichever look finds a leftover first (the unit's end scan of its group, the scheduler's look at
//! adopted children when a unit ends, or the session's end), the report names the unit it came from and
//! `--leak fail` fails the run for it. A process re-parented to the runner (the subreaper) is
//! attributed by what it says of itself, read before it is killed: `CLEANTEST_BINARY` and
//! `CLEANTEST_TEST` in its environment, else its process group, which is the id of the unit that
//! started it unless it left that group. `Origins` remembers every unit's group id for that.

use std::collections::HashMap;

use super::report::{Leftover, Reporter, RunSummary, UnitProblem, full_name};
use crate::session::orphans::Escaped;
use crate::sys::tree::Tidied;

/// The unit each process group id of the run belongs to.
#[derive(Debug, Default)]
pub(crate) struct Origins {
    groups: HashMap<i32, Unit>,
}

/// A unit as an escaped process names it: its binary, and its test in isolated mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unit {
    pub binary: String,
    pub test: Option<String>,
    /// Told by the process group it is still in, not by its environment.
    pub by_group: bool,
}

impl Origins {
    /// Notes that the unit of `binary` (and `test` in isolated mode) runs as group `pgid`. A group id is
    /// a pid: a later unit may get the same one, and then names itself.
    pub(crate) fn started(&mut self, pgid: i32, binary: &str, test: Option<&str>) {
        self.groups.insert(
            pgid,
            Unit {
                binary: binary.to_string(),
                test: test.map(str::to_string),
                by_group: true,
            },
        );
    }

    /// The unit `e` came from: by its environment first (exact even when its group id was reused by a
    /// later unit), then by its group; None when neither tells.
    pub(crate) fn of(&self, e: &Escaped) -> Option<Unit> {
        if let Some(binary) = &e.binary {
            return Some(Unit {
                binary: binary.clone(),
                test: e.test.clone(),
                by_group: false,
            });
        }
        e.group.and_then(|g| self.groups.get(&g)).cloned()
    }

    /// The heading a leftover from `unit` is reported under.
    pub(crate) fn label(unit: Option<&Unit>) -> String {
        match unit {
            Some(u) => {
                let name = full_name(&u.binary, u.test.as_deref().unwrap_or(""));
                if u.by_group {
                    format!("{name} (after its end)")
                } else {
                    format!("{name} (escaped its process group)")
                }
            }
            None => "the run (escaped their process groups)".into(),
        }
    }
}

/// Reports processes a unit left behind (already killed). With `--leak fail` each report is a failure
/// of the run, unless the isolated test that left them was already failed for it (`failed_as_test`).
pub(crate) fn report(
    reporter: &Reporter,
    summary: &mut RunSummary,
    leak_fails: bool,
    unit: String,
    processes: Vec<String>,
) {
    reporter.warn(&format!(
        "{unit} left {} process(es) behind; killed them",
        processes.len()
    ));
    let failed_as_test = summary
        .results
        .iter()
        .any(|r| r.full_name() == unit && r.note.is_some());
    if leak_fails && !failed_as_test {
        summary.problems.push(UnitProblem {
            binary: unit.clone(),
            message: format!("left {} process(es) behind (--leak=fail)", processes.len()),
            output: processes.join("\n"),
        });
    }
    summary.leftovers.push(Leftover {
        unit,
        what: format!("{} process(es)", processes.len()),
        items: processes,
    });
}

/// Reports escaped processes killed outside any unit's end (by `Session::cleanup` at the run's end, or
/// when a unit ended), grouped under the unit each came from.
pub(crate) fn report_escaped(
    reporter: &Reporter,
    summary: &mut RunSummary,
    leak_fails: bool,
    origins: &Origins,
    escaped: Vec<Escaped>,
) {
    let mut by_unit: Vec<(String, Vec<String>)> = Vec::new();
    for e in escaped {
        let label = Origins::label(origins.of(&e).as_ref());
        match by_unit.iter_mut().find(|(l, _)| *l == label) {
            Some((_, list)) => list.push(e.description),
            None => by_unit.push((label, vec![e.description])),
        }
    }
    for (label, processes) in by_unit {
        report(reporter, summary, leak_fails, label, processes);
    }
}

/// Reports containers a unit left running (named `NAME (IMAGE, ID)`); with `--leak=fail`, a failure of
/// that test or binary.
pub(crate) fn report_containers(
    reporter: &Reporter,
    summary: &mut RunSummary,
    leak_fails: bool,
    unit: String,
    names: Vec<String>,
) {
    reporter.warn(&format!(
        "{unit} left {} container(s) running: {}",
        names.len(),
        names.join(", ")
    ));
    if leak_fails {
        summary.problems.push(UnitProblem {
            binary: unit.clone(),
            message: format!(
                "left {} container(s) running (--leak=fail): {}",
                names.len(),
                names.join(", ")
            ),
            output: String::new(),
        });
    }
    summary.leftovers.push(Leftover {
        unit,
        what: format!("{} container(s)", names.len()),
        items: names,
    });
}

/// Files a unit (or the run) left in its temporary directory, now removed: said once, in the summary,
/// with the first few paths; what could not be removed is said too, with why. Never a failure: the
/// test's outcome stands.
pub(crate) fn report_files(summary: &mut RunSummary, unit: String, tidied: &Tidied) {
    let mut what = format!(
        "{} file(s) ({}) in its temporary directory",
        tidied.files,
        size(tidied.bytes)
    );
    what.push_str(match tidied.problems.is_empty() {
        true => " (removed)",
        false => " (removed but for what is listed)",
    });
    let items = tidied
        .problems
        .iter()
        .cloned()
        .chain(tidied.first.iter().map(|p| p.display().to_string()))
        .collect();
    summary.leftovers.push(Leftover { unit, what, items });
}

/// `512 B`, `1.0 KiB`, `3.5 MiB`, `2.0 GiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(group: Option<i32>, binary: Option<&str>) -> Escaped {
        Escaped {
            pid: 9371,
            description: "9371 sleep 1000".into(),
            group,
            started: None,
            binary: binary.map(str::to_string),
            test: None,
        }
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1 << 20), "1.0 MiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 30), "5.0 GiB");
    }

    #[test]
    fn an_escapee_is_named_by_its_environment_then_by_its_group() {
        let mut origins = Origins::default();
        origins.started(100, "pkg::leak", None);
        // Its environment was not readable yet (inside execve) or was cleared: its group tells.
        let by_group = origins.of(&escaped(Some(100), None));
        assert_eq!(by_group.as_ref().map(|u| u.by_group), Some(true));
        assert_eq!(
            Origins::label(by_group.as_ref()),
            "pkg::leak (after its end)"
        );
        // Its group id was reused by a later unit: its environment is exact.
        let by_env = origins.of(&escaped(Some(100), Some("pkg::other")));
        assert_eq!(
            Origins::label(by_env.as_ref()),
            "pkg::other (escaped its process group)"
        );
        // Neither: the run.
        assert_eq!(origins.of(&escaped(Some(7), None)), None);
    }
}
