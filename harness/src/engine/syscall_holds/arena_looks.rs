//! Fork pairing's second partner rule: while a paired fork waits, look at its process's malloc
//! arenas, and let the fork go at a moment one of them is locked (the model's doc says why).
//!
//! A look: every other thread of the process that is running (state `R`) and not already held is
//! interrupted (`PTRACE_INTERRUPT`); once all have stopped, or after [`STOP_WITHIN`], the arena
//! mutex words are read. Taken: the stopped threads become the forker's partners (kept until its
//! new process exists, as a write partner is) and the forker goes on, so the child starts with the
//! arena locked. Free: the stopped threads go on and the next look waits for the seed's gap. A
//! thread that stops after its look was judged is resumed by the tracer's ordinary handling of an
//! interrupt stop. Threads blocked in a call are not interrupted: one that holds an arena across a
//! call (`mmap` inside `malloc`) is caught all the same, since the word is read either way.
//!
//! The forker's own locks are not a find: glibc's `fork` takes every arena lock before its
//! `clone`, so at the forker's entry they are all taken, by the forker. So the arenas taken when
//! the wait begins are set aside, each until a look sees it free (the stopped forker cannot
//! release anything, so a lock that comes free was another thread's).
//!
//! Any arena another thread holds counts, not only the forker's own. A child allocates from
//! its forker's arena (glibc's `thread_arena`, inherited with the thread's TLS), but it also
//! frees into whatever arena a chunk came from (a buffer the parent built on another thread), and
//! pairing on the forker's own arena alone was measured to find nothing in the agent: no other
//! thread held a forker's arena at any look of 54 trials, and the trials lost fewer execs than
//! without chaos (`reports/determinism.md`). The forker's arena is still read, from below its
//! thread pointer while it is stopped (`glibc_arenas::of_thread`; x86-64 only), and each find
//! says whether it was that one, so a run shows which arenas its hangs followed.
//!
//! One forker is looked for at a time (the first to wait); the others wait for a write partner
//! only. A process without glibc arenas (another allocator, or none made yet) is never looked at.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nix::sys::ptrace;
use nix::unistd::Pid;

use super::{PARTNER_AT_MOST, Tracer, Why, resume, thread_name};
use crate::engine::proc::{self, glibc_arenas};
use crate::model::chaos::arena_look_gap_us;

/// How long the interrupted threads of a look get to stop before it is judged without the rest.
const STOP_WITHIN: Duration = Duration::from_millis(5);

/// The looks of one forker's wait.
pub(super) struct Looks {
    forker: Pid,
    tgid: i32,
    arenas: Vec<u64>,
    /// The forker's own arena, when found (what a find is logged against).
    own: Option<u64>,
    /// Arenas taken when the wait began (perhaps by the forker), until seen free.
    set_aside: Vec<u64>,
    /// The forker's call and its entry count (the seed's key for the gaps).
    nr: u64,
    occurrence: u64,
    /// How many looks were judged so far.
    done: u64,
    /// Interrupted for the look in flight, not yet stopped.
    waiting: HashSet<Pid>,
    /// Stopped for the look in flight.
    stopped: Vec<Pid>,
    /// A look in flight.
    in_flight: bool,
    /// When the next look starts, or the one in flight is judged at the latest.
    at: Instant,
}

impl Tracer {
    /// Forker `pid` (entry `occurrence` into `nr`) of process `tgid` began its wait: look at the
    /// process's arenas meanwhile, unless another forker is being looked for or it has none.
    pub(super) fn start_looks(&mut self, forker: Pid, tgid: i32, nr: u64, occurrence: u64) {
        if self.looks.is_some() {
            return;
        }
        let arenas = glibc_arenas::of_process(tgid);
        if arenas.is_empty() {
            return;
        }
        let set_aside = glibc_arenas::locked(tgid, &arenas);
        let own = forker_arena(forker, tgid, &arenas);
        self.looks = Some(Looks {
            forker,
            tgid,
            arenas,
            own,
            set_aside,
            nr,
            occurrence,
            done: 0,
            waiting: HashSet::new(),
            stopped: Vec::new(),
            in_flight: false,
            at: Instant::now(),
        });
    }

    /// When the looks want the loop back (part of the poll's timeout).
    pub(super) fn looks_due(&self) -> Option<Instant> {
        self.looks.as_ref().map(|l| l.at)
    }

    /// An interrupt stop of `pid`: whether a look asked for it (it then stays stopped).
    pub(super) fn looked_stop(&mut self, pid: Pid) -> bool {
        let Some(l) = &mut self.looks else {
            return false;
        };
        if !l.waiting.remove(&pid) {
            return false;
        }
        l.stopped.push(pid);
        true
    }

    /// Thread `pid` is gone (exited, or vanished in an `execve` of its process).
    pub(super) fn forget_looked(&mut self, pid: Pid) {
        if let Some(l) = &mut self.looks {
            l.waiting.remove(&pid);
            l.stopped.retain(|p| *p != pid);
        }
    }

    /// Process `tgid` exec'd: its other threads are gone, and so is what was looked at.
    pub(super) fn drop_looks_of(&mut self, tgid: i32) {
        if self.looks.as_ref().is_some_and(|l| l.tgid == tgid) {
            self.looks = None;
        }
    }

    /// Ends the looks, letting the threads stopped for the one in flight go.
    pub(super) fn end_looks(&mut self) {
        if let Some(l) = self.looks.take() {
            l.stopped.into_iter().for_each(|p| resume(p, None));
        }
    }

    /// Starts a look when one is due, judges the one in flight when it is complete or due, and
    /// ends the looks when their forker no longer waits.
    pub(super) fn step_looks(&mut self, now: Instant) {
        let Some(l) = &self.looks else {
            return;
        };
        let forker = l.forker;
        let waits = self.forking_at(forker).is_some();
        if !waits {
            // A write partner came, the wait ran out, or the forker is gone.
            return self.end_looks();
        }
        match (l.in_flight, now >= l.at) {
            (true, due) if due || l.waiting.is_empty() => self.judge_look(now),
            (false, true) => self.begin_look(now),
            _ => {}
        }
    }

    /// Interrupts the process's running threads (not the forker, none held).
    fn begin_look(&mut self, now: Instant) {
        let held: HashSet<Pid> = self.held.iter().map(|h| h.pid).collect();
        let Some(l) = &mut self.looks else {
            return;
        };
        for tid in proc::threads(l.tgid) {
            let pid = Pid::from_raw(tid);
            if pid == l.forker || held.contains(&pid) {
                continue;
            }
            let running = proc::stat(tid).is_some_and(|s| s.state == 'R');
            if running && ptrace::interrupt(pid).is_ok() {
                l.waiting.insert(pid);
            }
        }
        l.in_flight = true;
        l.at = now + STOP_WITHIN;
        if l.waiting.is_empty() {
            self.judge_look(now);
        }
    }

    /// Reads the arena words with the look's threads stopped: pairs the fork on a taken one,
    /// else lets the threads go until the next look.
    fn judge_look(&mut self, now: Instant) {
        let Some(l) = &mut self.looks else {
            return;
        };
        l.in_flight = false;
        l.done += 1;
        // Threads that stop later are resumed by the ordinary handling of an interrupt stop.
        l.waiting.clear();
        let taken = glibc_arenas::locked(l.tgid, &l.arenas);
        l.set_aside.retain(|a| taken.contains(a));
        let found = taken.into_iter().find(|a| !l.set_aside.contains(a));
        let Some(arena) = found else {
            std::mem::take(&mut l.stopped)
                .into_iter()
                .for_each(|p| resume(p, None));
            let gap = arena_look_gap_us(self.seed, l.nr, l.occurrence, l.done);
            l.at = now + Duration::from_micros(gap);
            return;
        };
        let Some(l) = self.looks.take() else {
            return;
        };
        let Some(at) = self.forking_at(l.forker) else {
            l.stopped.into_iter().for_each(|p| resume(p, None));
            return;
        };
        let Why::Forking { what, .. } = self.held.remove(at).why else {
            unreachable!("matched as Forking above")
        };
        for &p in &l.stopped {
            self.hold(p, PARTNER_AT_MOST, Why::Partner { forker: l.forker });
        }
        let kept: Vec<String> = l.stopped.iter().map(|p| thread_name(*p)).collect();
        self.logged(|| {
            format!(
                "thread {} made a process with {what} while malloc arena {arena:#x} ({}) was \
                 locked by another thread (look {}); kept stopped: {}",
                thread_name(l.forker),
                match l.own {
                    Some(own) if own == arena => "the one it allocates from".to_string(),
                    Some(own) => format!("it allocates from {own:#x}"),
                    None => "the one it allocates from is unknown".to_string(),
                },
                l.done,
                if kept.is_empty() {
                    "none (the holder was in a call)".to_string()
                } else {
                    kept.join(", ")
                }
            )
        });
        resume(l.forker, None);
    }
}

/// The arena stopped thread `forker` of process `tgid` allocates from, read from below its
/// thread pointer (`fs_base`; x86-64's TLS variant II puts libc's block there).
#[cfg(target_arch = "x86_64")]
pub(super) fn forker_arena(forker: Pid, tgid: i32, arenas: &[u64]) -> Option<u64> {
    let regs = ptrace::getregs(forker).ok()?;
    glibc_arenas::of_thread(tgid, regs.fs_base, regs.rsp, arenas)
}

/// Elsewhere the thread pointer and the TLS layout differ (aarch64's TLS is above it): unknown.
#[cfg(not(target_arch = "x86_64"))]
pub(super) fn forker_arena(_forker: Pid, _tgid: i32, _arenas: &[u64]) -> Option<u64> {
    None
}
