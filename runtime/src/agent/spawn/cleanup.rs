//! Reaping and discarding what a build left behind: a built command nobody waits for any more, or
//! the init process of a failed build. Blocking; called from the blocking pool or a plain thread.

use crate::agent::build::{BuildFailure, Built};
use crate::sys;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use std::os::fd::{AsFd, OwnedFd};

/// Waits for (reaps) the process of `pidfd`, a child of this process. Blocks until it has exited.
pub fn reap(pidfd: &OwnedFd) -> nix::Result<nix::sys::wait::WaitStatus> {
    loop {
        match waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED) {
            Err(nix::Error::EINTR) => continue,
            other => return other,
        }
    }
}

/// Reaps the process of `pidfd` if it has exited; `Ok(None)` if it has not. Never blocks.
pub fn try_reap(pidfd: &OwnedFd) -> nix::Result<Option<nix::sys::wait::WaitStatus>> {
    loop {
        match waitid(
            Id::PIDFd(pidfd.as_fd()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        ) {
            Err(nix::Error::EINTR) => continue,
            Ok(nix::sys::wait::WaitStatus::StillAlive) => return Ok(None),
            other => return other.map(Some),
        }
    }
}

/// Kills a built command nobody waits for any more (its whole pid namespace) and reaps it. Blocking.
pub fn discard(built: Built) {
    let _ = killpg(Pid::from_raw(built.pid), Signal::SIGKILL);
    let _ = sys::pidfd_send_signal(built.pidfd.as_fd(), Signal::SIGKILL);
    let _ = reap(&built.pidfd);
}

/// Reaps what a failed build left behind (an init process it killed). Blocking.
pub fn discard_failure(failure: &BuildFailure) {
    if let Some(orphan) = &failure.orphan {
        let _ = sys::pidfd_send_signal(orphan.as_fd(), Signal::SIGKILL);
        let _ = reap(orphan);
    }
}
