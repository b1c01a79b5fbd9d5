//! What several probe families share: running a piece of a probe in a forked child, waiting for
//! a task to be seen blocked in a syscall, and naming errnos.
//!
//! Forking is only sound because a probe process (`wedge probe --run-one ID`) is single-threaded
//! until the probe itself starts threads, and every probe forks before it does: the child may
//! then allocate and use std freely.

use std::time::{Duration, Instant};

use super::error::ProbeError;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    Code(i32),
    Signal(i32),
}

/// Runs `f` in a forked child (which dies with this process) and waits for it; `f`'s return
/// value is the child's exit code. Call only while this process has one thread.
pub fn in_child(f: impl FnOnce() -> i32) -> Result<ChildEnd, ProbeError> {
    let pid = fork_child(f)?;
    wait_child(pid)
}

/// Forks a child that runs `f` and exits with its value; the child's pid. Call only while this
/// process has one thread.
pub fn fork_child(f: impl FnOnce() -> i32) -> Result<i32, ProbeError> {
    // SAFETY: fork(2) in a single-threaded process (see the module doc): the child owns a
    // consistent copy of everything, including the allocator's locks.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(ProbeError::Fork(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process; _exit(2) ends the
        // child without running the parent's atexit handlers or flushing its buffers twice.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let code = f();
            libc::_exit(code);
        }
    }
    Ok(pid)
}

/// Waits for (and reaps) child `pid`.
pub fn wait_child(pid: i32) -> Result<ChildEnd, ProbeError> {
    use nix::sys::wait::{WaitStatus, waitpid};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(ChildEnd::Code(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(ChildEnd::Signal(sig as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(source) => return Err(ProbeError::Waitpid { pid, source }),
        }
    }
}

/// The name of errno `code`, e.g. `EBUSY`.
pub fn errno_name(code: i32) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(code))
}

/// The errno of the last failed libc call.
pub fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The syscall a task is blocked in, from its `/proc/.../syscall` text: `None` when it is
/// running or blocked outside a syscall.
pub fn blocked_syscall(text: &str) -> Option<i64> {
    let first = text.split_whitespace().next()?;
    first.parse::<i64>().ok().filter(|nr| *nr >= 0)
}

/// Waits until the task whose `/proc/.../syscall` is `path` is blocked in syscall `nr`, up to
/// `bound`; whether it was seen so.
pub fn wait_in_syscall(path: &str, nr: i64, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        // A task inside a syscall is not yet necessarily asleep in it: also require that the
        // scheduler sees it sleeping (the `State:` of its status), so a wake-up comes after the
        // wait began.
        if blocked_syscall(&text) == Some(nr) && sleeping(&path.replace("/syscall", "/stat")) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // Nothing to block on: the kernel offers no notification of a task going to sleep.
        std::thread::yield_now();
    }
}

/// Whether `/proc/.../stat` says the task sleeps (`S`).
fn sleeping(stat_path: &str) -> bool {
    let text = std::fs::read_to_string(stat_path).unwrap_or_default();
    // The state follows the parenthesised command name, which may itself hold spaces.
    text.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        == Some("S")
}

/// Milliseconds since `t`.
pub fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_syscall_text_gives_the_blocking_syscall() {
        assert_eq!(
            blocked_syscall("16 0x3 0xc0502100 0x7f 0x0 0x0 0x0 0x7ffd 0x7f12\n"),
            Some(16)
        );
        assert_eq!(blocked_syscall("running\n"), None);
        assert_eq!(blocked_syscall("-1 0x7ffd 0x7f12\n"), None);
        assert_eq!(blocked_syscall(""), None);
    }

    #[test]
    fn errnos_have_their_names() {
        assert_eq!(errno_name(libc::EBUSY), "EBUSY");
        assert_eq!(errno_name(libc::ENOENT), "ENOENT");
    }
}
