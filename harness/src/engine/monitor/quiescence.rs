//! The quiescence state machine: fed one [`Snapshot`] at a time, it says how long the judged
//! tree has been quiescent (the rules are in the monitor's module doc).
//!
//! The guarantee: [`Monitor::observe_where`] returns `Some` only when every judged thread is
//! quiescent by its state, its own timeout and every wake source wedge can read, and the tree
//! has not changed (CPU time, context switches, states, who is there) since the instant it
//! returns; a wake source it cannot read counts as firing now. It also keeps, per thread, what
//! the diagnosis (`diagnose.rs`) reports: since when it does what it does and what can wake it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::engine::proc::syscall::{self, WaitBound};
use crate::engine::proc::wake_sources as procwake;
use crate::engine::proc::{self, SyscallState, ThreadSample};

use super::awake::Awake;
use super::snapshot::Snapshot;
use super::still::StillAlarms;
use super::wake_rule::{self, SignalView, Wake};

/// One thread as the monitor follows it across snapshots.
#[derive(Debug, Clone)]
pub(super) struct Track {
    /// What the thread is doing: state and syscall.
    key: (char, Option<SyscallState>),
    /// When wedge first saw it doing that.
    pub(super) since: Instant,
    /// When its timeout fires at the latest (`None`: never, or it is not waiting).
    pub(super) wakes_at: Option<Instant>,
    /// Whether the thread counts as quiescent by its state and its own timeout.
    quiet: bool,
    /// A timer that can wake it besides its own timeout, as seen in the latest snapshot (read
    /// afresh each time, since another thread may arm or disarm it at any moment).
    pub(super) external: Option<External>,
}

/// A wake source of a thread outside its own syscall's timeout, or a timer that cannot wake it.
#[derive(Debug, Clone)]
pub(super) struct External {
    /// When it fires at the latest; `None`: unknown, any moment.
    pub(super) at: Option<Instant>,
    /// e.g. `timerfd fd 3 fires in 700 ms`, `timerfd fd 3 is disarmed`.
    pub(super) text: String,
    /// Whether it wakes the thread (`false`: a note for the diagnosis only).
    pub(super) wakes: bool,
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

/// The quiescence detector of one trial (its diagnosis builder is in `diagnose.rs`).
#[derive(Debug)]
pub struct Monitor {
    start: Instant,
    deadline: Instant,
    pub(super) window: Duration,
    last_sample: Option<Instant>,
    pub(super) tracks: HashMap<(i32, i32), Track>,
    fingerprint: Vec<(i32, i32, u64, u64, char)>,
    quiet_since: Option<Instant>,
    /// Since when the judged tree is still (see the monitor's module doc), if it is.
    still_since: Option<Instant>,
    /// The system timers armed when the stillness began (read on first need).
    still_alarms: Option<StillAlarms>,
    /// Whether, since `still_since`, only system timers (whose owner is unknown) kept the tree
    /// from being quiescent.
    held_by_alarms_only: bool,
    /// Every thread's wake-ups and CPU time, for a deadline verdict's diagnosis.
    pub(super) awake: Awake,
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

    /// Starts, keeps or ends the stillness (the monitor's module doc) by this snapshot.
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
        t: &ThreadSample,
        earliest_start: Instant,
        now: Instant,
    ) -> Option<Instant> {
        let Some(SyscallState::In { nr, args }) = &t.syscall else {
            return None;
        };
        let read = |addr: u64, len: usize| proc::read_memory(pid, addr, len);
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
            let read = |addr: u64, len: usize| proc::read_memory(pid, addr, len);
            let mut waited = 0;
            for &(t, nr, args) in &blocked {
                let fds = wake_rule::fd_wake(&procwake::wait_fds(nr, &args, &read), &objects);
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
            let signal = wake_rule::signal_wake(&view).map(|w| External::from_wake(w, snap.taken));
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
    let ring = objects.values().find_map(wake_rule::busy_ring);
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
        // 'D' is never quiescent: see the monitor's module doc.
        'S' | 'I' | 'P' => match sc {
            Some(SyscallState::In { .. }) => wakes_at.is_none_or(|w| w > deadline),
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
