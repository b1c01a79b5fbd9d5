//! Watching a trial's process tree: snapshots from `/proc`, quiescence, and the per-process,
//! per-thread diagnosis of a hang.
//!
//! # What counts as quiescent
//!
//! The guarantee: wedge calls a tree quiescent (a hang, once it lasts the window) only when no
//! thread of it can run again before the deadline by anything the tree itself set up: every
//! thread is asleep with no timeout that fires before the deadline and no timer of its own that
//! can wake it before then, no thread uses CPU or is woken (its context-switch count is still),
//! and no process or thread comes or goes. A progressing program is never called hung by the
//! window; when wedge cannot see whether a wake source is armed it assumes it is, and the tree is
//! judged at the deadline instead, which is still a hang verdict, only a later one.
//!
//! Per thread (the rule itself is in [`wake`], pure; the kernel reading in `proc::wake`):
//! - **state**: running ⇒ not quiescent; stopped, traced, zombie ⇒ quiescent. Asleep (`S`) ⇒
//!   quiescent only inside a syscall and as below. **Uninterruptible (`D`) is never quiescent**:
//!   the kernel shows no difference between slow I/O (a long `fsync`, a page fault on a loaded
//!   disk) and a stuck kernel-side wait, so a `D` wait ends only at the deadline, where it is a
//!   hang whose diagnosis says `uninterruptible` with its wchan and kernel stack.
//! - **its own timeout** (`proc::syscall::wait_bound`): a timed wait firing before the deadline
//!   is not quiescent; a timeout wedge cannot read counts as firing now.
//! - **timerfds it waits on**: a thread in `read`/`readv`/`pread` on an fd, in `epoll_wait`/
//!   `epoll_pwait`/`epoll_pwait2` on an epoll set (followed through nested sets), or in
//!   `poll`/`ppoll`/`select`/`pselect6` on a set read from its memory (at most 4096 fds), is not
//!   quiescent while a timerfd among those fds is armed to fire before the deadline (its fdinfo
//!   `it_value`) or has expired unread. A set wedge cannot read counts as waking any moment. A
//!   timerfd that nobody waits on wakes nobody: a futex deadlock beside a ticking timer is still
//!   judged (the ticking thread itself is not quiescent while it keeps waking).
//! - **io_uring**: a thread in `io_uring_enter(GETEVENTS)` has its own timeout only with
//!   `IORING_ENTER_EXT_ARG` (the argument's `ts`, read from its memory; absolute ones as
//!   boottime, never later than the truth). Completions wake it, and a request in flight may
//!   complete at any moment and do anything on completion (write a pipe, wake a futex), so
//!   while **any ring of the tree** may have one, no thread of the tree is quiescent. The
//!   kernel counts no requests in flight; a ring's fdinfo (6.18: `SqHead`, `SqTail`,
//!   `CachedSqHead`, `CqHead`, `CqTail`, `CachedCqTail`, `PollList`, `CqOverflowList`) shows
//!   it idle only when every SQE written was consumed, every one consumed has posted its CQE,
//!   every CQE was reaped, and no poll is armed nor CQE overflowed (`proc::wake::Ring::idle`);
//!   anything else, or an fdinfo wedge cannot parse, counts as in flight. A request that posts
//!   no CQE or several (`IOSQE_CQE_SKIP_SUCCESS`, multishot) keeps its ring "in flight" for
//!   good: such a tree is judged at the deadline. A wait on an idle ring is a hang:
//!   `blocked in io_uring_enter (io_uring fd 3 has nothing in flight)`.
//! - **signals its process's timers can send** (to every interruptibly sleeping thread of that
//!   process, since a caught signal interrupts any such wait and a default-fatal one ends the
//!   process — neither is a hang):
//!   - `alarm()` / `ITIMER_REAL` has no per-process view (`/proc/PID/stat` field 21 is always 0).
//!     `/proc/timer_list` (root) lists every armed one in the system as `it_real_fn`, without its
//!     owner: if none armed anywhere fires before the deadline, the process's (if any) does not
//!     either; otherwise it may get SIGALRM as late as the latest of those, and is not quiescent
//!     while one is there, unless it ignores SIGALRM. Without `/proc/timer_list`: a process that catches SIGALRM is not quiescent before
//!     the deadline (too broad for a process that catches SIGALRM and really hangs, which is then
//!     judged at the deadline: sound, only later).
//!   - `ITIMER_VIRTUAL` / `ITIMER_PROF` (SIGVTALRM, SIGPROF) and POSIX timers on CPU-time clocks
//!     count the process's CPU time, which does not advance while every thread sleeps: they
//!     cannot wake a quiescent tree, so they are not wake sources.
//!   - POSIX timers are listed by `/proc/PID/timers` (id, signal, notify, clock) but an armed and
//!     a disarmed one look the same there; `/proc/timer_list` shows armed ones as
//!     `posix_timer_fn`. A timer whose signal the process catches, waits for or dies of is a wake
//!     source while some POSIX timer of the system fires before the deadline (it may be this
//!     one); none does ⇒ this one is disarmed or fires too late. Alarm clocks, an unreadable `/proc/timer_list`, or no `/proc/PID/timers` (with a
//!     caught signal) ⇒ not quiescent before the deadline.
//!
//! # Whose quiescence
//!
//! By default every process of the trial decides. A scenario may narrow that to the subject's
//! tree (`quiescence_of = "subject"`, [`Monitor::observe_where`]): the other processes are still
//! tracked and diagnosed, but neither what they do nor their timeouts count. That is for clients
//! that only wait on the subject with timeouts of their own (`wedge-agent exec --timeout`): they
//! would keep a frozen subject "active" until they expire, while nothing they can do then wakes it.
//!
//! # System timers that were never the tree's
//!
//! `/proc/timer_list` does not say whose an armed `ITIMER_REAL` or POSIX timer is, so any one in
//! the system may be a tree process's. But a tree that has not changed since an instant (every
//! thread asleep by its own rule, no CPU time, no wake-up, nobody came or went: *still*) cannot
//! have armed a timer since then, and a timer of its own that fired would have changed it (killed
//! the process, or woken the handler's thread). So only the system timers already armed when the
//! stillness began, with the same expiry (timer_list's absolute one), can still be the tree's
//! ([`StillAlarms`]); a foreign periodic timer (another program's 1 s `setitimer`) stops counting
//! once a snapshot taken after it fired shows the tree unchanged. When nothing
//! else held the tree back, the window then runs from the start of the stillness: the timers
//! that held it were shown foreign by firing without effect.
//!
//! The diagnosis names the wake source: `sleeping in read (timerfd fd 3 fires in 700 ms)`,
//! `blocked in read (timerfd fd 3 is disarmed)`, or the alarm or POSIX timer that may fire.

pub mod awake;
pub mod waitfor;
pub mod wake;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::proc::syscall::{self, WaitBound};
use crate::proc::wake as procwake;
use crate::proc::{self as procfs, ProcessSample, SyscallState, ThreadSample};
use awake::{Awake, HangClass, Seen};
use waitfor::WaitGraph;
use wake::{SignalView, Wake};

/// The processes of a tree at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub taken: Instant,
    pub processes: Vec<ProcessSample>,
}

impl Snapshot {
    /// Reads every process in `pids` (those that vanished meanwhile are skipped).
    pub fn take(pids: &[i32]) -> Snapshot {
        Snapshot {
            taken: Instant::now(),
            processes: pids
                .iter()
                .filter_map(|&pid| procfs::read_process(pid))
                .collect(),
        }
    }

    /// Processes whose name is `name` (compared like the kernel's 15-byte `comm`).
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ProcessSample> + 'a {
        self.processes
            .iter()
            .filter(move |p| comm_matches(&p.stat.comm, name))
    }
}

/// Whether a kernel `comm` (at most 15 bytes) is `name`.
pub fn comm_matches(comm: &str, name: &str) -> bool {
    let truncated: String = name.bytes().take(15).map(char::from).collect();
    comm == name || comm == truncated
}

#[derive(Debug, Clone)]
struct Track {
    /// What the thread is doing: state and syscall.
    key: (char, Option<SyscallState>),
    /// When wedge first saw it doing that.
    since: Instant,
    /// When its timeout fires at the latest (`None`: never, or it is not waiting).
    wakes_at: Option<Instant>,
    /// Whether the thread counts as quiescent by its state and its own timeout.
    quiet: bool,
    /// A timer that can wake it besides its own timeout, as seen in the latest snapshot (read
    /// afresh each time, since another thread may arm or disarm it at any moment).
    external: Option<External>,
}

/// A wake source of a thread outside its own syscall's timeout, or a timer that cannot wake it.
#[derive(Debug, Clone)]
struct External {
    /// When it fires at the latest; `None`: unknown, any moment.
    at: Option<Instant>,
    /// e.g. `timerfd fd 3 fires in 700 ms`, `timerfd fd 3 is disarmed`.
    text: String,
    /// Whether it wakes the thread (`false`: a note for the diagnosis only).
    wakes: bool,
}

impl External {
    fn from_wake(w: Wake, now: Instant) -> External {
        External {
            at: w.after.map(|d| now + d),
            text: w.why,
            wakes: true,
        }
    }

    fn wakes_by(&self, deadline: Instant) -> bool {
        self.wakes && self.at.is_none_or(|at| at <= deadline)
    }
}

/// The quiescence detector and diagnosis builder of one trial.
#[derive(Debug)]
pub struct Monitor {
    start: Instant,
    deadline: Instant,
    window: Duration,
    last_sample: Option<Instant>,
    tracks: HashMap<(i32, i32), Track>,
    fingerprint: Vec<(i32, i32, u64, u64, char)>,
    quiet_since: Option<Instant>,
    /// Since when the judged tree is still (see the module doc), if it is.
    still_since: Option<Instant>,
    /// The system timers armed when the stillness began (read on first need).
    still_alarms: Option<StillAlarms>,
    /// Whether, since `still_since`, only system timers (whose owner is unknown) kept the tree
    /// from being quiescent.
    held_by_alarms_only: bool,
    /// Every thread's wake-ups and CPU time, for a deadline verdict's diagnosis.
    awake: Awake,
}

/// The system's `ITIMER_REAL` and POSIX timers followed through a tree's stillness: the only
/// ones that can still be the tree's (see the module doc).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StillAlarms {
    followed: Vec<Followed>,
    /// Reads folded in so far.
    reads: u32,
}

/// A system timer listed in the first reads of a stillness.
#[derive(Debug, Clone, PartialEq)]
struct Followed {
    /// As its latest listing shows it.
    timer: procwake::SystemTimer,
    /// It fires by then at the latest: its latest listing's end plus the time left it gave.
    due_by: Instant,
    /// The end of the first read since its latest listing that did not list it.
    missing_since: Option<Instant>,
}

/// Reads whose timers all count as armed when the stillness began. `/proc/timer_list` walks each
/// CPU's queue by index, dropping the lock between entries, so one read can skip a timer when
/// another ahead of it leaves the queue meanwhile; the union of two reads makes a timer of the
/// tree's missed by both unlikely. Any timer armed between them counts too (the sound side).
const START_READS: u32 = 2;

impl StillAlarms {
    /// Folds in a read of the system's timers that ended at `read_end`, made after the snapshot
    /// taken at `snap`, and returns those that may still be the tree's:
    /// - listed in one of the first [`START_READS`] reads, or later with the same expiry;
    /// - or, no longer listed, not yet shown to have fired without effect: that takes a
    ///   snapshot taken after a read that no longer listed it and after it was due. A timer of
    ///   the tree's that fires wakes it at once, but the read follows the snapshot: a timer gone
    ///   from the read may have fired after the snapshot was taken, which then shows nothing yet
    ///   (this was engine_timers' alarm-pause false hang, about 1 run in 4). And a timer not yet
    ///   due that the read missed has not fired at all.
    ///
    /// Timers listed first in a later read were armed since, so not by the tree; a listing
    /// without an expiry cannot be followed and always counts.
    pub fn fold(
        &mut self,
        timers: &[procwake::SystemTimer],
        snap: Instant,
        read_end: Instant,
    ) -> procwake::KernelTimers {
        let starting = self.reads < START_READS;
        self.reads += 1;
        let mut listed = vec![false; self.followed.len()];
        let mut out = Vec::new();
        for t in timers {
            if t.expires_ns.is_none() {
                out.push(*t);
                continue;
            }
            let same =
                (0..self.followed.len()).find(|&i| !listed[i] && self.followed[i].timer.same_as(t));
            let seen = Followed {
                timer: *t,
                due_by: read_end + t.left,
                missing_since: None,
            };
            match same {
                Some(i) => {
                    self.followed[i] = seen;
                    listed[i] = true;
                }
                None if starting => {
                    self.followed.push(seen);
                    listed.push(true);
                }
                None => {}
            }
        }
        for (f, listed) in self.followed.iter_mut().zip(listed) {
            if listed {
                out.push(f.timer);
                continue;
            }
            let first_missing = *f.missing_since.get_or_insert(read_end);
            if first_missing < snap && f.due_by <= snap {
                continue;
            }
            out.push(procwake::SystemTimer {
                left: f.due_by.saturating_duration_since(read_end),
                ..f.timer
            });
        }
        procwake::KernelTimers::of(&out)
    }
}

impl Monitor {
    /// `start`: when the subject started; a zero `window` never reports quiescence.
    pub fn new(start: Instant, deadline: Instant, window: Duration) -> Monitor {
        Monitor {
            start,
            deadline,
            window,
            last_sample: None,
            tracks: HashMap::new(),
            fingerprint: Vec::new(),
            quiet_since: None,
            still_since: None,
            still_alarms: None,
            held_by_alarms_only: false,
            awake: Awake::default(),
        }
    }

    /// Something outside the tree's threads happened (output, a step): the window restarts.
    pub fn activity(&mut self, at: Instant) {
        if self.quiet_since.is_some() {
            self.quiet_since = Some(at);
        }
    }

    /// Feeds a snapshot; returns how long the tree has been quiescent (`None`: it is not).
    pub fn observe(&mut self, snap: &Snapshot) -> Option<Duration> {
        self.observe_where(snap, &|_| true)
    }

    /// As [`Monitor::observe`], with only the processes `decides` accepts (by pid) judged: the
    /// others are tracked for the diagnosis, but whether they are quiescent, come or go does not
    /// count. No deciding process in the snapshot ⇒ not quiescent.
    pub fn observe_where(
        &mut self,
        snap: &Snapshot,
        decides: &dyn Fn(i32) -> bool,
    ) -> Option<Duration> {
        let earliest_start = self.last_sample.unwrap_or(self.start);
        let mut tracks = HashMap::new();
        let mut fingerprint = Vec::new();
        let mut all_quiet = snap.processes.iter().any(|p| decides(p.stat.pid));
        for p in &snap.processes {
            let judged = decides(p.stat.pid);
            for t in &p.threads {
                let running = t.state == 'R' || t.syscall == Some(SyscallState::Running);
                self.awake.note(
                    snap.taken,
                    (p.stat.pid, t.tid),
                    t.switches,
                    t.cpu_ticks,
                    running,
                );
                let key = (t.state, t.syscall.clone());
                let id = (p.stat.pid, t.tid);
                let track = match self.tracks.remove(&id) {
                    Some(old) if old.key == key => old,
                    _ => {
                        let wakes_at = self.wakes_at(p.stat.pid, t, earliest_start, snap.taken);
                        Track {
                            quiet: thread_is_quiet(t.state, &t.syscall, wakes_at, self.deadline),
                            key,
                            since: snap.taken,
                            wakes_at,
                            external: None,
                        }
                    }
                };
                let mut track = track;
                track.external = None;
                if judged {
                    all_quiet &= track.quiet;
                    fingerprint.push((p.stat.pid, t.tid, t.cpu_ticks, t.switches, t.state));
                }
                tracks.insert(id, track);
            }
        }
        fingerprint.sort_unstable();
        let unchanged = fingerprint == self.fingerprint;
        self.track_stillness(all_quiet, unchanged, snap.taken);
        // Only a tree that looks quiescent by its own timeouts is worth reading timers for.
        let mut by_alarms_only = false;
        if all_quiet && !self.window.is_zero() {
            let woken = self.external_wakes(snap, decides, &mut tracks);
            by_alarms_only = woken == Some(true);
            all_quiet = woken.is_none();
        }
        self.awake.retain(|id| tracks.contains_key(id));
        self.note_sources(&tracks);
        self.tracks = tracks;
        self.fingerprint = fingerprint;
        self.last_sample = Some(snap.taken);
        if self.window.is_zero() || !all_quiet {
            self.held_by_alarms_only &= by_alarms_only;
            self.quiet_since = None;
            return None;
        }
        let since = match (self.quiet_since, self.still_since) {
            (Some(s), _) if unchanged => s,
            // Only foreign timers held it back: quiescent since the stillness began.
            (None, Some(still)) if unchanged && self.held_by_alarms_only => still,
            _ => snap.taken,
        };
        self.quiet_since = Some(since);
        Some(snap.taken.saturating_duration_since(since))
    }

    /// Remembers what could wake each thread (a timer it waits on, its own timeout), for a
    /// deadline verdict's "what kept it awake".
    fn note_sources(&mut self, tracks: &HashMap<(i32, i32), Track>) {
        for (id, track) in tracks {
            if let Some(e) = &track.external {
                self.awake.note_source(*id, &e.text);
            } else if track.wakes_at.is_some()
                && let (_, Some(SyscallState::In { nr, args })) = &track.key
            {
                let call = syscall::call_name(*nr, args);
                self.awake.note_source(*id, &format!("its timed {call}"));
            }
        }
    }

    /// Starts, keeps or ends the stillness (module doc) by this snapshot.
    fn track_stillness(&mut self, quiet_by_own_rule: bool, unchanged: bool, now: Instant) {
        if quiet_by_own_rule && unchanged && self.still_since.is_some() {
            return;
        }
        self.still_since = quiet_by_own_rule.then_some(now);
        self.still_alarms = None;
        self.held_by_alarms_only = true;
    }

    /// Whether the tree has been quiescent for the whole window.
    pub fn quiescent_for_window(&self, now: Instant) -> bool {
        !self.window.is_zero()
            && self
                .quiet_since
                .is_some_and(|s| now.saturating_duration_since(s) >= self.window)
    }

    fn wakes_at(
        &self,
        pid: i32,
        t: &procfs::ThreadSample,
        earliest_start: Instant,
        now: Instant,
    ) -> Option<Instant> {
        let Some(SyscallState::In { nr, args }) = &t.syscall else {
            return None;
        };
        let read = |addr: u64, len: usize| procfs::read_memory(pid, addr, len);
        match syscall::wait_bound(*nr, args, &read) {
            WaitBound::Indefinite => None,
            WaitBound::Relative(d) => Some(earliest_start + d),
            WaitBound::Absolute(clock, at) => Some(now + at.saturating_sub(clock.now())),
            // Unknown timeout: assume it can fire any moment.
            WaitBound::Unknown => Some(now),
        }
    }

    /// Reads what can wake each interruptibly blocked thread besides its own timeout (timerfds in
    /// the fds it waits on, signals the process's timers may send), records it on its track, and
    /// returns whether any of it fires before the deadline: `None` nothing does, `Some(true)` only
    /// system timers whose owner is unknown, `Some(false)` something of the tree's own.
    fn external_wakes(
        &mut self,
        snap: &Snapshot,
        decides: &dyn Fn(i32) -> bool,
        tracks: &mut HashMap<(i32, i32), Track>,
    ) -> Option<bool> {
        let mut kernel: Option<Option<procwake::KernelTimers>> = None;
        let mut woken = false;
        let mut own = false;
        let (objects, ring) = tree_fds(snap, decides);
        for p in snap.processes.iter().filter(|p| decides(p.stat.pid)) {
            let pid = p.stat.pid;
            let blocked: Vec<(&ThreadSample, u64, [u64; 6])> = p
                .threads
                .iter()
                .filter(|t| t.state == 'S')
                .filter_map(|t| match &t.syscall {
                    Some(SyscallState::In { nr, args }) => Some((t, *nr, *args)),
                    _ => None,
                })
                .collect();
            if blocked.is_empty() {
                continue;
            }
            let objects = objects.get(&pid).cloned().unwrap_or_default();
            let read = |addr: u64, len: usize| procfs::read_memory(pid, addr, len);
            let mut waited = 0;
            for &(t, nr, args) in &blocked {
                let fds = wake::fd_wake(&procwake::wait_fds(nr, &args, &read), &objects);
                waited |= fds.signals | procwake::sigwait_set(nr, &args, &read).unwrap_or(0);
                let external = match (fds.wake.or_else(|| ring.clone()), fds.note) {
                    (Some(w), _) => Some(External::from_wake(w, snap.taken)),
                    (None, Some(note)) => Some(External {
                        at: None,
                        text: note,
                        wakes: false,
                    }),
                    (None, None) => None,
                };
                if let Some(track) = tracks.get_mut(&(pid, t.tid)) {
                    track.external = external;
                }
            }
            let posix = procwake::posix_timers(pid);
            let kernel = kernel.get_or_insert_with(|| self.alarm_candidates(snap.taken));
            let view = SignalView {
                masks: procwake::signal_masks(pid).unwrap_or_default(),
                waited,
                posix: posix.as_deref(),
                kernel: kernel.as_ref(),
                horizon: self.deadline.saturating_duration_since(snap.taken),
            };
            let signal = wake::signal_wake(&view).map(|w| External::from_wake(w, snap.taken));
            // Without /proc/timer_list a signal wake is not a system timer's, so it is owned.
            let signal_owned = view.kernel.is_none();
            for &(t, _, _) in &blocked {
                let Some(track) = tracks.get_mut(&(pid, t.tid)) else {
                    continue;
                };
                own |=
                    wakes_by(&track.external, self.deadline) || (signal.is_some() && signal_owned);
                if let Some(sig) = &signal
                    && !track
                        .external
                        .as_ref()
                        .is_some_and(|e| e.wakes_by(self.deadline))
                {
                    // Keep the note on a timer that cannot fire: the diagnosis names both.
                    let mut sig = sig.clone();
                    if let Some(note) = track.external.take() {
                        sig.text = format!("{}; {}", note.text, sig.text);
                    }
                    track.external = Some(sig);
                }
                woken |= wakes_by(&track.external, self.deadline);
            }
        }
        woken.then_some(!own)
    }

    /// The system timers that may be the tree's now (`snap`: when its snapshot was taken): all
    /// of them unless the tree is still, then only those followed since the stillness began
    /// ([`StillAlarms`]). `None`: unreadable.
    fn alarm_candidates(&mut self, snap: Instant) -> Option<procwake::KernelTimers> {
        let timers = procwake::kernel_timers()?;
        let read_end = Instant::now();
        if self.still_since.is_none() {
            return Some(procwake::KernelTimers::of(&timers));
        }
        let still = self.still_alarms.get_or_insert_with(StillAlarms::default);
        Some(still.fold(&timers, snap, read_end))
    }

    /// The diagnosis of the tree as seen in `snap`, for a hang declared for `reason`.
    pub fn diagnose(&self, snap: &Snapshot, reason: &str) -> Diagnosis {
        let mut processes = Vec::new();
        for p in &snap.processes {
            let mut threads = Vec::new();
            for t in &p.threads {
                let track = self.tracks.get(&(p.stat.pid, t.tid));
                let (call, detail) = match &t.syscall {
                    Some(SyscallState::In { nr, args }) => (
                        Some(syscall::call_name(*nr, args)),
                        Some(syscall::call_detail(*nr, args)),
                    ),
                    _ => (None, None),
                };
                let for_ms = track.map_or(0, |tr| {
                    snap.taken.saturating_duration_since(tr.since).as_millis() as u64
                });
                let external = track.and_then(|tr| tr.external.as_ref());
                let in_ms = |w: Instant| w.saturating_duration_since(snap.taken).as_millis() as u64;
                let own = track.and_then(|tr| tr.wakes_at);
                // A timer that fires before the call's own timeout is what wakes it.
                let (wakes_in_ms, wake) = match external {
                    Some(e) if e.wakes && own.is_none_or(|o| e.at.is_none_or(|at| at < o)) => {
                        (e.at.map(in_ms), Some(e.text.clone()))
                    }
                    Some(e) if !e.wakes => (own.map(in_ms), Some(e.text.clone())),
                    _ => (own.map(in_ms), None),
                };
                threads.push(ThreadDiag {
                    tid: t.tid,
                    name: t.comm.clone(),
                    main: t.tid == p.stat.pid,
                    state: state_name(t.state).to_string(),
                    call,
                    detail,
                    wchan: procfs::wchan(p.stat.pid, t.tid),
                    kernel_stack: procfs::kernel_stack(p.stat.pid, t.tid),
                    for_ms,
                    wakes_in_ms,
                    wake,
                    running: matches!(t.syscall, Some(SyscallState::Running)) || t.state == 'R',
                });
            }
            processes.push(ProcessDiag {
                pid: p.stat.pid,
                ppid: p.stat.ppid,
                name: p.stat.comm.clone(),
                cmdline: procfs::cmdline(p.stat.pid),
                state: state_name(p.stat.state).to_string(),
                threads,
            });
        }
        let waits = wait_graph(snap, &processes);
        let (awake, class) = self.awake_notes(snap.taken, &processes);
        let class = match &waits {
            Some(g) if !g.cycle.is_empty() => HangClass::Deadlock,
            _ => class,
        };
        let mut summary = summarize(&processes);
        for line in waits.iter().map(|g| &g.text).chain(awake.iter().take(3)) {
            summary = format!("{summary}; {line}");
        }
        Diagnosis {
            reason: reason.to_string(),
            summary,
            processes,
            waits,
            class: Some(class),
            awake,
        }
    }

    /// What kept the tree awake, when the verdict came at the deadline (never quiescent for
    /// the window), and the class of the hang apart from a cycle.
    fn awake_notes(&self, now: Instant, processes: &[ProcessDiag]) -> (Vec<String>, HangClass) {
        if self.quiescent_for_window(now) {
            return (Vec::new(), HangClass::Blocked);
        }
        let seen: Vec<Seen> = processes
            .iter()
            .flat_map(|p| {
                p.threads.iter().map(move |t| Seen {
                    pid: p.pid,
                    tid: t.tid,
                    who: format!("{}[{}] {}", p.name, p.pid, t.who()),
                    source: match (&t.wake, &t.call) {
                        (Some(w), _) => Some(w.clone()),
                        (None, Some(call)) if t.wakes_in_ms.is_some() => {
                            Some(format!("its timed {call}"))
                        }
                        _ => None,
                    },
                })
            })
            .collect();
        // SAFETY: sysconf takes an integer.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let window = if self.window.is_zero() {
            Duration::from_secs(1)
        } else {
            self.window
        };
        self.awake.explain(&seen, now, window, ticks)
    }
}

/// The wait-for graph of the tree in `snap` (`processes`: its diagnosis, in the same order).
fn wait_graph(snap: &Snapshot, processes: &[ProcessDiag]) -> Option<WaitGraph> {
    let mut obs = procfs::waitfor::observe(&snap.processes);
    for (p, diag) in obs.processes.iter_mut().zip(processes) {
        for (t, td) in p.threads.iter_mut().zip(&diag.threads) {
            t.doing = td.doing();
        }
    }
    waitfor::build(&obs)
}

/// The fd objects of each judged process, and a ring among them with requests in flight: one
/// may complete at any moment and wake any thread of the tree (the monitor's module doc).
fn tree_fds(
    snap: &Snapshot,
    decides: &dyn Fn(i32) -> bool,
) -> (
    HashMap<i32, BTreeMap<i32, procwake::FdObject>>,
    Option<Wake>,
) {
    let objects: HashMap<i32, _> = snap
        .processes
        .iter()
        .filter(|p| decides(p.stat.pid))
        .map(|p| (p.stat.pid, procwake::fd_objects(p.stat.pid)))
        .collect();
    let ring = objects.values().find_map(wake::busy_ring);
    (objects, ring)
}

fn wakes_by(external: &Option<External>, deadline: Instant) -> bool {
    external.as_ref().is_some_and(|e| e.wakes_by(deadline))
}

fn thread_is_quiet(
    state: char,
    sc: &Option<SyscallState>,
    wakes_at: Option<Instant>,
    deadline: Instant,
) -> bool {
    match state {
        'T' | 't' | 'Z' | 'X' => true,
        // 'D' is never quiescent: see the module doc.
        'S' | 'I' | 'P' => match sc {
            Some(SyscallState::In { .. }) => wakes_at.is_none_or(|w| w > deadline),
            _ => false,
        },
        _ => false,
    }
}

fn state_name(state: char) -> &'static str {
    match state {
        'R' => "running",
        'S' => "sleeping",
        'D' => "uninterruptible",
        'T' => "stopped",
        't' => "traced",
        'Z' => "zombie",
        'X' => "dead",
        'I' => "idle",
        'P' => "parked",
        _ => "unknown",
    }
}

/// Why a trial is a hang, per process and thread.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Diagnosis {
    /// What ended the wait: `quiescent for N ms` or `deadline of N ms passed`.
    pub reason: String,
    /// One line, e.g. `wedge-run[12]: supervisor thread blocked in ioctl(SECCOMP_IOCTL_NOTIF_RECV), ...`.
    pub summary: String,
    pub processes: Vec<ProcessDiag>,
    /// Who waits for whom at the verdict, and the cycle or chain (`waitfor`); its line ends
    /// `summary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits: Option<WaitGraph>,
    /// `deadlock` (a cycle), `blocked`, `spinning` or `stalled` (see `awake`); `None` in
    /// records older than the classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<HangClass>,
    /// At a deadline verdict: what kept the tree from being quiescent (`never quiescent: ...
    /// woke every 1.0 s (...)`, `spinning: ... used 98 % of a CPU ...`); the first three end
    /// `summary`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub awake: Vec<String>,
}

/// One process of a diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessDiag {
    pub pid: i32,
    pub ppid: i32,
    pub name: String,
    pub cmdline: Vec<String>,
    pub state: String,
    pub threads: Vec<ThreadDiag>,
}

/// One thread of a diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadDiag {
    pub tid: i32,
    pub name: String,
    pub main: bool,
    pub state: String,
    /// e.g. `ioctl(SECCOMP_IOCTL_NOTIF_RECV)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// e.g. `ioctl(fd 5, SECCOMP_IOCTL_NOTIF_RECV)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wchan: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_stack: Vec<String>,
    /// How long wedge has seen the thread in this state.
    pub for_ms: u64,
    /// When its own timeout or a timer it waits on wakes it, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wakes_in_ms: Option<u64>,
    /// The timer that wakes it (`timerfd fd 3 fires in 700 ms`), or one among what it waits on
    /// that cannot (`timerfd fd 3 is disarmed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake: Option<String>,
    #[serde(default)]
    pub running: bool,
}

impl ThreadDiag {
    /// e.g. `supervisor thread blocked in ioctl(SECCOMP_IOCTL_NOTIF_RECV)`.
    pub fn phrase(&self) -> String {
        format!("{} {}", self.who(), self.doing())
    }

    /// `main thread` or `NAME thread`.
    fn who(&self) -> String {
        if self.main {
            "main thread".to_string()
        } else {
            format!("{} thread", self.name)
        }
    }

    fn doing(&self) -> String {
        if self.running {
            return "running".to_string();
        }
        match (&self.call, self.state.as_str()) {
            (_, "stopped" | "traced" | "zombie" | "dead") => self.state.clone(),
            (Some(call), _) => match (self.wakes_in_ms, &self.wake) {
                (Some(_), Some(wake)) => format!("sleeping in {call} ({wake})"),
                (Some(ms), None) => format!("sleeping in {call} (times out in {ms} ms)"),
                (None, Some(wake)) => format!("blocked in {call} ({wake})"),
                (None, None) => format!("blocked in {call}"),
            },
            (None, state) => format!("{state} outside a syscall"),
        }
    }
}

/// One line per process: `name[pid]: phrase, phrase`, with identical threads grouped as
/// `N × name threads ...`; processes joined by `; `.
pub fn summarize(processes: &[ProcessDiag]) -> String {
    let mut out = Vec::new();
    for p in processes {
        let mut groups: Vec<(String, String, usize)> = Vec::new();
        for t in &p.threads {
            let who = if t.main {
                "main".to_string()
            } else {
                t.name.clone()
            };
            let doing = t.doing();
            match groups.iter_mut().find(|(w, d, _)| *w == who && *d == doing) {
                Some(g) => g.2 += 1,
                None => groups.push((who, doing, 1)),
            }
        }
        let phrases: Vec<String> = groups
            .into_iter()
            .map(|(who, doing, n)| {
                if n == 1 {
                    format!("{who} thread {doing}")
                } else {
                    format!("{n} × {who} threads {doing}")
                }
            })
            .collect();
        if phrases.is_empty() {
            out.push(format!("{}[{}]: {}", p.name, p.pid, p.state));
        } else {
            out.push(format!("{}[{}]: {}", p.name, p.pid, phrases.join(", ")));
        }
    }
    if out.is_empty() {
        "no process left".to_string()
    } else {
        out.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(name: &str, main: bool, call: Option<&str>, state: &str) -> ThreadDiag {
        ThreadDiag {
            tid: 1,
            name: name.to_string(),
            main,
            state: state.to_string(),
            call: call.map(str::to_string),
            detail: None,
            wchan: None,
            kernel_stack: Vec::new(),
            for_ms: 0,
            wakes_in_ms: None,
            wake: None,
            running: false,
        }
    }

    #[test]
    fn summary_names_the_supervisor() {
        let p = ProcessDiag {
            pid: 12,
            ppid: 1,
            name: "wedge-run".to_string(),
            cmdline: vec![],
            state: "sleeping".to_string(),
            threads: vec![
                thread("wedge-run", true, Some("wait4"), "sleeping"),
                thread(
                    "supervisor",
                    false,
                    Some("ioctl(SECCOMP_IOCTL_NOTIF_RECV)"),
                    "sleeping",
                ),
                thread(
                    "worker",
                    false,
                    Some("futex(FUTEX_WAIT_PRIVATE)"),
                    "sleeping",
                ),
                thread(
                    "worker",
                    false,
                    Some("futex(FUTEX_WAIT_PRIVATE)"),
                    "sleeping",
                ),
            ],
        };
        assert_eq!(
            summarize(&[p]),
            "wedge-run[12]: main thread blocked in wait4, supervisor thread blocked in \
             ioctl(SECCOMP_IOCTL_NOTIF_RECV), 2 × worker threads blocked in futex(FUTEX_WAIT_PRIVATE)"
        );
        assert_eq!(summarize(&[]), "no process left");
    }

    #[test]
    fn external_wakes_count_until_the_deadline() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(6);
        let wake = |after: Option<u64>| {
            External::from_wake(
                Wake {
                    after: after.map(Duration::from_millis),
                    why: "timerfd fd 3 fires in 700 ms".into(),
                },
                now,
            )
        };
        assert!(wake(Some(700)).wakes_by(deadline));
        assert!(!wake(Some(7000)).wakes_by(deadline));
        // Unknown: any moment, so before the deadline.
        assert!(wake(None).wakes_by(deadline));
        let note = External {
            at: None,
            text: "timerfd fd 3 is disarmed".into(),
            wakes: false,
        };
        assert!(!note.wakes_by(deadline));
        let mut t = thread("w", true, Some("read"), "sleeping");
        t.wake = Some(note.text.clone());
        assert_eq!(
            t.phrase(),
            "main thread blocked in read (timerfd fd 3 is disarmed)"
        );
        t.wakes_in_ms = Some(700);
        t.wake = Some("timerfd fd 3 fires in 700 ms".into());
        assert_eq!(
            t.phrase(),
            "main thread sleeping in read (timerfd fd 3 fires in 700 ms)"
        );
    }

    #[test]
    fn only_timers_armed_when_the_stillness_began_can_be_the_trees() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Times are ms after t0; a timer's expiry is on the same scale, and a read at `read`
        // lists it with the time left from then.
        let timer = |real, expires: u64, read: u64| procwake::SystemTimer {
            real,
            expires_ns: Some(expires * 1_000_000),
            left: ms(expires.saturating_sub(read)),
        };
        let fold = |still: &mut StillAlarms, list: &[(bool, u64)], snap: u64| {
            let read = snap + 1;
            let timers: Vec<_> = list.iter().map(|&(r, e)| timer(r, e, read)).collect();
            let mut c = still.fold(&timers, t0 + ms(snap), t0 + ms(read));
            c.itimer_real.sort();
            c
        };
        // A foreign periodic alarm due at 400, the tree's due at 5000, a POSIX timer due at 700;
        // the second read also lists an alarm the first skipped, due at 3000.
        let (periodic, tree, posix, skipped) =
            ((true, 400), (true, 5000), (false, 700), (true, 3000));
        let mut still = StillAlarms::default();
        let c = fold(&mut still, &[periodic, tree, posix], 0);
        assert_eq!(c.itimer_real, vec![ms(399), ms(4999)]);
        let c = fold(&mut still, &[periodic, tree, posix, skipped], 50);
        assert_eq!(c.itimer_real, vec![ms(349), ms(2949), ms(4949)]);
        // At 1000 the periodic one fired and was re-armed (a new expiry, so not the tree's:
        // armed since); the POSIX one is gone, and so is the tree's (a skip: not yet due). The
        // snapshot predates this read, so what fired may have fired after it: all still count.
        let rearmed = (true, 1400);
        let c = fold(&mut still, &[rearmed, skipped], 1000);
        assert_eq!(c.itimer_real, vec![ms(0), ms(1999), ms(3999)]);
        assert_eq!(c.posix, vec![ms(0)]);
        // The next snapshot follows that read and shows the tree unchanged: the periodic and the
        // POSIX one fired without effect. The tree's, not yet due, still counts.
        let c = fold(&mut still, &[rearmed, skipped], 1020);
        assert_eq!(c.itimer_real, vec![ms(1979), ms(3979)]);
        assert!(c.posix.is_empty());
        // Listed again after the skip: followed as before.
        let c = fold(&mut still, &[tree], 1060);
        assert_eq!(c.itimer_real, vec![ms(1939), ms(3939)]);
        // A listing without an expiry cannot be followed: it always counts.
        let vague = procwake::SystemTimer {
            expires_ns: None,
            ..timer(true, 9000, 1100)
        };
        let c = still.fold(
            &[vague, timer(true, 5000, 1101)],
            t0 + ms(1100),
            t0 + ms(1101),
        );
        assert_eq!(c.itimer_real.len(), 3);
        // Nothing in the first reads: nothing later can be the tree's.
        let mut empty = StillAlarms::default();
        for i in 0..START_READS {
            assert!(fold(&mut empty, &[], i.into()).itimer_real.is_empty());
        }
        assert!(fold(&mut empty, &[tree], 100).itimer_real.is_empty());
    }

    #[test]
    fn quiet_rules() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        let sc = Some(SyscallState::In {
            nr: 0,
            args: [0; 6],
        });
        assert!(thread_is_quiet('S', &sc, None, deadline));
        assert!(!thread_is_quiet(
            'R',
            &Some(SyscallState::Running),
            None,
            deadline
        ));
        assert!(!thread_is_quiet(
            'S',
            &sc,
            Some(now + Duration::from_secs(1)),
            deadline
        ));
        assert!(thread_is_quiet(
            'S',
            &sc,
            Some(now + Duration::from_secs(11)),
            deadline
        ));
        assert!(thread_is_quiet('T', &None, None, deadline));
        // Uninterruptible: slow I/O and a stuck kernel wait look alike, so never quiescent.
        assert!(!thread_is_quiet('D', &sc, None, deadline));
        assert!(!thread_is_quiet(
            'S',
            &Some(SyscallState::NotInSyscall),
            None,
            deadline
        ));
    }
}
