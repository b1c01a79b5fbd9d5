//! Applies a trial's chaos schedule ([`crate::model::chaos`]) to its subject's threads while the
//! trial's steps run, from the outside: `sched_setscheduler` on the threads' tids, nothing the
//! subject can see but its own timing.
//!
//! Guarantee: every thread demoted is given its policy back (and every thread born of it during
//! the hold, which inherited `SCHED_IDLE`, gets `SCHED_OTHER`), and every thread squeezed its CPU
//! mask, before [`Perturber::stop`] returns
//! (a thread that exited meanwhile needs nothing), so the teardown and the leak checks see the
//! subject as the trial left it; and only the subject's threads are touched (the trial tree's
//! subject part), never wedge's keepers, its init or the step processes. Threads with a
//! real-time or batch policy are left alone (a demotion would lose their settings).
//!
//! Each perturbation also *squeezes* the subject onto one CPU of those it may use for the same
//! hold (unless a squeeze is already on): every subject thread's affinity is narrowed to that CPU
//! and put back afterwards (threads born meanwhile get the mask the first thread had). Demotion
//! alone does little when the subject has a CPU to spare (measured: `inline` at N=16 on 2 CPUs
//! lost as many execs with it as without); on one CPU the demoted thread really waits, which is
//! what widens the windows (`reports/determinism.md`).
//!
//! Under `pct` only threads in state R at the moment of a perturbation are picked, and there is
//! no squeeze: the subject keeps its CPUs, and a demoted thread is one that was doing something.
//!
//! Under `syscall` nothing here is timed: once the subject has started (the steps say so through
//! [`Perturber::start_signal`]), a tracer of wedge's ([`crate::engine::syscall_holds`]) holds its
//! threads at seeded syscall entries until the perturber stops. The subject is started stopped
//! just before its exec and continued only once the tracer has seized it (and every thread it
//! has), so its calls are counted from its exec on, the same in every trial.
//!
//! The thread waits on its stop channel with the schedule's next time as the timeout: the
//! timeout *is* the mechanism (a perturbation due then), not a guess at when something happened.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use crate::engine::isolation::{Part, TrialTree};
use crate::engine::syscall_holds;
use crate::model::chaos::{Chaos, Perturbation, schedule};

/// Most perturbations written to the trial's log (a long trial takes hundreds); the count of
/// the rest is noted.
const LOGGED: usize = 200;

/// What the trial tells its perturber.
enum Note {
    /// The subject has started; the perturber answers on the sender once it has taken it in.
    Started(mpsc::Sender<()>),
    Stop,
}

/// A running perturber; [`Perturber::stop`] ends it.
pub struct Perturber<'s> {
    notes: mpsc::Sender<Note>,
    thread: ScopedJoinHandle<'s, Vec<String>>,
    /// Whether the subject must wait, stopped before its exec, until it is taken in.
    holds_the_start: bool,
}

impl Perturber<'_> {
    /// Stops perturbing, gives every demoted thread its policy back (lets every held thread
    /// go), and returns what was applied, one line each, for the trial's log.
    pub fn stop(self) -> Vec<String> {
        let _ = self.notes.send(Note::Stop);
        self.thread.join().unwrap_or_default()
    }

    /// What the steps call once the subject has started.
    pub fn start_signal(&self) -> StartSignal {
        StartSignal {
            notes: self.notes.clone(),
            holds_the_start: self.holds_the_start,
        }
    }
}

/// Tells the perturber that the subject has started, and waits until it has taken the subject
/// in (at once, but under `syscall`, where every thread the subject has is traced first).
pub struct StartSignal {
    notes: mpsc::Sender<Note>,
    holds_the_start: bool,
}

impl StartSignal {
    /// Whether the subject must be started stopped before its exec (under `syscall`: so that
    /// the tracer counts its calls from the first, in every trial), for [`StartSignal::started`]
    /// to continue it.
    pub fn holds_the_start(&self) -> bool {
        self.holds_the_start
    }

    /// The subject (`pid`, if it started) is there: waits until the perturber has taken it in,
    /// then continues it if it was started stopped.
    pub fn started(&self, pid: Option<i32>) {
        let (taken, wait) = mpsc::channel();
        if self.notes.send(Note::Started(taken)).is_ok() {
            // An answer, or the perturber gone (its sender dropped): either way, go on.
            let _ = wait.recv();
        }
        if self.holds_the_start
            && let Some(pid) = pid
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    }
}

/// Starts perturbing the subject part of `tree` with the schedule of `seed`, or nothing when
/// `mode` is off; under `syscall` the tracer is `init_program` (`wedge-init`).
pub fn start<'s, 'e: 's>(
    scope: &'s Scope<'s, 'e>,
    mode: Chaos,
    seed: u64,
    tree: &'e TrialTree,
    init_program: &'e Path,
) -> Option<Perturber<'s>> {
    let (notes, heard) = mpsc::channel();
    let thread = match mode {
        Chaos::Off => return None,
        Chaos::Syscall => scope.spawn(move || hold_syscalls(seed, tree, init_program, &heard)),
        Chaos::Rr | Chaos::Pct => scope.spawn(move || run(mode, seed, tree, &heard)),
    };
    Some(Perturber {
        notes,
        thread,
        holds_the_start: mode == Chaos::Syscall,
    })
}

/// Under `syscall`: starts the tracer when the subject starts (answering once it has seized the
/// subject's threads: its first line), and stops it at the end; its lines are the log.
fn hold_syscalls(
    seed: u64,
    tree: &TrialTree,
    init_program: &Path,
    heard: &mpsc::Receiver<Note>,
) -> Vec<String> {
    let Ok(Note::Started(taken)) = heard.recv() else {
        return Vec::new();
    };
    let pids = tree.pids(Some(Part::Subject));
    let mut tracer = match syscall_holds::spawn(init_program, seed, &pids) {
        Ok(child) => child,
        Err(e) => return vec![format!("chaos syscall: could not start the tracer: {e}")],
    };
    let mut lines = Vec::new();
    let mut out = tracer.stdout.take().map(BufReader::new);
    let mut first = String::new();
    if let Some(out) = out.as_mut()
        && out.read_line(&mut first).is_ok_and(|n| n > 0)
    {
        lines.push(first.trim_end().to_string());
    }
    let _ = taken.send(());
    while let Ok(note) = heard.recv() {
        match note {
            Note::Started(taken) => {
                let _ = taken.send(());
            }
            Note::Stop => break,
        }
    }
    tracer.stdout = out.map(BufReader::into_inner);
    lines.extend(syscall_holds::finish(tracer));
    lines
}

/// A thread demoted, until when, the policy it goes back to, and the subject's threads when it
/// was demoted (a thread born since, of the demoted one, inherited `SCHED_IDLE`).
struct Demoted {
    tid: i32,
    until: Instant,
    policy: i32,
    known: Vec<i32>,
}

/// The subject squeezed onto one CPU, until when, and each thread's mask before.
struct Squeeze {
    until: Instant,
    saved: Vec<(i32, libc::cpu_set_t)>,
    /// What a thread born during the squeeze gets back (the first thread's mask before).
    base: libc::cpu_set_t,
    cpu: usize,
}

/// What is in force: the demoted threads and the squeeze, if any.
#[derive(Default)]
struct InForce {
    demoted: Vec<Demoted>,
    squeeze: Option<Squeeze>,
}

impl InForce {
    fn next_end(&self) -> Option<Instant> {
        let squeeze = self.squeeze.as_ref().map(|s| s.until);
        self.demoted.iter().map(|d| d.until).chain(squeeze).min()
    }

    /// Undoes what is due by `now` (everything with `None`).
    fn end_due(&mut self, now: Option<Instant>, tree: &TrialTree) {
        let due = |until: Instant| now.is_none_or(|now| until <= now);
        let (ended, kept): (Vec<Demoted>, Vec<Demoted>) =
            self.demoted.drain(..).partition(|d| due(d.until));
        self.demoted = kept;
        for d in &ended {
            restore(d);
            self.restore_born(d, tree);
        }
        if self.squeeze.as_ref().is_some_and(|s| due(s.until))
            && let Some(s) = self.squeeze.take()
        {
            release(&s, tree);
        }
    }
}

impl InForce {
    /// Gives `SCHED_OTHER` back to the subject's threads born during `d`'s hold that are
    /// `SCHED_IDLE` and not demoted themselves: a fork or clone inherits its parent's policy, so
    /// a build cloned by a demoted thread would stay demoted for good. (A subject that makes its
    /// own new threads `SCHED_IDLE` loses that setting here; none of wedge's subjects does.)
    fn restore_born(&self, d: &Demoted, tree: &TrialTree) {
        for tid in subject_threads(tree) {
            if d.known.binary_search(&tid).is_ok() || self.demoted.iter().any(|o| o.tid == tid) {
                continue;
            }
            // SAFETY: sched_getscheduler reads a thread's policy; no memory is passed.
            if unsafe { libc::sched_getscheduler(tid) } == libc::SCHED_IDLE {
                let _ = set_policy(tid, libc::SCHED_OTHER);
            }
        }
    }
}

fn run(mode: Chaos, seed: u64, tree: &TrialTree, stopped: &mpsc::Receiver<Note>) -> Vec<String> {
    let start = Instant::now();
    let mut in_force = InForce::default();
    let mut log = Vec::new();
    let mut applied = 0usize;
    for p in schedule(seed) {
        let due = start + Duration::from_millis(p.at_ms);
        if !wait_until(due, &mut in_force, tree, stopped) {
            break;
        }
        if let Some(line) = perturb(mode, &p, tree, &mut in_force) {
            applied += 1;
            if log.len() < LOGGED {
                log.push(line);
            }
        }
    }
    in_force.end_due(None, tree);
    if applied > log.len() {
        log.push(format!(
            "chaos: {} more perturbations not listed",
            applied - log.len()
        ));
    }
    log
}

/// Waits until `due`, undoing each perturbation when its time is up; `false` when told to stop
/// (or when the trial is gone).
fn wait_until(
    due: Instant,
    in_force: &mut InForce,
    tree: &TrialTree,
    stopped: &mpsc::Receiver<Note>,
) -> bool {
    loop {
        let next = in_force.next_end().map_or(due, |end| end.min(due));
        let timeout = next.saturating_duration_since(Instant::now());
        match stopped.recv_timeout(timeout) {
            Err(RecvTimeoutError::Timeout) => {}
            // These modes look for the subject's threads at each perturbation: nothing to do.
            Ok(Note::Started(taken)) => {
                let _ = taken.send(());
            }
            Ok(Note::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
        }
        let now = Instant::now();
        in_force.end_due(Some(now), tree);
        if now >= due {
            return true;
        }
    }
}

/// Applies one perturbation: demotes the picked subject thread (under `pct`, picked among the
/// running ones), and under `rr` squeezes the subject onto one CPU unless a squeeze is on; the
/// log line, or `None` when there was nothing to demote (no thread yet, none running, the pick
/// already demoted, or not an ordinary thread).
fn perturb(
    mode: Chaos,
    p: &Perturbation,
    tree: &TrialTree,
    in_force: &mut InForce,
) -> Option<String> {
    let tids = subject_threads(tree);
    let candidates: Vec<i32> = match mode {
        Chaos::Pct => tids.iter().copied().filter(|&t| running(t)).collect(),
        _ => tids.clone(),
    };
    let pick = p.pick % candidates.len().max(1) as u64;
    let tid = *candidates.get(pick as usize)?;
    if in_force.demoted.iter().any(|d| d.tid == tid) {
        return None;
    }
    // SAFETY: sched_getscheduler reads a thread's policy; no memory is passed.
    let policy = unsafe { libc::sched_getscheduler(tid) };
    if policy != libc::SCHED_OTHER {
        return None;
    }
    set_policy(tid, libc::SCHED_IDLE).then_some(())?;
    let hold = Duration::from_millis(p.hold_ms);
    let until = Instant::now() + hold;
    in_force.demoted.push(Demoted {
        tid,
        until,
        policy,
        known: tids.clone(),
    });
    let mut squeezed = String::new();
    if mode == Chaos::Rr
        && in_force.squeeze.is_none()
        && let Some(s) = squeeze(&tids, p.pick >> 32, until)
    {
        squeezed = format!(", subject squeezed onto CPU {}", s.cpu);
        in_force.squeeze = Some(s);
    }
    let comm = std::fs::read_to_string(format!("/proc/{tid}/comm")).unwrap_or_default();
    let running = if mode == Chaos::Pct { "running " } else { "" };
    Some(format!(
        "chaos +{} ms: {running}thread {tid} ({}) SCHED_IDLE for {} ms (pick {pick}){squeezed}",
        p.at_ms,
        comm.trim(),
        p.hold_ms,
    ))
}

/// Whether thread `tid` is running or runnable (state R in its `stat`).
fn running(tid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{tid}/stat")) else {
        return false;
    };
    // The state follows the command name's closing parenthesis (the name may hold spaces).
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('R'))
}

/// Narrows every thread of `tids` to one CPU of the first thread's mask (`choice` modulo its
/// CPUs); `None` when it has fewer than two CPUs (nothing to squeeze) or cannot be read.
fn squeeze(tids: &[i32], choice: u64, until: Instant) -> Option<Squeeze> {
    let base = affinity(*tids.first()?)?;
    let allowed: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads the set, which is initialised.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &base) })
        .collect();
    if allowed.len() < 2 {
        return None;
    }
    let cpu = allowed[(choice % allowed.len() as u64) as usize];
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit of the set; `cpu` < CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut one) };
    let saved = tids
        .iter()
        .filter_map(|&tid| Some((tid, affinity(tid)?)))
        .filter(|&(tid, _)| set_affinity(tid, &one))
        .collect();
    Some(Squeeze {
        until,
        saved,
        base,
        cpu,
    })
}

/// Gives every squeezed thread its mask back, and threads born during the squeeze (still on its
/// one CPU) the base mask.
fn release(s: &Squeeze, tree: &TrialTree) {
    for (tid, mask) in &s.saved {
        let _ = set_affinity(*tid, mask);
    }
    for tid in subject_threads(tree) {
        if s.saved.iter().any(|(t, _)| *t == tid) {
            continue;
        }
        let Some(mask) = affinity(tid) else { continue };
        // SAFETY: CPU_COUNT and CPU_ISSET read the set, which is initialised.
        let on_squeezed = unsafe { libc::CPU_COUNT(&mask) == 1 && libc::CPU_ISSET(s.cpu, &mask) };
        if on_squeezed {
            let _ = set_affinity(tid, &s.base);
        }
    }
}

fn affinity(tid: i32) -> Option<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is valid; sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` outlives the call and `size` is its size.
    (unsafe { libc::sched_getaffinity(tid, size, &mut set) } == 0).then_some(set)
}

fn set_affinity(tid: i32, set: &libc::cpu_set_t) -> bool {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: sched_setaffinity reads `size` bytes of `set`, which outlives the call.
    unsafe { libc::sched_setaffinity(tid, size, set) == 0 }
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
        .flat_map(crate::engine::proc::threads)
        .collect();
    tids.sort_unstable();
    tids.dedup();
    tids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gettid() -> i32 {
        // SAFETY: gettid has no arguments and cannot fail.
        unsafe { libc::gettid() }
    }

    #[test]
    fn a_thread_is_running_while_it_runs_and_not_while_it_waits() {
        assert!(running(gettid()), "this thread is running as it asks");
        let (tx, rx) = mpsc::channel::<i32>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let waiter = std::thread::spawn(move || {
            tx.send(gettid()).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        // It goes to sleep in recv soon after sending its tid: wait for that, with a deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(tid) {
            assert!(Instant::now() < deadline, "thread {tid} never slept");
            std::thread::yield_now();
        }
        done_tx.send(()).unwrap();
        waiter.join().unwrap();
        // join returns once the thread has let go of its memory, a moment before it is gone:
        // meanwhile /proc still shows it running. Gone, it is not running; wait for that.
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(tid) {
            assert!(Instant::now() < deadline, "exited thread {tid} still runs");
            std::thread::yield_now();
        }
    }
}
