//! A trial's subject in a pid namespace of its own, so that nothing it starts can leave the trial:
//! a process may move to another cgroup, call `setsid`, double-fork or unshare namespaces, but it
//! cannot leave its pid namespace, and when that namespace's pid 1 dies the kernel kills every
//! process in it (nested namespaces included).
//!
//! wedge starts `wedge-init -- PROGRAM ARGS...` where it used to start the subject. That process
//! (the *keeper*, wedge's child, outside the namespace) does, single-threaded:
//!
//! 1. blocks every signal, so that group signals meant for the subject (a pty's ^C, a `signal`
//!    step with `to = "group"`) neither kill nor disturb it;
//! 2. `unshare(CLONE_NEWPID)` and forks the *init*: pid 1 of the new namespace, which reaps
//!    orphans and stays alive while the keeper lives or any process of the namespace is left
//!    (so left-behind processes are seen, and reported, exactly as without a namespace);
//! 3. forks the subject (pid 2 there), which mounts a `/proc` of the new namespace (in a mount
//!    namespace of the trial's own, whose mounts do not propagate to the host), so that the pids
//!    a program sees (`$$`, `$!`) are the ones its `/proc` shows; then it restores the signal mask
//!    wedge gave and execs;
//! 4. reports on descriptor 3 ([`Report`]) the subject's and the init's pids as wedge sees them,
//!    or the errno of a failed exec, and closes it;
//! 5. waits for the subject and ends the same way it did (the same exit code, or the same
//!    signal), so wedge's view of "the subject exited" is unchanged.
//!
//! Killing the init (its pid is in the report) ends everything the trial started. Without the
//! privilege to create a pid namespace, the keeper runs the subject as its direct child and
//! reports no init: the trial's cgroup is then the only containment, as before.

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

/// The descriptor on which the keeper writes its [`Report`].
pub const REPORT_FD: RawFd = 3;

/// The program name wedge looks for next to its other binaries.
pub const INIT_PROGRAM: &str = "wedge-init";

/// The keeper's one message to wedge: a single line on [`REPORT_FD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The subject was exec'd. Pids are in wedge's namespace; `init` is `None` when no pid
    /// namespace could be created.
    Started { subject: i32, init: Option<i32> },
    /// The subject could not be exec'd (`errno` of `execvp`); the keeper exits 127.
    Failed { errno: i32 },
}

/// A report line that is not one of [`Report`]'s forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReport(pub String);

impl fmt::Display for BadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed wedge-init report {:?}", self.0)
    }
}

impl std::error::Error for BadReport {}

impl Report {
    /// The line as written: `started SUBJECT INIT` (INIT 0 for none) or `failed ERRNO`.
    pub fn encode(&self) -> String {
        match self {
            Report::Started { subject, init } => {
                format!("started {subject} {}\n", init.unwrap_or(0))
            }
            Report::Failed { errno } => format!("failed {errno}\n"),
        }
    }

    /// Parses one line (with or without its newline).
    pub fn decode(line: &str) -> Result<Report, BadReport> {
        let bad = || BadReport(line.to_string());
        let words: Vec<&str> = line.trim_end_matches('\n').split(' ').collect();
        let number = |w: &str| w.parse::<i32>().ok().filter(|n| *n >= 0);
        match words.as_slice() {
            ["started", s, i] => {
                let subject = number(s).filter(|s| *s > 0).ok_or_else(bad)?;
                let init = number(i).ok_or_else(bad)?;
                Ok(Report::Started {
                    subject,
                    init: (init > 0).then_some(init),
                })
            }
            ["failed", e] => Ok(Report::Failed {
                errno: number(e).filter(|e| *e > 0).ok_or_else(bad)?,
            }),
            _ => Err(bad()),
        }
    }
}

/// The keeper's whole life (`wedge-init -- PROGRAM ARGS...`). Never returns.
pub fn keeper_main(args: Vec<String>) -> ! {
    let argv = match args.iter().position(|a| a == "--") {
        Some(i) if i + 1 < args.len() => &args[i + 1..],
        _ => die("usage: wedge-init -- PROGRAM [ARGS...]"),
    };
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_else(|_| die("argument holds a NUL byte")))
        .collect();
    // SAFETY: wedge hands descriptor 3 to the keeper and nothing else in this process owns it.
    let report = unsafe { OwnedFd::from_raw_fd(REPORT_FD) };
    let original = block_all_signals();
    let init = start_init();
    let own_proc = init.as_ref().is_some_and(|i| i.own_mounts);
    let (subject, outcome) = start_subject(&argv, &original, own_proc);
    let message = match outcome {
        Ok(()) => Report::Started {
            subject: subject.as_raw(),
            init: init.as_ref().map(|i| i.pid.as_raw()),
        },
        Err(errno) => Report::Failed {
            errno: errno as i32,
        },
    };
    let _ = nix::unistd::write(&report, message.encode().as_bytes());
    drop(report);
    // The keeper holds none of the subject's streams: their end of file is the subject's own.
    null_stdio();
    let status = wait_for(subject);
    drop(init);
    if outcome.is_err() {
        std::process::exit(127);
    }
    end_like(status)
}

/// The namespace's pid 1 as the keeper knows it: its pid, and the pipe whose closing tells it the
/// keeper is gone.
struct Init {
    pid: Pid,
    /// Whether the namespace has a mount namespace of its own for its `/proc`.
    own_mounts: bool,
    _alive: OwnedFd,
}

fn die(message: &str) -> ! {
    eprintln!("wedge-init: {message}");
    std::process::exit(125)
}

/// Blocks every signal; returns the mask wedge started the keeper with.
fn block_all_signals() -> SigSet {
    let mut original = SigSet::empty();
    sigprocmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut original),
    )
    .unwrap_or_else(|e| die(&format!("sigprocmask: {e}")));
    original
}

/// Creates the pid namespace (and a mount namespace for its `/proc`) and forks its init, or
/// returns `None` without the privilege.
fn start_init() -> Option<Init> {
    if unshare(CloneFlags::CLONE_NEWPID).is_err() {
        return None;
    }
    // A mount namespace whose mounts stay inside it (the host's still propagate in): the
    // namespace's own /proc, and whatever the subject mounts, end with the trial.
    let own_mounts = unshare(CloneFlags::CLONE_NEWNS).is_ok()
        && nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
            None::<&str>,
        )
        .is_ok();
    let (alive_read, alive_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap_or_else(|e| die(&e.to_string()));
    // SAFETY: the keeper is single-threaded, so the child may run any code after the fork.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(alive_write);
            init_main(alive_read)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(alive_read);
            Some(Init {
                pid: child,
                own_mounts,
                _alive: alive_write,
            })
        }
        Err(e) => die(&format!("fork of the namespace's init: {e}")),
    }
}

/// Pid 1: reaps every orphan of the namespace; exits once the keeper is gone and no process is
/// left (its exit then ends nothing that still runs).
fn init_main(alive: OwnedFd) -> ! {
    // SAFETY: descriptor 3 is the keeper's report pipe; the init must not hold it open.
    unsafe { libc::close(REPORT_FD) };
    null_stdio();
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let signals = SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .unwrap_or_else(|_| std::process::exit(125));
    let mut keeper_alive = true;
    loop {
        let children_left = reap_all();
        if !keeper_alive && !children_left {
            std::process::exit(0);
        }
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if keeper_alive {
            fds.push(PollFd::new(alive.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => std::process::exit(125),
        }
        if keeper_alive
            && fds
                .get(1)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        {
            keeper_alive = false;
        }
        while let Ok(Some(_)) = signals.read_signal() {}
    }
}

/// Reaps every exited child; whether any child is left.
fn reap_all() -> bool {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return true,
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// Forks and execs the subject; `Err(errno)` when the exec failed.
fn start_subject(argv: &[CString], mask: &SigSet, own_proc: bool) -> (Pid, Result<(), Errno>) {
    let (status_read, status_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap_or_else(|e| die(&e.to_string()));
    // SAFETY: the keeper is single-threaded, so the child may run any code after the fork.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(status_read);
            if own_proc {
                mount_own_proc();
            }
            exec_subject(argv, mask, status_write.as_fd())
        }
        Ok(ForkResult::Parent { child }) => {
            drop(status_write);
            let mut buf = [0u8; 4];
            let outcome = match read_full(status_read.as_fd(), &mut buf) {
                4 => Err(Errno::from_raw(i32::from_ne_bytes(buf))),
                _ => Ok(()),
            };
            (child, outcome)
        }
        Err(e) => die(&format!("fork of the subject: {e}")),
    }
}

/// A `/proc` of the subject's pid namespace over the host's, in the trial's own mount namespace
/// (without one, the host's /proc stays: a subject then sees host pids).
fn mount_own_proc() {
    let flags = nix::mount::MsFlags::MS_NOSUID
        | nix::mount::MsFlags::MS_NODEV
        | nix::mount::MsFlags::MS_NOEXEC;
    let _ = nix::mount::mount(Some("proc"), "/proc", Some("proc"), flags, None::<&str>);
}

/// In the subject's process: the signal state wedge gave, then exec; on failure the errno goes
/// to the keeper over the close-on-exec pipe.
fn exec_subject(argv: &[CString], mask: &SigSet, status: BorrowedFd<'_>) -> ! {
    // SAFETY: the report descriptor belongs to the keeper, not to the subject.
    unsafe { libc::close(REPORT_FD) };
    // The Rust runtime ignores SIGPIPE in every Rust program; the subject gets the default back,
    // as std's own spawn gives it.
    // SAFETY: resetting a disposition to its default installs no handler.
    let _ =
        unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) };
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None);
    let errno = match nix::unistd::execvp(&argv[0], argv) {
        Err(e) => e as i32,
        Ok(never) => match never {},
    };
    let _ = nix::unistd::write(status, &errno.to_ne_bytes());
    // SAFETY: _exit ends the forked child without running the keeper's exit handlers.
    unsafe { libc::_exit(127) }
}

fn read_full(fd: BorrowedFd<'_>, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    got
}

/// Points standard input, output and error at `/dev/null`.
fn null_stdio() {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors of this process, which only this function
        // manages from here on.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
}

fn wait_for(pid: Pid) -> WaitStatus {
    loop {
        match waitpid(pid, None) {
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return status,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => die(&format!("waitpid: {e}")),
        }
    }
}

/// Ends the keeper as the subject ended: its exit code, or death by its signal.
fn end_like(status: WaitStatus) -> ! {
    match status {
        WaitStatus::Exited(_, code) => std::process::exit(code),
        WaitStatus::Signaled(_, signal, _) => {
            // No core file from the keeper: the subject's, if any, is the one that matters.
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
            // SAFETY: restoring the default action installs no handler.
            let _ =
                unsafe { nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl) };
            let mut only = SigSet::empty();
            only.add(signal);
            let _ = nix::sys::signal::raise(signal);
            let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&only), None);
            std::process::exit(128 + signal as i32)
        }
        _ => std::process::exit(125),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for r in [
            Report::Started {
                subject: 42,
                init: Some(41),
            },
            Report::Started {
                subject: 7,
                init: None,
            },
            Report::Failed { errno: 2 },
        ] {
            assert_eq!(Report::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn malformed_reports_are_rejected() {
        for line in [
            "",
            "started",
            "started 1",
            "started 0 5",
            "started -3 5",
            "started 4 -1",
            "started x 5",
            "started 4 5 6",
            "failed",
            "failed 0",
            "failed two",
            "exited 3",
        ] {
            assert_eq!(
                Report::decode(line),
                Err(BadReport(line.to_string())),
                "{line:?}"
            );
        }
    }
}
