//! The wake-source rule, without the kernel: given what `proc::wake_sources` saw, when can a blocked
//! thread or process be woken by a timer it owns? `None` means nothing visible wakes it; a
//! [`Wake`] whose `after` is `None` means something may wake it at any moment wedge cannot bound,
//! so it is not quiescent before the deadline.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::engine::proc::wake_sources::{
    FdObject, KernelTimers, PosixTimer, Ring, SignalMasks, WaitFds,
};

/// Deepest chain of epoll sets inside epoll sets wedge follows (the kernel allows 5).
const MAX_EPOLL_DEPTH: usize = 5;

/// A wake-up a blocked wait can expect besides its own timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wake {
    /// How long from the observation at the latest; `None`: unknown, may be any moment.
    pub after: Option<Duration>,
    /// e.g. `timerfd fd 3 fires in 700 ms`.
    pub why: String,
}

impl Wake {
    fn sooner(a: Option<Wake>, b: Option<Wake>) -> Option<Wake> {
        match (a, b) {
            (Some(a), Some(b)) => {
                let key = |w: &Wake| w.after.unwrap_or(Duration::ZERO);
                Some(if key(&b) < key(&a) { b } else { a })
            }
            (a, b) => a.or(b),
        }
    }
}

/// What the fds a thread waits on say about it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FdWait {
    /// The earliest timer among them, when one is armed.
    pub wake: Option<Wake>,
    /// A timer among them that cannot wake it (e.g. `timerfd fd 3 is disarmed`), for the diagnosis.
    pub note: Option<String>,
    /// Signals a signalfd among them reads (bit `n - 1` for signal `n`).
    pub signals: u64,
}

/// Milliseconds, or seconds with one decimal from 10 s on.
pub fn human(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The wake-ups a wait on `fds` can get from the timerfds among them, following epoll sets.
///
/// An epoll set names its members by the fd number they were added under; a process that added
/// a timerfd, dup'ed it and closed the original keeps the watch under a number that is now
/// another file or none, and wedge misses that timer (the kernel shows nothing better: every
/// anonymous inode has the same `ino`).
pub fn fd_wake(fds: &WaitFds, objects: &BTreeMap<i32, FdObject>) -> FdWait {
    let list = match fds {
        WaitFds::None => return FdWait::default(),
        WaitFds::Unreadable => {
            return FdWait {
                wake: Some(Wake {
                    after: None,
                    why: "waits on fds wedge cannot read".to_string(),
                }),
                ..FdWait::default()
            };
        }
        WaitFds::Fds(list) => list,
    };
    let mut out = FdWait::default();
    let mut seen = Vec::new();
    let mut stack: Vec<(i32, usize, Option<i32>)> = list.iter().map(|&fd| (fd, 0, None)).collect();
    while let Some((fd, depth, via)) = stack.pop() {
        if seen.contains(&fd) {
            continue;
        }
        seen.push(fd);
        let inside = via.map_or_else(String::new, |ep| format!(" in epoll fd {ep}"));
        match objects.get(&fd) {
            Some(FdObject::Timer(t)) if t.ticks > 0 => {
                let why = format!("timerfd fd {fd}{inside} has expired");
                out.wake = Wake::sooner(
                    out.wake.take(),
                    Some(Wake {
                        after: Some(Duration::ZERO),
                        why,
                    }),
                );
            }
            Some(FdObject::Timer(t)) if !t.value.is_zero() => {
                let why = format!("timerfd fd {fd}{inside} fires in {}", human(t.value));
                out.wake = Wake::sooner(
                    out.wake.take(),
                    Some(Wake {
                        after: Some(t.value),
                        why,
                    }),
                );
            }
            Some(FdObject::Timer(_)) => {
                out.note
                    .get_or_insert(format!("timerfd fd {fd}{inside} is disarmed"));
            }
            Some(FdObject::Epoll(members)) if depth < MAX_EPOLL_DEPTH => {
                stack.extend(members.iter().map(|&m| (m, depth + 1, Some(fd))));
            }
            Some(FdObject::Epoll(_)) => {
                // Deeper than the kernel allows: the set changed under wedge; assume the worst.
                let why = format!("epoll fd {fd} nests deeper than wedge follows");
                out.wake = Wake::sooner(out.wake.take(), Some(Wake { after: None, why }));
            }
            Some(FdObject::Signal(mask)) => out.signals |= mask,
            Some(FdObject::Ring(r)) => match ring_wake(fd, r.as_ref()) {
                RingWake::Wakes(wake) => out.wake = Wake::sooner(out.wake.take(), Some(wake)),
                RingWake::Idle(note) => {
                    out.note.get_or_insert(note);
                }
            },
            None => {}
        }
    }
    out
}

/// What an io_uring can do to a thread that waits on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingWake {
    /// Wake it any moment: requests in flight, or an fdinfo wedge cannot read.
    Wakes(Wake),
    /// Nothing: nothing in flight; the note says so in the diagnosis.
    Idle(String),
}

/// What io_uring fd `fd` can do to a thread. A request in flight may complete at any moment and
/// do anything (wake a futex, write a pipe), so one in any ring of the tree keeps every thread of
/// it from being quiescent ([`busy_ring`]).
pub fn ring_wake(fd: i32, ring: Option<&Ring>) -> RingWake {
    match ring {
        Some(r) if r.idle() => RingWake::Idle(format!("io_uring fd {fd} has nothing in flight")),
        Some(r) => RingWake::Wakes(Wake {
            after: None,
            why: format!(
                "io_uring fd {fd} has requests in flight ({} submitted, {} completed)",
                r.cached_sq_head, r.cached_cq_tail
            ),
        }),
        None => RingWake::Wakes(Wake {
            after: None,
            why: format!("io_uring fd {fd} may have requests in flight (fdinfo unreadable)"),
        }),
    }
}

/// The first io_uring among `objects` that may have requests in flight, as a wake.
pub fn busy_ring(objects: &BTreeMap<i32, FdObject>) -> Option<Wake> {
    objects.iter().find_map(|(&fd, o)| match o {
        FdObject::Ring(r) => match ring_wake(fd, r.as_ref()) {
            RingWake::Wakes(wake) => Some(wake),
            RingWake::Idle(_) => None,
        },
        _ => None,
    })
}

/// Whether a signal's default action ends the process: SIGCHLD, SIGCONT, SIGURG and SIGWINCH are
/// ignored by default, and the stop signals leave the process stopped, which is quiescent too.
fn default_terminates(signo: i32) -> bool {
    !matches!(signo, 17..=23 | 28)
}

/// What a process shows about the signals its timers can send it.
#[derive(Debug, Clone, Copy)]
pub struct SignalView<'a> {
    pub masks: SignalMasks,
    /// Signals some thread waits for (a sigwait set, a signalfd it reads).
    pub waited: u64,
    /// `None`: no `/proc/PID/timers` on this kernel.
    pub posix: Option<&'a [PosixTimer]>,
    /// `None`: `/proc/timer_list` unreadable.
    pub kernel: Option<&'a KernelTimers>,
    /// Time left to the deadline: a system timer firing later cannot wake it in time.
    pub horizon: Duration,
}

impl SignalView<'_> {
    fn bit(signo: i32) -> u64 {
        if (1..=64).contains(&signo) {
            1 << (signo - 1)
        } else {
            0
        }
    }

    /// Whether signal `signo` arriving would wake a thread or end the process.
    pub fn acts_on(&self, signo: i32) -> bool {
        let bit = Self::bit(signo);
        self.masks.caught & bit != 0
            || self.waited & bit != 0
            || (self.masks.ignored & bit == 0 && default_terminates(signo))
    }

    /// What the signal's arrival would do, for the diagnosis.
    fn effect(&self, signo: i32) -> &'static str {
        let bit = Self::bit(signo);
        if self.masks.caught & bit != 0 {
            "caught"
        } else if self.waited & bit != 0 {
            "waited for"
        } else {
            "would end the process"
        }
    }
}

/// The latest of the system's armed timers of one kind that fire within `horizon`: the process's
/// own, if armed, is one of them (the kernel does not say which), so it may fire up to then; if
/// none fires within the horizon, the process's does not either.
fn latest(list: &[Duration], horizon: Duration) -> Option<Duration> {
    list.iter().copied().filter(|&d| d <= horizon).max()
}

/// The wake-up an alarm (`ITIMER_REAL`, `alarm()`) may bring; no per-process view exists.
fn alarm_wake(view: &SignalView<'_>) -> Option<Wake> {
    const SIGALRM: i32 = 14;
    match view.kernel {
        Some(k) => {
            let left = latest(&k.itimer_real, view.horizon)?;
            view.acts_on(SIGALRM).then(|| Wake {
                after: Some(left),
                why: format!(
                    "an alarm may be pending (no per-process /proc view; the latest ITIMER_REAL \
                     in the system firing before the deadline does in {}), SIGALRM {}",
                    human(left),
                    view.effect(SIGALRM)
                ),
            })
        }
        None => (view.masks.caught & SignalView::bit(SIGALRM) != 0).then(|| Wake {
            after: None,
            why: "process catches SIGALRM: an alarm may be pending (no /proc view)".to_string(),
        }),
    }
}

fn clock_name(clock: i32) -> String {
    match clock {
        0 => "CLOCK_REALTIME".into(),
        1 => "CLOCK_MONOTONIC".into(),
        2 => "CLOCK_PROCESS_CPUTIME_ID".into(),
        3 => "CLOCK_THREAD_CPUTIME_ID".into(),
        4 => "CLOCK_MONOTONIC_RAW".into(),
        7 => "CLOCK_BOOTTIME".into(),
        8 => "CLOCK_REALTIME_ALARM".into(),
        9 => "CLOCK_BOOTTIME_ALARM".into(),
        11 => "CLOCK_TAI".into(),
        c if c < 0 => format!("CPU clock {c}"),
        c => format!("clock {c}"),
    }
}

/// The wake-up one POSIX timer may bring.
fn posix_timer_wake(t: &PosixTimer, view: &SignalView<'_>) -> Option<Wake> {
    if t.notify == "none" || !view.acts_on(t.signo) {
        return None;
    }
    // A CPU-time clock only advances while a thread of the process runs: never while quiescent.
    if t.clock < 0 || t.clock == 2 || t.clock == 3 {
        return None;
    }
    let name = format!(
        "POSIX timer {} ({}, signal {} {})",
        t.id,
        clock_name(t.clock),
        t.signo,
        view.effect(t.signo)
    );
    if t.clock == 8 || t.clock == 9 {
        return Some(Wake {
            after: None,
            why: format!("{name} may fire (alarm clocks are not bounded)"),
        });
    }
    match view.kernel {
        Some(k) => latest(&k.posix, view.horizon).map(|left| Wake {
            after: Some(left),
            why: format!(
                "{name} may fire within {} (some POSIX timer of the system does)",
                human(left)
            ),
        }),
        None => Some(Wake {
            after: None,
            why: format!("{name} may be armed (/proc/timer_list unreadable)"),
        }),
    }
}

/// The earliest wake-up a timer-sent signal may bring the process, if any.
pub fn signal_wake(view: &SignalView<'_>) -> Option<Wake> {
    let mut wake = alarm_wake(view);
    match view.posix {
        Some(timers) => {
            for t in timers {
                wake = Wake::sooner(wake, posix_timer_wake(t, view));
            }
        }
        None if view.masks.caught != 0 => {
            // Blind to its POSIX timers: any caught signal may come from one.
            let after = view.kernel.map(|k| latest(&k.posix, view.horizon));
            let wake_blind = match after {
                Some(None) => None,
                Some(Some(left)) => Some(Wake {
                    after: Some(left),
                    why: format!(
                        "a POSIX timer may fire within {} (no /proc/PID/timers)",
                        human(left)
                    ),
                }),
                None => Some(Wake {
                    after: None,
                    why: "a POSIX timer may be armed (no /proc/PID/timers)".to_string(),
                }),
            };
            wake = Wake::sooner(wake, wake_blind);
        }
        None => {}
    }
    wake
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::proc::wake_sources::TimerFd;

    fn timer(value_ms: u64, ticks: u64) -> FdObject {
        FdObject::Timer(TimerFd {
            clockid: 1,
            ticks,
            value: Duration::from_millis(value_ms),
            interval: Duration::ZERO,
        })
    }

    fn objects() -> BTreeMap<i32, FdObject> {
        BTreeMap::from([
            (3, timer(700, 0)),
            (4, timer(0, 0)),
            (5, FdObject::Epoll(vec![4, 6])),
            (6, timer(1500, 0)),
            (7, FdObject::Epoll(vec![4])),
            (8, FdObject::Signal(1 << 16)),
            (9, FdObject::Epoll(vec![9, 5])),
            (10, timer(0, 2)),
        ])
    }

    #[test]
    fn a_timerfd_read_wakes_when_it_fires() {
        let w = fd_wake(&WaitFds::Fds(vec![3]), &objects());
        assert_eq!(
            w.wake,
            Some(Wake {
                after: Some(Duration::from_millis(700)),
                why: "timerfd fd 3 fires in 700 ms".into()
            })
        );
        let w = fd_wake(&WaitFds::Fds(vec![4]), &objects());
        assert_eq!(w.wake, None);
        assert_eq!(w.note.as_deref(), Some("timerfd fd 4 is disarmed"));
        let w = fd_wake(&WaitFds::Fds(vec![10]), &objects());
        assert_eq!(w.wake.unwrap().after, Some(Duration::ZERO));
    }

    #[test]
    fn epoll_sets_are_followed_and_the_earliest_wins() {
        let w = fd_wake(&WaitFds::Fds(vec![5]), &objects());
        assert_eq!(
            w.wake.unwrap().why,
            "timerfd fd 6 in epoll fd 5 fires in 1500 ms"
        );
        let w = fd_wake(&WaitFds::Fds(vec![7]), &objects());
        assert_eq!(w.wake, None);
        assert_eq!(
            w.note.as_deref(),
            Some("timerfd fd 4 in epoll fd 7 is disarmed")
        );
        // A set holding itself terminates, and still finds the timer below.
        let w = fd_wake(&WaitFds::Fds(vec![9]), &objects());
        assert_eq!(w.wake.unwrap().after, Some(Duration::from_millis(1500)));
        let w = fd_wake(&WaitFds::Fds(vec![6, 3, 42]), &objects());
        assert_eq!(w.wake.unwrap().after, Some(Duration::from_millis(700)));
    }

    #[test]
    fn unreadable_sets_and_signalfds() {
        let w = fd_wake(&WaitFds::Unreadable, &objects());
        assert_eq!(w.wake.unwrap().after, None);
        assert_eq!(fd_wake(&WaitFds::None, &objects()), FdWait::default());
        let w = fd_wake(&WaitFds::Fds(vec![8, 42]), &objects());
        assert_eq!(w.signals, 1 << 16);
        assert_eq!(w.wake, None);
        assert_eq!(w.note, None);
    }

    fn view<'a>(
        caught: u64,
        ignored: u64,
        posix: Option<&'a [PosixTimer]>,
        kernel: Option<&'a KernelTimers>,
    ) -> SignalView<'a> {
        SignalView {
            masks: SignalMasks { caught, ignored },
            waited: 0,
            posix,
            kernel,
            horizon: Duration::from_secs(5),
        }
    }

    const ALRM: u64 = 1 << 13;

    #[test]
    fn alarms_are_bounded_by_the_systems_itimers() {
        let none = KernelTimers::default();
        let one = KernelTimers {
            itimer_real: vec![Duration::from_millis(300), Duration::from_millis(900)],
            posix: vec![],
        };
        // No ITIMER_REAL armed anywhere: pause() forever is quiescent, handler or not.
        assert_eq!(signal_wake(&view(ALRM, 0, Some(&[]), Some(&none))), None);
        // Armed ones fire only after the deadline: if one is the process's, it is too late.
        let late = KernelTimers {
            itimer_real: vec![Duration::from_secs(60)],
            posix: vec![Duration::from_secs(60)],
        };
        assert_eq!(signal_wake(&view(ALRM, 0, Some(&[]), Some(&late))), None);
        let far = [PosixTimer {
            id: 0,
            signo: 10,
            notify: "signal/pid.7".into(),
            clock: 1,
        }];
        assert_eq!(signal_wake(&view(1 << 9, 0, Some(&far), Some(&late))), None);
        let one_late = KernelTimers {
            itimer_real: vec![Duration::from_millis(300), Duration::from_secs(60)],
            posix: vec![],
        };
        let w = signal_wake(&view(ALRM, 0, Some(&[]), Some(&one_late))).unwrap();
        assert_eq!(w.after, Some(Duration::from_millis(300)));
        let w = signal_wake(&view(ALRM, 0, Some(&[]), Some(&one))).unwrap();
        assert_eq!(w.after, Some(Duration::from_millis(900)));
        assert!(w.why.contains("SIGALRM caught"), "{}", w.why);
        // Default action: the alarm would end the process, which is not a hang either.
        let w = signal_wake(&view(0, 0, Some(&[]), Some(&one))).unwrap();
        assert!(w.why.contains("would end the process"), "{}", w.why);
        // Ignored: nothing happens when it fires.
        assert_eq!(signal_wake(&view(0, ALRM, Some(&[]), Some(&one))), None);
        // Blind (no /proc/timer_list): a handler means "not before the deadline".
        let w = signal_wake(&view(ALRM, 0, Some(&[]), None)).unwrap();
        assert_eq!(w.after, None);
        assert!(w.why.contains("catches SIGALRM"), "{}", w.why);
        assert_eq!(signal_wake(&view(0, 0, Some(&[]), None)), None);
    }

    #[test]
    fn posix_timers_name_themselves() {
        let t = |id, signo, notify: &str, clock| PosixTimer {
            id,
            signo,
            notify: notify.to_string(),
            clock,
        };
        let usr1 = [t(0, 10, "signal/pid.7", 1)];
        let armed = KernelTimers {
            itimer_real: vec![],
            posix: vec![Duration::from_millis(1500)],
        };
        let w = signal_wake(&view(1 << 9, 0, Some(&usr1), Some(&armed))).unwrap();
        assert_eq!(w.after, Some(Duration::from_millis(1500)));
        assert!(
            w.why.starts_with(
                "POSIX timer 0 (CLOCK_MONOTONIC, signal 10 caught) may fire within 1500 ms"
            ),
            "{}",
            w.why
        );
        // Nothing armed in the system: this one is disarmed.
        assert_eq!(
            signal_wake(&view(
                1 << 9,
                0,
                Some(&usr1),
                Some(&KernelTimers::default())
            )),
            None
        );
        // No notification, a CPU clock, or a default-ignored signal: no wake-up.
        for timers in [
            [t(1, 10, "none", 1)],
            [t(2, 10, "signal/pid.7", 2)],
            [t(3, 10, "thread/tid.8", -6)],
            [t(4, 17, "signal/pid.7", 1)],
        ] {
            assert_eq!(
                signal_wake(&view(0, 0, Some(&timers), Some(&armed))),
                None,
                "{timers:?}"
            );
        }
        let w = signal_wake(&view(1 << 9, 0, Some(&usr1), None)).unwrap();
        assert_eq!(w.after, None);
        let alarm_clock = [t(5, 10, "signal/pid.7", 9)];
        assert_eq!(
            signal_wake(&view(1 << 9, 0, Some(&alarm_clock), Some(&armed)))
                .unwrap()
                .after,
            None
        );
        // No /proc/PID/timers: any caught signal may come from a timer.
        let w = signal_wake(&view(1 << 9, 0, None, Some(&armed))).unwrap();
        assert_eq!(w.after, Some(Duration::from_millis(1500)));
        assert_eq!(
            signal_wake(&view(1 << 9, 0, None, Some(&KernelTimers::default()))),
            None
        );
    }

    #[test]
    fn which_signals_act() {
        let v = view(0, 1 << 9, None, None);
        assert!(v.acts_on(14));
        assert!(!v.acts_on(10)); // ignored
        assert!(!v.acts_on(17)); // SIGCHLD: ignored by default
        assert!(!v.acts_on(28)); // SIGWINCH
        assert!(v.acts_on(34)); // real-time: ends the process by default
        let waited = SignalView {
            waited: 1 << 16,
            ..v
        };
        assert!(waited.acts_on(17));
    }
}
