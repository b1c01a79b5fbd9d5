//! What runtimes' process handling relies on: pidfds, starting a child straight into a cgroup,
//! a cgroup2 hierarchy, and user and pid namespaces.

use std::os::fd::AsRawFd;
use std::time::Duration;

use super::Observed;
use super::child::{ChildEnd, errno_name, fork_child, in_child, last_errno, wait_child};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// `CLONE_INTO_CGROUP` (5.7); libc's constant overflows its type.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

pub fn pidfd() -> Observed {
    let Ok(pid) = fork_child(|| 0) else {
        return Observed::new("error", "fork failed");
    };
    let fd = match wedge_sys::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = wait_child(pid);
            return Observed::new("no", format!("pidfd_open: {e}"));
        }
    };
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let bound = Duration::from_secs(5).as_millis() as i32;
    // SAFETY: poll(2) on one pollfd that outlives the call.
    let n = unsafe { libc::poll(&mut p, 1, bound) };
    let _ = wait_child(pid);
    Observed::yes_no(
        n == 1 && p.revents & libc::POLLIN != 0,
        format!(
            "pidfd_open gave fd {}; poll at the child's exit: revents {:#x}",
            fd.as_raw_fd(),
            p.revents
        ),
    )
}

/// Where a cgroup2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a
/// hybrid host), from `/proc/self/mounts`.
fn cgroup2_mount() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mount_of(&mounts, "cgroup2")
}

/// The mount point of the first `fstype` file system in a mounts table.
fn mount_of(mounts: &str, fstype: &str) -> Option<String> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == fstype && is_cgroup2(point)).then(|| point.to_string())
    })
}

/// The cgroup2 directory this process is in, under mount point `root`.
fn own_cgroup(root: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(format!("{root}{}", path.trim_end_matches('/')))
}

/// Whether `path` is on a cgroup2 file system.
fn is_cgroup2(path: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(path) else {
        return false;
    };
    // SAFETY: statfs(2) fills `s`, which outlives the call; `c` is a valid C string.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut s) }) == 0 && s.f_type as i64 == CGROUP2_SUPER_MAGIC
}

pub fn clone3_into_cgroup() -> Observed {
    let Some(root) = cgroup2_mount() else {
        return Observed::new("no", "no cgroup2 hierarchy is mounted");
    };
    let Some(dir) = own_cgroup(&root) else {
        return Observed::new("no", "no cgroup2 line in /proc/self/cgroup");
    };
    let cg = match std::fs::File::open(&dir) {
        Ok(f) => f,
        Err(e) => return Observed::new("no", format!("{dir}: {e}")),
    };
    // SAFETY: clone_args is plain data; zero is "no" for every field.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = CLONE_INTO_CGROUP;
    args.exit_signal = libc::SIGCHLD as u64;
    args.cgroup = cg.as_raw_fd() as u64;
    // SAFETY: clone3 without a stack behaves as fork; this process is single-threaded (see
    // child.rs) and the child only calls _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if pid == 0 {
        // SAFETY: the child ends at once.
        unsafe { libc::_exit(0) };
    }
    if pid < 0 {
        let errno = errno_name(last_errno());
        return Observed::new(
            "no",
            format!("clone3(CLONE_INTO_CGROUP) failed with {errno}"),
        );
    }
    // The evidence shows the error's text, as `Err("waitpid …")`.
    let end = wait_child(pid as i32).map_err(|e| e.to_string());
    Observed::yes_no(
        end == Ok(ChildEnd::Code(0)),
        format!("clone3(CLONE_INTO_CGROUP, {dir}) started child {pid}: {end:?}"),
    )
}

pub fn cgroup2() -> Observed {
    if let Some(at) = cgroup2_mount() {
        return Observed::new("yes", format!("cgroup2 mounted at {at}"));
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let known = fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("cgroup2"));
    Observed::yes_no(
        known,
        if known {
            "cgroup2 is in /proc/filesystems but not mounted"
        } else {
            "no cgroup2 mounted nor in /proc/filesystems"
        },
    )
}

/// Runs `unshare(flags)` in a child; the errno (0: it worked), or the row.
fn unshare_in_child(flags: libc::c_int, then: fn() -> i32) -> Result<i32, Observed> {
    let end = in_child(|| {
        // SAFETY: unshare(2) in a single-threaded child, which exits right after.
        if unsafe { libc::unshare(flags) } != 0 {
            return last_errno();
        }
        then()
    });
    match end {
        Ok(ChildEnd::Code(c)) => Ok(c),
        Ok(ChildEnd::Signal(s)) => Err(Observed::new("error", format!("signal {s}"))),
        Err(e) => Err(Observed::new("error", e.to_string())),
    }
}

pub fn user_ns() -> Observed {
    match unshare_in_child(libc::CLONE_NEWUSER, || 0) {
        Ok(0) => Observed::new("yes", "unshare(CLONE_NEWUSER) returned 0"),
        Ok(e) => Observed::new(
            "no",
            format!("unshare(CLONE_NEWUSER) failed with {}", errno_name(e)),
        ),
        Err(o) => o,
    }
}

/// In the new pid namespace: the next child must be pid 1. 0 if so, 250 if not.
fn first_child_is_init() -> i32 {
    // SAFETY: getpid has no preconditions.
    match fork_child(|| if unsafe { libc::getpid() } == 1 { 0 } else { 1 }) {
        Ok(pid) => match wait_child(pid) {
            Ok(ChildEnd::Code(0)) => 0,
            _ => 250,
        },
        Err(_) => 250,
    }
}

pub fn pid_ns() -> Observed {
    match unshare_in_child(libc::CLONE_NEWPID, first_child_is_init) {
        Ok(0) => Observed::new("yes", "after unshare(CLONE_NEWPID) the next child is pid 1"),
        Ok(250) => Observed::new(
            "no",
            "unshare(CLONE_NEWPID) worked but the child is not pid 1",
        ),
        Ok(e) => Observed::new(
            "no",
            format!("unshare(CLONE_NEWPID) failed with {}", errno_name(e)),
        ),
        Err(o) => o,
    }
}
