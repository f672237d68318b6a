//! The macOS backend, over libc: libproc (`proc_listallpids`, `proc_listchildpids`, `proc_pidinfo`),
//! `sysctl` (`KERN_PROCARGS2` for a process's arguments and environment, `kern.bootsessionuuid` for
//! the boot), kqueue (`EVFILT_PROC` with `NOTE_EXIT|NOTE_EXITSTATUS`, an exit seen without reaping:
//! macOS's `waitid` reports stopped children despite `WEXITED`), `LOCAL_PEERPID`, `gethostname` and
//! `host_statistics64`.
//!
//! What macOS cannot give, and the runner then cannot promise (docs/guarantees.md, "Platforms"): no
//! child subreaper (a process that leaves its group is re-parented to launchd; the environment scan is
//! the net that finds it), no pid namespaces, and a Docker engine in a VM, whose container pids are not
//! this kernel's.

use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use super::{Capabilities, Exit, Stat};

/// macOS: the same results, exit codes and sweeps; weaker process containment.
pub fn capabilities() -> Capabilities {
    Capabilities {
        subreaper: false,
        container_pids_visible: false,
    }
}

/// There is no child subreaper on macOS.
pub fn become_subreaper() -> bool {
    false
}

pub fn is_subreaper() -> bool {
    false
}

/// A pid list filled by a libproc call that takes a buffer and its size in bytes and returns how many
/// bytes (or pids) it filled; grown until it fits.
fn pid_list(fill: impl Fn(*mut libc::c_void, libc::c_int) -> libc::c_int) -> Vec<i32> {
    let mut capacity = 1024usize;
    loop {
        let mut pids = vec![0i32; capacity];
        let bytes = (capacity * std::mem::size_of::<i32>()) as libc::c_int;
        let n = fill(pids.as_mut_ptr().cast(), bytes);
        if n < 0 {
            return Vec::new();
        }
        // proc_listallpids counts pids; the others count bytes. Either way, a full buffer may have
        // been cut short.
        let count = (n as usize).min(capacity);
        if count < capacity || capacity >= 1 << 20 {
            pids.truncate(count);
            pids.retain(|p| *p > 0);
            return pids;
        }
        capacity *= 4;
    }
}

/// Every process of the machine.
pub fn all_pids() -> Vec<i32> {
    // SAFETY: proc_listallpids writes at most `size` bytes into the buffer it is given.
    pid_list(|buf, size| unsafe { libc::proc_listallpids(buf, size) })
}

/// macOS hands out pids without a readable "last pid": every process is a candidate.
pub fn last_pid() -> Option<i32> {
    None
}

/// The children of process `pid` (None: this process).
pub fn children(pid: Option<i32>) -> Vec<i32> {
    let pid = pid.unwrap_or_else(|| std::process::id() as i32);
    // SAFETY: proc_listchildpids writes at most `size` bytes into the buffer it is given.
    pid_list(|buf, size| unsafe { libc::proc_listchildpids(pid, buf, size) })
}

fn bsd_info(pid: i32) -> Option<libc::proc_bsdinfo> {
    // SAFETY: zeroed is a valid proc_bsdinfo (plain integers and arrays); proc_pidinfo writes at most
    // the size given.
    let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::proc_bsdinfo>() as libc::c_int;
    let n = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDTBSDINFO,
            0,
            (&mut info as *mut libc::proc_bsdinfo).cast(),
            size,
        )
    };
    (n == size).then_some(info)
}

/// What the kernel says of process `pid`.
pub fn stat(pid: i32) -> Option<Stat> {
    let info = bsd_info(pid)?;
    let state = match info.pbi_status {
        libc::SIDL => 'I',
        libc::SRUN => 'R',
        libc::SSLEEP => 'S',
        libc::SSTOP => 'T',
        libc::SZOMB => 'Z',
        _ => '?',
    };
    Some(Stat {
        state,
        ppid: info.pbi_ppid as i32,
        pgid: info.pbi_pgid as i32,
        // Microseconds since the epoch: with the pid, it names one process for good.
        start_time: info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec,
    })
}

/// Whether process `pid` still runs (neither gone nor a zombie).
pub fn is_live(pid: i32) -> bool {
    stat(pid).is_some_and(|s| !s.is_zombie())
}

/// Every pid libproc lists is a process.
pub fn is_process(pid: i32) -> bool {
    bsd_info(pid).is_some()
}

/// `KERN_PROCARGS2` of `pid`: its arguments and environment as the kernel keeps them.
fn procargs(pid: i32) -> Option<Vec<u8>> {
    let mut size: libc::size_t = 0;
    let mut mib = [libc::CTL_KERN, libc::KERN_ARGMAX];
    let mut argmax: libc::c_int = 0;
    let mut argmax_size = std::mem::size_of::<libc::c_int>();
    // SAFETY: sysctl writes at most the sizes given into the buffers given.
    unsafe {
        if libc::sysctl(
            mib.as_mut_ptr(),
            2,
            (&mut argmax as *mut libc::c_int).cast(),
            &mut argmax_size,
            std::ptr::null_mut(),
            0,
        ) != 0
        {
            return None;
        }
    }
    let mut buffer = vec![0u8; argmax.max(4096) as usize];
    size += buffer.len();
    let mut mib = [libc::CTL_KERN, libc::KERN_PROCARGS2, pid];
    // SAFETY: as above.
    let ok = unsafe {
        libc::sysctl(
            mib.as_mut_ptr(),
            3,
            buffer.as_mut_ptr().cast(),
            &mut size,
            std::ptr::null_mut(),
            0,
        )
    } == 0;
    ok.then(|| {
        buffer.truncate(size);
        buffer
    })
}

/// A process's environment block (`NAME=VALUE\0...`); only the same user's processes can be read.
pub fn environ(pid: i32) -> Option<Vec<u8>> {
    let (_, env) = super::parse_procargs2(&procargs(pid)?);
    (!env.is_empty()).then_some(env)
}

/// What to call a process in a report: its arguments, else its name.
pub fn command_line(pid: i32) -> String {
    if let Some(buffer) = procargs(pid) {
        let (args, _) = super::parse_procargs2(&buffer);
        if !args.is_empty() {
            return args.join(" ");
        }
    }
    match bsd_info(pid) {
        Some(info) => {
            let name: Vec<u8> = info
                .pbi_comm
                .iter()
                .take_while(|c| **c != 0)
                .map(|c| *c as u8)
                .collect();
            format!("[{}]", String::from_utf8_lossy(&name))
        }
        None => "[?]".to_string(),
    }
}

/// Memory the host can give without swapping: free, inactive and purgeable pages.
pub fn available_memory() -> Option<u64> {
    // SAFETY: zeroed is a valid vm_statistics64 (integers); host_statistics64 writes at most `count`
    // integers into it. `mach_host_self` is deprecated in libc in favour of the mach2 crate, a
    // dependency for this one call; the function itself is the documented Mach API.
    #[allow(deprecated)]
    unsafe {
        let mut stats: libc::vm_statistics64 = std::mem::zeroed();
        let mut count = libc::HOST_VM_INFO64_COUNT;
        let status = libc::host_statistics64(
            libc::mach_host_self(),
            libc::HOST_VM_INFO64,
            (&mut stats as *mut libc::vm_statistics64).cast(),
            &mut count,
        );
        if status != 0 {
            return None;
        }
        let page = libc::sysconf(libc::_SC_PAGESIZE).max(0) as u64;
        let pages = u64::from(stats.free_count)
            + u64::from(stats.inactive_count)
            + u64::from(stats.purgeable_count);
        Some(pages * page)
    }
}

/// A string `sysctl` value by name.
fn sysctl_string(name: &str) -> Option<String> {
    let name = std::ffi::CString::new(name).ok()?;
    let mut buffer = [0u8; 128];
    let mut size = buffer.len();
    // SAFETY: sysctlbyname writes at most `size` bytes.
    let ok = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            &mut size,
            std::ptr::null_mut(),
            0,
        )
    } == 0;
    ok.then(|| {
        let end = buffer[..size.min(buffer.len())]
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(size.min(buffer.len()));
        String::from_utf8_lossy(&buffer[..end]).into_owned()
    })
}

/// `<boot session uuid>/macos`: this boot of this machine (`kern.bootsessionuuid` changes at every
/// boot, unlike `kern.uuid`); macOS has no pid namespaces.
pub fn host_identity() -> String {
    match sysctl_string("kern.bootsessionuuid") {
        Some(boot) if !boot.is_empty() => format!("{boot}/macos"),
        _ => String::new(),
    }
}

/// There are no pid namespaces on macOS.
pub fn in_child_pid_namespace() -> bool {
    false
}

/// There are no cgroups on macOS.
pub fn own_cgroup() -> String {
    String::new()
}

pub fn own_executable() -> std::io::Result<PathBuf> {
    std::env::current_exe()
}

pub fn own_executable_to_read() -> PathBuf {
    std::env::current_exe().unwrap_or_default()
}

/// A Mach-O binary cannot run on a Linux engine: there is no memory map to make an image from.
pub fn own_memory_map() -> std::io::Result<String> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "a macOS binary cannot be imported as a Linux image for the engine-side reaper",
    ))
}

/// There is no dynamic loader base to find (see `own_memory_map`).
pub fn loader_base() -> u64 {
    0
}

/// A container's pids are the engine VM's, not this kernel's: its sockets cannot be read from here.
pub fn listening(_pid: i64, _port: u16) -> Option<bool> {
    None
}

/// A container's pids are never this kernel's on macOS.
pub fn pid_in_container(_pid: i64, _id: &str) -> bool {
    false
}

/// The pid of the process at the other end of a unix socket (`LOCAL_PEERPID`).
pub fn peer_pid(socket: &impl AsFd) -> std::io::Result<i32> {
    let mut pid: libc::pid_t = 0;
    let mut size = std::mem::size_of::<libc::pid_t>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `size` bytes into `pid`.
    let status = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_LOCAL,
            libc::LOCAL_PEERPID,
            (&mut pid as *mut libc::pid_t).cast(),
            &mut size,
        )
    };
    if status == 0 {
        Ok(pid)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A one-shot kqueue watch of `pid`'s exit, with `fflags` (`NOTE_EXIT`, and `NOTE_EXITSTATUS` for the
/// status in the event's data).
fn exit_watch(pid: i32, fflags: u32) -> libc::kevent {
    // SAFETY: zeroed is a valid kevent (integers and a null pointer).
    let mut change: libc::kevent = unsafe { std::mem::zeroed() };
    change.ident = pid as libc::uintptr_t;
    change.filter = libc::EVFILT_PROC;
    change.flags = libc::EV_ADD | libc::EV_ONESHOT;
    change.fflags = fflags;
    change
}

/// Waits for child `pid` to exit without reaping it: a kqueue `EVFILT_PROC` event with the exit
/// status. A child that already exited (a zombie, which kqueue no longer watches) is read with
/// `waitid(WNOWAIT | WNOHANG)`, which does not reap either.
pub fn wait_exit_keeping(pid: i32) -> Option<Exit> {
    // SAFETY: kqueue and kevent are given valid descriptors and one event of their own type; the
    // queue is closed on every path.
    unsafe {
        let queue = libc::kqueue();
        if queue < 0 {
            return None;
        }
        let change = exit_watch(pid, libc::NOTE_EXIT | libc::NOTE_EXITSTATUS);
        let mut event: libc::kevent = std::mem::zeroed();
        let out = loop {
            let n = libc::kevent(queue, &change, 1, &mut event, 1, std::ptr::null());
            if n == 1 && event.flags & libc::EV_ERROR == 0 {
                break Some(super::decode_wait_status(event.data as i32));
            }
            let error = if n == 1 {
                event.data as i32
            } else {
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
            };
            if error == libc::EINTR {
                continue;
            }
            break (error == libc::ESRCH)
                .then(|| exited_already(pid))
                .flatten();
        };
        libc::close(queue);
        out
    }
}

/// Whether the child `pid` exits within `bound`, without reaping it: a kqueue `EVFILT_PROC` event
/// within a timeout (one already gone, or a zombie, has exited).
pub fn exits_within(pid: i32, bound: std::time::Duration) -> bool {
    // SAFETY: as in `wait_exit_keeping`; the timeout is a valid timespec.
    unsafe {
        let queue = libc::kqueue();
        if queue < 0 {
            return false;
        }
        let change = exit_watch(pid, libc::NOTE_EXIT);
        let timeout = libc::timespec {
            tv_sec: bound.as_secs() as libc::time_t,
            tv_nsec: bound.subsec_nanos() as libc::c_long,
        };
        let mut event: libc::kevent = std::mem::zeroed();
        let n = libc::kevent(queue, &change, 1, &mut event, 1, &timeout);
        libc::close(queue);
        match n {
            1 if event.flags & libc::EV_ERROR == 0 => true,
            1 => event.data as i32 == libc::ESRCH,
            _ => false,
        }
    }
}

/// The exit of a child that is already a zombie, left unreaped.
fn exited_already(pid: i32) -> Option<Exit> {
    // SAFETY: zeroed is a valid siginfo_t; waitid writes into it.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let status = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
        );
        if status != 0 || info.si_pid == 0 {
            return None;
        }
        Some(match info.si_code {
            libc::CLD_EXITED => Exit::Code(info.si_status),
            _ => Exit::Signal(info.si_status),
        })
    }
}
