//! The Linux backend: `/proc`. Every read of `/proc` in the crate is here.

use std::path::PathBuf;

use std::os::fd::AsFd;

use super::{Capabilities, Exit, Stat};

/// Linux: every guarantee.
pub fn capabilities() -> Capabilities {
    Capabilities {
        subreaper: is_subreaper(),
        container_pids_visible: true,
    }
}

/// Makes this process the reaper of its orphaned descendants. False where the kernel refuses.
pub fn become_subreaper() -> bool {
    nix::sys::prctl::set_child_subreaper(true).is_ok()
}

/// Whether this process is a child subreaper.
pub fn is_subreaper() -> bool {
    nix::sys::prctl::get_child_subreaper().unwrap_or(false)
}

/// Waits for child `pid` to exit without reaping it (`waitid` with `WNOWAIT`): its zombie keeps the
/// pid, and so its process group id, from being reused until the caller reaps it.
pub fn wait_exit_keeping(pid: i32) -> Option<Exit> {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    loop {
        match waitid(
            Id::Pid(nix::unistd::Pid::from_raw(pid)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::Exited(_, code)) => return Some(Exit::Code(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Some(Exit::Signal(sig as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// The pid of the process at the other end of a unix socket (`SO_PEERCRED`).
pub fn peer_pid(socket: &impl AsFd) -> std::io::Result<i32> {
    nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::PeerCredentials)
        .map(|c| c.pid())
        .map_err(std::io::Error::from)
}

/// Where the dynamic loader of this process is mapped (`AT_BASE`; 0 for a static binary).
pub fn loader_base() -> u64 {
    // SAFETY: getauxval only reads the auxiliary vector the kernel gave this process.
    unsafe { libc::getauxval(libc::AT_BASE) as u64 }
}

/// Every pid in `/proc`.
pub fn all_pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// The last pid the kernel handed out in this pid namespace, when it says.
pub fn last_pid() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
}

/// The children of process `pid` (None: this process), from every thread's `children` list.
pub fn children(pid: Option<i32>) -> Vec<i32> {
    let pid = pid.map_or_else(|| "self".to_string(), |p| p.to_string());
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What the kernel says of process `pid`, from `/proc/PID/stat`.
pub fn stat(pid: i32) -> Option<Stat> {
    let fields = stat_fields_at(std::path::Path::new(&format!("/proc/{pid}/stat")))?;
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        // Field 22 of the stat line, the 20th from the state.
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// The fields of a `stat` file from the state on (field 3 first). The command name before them is in
/// parentheses and may hold spaces and parentheses itself, so they start after the last ')'.
fn stat_fields_at(path: &std::path::Path) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(path).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// `PF_EXITING` in a task's flags (`include/linux/sched.h`): the task is on its way out (killed, or
/// returning from `main`) and will be a zombie as soon as it is scheduled again.
const PF_EXITING: u64 = 0x4;

/// Whether a task's stat fields say it still runs: neither a zombie nor exiting.
fn task_runs(fields: &[String]) -> bool {
    let state = fields.first().map(String::as_str);
    let flags = fields
        .get(6)
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0);
    !matches!(state, None | Some("Z" | "X" | "x")) && flags & PF_EXITING == 0
}

/// Whether process `pid` still runs: some thread of it is neither a zombie nor exiting. Not its command
/// line (empty between `execve` replacing the memory map and laying out the arguments, which is exactly
/// when a test that spawned a child and returned at once leaves it), and not only its leader's state
/// (a process whose main thread exited shows `Z` while its other threads run).
pub fn is_live(pid: i32) -> bool {
    let Some(fields) = stat_fields_at(std::path::Path::new(&format!("/proc/{pid}/stat"))) else {
        return false;
    };
    if task_runs(&fields) {
        return true;
    }
    // The leader is gone or going: look at the other threads (a single-threaded process has none).
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks
        .flatten()
        .any(|task| stat_fields_at(&task.path().join("stat")).is_some_and(|f| task_runs(&f)))
}

/// Whether `pid` is a process (its thread group's id), not another thread of one: `/proc` answers
/// for threads' ids too.
pub fn is_process(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .is_some_and(|tgid| tgid.trim().parse::<i32>() == Ok(pid))
}

/// A process's environment block (`NAME=VALUE\0...`), empty when it cannot be read. A "zombie leader"
/// (its main thread exited, others run on) reads `ESRCH` or nothing at `/proc/PID/environ`, while its
/// threads still share the memory that holds it: so a failed or empty read is tried again through
/// each thread (`/proc/PID/task/TID/environ`).
pub fn environ(pid: i32) -> Option<Vec<u8>> {
    if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ"))
        && !env.is_empty()
    {
        return Some(env);
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks
        .flatten()
        .filter(|t| t.file_name().to_str() != Some(&pid.to_string()))
        .find_map(|t| {
            std::fs::read(t.path().join("environ"))
                .ok()
                .filter(|e| !e.is_empty())
        })
}

/// What to call a process in a report: its command line; while it is still inside `execve` (no
/// arguments laid out yet), the program it is becoming, marked so; else its name.
pub fn command_line(pid: i32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline)
        .replace('\0', " ")
        .trim()
        .to_string();
    if !cmdline.is_empty() {
        return cmdline;
    }
    if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        return format!("{} (starting)", exe.display());
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    format!("[{}]", comm.trim())
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `<boot id>/<pid namespace inode>`: this boot of this kernel, seen from this pid namespace. Empty when
/// either cannot be read.
pub fn host_identity() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ns = ns
        .strip_prefix("pid:[")
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or("");
    match (boot.trim(), ns) {
        ("", _) | (_, "") => String::new(),
        (boot, ns) => format!("{boot}/{ns}"),
    }
}

/// Whether this process is in a PID namespace other than the initial one. The kernel gives the
/// initial PID namespace a fixed inode (`PROC_PID_INIT_INO`).
pub fn in_child_pid_namespace() -> bool {
    const INITIAL: &str = "pid:[4026531836]";
    std::fs::read_link("/proc/self/ns/pid").is_ok_and(|l| l.as_os_str() != INITIAL)
}

/// This process's cgroup paths, one per line (empty when they cannot be read).
pub fn own_cgroup() -> String {
    std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default()
}

/// This process's executable, as the kernel knows it.
pub fn own_executable() -> std::io::Result<PathBuf> {
    std::fs::read_link("/proc/self/exe")
}

/// A path that opens this process's executable even when the file was replaced on disk since.
pub fn own_executable_to_read() -> PathBuf {
    PathBuf::from("/proc/self/exe")
}

/// The memory map of this process (`/proc/self/maps`): which files it has mapped, and where.
pub fn own_memory_map() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/self/maps")
}

/// Whether the network namespace of process `pid` has a TCP socket listening on `port`; None when its
/// tables cannot be read (the process is not on this kernel, or not visible).
pub fn listening(pid: i64, port: u16) -> Option<bool> {
    let mut any = false;
    let mut read = false;
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        read = true;
        any |= super::table_listens(&text, port);
    }
    read.then_some(any)
}

/// Whether the child `pid` exits within `bound`, waited for on a pidfd (readable once it has exited),
/// without reaping it. Where pidfds are missing (kernels before 5.3), false at once: the caller's kill
/// and reap then end it.
pub fn exits_within(pid: i32, bound: std::time::Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return false;
    }
    let fd = fd as i32;
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = std::time::Instant::now() + bound;
    let exited = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, for the length given.
        let ready = unsafe { libc::poll(&mut poll, 1, ms) };
        if ready > 0 {
            break true;
        }
        let interrupted =
            ready < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
        if !interrupted || left.is_zero() {
            break false;
        }
    };
    // SAFETY: fd is the descriptor pidfd_open returned, closed once.
    unsafe { libc::close(fd) };
    exited
}

/// Whether process `pid` of this kernel is the container `id`'s: its cgroup names the container. An
/// engine in a VM (Docker Desktop, even on Linux) reports pids of the VM's kernel, which here may be
/// any process, or none.
pub fn pid_in_container(pid: i64, id: &str) -> bool {
    !id.is_empty()
        && std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(id))
}
