//! `cargo cleantest sweep`: removing the Docker resources of sessions that are over — one session, dead
//! ones (stale), kept ones, everything labelled `cleantest.session`, or what is older than a duration.
//! Resources of sessions whose runner is alive are never touched: liveness comes from the session records
//! of this state directory and from the owner labels on the resources themselves (`session::owner`), so
//! it holds from any state directory. Resources of another host are swept only when their session is
//! named, or with `--other-hosts`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use clap::Parser;

use crate::cli::parse_duration;
use crate::contract::{EXIT_LEFTOVERS, EXIT_OK, RUN_LABEL, SESSION_LABEL, is_session_id};
use crate::docker::{self, Connection, Removal, Resource};
use crate::errors::Error;
use crate::session::owner::{Liveness, session_liveness};
use crate::session::stale::{print_resources, short, sweep_records};
use crate::session::state::record::{self, FoundRecord, Status};
use crate::session::state::{self, now_secs};
use crate::session::{orphans, run_id};

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
    /// With --all or --older-than: also sweep sessions of other hosts (their liveness can't be checked)
    #[arg(long)]
    pub other_hosts: bool,
    /// Sweep every session of this CI run (CLEANTEST_RUN_ID), across its shards and hosts
    #[arg(long = "run", value_name = "ID")]
    pub run: Option<String>,
    /// With --run: also sweep sessions of the run whose runner is still running on this host
    #[arg(long, requires = "run")]
    pub include_live: bool,
    /// With --session or --stale: forget the record of a selected session whose engine does not answer
    /// (whatever it left on that engine stays there)
    #[arg(long)]
    pub forget: bool,
    /// List what would be removed; remove nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub(crate) fn run(args: SweepArgs) -> Result<i32, Error> {
    check_selection(&args)?;
    let run = args.run.as_deref().map(run_id::check).transpose()?;
    let state = state::state_dir().map_err(Error::State)?;
    let records = record::all(&state);
    let engine = match docker::connect() {
        Connection::Up(engine) => engine,
        Connection::Down {
            endpoint,
            reason,
            expected,
            ..
        } => {
            return without_engine(
                &args,
                &records,
                expected,
                Error::DockerDown { endpoint, reason },
            );
        }
    };
    let live: HashSet<String> = records
        .iter()
        .filter(|f| f.alive)
        .map(|f| f.record.id.clone())
        .collect();
    let mut picked = Picked::default();
    pick_sessions(&args, &engine, &records, &live, &mut picked)?;
    for f in by_status(&args, &records) {
        if !picked.chosen.iter().any(|c| c.record.id == f.record.id) {
            picked.chosen.push(f.clone());
        }
    }
    if let Some(run) = &run {
        pick_run(&args, run, &engine, &records, &live, &mut picked)?;
    }
    if (args.all || args.older_than.is_some())
        && !pick_labelled(&args, &engine, &live, &mut picked)?
    {
        crate::output::note("nothing removed");
        return Ok(EXIT_OK);
    }
    if args.dry_run {
        let would = sweep_records(&engine, &picked.chosen, true).would_remove
            + print_resources(&picked.loose)
            + sweep_temps(&picked.chosen, true);
        if would == 0 {
            crate::output::out("nothing to sweep: the selection has no resource on this engine");
        }
        return Ok(EXIT_OK);
    }
    sweep_temps(&picked.chosen, false);
    remove_picked(&args, &engine, &state, &live, picked)
}

/// The dead sessions `--stale` (not kept) and `--kept` select.
fn by_status<'r>(args: &SweepArgs, records: &'r [FoundRecord]) -> Vec<&'r FoundRecord> {
    records
        .iter()
        .filter(|f| {
            let kept = f.record.status == Status::Kept;
            !f.alive && ((args.stale && !kept) || (args.kept && kept))
        })
        .collect()
}

/// With no engine, `--stale`, `--kept` and `--session` still remove what needs none: the sessions'
/// temporary directories (their records stay, for a sweep of their Docker resources). With no engine configured
/// at all, that is the whole sweep; else the engine's absence is the error.
fn without_engine(
    args: &SweepArgs,
    records: &[FoundRecord],
    expected: bool,
    down: Error,
) -> Result<i32, Error> {
    let only_records = args.run.is_none() && !args.all && args.older_than.is_none();
    if !only_records {
        return Err(down);
    }
    let named = records
        .iter()
        .filter(|f| !f.alive && args.sessions.contains(&f.record.id));
    let chosen: Vec<FoundRecord> = by_status(args, records)
        .into_iter()
        .chain(named)
        .cloned()
        .collect();
    let found = sweep_temps(&chosen, args.dry_run);
    match expected {
        true => Err(down),
        false if found == 0 => {
            crate::output::out(
                "nothing to sweep: no Docker engine is configured, and no temporary directory is left",
            );
            Ok(EXIT_OK)
        }
        false => Ok(EXIT_OK),
    }
}

/// The temporary directories the chosen sessions still have: said, and unless `dry_run` removed, before
/// their records go. Returns how many there were.
fn sweep_temps(chosen: &[FoundRecord], dry_run: bool) -> usize {
    let mut found = 0;
    for f in chosen {
        let id = &f.record.id;
        let Some(tmp) = f.record.tmp.as_ref().filter(|t| t.exists()) else {
            continue;
        };
        found += 1;
        if dry_run {
            crate::output::out(format!(
                "would remove the temporary directory of session {id}: {}",
                tmp.display()
            ));
            continue;
        }
        let tidied = state::remove_session_temp(id, tmp, TEMP_BOUND);
        crate::output::out(format!(
            "removed the temporary directory of session {id} ({} file(s))",
            tidied.files
        ));
        for problem in &tidied.problems {
            crate::output::warn(format!("could not remove {problem}"));
        }
    }
    found
}

/// How long a sweep may spend on one session's temporary directory.
const TEMP_BOUND: std::time::Duration = std::time::Duration::from_secs(30);

/// A sweep selects something, and `--forget` names what to forget.
fn check_selection(args: &SweepArgs) -> Result<(), Error> {
    if args.sessions.is_empty()
        && !args.stale
        && !args.kept
        && !args.all
        && args.older_than.is_none()
        && args.run.is_none()
    {
        return Err(Error::Usage(
            "sweep without a selection; pass --session ID, --run ID, --stale, --kept, --all or --older-than DURATION".into(),
        ));
    }
    if args.forget && args.sessions.is_empty() && !args.stale {
        return Err(Error::Usage(
            "--forget needs the sessions to forget: pass --session ID or --stale".into(),
        ));
    }
    Ok(())
}

/// What a sweep removes: sessions with a record here (swept with it), and resources without one.
#[derive(Default)]
struct Picked {
    chosen: Vec<FoundRecord>,
    loose: Vec<Resource>,
}

/// `--session ID`: never a live one, whether its record is here or its owner labels say so.
fn pick_sessions(
    args: &SweepArgs,
    engine: &docker::Engine,
    records: &[FoundRecord],
    live: &HashSet<String>,
    picked: &mut Picked,
) -> Result<(), Error> {
    for id in &args.sessions {
        if live.contains(id) {
            return Err(Error::Usage(format!(
                "sweep session {id}: it is still running; stop that run first"
            )));
        }
        match records.iter().find(|f| &f.record.id == id) {
            Some(f) => picked.chosen.push(f.clone()),
            None => {
                let found = docker::list_session(engine, id, &state::anonymous_volumes_of(id))
                    .map_err(docker_error)?;
                if session_liveness(found.iter().map(|r| &r.labels)) == Some(Liveness::Alive) {
                    return Err(Error::Usage(format!(
                        "sweep session {id}: its runner is still running on this host; stop that run first"
                    )));
                }
                picked.loose.extend(found);
            }
        }
    }
    Ok(())
}

/// `--run ID`: every session of the run on this engine, but those `of_run` leaves alone.
fn pick_run(
    args: &SweepArgs,
    run: &str,
    engine: &docker::Engine,
    records: &[FoundRecord],
    live: &HashSet<String>,
    picked: &mut Picked,
) -> Result<(), Error> {
    let found = docker::list(engine, &[format!("{RUN_LABEL}={run}")]).map_err(docker_error)?;
    let sessions = of_run(&found, live, args.include_live);
    for (session, held) in &sessions {
        if let Some(why) = held {
            crate::output::note(format!("left session {session} of run {run}: {why}"));
            continue;
        }
        // A live record (--include-live) is not settled here: its runner settles it.
        match records.iter().find(|f| &f.record.id == session && !f.alive) {
            Some(f) => picked.chosen.push(f.clone()),
            None => picked.loose.extend(
                docker::list_session(engine, session, &state::anonymous_volumes_of(session))
                    .map_err(docker_error)?,
            ),
        }
    }
    if sessions.is_empty() {
        crate::output::note(format!("no resource of run {run} on this engine"));
    }
    Ok(())
}

/// `--all` and `--older-than`: what carries `cleantest.session`, live sessions and (without
/// `--other-hosts`) other hosts' left alone. False when `--all` was asked about and declined.
fn pick_labelled(
    args: &SweepArgs,
    engine: &docker::Engine,
    live: &HashSet<String>,
    picked: &mut Picked,
) -> Result<bool, Error> {
    let cutoff = args
        .older_than
        .map(|d| now_secs().saturating_sub(d.as_secs()) as i64);
    let everything = docker::list(engine, &[SESSION_LABEL.to_string()]).map_err(docker_error)?;
    let liveness = liveness_by_session(&everything, live);
    let mut held = Held::default();
    for r in &everything {
        let session = session_of(r);
        let old_enough = match cutoff {
            Some(cutoff) if !args.all => r.created.is_some_and(|c| c < cutoff),
            _ => true,
        };
        match liveness[session] {
            _ if !old_enough => {}
            Some(Liveness::Alive) => held.alive.push(session),
            Some(Liveness::OtherHost) if !args.other_hosts => held.elsewhere.push(session),
            _ => picked.loose.push(r.clone()),
        }
    }
    held.report();
    Ok(!args.all || args.dry_run || args.yes || confirm(picked.loose.len())?)
}

/// Removes what was picked: the chosen sessions with their records, then the loose resources (after
/// the processes of dead sessions among them); the exit code.
fn remove_picked(
    args: &SweepArgs,
    engine: &docker::Engine,
    state: &std::path::Path,
    live: &HashSet<String>,
    picked: Picked,
) -> Result<i32, Error> {
    let Picked { chosen, mut loose } = picked;
    let sessions = sweep_records(engine, &chosen, false);
    let mut unreachable: HashSet<&str> = HashSet::new();
    for (id, line) in &sessions.unreachable {
        match record::find(state, id).filter(|_| args.forget) {
            Some(found) => match found.remove() {
                Ok(()) => crate::output::out(format!(
                    "forgot session {id}: its engine does not answer, and whatever it left there stays"
                )),
                Err(e) => {
                    crate::output::warn(format!("failed to forget session {id}: {e}"));
                    unreachable.insert(id);
                }
            },
            None => {
                crate::output::out(line);
                unreachable.insert(id);
            }
        }
    }
    if sessions.processes > 0 {
        crate::output::out(format!(
            "killed {} process(es) of dead sessions still running on this host",
            sessions.processes
        ));
    }
    let mut removal = sessions.removal;
    let mut seen: HashSet<String> = HashSet::new();
    loose.retain(|r| seen.insert(r.id.clone()));
    // Sessions with no record here whose owner labels prove them dead on this host: their processes
    // may still run (runner and reaper both SIGKILLed, the record in another state directory). They
    // carry the session in their environment; kill them before the resources go.
    let mut killed = 0;
    for (session, liveness) in liveness_by_session(&loose, live) {
        if liveness == Some(Liveness::Dead) && is_session_id(session) {
            killed += orphans::kill_session(session).len();
        }
    }
    if killed > 0 {
        crate::output::out(format!(
            "killed {killed} process(es) of dead sessions without a record here"
        ));
    }
    removal.absorb(docker::remove(engine, &loose));
    crate::output::out(removal.line());
    print_failures(&removal);
    // Records of sessions swept whole (by --session) are forgotten too; one whose engine did not answer
    // was not swept, and is kept as its line said.
    for id in &args.sessions {
        if let Some(f) = record::find(state, id)
            .filter(|_| removal.failures.is_empty() && !unreachable.contains(id.as_str()))
        {
            let _ = f.remove();
        }
    }
    Ok(if removal.failures.is_empty() && unreachable.is_empty() {
        EXIT_OK
    } else {
        EXIT_LEFTOVERS
    })
}

/// The sessions of a run's resources, each with why it is left alone, if it is: a session whose runner
/// is alive on this host is swept only with `--include-live`. Another host's sessions are named by the
/// run, so they are swept (their liveness cannot be checked from here).
fn of_run(
    found: &[Resource],
    live: &HashSet<String>,
    include_live: bool,
) -> Vec<(String, Option<&'static str>)> {
    let mut out: Vec<(String, Option<&'static str>)> = liveness_by_session(found, live)
        .into_iter()
        .filter(|(session, _)| is_session_id(session))
        .map(|(session, liveness)| {
            let alive = liveness == Some(Liveness::Alive);
            let held = (alive && !include_live).then_some(
                "its runner is still running on this host (pass --include-live to sweep it too)",
            );
            (session.to_string(), held)
        })
        .collect();
    out.sort();
    out
}

/// How alive each session of `found` is: as its record here, or any of its resources' owners, says.
/// Decided once per session, from all its resources, before any of them is selected.
fn liveness_by_session<'a>(
    found: &'a [Resource],
    live: &HashSet<String>,
) -> HashMap<&'a str, Option<Liveness>> {
    let mut by_session: HashMap<&str, Vec<&HashMap<String, String>>> = HashMap::new();
    for r in found {
        by_session.entry(session_of(r)).or_default().push(&r.labels);
    }
    by_session
        .into_iter()
        .map(|(session, labels)| {
            let alive_here = live.contains(session).then_some(Liveness::Alive);
            (session, alive_here.or_else(|| session_liveness(labels)))
        })
        .collect()
}

fn session_of(r: &Resource) -> &str {
    r.labels
        .get(SESSION_LABEL)
        .map(String::as_str)
        .unwrap_or("")
}

/// Resources `--all`/`--older-than` left alone, by session.
#[derive(Default)]
struct Held<'a> {
    alive: Vec<&'a str>,
    elsewhere: Vec<&'a str>,
}

impl Held<'_> {
    fn report(&self) {
        let sessions = |ids: &[&str]| ids.iter().collect::<HashSet<_>>().len();
        if !self.alive.is_empty() {
            crate::output::err(format!(
                "note: left {} resource(s) of {} session(s) whose runner is still running",
                self.alive.len(),
                sessions(&self.alive)
            ));
        }
        if !self.elsewhere.is_empty() {
            crate::output::err(format!(
                "note: left {} resource(s) of {} session(s) of other hosts, whose runners can't be checked from \
                 here; name them with --session ID, or pass --other-hosts",
                self.elsewhere.len(),
                sessions(&self.elsewhere)
            ));
        }
    }
}

fn docker_error(error: docker::Error) -> Error {
    Error::DockerDown {
        endpoint: docker::engine::endpoint(),
        reason: error.to_string(),
    }
}

fn confirm(count: usize) -> Result<bool, Error> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(format!(
            "sweep --all without confirmation: it would remove {count} labelled resource(s) on this engine; pass --yes"
        )));
    }
    crate::output::err_raw(format!(
        "remove {count} resource(s) labelled {SESSION_LABEL} on this engine? [y/N] "
    ));
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
    crate::output::out(format!(
        "could not remove {} resource(s):",
        removal.failures.len()
    ));
    for f in &removal.failures {
        crate::output::out(format!(
            "    {} {} ({}): {}",
            f.resource.kind.word(),
            f.resource.name,
            short(&f.resource.id),
            f.error
        ));
        crate::output::out(format!(
            "        retry: {}",
            docker::sweep::retry_command(f)
        ));
    }
}
