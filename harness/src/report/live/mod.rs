//! What a run tells as it goes, as typed [`Event`]s to [`Reporter`]s: the `trials.jsonl` writer
//! ([`jsonl`]) and the progress output ([`progress`]). Reporters only listen; the runner sends
//! every event to each of them in order, from whichever worker finished the trial.

pub mod jsonl;
pub mod progress;

use crate::model::cell::Cell;
use crate::model::record::TrialRecord;

/// Something that happened in a run.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A cell that cannot run here was recorded as skipped (before any trial runs).
    Skipped(&'a TrialRecord),
    /// The trials are about to run: this many in all.
    Started { trials: u64 },
    /// A trial finished.
    TrialFinished(&'a TrialRecord),
    /// Every trial of a cell finished (or it was skipped): its records.
    CellFinished {
        scenario: &'a str,
        cell: &'a Cell,
        records: &'a [TrialRecord],
    },
    /// The run ended (every trial ran, or it was cancelled).
    Finished,
}

/// Listens to a run's events. An error (e.g. a full disk under `trials.jsonl`) cancels the run
/// and is returned by it.
pub trait Reporter: Sync {
    fn report(&self, event: &Event<'_>) -> std::io::Result<()>;
}
