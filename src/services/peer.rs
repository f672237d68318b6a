//! Who is on the other end of the control socket: the peer, by its credentials, must be a process of
//! the session. The runner's own check (the protocol crate knows nothing of who may ask).

use std::os::unix::net::UnixStream;

/// Who asks: a process of the session.
pub(super) struct Caller {
    pub pid: i32,
    /// Its unit (`binary`, `test`).
    pub unit: (String, String),
    /// The databases its environment says it was given (`CLEANTEST_DATABASE_<NAME>`), by `<NAME>`.
    pub databases: Vec<(String, String)>,
}

/// The peer, if it is a process of the session: it carries the session's id, or descends from this
/// process, or (for a session host) from the host's key process.
pub(super) fn caller(
    stream: &UnixStream,
    session: &str,
    key: Option<i32>,
) -> Result<Caller, String> {
    let pid =
        crate::sys::peer_pid(stream).map_err(|e| format!("cannot identify the caller: {e}"))?;
    let var = crate::sys::env_var;
    let env = crate::sys::environ(pid).unwrap_or_default();
    let me = std::process::id() as i32;
    // A session host serves its key's descendants only: its session id can be read in its socket's
    // path, so a value in the environment proves nothing there. The runner serves its descendants, and
    // processes carrying its session (one that escaped its subreaper still does).
    let member = match key {
        Some(key) => descends_from(pid, key),
        None => {
            var(&env, crate::contract::ENV_SESSION).as_deref() == Some(session)
                || descends_from(pid, me)
        }
    };
    if !member {
        return Err(format!(
            "process {pid} is not part of session {session}: only its tests may start its services"
        ));
    }
    let prefix = crate::contract::ENV_DATABASE_PREFIX.as_bytes();
    let databases = env
        .split(|b| *b == 0)
        .filter_map(|pair| pair.strip_prefix(prefix))
        .filter_map(|rest| {
            let text = std::str::from_utf8(rest).ok()?;
            let (name, value) = text.split_once('=')?;
            Some((name.to_string(), value.to_string()))
        })
        .collect();
    Ok(Caller {
        pid,
        unit: (
            var(&env, crate::contract::ENV_BINARY).unwrap_or_default(),
            var(&env, crate::contract::ENV_TEST).unwrap_or_default(),
        ),
        databases,
    })
}

/// Whether `pid`'s ancestry reaches `ancestor`.
fn descends_from(pid: i32, ancestor: i32) -> bool {
    crate::sys::ancestors(pid).any(|p| p == ancestor)
}
