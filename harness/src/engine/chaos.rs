//! Applies a trial's chaos schedule ([`crate::model::chaos`]) to its subject's threads while the
//! trial's steps run, from the outside: `sched_setscheduler` on the threads' tids, nothing the
//! subject can see but its own timing.
//!
//! Guarantee: every thread demoted is given its policy back before [`Perturber::stop`] returns
//! (a thread that exited meanwhile needs nothing), so the teardown and the leak checks see the
//! subject as the trial left it; and only the subject's threads are touched (the trial tree's
//! subject part), never wedge's keepers, its init or the step processes. Threads with a
//! real-time or batch policy are left alone (a demotion would lose their settings).
//!
//! The thread waits on its stop channel with the schedule's next time as the timeout: the
//! timeout *is* the mechanism (a perturbation due then), not a guess at when something happened.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use crate::engine::isolation::{Part, TrialTree};
use crate::model::chaos::{Chaos, Perturbation, schedule};

/// Most perturbations written to the trial's log (a long trial takes hundreds); the count of
/// the rest is noted.
const LOGGED: usize = 200;

/// A running perturber; [`Perturber::stop`] ends it.
pub struct Perturber<'s> {
    stop: mpsc::Sender<()>,
    thread: ScopedJoinHandle<'s, Vec<String>>,
}

impl Perturber<'_> {
    /// Stops perturbing, gives every demoted thread its policy back, and returns what was
    /// applied, one line each, for the trial's log.
    pub fn stop(self) -> Vec<String> {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or_default()
    }
}

/// Starts perturbing the subject part of `tree` with the schedule of `seed`, or nothing when
/// `mode` is off.
pub fn start<'s, 'e: 's>(
    scope: &'s Scope<'s, 'e>,
    mode: Chaos,
    seed: u64,
    tree: &'e TrialTree,
) -> Option<Perturber<'s>> {
    if mode == Chaos::Off {
        return None;
    }
    let (stop, stopped) = mpsc::channel();
    let thread = scope.spawn(move || run(seed, tree, &stopped));
    Some(Perturber { stop, thread })
}

/// A thread demoted, until when, and the policy it goes back to.
struct Demoted {
    tid: i32,
    until: Instant,
    policy: i32,
}

fn run(seed: u64, tree: &TrialTree, stopped: &mpsc::Receiver<()>) -> Vec<String> {
    let start = Instant::now();
    let mut demoted: Vec<Demoted> = Vec::new();
    let mut log = Vec::new();
    let mut applied = 0usize;
    for p in schedule(seed) {
        let due = start + Duration::from_millis(p.at_ms);
        if !wait_until(due, &mut demoted, stopped) {
            break;
        }
        if let Some(line) = perturb(&p, tree, &mut demoted) {
            applied += 1;
            if log.len() < LOGGED {
                log.push(line);
            }
        }
    }
    for d in demoted.drain(..) {
        restore(&d);
    }
    if applied > log.len() {
        log.push(format!(
            "chaos: {} more perturbations not listed",
            applied - log.len()
        ));
    }
    log
}

/// Waits until `due`, restoring each demoted thread when its time is up; `false` when told to
/// stop (or when the trial is gone).
fn wait_until(due: Instant, demoted: &mut Vec<Demoted>, stopped: &mpsc::Receiver<()>) -> bool {
    loop {
        let next = demoted
            .iter()
            .map(|d| d.until)
            .min()
            .map_or(due, |u| u.min(due));
        let timeout = next.saturating_duration_since(Instant::now());
        match stopped.recv_timeout(timeout) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return false,
        }
        let now = Instant::now();
        demoted.retain(|d| {
            let done = d.until <= now;
            if done {
                restore(d);
            }
            !done
        });
        if now >= due {
            return true;
        }
    }
}

/// Applies one perturbation: demotes the picked subject thread; the log line, or `None` when
/// there was nothing to demote (no thread yet, the pick already demoted, or not an ordinary
/// thread).
fn perturb(p: &Perturbation, tree: &TrialTree, demoted: &mut Vec<Demoted>) -> Option<String> {
    let tids = subject_threads(tree);
    let tid = *tids.get((p.pick % tids.len().max(1) as u64) as usize)?;
    if demoted.iter().any(|d| d.tid == tid) {
        return None;
    }
    // SAFETY: sched_getscheduler reads a thread's policy; no memory is passed.
    let policy = unsafe { libc::sched_getscheduler(tid) };
    if policy != libc::SCHED_OTHER {
        return None;
    }
    set_policy(tid, libc::SCHED_IDLE).then_some(())?;
    let hold = Duration::from_millis(p.hold_ms);
    demoted.push(Demoted {
        tid,
        until: Instant::now() + hold,
        policy,
    });
    let comm = std::fs::read_to_string(format!("/proc/{tid}/comm")).unwrap_or_default();
    Some(format!(
        "chaos +{} ms: thread {tid} ({}) SCHED_IDLE for {} ms (pick {})",
        p.at_ms,
        comm.trim(),
        p.hold_ms,
        p.pick % tids.len() as u64
    ))
}

fn restore(d: &Demoted) {
    // A thread that exited meanwhile needs nothing; ESRCH is the only expected failure.
    let _ = set_policy(d.tid, d.policy);
}

fn set_policy(tid: i32, policy: i32) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads `param`, which outlives the call.
    unsafe { libc::sched_setscheduler(tid, policy, &param) == 0 }
}

/// The tids of every thread of the subject part of `tree`, sorted.
fn subject_threads(tree: &TrialTree) -> Vec<i32> {
    let mut tids: Vec<i32> = tree
        .pids(Some(Part::Subject))
        .into_iter()
        .flat_map(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|t| t.file_name().to_str()?.parse().ok())
        })
        .collect();
    tids.sort_unstable();
    tids.dedup();
    tids
}
