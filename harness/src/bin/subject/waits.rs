//! wedge-subject's wait-for subjects: each hangs in one known shape, so the wait-for graph's
//! edges and cycle are known exactly (engine_waitfor.rs). Every one holds its first resource
//! before anyone asks for a second (barriers and pipes, never sleeps), so each hangs every time.

use std::cell::UnsafeCell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Barrier};

use super::{fail, say};

/// The modes this module runs.
pub const MODES: [&str; 12] = [
    "pthread-abba",
    "pthread-cycle3",
    "pi-abba",
    "flock-abba",
    "pipe-cycle",
    "socket-cycle",
    "sysv-sem",
    "fork-locked",
    "stopped-child",
    "itimer-tick",
    "uring-timeout",
    "uring-empty",
];

/// Runs `mode`, one of [`MODES`].
pub fn run(mode: &str) -> ! {
    match mode {
        "pthread-abba" => mutex_ring(&["abba-a", "abba-b"], false),
        "pthread-cycle3" => mutex_ring(&["ring-0", "ring-1", "ring-2"], false),
        "pi-abba" => mutex_ring(&["pi-a", "pi-b"], true),
        "flock-abba" => flock_abba(),
        "pipe-cycle" => pipe_cycle(),
        "socket-cycle" => socket_cycle(),
        "sysv-sem" => sysv_sem(),
        "fork-locked" => fork_locked(),
        "stopped-child" => stopped_child(),
        "uring-timeout" => uring_timeout(1500, 2),
        "uring-empty" => uring_timeout(0, 1),
        _ => itimer_tick(),
    }
}

/// A glibc `pthread_mutex_t` shared between threads.
struct PMutex(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: a pthread mutex is made to be used from several threads at once; it is only touched
// through pthread calls.
unsafe impl Sync for PMutex {}

impl PMutex {
    /// A leaked mutex, priority-inheriting (`PTHREAD_PRIO_INHERIT`) when `pi`.
    fn new(pi: bool) -> &'static PMutex {
        let m: &'static PMutex = Box::leak(Box::new(PMutex(UnsafeCell::new(
            libc::PTHREAD_MUTEX_INITIALIZER,
        ))));
        // SAFETY: initialising a fresh mutex with a valid, initialised attribute object.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            libc::pthread_mutexattr_init(&mut attr);
            if pi {
                libc::pthread_mutexattr_setprotocol(&mut attr, libc::PTHREAD_PRIO_INHERIT);
            }
            if libc::pthread_mutex_init(m.0.get(), &attr) != 0 {
                fail("pthread_mutex_init");
            }
        }
        m
    }

    fn lock(&self) {
        // SAFETY: an initialised mutex that lives forever.
        if unsafe { libc::pthread_mutex_lock(self.0.get()) } != 0 {
            fail("pthread_mutex_lock");
        }
    }
}

/// Threads `names[i]` each lock mutex `i`, then (once all hold theirs) mutex `i + 1` around the
/// ring: with two, an ABBA deadlock; with three, a three-thread cycle. The main thread joins the
/// first.
pub fn mutex_ring(names: &[&str], pi: bool) -> ! {
    let mutexes: Vec<&'static PMutex> = names.iter().map(|_| PMutex::new(pi)).collect();
    let barrier = Arc::new(Barrier::new(names.len()));
    let mut threads = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (first, second) = (mutexes[i], mutexes[(i + 1) % names.len()]);
        let barrier = Arc::clone(&barrier);
        let t = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                first.lock();
                barrier.wait();
                second.lock();
            })
            .unwrap_or_else(|_| fail("spawn"));
        threads.push(t);
    }
    say("locking");
    for t in threads {
        let _ = t.join();
    }
    say("impossible: no deadlock");
    std::process::exit(3);
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe().unwrap_or_else(|_| fail("pipe"))
}

fn write_byte(fd: &OwnedFd) {
    // SAFETY: writing one byte from a live buffer.
    if unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) } != 1 {
        fail("write");
    }
}

fn read_byte(fd: &OwnedFd) -> isize {
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a live buffer.
    unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 1) }
}

fn fork() -> libc::pid_t {
    // SAFETY: the subject is single-threaded here; the child only makes plain syscalls.
    match unsafe { libc::fork() } {
        -1 => fail("fork"),
        pid => pid,
    }
}

/// An exclusive `flock` on `fd`, blocking.
fn flock(fd: i32) {
    // SAFETY: flock takes integers.
    if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
        fail("flock");
    }
}

/// Its own open file description of the file behind `fd` (flock locks belong to those).
fn reopen(fd: i32) -> i32 {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default();
    // SAFETY: a valid path string.
    match unsafe { libc::open(path.as_ptr(), libc::O_RDWR) } {
        -1 => fail("open"),
        fd => fd,
    }
}

fn memfd(name: &std::ffi::CStr) -> i32 {
    // SAFETY: a valid name; the fd is this process's.
    match unsafe { libc::memfd_create(name.as_ptr(), 0) } {
        -1 => fail("memfd_create"),
        fd => fd,
    }
}

/// Two processes, two files (memfds, so nothing is left in the trial's directory): the parent
/// locks A, the child B, then each asks for the other's. `flock` has no deadlock detection.
pub fn flock_abba() -> ! {
    let (a, b) = (memfd(c"lock-a"), memfd(c"lock-b"));
    let (child_holds, parent_holds) = (pipe(), pipe());
    if fork() == 0 {
        let (a, b) = (reopen(a), reopen(b));
        flock(b);
        write_byte(&child_holds.1);
        read_byte(&parent_holds.0);
        flock(a);
        std::process::exit(3);
    }
    let (a, b) = (reopen(a), reopen(b));
    flock(a);
    read_byte(&child_holds.0);
    write_byte(&parent_holds.1);
    say("locking");
    flock(b);
    say("impossible: no deadlock");
    std::process::exit(3);
}

/// Two processes, each reading the pipe only the other writes, with every other end closed.
pub fn pipe_cycle() -> ! {
    let (to_parent, to_child) = (pipe(), pipe());
    if fork() == 0 {
        drop(to_parent.0);
        drop(to_child.1);
        let n = read_byte(&to_child.0);
        write_byte(&to_parent.1);
        std::process::exit(if n == 1 { 0 } else { 3 });
    }
    drop(to_parent.1);
    drop(to_child.0);
    say("reading");
    let n = read_byte(&to_parent.0);
    write_byte(&to_child.1);
    say(&format!("impossible: read returned {n}"));
    std::process::exit(3);
}

fn socketpair() -> (OwnedFd, OwnedFd) {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType};
    nix::sys::socket::socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::empty(),
    )
    .unwrap_or_else(|_| fail("socketpair"))
}

/// Two processes and two socketpairs: the parent keeps one end of each, the child the other;
/// the parent `recv`s on its end of the first, the child `read`s its end of the second, and
/// neither ever writes.
pub fn socket_cycle() -> ! {
    let (first, second) = (socketpair(), socketpair());
    if fork() == 0 {
        drop(first.0);
        drop(second.1);
        let n = read_byte(&second.0);
        std::process::exit(if n == 1 { 0 } else { 3 });
    }
    drop(first.1);
    drop(second.0);
    say("receiving");
    let mut b = [0u8; 1];
    // SAFETY: receiving one byte into a live buffer.
    let n = unsafe { libc::recv(first.0.as_raw_fd(), b.as_mut_ptr().cast(), 1, 0) };
    say(&format!("impossible: recv returned {n}"));
    std::process::exit(3);
}

/// `semop` on set `set`: one operation `op` on semaphore `num`; `timed` through `semtimedop`
/// with no timeout (what glibc's `semop` may also be).
fn semop(set: i32, num: u16, op: i16, timed: bool) {
    let mut buf = libc::sembuf {
        sem_num: num,
        sem_op: op,
        sem_flg: 0,
    };
    // SAFETY: one live sembuf; a null timeout waits without limit.
    let rc = unsafe {
        if timed {
            libc::syscall(
                libc::SYS_semtimedop,
                set,
                &mut buf as *mut libc::sembuf,
                1usize,
                std::ptr::null::<libc::timespec>(),
            ) as i32
        } else {
            libc::semop(set, &mut buf, 1)
        }
    };
    if rc != 0 {
        fail("semop");
    }
}

/// In an IPC namespace of its own (its set dies with it, nothing left on the host), a set of
/// two semaphores, both 0. The parent posts and takes semaphore 1 (so it is the last to have
/// changed it), forks a child that waits to take semaphore 0 (`semop`), then waits to take
/// semaphore 1 (`semtimedop`, no timeout). Nobody ever posts either.
pub fn sysv_sem() -> ! {
    if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWIPC).is_err() {
        fail("unshare(CLONE_NEWIPC)");
    }
    // SAFETY: semget takes integers.
    let set = unsafe { libc::semget(libc::IPC_PRIVATE, 2, libc::IPC_CREAT | 0o600) };
    if set < 0 {
        fail("semget");
    }
    semop(set, 1, 1, false);
    semop(set, 1, -1, false);
    if fork() == 0 {
        semop(set, 0, -1, false);
        std::process::exit(3);
    }
    say("waiting");
    semop(set, 1, -1, true);
    say("impossible: semop returned");
    std::process::exit(3);
}

/// A thread (`holder`) locks a glibc mutex and pauses for good; the main thread then forks, and
/// the child locks the same mutex: its copy stays locked by a thread it does not have. The
/// parent waits for the child.
pub fn fork_locked() -> ! {
    let mutex = PMutex::new(false);
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("holder".to_string())
        .spawn(move || {
            mutex.lock();
            let _ = locked_tx.send(());
            loop {
                // SAFETY: pause has no arguments.
                unsafe { libc::pause() };
            }
        })
        .unwrap_or_else(|_| fail("spawn"));
    if locked_rx.recv().is_err() {
        fail("holder");
    }
    // SAFETY: the child only locks the mutex (a futex wait) and exits.
    let child = match unsafe { libc::fork() } {
        -1 => fail("fork"),
        pid => pid,
    };
    if child == 0 {
        mutex.lock();
        // SAFETY: _exit takes an integer; no destructors in a forked copy.
        unsafe { libc::_exit(3) };
    }
    say("waiting");
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    say("impossible: the child ended");
    std::process::exit(3);
}

/// The parent waits (without `WUNTRACED`) for a child that stops itself.
pub fn stopped_child() -> ! {
    let child = fork();
    if child == 0 {
        // SAFETY: raise takes an integer.
        unsafe { libc::raise(libc::SIGSTOP) };
        std::process::exit(0);
    }
    say("waiting");
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    say("impossible: the child ended");
    std::process::exit(3);
}

extern "C" fn on_tick(_: libc::c_int) {}

/// A periodic `ITIMER_REAL` (every 200 ms) with a handler that does nothing, and `pause()`
/// forever: always woken, never progressing (the shape of a supervisor's 1 s tick).
pub fn itimer_tick() -> ! {
    let every = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    let timer = libc::itimerval {
        it_interval: every,
        it_value: every,
    };
    // SAFETY: an empty handler, and setitimer with a valid struct.
    unsafe {
        libc::signal(libc::SIGALRM, on_tick as *const () as libc::sighandler_t);
        if libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) != 0 {
            fail("setitimer");
        }
    }
    say("ticking");
    loop {
        // SAFETY: pause has no arguments.
        unsafe { libc::pause() };
    }
}

/// `struct io_uring_params` (x86_64), with the ring offsets the kernel fills in.
#[repr(C)]
#[derive(Default)]
struct UringParams {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    /// `io_sqring_offsets`: head, tail, ring_mask, ring_entries, flags, dropped, array, resv1,
    /// then a u64.
    sq_off: [u32; 10],
    /// `io_cqring_offsets`: head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1,
    /// then a u64.
    cq_off: [u32; 10],
}

const IORING_OP_TIMEOUT: u8 = 11;
const IORING_ENTER_GETEVENTS: u32 = 1;
const IORING_OFF_SQES: i64 = 0x1000_0000;
const IORING_OFF_CQ_RING: i64 = 0x800_0000;

fn map(fd: i32, len: usize, offset: i64) -> *mut u8 {
    // SAFETY: mapping a ring region of the size the kernel reported.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        fail("mmap ring");
    }
    p.cast()
}

/// An io_uring of 4 entries: submits `IORING_OP_TIMEOUT`s of `ms` (if any) and waits for each
/// in `io_uring_enter(GETEVENTS)`, `times` times, then exits 0; with no timeout (`ms` = 0) it
/// waits on an empty ring, forever.
pub fn uring_timeout(ms: u64, times: u32) -> ! {
    let mut params = UringParams::default();
    // SAFETY: io_uring_setup fills the params struct it is given.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, &mut params) } as i32;
    if fd < 0 {
        fail("io_uring_setup");
    }
    let sq_len = params.sq_off[6] as usize + params.sq_entries as usize * 4;
    let cq_len = params.cq_off[5] as usize + params.cq_entries as usize * 16;
    let sq = map(fd, sq_len, 0);
    let cq = map(fd, cq_len, IORING_OFF_CQ_RING);
    let sqes = map(fd, params.sq_entries as usize * 64, IORING_OFF_SQES);
    let at = |base: *mut u8, off: u32| -> &'static std::sync::atomic::AtomicU32 {
        // SAFETY: an offset the kernel gave into a live, aligned shared mapping.
        unsafe { &*(base.add(off as usize) as *const std::sync::atomic::AtomicU32) }
    };
    let (sq_tail, cq_head, cq_tail) = (
        at(sq, params.sq_off[1]),
        at(cq, params.cq_off[0]),
        at(cq, params.cq_off[1]),
    );
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    say("waiting");
    for _ in 0..times.max(1) {
        let submit = u32::from(ms > 0);
        if ms > 0 {
            let tail = sq_tail.load(std::sync::atomic::Ordering::Acquire);
            let idx = tail & (params.sq_entries - 1);
            // SAFETY: writing SQE `idx` (64 bytes) and its array slot, both inside the maps.
            unsafe {
                let sqe = sqes.add(idx as usize * 64);
                std::ptr::write_bytes(sqe, 0, 64);
                *sqe = IORING_OP_TIMEOUT;
                *(sqe.add(16) as *mut u64) = &ts as *const libc::timespec as u64;
                *(sqe.add(24) as *mut u32) = 1;
                *(sq.add(params.sq_off[6] as usize + idx as usize * 4) as *mut u32) = idx;
            }
            sq_tail.store(tail + 1, std::sync::atomic::Ordering::Release);
        }
        // SAFETY: io_uring_enter on our ring, no argument struct.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                fd,
                submit,
                1u32,
                IORING_ENTER_GETEVENTS,
                0usize,
                0usize,
            )
        };
        if rc < 0 {
            fail("io_uring_enter");
        }
        let head = cq_head.load(std::sync::atomic::Ordering::Acquire);
        if cq_tail.load(std::sync::atomic::Ordering::Acquire) == head {
            fail("no completion");
        }
        cq_head.store(head + 1, std::sync::atomic::Ordering::Release);
    }
    say("completed");
    std::process::exit(0);
}
