//! The raw system calls the trial engine makes directly, one function each, so the shared
//! syscall layer can replace them in one place.

use std::os::fd::{FromRawFd, OwnedFd};

/// A pidfd for `pid` (`pidfd_open(2)`), or `None` when the kernel has none for it.
pub(crate) fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
