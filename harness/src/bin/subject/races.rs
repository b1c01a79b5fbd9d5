//! Subjects whose hazard shows only when a thread is caught at the wrong instant: the chaos
//! tests' targets (harness/tests/engine.rs), which must fail under a chaos mode that finds the
//! hazard and pass when the hazard is mended.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{fail, say};

/// How many children `fork-logging` makes, one after another.
const FORKS: u32 = 20;

/// `fork-logging ...` or `fork-malloc ...` (`which`), with the arguments after it (`usage` for
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
    fork_in_turn(logger, &STOP, wait_stdin, make, |n| {
        if stdio {
            eprintln!("child {n}");
        } else {
            let text = b"child (raw)\n";
            // SAFETY: a valid buffer of the given length.
            unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
        }
    })
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
    fork_in_turn(allocator, &STOP, wait_stdin, make, |_| {
        std::hint::black_box(vec![1u8; 4096]);
    })
}

/// What `fork-logging` and `fork-malloc` share once their helper thread runs: [`FORKS`] children
/// one at a time, each made by `make` (which returns what `fork` returns) and running
/// `child(n)`, then `_exit(0)`, each waited for; then `stop` ends the helper, which is joined,
/// and "forked 20" is printed.
fn fork_in_turn(
    helper: std::thread::JoinHandle<()>,
    stop: &AtomicBool,
    wait_stdin: bool,
    make: impl Fn() -> i32,
    child: impl Fn(u32),
) -> ! {
    if wait_stdin {
        read_line();
    }
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
