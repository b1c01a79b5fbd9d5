//! Fork pairing's third partner rule: while a paired fork waits, the other threads of its
//! process are watched, by the CPU's debug registers, for a write to a lock word; the first
//! thread that *takes* one is kept stopped right there, and the fork goes on.
//!
//! Why: a look ([`super::arena_looks`]) reads lock words at chosen moments and sees a lock only
//! if it happens to be held then, which in the agent was seldom for the locks its children die
//! on. A hardware watchpoint stops a thread at the very write that takes a lock (the trap comes
//! right after the instruction), so a paired fork finds one whenever another thread takes any
//! watched lock during its wait, and its child starts with that lock taken.
//!
//! Which words (at most [`SLOTS`], the four debug registers x86-64 gives a thread): the
//! process's *global* lock words, then its malloc arenas. A child runs its own code after the
//! fork, not its parent's objects, so what it shares with the parent's other threads is global:
//! the allocator's arenas (`glibc_arenas`) and the locks in a program's or library's static data
//! (a logging or stdio lock, an environment lock, a registry). The global words are learned from
//! the subject itself: every word it passed to a `futex` wait (a lock or condition variable that
//! was contended once) and that lies in a file's writable mapping or the anonymous one right
//! after it (`.bss`). Taken means the word reads `1` right after the write: the value of a
//! mutex taken without contention by glibc's and Rust's futex locks alike (`0` is a release; a
//! contender's `2` is left alone). The model's [`crate::model::chaos::watched_words`] picks
//! the words and [`watch_find_pairs`] which takes pair (a lock a child surely takes again at
//! once, another thread's arena only late in the wait); this module only arms, disarms and
//! reads.
//!
//! How: each other thread of the process is interrupted once and armed at its next stop
//! (`PTRACE_POKEUSER` of `DR0`–`DR3` and `DR7` needs a stopped tracee); one held by the tracer
//! (a drawn hold) when the watch begins is armed when it is let go ([`Tracer::arm_on_release`]),
//! else it would go on unwatched for the rest of the wait (on the agent, the other worker,
//! held inside its build, was often the only thread that could take a lock); a watched write then
//! reports as a `SIGTRAP` with `si_code` `TRAP_HWBKPT`, which is never passed on to the subject.
//! When the wait ends (a partner found by any rule, the wait over, the forker gone) every armed
//! thread is disarmed at its next stop. A kernel or CPU that refuses the registers (another
//! architecture, a hypervisor without them) leaves the looks to work alone; the log says so once.
//!
//! What the kernel does (6.18, checked with small C programs): a watched write stops the thread
//! with `DR6` naming the slot and the write already done; a process forked by an armed thread
//! is not armed; and **a tracer that exits leaves its tracees armed**, so their next watched
//! write kills them with `SIGTRAP`. Hence [`Tracer::disarm_all`] before the tracer exits, and
//! watches only for the length of a fork's wait (a tracer killed by `SIGKILL` in that window
//! would leave the trap armed; wedge ends its tracer by closing its stdin).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use nix::sys::ptrace;
use nix::unistd::Pid;

use super::{PARTNER_AT_MOST, Tracer, Why, resume, thread_name};
use crate::engine::proc::{self, glibc_arenas};
use crate::model::chaos::{WatchSlots, watch_find_pairs, watched_words};

/// The debug registers a thread can watch with on x86-64.
pub const SLOTS: usize = 4;

/// Most futex words remembered per process.
const WORDS_KEPT: usize = 512;

/// `si_code` of a hardware breakpoint or watchpoint trap.
const TRAP_HWBKPT: i32 = 4;

/// The watches of one forker's wait, and the words each process was seen to wait on.
#[derive(Default)]
pub(super) struct Watches {
    /// The wait being watched for, if any.
    current: Option<Watch>,
    /// Threads armed, with the watch they were armed for (any but the current one's is to be
    /// disarmed at the thread's next stop).
    armed: HashMap<Pid, u64>,
    /// How many watches began: each watch's number.
    began: u64,
    /// Every thread ever armed: a watchpoint trap of one is the tracer's, even one reported
    /// after its watch ended (a write just before the disarm), and is never passed on.
    ever_armed: HashSet<Pid>,
    /// Per process: the futex words its threads waited on, first seen first.
    futex_words: HashMap<i32, Vec<u64>>,
    /// Whether the registers were refused once (said in the log once).
    refused: bool,
    /// The tracer is going: no watch begins any more.
    closed: bool,
}

struct Watch {
    number: u64,
    forker: Pid,
    tgid: i32,
    slots: WatchSlots,
    /// Interrupted, to be armed at their next stop.
    pending: HashSet<Pid>,
    /// A description of each watched word, for the log.
    names: Vec<String>,
    /// When the forker's wait, and so this watch, began.
    began: Instant,
}

impl Tracer {
    /// A `futex` entry of `pid` with `args`: a wait's word is remembered for its process.
    pub(super) fn note_futex(&mut self, pid: Pid, args: &[u64; 6]) {
        // FUTEX_WAIT and FUTEX_WAIT_BITSET, with or without the private and clock flags.
        let cmd = args[1] & 0x7f;
        if cmd != 0 && cmd != 9 {
            return;
        }
        let Some(tgid) = self.tgid(pid) else {
            return;
        };
        let words = self.watches.futex_words.entry(tgid).or_default();
        if !words.contains(&args[0]) && words.len() < WORDS_KEPT {
            words.push(args[0]);
        }
    }

    /// Forker `pid` of process `tgid` began its wait: watch the process's other threads.
    pub(super) fn start_watches(&mut self, forker: Pid, tgid: i32, nr: u64, occurrence: u64) {
        let w = &self.watches;
        if w.current.is_some() || w.refused || w.closed || !cfg!(target_arch = "x86_64") {
            return;
        }
        let Some(slots) = self.choose_words(forker, tgid, nr, occurrence) else {
            return;
        };
        let held: HashSet<Pid> = self.held.iter().map(|h| h.pid).collect();
        let mut pending = HashSet::new();
        for tid in proc::threads(tgid) {
            let pid = Pid::from_raw(tid);
            if pid != forker && !held.contains(&pid) && ptrace::interrupt(pid).is_ok() {
                pending.insert(pid);
            }
        }
        let names = slots.words.iter().map(|w| w.describe()).collect();
        self.watches.began += 1;
        self.watches.current = Some(Watch {
            number: self.watches.began,
            forker,
            tgid,
            slots,
            pending,
            names,
            began: Instant::now(),
        });
    }

    /// The words to watch in `tgid`, from what it waited on and its arenas.
    fn choose_words(
        &mut self,
        forker: Pid,
        tgid: i32,
        nr: u64,
        occurrence: u64,
    ) -> Option<WatchSlots> {
        let maps = procfs::process::Process::new(tgid)
            .and_then(|p| p.maps())
            .ok()?;
        let learned = self
            .watches
            .futex_words
            .get(&tgid)
            .cloned()
            .unwrap_or_default();
        let globals: Vec<(u64, String)> = learned
            .into_iter()
            .filter_map(|w| static_data_of(&maps, w).map(|file| (w, file)))
            .collect();
        let arenas = glibc_arenas::of_process(tgid);
        let own = super::arena_looks::forker_arena(forker, tgid, &arenas);
        let mut slots = watched_words(self.seed, nr, occurrence, &globals, own, &arenas, SLOTS);
        // A word taken already is left out: the forker itself may hold it (glibc's `fork` takes
        // every arena lock before its `clone`), and then another thread's write to it is a
        // contender's, not a take.
        slots.words.retain(|w| {
            proc::read_memory(tgid, w.addr, 4)
                .and_then(|b| b.try_into().ok())
                .is_some_and(|b: [u8; 4]| u32::from_ne_bytes(b) == 0)
        });
        (!slots.words.is_empty()).then_some(slots)
    }

    /// Any stop of `pid`: arms it when its watch waits for that, disarms it when due.
    pub(super) fn at_any_stop(&mut self, pid: Pid) {
        let current = self.watches.current.as_mut();
        let number = current.as_ref().map(|w| w.number);
        let arm = current.and_then(|w| {
            w.pending
                .remove(&pid)
                .then(|| w.slots.words.iter().map(|w| w.addr).collect::<Vec<u64>>())
        });
        if let (Some(addrs), Some(number)) = (arm, number) {
            match set_watchpoints(pid, &addrs) {
                Ok(()) => {
                    self.watches.armed.insert(pid, number);
                    self.watches.ever_armed.insert(pid);
                }
                Err(e) => self.refuse(e),
            }
        } else if self
            .watches
            .armed
            .get(&pid)
            .is_some_and(|n| Some(*n) != number)
        {
            self.watches.armed.remove(&pid);
            let _ = set_watchpoints(pid, &[]);
        }
    }

    /// A held thread `pid` is about to be let go: when a watch of its process is on and it is
    /// not armed for it (it was held when the watch began, so not interrupted then), it is armed
    /// now, while it is still stopped, so it can be the fork's partner from its first step.
    pub(super) fn arm_on_release(&mut self, pid: Pid) {
        let Some(w) = &self.watches.current else {
            return;
        };
        let armed_now = self.watches.armed.get(&pid) == Some(&w.number);
        if pid == w.forker || armed_now || self.tgids.get(&pid.as_raw()) != Some(&w.tgid) {
            return;
        }
        let (number, addrs): (u64, Vec<u64>) =
            (w.number, w.slots.words.iter().map(|w| w.addr).collect());
        match set_watchpoints(pid, &addrs) {
            Ok(()) => {
                self.watches.armed.insert(pid, number);
                self.watches.ever_armed.insert(pid);
            }
            Err(e) => self.refuse(e),
        }
    }

    /// The registers were refused: say so once and watch no more.
    fn refuse(&mut self, e: nix::Error) {
        if !self.watches.refused {
            self.watches.refused = true;
            self.note(format!(
                "chaos syscall: the debug registers were refused ({e}); forks are paired by \
                 writes and arena looks only"
            ));
        }
        self.watches.current = None;
    }

    /// A `SIGTRAP` stop of `pid`: whether it was a watch's (then it is handled, never passed on).
    pub(super) fn watch_trap(&mut self, pid: Pid) -> bool {
        let armed_for = self.watches.armed.get(&pid).copied();
        let ours = self.watches.ever_armed.contains(&pid)
            && ptrace::getsiginfo(pid).is_ok_and(|i| i.si_code == TRAP_HWBKPT);
        if !ours {
            return false;
        }
        let hit = hit_slot(pid);
        let Some(w) = self
            .watches
            .current
            .as_ref()
            .filter(|w| Some(w.number) == armed_for)
        else {
            // A trap of a watch that ended: the thread's next stop (this one) disarms it.
            self.at_any_stop(pid);
            resume(pid, None);
            return true;
        };
        let taken = hit.and_then(|slot| {
            let word = w.slots.words.get(slot)?;
            let now = proc::read_memory(w.tgid, word.addr, 4)?;
            (u32::from_ne_bytes(now.try_into().ok()?) == 1).then_some(slot)
        });
        let taken = taken.filter(|&slot| watch_find_pairs(&w.slots, slot, w.began.elapsed()));
        match taken {
            Some(slot) if w.forker != pid => self.pair_on_watch(pid, slot),
            _ => resume(pid, None),
        }
        true
    }

    /// Thread `pid` just took watched word `slot`: it becomes the forker's partner.
    fn pair_on_watch(&mut self, pid: Pid, slot: usize) {
        let Some(w) = self.watches.current.take() else {
            return resume(pid, None);
        };
        let Some(at) = self.forking_at(w.forker) else {
            return resume(pid, None);
        };
        let Why::Forking { what, .. } = self.held.remove(at).why else {
            unreachable!("matched as Forking above")
        };
        self.hold(pid, PARTNER_AT_MOST, Why::Partner { forker: w.forker });
        let name = w.names.get(slot).cloned().unwrap_or_default();
        self.logged(|| {
            format!(
                "thread {} made a process with {what} while thread {} had just taken {name} \
                 (watched: {})",
                thread_name(w.forker),
                thread_name(pid),
                w.names.join(", ")
            )
        });
        resume(w.forker, None);
        self.end_watch_of(pid);
    }

    /// Ends the watch when its forker no longer waits (another rule paired it, the wait ran
    /// out, the forker is gone).
    pub(super) fn step_watches(&mut self) {
        let Some(w) = &self.watches.current else {
            return;
        };
        let forker = w.forker;
        let waits = self.forking_at(forker).is_some();
        if !waits {
            self.watches.current = None;
            self.end_watch_of(forker);
        }
    }

    /// Disarms every armed thread: at once if it is held (stopped), else at its next stop.
    /// `stopped` is stopped right now as well.
    fn end_watch_of(&mut self, stopped: Pid) {
        let held: HashSet<Pid> = self.held.iter().map(|h| h.pid).collect();
        let armed: Vec<Pid> = self.watches.armed.keys().copied().collect();
        for pid in armed {
            if pid == stopped || held.contains(&pid) {
                let _ = set_watchpoints(pid, &[]);
                self.watches.armed.remove(&pid);
            } else {
                let _ = ptrace::interrupt(pid);
            }
        }
    }

    /// Disarms every armed thread before the tracer goes: a thread left armed without its
    /// tracer would take the next watched write's `SIGTRAP` itself, and die of it. Each is
    /// stopped (interrupted) and waited for, at most [`DISARM_WITHIN`] in all; whatever stop it
    /// reports is then handled as usual.
    pub(super) fn disarm_all(&mut self) {
        self.watches.current = None;
        self.watches.closed = true;
        let deadline = Instant::now() + DISARM_WITHIN;
        let armed: Vec<Pid> = self.watches.armed.keys().copied().collect();
        let held: HashSet<Pid> = self.held.iter().map(|h| h.pid).collect();
        for pid in armed {
            if held.contains(&pid) || stopped_by_then(pid, deadline, self) {
                let _ = set_watchpoints(pid, &[]);
            }
            self.watches.armed.remove(&pid);
        }
    }

    /// Process `tgid` exec'd, or thread `pid` is gone: forget what no longer exists.
    pub(super) fn forget_watched(&mut self, pid: Pid, exec_of: Option<i32>) {
        self.watches.armed.remove(&pid);
        self.watches.ever_armed.remove(&pid);
        if let Some(w) = &mut self.watches.current {
            w.pending.remove(&pid);
        }
        if let Some(tgid) = exec_of {
            // The process's other threads are gone too, with no exit reported.
            let tgids = &self.tgids;
            let gone = |tid: &Pid| tgids.get(&tid.as_raw()) == Some(&tgid);
            self.watches.armed.retain(|tid, _| !gone(tid));
            self.watches.ever_armed.retain(|tid| !gone(tid));
            self.watches.futex_words.remove(&tgid);
            if self
                .watches
                .current
                .as_ref()
                .is_some_and(|w| w.tgid == tgid)
            {
                self.watches.current = None;
            }
        }
    }
}

/// How long the tracer waits, in all, for armed threads to stop so it can disarm them.
const DISARM_WITHIN: Duration = Duration::from_secs(1);

/// Interrupts `pid` and waits until it stops (then its stop is handed to the tracer, which
/// resumes or keeps it as usual, after the caller disarms it) or is gone, or `deadline`.
/// Whether it stopped.
fn stopped_by_then(pid: Pid, deadline: Instant, tracer: &mut Tracer) -> bool {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    if ptrace::interrupt(pid).is_err() {
        return false;
    }
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {}
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                tracer.on_stop(status);
                return false;
            }
            Ok(status) => {
                let _ = set_watchpoints(pid, &[]);
                tracer.on_stop(status);
                return true;
            }
            Err(_) => return false,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !sigchld_within(left) {
            return false;
        }
    }
}

/// Waits for a `SIGCHLD` (blocked in the tracer, so it stays pending) for at most `left`.
fn sigchld_within(left: Duration) -> bool {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGCHLD);
    let ts = libc::timespec {
        tv_sec: left.as_secs() as libc::time_t,
        tv_nsec: left.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` is a valid sigset and `ts` a valid timespec for the call's duration; no
    // siginfo is asked for.
    unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) >= 0 }
}

/// The file whose static data (its writable mapping, or the anonymous `.bss` right after it)
/// holds `addr`, if any.
fn static_data_of(maps: &procfs::process::MemoryMaps, addr: u64) -> Option<String> {
    use procfs::process::{MMPermissions, MMapPath};
    let rw = MMPermissions::READ | MMPermissions::WRITE;
    let mut previous: Option<&procfs::process::MemoryMap> = None;
    for m in maps.iter() {
        if (m.address.0..m.address.1).contains(&addr) && m.perms.contains(rw) {
            return match (&m.pathname, previous) {
                (MMapPath::Path(p), _) => Some(file_name(p)),
                (MMapPath::Anonymous, Some(prev)) if prev.address.1 == m.address.0 => {
                    match &prev.pathname {
                        MMapPath::Path(p) if prev.perms.contains(rw) => Some(file_name(p)),
                        _ => None,
                    }
                }
                _ => None,
            };
        }
        previous = Some(m);
    }
    None
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Sets thread `pid`'s write watchpoints to `addrs` (4-byte words, at most [`SLOTS`]); none
/// clears them. The thread must be in a ptrace stop.
#[cfg(target_arch = "x86_64")]
fn set_watchpoints(pid: Pid, addrs: &[u64]) -> nix::Result<()> {
    let dr =
        |i: usize| (std::mem::offset_of!(libc::user, u_debugreg) + 8 * i) as ptrace::AddressType;
    // Off first: the kernel checks each address against the control word in force.
    ptrace::write_user(pid, dr(7), 0)?;
    for (i, &a) in addrs.iter().take(SLOTS).enumerate() {
        ptrace::write_user(pid, dr(i), (a & !3) as libc::c_long)?;
    }
    ptrace::write_user(pid, dr(7), dr7_for(addrs.len().min(SLOTS)) as libc::c_long)
}

#[cfg(not(target_arch = "x86_64"))]
fn set_watchpoints(_pid: Pid, _addrs: &[u64]) -> nix::Result<()> {
    Err(nix::Error::ENOTSUP)
}

/// `DR7` for write watches of 4 bytes in the first `n` slots: local enable `L(i)`, `R/W(i)` =
/// `01` (writes), `LEN(i)` = `11` (4 bytes).
pub fn dr7_for(n: usize) -> u64 {
    (0..n).fold(0, |dr7, i| dr7 | 1 << (2 * i) | 0b1101 << (16 + 4 * i))
}

/// Which slot trapped, from `DR6`'s `B0`–`B3`.
#[cfg(target_arch = "x86_64")]
fn hit_slot(pid: Pid) -> Option<usize> {
    let at = (std::mem::offset_of!(libc::user, u_debugreg) + 8 * 6) as ptrace::AddressType;
    let dr6 = ptrace::read_user(pid, at).ok()? as u64;
    (0..SLOTS).find(|i| dr6 & (1 << i) != 0)
}

#[cfg(not(target_arch = "x86_64"))]
fn hit_slot(_pid: Pid) -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dr7_enables_write_watches_of_four_bytes() {
        assert_eq!(dr7_for(0), 0);
        // L0, R/W0 = 01, LEN0 = 11.
        assert_eq!(dr7_for(1), 0x000d_0001);
        assert_eq!(dr7_for(4), 0xdddd_0055);
    }
}
