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
pub use linux::*;
#[cfg(test)]
mod conformance;
#[cfg(target_os = "macos")]
mod macos;
pub mod tree;
#[cfg(target_os = "macos")]
pub use macos::*;

/// How a process ended, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// What this platform lets the runner promise (docs/guarantees.md, "Platforms").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Orphaned descendants are re-parented to the runner (a child subreaper), so what leaves its
    /// process group is still found among the runner's children.
    pub subreaper: bool,
    /// A container's processes are on this kernel (a local engine, not a VM's), so its socket table
    /// can be read.
    pub container_pids_visible: bool,
}

/// What the kernel says of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Its state letter (`R`, `S`, `D`, `T`, `Z`, ...).
    pub state: char,
    pub ppid: i32,
    /// Its process group.
    pub pgid: i32,
    /// When it started, in clock ticks since boot: with the pid, it names one process for good.
    pub start_time: u64,
}

impl Stat {
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
/// A wait status as `waitpid` encodes it (the low 7 bits: the signal, or 0 and the code above).
pub fn decode_wait_status(status: i32) -> Exit {
    match status & 0x7f {
        0 => Exit::Code((status >> 8) & 0xff),
        signal => Exit::Signal(signal),
    }
}

#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
/// The argument vector and the environment block of a `KERN_PROCARGS2` buffer (macOS): a native-endian
/// `int` argc, the executable path and NUL padding, argc NUL-terminated arguments, then the
/// environment's `NAME=VALUE` strings. A truncated or garbled buffer gives what could be read.
pub fn parse_procargs2(buffer: &[u8]) -> (Vec<String>, Vec<u8>) {
    let Some(argc) = buffer
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    else {
        return (Vec::new(), Vec::new());
    };
    let rest = &buffer[4..];
    // The executable path, then NULs up to the first argument.
    let Some(path_end) = rest.iter().position(|b| *b == 0) else {
        return (Vec::new(), Vec::new());
    };
    let mut at = path_end;
    while rest.get(at) == Some(&0) {
        at += 1;
    }
    let mut args = Vec::new();
    let mut strings = rest[at.min(rest.len())..].split(|b| *b == 0);
    for _ in 0..argc.max(0) {
        match strings.next() {
            Some(arg) => args.push(String::from_utf8_lossy(arg).into_owned()),
            None => return (args, Vec::new()),
        }
    }
    let mut env = Vec::new();
    for var in strings.take_while(|v| !v.is_empty()) {
        env.extend_from_slice(var);
        env.push(0);
    }
    (args, env)
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
/// In a `/proc/net/tcp` table: a line whose local port is `port` in state `0A` (LISTEN).
pub fn table_listens(text: &str, port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    text.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1).unwrap_or("");
        let state = fields.nth(1).unwrap_or("");
        local.ends_with(&wanted) && state == "0A"
    })
}

/// How many generations an ancestry walk goes up at most: a loop in a racing process table, or a very
/// deep tree, ends the walk instead of holding the caller.
pub const MAX_ANCESTRY: usize = 64;

/// `pid` and its ancestors, nearest first, up to (not including) init, at most `MAX_ANCESTRY` of them:
/// what both the control socket (is the peer a descendant?) and the proxy (whose unit made this
/// call?) walk.
pub fn ancestors(pid: i32) -> impl Iterator<Item = i32> {
    let mut next = Some(pid);
    std::iter::from_fn(move || {
        let pid = next.take()?;
        next = stat(pid).map(|s| s.ppid).filter(|p| *p > 1);
        Some(pid)
    })
    .take(MAX_ANCESTRY)
}

/// The machine's host name (`gethostname`, on every platform).
pub fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most the length given.
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    if !ok {
        return String::new();
    }
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).trim().to_string()
}

/// `NAME=VALUE` entries of an environment block (`environ`) whose name is `key`.
pub fn env_var(environ: &[u8], key: &str) -> Option<String> {
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
    fn wait_statuses_decode_as_waitpid_encodes_them() {
        assert_eq!(decode_wait_status(0), Exit::Code(0));
        assert_eq!(decode_wait_status(101 << 8), Exit::Code(101));
        assert_eq!(decode_wait_status(9), Exit::Signal(9));
        assert_eq!(decode_wait_status(15 | 0x80), Exit::Signal(15));
    }

    fn procargs(argc: i32, body: &[u8]) -> Vec<u8> {
        let mut out = argc.to_ne_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn procargs2_buffers_give_arguments_and_environment() {
        let full = procargs(
            2,
            b"/bin/sleep\0\0\0\0sleep\x00600\0CLEANTEST_SESSION=abc\0HOME=/\0\0\0",
        );
        let (args, env) = parse_procargs2(&full);
        assert_eq!(args, ["sleep", "600"]);
        assert_eq!(env_var(&env, "CLEANTEST_SESSION").as_deref(), Some("abc"));
        assert_eq!(env_var(&env, "HOME").as_deref(), Some("/"));
        // Truncated anywhere: what was there, never a panic.
        for cut in 0..full.len() {
            let _ = parse_procargs2(&full[..cut]);
        }
        let (args, env) = parse_procargs2(&full[..23]);
        assert_eq!(args, ["sleep"]);
        assert!(env.is_empty());
        assert_eq!(
            parse_procargs2(&procargs(-3, b"x\0")).0,
            Vec::<String>::new()
        );
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
        let hostname = std::process::Command::new("hostname").output().unwrap();
        assert_eq!(
            host_name(),
            String::from_utf8_lossy(&hostname.stdout).trim()
        );
    }
}
