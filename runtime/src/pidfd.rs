//! Process handles that cannot be confused by pid reuse (`pidfd_open`, `pidfd_send_signal`).
//! nix has no wrapper for these, so they are raw syscalls.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::Signal;

#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a handle on `pid`. The caller must know `pid` is the process it means: its own
    /// unreaped child, or a process that cannot exit before this call returns.
    pub fn open(pid: libc::pid_t) -> Result<PidFd, Errno> {
        // SAFETY: plain syscall; on success the kernel returns a new descriptor we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = Errno::result(fd)? as i32;
        // SAFETY: `fd` is a new descriptor nobody else owns.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends `signal`. `ESRCH` (already exited) is not an error.
    pub fn signal(&self, signal: Signal) -> Result<(), Errno> {
        // SAFETY: plain syscall on a descriptor we own, with no siginfo.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal as i32,
                std::ptr::null::<u8>(),
                0,
            )
        };
        match Errno::result(rc) {
            Ok(_) | Err(Errno::ESRCH) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
