//! Who owns a session's resources, told by the resources themselves. Every resource the session labels
//! carries its runner's host identity, pid and the pid's start time (`cleantest.host`, `cleantest.pid`,
//! `cleantest.pid-start`). A sweep from any state directory — another user, sudo, a CI job with its own
//! HOME — reads them and so never removes what a live runner still uses, even with no record of it.
//!
//! The host identity is the kernel's boot id and the runner's pid namespace: a pid means something only
//! within one boot and one namespace. A runner in another container on the same machine, or on another
//! machine sharing the engine, is "another host": its liveness cannot be checked from here, so such
//! resources are swept only when their session is named or the user opts in.

use std::collections::HashMap;

use crate::contract::{HOST_LABEL, PID_LABEL, PID_START_LABEL};

/// The runner that owns a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub host: String,
    pub pid: u32,
    pub start: u64,
}

/// What the owner labels prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// This host, and the pid still runs with the same start time.
    Alive,
    /// This host, and that process is gone (or the pid now belongs to another process).
    Dead,
    /// Another boot, machine or pid namespace: nothing can be proved from here.
    OtherHost,
}

impl Owner {
    /// This process.
    pub(crate) fn me() -> Owner {
        let pid = std::process::id();
        Owner {
            host: host_identity(),
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// The labels that name this owner.
    pub(crate) fn labels(&self) -> Vec<(String, String)> {
        vec![
            (HOST_LABEL.to_string(), self.host.clone()),
            (PID_LABEL.to_string(), self.pid.to_string()),
            (PID_START_LABEL.to_string(), self.start.to_string()),
        ]
    }

    /// The owner a resource's labels name, if they name one completely.
    pub(crate) fn from_labels(labels: &HashMap<String, String>) -> Option<Owner> {
        Some(Owner {
            host: labels.get(HOST_LABEL)?.clone(),
            pid: labels.get(PID_LABEL)?.parse().ok()?,
            start: labels.get(PID_START_LABEL)?.parse().ok()?,
        })
    }

    pub(crate) fn liveness(&self) -> Liveness {
        if self.host.is_empty() || self.host != host_identity() {
            return Liveness::OtherHost;
        }
        match start_time(self.pid) {
            Some(start) if start == self.start => Liveness::Alive,
            _ => Liveness::Dead,
        }
    }
}

/// `<boot id>/<pid namespace inode>` (`sys::host_identity`); empty when it cannot be read (then nothing
/// is "this host").
pub(crate) fn host_identity() -> String {
    crate::sys::host_identity()
}

/// A live (not zombie) process's start time, in clock ticks since boot.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = crate::sys::stat(i32::try_from(pid).ok()?)?;
    (!stat.is_zombie()).then_some(stat.start_time)
}

/// A session's liveness from every owner its resources name: alive if any names a live runner here,
/// else another host if any names one, else dead. None when no resource names an owner.
pub(crate) fn session_liveness<'a>(
    labels: impl IntoIterator<Item = &'a HashMap<String, String>>,
) -> Option<Liveness> {
    let mut best: Option<Liveness> = None;
    for owner in labels.into_iter().filter_map(Owner::from_labels) {
        best = Some(match (best, owner.liveness()) {
            (_, Liveness::Alive) | (Some(Liveness::Alive), _) => Liveness::Alive,
            (_, Liveness::OtherHost) | (Some(Liveness::OtherHost), _) => Liveness::OtherHost,
            _ => Liveness::Dead,
        });
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(owner: &Owner) -> HashMap<String, String> {
        owner.labels().into_iter().collect()
    }

    #[test]
    fn this_process_is_alive_and_round_trips_through_labels() {
        let me = Owner::me();
        assert!(!me.host.is_empty());
        assert_eq!(Owner::from_labels(&labels(&me)), Some(me.clone()));
        assert_eq!(me.liveness(), Liveness::Alive);
    }

    #[test]
    fn a_reused_pid_or_an_exited_process_is_dead() {
        let me = Owner::me();
        let reused = Owner {
            start: me.start + 1,
            ..me.clone()
        };
        assert_eq!(reused.liveness(), Liveness::Dead);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let gone = Owner { pid, ..me.clone() };
        assert_eq!(gone.liveness(), Liveness::Dead);
    }

    #[test]
    fn another_boot_or_namespace_is_another_host() {
        let me = Owner::me();
        for host in ["", "other-boot/4026531836", "x"] {
            let other = Owner {
                host: host.into(),
                ..me.clone()
            };
            assert_eq!(other.liveness(), Liveness::OtherHost);
        }
    }

    #[test]
    fn a_session_is_alive_if_any_owner_is() {
        let me = Owner::me();
        let dead = Owner {
            start: me.start + 1,
            ..me.clone()
        };
        let other = Owner {
            host: "elsewhere".into(),
            ..me.clone()
        };
        let (me, dead, other) = (labels(&me), labels(&dead), labels(&other));
        assert_eq!(
            session_liveness([&dead, &other, &me]),
            Some(Liveness::Alive)
        );
        assert_eq!(session_liveness([&dead, &other]), Some(Liveness::OtherHost));
        assert_eq!(session_liveness([&dead]), Some(Liveness::Dead));
        assert_eq!(session_liveness([&HashMap::new()]), None);
        let partial: HashMap<String, String> = [(PID_LABEL.to_string(), "1".to_string())].into();
        assert_eq!(session_liveness([&partial]), None);
    }
}
