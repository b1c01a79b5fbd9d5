//! The raw Linux calls wedge makes that nix does not wrap, one copy each, shared by wedge-run,
//! wedge-agent and the harness.
//!
//! Every function is one system call (or a short, fixed sequence of them) with the kernel's result
//! passed through unchanged as an [`io::Error`]: no retries, no errors folded together, because the
//! callers' decisions depend on exactly which errno came back. Nothing here allocates in the child of
//! a `clone3` except where a function says so.
//!
//! - [`pidfd_open`], [`pidfd_send_signal`] and the owning wrapper [`PidFd`]: process handles that pid
//!   reuse cannot confuse;
//! - [`clone3`]: a fork that bypasses libc (no atfork handlers), and [`fork_as_sibling`] (whose child
//!   is its caller's parent's);
//! - [`close_fds_except`]: `close_range` around the descriptors to keep;
//! - [`become_child_subreaper`] and [`die_with_parent`]: the two `prctl`s.
//!
//! Beside the calls, [`binfmt`] reads what the kernel's exec reads from a file's first bytes (the
//! `#!` line, an ELF file's `PT_INTERP`): pure functions over bytes, no system call, shared by the
//! exec supervisor and the harness so that both decide as the kernel does.

pub mod binfmt;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// `pidfd_open(pid, 0)`: a descriptor that refers to `pid` for as long as it is held.
///
/// The caller must know `pid` is the process it means: its own unreaped child, or a process that
/// cannot exit (and have its pid reused) before this call returns.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(pidfd, signal, NULL, 0)`. `ESRCH` (the process has exited) is an error here;
/// [`PidFd::signal`] is the variant that ignores it.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: Signal) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor the caller keeps open for the call; a null siginfo is
    // allowed and means "as if sent by kill(2)".
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An owned pidfd: a handle on one process that cannot be confused by pid reuse.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a handle on `pid`, with the precondition of [`pidfd_open`].
    pub fn open(pid: libc::pid_t) -> io::Result<PidFd> {
        pidfd_open(pid).map(PidFd)
    }

    /// Sends `signal`. `ESRCH` (already exited) is not an error: the signal's purpose is served.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        match pidfd_send_signal(self.0.as_fd(), signal) {
            Err(err) if err.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl From<PidFd> for OwnedFd {
    fn from(pidfd: PidFd) -> OwnedFd {
        pidfd.0
    }
}

/// `struct clone_args` of `clone3(2)` (the size of its version 2, with `cgroup`).
#[repr(C)]
#[derive(Debug, Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Which side of a `clone3` the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloned {
    /// In the new process.
    Child,
    /// In the calling process; the new process has this pid.
    Parent(Pid),
}

/// `clone3` by raw syscall, fork-like (no `CLONE_VM`, the child runs on a copy of the caller's stack),
/// with `SIGCHLD` as exit signal. Like container libraries, this bypasses libc's `fork`, so none of its
/// atfork handlers run: whatever lock another thread held at this moment stays locked in the child.
///
/// # Safety
/// Only the calling thread exists in the child. The child must not return into code that expects the
/// other threads (it should end with `_exit`), and the hazard above is the caller's to accept.
pub unsafe fn clone3(flags: libc::c_int) -> io::Result<Cloned> {
    let args = CloneArgs {
        flags: flags as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed; without CLONE_VM or a stack the child
    // continues on a private copy of this stack, as after fork(2).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Cloned::Child),
        pid => Ok(Cloned::Parent(Pid::from_raw(pid as libc::pid_t))),
    }
}

/// A fork whose child is the caller's *sibling*: `clone(CLONE_PARENT)` by raw syscall, so the new
/// process is a child of the caller's parent (which waits for it and gets its `SIGCHLD`), on a
/// private copy of the caller's stack as after fork(2). `clone3` cannot do this with an exit
/// signal, and glibc's `fork` has no flags. As with [`clone3`], no atfork handler runs, and
/// glibc's cached thread id in the child is still the caller's (glibc reads it for error-checking
/// and recursive `pthread` mutexes; `raise` and `getpid` ask the kernel).
///
/// # Safety
/// As for [`clone3`]: only the calling thread exists in the child, and a lock another thread held
/// stays locked there; callers should be single-threaded.
pub unsafe fn fork_as_sibling() -> io::Result<Cloned> {
    let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: without CLONE_VM and with a null stack the child continues on a private copy of this
    // stack, as after fork(2); the null tid pointers are not used without the flags that read them.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Cloned::Child),
        pid => Ok(Cloned::Parent(Pid::from_raw(pid as libc::pid_t))),
    }
}

/// Closes every descriptor from 3 up, except those in `keep`. Allocates (one small vector), so a
/// `clone3` child calls it only where allocating is safe.
pub fn close_fds_except(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|fd| *fd >= 3).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first: u32 = 3;
    for fd in keep {
        let fd = fd as u32;
        if fd > first {
            close_range(first, fd - 1)?;
        }
        first = fd + 1;
    }
    close_range(first, u32::MAX)
}

fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments; the caller has decided nothing else in this
    // process uses the descriptors in the range.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`), so processes orphaned below it
/// are reparented to it instead of init and it can wait for them.
pub fn become_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to SIGKILL this process when the thread that created it exits
/// (`PR_SET_PDEATHSIG`).
pub fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_pidfd_signals_its_process_and_ignores_esrch_once_it_is_gone() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pidfd = PidFd::open(child.id() as i32).unwrap();
        pidfd.signal(Signal::SIGKILL).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        // Reaped: the raw call reports ESRCH, the wrapper does not.
        let raw = pidfd_send_signal(pidfd.as_fd(), Signal::SIGKILL).unwrap_err();
        assert_eq!(raw.raw_os_error(), Some(libc::ESRCH));
        pidfd.signal(Signal::SIGKILL).unwrap();
    }

    #[test]
    fn pidfd_open_of_a_pid_that_does_not_exist_fails() {
        // pid_max is at most 2^22, so this pid cannot exist.
        let err = pidfd_open(1 << 23).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    }
}
