//! A trial's subject in a pid namespace of its own, so that nothing it starts can leave the trial:
//! a process may move to another cgroup, call `setsid`, double-fork or unshare namespaces, but it
//! cannot leave its pid namespace, and when that namespace's pid 1 dies the kernel kills every
//! process in it (nested namespaces included).
//!
//! wedge starts `wedge-init -- PROGRAM ARGS...` where it used to start the subject. That process
//! (the *keeper*, wedge's child, outside the namespace) does, single-threaded:
//!
//! 0. its own setup ([`Setup`]: dies with wedge, joins the trial's cgroups, leads a process
//!    group or a session, takes the trial's CPUs), what a forked child of wedge's did before
//!    wedge started keepers with `posix_spawn`;
//! 1. blocks every signal, so that group signals meant for the subject (a pty's ^C, a `signal`
//!    step with `to = "group"`) neither kill nor disturb it;
//! 2. `unshare(CLONE_NEWPID)` and forks the *init*: pid 1 of the new namespace, which reaps
//!    orphans and stays alive while the keeper lives or any process of the namespace is left
//!    (so left-behind processes are seen, and reported, exactly as without a namespace);
//! 3. forks the subject (pid 2 there), which mounts a `/proc` of the new namespace (in a mount
//!    namespace of the trial's own, whose mounts do not propagate to the host), so that the pids
//!    a program sees (`$$`, `$!`) are the ones its `/proc` shows; then it restores the signal mask
//!    wedge gave and execs (with `--stopped`, it first stops itself until wedge continues it, so
//!    that chaos mode `syscall`'s tracer sees its every call);
//! 4. reports on descriptor 3 ([`Report`]) the subject's and the init's pids as wedge sees them,
//!    or the errno of a failed exec, and closes it;
//! 5. waits for the subject and ends the same way it did (the same exit code, or the same
//!    signal), so wedge's view of "the subject exited" is unchanged.
//!
//! Killing the init (its pid is in the report) ends everything the trial started. Without the
//! privilege to create a pid namespace, the keeper runs the subject as its direct child and
//! reports no init: the trial's cgroup is then the only containment, as before.
//!
//! One namespace per trial: the keepers of the processes a trial starts after its subject
//! (clients, teardown commands) are started with `--join INIT` and enter the namespace (and the
//! mount namespace with its `/proc`) of the subject's init instead of making their own, so that
//! a client sees the subject's processes and pids (`runc exec ID` finds the container
//! `runc run ID` started). They report no init of their own. So that a namespace outlives its
//! subject for the steps that come after it, wedge hands the first keeper a *lifeline*
//! (`--lifeline`: the read end of a pipe on descriptor 4 whose write end wedge holds for the
//! trial): the init stays while it is open, and ends once it is closed (at the trial's end, or
//! when wedge dies) and no process is left.
//!
//! Without a pid namespace (`--no-pidns`, a scenario's `isolation = "cgroup"`: runtimes such as
//! firejail refuse to sandbox when pid 1 is not the host's init) the keeper runs the subject in
//! the host's namespaces and makes itself a child subreaper, so that what the subject orphans
//! while it runs stays the keeper's descendant; the trial's cgroups are then the containment.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

mod setup;
pub use setup::{Setup, SetupError};

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
    /// The keeper's own setup failed ([`Setup`]), or the subject could not be exec'd (`errno`
    /// of `execvp`); the keeper exits 127.
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

/// The descriptor on which the first keeper of a trial gets its lifeline (`--lifeline`).
pub const LIFELINE_FD: RawFd = 4;

/// Where the keeper runs its program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A new pid namespace with an init of its own (the default); with `lifeline`, the init also
    /// stays while [`LIFELINE_FD`] is open.
    NewNamespace { lifeline: bool },
    /// The pid and mount namespaces of the init with this pid (in the keeper's namespace).
    Join(i32),
    /// The host's namespaces; the keeper is a child subreaper.
    NoNamespace,
}

impl Mode {
    /// The keeper's options before `--`.
    pub fn args(&self) -> Vec<String> {
        match self {
            Mode::NewNamespace { lifeline: false } => Vec::new(),
            Mode::NewNamespace { lifeline: true } => vec!["--lifeline".to_string()],
            Mode::Join(pid) => vec!["--join".to_string(), pid.to_string()],
            Mode::NoNamespace => vec!["--no-pidns".to_string()],
        }
    }

    /// Parses the options before `--`.
    pub fn parse(options: &[String]) -> Result<Mode, ModeError> {
        match options {
            [] => Ok(Mode::NewNamespace { lifeline: false }),
            [o] if o == "--lifeline" => Ok(Mode::NewNamespace { lifeline: true }),
            [o] if o == "--no-pidns" => Ok(Mode::NoNamespace),
            [o, pid] if o == "--join" => match pid.parse::<i32>() {
                Ok(p) if p > 0 => Ok(Mode::Join(p)),
                _ => Err(ModeError::JoinWithoutPid(pid.clone())),
            },
            other => Err(ModeError::Unknown(other.to_vec())),
        }
    }
}

/// Why the keeper's options do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    #[error("--join needs a pid, not {0:?}")]
    JoinWithoutPid(String),
    #[error("unknown options {0:?}")]
    Unknown(Vec<String>),
}

const USAGE: &str = "usage: wedge-init [--lifeline | --join PID | --no-pidns] [--parent PID] \
                     [--cgroup FILE]... [--tty] [--cpus LIST] [--stopped] -- PROGRAM [ARGS...]";

/// The keeper's options before `--`: its own setup and its mode.
fn options(options: &[String]) -> Result<(Setup, Mode), String> {
    let (setup, rest) = Setup::parse(options).map_err(|e| e.to_string())?;
    let mode = Mode::parse(&rest).map_err(|e| e.to_string())?;
    Ok((setup, mode))
}

/// The keeper's whole life (`wedge-init [OPTIONS] -- PROGRAM ARGS...`). Never returns.
pub fn keeper_main(args: Vec<String>) -> ! {
    let ((setup, mode), argv) = match args.iter().position(|a| a == "--") {
        Some(i) if i + 1 < args.len() => match options(&args[1..i]) {
            Ok(parsed) => (parsed, &args[i + 1..]),
            Err(e) => die(&format!("{e}; {USAGE}")),
        },
        _ => die(USAGE),
    };
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_else(|_| die("argument holds a NUL byte")))
        .collect();
    // SAFETY: wedge hands descriptor 3 to the keeper and nothing else in this process owns it.
    let report = unsafe { OwnedFd::from_raw_fd(REPORT_FD) };
    if let Err(e) = setup.apply() {
        let failed = Report::Failed {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        };
        let _ = nix::unistd::write(&report, failed.encode().as_bytes());
        std::process::exit(127);
    }
    let original = block_all_signals();
    let (init, own_proc) = enter(mode);
    let (subject, outcome, _pending) = start_subject(&argv, &original, own_proc, setup.stopped);
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

/// Puts the keeper where its program will run; returns the init it made (if any) and whether
/// the program must mount its namespace's `/proc`.
fn enter(mode: Mode) -> (Option<Init>, bool) {
    match mode {
        Mode::NewNamespace { lifeline } => {
            let lifeline = lifeline.then(|| {
                // SAFETY: wedge hands descriptor 4 to a keeper started with --lifeline, and
                // nothing else in this process owns it.
                unsafe { OwnedFd::from_raw_fd(LIFELINE_FD) }
            });
            let init = start_init(lifeline);
            let own_proc = init.as_ref().is_some_and(|i| i.own_mounts);
            (init, own_proc)
        }
        Mode::Join(pid) => {
            join(pid).unwrap_or_else(|e| die(&format!("joining the trial's namespace: {e}")));
            (None, false)
        }
        Mode::NoNamespace => {
            // What the subject orphans while it runs stays the keeper's (and so the trial's
            // descendant); the keeper only waits for the subject, so they wait as zombies.
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) } < 0 {
                die(&format!(
                    "PR_SET_CHILD_SUBREAPER: {}",
                    io::Error::last_os_error()
                ));
            }
            (None, false)
        }
    }
}

/// Enters the pid namespace (for the children to come) and the mount namespace of `init`,
/// keeping the working directory (entering a mount namespace resets it to the root).
fn join(init: i32) -> io::Result<()> {
    let cwd = std::env::current_dir()?;
    let pid_ns = std::fs::File::open(format!("/proc/{init}/ns/pid"))?;
    let mnt_ns = std::fs::File::open(format!("/proc/{init}/ns/mnt"))?;
    nix::sched::setns(&pid_ns, CloneFlags::CLONE_NEWPID).map_err(io::Error::from)?;
    // Only when the init has a mount namespace of its own (not the keeper's already).
    let own = std::fs::read_link("/proc/self/ns/mnt")?;
    if std::fs::read_link(format!("/proc/{init}/ns/mnt"))? != own {
        nix::sched::setns(&mnt_ns, CloneFlags::CLONE_NEWNS).map_err(io::Error::from)?;
    }
    std::env::set_current_dir(cwd)
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
fn start_init(lifeline: Option<OwnedFd>) -> Option<Init> {
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
            init_main(alive_read, lifeline)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(alive_read);
            // Only the init holds the lifeline: the keeper ends with its subject.
            drop(lifeline);
            Some(Init {
                pid: child,
                own_mounts,
                _alive: alive_write,
            })
        }
        Err(e) => die(&format!("fork of the namespace's init: {e}")),
    }
}

/// Pid 1: reaps every orphan of the namespace; exits once the keeper is gone, the lifeline (if
/// any) is closed and no process is left (its exit then ends nothing that still runs).
fn init_main(alive: OwnedFd, lifeline: Option<OwnedFd>) -> ! {
    // SAFETY: descriptor 3 is the keeper's report pipe; the init must not hold it open.
    unsafe { libc::close(REPORT_FD) };
    null_stdio();
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let signals = SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .unwrap_or_else(|_| std::process::exit(125));
    // The pipes whose closing the init waits for: the keeper's, and wedge's lifeline.
    let mut open: Vec<OwnedFd> = std::iter::once(alive).chain(lifeline).collect();
    loop {
        let children_left = reap_all();
        if open.is_empty() && !children_left {
            std::process::exit(0);
        }
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        fds.extend(
            open.iter()
                .map(|p| PollFd::new(p.as_fd(), PollFlags::POLLIN)),
        );
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => std::process::exit(125),
        }
        // Nothing is ever written to these pipes: any event is their writer's end.
        let closed: Vec<bool> = fds[1..]
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut i = 0;
        open.retain(|_| {
            i += 1;
            !closed[i - 1]
        });
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

/// Forks and execs the subject; `Err(errno)` when the exec failed. With `stopped`, the subject
/// stops itself (SIGSTOP) just before its exec and this returns once it has: the exec's outcome
/// is then the subject's own (exit 127 on failure), and the pipe it comes on is returned, to be
/// held until the subject ends so that its errno can still be written.
fn start_subject(
    argv: &[CString],
    mask: &SigSet,
    own_proc: bool,
    stopped: bool,
) -> (Pid, Result<(), Errno>, Option<OwnedFd>) {
    let (status_read, status_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap_or_else(|e| die(&e.to_string()));
    // SAFETY: the keeper is single-threaded, so the child may run any code after the fork.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(status_read);
            if own_proc {
                mount_own_proc();
            }
            exec_subject(argv, mask, status_write.as_fd(), stopped)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(status_write);
            if stopped && stopped_before_exec(child) {
                return (child, Ok(()), Some(status_read));
            }
            let mut buf = [0u8; 4];
            let outcome = match read_full(status_read.as_fd(), &mut buf) {
                4 => Err(Errno::from_raw(i32::from_ne_bytes(buf))),
                _ => Ok(()),
            };
            (child, outcome, None)
        }
        Err(e) => die(&format!("fork of the subject: {e}")),
    }
}

/// Waits until `child` has stopped itself before its exec (`true`), or ended (`false`).
fn stopped_before_exec(child: Pid) -> bool {
    loop {
        match waitpid(child, Some(WaitPidFlag::WUNTRACED)) {
            Ok(WaitStatus::Stopped(..)) => return true,
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => return false,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => die(&format!("waitpid: {e}")),
        }
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
fn exec_subject(argv: &[CString], mask: &SigSet, status: BorrowedFd<'_>, stopped: bool) -> ! {
    // SAFETY: the report descriptor belongs to the keeper, not to the subject.
    unsafe { libc::close(REPORT_FD) };
    // The Rust runtime ignores SIGPIPE in every Rust program; the subject gets the default back,
    // as std's own spawn gives it.
    // SAFETY: resetting a disposition to its default installs no handler.
    let _ =
        unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) };
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None);
    if stopped {
        // Until wedge continues it (SIGCONT), once whatever must see its first call is there.
        let _ = nix::sys::signal::raise(Signal::SIGSTOP);
    }
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
