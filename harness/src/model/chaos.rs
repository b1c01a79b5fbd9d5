//! Chaos scheduling: the seeded perturbation schedule a trial applies to its subject's threads
//! from the outside, to make races the ordinary scheduler hides show up in fewer trials.
//!
//! Guarantee: the schedule is a pure function of the trial's seed. The same seed gives the same
//! perturbations (when, which pick, for how long), so `wedge replay --seed S` repeats them; which
//! thread a pick lands on is the pick modulo the subject's threads at that moment (sorted by
//! tid), so it is the same thread whenever the subject has reached the same point.
//!
//! Mode `rr`, after rr's chaos mode: every so often (gaps log-uniform in [`GAP_MS`]) one of the
//! subject's threads is demoted to `SCHED_IDLE` for a log-uniform time in [`HOLD_MS`], then
//! given back the policy it had. A `SCHED_IDLE` thread only runs when nothing else on its CPU
//! wants to, so a demoted lock holder keeps its lock longer and a demoted waker wakes later:
//! the windows races live in widen, with no change to the subject and no signal it can see.
//! The bounds are rr's shape scaled to wedge's trials (which last a second or two, not a whole
//! test suite): at most [`HOLD_MS`]'s upper bound, so a demoted thread on an idle CPU loses
//! nothing and one on a busy CPU is not starved past a trial's quiescence window for long.
//!
//! Mode `pct`, after PCT's priority change points: at the same seeded times, the thread whose
//! priority drops is one that is *running* at that instant (the pick modulo the subject's
//! threads in state R), and nothing else changes: no squeeze, so the subject keeps all its CPUs.
//! A thread that is running is the one that may be inside a critical section (holding an
//! allocator arena, the stderr lock, the process's cwd between `chdir` and `bind`); demoted there,
//! it holds it while the others run on, which is what the fork-while-locked and cwd-race hazards
//! need, and `rr`'s squeeze onto one CPU took away (`reports/determinism.md`).
//!
//! Mode `syscall`: instead of times, *places*. Every thread of the subject is traced, and an
//! entry into a system call is held (the thread stopped there) when the seed says so: the
//! `k`-th entry into syscall `nr` in the trial is held for [`syscall_hold`]`(seed, nr, k)`
//! milliseconds. A thread stopped at a syscall entry keeps whatever it holds across that call
//! (the cwd between `chdir` and `bind`, the stderr lock across `write`, an allocator arena
//! across `mmap`/`brk`/`madvise`), for the whole hold, while every other thread runs on: the
//! windows of the in-process hazards, which random times rarely hit, are hit whenever such an
//! entry is drawn. The rule is a pure function of its three inputs, so the same seed holds the
//! same entries whenever the subject makes the same calls; which thread makes the `k`-th call
//! is the subject's own scheduling.
//!
//! Under `syscall` there is one rule more, for the hazard random holds hit least: a process made
//! (`fork`, `vfork`, a `clone` or `clone3` without `CLONE_THREAD`) while another thread of the
//! same process holds a lock the child will need. One such entry in [`FORK_PAIR_ONE_IN`]
//! ([`fork_paired`]) waits, for at most [`FORK_PAIR_WAIT_MS`], until another thread of its
//! process enters a call commonly made *inside* a process-wide user-space lock
//! ([`may_hold_lock`]: writes, under stdio and logger locks, to a descriptor that
//! [`write_may_hold_lock`]); that thread is then held at its entry, the fork goes on, and the
//! held thread is let go once the fork has made its child. The child starts with whatever
//! that thread held locked. A subject whose children only `exec` (or only make
//! async-signal-safe calls) is unaffected; one whose children take such a lock waits forever,
//! as it would one day by itself. A process with one
//! thread is never paired (nobody else can hold anything), so it pays nothing. The same wait
//! also ends when another thread *takes* a lock word a child shares with its forker, seen by
//! a hardware watchpoint; [`watched_words`] is which words, in what order, and
//! [`watch_find_pairs`] which takes end the wait.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The range of gaps between perturbations, in milliseconds (log-uniform).
pub const GAP_MS: (f64, f64) = (1.0, 100.0);
/// The range of how long a thread stays demoted, in milliseconds (log-uniform).
pub const HOLD_MS: (f64, f64) = (1.0, 500.0);
/// Under `syscall`, one syscall entry in this many is held.
pub const SYSCALL_HOLD_ONE_IN: u64 = 32;
/// Under `syscall`, the range of a hold, in milliseconds (log-uniform): long enough for every
/// other thread to get through a container build meanwhile, far below a trial's quiescence
/// window, so a held thread never looks like a hang.
pub const SYSCALL_HOLD_MS: (f64, f64) = (1.0, 50.0);

/// Under `syscall`, one process-creating entry in this many waits for a partner to hold. One in
/// four until the waits stopped ending on wakers' writes and other threads' arenas; with those
/// gone, one in two raised the agent's stuck builds (`reports/determinism.md`, "Waits that end
/// on a lock the child needs").
pub const FORK_PAIR_ONE_IN: u64 = 2;
/// Under `syscall`, how long a paired fork waits for a partner, in milliseconds.
pub const FORK_PAIR_WAIT_MS: u64 = 50;
/// Under `syscall`, the range of the gaps between a waiting fork's looks at its process's
/// allocator (log-uniform, microseconds): a few hundred looks in [`FORK_PAIR_WAIT_MS`], each
/// stopping the process's running threads for a few microseconds. An arena is typically locked
/// for well under 1 % of a busy allocator's time, so fewer looks often found it free: on
/// `wedge-subject fork-malloc clone` (20 trials each, one run), against 5 hangs without chaos,
/// 100–2000 µs gaps caught it in 16 trials and 50–500 µs in 18 while the tracer's `poll` still
/// rounded every wait up to a whole millisecond, and 50–500 µs kept exact (`ppoll`) in 20.
pub const ARENA_LOOK_GAP_US: (f64, f64) = (50.0, 500.0);

/// How a trial perturbs its subject's scheduling (`[scenario] chaos`, the `chaos` axis,
/// `wedge run --chaos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Chaos {
    /// No perturbation.
    #[default]
    Off,
    /// Random threads demoted to `SCHED_IDLE` for log-uniform times (module doc).
    Rr,
    /// Running threads demoted at the same times, the subject's CPUs left alone (module doc).
    Pct,
    /// Threads held at seeded syscall entries (module doc).
    Syscall,
}

impl Chaos {
    pub const NAMES: &[&str] = &["off", "rr", "pct", "syscall"];

    pub fn as_str(self) -> &'static str {
        match self {
            Chaos::Off => "off",
            Chaos::Rr => "rr",
            Chaos::Pct => "pct",
            Chaos::Syscall => "syscall",
        }
    }
}

impl std::str::FromStr for Chaos {
    type Err = String;

    fn from_str(s: &str) -> Result<Chaos, String> {
        match s {
            "off" => Ok(Chaos::Off),
            "rr" => Ok(Chaos::Rr),
            "pct" => Ok(Chaos::Pct),
            "syscall" => Ok(Chaos::Syscall),
            other => Err(format!(
                "chaos \"{other}\" is not a mode: one of {}",
                Chaos::NAMES.join(", ")
            )),
        }
    }
}

impl std::fmt::Display for Chaos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One perturbation of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perturbation {
    /// When, in milliseconds from the start of the trial's steps.
    pub at_ms: u64,
    /// Which thread: this modulo the subject's threads, sorted by tid.
    pub pick: u64,
    /// How long the thread stays demoted, in milliseconds.
    pub hold_ms: u64,
}

/// The perturbations of a trial with `seed`, in time order, endless (the trial stops taking
/// them when it ends).
pub fn schedule(seed: u64) -> impl Iterator<Item = Perturbation> {
    let mut rng = SplitMix(seed ^ 0x6368_616f_735f_7272); // "chaos_rr"
    let mut at = 0u64;
    std::iter::from_fn(move || {
        at += log_uniform(&mut rng, GAP_MS);
        Some(Perturbation {
            at_ms: at,
            pick: rng.next(),
            hold_ms: log_uniform(&mut rng, HOLD_MS),
        })
    })
}

/// Under `syscall`: how long, in milliseconds, the `occurrence`-th entry (from 1) into syscall
/// `nr` in the trial is held, or `None` to let it through. One entry in
/// [`SYSCALL_HOLD_ONE_IN`] is held, for a log-uniform time in [`SYSCALL_HOLD_MS`].
pub fn syscall_hold(seed: u64, nr: u64, occurrence: u64) -> Option<u64> {
    // Each (nr, occurrence) starts its own stream: splitmix's output is a bijective mix of its
    // state, so distinct inputs draw independent-looking values.
    let key = nr.rotate_left(40) ^ occurrence.wrapping_mul(0xd6e8_feb8_6659_fd93);
    let mut rng = SplitMix(seed ^ 0x7379_7363_616c_6c73 ^ key); // "syscalls"
    rng.next()
        .is_multiple_of(SYSCALL_HOLD_ONE_IN)
        .then(|| log_uniform(&mut rng, SYSCALL_HOLD_MS))
}

/// Under `syscall`: whether the `occurrence`-th entry (from 1) into the process-creating call
/// `nr` waits for a partner (module doc). One in [`FORK_PAIR_ONE_IN`], from a stream of its own.
pub fn fork_paired(seed: u64, nr: u64, occurrence: u64) -> bool {
    let key = nr.rotate_left(40) ^ occurrence.wrapping_mul(0xd6e8_feb8_6659_fd93);
    SplitMix(seed ^ 0x666f_726b_7061_6972 ^ key) // "forkpair"
        .next()
        .is_multiple_of(FORK_PAIR_ONE_IN)
}

/// Under `syscall`: the gap before the `look`-th look (from 1) at the allocator of the fork
/// that is the `occurrence`-th entry into `nr` (microseconds, [`ARENA_LOOK_GAP_US`]).
pub fn arena_look_gap_us(seed: u64, nr: u64, occurrence: u64, look: u64) -> u64 {
    let key = nr.rotate_left(40) ^ occurrence.wrapping_mul(0xd6e8_feb8_6659_fd93);
    let mut rng = SplitMix(seed ^ 0x6172_656e_616c_6f6f ^ key ^ look.rotate_left(20)); // "arenaloo"
    log_uniform(&mut rng, ARENA_LOOK_GAP_US)
}

/// A lock word a paired fork's watch looks at (`engine::syscall_holds::lock_watches`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedWord {
    pub addr: u64,
    pub kind: WordKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WordKind {
    /// A word in `file`'s static data that the process waited on with `futex`.
    Global { file: String },
    /// The malloc arena the forker allocates from (its child allocates from it too).
    OwnArena,
    /// Another malloc arena (a child frees into it whatever chunk came from there).
    Arena,
}

impl WatchedWord {
    /// "lock word 0x… in wedge-agent's data", "malloc arena 0x… (the forker's)".
    pub fn describe(&self) -> String {
        let addr = self.addr;
        match &self.kind {
            WordKind::Global { file } => format!("lock word {addr:#x} in {file}'s data"),
            WordKind::OwnArena => format!("malloc arena {addr:#x} (the forker's)"),
            WordKind::Arena => format!("malloc arena {addr:#x}"),
        }
    }
}

impl WordKind {
    /// Whether a child surely takes this word again: its forker's arena (at its first
    /// allocation the thread cache cannot serve) and a global lock (whenever it runs the code
    /// that takes it) are sure; another thread's arena only for a chunk the child frees from
    /// there, which is seldom (`reports/determinism.md`, "Lock watches").
    pub fn surely_retaken(&self) -> bool {
        !matches!(self, WordKind::Arena)
    }
}

/// Under `syscall`: whether a watch's find of the word in `slot` ends the fork's wait, `waited`
/// into it. A word a child surely takes again pairs at once. Another arena pairs only in the
/// wait's second half, or when nothing surer is watched: taken first, it would spend the
/// wait on a lock the child seldom needs while a surer one (a logger's or registry's lock,
/// taken a little later by the same thread) went unseen. Measured: `reports/determinism.md`.
pub fn watch_find_pairs(slots: &WatchSlots, slot: usize, waited: Duration) -> bool {
    let Some(word) = slots.words.get(slot) else {
        return false;
    };
    let surer_watched = slots.words.iter().any(|w| w.kind.surely_retaken());
    word.kind.surely_retaken()
        || !surer_watched
        || waited >= Duration::from_millis(FORK_PAIR_WAIT_MS / 2)
}

/// The words of one watch, in the order of the debug registers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchSlots {
    pub words: Vec<WatchedWord>,
}

/// Under `syscall`: which lock words the fork that is the `occurrence`-th entry into `nr`
/// watches, in `slots` registers. Global words come first (the locks a child most surely
/// takes again: a logger's, a registry's, stdio's), keeping one register for the forker's own
/// arena when it is known, then the forker's arena, then the other arenas in their order. When
/// there are more global words than registers for them, which ones is drawn from the seed (a
/// rotation of their list), so every word is watched at some forks. A global word that is an
/// arena (the main arena lives in libc's data) counts as the arena.
pub fn watched_words(
    seed: u64,
    nr: u64,
    occurrence: u64,
    globals: &[(u64, String)],
    own: Option<u64>,
    arenas: &[u64],
    slots: usize,
) -> WatchSlots {
    let globals: Vec<&(u64, String)> = globals
        .iter()
        .filter(|(a, _)| !arenas.contains(a) && Some(*a) != own)
        .collect();
    let room = slots.saturating_sub(usize::from(own.is_some()));
    let mut words = Vec::new();
    if !globals.is_empty() {
        let key = nr.rotate_left(40) ^ occurrence.wrapping_mul(0xd6e8_feb8_6659_fd93);
        let turn = SplitMix(seed ^ 0x7761_7463_6877_6f72 ^ key).next(); // "watchwor"
        let start = if globals.len() > room {
            (turn % globals.len() as u64) as usize
        } else {
            0
        };
        let taken = globals
            .iter()
            .cycle()
            .skip(start)
            .take(globals.len().min(room));
        words.extend(taken.map(|(addr, file)| WatchedWord {
            addr: *addr,
            kind: WordKind::Global { file: file.clone() },
        }));
    }
    if let Some(addr) = own {
        words.push(WatchedWord {
            addr,
            kind: WordKind::OwnArena,
        });
    }
    for &addr in arenas {
        if words.len() >= slots {
            break;
        }
        if Some(addr) != own {
            words.push(WatchedWord {
                addr,
                kind: WordKind::Arena,
            });
        }
    }
    words.truncate(slots);
    WatchSlots { words }
}

/// Whether syscall `nr`, with `clone_flags` (the flags of a `clone` or `clone3`; `None` when
/// they could not be read), makes a new process rather than a thread.
pub fn creates_process(nr: u64, clone_flags: Option<u64>) -> bool {
    let nr = nr as i64;
    if nr == libc::SYS_fork || nr == libc::SYS_vfork {
        return true;
    }
    let is_clone = nr == libc::SYS_clone || nr == libc::SYS_clone3;
    is_clone && clone_flags.is_none_or(|f| f & libc::CLONE_THREAD as u64 == 0)
}

/// Whether syscall `nr` is one commonly made while a process-wide user-space lock is held: a
/// write, under a stdio or logger lock, which a child needs whichever thread forked it.
///
/// Memory-map calls (an allocator growing or trimming an arena under that arena's lock) were
/// paired too at first and are not: a child allocates from the arena of the thread that forked
/// it, not from the partner's, so such pairings spent the draw without a hazard (measured:
/// `reports/determinism.md`), and glibc's own `fork()` takes every arena lock first anyway.
pub fn may_hold_lock(nr: u64) -> bool {
    const CALLS: [i64; 4] = [
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_pwrite64,
        libc::SYS_pwritev,
    ];
    CALLS.contains(&(nr as i64))
}

/// Whether a write to descriptor `fd`, whose `/proc/PID/fd` link reads `target`, may be made
/// under a process-wide lock. Standard output and error always may (stdio's and loggers' locks,
/// whatever the stream is: a pipe, a terminal, journald's socket). Any other descriptor may
/// unless it is an `anon_inode` (an eventfd, timerfd or the like: a runtime's waker, written to
/// wake a thread, not under a lock a child needs) or a socket (a connection's own stream, whose
/// lock, if any, is that connection's). On the agent, wakers' writes were most of the pairings
/// the write rule made, each ending a fork's wait with a partner that held nothing
/// (`reports/determinism.md`, "Lock watches").
pub fn write_may_hold_lock(fd: u64, target: &str) -> bool {
    fd <= 2 || !(target.starts_with("anon_inode:") || target.starts_with("socket:"))
}

/// A value log-uniform in `[lo, hi]`, rounded to whole milliseconds.
fn log_uniform(rng: &mut SplitMix, (lo, hi): (f64, f64)) -> u64 {
    let unit = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    (lo.ln() + unit * (hi.ln() - lo.ln())).exp().round() as u64
}

/// splitmix64: a tiny, well-mixed generator; the schedule needs reproducibility, not strength.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let a: Vec<Perturbation> = schedule(7).take(100).collect();
        let b: Vec<Perturbation> = schedule(7).take(100).collect();
        let c: Vec<Perturbation> = schedule(8).take(100).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn times_grow_and_stay_in_their_ranges() {
        let all: Vec<Perturbation> = schedule(1).take(10_000).collect();
        for pair in all.windows(2) {
            let gap = pair[1].at_ms - pair[0].at_ms;
            assert!((1..=100).contains(&gap), "{gap}");
        }
        assert!(all.iter().all(|p| (1..=500).contains(&p.hold_ms)));
        // Log-uniform: about as many holds in 1-22 ms as in 22-500 ms (the geometric middle).
        let short = all.iter().filter(|p| p.hold_ms <= 22).count();
        assert!((4000..6000).contains(&short), "{short}");
    }

    #[test]
    fn modes_parse_and_name_themselves() {
        for name in Chaos::NAMES {
            assert_eq!(name.parse::<Chaos>().unwrap().as_str(), *name);
        }
        let e = "pos".parse::<Chaos>().unwrap_err();
        assert!(e.contains("one of off, rr, pct, syscall"), "{e}");
    }

    #[test]
    fn syscall_holds_are_seeded_rare_and_bounded() {
        let holds = |seed| -> Vec<Option<u64>> {
            (0..40u64)
                .flat_map(|nr| (1..=500u64).map(move |k| syscall_hold(seed, nr, k)))
                .collect()
        };
        let a = holds(11);
        assert_eq!(a, holds(11));
        assert_ne!(a, holds(12));
        let held: Vec<u64> = a.iter().flatten().copied().collect();
        // 20 000 entries, one in 32 held: 625 expected; ±25 % is far outside chance.
        assert!((470..780).contains(&held.len()), "{}", held.len());
        assert!(held.iter().all(|h| (1..=50).contains(h)));
    }

    #[test]
    fn fork_pairings_are_seeded_and_one_in_two() {
        let nr = libc::SYS_clone3 as u64;
        let pairs = |seed| -> Vec<bool> { (1..=4000).map(|k| fork_paired(seed, nr, k)).collect() };
        let a = pairs(5);
        assert_eq!(a, pairs(5));
        assert_ne!(a, pairs(6));
        // 4000 entries, one in two: 2000 expected.
        let n = a.iter().filter(|p| **p).count();
        assert!((1850..2150).contains(&n), "{n}");
        // Its own stream: not the entries syscall_hold draws.
        let holds: Vec<bool> = (1..=4000)
            .map(|k| syscall_hold(5, nr, k).is_some())
            .collect();
        assert_ne!(a, holds);
    }

    #[test]
    fn arena_look_gaps_are_seeded_per_fork_and_look_and_in_range() {
        let nr = libc::SYS_clone3 as u64;
        let gaps = |seed, occurrence| -> Vec<u64> {
            (1..=200)
                .map(|look| arena_look_gap_us(seed, nr, occurrence, look))
                .collect()
        };
        let a = gaps(5, 1);
        assert_eq!(a, gaps(5, 1));
        assert_ne!(a, gaps(6, 1));
        assert_ne!(a, gaps(5, 2));
        assert!(a.iter().all(|g| (50..=500).contains(g)), "{a:?}");
        // Log-uniform over 50..500 µs: the median is about 158.
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert!((110..220).contains(&sorted[100]), "{}", sorted[100]);
    }

    #[test]
    fn processes_are_told_from_threads_by_their_clone_flags() {
        let (clone, clone3) = (libc::SYS_clone as u64, libc::SYS_clone3 as u64);
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert!(creates_process(libc::SYS_fork as u64, None));
        assert!(creates_process(libc::SYS_vfork as u64, None));
        assert!(creates_process(clone, Some(libc::SIGCHLD as u64)));
        assert!(creates_process(clone3, Some(libc::CLONE_NEWNS as u64)));
        assert!(!creates_process(clone, Some(thread)));
        assert!(!creates_process(clone3, Some(thread)));
        // Unreadable flags: treated as a process (a wait for nothing costs only time).
        assert!(creates_process(clone3, None));
        assert!(!creates_process(libc::SYS_execve as u64, None));
        assert!(may_hold_lock(libc::SYS_write as u64));
        assert!(!may_hold_lock(libc::SYS_mmap as u64));
        assert!(!may_hold_lock(libc::SYS_futex as u64));
        assert!(!may_hold_lock(libc::SYS_read as u64));
    }

    #[test]
    fn writes_to_wakers_and_sockets_are_not_under_a_lock_but_stdio_always_may_be() {
        assert!(write_may_hold_lock(2, "pipe:[1234]"));
        assert!(write_may_hold_lock(1, "socket:[99]"));
        assert!(write_may_hold_lock(7, "/var/log/agent.log"));
        assert!(write_may_hold_lock(5, "/dev/pts/3"));
        assert!(!write_may_hold_lock(9, "anon_inode:[eventfd]"));
        assert!(!write_may_hold_lock(4, "socket:[4321]"));
    }

    #[test]
    fn a_watch_pairs_at_once_on_sure_words_and_on_other_arenas_only_late() {
        let word = |addr, kind| WatchedWord { addr, kind };
        let global = || WordKind::Global {
            file: "prog".into(),
        };
        let slots = WatchSlots {
            words: vec![
                word(0x10, global()),
                word(0x300, WordKind::OwnArena),
                word(0x100, WordKind::Arena),
            ],
        };
        let early = Duration::from_millis(1);
        let late = Duration::from_millis(FORK_PAIR_WAIT_MS / 2);
        assert!(watch_find_pairs(&slots, 0, early));
        assert!(watch_find_pairs(&slots, 1, early));
        assert!(!watch_find_pairs(&slots, 2, early));
        assert!(watch_find_pairs(&slots, 2, late));
        // A slot the watch does not have never pairs.
        assert!(!watch_find_pairs(&slots, 3, late));
        // With nothing surer watched, another arena pairs at once.
        let arenas_only = WatchSlots {
            words: vec![word(0x100, WordKind::Arena), word(0x200, WordKind::Arena)],
        };
        assert!(watch_find_pairs(&arenas_only, 1, early));
    }

    #[test]
    fn watched_words_put_globals_first_and_keep_a_register_for_the_forkers_arena() {
        let g = |a: u64| (a, "prog".to_string());
        let w = watched_words(
            1,
            435,
            3,
            &[g(0x10), g(0x20)],
            Some(0x300),
            &[0x100, 0x300, 0x200],
            4,
        );
        let addrs: Vec<u64> = w.words.iter().map(|w| w.addr).collect();
        assert_eq!(addrs, [0x10, 0x20, 0x300, 0x100]);
        assert_eq!(w.words[2].kind, WordKind::OwnArena);
        assert_eq!(w.words[3].kind, WordKind::Arena);
        // Five globals for three registers: a seeded rotation, and each is watched somewhere.
        let many: Vec<_> = (1..=5).map(|i| g(i * 0x10)).collect();
        let mut seen = std::collections::HashSet::new();
        for k in 0..64 {
            let w = watched_words(7, 435, k, &many, Some(0x300), &[0x300], 4);
            assert_eq!(w.words.len(), 4);
            assert_eq!(w.words[3].kind, WordKind::OwnArena);
            seen.extend(w.words[..3].iter().map(|w| w.addr));
            assert_eq!(w, watched_words(7, 435, k, &many, Some(0x300), &[0x300], 4));
        }
        assert_eq!(seen.len(), 5);
        // The main arena, waited on in libc's data, is an arena, not a global; nothing known,
        // nothing watched.
        let w = watched_words(1, 435, 3, &[g(0x100)], None, &[0x100], 4);
        assert_eq!(
            w.words,
            [WatchedWord {
                addr: 0x100,
                kind: WordKind::Arena
            }]
        );
        assert!(watched_words(1, 435, 3, &[], None, &[], 4).words.is_empty());
    }
}
