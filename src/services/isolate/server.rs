//! What isolating means on each kind of server, as commands run in its container: preparing (a
//! postgres template, a redis server's index count), making a database for a test, and dropping it.
//! Every command goes through the engine's exec; nothing here connects to the server itself.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::services::{Isolate, ServiceSpec};
use crate::docker::Engine;
use crate::docker::attached::Attached;
use crate::docker::container;
use crate::session::locked;

/// The template every postgres database of a test is cloned from.
pub(crate) const TEMPLATE: &str = "cleantest_template";

/// How long one make or drop may take (a drop on slow storage takes about a second).
const EXEC_BOUND: Duration = Duration::from_secs(120);

/// A server's isolation, in its container.
pub(super) struct Server {
    engine: Engine,
    id: String,
    kind: Kind,
    /// psql sessions kept open in the container, idle: a batch of statements costs no exec.
    sessions: Mutex<Vec<Attached>>,
    asked: AtomicU64,
}

enum Kind {
    /// `file_copy`: clones copy the template's files (fast when fsync is off: its checkpoints cost
    /// nothing), else they go through the WAL, postgres's default.
    Postgres {
        user: String,
        file_copy: bool,
    },
    Redis,
    Commands {
        create: Vec<String>,
        drop: Vec<String>,
    },
}

/// What a test's databases are named from.
pub(super) enum Names {
    /// Made as needed, `cleantest_1`, `cleantest_2`, …; dropped for good.
    Counted,
    /// A fixed set (redis's indexes): reset and reused, never two tests at once.
    Fixed(Vec<String>),
}

impl Server {
    pub(super) fn new(engine: Engine, id: String, spec: &ServiceSpec, isolate: &Isolate) -> Server {
        let kind = match isolate {
            Isolate::Database => Kind::Postgres {
                user: spec
                    .env
                    .iter()
                    .find(|(k, _)| k == "POSTGRES_USER")
                    .map_or("postgres".to_string(), |(_, v)| v.clone()),
                file_copy: false,
            },
            Isolate::DbIndex => Kind::Redis,
            Isolate::Commands { create, drop } => Kind::Commands {
                create: create.clone(),
                drop: drop.clone(),
            },
        };
        Server {
            engine,
            id,
            kind,
            sessions: Mutex::default(),
            asked: AtomicU64::new(0),
        }
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// Runs `argv` in the container; its output when it exits 0, else why not.
    pub(super) fn run(&self, argv: &[String], bound: Duration) -> Result<String, String> {
        match container::exec(&self.engine, &self.id, argv, bound) {
            Ok((0, output)) => Ok(output),
            Ok((code, output)) => Err(format!(
                "`{}` exited with code {code}: {output}",
                argv.join(" ")
            )),
            Err(e) => Err(format!("`{}` could not run: {e}", argv.join(" "))),
        }
    }

    /// psql as the service's user on `database`, stopping at the first error.
    pub(super) fn psql(
        &self,
        database: &str,
        args: &[String],
        bound: Duration,
    ) -> Result<String, String> {
        let Kind::Postgres { user, .. } = &self.kind else {
            return Err("psql runs only in a postgres service".into());
        };
        let mut argv: Vec<String> = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U"]
            .map(String::from)
            .to_vec();
        argv.extend([user.clone(), "-d".into(), database.into()]);
        argv.extend(args.iter().cloned());
        self.run(&argv, bound)
    }

    /// Runs `statements` on the `postgres` database through an open psql session (one is opened when
    /// none is idle), then counts which of `names` exist: they must be `exist` (made) or not (dropped).
    /// The count is the proof, read from psql's output; a session that fails is closed, never reused.
    fn statements(
        &self,
        statements: &[String],
        names: &[String],
        exist: bool,
    ) -> Result<(), String> {
        let Kind::Postgres { user, .. } = &self.kind else {
            return Err("psql runs only in a postgres service".into());
        };
        let idle = locked(&self.sessions).pop();
        let session = match idle {
            Some(session) => session,
            None => {
                let argv =
                    ["psql", "-X", "-q", "-At", "-U", user, "-d", "postgres"].map(String::from);
                Attached::open(&self.engine, &self.id, &argv)
                    .map_err(|e| format!("`psql` could not start: {e}"))?
            }
        };
        let marker = format!(
            "cleantest-done-{}",
            self.asked.fetch_add(1, Ordering::Relaxed)
        );
        let listed: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
        let mut text: String = statements.iter().map(|s| format!("{s};\n")).collect();
        text.push_str(&format!(
            "SELECT 'count=' || count(*) FROM pg_database WHERE datname IN ({});\n\\echo {marker}\n",
            listed.join(", ")
        ));
        let answer = session
            .ask(&text, &marker, EXEC_BOUND)
            .map_err(|e| e.to_string())?;
        locked(&self.sessions).push(session);
        let expected = format!("count={}", if exist { names.len() } else { 0 });
        match answer.lines().any(|l| l.trim() == expected) {
            true => Ok(()),
            false => Err(answer.trim().to_string()),
        }
    }

    /// Gets the server ready to make databases; says how they are named. Postgres: an empty template
    /// (a previous one dropped), which the caller migrates and then `seal`s. Redis: its index count.
    pub(super) fn prepare(&mut self) -> Result<Names, String> {
        match &self.kind {
            Kind::Postgres { .. } => {
                let sql = [
                    format!("DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"),
                    format!("CREATE DATABASE {TEMPLATE}"),
                ];
                self.psql("postgres", &commands(&sql), EXEC_BOUND)?;
                // Measured on a 60-table template on tmpfs with fsync off: 24 ms a clone by file copy,
                // 40 ms through the WAL.
                let fsync = self.psql(
                    "postgres",
                    &["-At".into(), "-c".into(), "SHOW fsync".into()],
                    EXEC_BOUND,
                )?;
                if let Kind::Postgres { file_copy, .. } = &mut self.kind {
                    *file_copy = fsync.trim() == "off";
                }
                Ok(Names::Counted)
            }
            Kind::Redis => {
                let argv = ["redis-cli", "--raw", "CONFIG", "GET", "databases"].map(String::from);
                let out = self.run(&argv, EXEC_BOUND)?;
                let count: u32 = out
                    .lines()
                    .nth(1)
                    .and_then(|n| n.trim().parse().ok())
                    .ok_or_else(|| format!("`CONFIG GET databases` answered {out:?}"))?;
                // Index 0 stays the shared one, for whoever reads no database.
                Ok(Names::Fixed((1..count).map(|i| i.to_string()).collect()))
            }
            Kind::Commands { .. } => Ok(Names::Counted),
        }
    }

    /// The template, migrated, made a template no test connects to.
    pub(super) fn seal(&self) -> Result<(), String> {
        if let Kind::Postgres { .. } = self.kind {
            let sql = [format!(
                "ALTER DATABASE {TEMPLATE} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
            )];
            self.psql("postgres", &commands(&sql), EXEC_BOUND)?;
        }
        Ok(())
    }

    /// Makes `names` ready for tests: clones of the template, flushed indexes, or the user's `create`.
    pub(super) fn make(&self, names: &[String]) -> Result<(), String> {
        match &self.kind {
            Kind::Postgres { file_copy, .. } => {
                let strategy = if *file_copy {
                    " STRATEGY FILE_COPY"
                } else {
                    ""
                };
                let sql: Vec<String> = names
                    .iter()
                    .map(|n| format!("CREATE DATABASE \"{n}\" TEMPLATE {TEMPLATE}{strategy}"))
                    .collect();
                self.statements(&sql, names, true)
            }
            Kind::Redis => names.iter().try_for_each(|n| self.flush(n)),
            Kind::Commands { create, .. } => self.run_each(create, names),
        }
    }

    /// Drops `names` (redis indexes are flushed, to be handed out again).
    pub(super) fn drop(&self, names: &[String]) -> Result<(), String> {
        match &self.kind {
            Kind::Postgres { .. } => {
                let sql: Vec<String> = names
                    .iter()
                    .map(|n| format!("DROP DATABASE IF EXISTS \"{n}\" WITH (FORCE)"))
                    .collect();
                self.statements(&sql, names, false)
            }
            Kind::Redis => names.iter().try_for_each(|n| self.flush(n)),
            Kind::Commands { drop, .. } => self.run_each(drop, names),
        }
    }

    /// Runs the user's `argv` once for each of `names`, `{database}` substituted.
    fn run_each(&self, argv: &[String], names: &[String]) -> Result<(), String> {
        names
            .iter()
            .try_for_each(|n| self.run(&substituted(argv, n), EXEC_BOUND).map(|_| ()))
    }

    fn flush(&self, index: &str) -> Result<(), String> {
        let argv = ["redis-cli", "-n", index, "FLUSHDB"].map(String::from);
        let out = self.run(&argv, EXEC_BOUND)?;
        // redis-cli exits 0 on a server error, and says it.
        match out.trim() {
            "OK" => Ok(()),
            other => Err(format!("`redis-cli -n {index} FLUSHDB` answered {other:?}")),
        }
    }
}

/// `-c SQL` for each statement: psql runs each in a transaction of its own (CREATE DATABASE refuses
/// to run inside one with others).
fn commands(sql: &[String]) -> Vec<String> {
    sql.iter()
        .flat_map(|s| ["-c".to_string(), s.clone()])
        .collect()
}

fn substituted(argv: &[String], database: &str) -> Vec<String> {
    argv.iter()
        .map(|a| a.replace("{database}", database))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_go_one_per_flag_and_names_are_substituted() {
        assert_eq!(
            commands(&["A".into(), "B".into()]),
            vec!["-c", "A", "-c", "B"]
        );
        let argv = vec![
            "mysql".into(),
            "-e".into(),
            "DROP DATABASE {database}".into(),
        ];
        assert_eq!(
            substituted(&argv, "cleantest_4")[2],
            "DROP DATABASE cleantest_4"
        );
    }
}
