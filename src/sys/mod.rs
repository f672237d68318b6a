//! The platform room: everything the runner asks of the operating system about processes and the host
//! (the process list, a process's state, group, parent, environment and command line, the machine's
//! identity, name and free memory, the runner's own executable), behind one platform-neutral API. The
//! backend is chosen by `cfg`: `linux` reads `/proc` (the only place in the crate that does, which
//! `tests/architecture.rs` checks), in the manner of nextest's `os` modules and jobserver's `imp`.
//!
//! This module imports nothing of the crate but `contract`: it sits at the bottom of the layers.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

/// What the kernel says of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// Its state letter (`R`, `S`, `D`, `T`, `Z`, ...).
    pub state: char,
    pub ppid: i32,
    /// Its process group.
    pub pgid: i32,
    /// When it started, in clock ticks since boot: with the pid, it names one process for good.
    pub start_time: u64,
}

impl Stat {
    pub(crate) fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// `NAME=VALUE` entries of an environment block (`environ`) whose name is `key`.
pub(crate) fn env_var(environ: &[u8], key: &str) -> Option<String> {
    environ.split(|b| *b == 0).find_map(|kv| {
        let text = std::str::from_utf8(kv).ok()?;
        Some(text.strip_prefix(key)?.strip_prefix('=')?.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_found_by_exact_name() {
        let env = b"CLEANTEST_BINARY=pkg::it\0CLEANTEST_BINARYX=no\0A=1=2\0";
        assert_eq!(env_var(env, "CLEANTEST_BINARY").as_deref(), Some("pkg::it"));
        assert_eq!(env_var(env, "A").as_deref(), Some("1=2"));
        assert_eq!(env_var(env, "B"), None);
    }

    #[test]
    fn this_process_is_seen_as_it_is() {
        let me = std::process::id() as i32;
        let stat = stat(me).expect("this process has a stat");
        assert!(!stat.is_zombie());
        assert_eq!(stat.ppid, nix::unistd::getppid().as_raw());
        assert_eq!(stat.pgid, nix::unistd::getpgrp().as_raw());
        assert!(is_live(me));
        assert!(all_pids().contains(&me));
        assert!(!command_line(me).is_empty());
    }
}
