//! Chaos mode `syscall` ([`crate::model::chaos`]): the subject's threads held at seeded system
//! call entries, by a tracer of wedge's, with no change to the subject.
//!
//! Guarantee: whatever way the tracer ends (told to stop, killed, wedge gone), every thread it
//! held goes on: the kernel detaches a tracer's tracees when it exits and resumes the ones
//! stopped for it (the tracer never sets `PTRACE_O_EXITKILL`). Signals meant for the subject
//! still reach it (a signal-delivery stop is resumed with the signal), a group stop stays a
//! group stop (`PTRACE_LISTEN`, as `PTRACE_SEIZE` asks), and which entries are held is
//! [`syscall_hold`] and [`fork_paired`] of the seed, the call and its occurrence, nothing else
//! (an entry a pairing takes, as forker or partner, is not also held by the other rule).
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
//! Fork pairing ([`crate::model::chaos`], [`fork_paired`]): a process-creating entry the seed
//! draws is held as a `Forking` wait (one per process at a time: a second fork of a process
//! whose fork waits goes on, since a thread held at a fork takes no lock and two waits would
//! only stall each other); the next entry of another thread of the same process into a call
//! that [`may_hold_lock`], to a descriptor that [`write_may_hold_lock`] (not a waker's eventfd,
//! not a socket), turns that thread into its `Partner` (kept) and lets the forker go; the
//! partner goes on at the forker's fork event (the child exists then; a `vfork` parent then
//! waits for its child, which must not wait for the partner) or its call's exit, and at
//! most after [`PARTNER_AT_MOST`]. A wait that found no partner ends after
//! [`FORK_PAIR_WAIT_MS`]. Meanwhile the forker's process is looked at for a locked malloc arena
//! ([`arena_looks`]): a look that finds one pairs the fork with the threads it stopped. And its
//! other threads are watched with the debug registers ([`lock_watches`]): the first to take a
//! watched lock word (a global lock the subject once waited on, an arena) is kept right after
//! its write, and the fork goes on; a thread held by a drawn hold when the watch began is armed
//! when that hold ends. Whichever rule finds a partner first ends the wait.
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
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

mod arena_looks;
mod lock_watches;

use crate::model::chaos::{
    FORK_PAIR_WAIT_MS, creates_process, fork_paired, may_hold_lock, syscall_hold,
    write_may_hold_lock,
};

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
    /// The threads kept stopped at a syscall entry.
    held: Vec<Held>,
    /// The process (thread group) of each thread seen, read once.
    tgids: HashMap<i32, i32>,
    log: Vec<String>,
    applied: usize,
    /// The arena looks of the forker being looked for, if any ([`arena_looks`]).
    looks: Option<arena_looks::Looks>,
    /// The lock watches of the forker being watched for ([`lock_watches`]).
    watches: lock_watches::Watches,
}

/// A thread kept stopped at a syscall entry, until when, and why.
struct Held {
    pid: Pid,
    until: Instant,
    why: Why,
}

enum Why {
    /// An entry [`syscall_hold`] drew.
    Drawn,
    /// A process-creating entry [`fork_paired`] drew, waiting for a partner in process `tgid`.
    Forking { tgid: i32, what: String },
    /// A partner, kept until `forker`'s new process exists.
    Partner { forker: Pid },
}

/// How long a partner is kept at most if its forker never reports back (a safety net: the
/// forker's next stop normally lets it go within microseconds).
const PARTNER_AT_MOST: Duration = Duration::from_secs(1);

impl Tracer {
    fn new(seed: u64) -> Tracer {
        Tracer {
            seed,
            start: Instant::now(),
            seen: HashMap::new(),
            held: Vec::new(),
            tgids: HashMap::new(),
            log: Vec::new(),
            applied: 0,
            looks: None,
            watches: lock_watches::Watches::default(),
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
            self.step_looks(Instant::now());
            self.step_watches();
            let mut fds = [
                PollFd::new(stopped.as_fd(), PollFlags::POLLIN),
                PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
            ];
            match ppoll(&mut fds, self.next_release(), None) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                return Ok(());
            }
            while stopped.read_signal()?.is_some() {}
        }
    }

    /// The poll timeout: until the earliest hold ends or the next arena look is due, or none.
    /// `ppoll`, for its nanoseconds: `poll`'s whole milliseconds would stretch every look's
    /// 50–500 µs gap to at least 1 ms.
    fn next_release(&self) -> Option<TimeSpec> {
        let holds = self.held.iter().map(|h| h.until);
        let until = holds.chain(self.looks_due()).min()?;
        Some(TimeSpec::from_duration(
            until.saturating_duration_since(Instant::now()),
        ))
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
            | Options::PTRACE_O_TRACEVFORK
            // An exec ends the process's other threads and gives the execer the leader's id,
            // with no exit reported for either: only this event tells (`on_exec`).
            | Options::PTRACE_O_TRACEEXEC;
        let pid = Pid::from_raw(tid);
        match ptrace::seize(pid, options) {
            // Seized threads run on; the interrupt stops each once, to start syscall stops.
            Ok(()) => {
                let _ = ptrace::interrupt(pid);
                true
            }
            Err(Errno::ESRCH) => false,
            // Forked while the walk ran, so already ours through TRACEFORK/TRACECLONE.
            Err(Errno::EPERM)
                if status_field(tid, "TracerPid:") == Some(std::process::id() as i32) =>
            {
                true
            }
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
        // A watch's trap first: it must never reach the subject, whatever the watch's state.
        if let WaitStatus::Stopped(pid, Signal::SIGTRAP) = status
            && self.watch_trap(pid)
        {
            return;
        }
        if let Some(pid) = stopped_pid(&status) {
            self.at_any_stop(pid);
        }
        match status {
            WaitStatus::PtraceSyscall(pid) => self.on_syscall(pid),
            WaitStatus::PtraceEvent(pid, sig, libc::PTRACE_EVENT_STOP) if is_group_stop(sig) => {
                // SAFETY: PTRACE_LISTEN takes no addresses; the tracee is in a ptrace stop.
                unsafe { libc::ptrace(libc::PTRACE_LISTEN, pid.as_raw(), 0, 0) };
            }
            // An interrupt an arena look asked for: the thread stays stopped until it is judged.
            WaitStatus::PtraceEvent(pid, _, libc::PTRACE_EVENT_STOP) if self.looked_stop(pid) => {}
            WaitStatus::PtraceEvent(pid, _, libc::PTRACE_EVENT_EXEC) => {
                self.on_exec(pid);
                resume(pid, None);
            }
            WaitStatus::PtraceEvent(pid, _, _) => {
                // A fork, vfork or clone event: the new process exists (and a vfork's parent
                // waits for it from here, so its partner must not wait for that).
                self.release_partners_of(pid);
                resume(pid, None);
            }
            WaitStatus::Stopped(pid, sig) => resume(pid, Some(sig)),
            WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _) => {
                self.release_partners_of(pid);
                self.held.retain(|h| h.pid != pid);
                self.forget_looked(pid);
                self.forget_watched(pid, None);
                self.tgids.remove(&pid.as_raw());
            }
            _ => {}
        }
    }

    /// A syscall stop: an entry drawn by the seed is held, everything else goes on.
    fn on_syscall(&mut self, pid: Pid) {
        let (nr, args) = match ptrace::syscall_info(pid) {
            Ok(info) if info.op == libc::PTRACE_SYSCALL_INFO_ENTRY => {
                // SAFETY: `op` says the kernel filled the union's `entry` member.
                unsafe { (info.u.entry.nr, info.u.entry.args) }
            }
            _ => {
                // An exit: a forker's call is done, so its new process exists.
                self.release_partners_of(pid);
                return resume(pid, None);
            }
        };
        if nr == libc::SYS_ptrace as u64 && !self.seen.contains_key(&nr) {
            // Its tracees are already wedge's, so its own PTRACE_ATTACH or TRACEME fails: say
            // why in the trial's log rather than leave a mystery.
            self.note(format!(
                "chaos syscall: thread {} calls ptrace itself, and the processes it would trace \
                 are wedge's: a subject that traces does not suit this mode (use rr or pct)",
                pid.as_raw()
            ));
        }
        if nr == libc::SYS_futex as u64 {
            self.note_futex(pid, &args);
        }
        let seen = self.seen.entry(nr).or_insert(0);
        *seen += 1;
        let occurrence = *seen;
        if may_hold_lock(nr) && self.pin_partner(pid, nr, occurrence, args[0]) {
            return;
        }
        if creates_process(nr, clone_flags(pid, nr, &args))
            && fork_paired(self.seed, nr, occurrence)
            && self.wait_for_partner(pid, nr, occurrence)
        {
            return;
        }
        let Some(hold_ms) = syscall_hold(self.seed, nr, occurrence) else {
            return resume(pid, None);
        };
        self.hold(pid, Duration::from_millis(hold_ms), Why::Drawn);
        self.logged(|| {
            format!(
                "thread {} held {hold_ms} ms at {} (entry {occurrence})",
                thread_name(pid),
                call_name(nr)
            )
        });
    }

    /// Where `forker`'s wait for a partner is among the holds, while it waits.
    fn forking_at(&self, forker: Pid) -> Option<usize> {
        self.held
            .iter()
            .position(|h| h.pid == forker && matches!(h.why, Why::Forking { .. }))
    }

    /// Where the fork of process `tgid` that waits for a partner (one at most) is among the
    /// holds.
    fn waiting_fork_in(&self, tgid: i32) -> Option<usize> {
        self.held
            .iter()
            .position(|h| matches!(&h.why, Why::Forking { tgid: t, .. } if *t == tgid))
    }

    fn hold(&mut self, pid: Pid, hold: Duration, why: Why) {
        let until = Instant::now() + hold;
        self.held.push(Held { pid, until, why });
    }

    /// Counts an applied perturbation and logs it (the first [`LOGGED`]) with its time.
    fn logged(&mut self, what: impl FnOnce() -> String) {
        self.applied += 1;
        if self.log.len() < LOGGED {
            let at = self.start.elapsed().as_millis();
            let line = format!("chaos +{at} ms: {}", what());
            self.note(line);
        }
    }

    /// The process-creating entry `nr` of `pid` waits for a partner, when its process has
    /// another thread that could be one; whether it waits.
    fn wait_for_partner(&mut self, pid: Pid, nr: u64, occurrence: u64) -> bool {
        let Some(tgid) = self.tgid(pid) else {
            return false;
        };
        // Another fork of the process waits already: held there it takes no lock, so neither
        // could be the other's partner, and two waits would only add up to nothing. (Asked
        // before the thread count, which reads `/proc`.)
        if self.waiting_fork_in(tgid).is_some() {
            return false;
        }
        if crate::engine::proc::threads(tgid).len() < 2 {
            return false;
        }
        let what = format!("{} (entry {occurrence})", call_name(nr));
        let wait = Duration::from_millis(FORK_PAIR_WAIT_MS);
        self.hold(pid, wait, Why::Forking { tgid, what });
        self.start_looks(pid, tgid, nr, occurrence);
        self.start_watches(pid, tgid, nr, occurrence);
        true
    }

    /// Thread `pid` entered a write to `fd` that may be made under a lock: when a forker of its
    /// process waits, and the descriptor is one such writes go to, `pid` is kept here and the
    /// forker goes on. Whether it was kept.
    fn pin_partner(&mut self, pid: Pid, nr: u64, occurrence: u64, fd: u64) -> bool {
        let Some(tgid) = self.tgid(pid) else {
            return false;
        };
        // The waiting forker is stopped, so it is never `pid`, which is entering a write.
        let Some(at) = self.waiting_fork_in(tgid) else {
            return false;
        };
        let target = std::fs::read_link(format!("/proc/{tgid}/fd/{fd}"))
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !write_may_hold_lock(fd, &target) {
            return false;
        }
        let forker = self.held.remove(at);
        let Why::Forking { what, .. } = forker.why else {
            unreachable!("matched as Forking above")
        };
        self.hold(pid, PARTNER_AT_MOST, Why::Partner { forker: forker.pid });
        self.logged(|| {
            format!(
                "thread {} kept at {} (entry {occurrence}) while thread {} made a process \
                 with {what}",
                thread_name(pid),
                call_name(nr),
                thread_name(forker.pid)
            )
        });
        resume(forker.pid, None);
        true
    }

    /// Thread `pid` finished an `execve`: every other thread of its process is gone, without an
    /// exit the tracer is told of, and if it was not the leader it now has the leader's tid. So
    /// their holds (a forker's wait, its partner, a drawn hold) are dropped without resuming
    /// anyone: a tid among them may be this very thread's now.
    fn on_exec(&mut self, pid: Pid) {
        let tgid = pid.as_raw();
        // The tid the thread had before (PTRACE_GETEVENTMSG), when it was not the leader.
        let former = ptrace::getevent(pid).map_or(tgid, |t| t as i32);
        let tgids = &self.tgids;
        let of_process = |tid: i32| tid == tgid || tid == former || tgids.get(&tid) == Some(&tgid);
        let before = self.held.len();
        self.held.retain(|h| !of_process(h.pid.as_raw()));
        let dropped = before - self.held.len();
        self.drop_looks_of(tgid);
        self.forget_watched(pid, Some(tgid));
        self.forget_watched(Pid::from_raw(former), None);
        self.tgids.retain(|tid, t| *t != tgid && *tid != former);
        if self.log.len() < LOGGED {
            let at = self.start.elapsed().as_millis();
            self.note(format!(
                "chaos +{at} ms: thread {former} of process {tgid} exec'd; {dropped} holds of \
                 the process dropped"
            ));
        }
    }

    /// The process (thread group) of thread `pid`, cached.
    fn tgid(&mut self, pid: Pid) -> Option<i32> {
        let tid = pid.as_raw();
        if let Some(t) = self.tgids.get(&tid) {
            return Some(*t);
        }
        let t = status_field(tid, "Tgid:")?;
        self.tgids.insert(tid, t);
        Some(t)
    }

    fn release_partners_of(&mut self, forker: Pid) {
        let (done, kept): (Vec<_>, Vec<_>) = self
            .held
            .drain(..)
            .partition(|h| matches!(h.why, Why::Partner { forker: f } if f == forker));
        self.held = kept;
        for h in done {
            resume(h.pid, None);
        }
    }

    fn release_due(&mut self, now: Instant) {
        let (due, kept): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|h| h.until <= now);
        self.held = kept;
        for h in due {
            if let Why::Forking { what, .. } = &h.why {
                self.logged(|| {
                    format!(
                        "thread {} found no partner in {FORK_PAIR_WAIT_MS} ms at {what}",
                        thread_name(h.pid)
                    )
                });
            } else {
                self.arm_on_release(h.pid);
            }
            resume(h.pid, None);
        }
    }

    fn release_all(&mut self) {
        // Disarm first: handling the stops it waits for may start looks, which end next.
        self.disarm_all();
        self.end_looks();
        for h in std::mem::take(&mut self.held) {
            resume(h.pid, None);
        }
    }
}

/// The thread a wait status reports a stop of (not an exit).
fn stopped_pid(status: &WaitStatus) -> Option<Pid> {
    match *status {
        WaitStatus::PtraceSyscall(pid)
        | WaitStatus::PtraceEvent(pid, _, _)
        | WaitStatus::Stopped(pid, _) => Some(pid),
        _ => None,
    }
}

/// "345 (sh)": a thread and its name, for the log.
fn thread_name(pid: Pid) -> String {
    let tid = pid.as_raw();
    let comm = std::fs::read_to_string(format!("/proc/{tid}/comm")).unwrap_or_default();
    format!("{tid} ({})", comm.trim())
}

fn call_name(nr: u64) -> &'static str {
    crate::model::syscall_names::name(nr).unwrap_or("?")
}

/// The flags of a `clone` (its first argument) or `clone3` (the first field of the structure
/// its first argument points to); `None` for other calls or when unreadable.
fn clone_flags(pid: Pid, nr: u64, args: &[u64; 6]) -> Option<u64> {
    match nr as i64 {
        libc::SYS_clone => Some(args[0]),
        libc::SYS_clone3 => {
            let bytes = crate::engine::proc::read_memory(pid.as_raw(), args[0], 8)?;
            Some(u64::from_ne_bytes(bytes.try_into().ok()?))
        }
        _ => None,
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

/// A number field of thread `tid`'s status (`"Tgid:"`, `"TracerPid:"`).
fn status_field(tid: i32, field: &str) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .parse()
        .ok()
}
