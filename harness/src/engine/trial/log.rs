//! The trial's log, handed from phase to phase (setup opens it, the steps and teardown append
//! to it, the record keeps it): every line stamped with the time since the trial's start.

use std::time::Instant;

/// The trial's log: lines stamped with the time since the trial's start (the subject's start
/// once it runs, which moves the stamps' origin).
pub(crate) struct Log {
    start: Instant,
    lines: Vec<String>,
}

impl Log {
    /// A log whose stamps count from `start`, opening with `notes` (stamped 0).
    pub fn new(start: Instant, notes: impl IntoIterator<Item = String>) -> Log {
        let lines = notes
            .into_iter()
            .map(|n| format!("{:9.1} ms  {n}", 0.0))
            .collect();
        Log { start, lines }
    }

    /// Appends a line, stamped with the time since the start.
    pub fn note(&mut self, text: impl Into<String>) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        self.lines.push(format!("{ms:9.1} ms  {}", text.into()));
    }

    /// When the trial started (the subject, once it runs): the origin of stamps and deadline.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Moves the origin to `start` (when the subject starts).
    pub fn restart(&mut self, start: Instant) {
        self.start = start;
    }

    pub fn into_lines(self) -> Vec<String> {
        self.lines
    }
}
