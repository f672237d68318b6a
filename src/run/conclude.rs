//! The run's last stage: the session ended (swept, or kept after a failure) and what that did added
//! to the summary, the services' logs saved, JUnit written, the rerun hint, the reporter's last lines,
//! and how the run ended (`Outcome`).

use super::leftovers::{self, Origins};
use super::outcome::Outcome;
use super::prepare::Prepared;
use super::report::{self, Reporter, RunSummary};
use crate::cli::{RunArgs, human_bytes};
use crate::contract::SERVICE_LOGS_DIR;
use crate::docker::usage::Peak;
use crate::session::{Session, TempEnd, state};

/// What scheduling produced: the results, the reporter, and the units' process groups (for the
/// processes the session's end still finds).
pub(super) struct Scheduled {
    pub summary: RunSummary,
    pub reporter: Reporter,
    pub origins: Origins,
}

/// Ends the session and reports the run.
pub(super) fn conclude(
    args: &RunArgs,
    prepared: &Prepared,
    session: &Session,
    scheduled: Scheduled,
    partition_line: Option<String>,
) -> Outcome {
    let Scheduled {
        mut summary,
        reporter,
        origins,
    } = scheduled;
    let services = &prepared.services.monitor;
    let tests_failed = summary.tests_failed();
    let keep = args.session.keep_on_failure && tests_failed;
    // Asked before the session ends: its sweep stops the services, which is no news.
    summary.service_deaths = services.deaths();
    if tests_failed || !summary.service_deaths.is_empty() {
        summary.service_logs = state::state_dir()
            .ok()
            .and_then(|dir| services.save_logs(&dir.join(SERVICE_LOGS_DIR).join(session.id())));
    }
    let mut end = session.finish(keep).unwrap_or_default();
    summary.kept = keep;
    summary.isolated = prepared.settings.isolate;
    summary.partition = partition_line;
    summary.peak = end.peak.filter(|p| p.containers > 0).map(peak_line);
    let left_something = end.docker.as_ref().is_some_and(|e| e.left_something());
    // Found by the session's end: named by the unit each came from, and failing the run under
    // `--leak fail` like any other leftover.
    leftovers::report_escaped(
        &reporter,
        &mut summary,
        prepared.settings.leak_fails,
        &origins,
        std::mem::take(&mut end.escaped),
    );
    summary.docker_lines = end.docker_report(session.id());
    if end.kept_any() {
        summary.docker_lines.extend(prepared.services.kept_lines());
    }
    temp_end(&mut summary, end.temp.take(), session.id());
    if let Some(Err(e)) = args
        .runner
        .junit
        .as_deref()
        .map(|path| report::write_junit(path, &summary))
    {
        reporter.warn(&format!("failed to {e}"));
    }
    summary.rerun = report::rerun_hint(&summary, &rerun_flags(args, prepared.settings.isolate));
    let interrupted = session.interrupted_by();
    reporter.finish(&summary, interrupted.map(|s| s.as_str()));
    Outcome {
        interrupted,
        left_something,
        failed: summary.failed(),
    }
}

/// What the session's end did with its temporary directory, in the summary: what was left outside the
/// units' directories (each unit's were tidied as it ended), or the failed units' directories kept.
fn temp_end(summary: &mut RunSummary, temp: Option<TempEnd>, session: &str) {
    let kept = std::mem::take(&mut summary.kept_temp);
    match temp {
        Some(TempEnd::Removed(tidied)) if !tidied.is_empty() => {
            leftovers::report_files(summary, "the run".into(), &tidied);
        }
        Some(TempEnd::Kept(root)) => {
            summary.docker_lines.push(format!(
                "\nkept the temporary directories of failed tests (session {session}):"
            ));
            for (unit, dir) in &kept {
                summary
                    .docker_lines
                    .push(format!("    {unit}: {}", dir.display()));
            }
            if kept.is_empty() {
                summary
                    .docker_lines
                    .push(format!("    the session's: {}", root.display()));
            }
            summary.docker_lines.push(format!(
                "  clean up: cargo cleantest sweep --session {session}"
            ));
        }
        _ => {}
    }
}

/// The session's peak, as the summary says it.
fn peak_line(peak: Peak) -> String {
    match peak.memory {
        // Containers that lived between two samples of the engine's stats show no memory: that is
        // "not measured", not "none used".
        0 => format!(
            "session peak: {} container(s) at once; memory not sampled (they ran between samples of the engine's stats)",
            peak.containers
        ),
        memory => format!(
            "session peak: {} container(s) at once, {} of memory in use (sampled from the engine's stats)",
            peak.containers,
            human_bytes(memory)
        ),
    }
}

fn absolute(path: &std::path::Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// The flags of this run that a rerun of its failures needs too: what decides the build (features,
/// profile, target, manifest) and how tests run (`-P`, `--isolate`), quoted for a shell.
fn rerun_flags(args: &RunArgs, isolate: bool) -> Vec<String> {
    let mut out = Vec::new();
    // A run from an archive reruns from it (and refuses build flags).
    if let Some(archive) = &args.archive.archive_file {
        out.extend(["--archive-file".into(), absolute(archive)]);
        if let Some(dir) = &args.archive.workspace_remap {
            out.extend(["--workspace-remap".into(), absolute(dir)]);
        }
        if let Some(dir) = &args.archive.extract_to {
            out.extend(["--extract-to".into(), absolute(dir)]);
        }
    }
    args.features.push_flags(&mut out);
    if args.compilation.release {
        out.push("--release".into());
    }
    if let Some(profile) = &args.compilation.profile {
        out.extend(["--profile".into(), profile.clone()]);
    }
    for target in &args.compilation.target {
        out.extend(["--target".into(), target.clone()]);
    }
    if let Some(path) = &args.manifest.manifest_path {
        // As the file is, not as it was reached (`xtask/../fixtures/demo/Cargo.toml`).
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        out.extend(["--manifest-path".into(), path.display().to_string()]);
    }
    if let Some(profile) = &args.runner.profile.config_profile {
        out.extend(["-P".into(), profile.clone()]);
    }
    if isolate {
        out.push("--isolate".into());
    }
    out.iter().map(|w| report::quote(w)).collect()
}
