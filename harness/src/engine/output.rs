//! Capturing a process's output: one reader thread per stream (stdout, stderr, the pty), kept in
//! memory up to a cap, readable while the process runs (for `until = "output"` waits) and as
//! tails for the trial record. wedge's memory stays bounded whatever a subject writes: past the
//! cap a stream is still read (so the writer never blocks on a full pipe) but dropped, and the
//! record's tail says so with a [`truncation_marker`].

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use wedge_core::sync::Mutex;

use crate::model::scenario::Stream;

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
    /// Bytes read past the cap, per [`Source`] (stdout, stderr, tty).
    dropped: [AtomicUsize; 3],
}

/// The line a truncated stream's tail ends with: how much was kept and how much dropped.
pub fn truncation_marker(stream: &str, dropped: usize) -> String {
    format!("[wedge: {stream} truncated: kept the first {CAP} bytes, dropped {dropped} more]")
}

fn lossy(m: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&m.lock()).into_owned()
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
                        let (target, i) = match from {
                            Source::Stdout => (&me.stdout, 0),
                            Source::Stderr => (&me.stderr, 1),
                            Source::Tty => (&me.tty, 2),
                        };
                        let mut t = target.lock();
                        let kept = n.min(CAP.saturating_sub(t.len()));
                        t.extend_from_slice(&buf[..kept]);
                        me.dropped[i].fetch_add(n - kept, Ordering::SeqCst);
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

    /// Bytes of `from` read past the cap and dropped.
    pub fn dropped(&self, from: Source) -> usize {
        let i = match from {
            Source::Stdout => 0,
            Source::Stderr => 1,
            Source::Tty => 2,
        };
        self.dropped[i].load(Ordering::SeqCst)
    }

    /// The tail of a stream (stdout or stderr) for the trial record, ending with a
    /// [`truncation_marker`] when the stream outgrew the cap.
    pub fn tail(&self, which: Stream) -> String {
        let (from, name) = match which {
            Stream::Stderr => (Source::Stderr, "stderr"),
            _ => (Source::Stdout, "stdout"),
        };
        marked(tail_of(&self.text(which)), name, self.dropped(from))
    }

    /// The tail of the terminal's output, marked like [`Capture::tail`].
    pub fn tty_tail(&self) -> String {
        marked(tail_of(&self.tty_text()), "tty", self.dropped(Source::Tty))
    }
}

fn marked(mut tail: String, stream: &str, dropped: usize) -> String {
    if dropped > 0 {
        if !tail.ends_with('\n') {
            tail.push('\n');
        }
        tail.push_str(&truncation_marker(stream, dropped));
    }
    tail
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
    fn past_the_cap_output_is_read_dropped_and_marked() {
        let c = Arc::new(Capture::default());
        let big = vec![b'x'; CAP + 12_345];
        c.reader(std::io::Cursor::new(big), Source::Stdout);
        c.reader(std::io::Cursor::new(b"fine\n".to_vec()), Source::Stderr);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while c.open_readers() > 0 {
            assert!(std::time::Instant::now() < end, "readers never finished");
            std::thread::yield_now();
        }
        assert_eq!(c.text(Stream::Stdout).len(), CAP);
        assert_eq!(c.total(), CAP + 12_345 + 5);
        assert_eq!(c.dropped(Source::Stdout), 12_345);
        let tail = c.tail(Stream::Stdout);
        assert!(
            tail.ends_with(&truncation_marker("stdout", 12_345)),
            "{tail}"
        );
        assert!(tail.len() < TAIL + 200);
        assert_eq!(
            c.tail(Stream::Stderr),
            "fine\n",
            "an uncut stream has no marker"
        );
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
