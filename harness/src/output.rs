//! Capturing a process's output: one reader thread per stream (stdout, stderr, the pty), kept in
//! memory up to a cap, readable while the process runs (for `until = "output"` waits) and as
//! tails for the trial record.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::scenario::Stream;

/// Most bytes of each stream kept in memory.
const CAP: usize = 8 << 20;
/// Bytes of each stream kept in a trial record.
pub const TAIL: usize = 4096;

/// Where captured bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Stdout,
    Stderr,
    /// The master side of the subject's pseudo-terminal.
    Tty,
}

/// The captured output of one process.
#[derive(Debug, Default)]
pub struct Capture {
    stdout: Mutex<Vec<u8>>,
    stderr: Mutex<Vec<u8>>,
    tty: Mutex<Vec<u8>>,
    open_readers: AtomicUsize,
    total: AtomicUsize,
}

fn lossy(m: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&m.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// The last `TAIL` bytes of `text` (on a character boundary), marked with `…` when cut.
pub fn tail_of(text: &str) -> String {
    if text.len() <= TAIL {
        return text.to_string();
    }
    let mut start = text.len() - TAIL;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

impl Capture {
    /// Reads `source` to its end on a new thread, appending to the `from` stream.
    pub fn reader(self: &Arc<Self>, mut source: impl Read + Send + 'static, from: Source) {
        self.open_readers.fetch_add(1, Ordering::SeqCst);
        let me = Arc::clone(self);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match source.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let target = match from {
                            Source::Stdout => &me.stdout,
                            Source::Stderr => &me.stderr,
                            Source::Tty => &me.tty,
                        };
                        let mut t = target.lock().unwrap_or_else(|e| e.into_inner());
                        let room = CAP.saturating_sub(t.len());
                        t.extend_from_slice(&buf[..n.min(room)]);
                        me.total.fetch_add(n, Ordering::SeqCst);
                    }
                }
            }
            me.open_readers.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Readers still waiting for end of file.
    pub fn open_readers(&self) -> usize {
        self.open_readers.load(Ordering::SeqCst)
    }

    /// Bytes read so far, over all streams (including those beyond the cap).
    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// The text of a stream (`Any`: stdout, stderr and the terminal, one after the other).
    pub fn text(&self, which: Stream) -> String {
        match which {
            Stream::Stdout => lossy(&self.stdout),
            Stream::Stderr => lossy(&self.stderr),
            Stream::Any => format!(
                "{}\n{}\n{}",
                lossy(&self.stdout),
                lossy(&self.stderr),
                lossy(&self.tty)
            ),
        }
    }

    /// What the process wrote to its terminal.
    pub fn tty_text(&self) -> String {
        lossy(&self.tty)
    }

    /// The tail of a stream for the trial record.
    pub fn tail(&self, which: Stream) -> String {
        tail_of(&self.text(which))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_until_end_of_file() {
        let c = Arc::new(Capture::default());
        c.reader(std::io::Cursor::new(b"out\n".to_vec()), Source::Stdout);
        c.reader(std::io::Cursor::new(b"err\n".to_vec()), Source::Stderr);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while c.open_readers() > 0 {
            assert!(std::time::Instant::now() < end, "readers never finished");
            std::thread::yield_now();
        }
        assert_eq!(c.text(Stream::Stdout), "out\n");
        assert_eq!(c.text(Stream::Stderr), "err\n");
        assert!(c.text(Stream::Any).contains("out\n\nerr\n"));
        assert_eq!(c.total(), 8);
    }

    #[test]
    fn tails_cut_on_char_boundaries() {
        let long = "é".repeat(TAIL);
        let t = tail_of(&long);
        assert!(t.starts_with('…'));
        assert!(t.len() <= TAIL + '…'.len_utf8());
        assert_eq!(tail_of("short"), "short");
    }
}
