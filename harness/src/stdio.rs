//! wedge's own standard output and error, written without panicking when the reader goes away.
//!
//! Rust ignores SIGPIPE, so `println!` to a closed pipe (`wedge list | head -1`) panics with
//! "failed printing to stdout: Broken pipe". Restoring SIGPIPE's default would instead let a
//! write to a subject's closed stdin kill wedge mid-run. So every line wedge prints goes through
//! here: the first failed write (EPIPE or any other) closes that stream for the rest of the
//! process, quietly, and the verb finishes with the exit status it would have had (0, or 1 for
//! a failed gate: a closed pipe never turns a failure into a success).

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes to standard output, unless a write to it failed before.
pub fn out(args: fmt::Arguments<'_>) {
    write_to(&mut std::io::stdout().lock(), &STDOUT_CLOSED, args);
}

/// Writes to standard error, unless a write to it failed before.
pub fn err(args: fmt::Arguments<'_>) {
    write_to(&mut std::io::stderr().lock(), &STDERR_CLOSED, args);
}

/// Whether a write to standard output has failed (its reader is gone).
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

fn write_to(w: &mut dyn Write, closed: &AtomicBool, args: fmt::Arguments<'_>) {
    if closed.load(Ordering::Relaxed) {
        return;
    }
    if w.write_fmt(args).and_then(|()| w.flush()).is_err() {
        closed.store(true, Ordering::Relaxed);
    }
}

/// `println!` to wedge's standard output, quiet once its reader is gone.
#[macro_export]
macro_rules! outln {
    () => { $crate::stdio::out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::stdio::out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` to wedge's standard output, quiet once its reader is gone.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::stdio::out(format_args!($($arg)*)) };
}

/// `eprintln!` to wedge's standard error, quiet once its reader is gone.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::stdio::err(format_args!("{}\n", format_args!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader is gone.
    struct Closed(usize);

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            self.0 += 1;
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_stream_is_given_up_quietly_after_the_first_failure() {
        let closed = AtomicBool::new(false);
        let mut w = Closed(0);
        write_to(&mut w, &closed, format_args!("one\n"));
        assert!(closed.load(Ordering::Relaxed));
        write_to(&mut w, &closed, format_args!("two\n"));
        assert_eq!(w.0, 1, "no write after the failure");
        let open = AtomicBool::new(false);
        let mut buf = Vec::new();
        write_to(&mut buf, &open, format_args!("{}-{}\n", 1, 2));
        assert_eq!(buf, b"1-2\n");
        assert!(!open.load(Ordering::Relaxed));
    }
}
