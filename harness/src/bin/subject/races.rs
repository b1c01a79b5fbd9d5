//! Subjects whose hazard shows only when a thread is caught at the wrong instant: the chaos
//! tests' targets (harness/tests/engine.rs), which must fail under a chaos mode that finds the
//! hazard and pass when the hazard is mended.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{fail, say};

/// How many children `fork-logging` makes, one after another.
const FORKS: u32 = 20;

/// The modes [`forks`] runs.
pub const FORK_MODES: [&str; 3] = ["fork-logging", "fork-malloc", "fork-mutex"];

/// `fork-logging ...`, `fork-malloc ...` or `fork-mutex ...` (`which`), with the arguments after it (`usage` for
/// any the mode does not take).
pub fn forks(which: &str, args: &[String], usage: fn() -> !) -> ! {
    let how = args.first().map(String::as_str);
    let wait_stdin = match args.get(1).map(String::as_str) {
        None => false,
        Some("--wait-stdin") => true,
        Some(_) => usage(),
    };
    match which {
        "fork-logging" => fork_logging(how, wait_stdin, usage),
        "fork-mutex" => fork_mutex(how, wait_stdin, usage),
        _ => fork_malloc(how, wait_stdin, usage),
    }
}

/// `fork-logging stdio|raw [--wait-stdin]`: a thread logs to stderr over and over (Rust's
/// stderr lock is held across each `write`) while the main thread forks [`FORKS`] children one at a time and waits
/// for each. A child writes one line and exits: with `stdio` through `eprintln!`, which takes
/// the stderr lock (a fork made while the logger was inside its `write` leaves that lock held by
/// a thread the child does not have, so the child and then the parent's wait hang forever); with
/// `raw` through a bare `write(2)`, which is async-signal-safe and never waits. Prints
/// "forked 20" and exits 0 once every child has ended.
/// (`usage` for any other argument.)
fn fork_logging(child: Option<&str>, wait_stdin: bool, usage: fn() -> !) -> ! {
    let stdio = match child {
        Some("stdio") => true,
        Some("raw") => false,
        _ => usage(),
    };
    static STOP: AtomicBool = AtomicBool::new(false);
    let logger = std::thread::Builder::new()
        .name("logger".to_string())
        .spawn(|| {
            let mut line = 0u64;
            while !STOP.load(Ordering::Relaxed) {
                let _ = writeln!(std::io::stderr(), "logger line {line}");
                line += 1;
                // Often enough that a fork never waits long for the logger's next write.
                std::thread::sleep(Duration::from_millis(2));
            }
        })
        .unwrap_or_else(|_| fail("spawn"));
    // SAFETY: the child makes one write (a locked one with `stdio`: the hazard under test)
    // and _exits; it runs no destructors of the parent's state.
    let make = || unsafe { libc::fork() };
    fork_in_turn(
        logger,
        &STOP,
        wait_stdin,
        || {},
        make,
        |n| {
            if stdio {
                eprintln!("child {n}");
            } else {
                let text = b"child (raw)\n";
                // SAFETY: a valid buffer of the given length.
                unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
            }
        },
    )
}

/// `fork-malloc clone|fork [--wait-stdin]`: the process keeps one malloc arena (`M_ARENA_MAX`
/// 1, as any process with more threads than arenas ends up sharing them), a thread allocates and frees blocks too
/// big for glibc's per-thread cache (each `malloc` and `free` takes the arena's lock), and the
/// main thread makes [`FORKS`] children one at a time and waits for each. A child allocates one
/// such block and exits. With `clone` the children are made by a bare `clone` system call, as
/// container runtimes and wedge-agent's builds make theirs: a child made while the allocator
/// thread was inside `malloc` or `free` inherits the arena locked, and its own `malloc` (then the
/// parent's wait) hangs forever. With `fork` they are made by glibc's `fork`, which takes every
/// arena lock around the call, so the child never inherits a held one. Prints "forked 20" and
/// exits 0 once every child has ended. (`usage` for any other argument.)
fn fork_malloc(how: Option<&str>, wait_stdin: bool, usage: fn() -> !) -> ! {
    let bare = match how {
        Some("clone") => true,
        Some("fork") => false,
        _ => usage(),
    };
    // SAFETY: mallopt takes integers; called before any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    static STOP: AtomicBool = AtomicBool::new(false);
    let allocator = std::thread::Builder::new()
        .name("allocator".to_string())
        .spawn(|| {
            let mut sizes = 2048usize;
            while !STOP.load(Ordering::Relaxed) {
                let mut block = vec![0u8; sizes];
                // Some work outside the lock, so the lock is held only part of the time.
                for b in block.iter_mut().step_by(4) {
                    *b = b.wrapping_add(1);
                }
                std::hint::black_box(&block);
                drop(block);
                sizes = 2048 + (sizes * 7 + 13) % 8192;
            }
        })
        .unwrap_or_else(|_| fail("spawn"));
    let make = || {
        if bare {
            // SAFETY: a fork-like clone (no shared memory, SIGCHLD at exit); the child only
            // allocates and _exits, running nothing of the parent's state.
            unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) as i32 }
        } else {
            // SAFETY: as above, through glibc's fork.
            unsafe { libc::fork() }
        }
    };
    fork_in_turn(
        allocator,
        &STOP,
        wait_stdin,
        || {},
        make,
        |_| {
            std::hint::black_box(vec![1u8; 4096]);
        },
    )
}

/// `fork-mutex take|leave [--wait-stdin]`: two threads take turns at a global `Mutex` (in the
/// program's static data, as a logger's, a registry's or an environment lock is) without end,
/// and the main thread makes [`FORKS`] children one at a time by a bare `clone` and waits for
/// each. Before the first fork the two are made to contend once (one holds the lock until the
/// other is seen asleep on it), so the lock has been waited on. A child allocates nothing; with
/// `take` it locks the same `Mutex` once (a child made while a locker held it inherits it held
/// by a thread the child does not have, and waits forever, and so does the parent's wait); with
/// `leave` it does not. Prints "forked 20" and exits 0 once every child has ended.
fn fork_mutex(how: Option<&str>, wait_stdin: bool, usage: fn() -> !) -> ! {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicI32;
    let take = match how {
        Some("take") => true,
        Some("leave") => false,
        _ => usage(),
    };
    static LOCK: Mutex<u64> = Mutex::new(0);
    static STOP: AtomicBool = AtomicBool::new(false);
    static GO: AtomicBool = AtomicBool::new(false);
    static CONTENDED: AtomicBool = AtomicBool::new(false);
    static CONTENDER: AtomicI32 = AtomicI32::new(0);
    let turns = || {
        let mut g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        // A little work inside the lock and five hundred times as much outside, so it is held
        // a small part of the time (a fork seldom finds it held by itself).
        for i in 0..8u64 {
            *g = std::hint::black_box(g.wrapping_mul(31).wrapping_add(i));
        }
        // Never a value whose low half could pass for a thread id in a pthread mutex's
        // `__owner` (the word after the lock's), so a diagnosis reads the lock for what it is.
        *g |= 0x8000_0000;
        let seed = *g;
        drop(g);
        let mut x = seed;
        for i in 0..4096u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    };
    let lockers = std::thread::Builder::new()
        .name("locker".to_string())
        .spawn(move || {
            let contender = std::thread::Builder::new()
                .name("contender".to_string())
                .spawn(move || {
                    // SAFETY: gettid takes nothing.
                    CONTENDER.store(unsafe { libc::gettid() }, Ordering::SeqCst);
                    while !STOP.load(Ordering::Relaxed) {
                        turns();
                    }
                })
                .unwrap_or_else(|_| fail("spawn"));
            while !GO.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            contend_once(&LOCK, &CONTENDER);
            CONTENDED.store(true, Ordering::SeqCst);
            while !STOP.load(Ordering::Relaxed) {
                turns();
            }
            let _ = contender.join();
        })
        .unwrap_or_else(|_| fail("spawn"));
    let ready = || {
        GO.store(true, Ordering::SeqCst);
        while !CONTENDED.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
    };
    // SAFETY: a fork-like clone (no shared memory, SIGCHLD at exit); the child only locks a
    // static mutex (or nothing) and _exits, running nothing of the parent's state.
    let make = || unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) as i32 };
    fork_in_turn(lockers, &STOP, wait_stdin, ready, make, |_| {
        if take {
            std::hint::black_box(LOCK.lock().map(|g| *g).unwrap_or(0));
        }
    })
}

/// Holds `lock` until the thread whose tid `contender` names is asleep (it can only sleep on
/// this lock), at most 5 s: one contended wait on the lock, seen by any tracer of the process.
fn contend_once(lock: &std::sync::Mutex<u64>, contender: &std::sync::atomic::AtomicI32) {
    let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let tid = contender.load(Ordering::SeqCst);
        let stat =
            std::fs::read_to_string(format!("/proc/thread-self/../{tid}/stat")).unwrap_or_default();
        // The state follows the command name's closing parenthesis.
        let asleep = stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('S'));
        if (tid != 0 && asleep) || std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::yield_now();
    }
    drop(guard);
}

/// What the `fork-*` modes share once their helper thread runs: after `ready`, [`FORKS`]
/// children one at a time, each made by `make` (which returns what `fork` returns) and running
/// `child(n)`, then `_exit(0)`, each waited for; then `stop` ends the helper, which is joined,
/// and "forked 20" is printed.
fn fork_in_turn(
    helper: std::thread::JoinHandle<()>,
    stop: &AtomicBool,
    wait_stdin: bool,
    ready: impl Fn(),
    make: impl Fn() -> i32,
    child: impl Fn(u32),
) -> ! {
    if wait_stdin {
        read_line();
    }
    ready();
    for n in 0..FORKS {
        match make() {
            -1 => fail("fork"),
            0 => {
                child(n);
                // SAFETY: _exit takes an integer; no destructors in a forked copy.
                unsafe { libc::_exit(0) }
            }
            pid => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = helper.join();
    say(&format!("forked {FORKS}"));
    std::process::exit(0)
}

/// `--wait-stdin`: the threads are up, and the first fork waits for a line on stdin (or its end).
/// A scenario under chaos `syscall` writes it in a step, which runs once the tracer has every
/// thread: so no fork is made before the tracer can see it.
fn read_line() {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}
