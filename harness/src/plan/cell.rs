//! A planned cell and its trials: what planning hands an executor.

use std::sync::Arc;

use crate::model::cell::{Cell, trial_seed};
use crate::model::scenario::{Expectation, Scenario};
use crate::plan::backend::Target;

/// One cell to run (or to record as skipped).
#[derive(Debug, Clone)]
pub struct PlannedCell {
    pub scenario: Arc<Scenario>,
    pub cell: Cell,
    pub cell_index: usize,
    pub expectation: Expectation,
    pub trials: u32,
    pub base_seed: u64,
    pub skip: Option<String>,
    /// Set in a sharded run: stamped on every record of the cell.
    pub shard: Option<crate::model::record::ShardMark>,
    /// Where its trials run.
    pub target: Target,
    /// CPUs each trial gets (the `cpus` axis, else `--cpus`): pinned on the host, the vCPU
    /// count of a VM.
    pub cpus: Option<usize>,
    /// How its trials perturb the subject's scheduling: the `chaos` axis, else `--chaos`, else
    /// the scenario's `chaos`.
    pub chaos: crate::model::chaos::Chaos,
}

/// One trial of a planned cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedTrial {
    /// The cell's position in the planned cells handed to the executor.
    pub cell: usize,
    pub trial: u32,
    pub seed: u64,
}

impl PlannedCell {
    /// The cell's trials, each with its seed; `cell` is the cell's position in the plan.
    pub fn planned_trials(&self, cell: usize) -> impl Iterator<Item = PlannedTrial> + '_ {
        (0..self.trials).map(move |trial| PlannedTrial {
            cell,
            trial,
            seed: trial_seed(self.base_seed, &self.scenario.name, &self.cell, trial),
        })
    }
}
