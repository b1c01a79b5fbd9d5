//! Purpose-built test subjects for wedge's own tests: each mode behaves in one well-defined way.
//!
//! ```text
//! wedge-subject exit [CODE]        print "hello", exit with CODE (default 0)
//! wedge-subject stamp              print CLOCK_MONOTONIC in ns, then exit 0 at once (a bench
//!                                  times from that instant to its supervisor's exit)
//! wedge-subject deadlock           two threads (locker-a, locker-b) deadlock on two mutexes
//! wedge-subject pipe-read          block in read(2) on a pipe nobody writes
//! wedge-subject daemon [--stay|--exit]
//!                                  ignore SIGTERM, double-fork a setsid daemon (wedge-daemon), then
//!                                  pause (--stay, the default) or exit 0 leaving the daemon behind
//! wedge-subject busy               spin on the CPU forever
//! wedge-subject sleep MS           sleep MS milliseconds, then exit 0
//! wedge-subject echo-stdin         copy stdin to stdout until end of file, then exit 0
//! wedge-subject signals            count SIGINTs; on SIGTERM print "TERM after N INT", exit 0;
//!                                  the signals are blocked but in sigsuspend, and after each
//!                                  SIGINT it runs 50 ms with them blocked (a busy handler loop)
//! wedge-subject seccomp-recv       a thread named "supervisor" blocks in
//!                                  ioctl(SECCOMP_IOCTL_NOTIF_RECV) on a listener whose filter
//!                                  user (the main thread) is alive and paused: the shape of a
//!                                  pre-fix wedge-run hang
//! wedge-subject tty-read           on a terminal (as its foreground job) read one line and print
//!                                  "got: LINE"; exit 4 when stdin is not a terminal
//! wedge-subject timerfd-tick       read(2) a timerfd ticking every 1.2 s; after three ticks exit 0
//! wedge-subject timerfd-disarmed   read(2) a timerfd that is never armed
//! wedge-subject epoll-timer        epoll_wait(-1) on a set holding a timerfd firing after 1.5 s
//!                                  and an idle pipe; exit 0 when it fires
//! wedge-subject epoll-disarmed     the same set with the timerfd never armed
//! wedge-subject poll-timer         poll(-1) on a timerfd firing after 1.5 s; exit 0 when it fires
//! wedge-subject poll-disarmed      poll(-1) on a timerfd never armed
//! wedge-subject alarm-pause        catch SIGALRM, alarm(1) and pause(), twice; then exit 0
//! wedge-subject pause-forever      pause() with no handler and no alarm
//! wedge-subject posix-timer        catch SIGUSR1, a CLOCK_MONOTONIC POSIX timer sending it after
//!                                  1.5 s, pause(); exit 0 once it fired
//! wedge-subject exec-from-thread   a thread (execer) that is not the leader reads a line from
//!                                  stdin, then execs `wedge-subject exit 0`; meanwhile the main
//!                                  thread sleeps 1 ms at a time without end
//! wedge-subject posix-timer-disarmed
//!                                  the same handler and timer, never armed, pause() forever
//!
//! Wait-for subjects (engine_waitfor.rs, `subject/waits.rs`): each hangs in one known shape.
//! wedge-subject pthread-abba       threads abba-a, abba-b lock two glibc pthread mutexes in
//!                                  opposite orders; main joins abba-a
//! wedge-subject pthread-cycle3     threads ring-0..2 each hold mutex i and want mutex i+1 mod 3
//! wedge-subject pi-abba            pthread-abba with PTHREAD_PRIO_INHERIT mutexes (pi-a, pi-b)
//! wedge-subject flock-abba         parent and child flock two memfds in opposite orders
//! wedge-subject pipe-cycle         parent and child each read the pipe only the other writes
//! wedge-subject socket-cycle       parent (recv) and child (read) each wait on a unix
//!                                  socketpair end whose peer only the other holds
//! wedge-subject sysv-sem          in an IPC namespace of its own, the parent waits in
//!                                  semtimedop for semaphore 1 of a set (after changing it last)
//!                                  and its child in semop for semaphore 0; nobody posts either
//! wedge-subject fork-logging stdio|raw  a thread logs to stderr without end while main forks 20
//!                                  children in turn; each child writes a line through the
//!                                  stderr lock (stdio) or a bare write(2) (raw); "forked 20"
//! wedge-subject fork-malloc clone|fork  one malloc arena, a thread allocating without end, main
//!                                  makes 20 children in turn with a bare clone or glibc's fork;
//!                                  each child allocates once; "forked 20"
//! wedge-subject fork-mutex take|leave  two threads take turns at a global Mutex without end
//!                                  (made to contend once first); main makes 20 children in turn
//!                                  with a bare clone; each child locks it (take) or not (leave)
//! wedge-subject fork-locked       thread holder locks a pthread mutex and pauses; main forks, the
//!                                  child locks the mutex (held by a thread it does not have), the
//!                                  parent waits for the child
//! wedge-subject stopped-child      the parent waits for a child that stopped itself (SIGSTOP)
//! wedge-subject itimer-tick        a 200 ms ITIMER_REAL with an empty handler, pause() forever
//! wedge-subject uring-timeout      wait twice in io_uring_enter(GETEVENTS) for a 1.5 s
//!                                  IORING_OP_TIMEOUT, then exit 0
//! wedge-subject uring-empty        io_uring_enter(GETEVENTS) on a ring with nothing in flight
//!
//! Hostile subjects (engine_hostile.rs): each attacks wedge or its trial in one way.
//! wedge-subject fork-bomb CAP       every process forks without end; at the first refused fork
//!                                  print "refused at N" (N: the bomb's processes, exact), then
//!                                  keep retrying every 10 ms; a safety stop at CAP processes
//!                                  prints "no limit at CAP" (a host without a pids limit)
//! wedge-subject close-fds exit|hang
//!                                  close every descriptor (0 to the highest), then exit 0 after
//!                                  300 ms (exit) or pause forever (hang)
//! wedge-subject flood STREAM       write to STREAM (stdout, stderr, tty: fd 0) without end
//! wedge-subject detach             setsid(), fork a child that setpgid()s itself away, print
//!                                  "detached SID PGID", both pause
//! wedge-subject unshare-mount      unshare mount, UTS, IPC and network namespaces, make the
//!                                  mounts private, mount a tmpfs on /mnt and bind it on $TMPDIR,
//!                                  set a hostname, print "mounted", pause
//! wedge-subject ignore-signals     ignore every catchable signal, print "ignoring", pause
//! wedge-subject eat-memory CAP_MB  allocate and touch 1 MiB at a time; print "no limit at
//!                                  CAP_MB MiB" and exit 5 if it gets that far
//! wedge-subject kill-parent SIG    send SIG (KILL or STOP) to its parent (the namespace's
//!                                  init, pid 1, when the parent is outside its pid namespace),
//!                                  print "sent to PID: RC", then exit 0 after 300 ms
//! ```

#[path = "subject/races.rs"]
mod races;
#[path = "subject/waits.rs"]
mod waits;

use std::io::{BufRead, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use wedge_core::sync::Mutex;

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

fn usage() -> ! {
    eprintln!(
        "usage: wedge-subject exit [CODE] | stamp | deadlock | pipe-read | daemon [--stay|--exit] | busy | sleep MS | echo-stdin | signals | tty-read | seccomp-recv | timerfd-tick | timerfd-disarmed | epoll-timer | epoll-disarmed | poll-timer | poll-disarmed | alarm-pause | pause-forever | posix-timer | posix-timer-disarmed | pthread-abba | pthread-cycle3 | pi-abba | flock-abba | pipe-cycle | stopped-child | itimer-tick | uring-timeout | uring-empty | fork-logging stdio|raw [--wait-stdin] | fork-malloc clone|fork [--wait-stdin] | fork-mutex take|leave [--wait-stdin] | fork-bomb CAP | close-fds exit|hang | flood stdout|stderr|tty | detach | unshare-mount | ignore-signals | eat-memory CAP_MB | kill-parent KILL|STOP"
    );
    std::process::exit(2);
}

fn deadlock() -> ! {
    let a = Arc::new(Mutex::new(0u32));
    let b = Arc::new(Mutex::new(0u32));
    let barrier = Arc::new(Barrier::new(2));
    let spawn =
        |name: &str, first: Arc<Mutex<u32>>, second: Arc<Mutex<u32>>, barrier: Arc<Barrier>| {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || {
                    let mut g1 = first.lock();
                    // Both threads hold their first lock before either asks for its second: a
                    // deadlock every time, no timing involved.
                    barrier.wait();
                    let mut g2 = second.lock();
                    *g1 += 1;
                    *g2 += 1;
                })
                .unwrap_or_else(|e| {
                    eprintln!("spawn: {e}");
                    std::process::exit(1)
                })
        };
    let t1 = spawn(
        "locker-a",
        Arc::clone(&a),
        Arc::clone(&b),
        Arc::clone(&barrier),
    );
    let t2 = spawn("locker-b", b, a, barrier);
    say("locking");
    let _ = t1.join();
    let _ = t2.join();
    say("impossible: no deadlock");
    std::process::exit(3);
}

fn pipe_read() -> ! {
    let (reader, writer) = match nix::unistd::pipe() {
        Ok((r, w)) => (std::fs::File::from(r), w),
        Err(e) => {
            eprintln!("pipe: {e}");
            std::process::exit(1);
        }
    };
    say("reading");
    let mut buf = [0u8; 16];
    let n = (&reader).read(&mut buf);
    drop(writer);
    say(&format!("impossible: read returned {n:?}"));
    std::process::exit(3);
}

fn daemon(exit_after: bool) -> ! {
    // SAFETY: installing SIG_IGN for SIGTERM has no handler code to be unsafe.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    // SAFETY: fork in a single-threaded process; the children only make async-signal-safe calls
    // (setsid, fork, prctl, write, pause, _exit).
    match unsafe { libc::fork() } {
        -1 => std::process::exit(1),
        0 => {
            // SAFETY: see above.
            unsafe {
                libc::setsid();
                match libc::fork() {
                    -1 => libc::_exit(1),
                    0 => {
                        libc::prctl(libc::PR_SET_NAME, c"wedge-daemon".as_ptr());
                        let msg = b"daemon started\n";
                        libc::write(1, msg.as_ptr().cast(), msg.len());
                        loop {
                            libc::pause();
                        }
                    }
                    _ => libc::_exit(0),
                }
            }
        }
        child => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe {
                libc::waitpid(child, &mut status, 0);
            }
        }
    }
    say("daemonized");
    if exit_after {
        std::process::exit(0);
    }
    loop {
        // SAFETY: pause has no arguments.
        unsafe {
            libc::pause();
        }
    }
}

static INTS: AtomicUsize = AtomicUsize::new(0);
static TERMED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_int(_: libc::c_int) {
    INTS.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn on_term(_: libc::c_int) {
    TERMED.store(true, Ordering::SeqCst);
}

fn signals() -> ! {
    // SAFETY: the handlers only touch atomics; the masks are plain local sigset_t values.
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGINT);
        libc::sigaddset(&mut block, libc::SIGTERM);
        libc::sigprocmask(libc::SIG_BLOCK, &block, std::ptr::null_mut());
        libc::signal(libc::SIGINT, on_int as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
    }
    say("ready");
    let mut seen = 0;
    loop {
        let n = INTS.load(Ordering::SeqCst);
        if n != seen {
            seen = n;
            say(&format!("INT {n}"));
            // Busy with the signals blocked, longer than the scenario's jitter between two: a
            // SIGINT sent now stays pending while this process runs, and one sent after it
            // would merge with it unless the sender waits for the first to be delivered.
            let until = std::time::Instant::now() + Duration::from_millis(50);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        if TERMED.load(Ordering::SeqCst) {
            say(&format!("TERM after {n} INT"));
            std::process::exit(0);
        }
        // SAFETY: an empty mask for the duration of the wait; signals blocked otherwise, so none
        // is lost between the checks above and the wait.
        unsafe {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigsuspend(&empty);
        }
    }
}

fn seccomp_recv() -> ! {
    // Trap getppid (110) to the listener, allow everything else.
    let filter = [
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        }, // ld [nr]
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: 110,
        }, // jeq getppid
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x7fc0_0000,
        }, // ret USER_NOTIF
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        }, // ret ALLOW
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl and seccomp with a valid, live filter program.
    let listener = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::syscall(
            libc::SYS_seccomp,
            1,
            1 << 3,
            &prog as *const libc::sock_fprog,
        ) as i32
    };
    if listener < 0 {
        eprintln!("seccomp: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    let supervisor = std::thread::Builder::new()
        .name("supervisor".to_string())
        .spawn(move || {
            let mut notif = [0u64; 10]; // struct seccomp_notif, 80 bytes, zeroed
            // SAFETY: the buffer is 80 bytes, the size NOTIF_RECV (0xc0502100) encodes.
            let rc = unsafe { libc::ioctl(listener, 0xc050_2100, notif.as_mut_ptr()) };
            say(&format!("impossible: NOTIF_RECV returned {rc}"));
        });
    if supervisor.is_err() {
        std::process::exit(1);
    }
    say("supervising");
    loop {
        // SAFETY: pause has no arguments.
        unsafe {
            libc::pause();
        }
    }
}

fn tty_read() -> ! {
    // SAFETY: isatty, tcgetpgrp and getpgrp only take integers.
    let (tty, foreground) =
        unsafe { (libc::isatty(0) == 1, libc::tcgetpgrp(0) == libc::getpgrp()) };
    if !tty {
        say("stdin is not a terminal");
        std::process::exit(4);
    }
    say(if foreground {
        "foreground"
    } else {
        "background"
    });
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    say(&format!("got: {}", line.trim_end()));
    std::process::exit(0);
}

fn fail(what: &str) -> ! {
    eprintln!("{what}: {}", std::io::Error::last_os_error());
    std::process::exit(1);
}

fn timespec(ms: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    }
}

/// A CLOCK_MONOTONIC timerfd, armed to fire after `first_ms` then every `every_ms` (0: never).
fn timerfd(first_ms: u64, every_ms: u64) -> i32 {
    // SAFETY: plain syscalls with a valid itimerspec.
    unsafe {
        let fd = libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC);
        if fd < 0 {
            fail("timerfd_create");
        }
        let spec = libc::itimerspec {
            it_interval: timespec(every_ms),
            it_value: timespec(first_ms),
        };
        if first_ms > 0 && libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) != 0 {
            fail("timerfd_settime");
        }
        fd
    }
}

/// Reads one expiration count from a timerfd, blocking until it fires.
fn read_ticks(fd: i32) -> u64 {
    let mut ticks = 0u64;
    // SAFETY: reading 8 bytes into a u64.
    let n = unsafe { libc::read(fd, (&raw mut ticks).cast(), 8) };
    if n != 8 {
        fail("read timerfd");
    }
    ticks
}

fn timerfd_tick(armed: bool) -> ! {
    let fd = if armed {
        timerfd(1200, 1200)
    } else {
        timerfd(0, 0)
    };
    say(if armed { "ticking" } else { "waiting" });
    let mut total = 0;
    while total < 3 {
        total += read_ticks(fd);
    }
    say(&format!("{total} ticks"));
    std::process::exit(0);
}

fn epoll_timer(armed: bool) -> ! {
    let fd = timerfd(if armed { 1500 } else { 0 }, 0);
    let Ok((pipe_r, _pipe_w)) = nix::unistd::pipe() else {
        fail("pipe")
    };
    use std::os::fd::AsRawFd;
    // SAFETY: epoll syscalls on fds this process owns, with valid event structs.
    unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        if ep < 0 {
            fail("epoll_create1");
        }
        for watched in [fd, pipe_r.as_raw_fd()] {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: watched as u64,
            };
            if libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, watched, &mut ev) != 0 {
                fail("epoll_ctl");
            }
        }
        say("waiting");
        let mut out = [libc::epoll_event { events: 0, u64: 0 }; 2];
        let n = libc::epoll_wait(ep, out.as_mut_ptr(), 2, -1);
        if n < 1 || out[0].u64 != fd as u64 {
            fail("epoll_wait");
        }
    }
    say(&format!("fired {}", read_ticks(fd)));
    std::process::exit(0);
}

fn poll_timer(armed: bool) -> ! {
    let fd = timerfd(if armed { 1500 } else { 0 }, 0);
    say("waiting");
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, -1) } != 1 {
        fail("poll");
    }
    say(&format!("fired {}", read_ticks(fd)));
    std::process::exit(0);
}

static ALARMS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_alarm(_: libc::c_int) {
    ALARMS.fetch_add(1, Ordering::SeqCst);
}

fn catch(signo: libc::c_int) {
    // SAFETY: the handler only touches an atomic.
    unsafe {
        libc::signal(signo, on_alarm as *const () as libc::sighandler_t);
    }
}

fn alarm_pause() -> ! {
    catch(libc::SIGALRM);
    say("pausing");
    while ALARMS.load(Ordering::SeqCst) < 2 {
        let before = ALARMS.load(Ordering::SeqCst);
        // SAFETY: alarm and pause take no pointers. The check skips pause when the alarm already
        // fired; one firing between the check and pause would be lost, which its 1 s margin rules
        // out in practice.
        unsafe {
            libc::alarm(1);
            if ALARMS.load(Ordering::SeqCst) == before {
                libc::pause();
            }
        }
    }
    say("woken twice");
    std::process::exit(0);
}

/// `exec-from-thread`: the kernel ends every other thread at the exec, and the execer takes
/// the leader's thread id; a tracer must tell that from the threads' own exits.
fn exec_from_thread() -> ! {
    let execer = std::thread::Builder::new().name("execer".into()).spawn(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let err = std::os::unix::process::CommandExt::exec(
            std::process::Command::new("/proc/self/exe").args(["exit", "0"]),
        );
        fail(&format!("exec: {err}"))
    });
    if execer.is_err() {
        fail("spawning the execer");
    }
    loop {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn pause_forever() -> ! {
    say("pausing");
    loop {
        // SAFETY: pause has no arguments.
        unsafe {
            libc::pause();
        }
    }
}

fn posix_timer(armed: bool) -> ! {
    catch(libc::SIGUSR1);
    // SAFETY: timer_create and timer_settime with valid structs; the timer id is written by the
    // kernel (through libc) before use.
    unsafe {
        let mut ev: libc::sigevent = std::mem::zeroed();
        ev.sigev_notify = libc::SIGEV_SIGNAL;
        ev.sigev_signo = libc::SIGUSR1;
        let mut timer: libc::timer_t = std::ptr::null_mut();
        if libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut timer) != 0 {
            fail("timer_create");
        }
        let spec = libc::itimerspec {
            it_interval: timespec(0),
            it_value: timespec(1500),
        };
        if armed && libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) != 0 {
            fail("timer_settime");
        }
    }
    say("pausing");
    // The signal can only arrive after 1.5 s, long after this check; a signal arriving between
    // the check and pause would be a lost wake-up, which the 1.5 s margin rules out in practice.
    while ALARMS.load(Ordering::SeqCst) == 0 {
        // SAFETY: pause has no arguments.
        unsafe {
            libc::pause();
        }
    }
    say("fired");
    std::process::exit(0);
}

/// The counters every process of a fork bomb shares.
struct BombCounters {
    /// Processes of the bomb that exist, counted by the parent once its fork returned.
    made: AtomicU32,
    /// Forks begun and not yet counted: the first refusal waits for these to settle.
    inflight: AtomicU32,
    /// 0: no fork refused yet; 1: refused, count settling; 2: count printed.
    state: AtomicU32,
}

fn shared_counters() -> &'static BombCounters {
    // SAFETY: an anonymous shared mapping of one page, page-aligned and zeroed by the kernel;
    // zeroed bytes are valid AtomicU32s, and fork keeps the mapping shared between every
    // process of the bomb.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            std::mem::size_of::<BombCounters>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            fail("mmap");
        }
        &*(p as *const BombCounters)
    }
}

/// The count at the first refusal is exact: every fork marks itself in flight before it starts
/// and the parent counts a success before it clears the mark, so once nothing is in flight
/// `made` is every process the bomb has. Counting in the child, or reading `made` at once,
/// misses children not yet scheduled, many of them on a loaded machine.
fn fork_bomb(cap: u32) -> ! {
    let c = shared_counters();
    c.made.store(1, Ordering::SeqCst);
    say("bombing");
    loop {
        c.inflight.fetch_add(1, Ordering::SeqCst);
        let state = c.state.load(Ordering::SeqCst);
        if state == 1 || c.made.load(Ordering::SeqCst) >= cap {
            // Settling, or the safety stop: no new forks.
            c.inflight.fetch_sub(1, Ordering::SeqCst);
            if state == 0 && c.state.swap(2, Ordering::SeqCst) == 0 {
                say(&format!("no limit at {cap}"));
            }
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        // SAFETY: the bomb's processes are single-threaded and only use atomics, write(2) and
        // nanosleep after fork.
        match unsafe { libc::fork() } {
            -1 => {
                c.inflight.fetch_sub(1, Ordering::SeqCst);
                if c.state
                    .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    while c.inflight.load(Ordering::SeqCst) != 0 {
                        std::thread::yield_now();
                    }
                    say(&format!("refused at {}", c.made.load(Ordering::SeqCst)));
                    c.state.store(2, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // The child: its parent counts it.
            0 => {}
            _ => {
                c.made.fetch_add(1, Ordering::SeqCst);
                c.inflight.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

fn close_fds(hang: bool) -> ! {
    // SAFETY: closes every descriptor; nothing below uses one (sleep, pause, exit).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) };
    if rc != 0 {
        // An old kernel: close them one by one.
        for fd in 0..65_536 {
            // SAFETY: closing a descriptor that may not exist is harmless.
            unsafe { libc::close(fd) };
        }
    }
    if hang {
        pause_forever_quietly();
    }
    std::thread::sleep(Duration::from_millis(300));
    std::process::exit(0);
}

fn pause_forever_quietly() -> ! {
    loop {
        // SAFETY: pause has no arguments.
        unsafe { libc::pause() };
    }
}

fn flood(fd: i32) -> ! {
    let block = [b'x'; 65_536];
    say("flooding");
    loop {
        // SAFETY: writing a live buffer; a failed write (the reader gone) ends the subject.
        if unsafe { libc::write(fd, block.as_ptr().cast(), block.len()) } < 0 {
            std::process::exit(6);
        }
    }
}

fn detach() -> ! {
    // SAFETY: setsid, fork and setpgid take no pointers; the child only calls pause.
    unsafe {
        if libc::setsid() < 0 {
            fail("setsid");
        }
        match libc::fork() {
            -1 => fail("fork"),
            0 => {
                libc::setpgid(0, 0);
                pause_forever_quietly();
            }
            _ => {}
        }
        say(&format!("detached {} {}", libc::getsid(0), libc::getpgrp()));
    }
    pause_forever_quietly();
}

fn unshare_mount() -> ! {
    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, unshare};
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET;
    if let Err(e) = unshare(flags) {
        eprintln!("unshare: {e}");
        std::process::exit(1);
    }
    let none: Option<&str> = None;
    let tmp = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".to_string());
    let steps = [
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none),
        mount(
            Some("wedge-hostile"),
            "/mnt",
            Some("tmpfs"),
            MsFlags::empty(),
            none,
        ),
        mount(Some("/mnt"), tmp.as_str(), none, MsFlags::MS_BIND, none),
    ];
    if let Some(e) = steps.iter().find_map(|r| r.err()) {
        eprintln!("mount: {e}");
        std::process::exit(1);
    }
    let name = b"wedge-hostile";
    // SAFETY: a live buffer of the length given.
    unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    say("mounted");
    pause_forever_quietly();
}

fn ignore_signals() -> ! {
    for signo in 1..=libc::SIGRTMAX() {
        if signo != libc::SIGKILL && signo != libc::SIGSTOP {
            // SAFETY: SIG_IGN has no handler code; invalid numbers just fail.
            unsafe { libc::signal(signo, libc::SIG_IGN) };
        }
    }
    say("ignoring");
    pause_forever_quietly();
}

fn eat_memory(cap_mb: usize) -> ! {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    say("eating");
    while kept.len() < cap_mb {
        // Touching every page makes the memory resident (charged to the cgroup).
        kept.push(std::hint::black_box(vec![0x5a; 1 << 20]));
    }
    say(&format!("no limit at {cap_mb} MiB"));
    std::process::exit(5);
}

fn kill_parent(signo: libc::c_int) -> ! {
    // SAFETY: getppid and kill take integers; the target is whatever the subject can reach.
    let (parent, rc) = unsafe {
        let ppid = libc::getppid();
        // Outside its pid namespace the parent shows as 0: the nearest it sees is the init.
        let parent = if ppid > 0 { ppid } else { 1 };
        (parent, libc::kill(parent, signo))
    };
    say(&format!("sent to {parent}: {rc}"));
    std::thread::sleep(Duration::from_millis(300));
    std::process::exit(0);
}

fn busy() -> ! {
    say("spinning");
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

fn number<T: std::str::FromStr>(arg: Option<&String>) -> T {
    arg.and_then(|a| a.parse().ok()).unwrap_or_else(|| usage())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("exit") => {
            let code = args
                .get(1)
                .map_or(Ok(0), |c| c.parse::<i32>())
                .unwrap_or_else(|_| usage());
            say("hello");
            std::process::exit(code);
        }
        Some("stamp") => {
            let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                .unwrap_or_else(|_| fail("clock_gettime"));
            say(&format!(
                "{}",
                now.tv_sec() as u128 * 1_000_000_000 + now.tv_nsec() as u128
            ));
            // SAFETY: ends the process at once: nothing to run after the stamp but the exit.
            unsafe { libc::_exit(0) }
        }
        Some("deadlock") => deadlock(),
        Some("pipe-read") => pipe_read(),
        Some("daemon") => match args.get(1).map(String::as_str) {
            None | Some("--stay") => daemon(false),
            Some("--exit") => daemon(true),
            _ => usage(),
        },
        Some("busy") => busy(),
        Some("signals") => signals(),
        Some("tty-read") => tty_read(),
        Some("seccomp-recv") => seccomp_recv(),
        Some("timerfd-tick") => timerfd_tick(true),
        Some("timerfd-disarmed") => timerfd_tick(false),
        Some("epoll-timer") => epoll_timer(true),
        Some("epoll-disarmed") => epoll_timer(false),
        Some("poll-timer") => poll_timer(true),
        Some("poll-disarmed") => poll_timer(false),
        Some("alarm-pause") => alarm_pause(),
        Some("pause-forever") => pause_forever(),
        Some("exec-from-thread") => exec_from_thread(),
        Some("posix-timer") => posix_timer(true),
        Some("posix-timer-disarmed") => posix_timer(false),
        Some(mode) if waits::MODES.contains(&mode) => waits::run(mode),
        Some("fork-bomb") => fork_bomb(number(args.get(1))),
        Some(which) if races::FORK_MODES.contains(&which) => races::forks(which, &args[1..], usage),
        Some("close-fds") => match args.get(1).map(String::as_str) {
            Some("exit") => close_fds(false),
            Some("hang") => close_fds(true),
            _ => usage(),
        },
        Some("flood") => match args.get(1).map(String::as_str) {
            Some("stdout") => flood(1),
            Some("stderr") => flood(2),
            Some("tty") => flood(0),
            _ => usage(),
        },
        Some("detach") => detach(),
        Some("unshare-mount") => unshare_mount(),
        Some("ignore-signals") => ignore_signals(),
        Some("eat-memory") => eat_memory(number(args.get(1))),
        Some("kill-parent") => match args.get(1).map(String::as_str) {
            Some("KILL") => kill_parent(libc::SIGKILL),
            Some("STOP") => kill_parent(libc::SIGSTOP),
            _ => usage(),
        },
        Some("sleep") => {
            let ms: u64 = number(args.get(1));
            say("sleeping");
            std::thread::sleep(Duration::from_millis(ms));
            say("awake");
        }
        Some("echo-stdin") => {
            let mut input = String::new();
            let _ = std::io::stdin().read_to_string(&mut input);
            print!("{input}");
        }
        _ => usage(),
    }
}
