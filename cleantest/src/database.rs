//! A database of its own for a test, on a session service that isolates (`isolate = "database"`,
//! `"db-index"`, or commands): see [`database`].

use std::collections::BTreeMap;

use super::{control, host, session, socket, Error};

/// A test's own database on an isolating service: its name, and the service's exports rendered for
/// it. Under `cargo cleantest` it ends with the test's result (kept with `--keep-on-failure` when the
/// test fails); under another runner, when this handle is dropped. Whatever is left goes with the
/// service's container at the end of the session.
#[derive(Debug)]
pub struct Database {
    service: String,
    name: String,
    exports: BTreeMap<String, String>,
    /// The session host to give it back to, when one handed it out.
    host_socket: Option<String>,
}

impl Database {
    pub(crate) fn new(service: &str, name: String, exports: BTreeMap<String, String>) -> Self {
        Database {
            service: service.to_string(),
            name,
            exports,
            host_socket: None,
        }
    }

    /// The database's name on its server (postgres: the database; redis: the index).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The service it is on.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// An `export` of the service, rendered for this database (`{database}` is its name).
    pub fn export(&self, key: &str) -> Option<&str> {
        self.exports.get(key).map(String::as_str)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(socket) = &self.host_socket {
            control::release(&self.service, &self.name, socket);
        }
    }
}

/// The calling test's own database on the isolating service `service`: handed out from a pool of
/// clones of a template migrated once, so it is quick. The same test gets the same database on a
/// second call; two tests never share one, even when they run at once.
///
/// ```no_run
/// let db = cleantest::database("db").expect("the db service isolates");
/// let url = db.export("DATABASE_URL").expect("db exports DATABASE_URL");
/// assert!(url.ends_with(db.name()));
/// ```
pub fn database(service: &str) -> Result<Database, Error> {
    let socket = socket()?;
    // libtest runs each test on a thread named after it.
    let key = std::thread::current().name().map_or_else(
        || format!("{:?}", std::thread::current().id()),
        str::to_string,
    );
    let mut database = control::database(service, &key, &socket)?;
    if session().is_none() && host::enabled() {
        database.host_socket = Some(socket);
    }
    Ok(database)
}
