//! Reading what the wait-for graph (`model::waitfor`) is built from: the wait each blocked
//! thread is in (decoded from its syscall, with the futex words it waits on read from its
//! memory), each thread's TID in its own pid namespace (`NSpid`, what lock words record), the
//! pipes and sockets each process holds (`/proc/PID/fd` links and `fdinfo` flags), the peer of
//! each unix socket a thread waits on (sock_diag), and `/proc/locks`.
//!
//! Everything here only reads and parses; the graph's rules are in `model::waitfor`. What
//! cannot be read is left out (an unreadable futex word gives no owner, a vanished process no
//! fds, a socket sock_diag does not answer for no peer): the graph then has fewer edges, never
//! wrong ones.
//!
//! A unix socket's peer is known only to the kernel: `/proc/net/unix` lists inodes but not
//! peers, and `SO_PEERCRED` names who connected, not who holds the other end now. sock_diag
//! (`NETLINK_SOCK_DIAG`, `UDIAG_SHOW_PEER`) answers with the peer's inode, for one socket at a
//! time, in the network namespace of the asking socket: so a waiter in another network
//! namespace is looked up from a short-lived thread that joined its namespace (`setns` changes
//! only the calling thread's). No process is spawned.
//!
//! A SysV semaphore records no owner. What is visible of a set a thread waits on (`semop`,
//! `semtimedop`): its key (`IPC_STAT`: one call, where `/proc/sysvipc/sem` would be a listing
//! that skips entries when other sets come and go between its pages), and per semaphore waited on its value
//! and the last process that changed it (`semctl(GETPID)`, a pid in wedge's own pid namespace).
//! Both exist only inside the set's IPC namespace: they are read from a thread that joined the
//! waiter's. Not visible anywhere: who will `semop` it next, or who "holds" a count.
//!
//! `/proc/locks` lists every file lock of the machine and is not a snapshot: the kernel hands it
//! out one page per `read`, and each `read` resumes by counting entries from the head of the
//! list again. A lock taken or dropped anywhere on the machine between two reads shifts that
//! count, so one entry is skipped or repeated: with a few hundred locks in churn (a build
//! holding cargo's locks) a two-process flock cycle read as a one-edge chain in 5 of 60 trials.
//! The tree itself is quiescent when this runs, so its entries are stable: [`file_locks`] reads
//! the file again, merging what each read saw, until every tree process blocked in a lock call
//! is listed as a waiter (at most [`LOCKS_READS`] reads).

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use crate::engine::proc::{ProcessSample, SyscallState, read_memory, syscall};
use crate::model::waitfor::{
    Blocked, FileLock, FutexWait, Observations, PipeEnd, ProcObs, SemWait, SocketEnd, ThreadObs,
};

const FUTEX_PRIVATE_FLAG: u64 = 128;
const FUTEX_CMD_MASK: u64 = !(FUTEX_PRIVATE_FLAG | 256);
/// `fcntl` commands that wait for a lock: `F_SETLKW`, `F_OFD_SETLKW`.
const FCNTL_WAITS: [u64; 2] = [7, 38];
/// How far above its stack pointer a futex word counts as a local of the waiting call.
const STACK_FRAMES: u64 = 64 * 1024;
/// Most `futex_waitv` entries the kernel accepts.
const FUTEX_WAITV_MAX: u64 = 128;
/// Most `struct sembuf`s of one `semop` read (the kernel's `SEMOPM` default is 500).
const SEMOPS_MAX: u64 = 64;
/// Most reads of `/proc/locks` for one graph (each skips an entry only when the machine's
/// locks changed during it, so a few suffice; a waiter behind a lock that vanished is never
/// found and would otherwise cost a read per snapshot forever).
pub const LOCKS_READS: usize = 8;

/// The observations of the processes in `samples`, with each thread's `doing` left empty.
pub fn observe(samples: &[ProcessSample]) -> Observations {
    let mut processes: Vec<ProcObs> = samples.iter().map(observe_process).collect();
    let waits = |processes: &[ProcObs], f: fn(&Blocked) -> bool| {
        processes
            .iter()
            .flat_map(|p| &p.threads)
            .any(|t| t.blocked.as_ref().is_some_and(f))
    };
    // Only waits that need them make the fds and /proc/locks worth reading.
    let mut peers = BTreeMap::new();
    if waits(&processes, |b| {
        matches!(b, Blocked::Read { .. } | Blocked::Write { .. })
    }) {
        for p in &mut processes {
            (p.pipes, p.sockets) = fd_ends(p.pid);
        }
        peers = socket_peers(&processes);
    }
    for i in 0..processes.len() {
        if let [t] = processes[i].threads.as_slice()
            && let Some(Blocked::Futex { private: true, .. }) = t.blocked
        {
            let pid = processes[i].pid;
            let others = processes.iter().map(|q| q.pid).filter(|&q| q != pid);
            processes[i].shares_memory = shares_memory(pid, others);
        }
    }
    if waits(&processes, |b| matches!(b, Blocked::Semaphore { .. })) {
        for p in &mut processes {
            semaphores(p);
        }
    }
    let lock_waiters: Vec<i32> = processes
        .iter()
        .filter(|p| {
            p.threads
                .iter()
                .any(|t| matches!(t.blocked, Some(Blocked::FileLock)))
        })
        .map(|p| p.pid)
        .collect();
    let locks = if lock_waiters.is_empty() {
        Vec::new()
    } else {
        file_locks(&lock_waiters, || fs::read_to_string("/proc/locks").ok())
    };
    Observations {
        processes,
        locks,
        peers,
    }
}

fn observe_process(p: &ProcessSample) -> ProcObs {
    let pid = p.stat.pid;
    let threads = p
        .threads
        .iter()
        .map(|t| ThreadObs {
            tid: t.tid,
            ns_tid: ns_pid(&format!("/proc/{pid}/task/{}/status", t.tid)),
            name: t.comm.clone(),
            main: t.tid == pid,
            state: t.state,
            doing: String::new(),
            blocked: match (&t.syscall, t.state) {
                (Some(SyscallState::In { nr, args }), 'S' | 'D') => blocked(pid, t.tid, *nr, args),
                _ => None,
            },
        })
        .collect();
    ProcObs {
        pid,
        ppid: p.stat.ppid,
        ns_pid: ns_pid(&format!("/proc/{pid}/status")),
        name: p.stat.comm.clone(),
        state: p.stat.state,
        threads,
        pipes: Vec::new(),
        sockets: Vec::new(),
        shares_memory: None,
    }
}

/// The innermost pid of a `status` file's `NSpid:` line.
fn ns_pid(status_path: &str) -> Option<i32> {
    parse_ns_pid(&fs::read_to_string(status_path).ok()?)
}

/// The last (innermost namespace's) pid of `NSpid:`.
pub fn parse_ns_pid(status: &str) -> Option<i32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_ascii_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The wait a thread of `pid` blocked in syscall `nr` is in, as far as the graph follows it.
fn blocked(pid: i32, tid: i32, nr: u64, args: &[u64; 6]) -> Option<Blocked> {
    let fd = args[0] as i64 as i32;
    match syscall::name(nr)? {
        "futex" => {
            let kind = match args[1] & FUTEX_CMD_MASK & 0xffff_ffff {
                0 | 9 => FutexWait::Plain,
                6 | 13 => FutexWait::Pi,
                11 => FutexWait::RequeuePi,
                _ => return None,
            };
            let private = args[1] & FUTEX_PRIVATE_FLAG != 0;
            let mut f = futex(pid, args[0], kind, private, args[2] as u32);
            if let Blocked::Futex { on_stack, addr, .. } = &mut f {
                *on_stack = stack_pointer(pid, tid)
                    .is_some_and(|sp| *addr >= sp && *addr - sp < STACK_FRAMES);
            }
            Some(f)
        }
        // futex2's FUTEX2_PRIVATE is 128 too.
        "futex_wait" => Some(futex(
            pid,
            args[0],
            FutexWait::Plain,
            args[3] & FUTEX_PRIVATE_FLAG != 0,
            args[1] as u32,
        )),
        "futex_waitv" => {
            let n = args[1].min(FUTEX_WAITV_MAX) as usize;
            let bytes = read_memory(pid, args[0], n * 24)?;
            Some(Blocked::Futexes(waitv_addrs(&bytes)))
        }
        "read" | "readv" | "pread64" | "preadv" | "preadv2" | "recvfrom" | "recvmsg"
        | "recvmmsg" => Some(Blocked::Read { fd }),
        "write" | "writev" | "pwrite64" | "pwritev" | "pwritev2" | "sendto" | "sendmsg"
        | "sendmmsg" => Some(Blocked::Write { fd }),
        "wait4" => Some(Blocked::Children((fd > 0).then_some(fd))),
        // waitid(P_PID = 1, id, ...); P_ALL, P_PGID and P_PIDFD: any child.
        "waitid" => Some(Blocked::Children(
            (args[0] == 1).then_some(args[1] as i64 as i32),
        )),
        "semop" | "semtimedop" => {
            let n = args[2].min(SEMOPS_MAX) as usize;
            let ops = read_memory(pid, args[1], n * 6).map_or_else(Vec::new, |b| sem_waits(&b));
            Some(Blocked::Semaphore {
                set: args[0] as i32,
                ns: 0,
                key: None,
                ops,
            })
        }
        "flock" => Some(Blocked::FileLock),
        "fcntl" if FCNTL_WAITS.contains(&args[1]) => Some(Blocked::FileLock),
        _ => None,
    }
}

/// A futex wait with the five `int`s at `addr` (a glibc mutex's `__data`), or as many as can be
/// read (the word alone at the end of a mapping).
fn futex(pid: i32, addr: u64, kind: FutexWait, private: bool, val: u32) -> Blocked {
    let words = read_memory(pid, addr, 20)
        .or_else(|| read_memory(pid, addr, 4))
        .map(|b| {
            b.chunks_exact(4)
                .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .unwrap_or_default();
    Blocked::Futex {
        addr,
        kind,
        private,
        val,
        words,
        on_stack: false,
    }
}

/// Whether process `pid` shares its memory (`CLONE_VM`) with any of `others`, by `kcmp`;
/// `None` when a comparison fails (no `kcmp` in this kernel, a process gone).
fn shares_memory(pid: i32, others: impl Iterator<Item = i32>) -> Option<bool> {
    const KCMP_VM: libc::c_long = 1;
    let mut shares = false;
    for other in others {
        // SAFETY: kcmp takes integers only.
        let rc = unsafe { libc::syscall(libc::SYS_kcmp, pid, other, KCMP_VM, 0, 0) };
        match rc {
            0 => shares = true,
            1 | 2 => {}
            _ => return None,
        }
    }
    Some(shares)
}

/// The semaphores a `semop`'s `struct sembuf`s (u16 num, i16 op, i16 flags) can wait on: a
/// decrement or a wait for zero, without `IPC_NOWAIT`.
pub fn sem_waits(bytes: &[u8]) -> Vec<SemWait> {
    let mut out: Vec<SemWait> = Vec::new();
    for c in bytes.chunks_exact(6) {
        let num = u16::from_ne_bytes([c[0], c[1]]);
        let op = i16::from_ne_bytes([c[2], c[3]]);
        let flags = i16::from_ne_bytes([c[4], c[5]]);
        if op <= 0 && i32::from(flags) & libc::IPC_NOWAIT == 0 && !out.iter().any(|w| w.num == num)
        {
            out.push(SemWait {
                num,
                op,
                value: None,
                last_pid: None,
            });
        }
    }
    out
}

/// Fills in what is visible of the sets `p`'s threads wait on, from inside its IPC namespace.
fn semaphores(p: &mut ProcObs) {
    let Ok(ns) = fs::metadata(format!("/proc/{}/ns/ipc", p.pid)) else {
        return;
    };
    let threads = &mut p.threads;
    in_namespace(p.pid, "ipc", libc::CLONE_NEWIPC, move || {
        for t in threads.iter_mut() {
            let Some(Blocked::Semaphore {
                set,
                ns: at,
                key,
                ops,
            }) = &mut t.blocked
            else {
                continue;
            };
            *at = ns.ino();
            *key = sem_key(*set);
            for w in ops.iter_mut() {
                let num = libc::c_int::from(w.num);
                // SAFETY: semctl with GETVAL and GETPID takes no pointer argument.
                let (value, pid) = unsafe {
                    (
                        libc::semctl(*set, num, libc::GETVAL),
                        libc::semctl(*set, num, libc::GETPID),
                    )
                };
                w.value = (value >= 0).then_some(value);
                // 0: no semop has changed it since the set was made.
                w.last_pid = (pid >= 0).then_some(pid);
            }
        }
    });
}

/// The key of set `id` in the calling thread's IPC namespace (`None`: gone, or not readable).
fn sem_key(id: i32) -> Option<i32> {
    // SAFETY: a zeroed semid_ds is a valid value of a plain C struct.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one semid_ds through the pointer, which points at `ds`.
    let r = unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) };
    (r == 0).then_some(ds.sem_perm.__key)
}

/// The stack pointer of a thread blocked in a syscall (the next to last field of `syscall`).
fn stack_pointer(pid: i32, tid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    let sp = fields.get(7)?;
    u64::from_str_radix(sp.strip_prefix("0x")?, 16).ok()
}

/// The `uaddr` of each `struct futex_waitv` (u64 val, u64 uaddr, u32 flags, u32 reserved).
pub fn waitv_addrs(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(24)
        .map(|c| u64::from_ne_bytes(c[8..16].try_into().unwrap_or_default()))
        .collect()
}

/// The pipe fds of process `pid` with the access of each.
pub fn pipe_ends(pid: i32) -> Vec<PipeEnd> {
    fd_ends(pid).0
}

/// The pipe fds of process `pid` with the access of each, and its socket fds.
fn fd_ends(pid: i32) -> (Vec<PipeEnd>, Vec<SocketEnd>) {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (Vec::new(), Vec::new());
    };
    let (mut pipes, mut sockets) = (Vec::new(), Vec::new());
    for entry in dir.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(link) = fs::read_link(entry.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        if let Some(inode) = parse_socket_link(&link) {
            sockets.push(SocketEnd { fd, inode });
            continue;
        }
        let Some(inode) = parse_pipe_link(&link) else {
            continue;
        };
        let Some(flags) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
            .ok()
            .and_then(|i| parse_fdinfo_flags(&i))
        else {
            continue;
        };
        let access = flags & libc::O_ACCMODE as u32;
        pipes.push(PipeEnd {
            fd,
            inode,
            read: access != libc::O_WRONLY as u32,
            write: access != libc::O_RDONLY as u32,
        });
    }
    pipes.sort_by_key(|e| e.fd);
    sockets.sort_by_key(|e| e.fd);
    (pipes, sockets)
}

/// The inode of a `socket:[N]` fd link.
pub fn parse_socket_link(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The peer inode of each socket a thread of `processes` is blocked reading or writing, for the
/// unix stream and seqpacket sockets sock_diag knows (in the waiter's network namespace).
fn socket_peers(processes: &[ProcObs]) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for p in processes {
        let inodes: Vec<u64> = p
            .threads
            .iter()
            .filter_map(|t| match t.blocked {
                Some(Blocked::Read { fd } | Blocked::Write { fd }) => Some(fd),
                _ => None,
            })
            .filter_map(|fd| p.sockets.iter().find(|s| s.fd == fd).map(|s| s.inode))
            .filter(|i| !out.contains_key(i))
            .collect();
        if inodes.is_empty() {
            continue;
        }
        let peers = in_namespace(p.pid, "net", libc::CLONE_NEWNET, || {
            let Some(diag) = sock_diag() else {
                return Vec::new();
            };
            inodes
                .iter()
                .filter_map(|&i| unix_peer(&diag, i).map(|peer| (i, peer)))
                .collect()
        });
        out.extend(peers.unwrap_or_default());
    }
    out
}

/// `f`'s result, run in `pid`'s namespace of kind `name` (`CLONE_NEWNET` for `net`...): here
/// when it is this thread's own, else on a thread that joins it and then ends. `None` when the
/// namespace cannot be joined.
pub(crate) fn in_namespace<T: Send>(
    pid: i32,
    name: &str,
    flag: libc::c_int,
    f: impl FnOnce() -> T + Send,
) -> Option<T> {
    let theirs = fs::metadata(format!("/proc/{pid}/ns/{name}")).ok()?;
    let ours = fs::metadata(format!("/proc/thread-self/ns/{name}")).ok()?;
    if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        return Some(f());
    }
    let ns = fs::File::open(format!("/proc/{pid}/ns/{name}")).ok()?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on a namespace fd this thread owns; it changes this thread only,
            // which ends right after `f`.
            (unsafe { libc::setns(ns.as_raw_fd(), flag) } == 0).then(f)
        })
        .join()
        .ok()
        .flatten()
    })
}

/// A `NETLINK_SOCK_DIAG` socket.
fn sock_diag() -> Option<OwnedFd> {
    // SAFETY: socket takes integers; a new fd is owned here.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    // SAFETY: a fresh fd, owned by nothing else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_PEER: u32 = 4;
const UNIX_DIAG_PEER: u16 = 2;

/// The `unix_diag_req` of one socket (`udiag_ino`), asking for its peer, with no cookie.
fn unix_diag_request(inode: u32) -> [u8; 40] {
    let mut req = [0u8; 40];
    req[0..4].copy_from_slice(&40u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&inode.to_ne_bytes());
    req[16] = libc::AF_UNIX as u8;
    // udiag_states: all; udiag_ino; udiag_show; the cookie INET_DIAG_NOCOOKIE (all ones).
    req[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
    req[24..28].copy_from_slice(&inode.to_ne_bytes());
    req[28..32].copy_from_slice(&UDIAG_SHOW_PEER.to_ne_bytes());
    req[32..40].fill(0xff);
    req
}

/// The peer of unix socket `inode` when it is a stream or seqpacket socket (a datagram socket
/// may hear from anyone that sends to it: no one peer to wait for).
fn unix_peer(diag: &OwnedFd, inode: u64) -> Option<u64> {
    let req = unix_diag_request(u32::try_from(inode).ok()?);
    // SAFETY: sending a live buffer of its length on our own socket.
    let sent = unsafe { libc::send(diag.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent != req.len() as isize {
        return None;
    }
    let mut buf = [0u8; 1024];
    // The kernel answers a request in the call that sends it: never wait for it.
    // SAFETY: receiving into a live buffer of its length.
    let n = unsafe {
        libc::recv(
            diag.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    parse_unix_diag(buf.get(..usize::try_from(n).ok()?)?, inode)
}

/// The peer in a sock_diag answer about unix socket `inode` (`nlmsghdr`, `unix_diag_msg`, then
/// attributes), for a stream or seqpacket socket.
pub fn parse_unix_diag(msg: &[u8], inode: u64) -> Option<u64> {
    let u16_at = |at: usize| Some(u16::from_ne_bytes(msg.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_ne_bytes(msg.get(at..at + 4)?.try_into().ok()?));
    let len = (u32_at(0)? as usize).min(msg.len());
    let kind = i32::from(*msg.get(17)?);
    if u16_at(4)? != SOCK_DIAG_BY_FAMILY
        || u64::from(u32_at(20)?) != inode
        || (kind != libc::SOCK_STREAM && kind != libc::SOCK_SEQPACKET)
    {
        return None;
    }
    let mut at = 32;
    while at + 4 <= len {
        let attr_len = u16_at(at)? as usize;
        if attr_len < 4 {
            return None;
        }
        if u16_at(at + 2)? == UNIX_DIAG_PEER {
            return u32_at(at + 4).map(u64::from).filter(|&p| p != 0);
        }
        at += (attr_len + 3) & !3;
    }
    None
}

/// The inode of a `pipe:[N]` fd link.
pub fn parse_pipe_link(link: &str) -> Option<u64> {
    link.strip_prefix("pipe:[")?.strip_suffix(']')?.parse().ok()
}

/// The `flags:` (octal) of an fdinfo.
pub fn parse_fdinfo_flags(fdinfo: &str) -> Option<u32> {
    let octal = fdinfo.lines().find_map(|l| l.strip_prefix("flags:"))?;
    u32::from_str_radix(octal.trim(), 8).ok()
}

/// The entries of `/proc/locks` (as `read` returns it) that show each of `waiters` blocked,
/// merged over up to [`LOCKS_READS`] reads (the module doc says why one read is not enough).
pub fn file_locks(waiters: &[i32], mut read: impl FnMut() -> Option<String>) -> Vec<FileLock> {
    let mut locks: Vec<FileLock> = Vec::new();
    for _ in 0..LOCKS_READS {
        let Some(text) = read() else {
            break;
        };
        merge_locks(&mut locks, parse_locks(&text));
        if waiters
            .iter()
            .all(|w| locks.iter().any(|l| l.blocked.contains(w)))
        {
            break;
        }
    }
    locks
}

/// Adds to `into` the locks of `more` it lacks, and to each lock the waiters it lacks (a lock
/// is its class, file and holder).
fn merge_locks(into: &mut Vec<FileLock>, more: Vec<FileLock>) {
    for lock in more {
        let same = |l: &&mut FileLock| {
            l.class == lock.class && l.file == lock.file && l.holder == lock.holder
        };
        match into.iter_mut().find(same) {
            Some(known) => {
                for pid in lock.blocked {
                    if !known.blocked.contains(&pid) {
                        known.blocked.push(pid);
                    }
                }
            }
            None => into.push(lock),
        }
    }
}

/// Parses `/proc/locks`: `N: CLASS MODE ACCESS PID MAJ:MIN:INODE START END` per lock, each
/// followed by the locks blocked behind it as `N: -> ...` (deeper ones indented further: a
/// blocked lock can itself block others).
pub fn parse_locks(text: &str) -> Vec<FileLock> {
    let mut out: Vec<FileLock> = Vec::new();
    // Blocked entries (at any depth) wait for the lock their tree starts at: its holder is who
    // they wait for.
    let mut held: Option<usize> = None;
    for line in text.lines() {
        let Some((_, rest)) = line.split_once(':') else {
            continue;
        };
        // `N: ` then, for a blocked entry, `->` padded on the left by its depth less one.
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let (blocked, fields) = match rest.split_once("->") {
            Some((pad, fields)) if pad.bytes().all(|b| b == b' ') => (true, fields),
            _ => (false, rest),
        };
        let f: Vec<&str> = fields.split_ascii_whitespace().collect();
        let (Some(class), Some(pid), Some(file)) = (f.first(), f.get(3), f.get(4)) else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        if !blocked {
            out.push(FileLock {
                class: class.to_string(),
                file: file.to_string(),
                holder: pid,
                blocked: Vec::new(),
            });
            held = Some(out.len() - 1);
        } else if let Some(i) = held {
            out[i].blocked.push(pid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_are_read_again_until_every_waiter_is_listed() {
        let a = "1: FLOCK  ADVISORY  WRITE 10 00:01:5 0 EOF\n\
                 1: -> FLOCK  ADVISORY  WRITE 11 00:01:5 0 EOF\n";
        // The first read skipped the entry that shows 10 waiting behind 11.
        let b = "7: FLOCK  ADVISORY  WRITE 99 00:01:9 0 EOF\n\
                 8: FLOCK  ADVISORY  WRITE 11 00:01:6 0 EOF\n\
                 8: -> FLOCK  ADVISORY  WRITE 10 00:01:6 0 EOF\n\
                 9: FLOCK  ADVISORY  WRITE 10 00:01:5 0 EOF\n\
                 9: -> FLOCK  ADVISORY  WRITE 11 00:01:5 0 EOF\n";
        let mut reads = vec![a, b, a].into_iter();
        let mut count = 0;
        let locks = file_locks(&[10, 11], || {
            count += 1;
            reads.next().map(String::from)
        });
        assert_eq!(count, 2, "stops once both waiters are listed");
        let held: Vec<(i32, &[i32])> = locks.iter().map(|l| (l.holder, &l.blocked[..])).collect();
        assert_eq!(held, [(10, &[11][..]), (99, &[][..]), (11, &[10][..])]);
    }

    #[test]
    fn a_waiter_never_listed_costs_a_bounded_number_of_reads() {
        let mut count = 0;
        let locks = file_locks(&[10], || {
            count += 1;
            Some("1: FLOCK  ADVISORY  WRITE 12 00:01:5 0 EOF\n".to_string())
        });
        assert_eq!(count, LOCKS_READS);
        assert_eq!(locks.len(), 1, "the same entry each time is kept once");
        assert_eq!(file_locks(&[10], || None), Vec::new());
    }

    #[test]
    fn parses_locks_with_their_waiters() {
        let text = "1: FLOCK  ADVISORY  WRITE 10727 fe:00:5374059 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 1875 fe:00:5308999 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 10686 fe:00:5308999 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 10690 fe:00:5308999 0 EOF\n\
                    3: POSIX  ADVISORY  WRITE 7 00:2e:99 0 EOF\n\
                    3: -> POSIX  ADVISORY  WRITE 8 00:2e:99 0 EOF\n\
                    3:  -> POSIX  ADVISORY  WRITE 9 00:2e:99 0 EOF\n\
                    garbage\n";
        let locks = parse_locks(text);
        assert_eq!(locks.len(), 3);
        assert_eq!(locks[0].holder, 10727);
        assert!(locks[0].blocked.is_empty());
        assert_eq!(locks[1].class, "FLOCK");
        assert_eq!(locks[1].file, "fe:00:5308999");
        assert_eq!(locks[1].blocked, vec![10686, 10690]);
        // 9 is blocked behind 8's request, which waits on 7's lock: both wait for that lock.
        assert_eq!(locks[2].blocked, vec![8, 9]);
    }

    #[test]
    fn parses_ns_pids_pipes_and_flags() {
        assert_eq!(parse_ns_pid("Name:\tx\nNSpid:\t12345\t7\n"), Some(7));
        assert_eq!(parse_ns_pid("NSpid:\t42\n"), Some(42));
        assert_eq!(parse_ns_pid("Name:\tx\n"), None);
        assert_eq!(parse_pipe_link("pipe:[4711]"), Some(4711));
        assert_eq!(parse_pipe_link("socket:[4711]"), None);
        assert_eq!(
            parse_fdinfo_flags("pos:\t0\nflags:\t0100001\nmnt_id:\t15\n"),
            Some(0o100001)
        );
        let mut waitv = vec![0u8; 48];
        waitv[8..16].copy_from_slice(&0x1000u64.to_ne_bytes());
        waitv[32..40].copy_from_slice(&0x2000u64.to_ne_bytes());
        assert_eq!(waitv_addrs(&waitv), vec![0x1000, 0x2000]);
    }

    #[test]
    fn observes_its_own_pipe_ends() {
        let (r, w) = nix::unistd::pipe().unwrap();
        use std::os::fd::AsRawFd;
        let ends = pipe_ends(std::process::id() as i32);
        let find = |fd: i32| ends.iter().find(|e| e.fd == fd).copied().unwrap();
        let (re, we) = (find(r.as_raw_fd()), find(w.as_raw_fd()));
        assert_eq!(re.inode, we.inode);
        assert!(re.read && !re.write);
        assert!(we.write && !we.read);
    }

    #[test]
    fn finds_the_peer_of_its_own_socketpair_and_not_of_a_datagram_one() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        use std::os::unix::fs::MetadataExt;
        let inode = |fd: &OwnedFd| {
            fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .unwrap()
                .ino()
        };
        let Some(diag) = sock_diag() else {
            eprintln!("no NETLINK_SOCK_DIAG here: skipped");
            return;
        };
        for (kind, peered) in [(SockType::Stream, true), (SockType::Datagram, false)] {
            let (a, b) = socketpair(AddressFamily::Unix, kind, None, SockFlag::empty()).unwrap();
            let want = peered.then(|| inode(&b));
            assert_eq!(unix_peer(&diag, inode(&a)), want, "{kind:?}");
        }
        assert_eq!(parse_socket_link("socket:[4711]"), Some(4711));
        assert_eq!(parse_socket_link("pipe:[4711]"), None);
    }

    #[test]
    fn parses_semaphore_waits_and_set_keys() {
        let op = |num: u16, op: i16, flags: i16| {
            [num.to_ne_bytes(), op.to_ne_bytes(), flags.to_ne_bytes()].concat()
        };
        let bytes = [
            op(0, -1, 0),
            op(1, 1, 0),
            op(2, 0, 0),
            op(3, -1, libc::IPC_NOWAIT as i16),
            op(0, -2, 0),
        ]
        .concat();
        let waits: Vec<(u16, i16)> = sem_waits(&bytes).iter().map(|w| (w.num, w.op)).collect();
        // A post and an IPC_NOWAIT never wait; semaphore 0 once.
        assert_eq!(waits, vec![(0, -1), (2, 0)]);
    }

    #[test]
    fn reads_a_semaphore_sets_key() {
        // A key no other test uses; the set is removed before the asserts.
        let key = 0x5745_4447;
        // SAFETY: semget and semctl(IPC_RMID) take integers.
        let id = unsafe { libc::semget(key, 1, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "semget: {}", std::io::Error::last_os_error());
        let got = sem_key(id);
        // SAFETY: as above.
        unsafe { libc::semctl(id, 0, libc::IPC_RMID) };
        assert_eq!(got, Some(key));
        assert_eq!(sem_key(id), None, "a removed set has no key");
    }
}
