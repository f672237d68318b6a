//! `cargo cleantest sweep`: removing the Docker resources of sessions that are over — one session, dead
//! ones (stale), kept ones, everything labelled `cleantest.session`, or what is older than a duration.
//! Resources of sessions whose runner is alive are never touched.

use std::collections::HashSet;
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use clap::Parser;

use crate::cli::parse_duration;
use crate::contract::{EXIT_LEFTOVERS, EXIT_OK, SESSION_LABEL};
use crate::docker::{self, Connection, Removal, Resource};
use crate::errors::Error;
use crate::session::stale::{print_resources, short, sweep_records};
use crate::session::state::record::{self, FoundRecord, Status};
use crate::session::state::{self, now_secs};

/// `cargo cleantest sweep [OPTIONS]`
#[derive(Parser, Debug, Default)]
#[command(name = "cargo-cleantest sweep", bin_name = "cargo cleantest sweep")]
#[command(
    about = "Remove the Docker resources of ended sessions (only what carries cleantest.session)"
)]
pub(crate) struct SweepArgs {
    /// Sweep this session
    #[arg(long = "session", value_name = "ID")]
    pub sessions: Vec<String>,
    /// Sweep sessions whose runner is dead and that were not kept
    #[arg(long)]
    pub stale: bool,
    /// Sweep sessions kept by --keep-on-failure
    #[arg(long)]
    pub kept: bool,
    /// Sweep everything labelled cleantest.session on this engine (except live sessions); asks first
    #[arg(long)]
    pub all: bool,
    /// Do not ask before --all
    #[arg(long)]
    pub yes: bool,
    /// Sweep labelled resources created longer ago than this (except live sessions)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub older_than: Option<Duration>,
    /// List what would be removed; remove nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub(crate) fn run(args: SweepArgs) -> Result<i32, Error> {
    if args.sessions.is_empty()
        && !args.stale
        && !args.kept
        && !args.all
        && args.older_than.is_none()
    {
        return Err(Error::Usage(
            "sweep without a selection; pass --session ID, --stale, --kept, --all or --older-than DURATION".into(),
        ));
    }
    let engine = match docker::connect() {
        Connection::Up(engine) => engine,
        Connection::Down {
            endpoint, reason, ..
        } => return Err(Error::DockerDown { endpoint, reason }),
    };
    let state = state::state_dir().map_err(Error::State)?;
    let records = record::all(&state);
    let live: HashSet<String> = records
        .iter()
        .filter(|f| f.alive)
        .map(|f| f.record.id.clone())
        .collect();
    let mut chosen: Vec<FoundRecord> = Vec::new();
    let mut loose: Vec<Resource> = Vec::new();
    for id in &args.sessions {
        if live.contains(id) {
            return Err(Error::Usage(format!(
                "sweep session {id}: it is still running; stop that run first"
            )));
        }
        match records.iter().find(|f| &f.record.id == id) {
            Some(f) => chosen.push(f.clone()),
            None => loose.extend(docker::list_session(&engine, id).map_err(docker_error)?),
        }
    }
    for f in &records {
        let stale = args.stale && !f.alive && f.record.status != Status::Kept;
        let kept = args.kept && !f.alive && f.record.status == Status::Kept;
        if (stale || kept) && !chosen.iter().any(|c| c.record.id == f.record.id) {
            chosen.push(f.clone());
        }
    }
    if args.all || args.older_than.is_some() {
        let cutoff = args
            .older_than
            .map(|d| now_secs().saturating_sub(d.as_secs()) as i64);
        let everything =
            docker::list(&engine, &[SESSION_LABEL.to_string()]).map_err(docker_error)?;
        loose.extend(everything.into_iter().filter(|r| {
            let session = r
                .labels
                .get(SESSION_LABEL)
                .map(String::as_str)
                .unwrap_or("");
            let old_enough = match cutoff {
                Some(cutoff) if !args.all => r.created.is_some_and(|c| c < cutoff),
                _ => true,
            };
            !live.contains(session) && old_enough
        }));
        if args.all && !args.dry_run && !args.yes && !confirm(loose.len())? {
            eprintln!("nothing removed");
            return Ok(EXIT_OK);
        }
    }
    if args.dry_run {
        sweep_records(&engine, &chosen, true);
        print_resources(&loose);
        return Ok(EXIT_OK);
    }
    let sessions = sweep_records(&engine, &chosen, false);
    let mut removal = sessions.removal;
    let mut seen: HashSet<String> = HashSet::new();
    loose.retain(|r| seen.insert(r.id.clone()));
    let extra = docker::remove(&engine, &loose);
    removal.containers += extra.containers;
    removal.networks += extra.networks;
    removal.volumes += extra.volumes;
    removal.failures.extend(extra.failures);
    removal.elapsed += extra.elapsed;
    println!("{}", removal.line());
    print_failures(&removal);
    // Records of sessions swept whole (by --session) are forgotten too.
    for id in &args.sessions {
        if let Some(f) = record::find(&state, id).filter(|_| removal.failures.is_empty()) {
            let _ = f.remove();
        }
    }
    Ok(if removal.failures.is_empty() {
        EXIT_OK
    } else {
        EXIT_LEFTOVERS
    })
}

fn docker_error(reason: String) -> Error {
    Error::DockerDown {
        endpoint: docker::engine::endpoint(),
        reason,
    }
}

fn confirm(count: usize) -> Result<bool, Error> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(format!(
            "sweep --all without confirmation: it would remove {count} labelled resource(s) on this engine; pass --yes"
        )));
    }
    eprint!("remove {count} resource(s) labelled {SESSION_LABEL} on this engine? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// What could not be removed, each with the command to retry it.
pub(crate) fn print_failures(removal: &Removal) {
    if removal.failures.is_empty() {
        return;
    }
    println!("could not remove {} resource(s):", removal.failures.len());
    for f in &removal.failures {
        println!(
            "    {} {} ({}): {}",
            f.resource.kind.word(),
            f.resource.name,
            short(&f.resource.id),
            f.error
        );
        println!("        retry: {}", docker::sweep::retry_command(f));
    }
}
