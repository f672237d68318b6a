//! Sweeping recorded sessions that are over: the dead, not-kept sessions of this host at the start of
//! every run, and the sessions `cargo cleantest sweep` selects. A record is deleted only once its
//! session's resources are all gone, so a failed sweep is retried by a later run.

use std::collections::HashSet;
use std::path::Path;

use super::state::host_name;
use super::state::record::{self, FoundRecord, Status};
use crate::contract::SESSION_LABEL;
use crate::docker::{self, Engine, Removal, Resource};

/// What a sweep of several sessions did.
#[derive(Debug, Default)]
pub(crate) struct StaleReport {
    pub sessions: usize,
    pub removal: Removal,
}

impl StaleReport {
    /// One line, when there was anything to say.
    pub(crate) fn line(&self) -> Option<String> {
        let r = &self.removal;
        (r.containers + r.networks + r.volumes > 0 || !r.failures.is_empty())
            .then(|| format!("{} of {} dead session(s)", r.line(), self.sessions))
    }
}

/// Sweeps the sessions of dead runners that were not kept (of this host only, when `this_host`).
pub(crate) fn sweep_stale(
    engine: &Engine,
    state: &Path,
    this_host: bool,
    dry_run: bool,
) -> StaleReport {
    let host = host_name();
    let records: Vec<FoundRecord> = record::all(state)
        .into_iter()
        .filter(|f| {
            !f.alive && f.record.status != Status::Kept && (!this_host || f.record.host == host)
        })
        .collect();
    sweep_records(engine, &records, dry_run)
}

pub(crate) fn sweep_records(
    engine: &Engine,
    records: &[FoundRecord],
    dry_run: bool,
) -> StaleReport {
    let mut report = StaleReport {
        sessions: records.len(),
        ..Default::default()
    };
    let mut found = Vec::new();
    let mut listed = Vec::new();
    for f in records {
        if let Ok(resources) = docker::list_session(engine, &f.record.id) {
            found.extend(resources);
            listed.push(f);
        }
    }
    if dry_run {
        print_resources(&found);
        return report;
    }
    report.removal = docker::remove(engine, &found);
    let failed: HashSet<&str> = report
        .removal
        .failures
        .iter()
        .filter_map(|f| f.resource.labels.get(SESSION_LABEL).map(String::as_str))
        .collect();
    for f in listed {
        if !failed.contains(f.record.id.as_str()) {
            let _ = f.remove();
        }
    }
    report
}

/// The resources a dry run would remove, one per line.
pub(crate) fn print_resources(resources: &[Resource]) {
    for r in resources {
        let session = r
            .labels
            .get(SESSION_LABEL)
            .map(String::as_str)
            .unwrap_or("?");
        println!(
            "would remove {} {} ({}) of session {session}",
            r.kind.word(),
            r.name,
            short(&r.id)
        );
    }
}

/// The first 12 characters of an engine id, as the docker CLI shows them.
pub(crate) fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
