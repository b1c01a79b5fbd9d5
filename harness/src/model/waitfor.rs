//! The wait-for graph of a hung tree: who waits for whom through what, and the cycle (or, without
//! one, the chain) that keeps the tree from ever continuing.
//!
//! # What it guarantees
//!
//! Every edge is what the kernel or the resource's own memory showed at the verdict: a thread
//! blocked on a resource, and the thread or process the resource records as its holder. Nothing
//! is guessed: a resource that records no holder (a Rust std `Mutex`, a condition variable) gives
//! an edge without one, said as "owner not recorded", and a cycle is reported only through
//! recorded holders. The graph explains a hang; it never decides one (no verdict reads it).
//!
//! [`build`] is pure: `engine::monitor::waitfor_edges` gathers the [`Observations`] (syscalls, futex words, fds,
//! `/proc/locks`), so every rule below is unit-tested on made-up ones.
//!
//! # Edges
//!
//! - **futex waits** (`FUTEX_WAIT`, `FUTEX_WAIT_BITSET`, `futex_wait`): on a glibc
//!   `pthread_mutex_t` (x86_64: `__lock` at 0, `__count` 4, `__owner` 8, `__nusers` 12,
//!   `__kind` 16, checked on glibc 2.36) the holder is `__owner`. Its memory is trusted only in
//!   that shape: the lock word locked (1 or 2, or the owner's TID for a robust mutex),
//!   `__owner` a thread of the waiter's process, `__nusers` at least 1, and `__kind` a known
//!   mutex kind; anything else (a Rust std `Mutex` is a bare word) has no recorded owner. A wait
//!   whose word and expected value are both the TID of another thread of the process, in a
//!   shared (not `FUTEX_PRIVATE`) wait, is `pthread_join` (the kernel clears that word when the
//!   thread exits, and wakes it as a shared futex): an edge to that thread. TIDs 1 and 2 are
//!   also the values every lock word takes, so they are never taken for a join (fewer edges,
//!   never a wrong one).
//! - **PI futexes** (`FUTEX_LOCK_PI`, `FUTEX_LOCK_PI2`): the word's `FUTEX_TID_MASK` bits are
//!   the owner. `FUTEX_WAIT_REQUEUE_PI` waits on a condition variable (its word records no
//!   owner) before it is moved to the PI mutex: no holder. When the kernel refuses a PI lock
//!   because it would deadlock (EDEADLK), glibc parks the thread for good in a wait on a zero
//!   word of its own stack: such a wait is *parked*, and its holder is inferred from the PI
//!   chain the kernel refused: the head of the longest chain of PI waits ending at the parked
//!   thread (the lock's owner), none when two chains tie or none leads there.
//! - **`futex_waitv`**: one ownerless edge per word.
//! - **locks no thread can release**: a glibc mutex whose `__owner` is no thread of the
//!   waiter's process (and not process-shared) has no holder; the line says that the owner's
//!   TID does not exist there, and names the parent's thread with that TID when there is one
//!   (the lock was inherited across fork). A private futex with no recorded owner, waited on by
//!   the only thread of a process that shares its memory (`kcmp(KCMP_VM)`) with no other
//!   process of the tree, has no other thread that could ever wake it (a private futex is woken
//!   only from its own memory): the line says so. Only the thread's own signal handlers could
//!   still release it, which is said too.
//! - TIDs in lock words are the ones of the process's own pid namespace (`NSpid`), mapped back
//!   to wedge's; only threads of the waiter's own process are looked up (a process-shared mutex
//!   owned by another process has no holder here).
//! - **file locks** (`flock`, `fcntl(F_SETLKW)`, OFD): each `->` entry of `/proc/locks` blocked
//!   behind a lock held by a process of the tree; the edge starts at the waiter's thread in
//!   `flock`/`fcntl` and ends at the holding process (a lock belongs to a process or an open
//!   file, not a thread).
//! - **pipes**: a thread blocked reading a pipe waits for every other process of the tree that
//!   holds its write end (a writer blocked on a full pipe: its read end). The reader's own
//!   process holding a write end is noted and is an edge too (it never sees end of file).
//! - **unix sockets** (stream and seqpacket): a thread blocked reading one (`read`, `recvfrom`,
//!   `recvmsg`...) waits for every process of the tree that holds its peer (the other end, found
//!   by sock_diag), its own process included; a writer blocked on a full socket likewise. A
//!   datagram socket has no one peer (anyone may send to it): no edge. An end passed in flight
//!   (`SCM_RIGHTS`) or held outside the tree is not seen: fewer edges.
//! - **SysV semaphores** (`semop`, `semtimedop`): a semaphore records no owner, so each
//!   semaphore a thread waits on is an edge without a holder, grouped by set in the line, with
//!   what is visible of it: the set's key, the semaphore's value and the last process that
//!   changed it (which may be the one expected to post it again, or not: it is said, not
//!   followed).
//! - **children**: a thread in `wait4`/`waitid` waits for the children it names (all of them for
//!   `-1`, a process group or `P_ALL`).
//! - **stopped processes** wait for a `SIGCONT`: an edge without a holder, since any process may
//!   send it and none is seen to.
//!
//! # Cycles and chains
//!
//! A thread node follows its edges' holders. A process node (a pipe's writer, a lock's holder, a
//! child) stands for all its threads: it follows them only when every one of them waits on an
//! edge or is stopped (one thread free to act can still write, unlock or exit). The first cycle
//! found from the lowest waiter is reported; without one, the longest chain of edges, ending at
//! the party everyone waits for and what it is doing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// A thread, or a whole process (any of whose threads could act).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Party {
    pub pid: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<i32>,
}

impl Party {
    pub fn thread(pid: i32, tid: i32) -> Party {
        Party {
            pid,
            tid: Some(tid),
        }
    }

    pub fn process(pid: i32) -> Party {
        Party { pid, tid: None }
    }
}

/// What a waiter waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Resource {
    /// A glibc `pthread_mutex_t`, owner from `__owner`.
    Mutex { addr: u64 },
    /// A priority-inheritance futex, owner from its word.
    PiMutex { addr: u64 },
    /// A futex whose owner is not recorded (a Rust std `Mutex`, a condition variable).
    Futex { addr: u64 },
    /// A glibc `pthread_mutex_t` whose `__owner` (`owner`, a TID of the waiter's pid namespace)
    /// is no thread of the waiter's process: the owner exited holding it, or the lock was
    /// inherited across fork, then from `held_in`, the thread of the parent with that TID.
    OwnerGone {
        addr: u64,
        owner: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        held_in: Option<Party>,
    },
    /// A private futex whose owner is not recorded, waited on by the only thread of a process
    /// that shares its memory with no other process: no other thread can wake it.
    Stranded { addr: u64 },
    /// A thread's exit (`pthread_join`).
    ThreadExit,
    /// A lock of `/proc/locks`: `class` is `FLOCK`, `POSIX` or `OFDLCK`, `file` is `dev:inode`.
    FileLock { class: String, file: String },
    /// Data in a pipe (`read`) or room in it (a writer).
    Pipe { inode: u64, read: bool },
    /// Data from a unix stream socket's peer (`read`), or room in the peer (a writer).
    Socket { inode: u64, peer: u64, read: bool },
    /// A SysV semaphore (`semop`): set `set` of the IPC namespace with inode `ns`, semaphore
    /// `num`; its value and the pid (wedge's) of the last process that changed it, when read.
    Semaphore {
        set: i32,
        ns: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<i32>,
        num: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_pid: Option<i32>,
    },
    /// A child's exit (`wait4`, `waitid`).
    Child,
    /// A stopped process waits for `SIGCONT`.
    Continue,
    /// Parked for good by glibc: a wait on a zero word of its own stack, which is what
    /// `pthread_mutex_lock` does when the kernel refuses a PI lock as a deadlock (EDEADLK). The
    /// holder, when there is one, is inferred from the PI chain (see [`build`]'s module doc).
    Parked,
}

impl Resource {
    fn is_lock(&self) -> bool {
        matches!(
            self,
            Resource::Mutex { .. }
                | Resource::PiMutex { .. }
                | Resource::OwnerGone { .. }
                | Resource::FileLock { .. }
                | Resource::Parked
        )
    }

    fn name(&self) -> String {
        match self {
            Resource::Mutex { addr } => format!("mutex {addr:#x}"),
            Resource::PiMutex { addr } => format!("PI mutex {addr:#x}"),
            Resource::Futex { addr } | Resource::Stranded { addr } => format!("futex {addr:#x}"),
            Resource::OwnerGone { addr, .. } => format!("mutex {addr:#x}"),
            Resource::ThreadExit => "a thread's exit".to_string(),
            Resource::FileLock { class, file } => format!("{class} lock on {file}"),
            Resource::Pipe { inode, .. } => format!("pipe:[{inode}]"),
            Resource::Socket { inode, .. } => format!("socket:[{inode}]"),
            Resource::Semaphore { set, num, .. } => format!("semaphore {num} of SysV set {set}"),
            Resource::Child => "a child".to_string(),
            Resource::Continue => "SIGCONT".to_string(),
            Resource::Parked => "a PI mutex (refused as a deadlock)".to_string(),
        }
    }
}

/// One waiter → resource → holder edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitEdge {
    pub waiter: Party,
    pub resource: Resource,
    /// `None`: the resource records no holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<Party>,
}

/// The graph at a verdict, its cycle or chain, and the line that says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitGraph {
    pub edges: Vec<WaitEdge>,
    /// Indices into `edges`, in order around the cycle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cycle: Vec<usize>,
    /// Without a cycle: indices into `edges` from the first waiter to the party everyone waits
    /// for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<usize>,
    /// e.g. `lock-order cycle: abba[12] thread a[13] holds mutex 0x… and waits for …`.
    pub text: String,
}

/// What the reader saw of the tree, all [`build`] needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    pub processes: Vec<ProcObs>,
    pub locks: Vec<FileLock>,
    /// The peer of each unix stream socket a thread waits on, by inode.
    pub peers: BTreeMap<u64, u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcObs {
    pub pid: i32,
    pub ppid: i32,
    /// Its pid in its own (innermost) pid namespace.
    pub ns_pid: Option<i32>,
    pub name: String,
    pub state: char,
    pub threads: Vec<ThreadObs>,
    /// Its pipe fds.
    pub pipes: Vec<PipeEnd>,
    /// Its socket fds.
    pub sockets: Vec<SocketEnd>,
    /// Whether another process of the tree shares its memory (`CLONE_VM`), when looked at (a
    /// single-threaded process in a private futex wait); `None`: not known.
    pub shares_memory: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketEnd {
    pub fd: i32,
    pub inode: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeEnd {
    pub fd: i32,
    pub inode: u64,
    pub read: bool,
    pub write: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadObs {
    pub tid: i32,
    /// Its TID in its own pid namespace (what lock words record).
    pub ns_tid: Option<i32>,
    pub name: String,
    pub main: bool,
    pub state: char,
    /// What the diagnosis says it does, e.g. `blocked in pause`.
    pub doing: String,
    pub blocked: Option<Blocked>,
}

/// The wait a thread is blocked in, as far as the graph follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    Futex {
        addr: u64,
        kind: FutexWait,
        /// `FUTEX_PRIVATE_FLAG`: the word is not shared with other processes.
        private: bool,
        /// The value it expects the word to hold.
        val: u32,
        /// The five `int`s from `addr` (a glibc mutex's `__data`); fewer when unreadable.
        words: Vec<i32>,
        /// `addr` is just above the thread's stack pointer (a local of the waiting function).
        on_stack: bool,
    },
    /// `futex_waitv`: any of these words.
    Futexes(Vec<u64>),
    Read {
        fd: i32,
    },
    Write {
        fd: i32,
    },
    /// `wait4`/`waitid`: `Some(pid)` in the waiter's pid namespace, `None` any child.
    Children(Option<i32>),
    /// `flock`, `fcntl(F_SETLKW)`, `fcntl(F_OFD_SETLKW)`.
    FileLock,
    /// `semop`/`semtimedop` on set `set` (`ns`: its IPC namespace's inode, `key`: its key, when
    /// read), waiting on the semaphores of `ops`.
    Semaphore {
        set: i32,
        ns: u64,
        key: Option<i32>,
        ops: Vec<SemWait>,
    },
}

/// One semaphore a `semop` waits on: a decrement (`op` < 0) or a wait for zero, with its value
/// and last changer (`semctl(GETPID)`; 0 when none has) when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemWait {
    pub num: u16,
    pub op: i16,
    pub value: Option<i32>,
    pub last_pid: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FutexWait {
    Plain,
    Pi,
    RequeuePi,
}

/// One entry of `/proc/locks` and the processes blocked behind it (pids as wedge sees them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLock {
    pub class: String,
    pub file: String,
    pub holder: i32,
    pub blocked: Vec<i32>,
}

/// The TID bits of a PI futex word.
const FUTEX_TID_MASK: i32 = 0x3fff_ffff;
/// Every `__kind` bit glibc 2.36 sets: the type (0..=3), robust 16, PI 32, PP 64, pshared 128,
/// elision 256 and 512.
const KNOWN_KIND_BITS: i32 = 3 | 16 | 32 | 64 | 128 | 256 | 512;
/// The `__kind` bit of a process-shared glibc mutex.
const PTHREAD_MUTEX_PSHARED: i32 = 128;

/// The graph of `obs`; `None` when no thread waits on anything it follows.
pub fn build(obs: &Observations) -> Option<WaitGraph> {
    let edges = edges(obs);
    if edges.is_empty() {
        return None;
    }
    let graph = Graph { obs, edges: &edges };
    let cycle = graph.cycle();
    let chain = if cycle.is_empty() {
        graph.chain()
    } else {
        Vec::new()
    };
    let text = Text::new(obs).line(&edges, &cycle, &chain);
    Some(WaitGraph {
        edges,
        cycle,
        chain,
        text,
    })
}

/// Every edge of the tree, in process and thread order.
fn edges(obs: &Observations) -> Vec<WaitEdge> {
    let mut out = Vec::new();
    for p in &obs.processes {
        if stopped(p) {
            out.push(WaitEdge {
                waiter: Party::process(p.pid),
                resource: Resource::Continue,
                holder: None,
            });
        }
        for t in &p.threads {
            let waiter = Party::thread(p.pid, t.tid);
            let edge = |resource, holder| WaitEdge {
                waiter,
                resource,
                holder,
            };
            match &t.blocked {
                None => {}
                Some(Blocked::Futex { .. }) => {
                    if let Some((resource, holder)) = futex_edge(obs, p, t) {
                        out.push(edge(resource, holder));
                    }
                }
                Some(Blocked::Futexes(addrs)) => {
                    out.extend(
                        addrs
                            .iter()
                            .map(|&addr| edge(Resource::Futex { addr }, None)),
                    );
                }
                Some(Blocked::Read { fd }) => {
                    out.extend(pipe_edges(obs, p, waiter, *fd, true));
                    out.extend(socket_edges(obs, p, waiter, *fd, true));
                }
                Some(Blocked::Write { fd }) => {
                    out.extend(pipe_edges(obs, p, waiter, *fd, false));
                    out.extend(socket_edges(obs, p, waiter, *fd, false));
                }
                Some(Blocked::Children(which)) => {
                    out.extend(children(obs, p, *which).map(|c| edge(Resource::Child, Some(c))))
                }
                Some(Blocked::FileLock) => out.extend(lock_edges(obs, p, waiter)),
                Some(Blocked::Semaphore { set, ns, key, ops }) => out.extend(ops.iter().map(|w| {
                    let resource = Resource::Semaphore {
                        set: *set,
                        ns: *ns,
                        key: *key,
                        num: w.num,
                        value: w.value,
                        last_pid: w.last_pid,
                    };
                    edge(resource, None)
                })),
            }
        }
    }
    refused_pi_owners(&mut out);
    out
}

/// A parked thread's holder, when PI waits show it: the kernel refuses a PI lock (EDEADLK) only
/// when the lock's owner waits, through a chain of PI locks, for one the asking thread holds; the
/// owner is then the head of the longest such chain ending at the parked thread. Two chains of
/// the same length: no holder. A parked thread no PI chain leads to keeps its ownerless edge.
fn refused_pi_owners(edges: &mut [WaitEdge]) {
    let pi_next = |edges: &[WaitEdge], at: Party| {
        edges
            .iter()
            .find(|e| e.waiter == at && matches!(e.resource, Resource::PiMutex { .. }))
            .and_then(|e| e.holder)
    };
    let depth = |edges: &[WaitEdge], from: Party, to: Party| {
        let mut at = from;
        for n in 1..=edges.len() {
            at = pi_next(edges, at)?;
            if at == to {
                return Some(n);
            }
        }
        None
    };
    for i in 0..edges.len() {
        if edges[i].resource != Resource::Parked {
            continue;
        }
        let to = edges[i].waiter;
        let mut heads: Vec<(usize, Party)> = edges
            .iter()
            .filter(|e| matches!(e.resource, Resource::PiMutex { .. }))
            .filter_map(|e| depth(edges, e.waiter, to).map(|d| (d, e.waiter)))
            .collect();
        heads.sort_unstable_by_key(|h| std::cmp::Reverse(h.0));
        edges[i].holder = match heads.as_slice() {
            [(d, h), rest @ ..] if rest.first().is_none_or(|r| r.0 < *d) => Some(*h),
            _ => None,
        };
    }
}

/// Whether every thread of `p` is stopped (a process with no thread seen: its own state).
fn stopped(p: &ProcObs) -> bool {
    if p.threads.is_empty() {
        return p.state == 'T';
    }
    p.threads.iter().all(|t| t.state == 'T')
}

/// The thread of `p` whose TID in its pid namespace is `ns_tid`.
fn by_ns_tid(p: &ProcObs, ns_tid: i32) -> Option<&ThreadObs> {
    p.threads.iter().find(|t| t.ns_tid == Some(ns_tid))
}

/// The edge of thread `t` of `p`, blocked in a futex wait.
fn futex_edge(obs: &Observations, p: &ProcObs, t: &ThreadObs) -> Option<(Resource, Option<Party>)> {
    let Some(Blocked::Futex {
        addr,
        kind,
        private,
        val,
        ref words,
        on_stack,
    }) = t.blocked
    else {
        return None;
    };
    let holder = |tid: i32| by_ns_tid(p, tid).map(|h| Party::thread(p.pid, h.tid));
    let ownerless = if private && p.threads.len() == 1 && p.shares_memory == Some(false) {
        (Resource::Stranded { addr }, None)
    } else {
        (Resource::Futex { addr }, None)
    };
    Some(match kind {
        FutexWait::RequeuePi => ownerless,
        FutexWait::Pi => {
            let owner = words.first().map(|w| w & FUTEX_TID_MASK);
            (Resource::PiMutex { addr }, owner.and_then(holder))
        }
        FutexWait::Plain if on_stack && val == 0 && words.first() == Some(&0) => {
            (Resource::Parked, None)
        }
        FutexWait::Plain => {
            let may_join = !private;
            let word = words.first().copied();
            // pthread_join: the word is the joined thread's TID until the kernel clears it, and
            // the wait is shared (the kernel's wake at exit is). 1 and 2 are also every lock's
            // states, so a TID that small (2 is the subject's main thread in its namespace) is
            // not taken for one.
            if let Some(w) = word
                && may_join
                && w as u32 == val
                && w > 2
                && t.ns_tid != Some(w)
                && let Some(h) = holder(w)
            {
                return Some((Resource::ThreadExit, Some(h)));
            }
            // A mutex its own waiter holds (relocking a normal mutex) is a cycle of one.
            match glibc_owner(words) {
                Some(o) => match holder(o) {
                    Some(h) => (Resource::Mutex { addr }, Some(h)),
                    None if words[4] & PTHREAD_MUTEX_PSHARED == 0 => {
                        let held_in = parent_thread(obs, p, o);
                        (
                            Resource::OwnerGone {
                                addr,
                                owner: o,
                                held_in,
                            },
                            None,
                        )
                    }
                    // A process-shared mutex may be held by another process: not looked up.
                    None => ownerless,
                },
                None => ownerless,
            }
        }
    })
}

/// The thread of `p`'s parent whose TID (in its pid namespace) is `ns_tid`: the owner of a lock
/// `p` inherited when it was forked. Only when `p` shares its parent's pid namespace (a child
/// made in a new one is its pid 1 there, and its parent's TIDs mean nothing in it).
fn parent_thread(obs: &Observations, p: &ProcObs, ns_tid: i32) -> Option<Party> {
    if p.ns_pid == Some(1) {
        return None;
    }
    let parent = obs.processes.iter().find(|q| q.pid == p.ppid)?;
    by_ns_tid(parent, ns_tid).map(|t| Party::thread(parent.pid, t.tid))
}

/// The `__owner` of a glibc `pthread_mutex_t` whose `__data` is `words`, if it has that shape.
/// An owner above the kernel's `PID_MAX_LIMIT` is no TID at all: the words are something else
/// (a Rust `Mutex<u64>` has its futex word first and its value where `__owner` would be).
fn glibc_owner(words: &[i32]) -> Option<i32> {
    /// No TID is ever above it (`include/linux/threads.h`, 64-bit).
    const PID_MAX_LIMIT: i32 = 1 << 22;
    let &[lock, _count, owner, nusers, kind] = words else {
        return None;
    };
    let locked = lock == 1 || lock == 2 || (lock & FUTEX_TID_MASK) == owner;
    let tid = owner > 0 && owner <= PID_MAX_LIMIT;
    (locked && tid && nusers >= 1 && kind & !KNOWN_KIND_BITS == 0).then_some(owner)
}

/// A reader waits for the other ends' holders: every process with a write end (a writer: a read
/// end) of the pipe behind `fd`, its own included.
fn pipe_edges<'a>(
    obs: &'a Observations,
    p: &ProcObs,
    waiter: Party,
    fd: i32,
    read: bool,
) -> impl Iterator<Item = WaitEdge> + 'a {
    let end = p.pipes.iter().find(|e| e.fd == fd).copied();
    obs.processes.iter().filter_map(move |q| {
        let end = end?;
        let holds = q
            .pipes
            .iter()
            .any(|e| e.inode == end.inode && if read { e.write } else { e.read });
        holds.then(|| WaitEdge {
            waiter,
            resource: Resource::Pipe {
                inode: end.inode,
                read,
            },
            holder: Some(Party::process(q.pid)),
        })
    })
}

/// A reader (or writer) of a unix stream socket waits for every process holding its peer.
fn socket_edges<'a>(
    obs: &'a Observations,
    p: &ProcObs,
    waiter: Party,
    fd: i32,
    read: bool,
) -> impl Iterator<Item = WaitEdge> + 'a {
    let inode = p.sockets.iter().find(|s| s.fd == fd).map(|s| s.inode);
    let peer = inode.and_then(|i| Some((i, *obs.peers.get(&i)?)));
    obs.processes.iter().filter_map(move |q| {
        let (inode, peer) = peer?;
        q.sockets.iter().any(|s| s.inode == peer).then(|| WaitEdge {
            waiter,
            resource: Resource::Socket { inode, peer, read },
            holder: Some(Party::process(q.pid)),
        })
    })
}

/// The children of `p` a wait for `which` (a pid in `p`'s namespace, or any) waits for.
fn children<'a>(
    obs: &'a Observations,
    p: &'a ProcObs,
    which: Option<i32>,
) -> impl Iterator<Item = Party> + 'a {
    obs.processes
        .iter()
        .filter(move |c| c.ppid == p.pid && which.is_none_or(|w| c.ns_pid == Some(w)))
        .map(|c| Party::process(c.pid))
}

/// The locks `p` is blocked behind, each to its holder (or none outside the tree).
fn lock_edges<'a>(
    obs: &'a Observations,
    p: &'a ProcObs,
    waiter: Party,
) -> impl Iterator<Item = WaitEdge> + 'a {
    obs.locks
        .iter()
        .filter(move |l| l.blocked.contains(&p.pid))
        .map(move |l| WaitEdge {
            waiter,
            resource: Resource::FileLock {
                class: l.class.clone(),
                file: l.file.clone(),
            },
            holder: obs
                .processes
                .iter()
                .any(|q| q.pid == l.holder)
                .then(|| Party::process(l.holder)),
        })
}

/// The edges with the parties they join, for cycles and chains.
struct Graph<'a> {
    obs: &'a Observations,
    edges: &'a [WaitEdge],
}

impl Graph<'_> {
    /// Where `node` can go: a thread (or a stopped process) by its edges; a process to its
    /// threads, only when every one of them waits on an edge or is stopped. `None` as the edge:
    /// a process to its thread.
    fn next(&self, node: Party) -> Vec<(Option<usize>, Party)> {
        let mut out: Vec<(Option<usize>, Party)> = self
            .edges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.waiter == node)
            .filter_map(|(i, e)| e.holder.map(|h| (Some(i), h)))
            .collect();
        if node.tid.is_none()
            && let Some(p) = self.obs.processes.iter().find(|p| p.pid == node.pid)
        {
            let waits = |t: &ThreadObs| {
                t.state == 'T'
                    || self
                        .edges
                        .iter()
                        .any(|e| e.waiter == Party::thread(p.pid, t.tid))
            };
            if !p.threads.is_empty() && p.threads.iter().all(waits) {
                out.extend(
                    p.threads
                        .iter()
                        .map(|t| (None, Party::thread(p.pid, t.tid))),
                );
            }
        }
        out
    }

    /// The waiters, lowest first: where searches start.
    fn starts(&self) -> BTreeSet<Party> {
        self.edges.iter().map(|e| e.waiter).collect()
    }

    /// The edges of the first cycle found, starting from the lowest waiter on it.
    fn cycle(&self) -> Vec<usize> {
        let mut done = BTreeSet::new();
        for start in self.starts() {
            let mut path: Vec<(Option<usize>, Party)> = vec![(None, start)];
            if let Some(found) = self.dfs(&mut path, &mut done) {
                return found;
            }
        }
        Vec::new()
    }

    fn dfs(
        &self,
        path: &mut Vec<(Option<usize>, Party)>,
        done: &mut BTreeSet<Party>,
    ) -> Option<Vec<usize>> {
        let node = path.last()?.1;
        if done.contains(&node) {
            return None;
        }
        for (edge, to) in self.next(node) {
            if let Some(at) = path.iter().position(|(_, n)| *n == to) {
                let mut cycle: Vec<usize> = path[at + 1..].iter().filter_map(|(e, _)| *e).collect();
                cycle.extend(edge);
                return Some(rotate_to_lowest(cycle, self.edges));
            }
            path.push((edge, to));
            let found = self.dfs(path, done);
            path.pop();
            if found.is_some() {
                return found;
            }
        }
        done.insert(node);
        None
    }

    /// The longest path of edges (the graph has no cycle), the first found among equals.
    fn chain(&self) -> Vec<usize> {
        let mut memo = BTreeMap::new();
        let mut best = Vec::new();
        for start in self.starts() {
            let path = self.longest(start, &mut memo, &mut BTreeSet::new());
            if path.len() > best.len() {
                best = path;
            }
        }
        best
    }

    fn longest(
        &self,
        node: Party,
        memo: &mut BTreeMap<Party, Vec<usize>>,
        seen: &mut BTreeSet<Party>,
    ) -> Vec<usize> {
        if let Some(p) = memo.get(&node) {
            return p.clone();
        }
        // A guard only: without a cycle no node repeats.
        if !seen.insert(node) {
            return Vec::new();
        }
        let mut best: Vec<usize> = self
            .edges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.waiter == node && e.holder.is_none())
            .map(|(i, _)| vec![i])
            .next()
            .unwrap_or_default();
        for (edge, to) in self.next(node) {
            let mut path: Vec<usize> = edge.into_iter().collect();
            path.extend(self.longest(to, memo, seen));
            if path.len() > best.len() {
                best = path;
            }
        }
        memo.insert(node, best.clone());
        best
    }
}

/// A cycle's edges rotated to start at its lowest waiter (a stable report whatever the start).
fn rotate_to_lowest(mut cycle: Vec<usize>, edges: &[WaitEdge]) -> Vec<usize> {
    if let Some(at) = (0..cycle.len()).min_by_key(|&i| edges[cycle[i]].waiter) {
        cycle.rotate_left(at);
    }
    cycle
}

/// Writing the line: names of parties, each process named in full once.
struct Text<'a> {
    obs: &'a Observations,
    named: BTreeSet<i32>,
}

impl<'a> Text<'a> {
    fn new(obs: &'a Observations) -> Text<'a> {
        Text {
            obs,
            named: BTreeSet::new(),
        }
    }

    fn process(&self, pid: i32) -> Option<&'a ProcObs> {
        self.obs.processes.iter().find(|p| p.pid == pid)
    }

    /// `abba[12] thread a[13]` the first time process 12 is named, `thread a[13]` after.
    fn who(&mut self, party: Party) -> String {
        let p = self.process(party.pid);
        let pname = p.map_or("?", |p| p.name.as_str());
        let first = self.named.insert(party.pid);
        let Some(tid) = party.tid else {
            return format!("{pname}[{}]", party.pid);
        };
        let thread = p.and_then(|p| p.threads.iter().find(|t| t.tid == tid));
        let tname = match thread {
            Some(t) if t.main => "main".to_string(),
            Some(t) => t.name.clone(),
            None => "?".to_string(),
        };
        let t = format!("thread {tname}[{tid}]");
        if first {
            format!("{pname}[{}] {t}", party.pid)
        } else {
            t
        }
    }

    /// What `edge`'s waiter does, from after its name: `waits for mutex 0x… (held by …)`.
    fn wait(&mut self, edge: &WaitEdge) -> String {
        let own = edge
            .holder
            .is_some_and(|h| h.tid.is_none() && h.pid == edge.waiter.pid);
        let holder = match edge.holder {
            Some(_) if own => Some("its own process".to_string()),
            h => h.map(|h| self.who(h)),
        };
        let res = edge.resource.name();
        match (&edge.resource, holder) {
            (Resource::Continue, _) => "is stopped".to_string(),
            (Resource::ThreadExit, Some(h)) => format!("joins {h}"),
            (Resource::Child, Some(h)) => format!("waits for its child {h}"),
            (Resource::Pipe { read: true, .. }, Some(h)) => {
                format!("reads {res} whose writer is {h}")
            }
            (Resource::Pipe { read: false, .. }, Some(h)) => {
                format!("writes {res} whose reader is {h}")
            }
            (Resource::Socket { peer, read, .. }, Some(h)) => {
                let verb = if *read { "reads" } else { "writes" };
                format!("{verb} {res} whose peer socket:[{peer}] is held by {h}")
            }
            (Resource::OwnerGone { owner, held_in, .. }, None) => {
                let why = match held_in {
                    Some(t) => format!("lock inherited across fork from {}", self.who(*t)),
                    None => {
                        "its owner exited holding it, or it was inherited across fork".to_string()
                    }
                };
                format!(
                    "waits for {res}, whose owner tid {owner} recorded in the lock word does not \
                     exist in this process ({why})"
                )
            }
            (Resource::Stranded { .. }, None) => format!(
                "waits for {res} (owner not recorded) that no other thread can wake: it is the \
                 only thread of its process, which shares its memory with no other (a lock held \
                 by another thread when it was forked, or one it holds itself; only a signal \
                 handler of its own could release it)"
            ),
            (_, Some(h)) => format!("waits for {res} (held by {h})"),
            (_, None) => format!("waits for {res} (owner not recorded)"),
        }
    }

    fn line(&mut self, edges: &[WaitEdge], cycle: &[usize], chain: &[usize]) -> String {
        let mut parts = Vec::new();
        let mut shown: BTreeSet<usize> = cycle.iter().copied().collect();
        if !cycle.is_empty() {
            parts.push(self.cycle(edges, cycle));
        } else if chain.iter().any(|&i| edges[i].holder.is_some()) {
            parts.push(self.chain(edges, chain));
            shown.extend(chain);
        }
        let rest = self.ownerless(edges, &shown);
        if !rest.is_empty() {
            parts.push(rest);
        }
        parts.extend(self.semaphores(edges, &shown));
        for (i, e) in edges.iter().enumerate() {
            let lone = matches!(
                e.resource,
                Resource::OwnerGone { .. } | Resource::Stranded { .. }
            );
            if lone && !shown.contains(&i) {
                let who = self.who(e.waiter);
                parts.push(format!("{who} {}", self.wait(e)));
            }
        }
        if parts.is_empty()
            && let Some(i) = chain.first()
        {
            let who = self.who(edges[*i].waiter);
            parts.push(format!("{who} {}", self.wait(&edges[*i])));
        }
        parts.join("; ")
    }

    fn cycle(&mut self, edges: &[WaitEdge], cycle: &[usize]) -> String {
        let kinds: BTreeSet<&str> = cycle
            .iter()
            .map(|&i| match edges[i].resource {
                Resource::Mutex { .. } | Resource::PiMutex { .. } | Resource::Parked => {
                    "lock-order"
                }
                Resource::FileLock { .. } => "file-lock",
                Resource::Pipe { .. } => "pipe",
                Resource::Socket { .. } => "socket",
                _ => "wait",
            })
            .collect();
        let kind = match kinds.iter().next() {
            Some(k) if kinds.len() == 1 => *k,
            _ => "wait",
        };
        let mut steps = Vec::new();
        for (n, &i) in cycle.iter().enumerate() {
            let prev = &edges[cycle[(n + cycle.len() - 1) % cycle.len()]];
            let who = self.who(edges[i].waiter);
            let holds = if prev.resource.is_lock() {
                format!(" holds {} and", prev.resource.name())
            } else {
                String::new()
            };
            steps.push(format!("{who}{holds} {}", self.wait(&edges[i])));
        }
        format!("{kind} cycle: {}", steps.join("; "))
    }

    fn chain(&mut self, edges: &[WaitEdge], chain: &[usize]) -> String {
        let mut out = String::from("wait chain: ");
        for (n, &i) in chain.iter().enumerate() {
            if n > 0 {
                out.push_str(", which ");
            } else {
                out.push_str(&self.who(edges[i].waiter));
                out.push(' ');
            }
            out.push_str(&self.wait(&edges[i]));
        }
        let last = chain.last().map(|&i| &edges[i]);
        if let Some(h) = last.and_then(|e| e.holder)
            && let Some(doing) = self.doing(h)
        {
            let _ = write!(out, ", which is {doing}");
        }
        out
    }

    /// What the party at the end of a chain does: a thread's phrase, or a process's threads'.
    fn doing(&self, party: Party) -> Option<String> {
        let p = self.process(party.pid)?;
        let mut doing: Vec<&str> = p
            .threads
            .iter()
            .filter(|t| party.tid.is_none_or(|tid| tid == t.tid))
            .map(|t| t.doing.as_str())
            .filter(|d| !d.is_empty())
            .collect();
        doing.sort_unstable();
        doing.dedup();
        (!doing.is_empty()).then(|| doing.join(" and "))
    }

    /// The semaphore waits not in the cycle or chain, one part per set: `SysV semaphore set 3
    /// (key 0x…), no owner recorded: abba[10] thread main[10] on semaphore 0 (value 0, last
    /// changed by abba[11])`.
    fn semaphores(&mut self, edges: &[WaitEdge], shown: &BTreeSet<usize>) -> Vec<String> {
        let mut by_set: BTreeMap<(u64, i32), Vec<&WaitEdge>> = BTreeMap::new();
        for (i, e) in edges.iter().enumerate() {
            if let (Resource::Semaphore { set, ns, .. }, false) = (&e.resource, shown.contains(&i))
            {
                by_set.entry((*ns, *set)).or_default().push(e);
            }
        }
        let mut out = Vec::new();
        for ((_, set), waits) in by_set {
            let mut parts = Vec::new();
            let mut key = None;
            for e in waits {
                let Resource::Semaphore {
                    key: k,
                    num,
                    value,
                    last_pid,
                    ..
                } = e.resource
                else {
                    continue;
                };
                key = key.or(k);
                let who = self.who(e.waiter);
                let value = value.map_or("value unknown".to_string(), |v| format!("value {v}"));
                let last = match last_pid {
                    None => "last changer unknown".to_string(),
                    Some(0) => "never changed".to_string(),
                    Some(pid) if self.process(pid).is_some() => {
                        format!("last changed by {}", self.who(Party::process(pid)))
                    }
                    Some(pid) => format!("last changed by pid {pid}, outside the tree"),
                };
                parts.push(format!("{who} on semaphore {num} ({value}, {last})"));
            }
            let key = key.map_or(String::new(), |k| format!(" (key {:#010x})", k as u32));
            out.push(format!(
                "SysV semaphore set {set}{key}, no owner recorded: {}",
                parts.join(", ")
            ));
        }
        out
    }

    /// The ownerless futexes not in the cycle or chain, grouped by address.
    fn ownerless(&mut self, edges: &[WaitEdge], shown: &BTreeSet<usize>) -> String {
        let mut by_addr: BTreeMap<(i32, u64), Vec<Party>> = BTreeMap::new();
        for (i, e) in edges.iter().enumerate() {
            if let (Resource::Futex { addr }, None, false) =
                (&e.resource, e.holder, shown.contains(&i))
            {
                by_addr
                    .entry((e.waiter.pid, *addr))
                    .or_default()
                    .push(e.waiter);
            }
        }
        let groups: Vec<String> = by_addr
            .into_iter()
            .map(|((_, addr), waiters)| {
                let who: Vec<String> = waiters.into_iter().map(|w| self.who(w)).collect();
                format!("futex {addr:#x}: {}", who.join(", "))
            })
            .collect();
        if groups.is_empty() {
            String::new()
        } else {
            format!("waiting, owner not recorded: {}", groups.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(tid: i32, ns_tid: i32, blocked: Option<Blocked>) -> ThreadObs {
        ThreadObs {
            tid,
            ns_tid: Some(ns_tid),
            name: format!("t{tid}"),
            main: false,
            state: 'S',
            doing: "blocked in pause".into(),
            blocked,
        }
    }

    fn process(pid: i32, threads: Vec<ThreadObs>) -> ProcObs {
        ProcObs {
            pid,
            ppid: 1,
            ns_pid: Some(2),
            name: "abba".into(),
            state: 'S',
            threads,
            pipes: Vec::new(),
            sockets: Vec::new(),
            shares_memory: None,
        }
    }

    fn plain(addr: u64, val: u32, words: Vec<i32>, private: bool) -> Option<Blocked> {
        Some(Blocked::Futex {
            addr,
            kind: FutexWait::Plain,
            private,
            val,
            words,
            on_stack: false,
        })
    }

    /// A locked, contended glibc normal mutex owned by namespace TID `owner`.
    fn mutex(owner: i32) -> Vec<i32> {
        vec![2, 0, owner, 1, 0]
    }

    #[test]
    fn glibc_owners_are_trusted_only_in_a_mutex_shape() {
        assert_eq!(glibc_owner(&mutex(7)), Some(7));
        // A robust mutex's word is its owner's TID.
        assert_eq!(
            glibc_owner(&[7 | 0x4000_0000_u32 as i32, 0, 7, 1, 16]),
            Some(7)
        );
        // Unlocked, no users, an unknown kind, too short (a bare Rust std Mutex word).
        assert_eq!(glibc_owner(&[0, 0, 7, 1, 0]), None);
        assert_eq!(glibc_owner(&[2, 0, 7, 0, 0]), None);
        assert_eq!(glibc_owner(&[2, 0, 7, 1, 0x4000]), None);
        assert_eq!(glibc_owner(&[2]), None);
        // A Rust `Mutex<u64>` holding 0x1_5297_4afc: its value is where `__owner` would be, and
        // is no TID.
        assert_eq!(glibc_owner(&[2, 0, 0x5297_4afc, 1, 0]), None);
    }

    #[test]
    fn an_abba_on_glibc_mutexes_is_a_lock_order_cycle() {
        let p = process(
            10,
            vec![
                thread(10, 2, plain(0x100, 3, vec![3], false)),
                thread(11, 3, plain(0x200, 2, mutex(4), true)),
                thread(12, 4, plain(0x300, 2, mutex(3), true)),
            ],
        );
        let g = build(&Observations {
            processes: vec![p],
            locks: Vec::new(),
            peers: BTreeMap::new(),
        })
        .unwrap();
        assert_eq!(g.edges[0].resource, Resource::ThreadExit);
        assert_eq!(g.edges[0].holder, Some(Party::thread(10, 11)));
        assert_eq!(g.cycle, vec![1, 2]);
        assert_eq!(
            g.text,
            "lock-order cycle: abba[10] thread t11[11] holds mutex 0x300 and waits for mutex \
             0x200 (held by thread t12[12]); thread t12[12] holds mutex 0x200 and waits for \
             mutex 0x300 (held by thread t11[11])"
        );
    }

    #[test]
    fn small_tids_and_private_waits_are_not_joins() {
        // Word 2 expected 2: a contended lock, even though TID 2 is a thread of the process.
        let p = process(
            10,
            vec![
                thread(10, 2, None),
                thread(11, 3, plain(0x100, 2, vec![2], false)),
                thread(12, 4, plain(0x200, 3, vec![3], true)),
            ],
        );
        let g = build(&Observations {
            processes: vec![p],
            locks: Vec::new(),
            peers: BTreeMap::new(),
        })
        .unwrap();
        assert!(g.edges.iter().all(|e| e.holder.is_none()), "{g:?}");
        assert_eq!(
            g.text,
            "waiting, owner not recorded: futex 0x100: abba[10] thread t11[11]; futex 0x200: \
             thread t12[12]"
        );
    }

    #[test]
    fn a_parked_thread_is_refused_the_lock_its_pi_chain_leads_from() {
        let parked = Some(Blocked::Futex {
            addr: 0x7ff0,
            kind: FutexWait::Plain,
            private: true,
            val: 0,
            words: vec![0],
            on_stack: true,
        });
        let pi = |addr, words| {
            Some(Blocked::Futex {
                addr,
                kind: FutexWait::Pi,
                private: true,
                val: 0,
                words,
                on_stack: false,
            })
        };
        // 11 waits for 12's PI lock, 12 for 13's, 13 was refused: its lock is 11's.
        let p = process(
            10,
            vec![
                thread(11, 3, pi(0x100, vec![4 | 0x8000_0000_u32 as i32])),
                thread(12, 4, pi(0x200, vec![5])),
                thread(13, 5, parked),
            ],
        );
        let g = build(&Observations {
            processes: vec![p],
            locks: Vec::new(),
            peers: BTreeMap::new(),
        })
        .unwrap();
        assert_eq!(g.edges[2].resource, Resource::Parked);
        assert_eq!(g.edges[2].holder, Some(Party::thread(10, 11)));
        assert_eq!(g.cycle, vec![0, 1, 2]);
    }

    #[test]
    fn a_reader_holding_the_write_end_itself_is_said_so() {
        let mut p = process(10, vec![thread(10, 2, Some(Blocked::Read { fd: 3 }))]);
        p.threads[0].main = true;
        p.pipes = vec![
            PipeEnd {
                fd: 3,
                inode: 77,
                read: true,
                write: false,
            },
            PipeEnd {
                fd: 4,
                inode: 77,
                read: false,
                write: true,
            },
        ];
        let g = build(&Observations {
            processes: vec![p],
            locks: Vec::new(),
            peers: BTreeMap::new(),
        })
        .unwrap();
        assert_eq!(
            g.text,
            "pipe cycle: abba[10] thread main[10] reads pipe:[77] whose writer is its own process"
        );
    }

    #[test]
    fn a_process_with_a_free_thread_ends_a_chain() {
        // 20 reads a pipe that only 30 writes; 30 has a thread that is not waiting on anything
        // the graph follows, so it may still write: no cycle through it.
        let end = |fd, read| PipeEnd {
            fd,
            inode: 5,
            read,
            write: !read,
        };
        let mut reader = process(20, vec![thread(20, 2, Some(Blocked::Read { fd: 3 }))]);
        reader.pipes = vec![end(3, true)];
        let mut writer = process(30, vec![thread(30, 2, None), thread(31, 3, None)]);
        writer.pipes = vec![end(4, false)];
        let g = build(&Observations {
            processes: vec![reader, writer],
            locks: Vec::new(),
            peers: BTreeMap::new(),
        })
        .unwrap();
        assert!(g.cycle.is_empty(), "{g:?}");
        assert_eq!(g.chain, vec![0]);
        assert_eq!(
            g.text,
            "wait chain: abba[20] thread t20[20] reads pipe:[5] whose writer is abba[30], which \
             is blocked in pause"
        );
    }

    #[test]
    fn two_processes_reading_each_others_socket_peers_are_a_socket_cycle() {
        let sock = |fd, inode| SocketEnd { fd, inode };
        let mut a = process(20, vec![thread(20, 2, Some(Blocked::Read { fd: 3 }))]);
        a.sockets = vec![sock(3, 100), sock(4, 201)];
        let mut b = process(30, vec![thread(30, 2, Some(Blocked::Read { fd: 5 }))]);
        b.sockets = vec![sock(5, 200), sock(6, 101)];
        // A datagram socket (no peer known) gives no edge.
        let mut c = process(40, vec![thread(40, 2, Some(Blocked::Read { fd: 7 }))]);
        c.sockets = vec![sock(7, 300)];
        let g = build(&Observations {
            processes: vec![a, b, c],
            locks: Vec::new(),
            peers: BTreeMap::from([(100, 101), (200, 201)]),
        })
        .unwrap();
        assert_eq!(g.edges.len(), 2, "{g:?}");
        assert_eq!(g.cycle, vec![0, 1]);
        assert_eq!(
            g.text,
            "socket cycle: abba[20] thread t20[20] reads socket:[100] whose peer socket:[101] is \
             held by abba[30]; thread t30[30] reads socket:[200] whose peer socket:[201] is held \
             by abba[20]"
        );
    }

    #[test]
    fn a_lone_thread_on_a_private_futex_is_stranded_and_a_gone_owner_is_named() {
        let waits = |p: &mut ProcObs, shares: Option<bool>| {
            p.threads[0].main = true;
            p.shares_memory = shares;
        };
        // Alone, sharing memory with no one: stranded. Unknown or shared: plain ownerless.
        let mut alone = process(20, vec![thread(20, 2, plain(0x10, 2, vec![2], true))]);
        waits(&mut alone, Some(false));
        let mut shared = process(30, vec![thread(30, 2, plain(0x10, 2, vec![2], true))]);
        waits(&mut shared, Some(true));
        // A glibc mutex owned by TID 9, which the process does not have (and no parent seen).
        let mut gone = process(40, vec![thread(40, 2, plain(0x20, 2, mutex(9), true))]);
        waits(&mut gone, Some(false));
        let g = build(&Observations {
            processes: vec![alone, shared, gone],
            ..Observations::default()
        })
        .unwrap();
        let kinds: Vec<&Resource> = g.edges.iter().map(|e| &e.resource).collect();
        assert_eq!(
            kinds,
            vec![
                &Resource::Stranded { addr: 0x10 },
                &Resource::Futex { addr: 0x10 },
                &Resource::OwnerGone {
                    addr: 0x20,
                    owner: 9,
                    held_in: None
                },
            ]
        );
        assert!(
            g.text.ends_with(
                "abba[40] thread main[40] waits for mutex 0x20, whose owner tid 9 recorded in \
                 the lock word does not exist in this process (its owner exited holding it, or \
                 it was inherited across fork)"
            ),
            "{}",
            g.text
        );
        assert!(
            g.text.contains("that no other thread can wake"),
            "{}",
            g.text
        );
    }
}
