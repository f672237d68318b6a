//! Starting a session, for test runs and `exec` alike: its record in the state directory, the Docker
//! engine, the sweep of this host's dead sessions, and the environment lock.

use std::path::Path;
use std::sync::Arc;

use crate::cli::SessionOpts;
use crate::docker::{self, Connection};
use crate::errors::Error;
use crate::lock::{self, EnvLock};
use crate::session::{DockerState, Session};
use crate::state::{self, record::OwnRecord};
use crate::sweep_cmd;

/// Prepares `session` for running things in `workspace`. The returned lock is held until dropped.
pub(crate) fn start(
    session: &Arc<Session>,
    opts: &SessionOpts,
    profile_lock: Option<&str>,
    workspace: &Path,
) -> Result<Option<EnvLock>, Error> {
    let state = state::state_dir().map_err(Error::State)?;
    let endpoint = docker::engine::endpoint();
    let record =
        OwnRecord::create(&state, session.id(), workspace, &endpoint).map_err(Error::State)?;
    session.set_record(record);
    let docker = match docker::connect() {
        Connection::Up(engine) => DockerState::Up(engine),
        Connection::Down {
            endpoint,
            expected,
            reason,
        } => {
            // No noise for projects that never touch Docker: only a configured engine is worth a word.
            if std::env::var_os("DOCKER_HOST").is_some_and(|h| !h.is_empty()) {
                eprintln!(
                    "warning: no Docker engine answers at {endpoint} ({reason}); containers will not be swept"
                );
            }
            DockerState::Down {
                endpoint,
                reason,
                expected,
            }
        }
    };
    if let (DockerState::Up(engine), false) = (&docker, opts.no_stale_sweep) {
        let report = sweep_cmd::sweep_stale(engine, &state, true, false);
        if let Some(line) = report.line() {
            eprintln!("stale sweep: {line}");
        }
    }
    session.set_docker(docker);
    if opts.no_lock {
        return Ok(None);
    }
    let name = lock::lock_name(opts.lock.as_deref().or(profile_lock), workspace);
    lock::acquire(&state, &name, session.id(), opts.lock_timeout).map(Some)
}
