//! Chaos mode `syscall` ([`crate::model::chaos`]): the subject's threads held at seeded system
//! call entries, by a tracer of wedge's, with no change to the subject.
//!
//! Guarantee: whatever way the tracer ends (told to stop, killed, wedge gone), every thread it
//! held goes on: the kernel detaches a tracer's tracees when it exits and resumes the ones
//! stopped for it (the tracer never sets `PTRACE_O_EXITKILL`). Signals meant for the subject
//! still reach it (a signal-delivery stop is resumed with the signal), a group stop stays a
//! group stop (`PTRACE_LISTEN`, as `PTRACE_SEIZE` asks), and which entries are held is
//! [`syscall_hold`] of the seed, the call and its occurrence, nothing else.
//!
//! Why a process of its own (`wedge-init --hold-syscalls SEED PID...`): a tracer must `waitpid`
//! its tracees, and `waitpid(-1)` in wedge would also take its children's exits from the trials
//! waiting for them; the tracer has no children, so every status it reaps is a tracee's. It is
//! single-threaded, and wakes on three things only: `SIGCHLD` (through a signalfd: a tracee
//! stopped), its stdin (end of file: stop), and the end of the next hold (the poll's timeout
//! *is* the mechanism: a hold due to end then).
//!
//! What it traces: every thread of the processes it is given, found again until no new one
//! appears (threads and children made while it attaches), and, from then on, every thread and
//! process they make (`PTRACE_O_TRACECLONE`, `TRACEFORK`, `TRACEVFORK`): the subject part of
//! the trial, present and future. A thread it cannot trace (already traced by someone else, or
//! forbidden by a Yama policy) is named in the log and left alone. The limit that follows: a
//! subject that traces its own children (a debugger, a ptrace sandbox) finds them traced
//! already; the log names its first `ptrace` call, and such a subject wants `rr` or `pct`.
//!
//! Cost: every system call of a traced thread makes two ptrace stops (entry and exit), a few
//! microseconds each: a perturbation of its own, spread evenly over all calls.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::model::chaos::syscall_hold;

/// The flag that makes `wedge-init` this tracer.
pub const FLAG: &str = "--hold-syscalls";

/// Most holds written to the trial's log; the count of the rest is noted.
const LOGGED: usize = 200;

/// Starts the tracer on every thread of `pids` (and all they make later) with `seed`'s holds.
pub fn spawn(init_program: &Path, seed: u64, pids: &[i32]) -> io::Result<Child> {
    let mut cmd = Command::new(init_program);
    cmd.arg(FLAG)
        .arg(seed.to_string())
        .args(pids.iter().map(i32::to_string))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    crate::engine::reaper::spawn_owned(&mut cmd)
}

/// Stops the tracer (its stdin closed; every held thread goes on) and returns its log lines.
pub fn finish(mut child: Child) -> Vec<String> {
    drop(child.stdin.take());
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    let status = child.wait();
    crate::engine::reaper::disown(child.id() as i32);
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => lines.push(format!("chaos syscall: the tracer ended with {s}")),
        Err(e) => lines.push(format!("chaos syscall: waiting for the tracer: {e}")),
    }
    lines
}

/// `wedge-init --hold-syscalls SEED PID...`: traces until stdin ends, then prints one line per
/// hold applied (and any thread it could not trace) and exits, which lets every thread go.
pub fn tracer_main(args: &[String]) -> ! {
    let seed = args.first().and_then(|s| s.parse().ok());
    let pids: Option<Vec<i32>> = args.iter().skip(1).map(|p| p.parse().ok()).collect();
    let (Some(seed), Some(pids)) = (seed, pids) else {
        println!("chaos syscall: usage: wedge-init {FLAG} SEED PID...");
        std::process::exit(2);
    };
    let mut tracer = Tracer::new(seed);
    if let Err(e) = tracer.run(&pids) {
        tracer.note(format!("chaos syscall: the tracer stopped early: {e}"));
    }
    tracer.release_all();
    let mut out = io::stdout().lock();
    for line in &tracer.log {
        let _ = writeln!(out, "{line}");
    }
    if tracer.applied > LOGGED {
        let rest = tracer.applied - LOGGED;
        let _ = writeln!(out, "chaos: {rest} more holds not listed");
    }
    let _ = out.flush();
    std::process::exit(0)
}

struct Tracer {
    seed: u64,
    start: Instant,
    /// How many entries into each syscall (by number) the traced threads made so far.
    seen: HashMap<u64, u64>,
    /// The threads held at a syscall entry, and until when.
    held: Vec<(Pid, Instant)>,
    log: Vec<String>,
    applied: usize,
}

impl Tracer {
    fn new(seed: u64) -> Tracer {
        Tracer {
            seed,
            start: Instant::now(),
            seen: HashMap::new(),
            held: Vec::new(),
            log: Vec::new(),
            applied: 0,
        }
    }

    fn note(&mut self, line: String) {
        self.log.push(line);
    }

    /// Attaches, then handles stops until stdin ends.
    fn run(&mut self, pids: &[i32]) -> nix::Result<()> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
        let stopped = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        let threads = self.attach_all(pids);
        // The first line, at once: wedge lets the subject's steps go on when it reads it.
        let mut out = io::stdout().lock();
        let _ = writeln!(
            out,
            "chaos syscall: tracing {threads} threads, seed {}",
            self.seed
        );
        let _ = out.flush();
        drop(out);
        let stdin = io::stdin();
        loop {
            self.reap_stops()?;
            self.release_due(Instant::now());
            let mut fds = [
                PollFd::new(stopped.as_fd(), PollFlags::POLLIN),
                PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, self.next_release()) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                return Ok(());
            }
            while stopped.read_signal()?.is_some() {}
        }
    }

    /// The poll timeout: until the earliest hold ends (rounded up to whole ms), or none.
    fn next_release(&self) -> PollTimeout {
        let Some(until) = self.held.iter().map(|h| h.1).min() else {
            return PollTimeout::NONE;
        };
        let left = until.saturating_duration_since(Instant::now());
        let ms = left.as_micros().div_ceil(1000);
        PollTimeout::try_from(Duration::from_millis(ms as u64)).unwrap_or(PollTimeout::MAX)
    }

    /// Seizes every thread of `pids` and of their children, listing each process's threads
    /// again until a listing finds none new (a thread not yet traced may make another); returns
    /// how many threads it seized.
    fn attach_all(&mut self, pids: &[i32]) -> usize {
        let mut traced = HashSet::new();
        let mut seized = 0;
        let mut visited = HashSet::new();
        let mut todo = pids.to_vec();
        while let Some(pid) = todo.pop() {
            if !visited.insert(pid) {
                continue;
            }
            loop {
                let mut new = false;
                for tid in crate::engine::proc::threads(pid) {
                    if traced.insert(tid) {
                        new = true;
                        seized += usize::from(self.attach(tid));
                    }
                    todo.extend(crate::engine::proc::thread_children(pid, tid));
                }
                if !new {
                    break;
                }
            }
        }
        seized
    }

    /// Seizes thread `tid`; whether it is now traced.
    fn attach(&mut self, tid: i32) -> bool {
        let options = Options::PTRACE_O_TRACESYSGOOD
            | Options::PTRACE_O_TRACECLONE
            | Options::PTRACE_O_TRACEFORK
            | Options::PTRACE_O_TRACEVFORK;
        let pid = Pid::from_raw(tid);
        match ptrace::seize(pid, options) {
            // Seized threads run on; the interrupt stops each once, to start syscall stops.
            Ok(()) => {
                let _ = ptrace::interrupt(pid);
                true
            }
            Err(Errno::ESRCH) => false,
            // Forked while the walk ran, so already ours through TRACEFORK/TRACECLONE.
            Err(Errno::EPERM) if tracer_of(tid) == Some(std::process::id() as i32) => true,
            Err(e) => {
                self.note(format!("chaos syscall: cannot trace thread {tid}: {e}"));
                false
            }
        }
    }

    /// Handles every stop reported so far.
    fn reap_stops(&mut self) -> nix::Result<()> {
        loop {
            match waitpid(None, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
                Ok(status) => self.on_stop(status),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn on_stop(&mut self, status: WaitStatus) {
        match status {
            WaitStatus::PtraceSyscall(pid) => self.on_syscall(pid),
            WaitStatus::PtraceEvent(pid, sig, libc::PTRACE_EVENT_STOP) if is_group_stop(sig) => {
                // SAFETY: PTRACE_LISTEN takes no addresses; the tracee is in a ptrace stop.
                unsafe { libc::ptrace(libc::PTRACE_LISTEN, pid.as_raw(), 0, 0) };
            }
            WaitStatus::PtraceEvent(pid, _, _) => resume(pid, None),
            WaitStatus::Stopped(pid, sig) => resume(pid, Some(sig)),
            WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _) => {
                self.held.retain(|h| h.0 != pid);
            }
            _ => {}
        }
    }

    /// A syscall stop: an entry drawn by the seed is held, everything else goes on.
    fn on_syscall(&mut self, pid: Pid) {
        let entry = match ptrace::syscall_info(pid) {
            Ok(info) if info.op == libc::PTRACE_SYSCALL_INFO_ENTRY => {
                // SAFETY: `op` says the kernel filled the union's `entry` member.
                unsafe { info.u.entry.nr }
            }
            _ => return resume(pid, None),
        };
        if entry == libc::SYS_ptrace as u64 && !self.seen.contains_key(&entry) {
            // Its tracees are already wedge's, so its own PTRACE_ATTACH or TRACEME fails: say
            // why in the trial's log rather than leave a mystery.
            self.note(format!(
                "chaos syscall: thread {} calls ptrace itself, and the processes it would trace \
                 are wedge's: a subject that traces does not suit this mode (use rr or pct)",
                pid.as_raw()
            ));
        }
        let seen = self.seen.entry(entry).or_insert(0);
        *seen += 1;
        let occurrence = *seen;
        let Some(hold_ms) = syscall_hold(self.seed, entry, occurrence) else {
            return resume(pid, None);
        };
        self.held
            .push((pid, Instant::now() + Duration::from_millis(hold_ms)));
        self.applied += 1;
        if self.log.len() < LOGGED {
            let at = self.start.elapsed().as_millis();
            let tid = pid.as_raw();
            let comm = std::fs::read_to_string(format!("/proc/{tid}/comm")).unwrap_or_default();
            let call = crate::model::syscall_names::name(entry).unwrap_or("?");
            self.note(format!(
                "chaos +{at} ms: thread {tid} ({}) held {hold_ms} ms at {call} (entry {occurrence})",
                comm.trim()
            ));
        }
    }

    fn release_due(&mut self, now: Instant) {
        let (due, kept): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|h| h.1 <= now);
        self.held = kept;
        for (pid, _) in due {
            resume(pid, None);
        }
    }

    fn release_all(&mut self) {
        for (pid, _) in std::mem::take(&mut self.held) {
            resume(pid, None);
        }
    }
}

/// Resumes a tracee until its next syscall stop (a thread gone meanwhile needs nothing).
fn resume(pid: Pid, sig: Option<Signal>) {
    let _ = ptrace::syscall(pid, sig);
}

/// Whether a `PTRACE_EVENT_STOP` with `sig` is a group stop (a stop signal), not the stop of an
/// interrupt or of a newly attached thread (`SIGTRAP`).
fn is_group_stop(sig: Signal) -> bool {
    matches!(
        sig,
        Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
    )
}

/// The tracer of thread `tid` (`TracerPid` in its status; `Some(0)` when untraced).
fn tracer_of(tid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))?
        .trim()
        .parse()
        .ok()
}
