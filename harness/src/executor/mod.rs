//! Where trials run. An [`Executor`] is handed planned trials and hands back one
//! [`TrialRecord`] per finished trial, as it finishes, through a [`TrialSink`]; it decides only
//! where and how many at once. Planning (which trials, their seeds), judging (inside the engine
//! that runs each trial), statistics and reports are the same whatever the executor.
//!
//! Today there is one, [`host::HostExecutor`]: the trials run on this machine, `--jobs` at a
//! time, pinned trials holding their CPUs. An executor that boots a VM with another kernel or
//! vCPU count runs the same engine inside the guest and streams the same records back through
//! the same sink.

pub mod host;

use crate::plan::{PlannedCell, PlannedTrial};
use crate::record::TrialRecord;

/// Receives each finished trial's record. Called from the executor's workers, in finishing
/// order.
pub trait TrialSink: Sync {
    fn finished(&self, trial: &PlannedTrial, record: TrialRecord);
}

/// Runs planned trials somewhere.
pub trait Executor {
    /// Runs `trials` (each naming its cell in `cells`), handing every finished record to
    /// `sink`. Returns once all have run, or early when the run is cancelled; a trial cut
    /// short by cancellation is not handed over.
    fn run(&self, cells: &[PlannedCell], trials: Vec<PlannedTrial>, sink: &dyn TrialSink);
}
