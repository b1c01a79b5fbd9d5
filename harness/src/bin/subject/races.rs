//! Subjects whose hazard shows only when a thread is caught at the wrong instant: the chaos
//! tests' targets (harness/tests/engine.rs), which must fail under a chaos mode that finds the
//! hazard and pass when the hazard is mended.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{fail, say};

/// How many children `fork-logging` makes, one after another.
const FORKS: u32 = 20;

/// `fork-logging stdio|raw`: a thread logs to stderr over and over (Rust's stderr lock is held
/// across each `write`) while the main thread forks [`FORKS`] children one at a time and waits
/// for each. A child writes one line and exits: with `stdio` through `eprintln!`, which takes
/// the stderr lock (a fork made while the logger was inside its `write` leaves that lock held by
/// a thread the child does not have, so the child and then the parent's wait hang forever); with
/// `raw` through a bare `write(2)`, which is async-signal-safe and never waits. Prints
/// "forked 20" and exits 0 once every child has ended.
/// (`usage` for any other argument.)
pub fn fork_logging(child: Option<&str>, usage: fn() -> !) -> ! {
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
    for n in 0..FORKS {
        // SAFETY: the child makes one write (a locked one with `stdio`: the hazard under test)
        // and _exits; it runs no destructors of the parent's state.
        match unsafe { libc::fork() } {
            -1 => fail("fork"),
            0 => {
                if stdio {
                    eprintln!("child {n}");
                } else {
                    let text = b"child (raw)\n";
                    // SAFETY: a valid buffer of the given length.
                    unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
                }
                // SAFETY: _exit takes an integer; no destructors in a forked copy.
                unsafe { libc::_exit(0) }
            }
            child => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(child, &mut status, 0) };
            }
        }
    }
    STOP.store(true, Ordering::Relaxed);
    let _ = logger.join();
    say(&format!("forked {FORKS}"));
    std::process::exit(0)
}
