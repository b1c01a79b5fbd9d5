//! Waiting with the watchdog: a step's condition is polled against snapshots of the tree until
//! it holds, or the tree is quiescent for the window (a hang, diagnosed), or the deadline
//! passes (a hang), or the subject's exit makes it unreachable, or the step's own timeout ends.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::judge::exit_info;
use super::state::{Proc, Trial};
use crate::isolation::Part;
use crate::monitor::{Diagnosis, Snapshot, comm_matches};
use crate::proc::SyscallState;
use crate::scenario::{QuiescenceOf, Stream};

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

impl Trial<'_> {
    fn cond_holds(&mut self, cond: &Cond, snap: &Snapshot) -> bool {
        match cond {
            Cond::Blocked { .. } => cond.blocked_in(snap),
            Cond::Process(name) => snap.named(name).next().is_some(),
            Cond::Output(re, stream) => self
                .subject
                .as_ref()
                .is_some_and(|s| re.is_match(&s.streams.text(*stream))),
            Cond::SubjectExited => self
                .subject
                .as_mut()
                .is_some_and(|s| s.poll_exit().is_some()),
            Cond::AuxExited(name) => self
                .aux
                .iter_mut()
                .find(|p| &p.name == name)
                .is_some_and(|p| p.poll_exit().is_some()),
            Cond::Path(p) => p.exists(),
        }
    }

    /// Waits until `cond` holds; the tree's quiescence, the deadline, the subject's exit (for
    /// conditions it cannot meet once gone) and `timeout` end the wait otherwise.
    pub fn wait_for(&mut self, cond: &Cond, timeout: Option<Duration>) -> WaitEnd {
        let step_end = timeout.map(|t| Instant::now() + t);
        let window = self.spec.scenario.quiescence;
        let tick = (window / 20).clamp(Duration::from_millis(2), Duration::from_millis(10));
        loop {
            if self.engine.cancel.load(Ordering::SeqCst) {
                return WaitEnd::Cancelled;
            }
            let subject_exit = self.subject.as_mut().and_then(Proc::poll_exit);
            let snap = Snapshot::take(&self.tree.pids(None));
            if self.cond_holds(cond, &snap) {
                return WaitEnd::Met;
            }
            // Judge quiescence at the instant the snapshot was taken, so the diagnosis's
            // durations are never shorter than the window.
            let now = snap.taken;
            if let Some(end) = self.subject_gone(cond, subject_exit, now) {
                return end;
            }
            if let Some(end) = self.watchdog(&snap, now) {
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
            self.tick(tick.min(self.deadline.saturating_duration_since(now)));
        }
    }

    /// The end of a wait the subject's exit makes unreachable (every condition but another
    /// process's exit or a file), once its output is in.
    fn subject_gone(
        &self,
        cond: &Cond,
        subject_exit: Option<(std::process::ExitStatus, Instant)>,
        now: Instant,
    ) -> Option<WaitEnd> {
        let (status, at) = subject_exit?;
        if matches!(cond, Cond::AuxExited(_) | Cond::Path(_)) {
            return None;
        }
        // Output may still be in flight: check once more when the pipes are drained.
        let drained = self
            .subject
            .as_ref()
            .is_none_or(|s| s.streams.open_readers() == 0);
        (drained || now.saturating_duration_since(at) > Duration::from_millis(200)).then(|| {
            WaitEnd::Failed(format!(
                "the subject ended ({}) before {}",
                exit_info(status),
                cond.describe()
            ))
        })
    }

    /// Feeds the monitor and calls a hang on quiescence for the window or at the deadline.
    fn watchdog(&mut self, snap: &Snapshot, now: Instant) -> Option<WaitEnd> {
        let judged = self.judged_pids();
        let output = match &judged {
            // Only the subject's output is its activity: a client's timeout message is not.
            Some(_) => self.subject.iter().map(|p| p.streams.total()).sum(),
            None => self.procs().map(|p| p.streams.total()).sum(),
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
            format!(
                "quiescent for {} ms",
                self.spec.scenario.quiescence.as_millis()
            )
        } else if now >= self.deadline {
            format!(
                "deadline of {} ms passed",
                self.spec.scenario.deadline.as_millis()
            )
        } else {
            return None;
        };
        self.verdict_at = Some(now);
        self.note(format!("hang: {reason}"));
        Some(WaitEnd::Hang(self.monitor.diagnose(snap, &reason)))
    }

    /// The processes whose quiescence decides (`quiescence_of = "subject"`: the subject's tree);
    /// `None`: every process of the trial.
    fn judged_pids(&self) -> Option<BTreeSet<i32>> {
        match self.spec.scenario.quiescence_of {
            QuiescenceOf::Trial => None,
            QuiescenceOf::Subject => {
                Some(self.tree.pids(Some(Part::Subject)).into_iter().collect())
            }
        }
    }

    /// Sleeps `wait`, waking at once if the subject exits.
    fn tick(&self, wait: Duration) {
        let pidfd = self
            .subject
            .as_ref()
            .filter(|s| s.exit.is_none())
            .and_then(|s| s.pidfd.as_ref());
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
}
