//! Waiting with the watchdog: a step's condition is polled against snapshots of the tree until
//! it holds, or the tree is quiescent for the window (a hang, diagnosed), or the deadline
//! passes (a hang), or the subject's exit makes it unreachable, or the step's own timeout ends.
//! [`Watch`] is the watchdog's own state (deadline, monitor, when the verdict fell), which the
//! steps own; a wait borrows the trial's processes and log for its duration ([`Waiting`]).

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::judge::exit_info;
use super::launch::Procs;
use super::log::Log;
use super::state::{Context, Proc};
use crate::engine::isolation::Part;
use crate::engine::monitor::{Diagnosis, Monitor, Snapshot, comm_matches};
use crate::engine::proc::SyscallState;
use crate::model::scenario::{QuiescenceOf, Scenario, Stream};

/// x86_64 `ioctl`.
const IOCTL: u64 = 16;

/// How a wait (or the whole script) ended.
pub(crate) enum WaitEnd {
    Met,
    Failed(String),
    /// wedge could not do its part (e.g. start the subject).
    Error(String),
    Hang(Diagnosis),
    Cancelled,
}

/// A condition a wait polls, with its placeholders filled.
pub(crate) enum Cond {
    Blocked {
        process: Option<String>,
        thread: Option<String>,
        /// Any of these syscalls (`requests` narrows ioctl).
        nrs: Vec<u64>,
        requests: Option<Vec<u64>>,
        text: String,
    },
    Process(String),
    Output(regex::Regex, Stream),
    SubjectExited,
    AuxExited(String),
    Path(PathBuf),
}

impl Cond {
    pub fn describe(&self) -> String {
        match self {
            Cond::Blocked { text, .. } => text.clone(),
            Cond::Process(name) => format!("a process named {name}"),
            Cond::Output(re, s) => format!("{s:?} output matching /{re}/").to_lowercase(),
            Cond::SubjectExited => "the subject to exit".to_string(),
            Cond::AuxExited(n) => format!("{n} to exit"),
            Cond::Path(p) => format!("{} to exist", p.display()),
        }
    }

    /// Whether a blocked-thread condition holds in `snap`.
    fn blocked_in(&self, snap: &Snapshot) -> bool {
        let Cond::Blocked {
            process,
            thread,
            nrs,
            requests,
            ..
        } = self
        else {
            return false;
        };
        let wanted = |nr: &u64, args: &[u64; 6]| {
            nrs.contains(nr)
                && (*nr != IOCTL
                    || requests
                        .as_ref()
                        .is_none_or(|r| r.contains(&(args[1] & 0xffff_ffff))))
        };
        snap.processes
            .iter()
            .filter(|p| process.as_deref().is_none_or(|n| comm_matches(&p.stat.comm, n)))
            .any(|p| {
                p.threads.iter().any(|t| {
                    thread.as_deref().is_none_or(|n| comm_matches(&t.comm, n))
                        && matches!(t.state, 'S' | 'D')
                        && matches!(&t.syscall, Some(SyscallState::In { nr, args }) if wanted(nr, args))
                })
            })
    }
}

/// The watchdog of the steps: the deadline, the monitor that sees quiescence, and when the
/// verdict fell.
pub(crate) struct Watch {
    deadline: Instant,
    monitor: Monitor,
    /// The trial's output total when last looked at (new output is activity).
    last_output: usize,
    verdict_at: Option<Instant>,
    /// Since when the subject has exited and no process of the trial has been left (a wait for
    /// a file or another process's exit outlives the subject, but not its whole tree).
    empty_since: Option<Instant>,
}

/// What a wait looks at besides the watchdog: the trial, its processes and its log.
pub(crate) struct Waiting<'w, 'a> {
    pub cx: &'w Context<'a>,
    pub procs: &'w mut Procs,
    pub log: &'w mut Log,
}

impl Watch {
    /// A watchdog whose deadline and quiescence window run from `start`.
    pub fn new(start: Instant, scenario: &Scenario) -> Watch {
        let deadline = start + scenario.deadline;
        Watch {
            deadline,
            monitor: Monitor::new(start, deadline, scenario.quiescence),
            last_output: 0,
            verdict_at: None,
            empty_since: None,
        }
    }

    /// Runs the deadline and the quiescence window from `start` instead (when the subject
    /// starts).
    pub fn restart(&mut self, start: Instant, scenario: &Scenario) {
        self.deadline = start + scenario.deadline;
        self.monitor = Monitor::new(start, self.deadline, scenario.quiescence);
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The trial did something at `now` (a step acted, output came).
    pub fn activity(&mut self, now: Instant) {
        self.monitor.activity(now);
    }

    /// When the verdict fell, if it did.
    pub fn verdict_at(&self) -> Option<Instant> {
        self.verdict_at
    }

    /// The verdict fell at `at` (unless `keep_earlier` and it had fallen before).
    pub fn verdict(&mut self, at: Instant, keep_earlier: bool) {
        if !(keep_earlier && self.verdict_at.is_some()) {
            self.verdict_at = Some(at);
        }
    }

    /// Waits until `cond` holds; the tree's quiescence, the deadline, the subject's exit (for
    /// conditions it cannot meet once gone) and `timeout` end the wait otherwise.
    pub fn wait_for(
        &mut self,
        mut w: Waiting<'_, '_>,
        cond: &Cond,
        timeout: Option<Duration>,
    ) -> WaitEnd {
        let step_end = timeout.map(|t| Instant::now() + t);
        let window = w.cx.scenario().quiescence;
        let tick = (window / 20).clamp(Duration::from_millis(2), Duration::from_millis(10));
        loop {
            if w.cx.cancelled() {
                return WaitEnd::Cancelled;
            }
            let subject_exit = w.procs.subject_mut().and_then(Proc::poll_exit);
            let snap = Snapshot::take(&w.cx.tree().pids(None));
            if cond_holds(w.procs, cond, &snap) {
                return WaitEnd::Met;
            }
            // Judge quiescence at the instant the snapshot was taken, so the diagnosis's
            // durations are never shorter than the window.
            let now = snap.taken;
            if let Some(end) = subject_gone(w.procs, cond, subject_exit, now) {
                return end;
            }
            if let Some(end) = self.nothing_left(w.cx, cond, subject_exit, &snap) {
                return end;
            }
            if let Some(end) = self.watchdog(&mut w, &snap, now) {
                return end;
            }
            if let Some(end) = step_end
                && now >= end
            {
                return WaitEnd::Failed(format!(
                    "timed out after {} ms waiting for {}",
                    timeout.unwrap_or_default().as_millis(),
                    cond.describe()
                ));
            }
            tick_on(
                w.procs,
                tick.min(self.deadline.saturating_duration_since(now)),
            );
        }
    }

    /// The end of a wait that outlives the subject (a file, another process's exit) once the
    /// subject has exited and the trial has had no process at all for the quiescence window:
    /// nothing of the trial is left to meet the condition. A failure naming the subject's exit,
    /// not a hang: there is nothing to be stuck. (The monitor never calls an empty tree quiescent,
    /// so without this the wait would run to the deadline and be reported as a hang.) The window
    /// is a grace for a subject that hands its work to a process outside the trial's tree.
    fn nothing_left(
        &mut self,
        cx: &Context<'_>,
        cond: &Cond,
        subject_exit: Option<(std::process::ExitStatus, Instant)>,
        snap: &Snapshot,
    ) -> Option<WaitEnd> {
        let status = match subject_exit {
            Some((status, _)) if snap.processes.is_empty() => status,
            _ => {
                self.empty_since = None;
                return None;
            }
        };
        let window = cx.scenario().quiescence;
        if window.is_zero() {
            return None; // early verdicts turned off: the deadline decides
        }
        let since = *self.empty_since.get_or_insert(snap.taken);
        (snap.taken.saturating_duration_since(since) >= window).then(|| {
            self.verdict_at = Some(snap.taken);
            WaitEnd::Failed(format!(
                "the subject ended ({}) before {}, and no process of the trial was left for {} ms",
                exit_info(status),
                cond.describe(),
                window.as_millis()
            ))
        })
    }

    /// Feeds the monitor and calls a hang on quiescence for the window or at the deadline.
    fn watchdog(
        &mut self,
        w: &mut Waiting<'_, '_>,
        snap: &Snapshot,
        now: Instant,
    ) -> Option<WaitEnd> {
        let scenario = w.cx.scenario();
        let judged = judged_pids(w.cx);
        let output = match &judged {
            // Only the subject's output is its activity: a client's timeout message is not.
            Some(_) => w.procs.subject().iter().map(|p| p.streams().total()).sum(),
            None => w.procs.all().map(|p| p.streams().total()).sum(),
        };
        if output != self.last_output {
            self.last_output = output;
            self.monitor.activity(now);
        }
        match &judged {
            Some(pids) => self.monitor.observe_where(snap, &|pid| pids.contains(&pid)),
            None => self.monitor.observe(snap),
        };
        // Reached with the subject gone only for conditions other processes can still meet.
        let reason = if self.monitor.quiescent_for_window(now) {
            format!("quiescent for {} ms", scenario.quiescence.as_millis())
        } else if now >= self.deadline {
            format!("deadline of {} ms passed", scenario.deadline.as_millis())
        } else {
            return None;
        };
        self.verdict_at = Some(now);
        w.log.note(format!("hang: {reason}"));
        Some(WaitEnd::Hang(self.monitor.diagnose(snap, &reason)))
    }
}

fn cond_holds(procs: &mut Procs, cond: &Cond, snap: &Snapshot) -> bool {
    match cond {
        Cond::Blocked { .. } => cond.blocked_in(snap),
        Cond::Process(name) => snap.named(name).next().is_some(),
        Cond::Output(re, stream) => procs
            .subject()
            .is_some_and(|s| re.is_match(&s.streams().text(*stream))),
        Cond::SubjectExited => procs.subject_mut().is_some_and(|s| s.poll_exit().is_some()),
        Cond::AuxExited(name) => procs
            .aux_named(name)
            .is_some_and(|p| p.poll_exit().is_some()),
        Cond::Path(p) => p.exists(),
    }
}

/// The end of a wait the subject's exit makes unreachable (every condition but another
/// process's exit or a file), once its output is in.
fn subject_gone(
    procs: &Procs,
    cond: &Cond,
    subject_exit: Option<(std::process::ExitStatus, Instant)>,
    now: Instant,
) -> Option<WaitEnd> {
    let (status, at) = subject_exit?;
    if matches!(cond, Cond::AuxExited(_) | Cond::Path(_)) {
        return None;
    }
    // Output may still be in flight: check once more when the pipes are drained.
    let drained = procs
        .subject()
        .is_none_or(|s| s.streams().open_readers() == 0);
    (drained || now.saturating_duration_since(at) > Duration::from_millis(200)).then(|| {
        WaitEnd::Failed(format!(
            "the subject ended ({}) before {}",
            exit_info(status),
            cond.describe()
        ))
    })
}

/// The processes whose quiescence decides (`quiescence_of = "subject"`: the subject's tree);
/// `None`: every process of the trial.
fn judged_pids(cx: &Context<'_>) -> Option<BTreeSet<i32>> {
    match cx.scenario().quiescence_of {
        QuiescenceOf::Trial => None,
        QuiescenceOf::Subject => Some(cx.tree().pids(Some(Part::Subject)).into_iter().collect()),
    }
}

/// Sleeps `wait`, waking at once if the subject exits.
fn tick_on(procs: &Procs, wait: Duration) {
    let pidfd = procs
        .subject()
        .filter(|s| s.exit().is_none())
        .and_then(Proc::pidfd);
    match pidfd {
        Some(fd) => {
            let mut fds = [nix::poll::PollFd::new(
                fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
        }
        None => std::thread::sleep(wait),
    }
}
