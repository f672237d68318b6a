//! `isolate = …` and `migrate = …` of a service: how each test gets a database of its own on a shared
//! server (`"database"`: postgres, cloned from a template; `"db-index"`: redis, a logical database; or
//! `{ create = [...], drop = [...] }`: commands run in the container), and what prepares the template
//! once per session (`{ sql = "dir" }` or `{ command = [...] }`). What is read here is only described;
//! `services/isolate` does it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// How a service gives each test a database of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Isolate {
    /// Postgres: a database per test, cloned from a template migrated once.
    Database,
    /// Redis: a logical database per test (`{database}` is its index), flushed before it is handed out.
    DbIndex,
    /// Any other server: `create` and `drop` run in the container with `{database}` substituted.
    Commands {
        create: Vec<String>,
        drop: Vec<String>,
    },
}

/// What prepares a postgres template, once per session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Migrate {
    /// `*.sql` of this directory (relative to the workspace root until `resolve_paths`), in name order,
    /// applied by psql in the container.
    Sql(PathBuf),
    /// This command, run on the host in `dir` (the workspace root, once `resolved`) with the service's
    /// exports pointing at the template.
    Command { argv: Vec<String>, dir: PathBuf },
}

/// `isolate` as written: a kind's name or a table of commands.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum IsolateConfig {
    Kind(String),
    Commands(CommandsTable),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandsTable {
    create: Vec<String>,
    drop: Vec<String>,
}

/// `migrate` as written: exactly one of `sql` and `command`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MigrateConfig {
    sql: Option<PathBuf>,
    command: Option<Vec<String>>,
}

impl IsolateConfig {
    pub(crate) fn check(&self) -> Result<Isolate, String> {
        match self {
            IsolateConfig::Kind(kind) if kind == "database" => Ok(Isolate::Database),
            IsolateConfig::Kind(kind) if kind == "db-index" => Ok(Isolate::DbIndex),
            IsolateConfig::Kind(kind) => Err(format!(
                "`isolate = {kind:?}` is not a kind: use \"database\" (postgres), \"db-index\" (redis), \
                 or {{ create = [...], drop = [...] }}"
            )),
            IsolateConfig::Commands(table) => {
                for (key, argv) in [("create", &table.create), ("drop", &table.drop)] {
                    if argv.is_empty() {
                        return Err(format!("`isolate.{key}` needs a command"));
                    }
                    if !argv.iter().any(|a| a.contains("{database}")) {
                        return Err(format!(
                            "`isolate.{key}` never names `{{database}}`, so every test would get the same one"
                        ));
                    }
                }
                Ok(Isolate::Commands {
                    create: table.create.clone(),
                    drop: table.drop.clone(),
                })
            }
        }
    }
}

impl MigrateConfig {
    /// The directory of `*.sql` files it names, relative to the workspace root, if any.
    pub(crate) fn sql_dir(&self) -> Option<&Path> {
        self.sql.as_deref()
    }

    pub(crate) fn check(&self, isolate: Option<&Isolate>) -> Result<Migrate, String> {
        if isolate != Some(&Isolate::Database) {
            return Err(
                "`migrate` prepares a postgres template: it goes with `isolate = \"database\"`"
                    .into(),
            );
        }
        match (&self.sql, &self.command) {
            (Some(dir), None) => Ok(Migrate::Sql(dir.clone())),
            (None, Some(argv)) if !argv.is_empty() => Ok(Migrate::Command {
                argv: argv.clone(),
                dir: PathBuf::new(),
            }),
            (None, Some(_)) => Err("`migrate.command` needs a command".into()),
            _ => Err("`migrate` needs exactly one of `sql` (a directory) and `command`".into()),
        }
    }
}

impl Migrate {
    /// The migration with its directory made absolute against `root` (checked to be one), or its
    /// command set to run there.
    pub(crate) fn resolved(&self, root: &Path) -> Result<Migrate, String> {
        match self {
            Migrate::Sql(dir) => {
                let dir = root.join(dir);
                if !dir.is_dir() {
                    return Err(format!(
                        "`migrate.sql` names {}, which is not a directory (it is read relative to the \
                         workspace root)",
                        dir.display()
                    ));
                }
                Ok(Migrate::Sql(dir))
            }
            Migrate::Command { argv, .. } => Ok(Migrate::Command {
                argv: argv.clone(),
                dir: root.to_path_buf(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_commands_are_checked() {
        assert_eq!(
            IsolateConfig::Kind("database".into()).check(),
            Ok(Isolate::Database)
        );
        assert_eq!(
            IsolateConfig::Kind("db-index".into()).check(),
            Ok(Isolate::DbIndex)
        );
        let err = IsolateConfig::Kind("schema".into()).check().unwrap_err();
        assert!(err.contains("not a kind"), "{err}");
        let table = CommandsTable {
            create: vec!["mysql".into(), "-e".into(), "CREATE DATABASE x".into()],
            drop: vec![
                "mysql".into(),
                "-e".into(),
                "DROP DATABASE {database}".into(),
            ],
        };
        let err = IsolateConfig::Commands(table).check().unwrap_err();
        assert!(
            err.contains("isolate.create") && err.contains("{database}"),
            "{err}"
        );
    }

    #[test]
    fn migrate_goes_with_a_postgres_template_and_one_way() {
        let sql = MigrateConfig {
            sql: Some("migrations".into()),
            command: None,
        };
        let err = sql.check(Some(&Isolate::DbIndex)).unwrap_err();
        assert!(err.contains("isolate = \"database\""), "{err}");
        assert_eq!(
            sql.check(Some(&Isolate::Database)),
            Ok(Migrate::Sql("migrations".into()))
        );
        let both = MigrateConfig {
            sql: Some("m".into()),
            command: Some(vec!["true".into()]),
        };
        assert!(both.check(Some(&Isolate::Database)).is_err());
        let err = Migrate::Sql("no/such/dir".into())
            .resolved(Path::new("/nonexistent"))
            .unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
    }
}
