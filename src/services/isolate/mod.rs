//! Isolation on a shared service: every test (or test process) its own database on the session's
//! server, handed out from a warm pool and dropped when its holder is done.
//!
//! - `server`: what isolating means on postgres, redis and a server with the user's commands.
//! - `migrate`: the template's migrations, once per session.
//! - `pool`: databases made ahead of need, and dropped, on threads of their own.
//!
//! Holders: a process (its env names its database; the lease ends with the process), or a test in a
//! process (`cleantest::database`, keyed by the caller's pid and its test's name; released by its
//! result line, its process's end, or the crate's drop under another runner). Whatever is left goes
//! with the container when the session is swept.

mod migrate;
mod pool;
mod server;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pool::Pool;
use server::Server;

use super::Running;
use super::env_name;
use crate::config::services::ServiceSpec;
use crate::contract::ENV_DATABASE_PREFIX;
use crate::docker::Engine;
use crate::session::locked;

/// Why a test has no database.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IsolateError {
    #[error("service `{service}` does not isolate: give it `isolate` (docs/services.md)")]
    NotIsolating { service: String },
    #[error("service `{service}` has no database for the test: {why}")]
    NoDatabase { service: String, why: String },
    #[error("{why}")]
    Prepare { why: String },
}

impl IsolateError {
    /// The service it is about, if it names one.
    pub(crate) fn service(&self) -> Option<&str> {
        match self {
            IsolateError::NotIsolating { service } | IsolateError::NoDatabase { service, .. } => {
                Some(service)
            }
            IsolateError::Prepare { .. } => None,
        }
    }
}

/// What a process about to start gets: the environment naming its databases, and their leases.
#[derive(Default)]
pub(crate) struct ProcessDatabases {
    pub env: Vec<(String, String)>,
    pub leases: Vec<Lease>,
}

/// A database handed to a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Database {
    pub service: String,
    pub name: String,
    /// The service's exports rendered for it.
    pub exports: Vec<(String, String)>,
}

impl Database {
    /// What `--keep-on-failure` says of it: its name and exports, ready for a client.
    pub(crate) fn kept_line(&self, holder: &str) -> String {
        let exports: Vec<String> = self
            .exports
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "kept database `{}` of service `{}` for {holder}: {}",
            self.name,
            self.service,
            exports.join(" ")
        )
    }
}

/// A database held by a process of the run: released when dropped, unless kept.
pub(crate) struct Lease {
    pool: Arc<Pool>,
    database: Option<Database>,
}

impl Lease {
    /// Keeps the database past its holder (`--keep-on-failure`): it goes with the container.
    pub(crate) fn keep(mut self) -> Database {
        let database = self
            .database
            .take()
            .expect("a lease holds its database until dropped");
        self.pool.release(database.name.clone(), true);
        database
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(database) = self.database.take() {
            self.pool.release(database.name, false);
        }
    }
}

/// One isolating service.
struct Isolated {
    running: Running,
    pool: Arc<Pool>,
}

impl Isolated {
    fn lease(&self) -> Result<Lease, IsolateError> {
        let name = self.pool.take().map_err(|why| IsolateError::NoDatabase {
            service: self.running.name.clone(),
            why,
        })?;
        Ok(Lease {
            pool: self.pool.clone(),
            database: Some(Database {
                service: self.running.name.clone(),
                exports: self.running.exports_for(Some(&name)),
                name,
            }),
        })
    }
}

/// Who holds a test's database: the caller's pid and its test's name.
type Holder = (i32, String);

/// The session's isolating services and the databases tests hold.
#[derive(Default)]
pub(crate) struct Databases {
    services: Mutex<Vec<Arc<Isolated>>>,
    held: Mutex<HashMap<Holder, Vec<Lease>>>,
    /// One service is prepared at a time (a host prepares on a first request).
    preparing: Mutex<()>,
}

impl Databases {
    /// Whether `service` isolates here already.
    pub(crate) fn has(&self, service: &str) -> bool {
        locked(&self.services)
            .iter()
            .any(|s| s.running.name == service)
    }

    /// Prepares `running` (the service `spec`, which isolates) once: its template made and migrated, and
    /// a pool keeping `ahead` databases ready. An error is the migration's (or the server's) output.
    pub(crate) fn add(
        &self,
        engine: &Engine,
        spec: &ServiceSpec,
        running: &Running,
        ahead: usize,
    ) -> Result<(), IsolateError> {
        let Some(isolate) = &spec.isolate else {
            return Ok(());
        };
        let _one = locked(&self.preparing);
        if self.has(&spec.name) {
            return Ok(());
        }
        let prepare = |why| IsolateError::Prepare { why };
        let mut server = Server::new(engine.clone(), running.id.clone(), spec, isolate);
        let names = server.prepare().map_err(prepare)?;
        if let Some(migrate) = &spec.migrate {
            migrate::apply(&server, migrate, running).map_err(prepare)?;
        }
        server.seal().map_err(prepare)?;
        let pool = Pool::start(server, names, ahead).map_err(|e| IsolateError::Prepare {
            why: format!("cannot start the pool's threads: {e}"),
        })?;
        // The first tests find databases ready (this runs while cargo builds).
        if let Err(why) = pool.wait_filled() {
            pool.close();
            return Err(prepare(why));
        }
        locked(&self.services).push(Arc::new(Isolated {
            running: running.clone(),
            pool,
        }));
        Ok(())
    }

    /// A database of its own for each isolating service with an export that names `{database}`, for
    /// a process about to start: the exports rendered for it and `CLEANTEST_DATABASE_<NAME>`, and the
    /// leases that end with it.
    pub(crate) fn for_process(&self) -> Result<ProcessDatabases, IsolateError> {
        let services = locked(&self.services).clone();
        let (mut env, mut leases) = (Vec::new(), Vec::new());
        for service in services
            .iter()
            .filter(|s| s.running.export.iter().any(|(_, t)| t.needs_database()))
        {
            let lease = service.lease()?;
            let database = lease.database();
            env.extend(database.exports.iter().cloned());
            env.push((
                format!("{ENV_DATABASE_PREFIX}{}", env_name(&service.running.name)),
                database.name.clone(),
            ));
            leases.push(lease);
        }
        Ok(ProcessDatabases { env, leases })
    }

    /// The database of `service` for the test `test` of process `pid`: the same on a second call.
    pub(crate) fn for_test(
        &self,
        pid: i32,
        test: &str,
        service: &str,
    ) -> Result<Database, IsolateError> {
        let isolated = locked(&self.services)
            .iter()
            .find(|s| s.running.name == service)
            .cloned()
            .ok_or_else(|| IsolateError::NotIsolating {
                service: service.to_string(),
            })?;
        let holder = (pid, test.to_string());
        if let Some(lease) = locked(&self.held)
            .get(&holder)
            .and_then(|leases| leases.iter().find(|l| l.pool_is(&isolated.pool)))
        {
            return Ok(lease.database().clone());
        }
        // Taken without the lock: a take may wait for the pool.
        let lease = isolated.lease()?;
        let database = lease.database().clone();
        locked(&self.held).entry(holder).or_default().push(lease);
        Ok(database)
    }

    /// The database `name` that the process knows it holds (from its environment), if it is one of
    /// `service`'s: what an isolated test's own calls get.
    pub(crate) fn named(&self, service: &str, name: &str) -> Option<Database> {
        let services = locked(&self.services);
        let isolated = services.iter().find(|s| s.running.name == service)?;
        Some(Database {
            service: service.to_string(),
            name: name.to_string(),
            exports: isolated.running.exports_for(Some(name)),
        })
    }

    /// The test `test` of process `pid` ended (`failed`, and kept when `keep`): its databases are
    /// dropped, or kept and described.
    pub(crate) fn release_test(&self, pid: i32, test: &str, keep: bool) -> Vec<Database> {
        // Called for every result line of every run: nothing is built when nothing is held.
        let leases = {
            let mut held = locked(&self.held);
            if held.is_empty() {
                return Vec::new();
            }
            held.remove(&(pid, test.to_string()))
        };
        settle(leases.unwrap_or_default(), keep)
    }

    /// Process `pid` ended: what its tests still hold is released (kept when `keep`).
    pub(crate) fn release_process(&self, pid: i32, keep: bool) -> Vec<Database> {
        let leases: Vec<Lease> = {
            let mut held = locked(&self.held);
            let holders: Vec<Holder> = held.keys().filter(|(p, _)| *p == pid).cloned().collect();
            holders
                .iter()
                .flat_map(|h| held.remove(h).unwrap_or_default())
                .collect()
        };
        settle(leases, keep)
    }

    /// A holder gives back `name` of `service` (the crate's drop, under a session host).
    pub(crate) fn give_back(&self, pid: i32, service: &str, name: &str) -> bool {
        let mut held = locked(&self.held);
        for ((holder, _), leases) in held.iter_mut() {
            if *holder != pid {
                continue;
            }
            let at = leases.iter().position(|l| {
                let d = l.database();
                d.service == service && d.name == name
            });
            if let Some(at) = at {
                leases.remove(at);
                return true;
            }
        }
        false
    }

    /// Stops every pool (the session is ending; the containers go with it).
    pub(crate) fn close(&self) {
        for service in locked(&self.services).iter() {
            service.pool.close();
        }
    }
}

impl Lease {
    fn pool_is(&self, pool: &Arc<Pool>) -> bool {
        Arc::ptr_eq(&self.pool, pool)
    }

    /// The database it holds.
    pub(crate) fn database(&self) -> &Database {
        self.database
            .as_ref()
            .expect("a lease holds its database until dropped")
    }
}

/// Releases `leases`, or keeps them and says which they were.
pub(crate) fn settle(leases: Vec<Lease>, keep: bool) -> Vec<Database> {
    if keep {
        leases.into_iter().map(Lease::keep).collect()
    } else {
        drop(leases);
        Vec::new()
    }
}
