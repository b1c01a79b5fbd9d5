//! Reading processes and threads from `/proc`: state, CPU time, context switches, the syscall a
//! thread is in, wchan, kernel stack, pending signals, the target's memory (for timeouts), and the
//! timers that can wake a process (`wake`), and what the wait-for graph is built from (`waitfor`).
//!
//! # The `procfs` crate, and what stays by hand
//!
//! `stat` lines are parsed by `procfs`'s parser, `/proc/PID/status` for a signal's delivery
//! ([`signal_pending`]) and `/proc/self/mountinfo` ([`mount_points`]) are read by it. What the
//! monitor samples every few milliseconds is still read by hand, file by file, because `procfs`
//! is clearly slower there (release build, a 10-thread process, 2 loaded cores):
//!
//! - a whole [`read_process`] through `procfs` (`Process::tasks`, `Task::stat`/`status`/
//!   `syscall`) took about 200 µs against 110 µs by hand: each `Process` and `Task` opens an
//!   `O_PATH` fd, and `Status` parses every line of `status` into a map (about 40 µs a parse,
//!   against 3 µs for the two context-switch lines wedge scans for);
//! - parsing a `stat` line alone costs about 2.3 µs with `procfs` against 1.1 µs, next to about
//!   10 µs to read the file: small enough that there is one `stat` parser, the crate's.
//!
//! Readers with no crate equivalent stay too: `procfs` has no per-thread `wchan` (only the
//! process's), no kernel stack, and its `syscall` parser rejects the kernel's `-1 SP PC` form of
//! a thread blocked outside a syscall, which wedge must tell from an unreadable file
//! ([`SyscallState::parse`]).

pub mod glibc_arenas;
pub mod syscall;
pub mod wake_sources;

use std::fs;
use std::path::Path;

use procfs::FromRead;
use procfs::process::Process;

pub use syscall::SyscallState;

/// The fields of `/proc/<pid>[/task/<tid>]/stat` wedge uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// utime + stime in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
}

impl Stat {
    /// Parses a stat line (with `procfs`'s parser: the comm may contain spaces and parentheses,
    /// so it ends at the last `)`); `None` when it is not one.
    pub fn parse(line: &str) -> Option<Stat> {
        let s = procfs::process::Stat::from_read(line.as_bytes()).ok()?;
        Some(Stat {
            pid: s.pid,
            comm: s.comm,
            state: s.state,
            ppid: s.ppid,
            pgrp: s.pgrp,
            session: s.session,
            cpu_ticks: s.utime + s.stime,
            start_ticks: s.starttime,
        })
    }
}

/// One thread as seen at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSample {
    pub tid: i32,
    pub comm: String,
    pub state: char,
    pub cpu_ticks: u64,
    /// Voluntary + involuntary context switches: grows every time the thread wakes.
    pub switches: u64,
    pub syscall: Option<SyscallState>,
}

/// One process and its threads as seen at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSample {
    pub stat: Stat,
    pub threads: Vec<ThreadSample>,
}

/// Reads a process and all its threads; `None` when it is gone.
pub fn read_process(pid: i32) -> Option<ProcessSample> {
    let stat = Stat::parse(&read_small(format!("/proc/{pid}/stat"))?)?;
    let mut threads: Vec<ThreadSample> = threads(pid)
        .into_iter()
        .filter_map(|tid| read_thread(pid, tid))
        .collect();
    threads.sort_by_key(|t| t.tid);
    Some(ProcessSample { stat, threads })
}

fn read_thread(pid: i32, tid: i32) -> Option<ThreadSample> {
    let base = format!("/proc/{pid}/task/{tid}");
    let stat = Stat::parse(&read_small(format!("{base}/stat"))?)?;
    let status = read_small(format!("{base}/status")).unwrap_or_default();
    let switches = status
        .lines()
        .filter(|l| {
            l.starts_with("voluntary_ctxt_switches:")
                || l.starts_with("nonvoluntary_ctxt_switches:")
        })
        .filter_map(|l| {
            l.split_once(':')
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        })
        .sum();
    let syscall = read_small(format!("{base}/syscall")).and_then(|s| SyscallState::parse(&s));
    Some(ThreadSample {
        tid,
        comm: stat.comm,
        state: stat.state,
        cpu_ticks: stat.cpu_ticks,
        switches,
        syscall,
    })
}

/// The kernel function a thread sleeps in (`/proc/.../wchan`), when known.
pub fn wchan(pid: i32, tid: i32) -> Option<String> {
    let w = fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).ok()?;
    let w = w.trim();
    (!w.is_empty() && w != "0").then(|| w.to_string())
}

/// The kernel stack of a thread (`/proc/.../stack`, readable by root on most kernels).
pub fn kernel_stack(pid: i32, tid: i32) -> Vec<String> {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/stack"))
        .map(|s| {
            s.lines()
                .map(|l| match l.split_once("] ") {
                    Some((_, f)) => f.trim().to_string(),
                    None => l.trim().to_string(),
                })
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// A process's command line.
pub fn cmdline(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A process's environment, whole or nothing: empty once it has let go of its memory, `None` when
/// it is gone (and, on the kernels seen, when it is a zombie: opening fails with `ESRCH`).
///
/// One `read` at offset 0 with room for all of it, never `fs::read`. The kernel copies the whole
/// environment in one call while it holds the process's memory, so one call returns all of it or
/// nothing. `fs::read` makes several calls (a 32-byte probe first), and an exit between two of
/// them cuts the environment short while `/proc/PID/stat` still shows the process running: it
/// lets go of its memory before it becomes a zombie. A marker cut off that way made a trial's
/// leftover directory look like no trial's (`leftovers`).
pub fn environ(pid: i32) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = fs::File::open(format!("/proc/{pid}/environ")).ok()?;
    let mut room = 64 * 1024;
    loop {
        let mut buf = vec![0u8; room];
        let n = file.read_at(&mut buf, 0).ok()?;
        if n < room {
            buf.truncate(n);
            return Some(buf);
        }
        // Full: perhaps more. Read it all again, in one call, with more room.
        room *= 4;
    }
}

/// A small kernel-made text file (`/proc/PID/stat`, a thread's `children`, `cgroup.procs`,
/// `cgroup.events`) read whole with `read` calls alone. std's readers first `statx` the file
/// for a size hint, which procfs and kernfs files never give (they say 0 bytes): a system call
/// for nothing, on files wedge reads dozens of times a trial. `None` when it cannot be opened or
/// read (the process or cgroup is gone), or is not UTF-8.
pub fn read_small(path: impl AsRef<Path>) -> Option<String> {
    use std::io::Read;
    let mut file = fs::File::open(path).ok()?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    String::from_utf8(buf).ok()
}

/// The stat of one process, `None` when it is gone.
pub fn stat(pid: i32) -> Option<Stat> {
    Stat::parse(&read_small(format!("/proc/{pid}/stat"))?)
}

/// Every pid in `/proc`.
pub fn all_pids() -> Vec<i32> {
    numbers_in(Path::new("/proc"))
}

/// The threads of process `pid` (empty when it is gone).
pub fn threads(pid: i32) -> Vec<i32> {
    numbers_in(Path::new(&format!("/proc/{pid}/task")))
}

/// The children of thread `tid` of process `pid`.
pub fn thread_children(pid: i32, tid: i32) -> Vec<i32> {
    read_small(format!("/proc/{pid}/task/{tid}/children"))
        .unwrap_or_default()
        .split_ascii_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect()
}

/// The children of process `pid`, through every thread's `children`.
pub fn children(pid: i32) -> Vec<i32> {
    threads(pid)
        .into_iter()
        .flat_map(|tid| thread_children(pid, tid))
        .collect()
}

/// The entries of a directory whose names are numbers.
fn numbers_in(dir: &Path) -> Vec<i32> {
    let Ok(dir) = fs::read_dir(dir) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Whether signal `signo` is pending for process `pid` (shared or on its main thread), or blocked
/// by every one of its threads (so it stays pending until the process unblocks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// Not pending: delivered (or discarded because ignored).
    Delivered,
    /// Still pending, and some thread can take it.
    Pending,
    /// Pending and blocked by every thread (e.g. taken through a signalfd, or never), none of
    /// them running: it stays so until the process wakes and unblocks it.
    Blocked,
    /// Pending and blocked by every thread, but some thread is running or runnable (`R`, or
    /// `D` on its way back): it may unblock it any moment (a `sigsuspend` loop between two
    /// calls), so wait and look again.
    BlockedWhileRunning,
    /// Pending in a stopped process (delivered once it continues).
    Stopped,
    /// The process is gone.
    Gone,
}

/// Where signal `signo` is in its delivery to process `pid`.
pub fn signal_pending(pid: i32, signo: i32) -> Pending {
    let bit = 1u64 << (signo - 1);
    let Ok(process) = Process::new(pid) else {
        return Pending::Gone;
    };
    let Ok(status) = process.status() else {
        return Pending::Gone;
    };
    if status.state.starts_with('Z') {
        return Pending::Gone;
    }
    if (status.sigpnd | status.shdpnd) & bit == 0 {
        return Pending::Delivered;
    }
    if status.state.starts_with(['T', 't']) {
        return Pending::Stopped;
    }
    // A thread whose status cannot be read counts as not blocking it, and as not running.
    let Ok(tasks) = process.tasks() else {
        return Pending::Pending;
    };
    let statuses: Vec<_> = tasks.map(|t| t.and_then(|t| t.status())).collect();
    let all_blocked = statuses
        .iter()
        .all(|s| s.as_ref().is_ok_and(|s| s.sigblk & bit != 0));
    let running = statuses
        .iter()
        .any(|s| s.as_ref().is_ok_and(|s| s.state.starts_with(['R', 'D'])));
    match (all_blocked, running) {
        (false, _) => Pending::Pending,
        (true, true) => Pending::BlockedWhileRunning,
        (true, false) => Pending::Blocked,
    }
}

/// Reads `len` bytes at `addr` in process `pid`'s memory.
pub fn read_memory(pid: i32, addr: u64, len: usize) -> Option<Vec<u8>> {
    if addr == 0 {
        return None;
    }
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` points into `buf`, which is valid for `len` bytes; the remote side is only
    // read by the kernel, which checks it.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    (n == len as isize).then_some(buf)
}

/// Every mount point in wedge's own mount namespace (none when `mountinfo` is unreadable).
pub fn mount_points() -> Vec<String> {
    Process::myself()
        .and_then(|me| me.mountinfo())
        .map(|mounts| {
            mounts
                .into_iter()
                .map(|m| m.mount_point.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The running kernel's release, e.g. `6.18.44`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_string())
}

pub use crate::model::scenario::parse_kernel_version;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        // Every field up to `exit_code` (52), as the kernel writes them.
        let line = "4242 (we (ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 12345 \
                    1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 \
                    0 0";
        let s = Stat::parse(line).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "we (ird) name");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.pgrp, 4242);
        assert_eq!(s.cpu_ticks, 10);
        assert_eq!(s.start_ticks, 12345);
    }

    #[test]
    fn reads_itself() {
        let me = std::process::id() as i32;
        let p = read_process(me).unwrap();
        assert_eq!(p.stat.pid, me);
        assert!(p.threads.iter().any(|t| t.tid == me));
        assert!(!cmdline(me).is_empty());
        assert_eq!(signal_pending(me, libc::SIGUSR2), Pending::Delivered);
        let value = 0x5eed_u64;
        let bytes = read_memory(me, &value as *const u64 as u64, 8).unwrap();
        assert_eq!(u64::from_ne_bytes(bytes.try_into().unwrap()), value);
    }

    #[test]
    fn reads_an_environment_whole_and_a_zombies_as_empty() {
        use std::process::{Command, Stdio};
        // Larger than the first read's room, with the marker last.
        let big = "x".repeat(100 * 1024);
        let mut child = Command::new("cat")
            .env_clear()
            .env("A", &big)
            .env("B", &big)
            .env("WEDGE_TEST_LAST", "here")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let env = environ(pid).unwrap();
        assert!(env.len() > 200 * 1024, "{}", env.len());
        assert!(env.ends_with(b"WEDGE_TEST_LAST=here\0"));
        drop(child.stdin.take());
        child.wait().unwrap();
        assert_eq!(environ(pid), None);

        // Exited but not reaped: its memory is gone, its pid is not.
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while stat(pid).is_some_and(|s| s.state != 'Z') {
            assert!(
                std::time::Instant::now() < end,
                "{pid} never became a zombie"
            );
            std::thread::yield_now();
        }
        // None on the kernels seen (ESRCH); never anything but empty.
        assert_eq!(environ(pid).unwrap_or_default(), b"");
        child.wait().unwrap();
    }

    #[test]
    fn parses_kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v769"), Some((6, 18, 44)));
        assert_eq!(
            parse_kernel_version("6.1.0-26-cloud-amd64"),
            Some((6, 1, 0))
        );
        assert_eq!(parse_kernel_version("6.11"), Some((6, 11, 0)));
        assert_eq!(parse_kernel_version("x"), None);
    }
}
