//! Scenario cells run through wedge's own engine (`wedge::exec::runner::plan` + `execute`), as
//! `wedge run` runs them, for benches that measure what trials observe: failures per trial,
//! time to verdict.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wedge::engine::trial::Engine;
use wedge::exec::runner::{PlanOptions, PlannedCell, execute, plan};
use wedge::model::cell::CellFilter;
use wedge::model::record::TrialRecord;
use wedge::model::scenario::Scenario;
use wedge::plan::backend::Backend;

/// The workspace's root (scenario paths are relative to it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// One cell of a scenario file, ready to run any number of trials.
pub struct BenchCell {
    /// e.g. `worker-starvation strategy=inline cpus=1 concurrency=1`.
    pub name: String,
    planned: PlannedCell,
    /// Each batch of trials gets its own base seed, so batches are not replays of each other.
    batches: u64,
}

/// Why a bench cell cannot run here.
#[derive(Debug)]
pub enum CellError {
    /// The scenario or its cell filters are wrong: a bug in the bench.
    Bad(String),
    /// This machine cannot run the cell (e.g. no bubblewrap): the bench says so and skips it.
    Skipped(String),
}

impl BenchCell {
    /// The single cell of `file` (relative to the workspace root) matching `filters`
    /// (`axis=value`, as `wedge run --cell`), planned for this host only.
    pub fn new(engine: &Engine, file: &str, filters: &[&str]) -> Result<BenchCell, CellError> {
        let path = workspace_root().join(file);
        let scenario = Scenario::load(&path)
            .map_err(|e| CellError::Bad(format!("{}: {e}", path.display())))?;
        let filters = filters
            .iter()
            .map(|f| f.parse::<CellFilter>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CellError::Bad(e.to_string()))?;
        let options = PlanOptions {
            filters: filters.clone(),
            backend: Backend::Host,
            ..PlanOptions::default()
        };
        let scenarios = [Arc::new(scenario)];
        // Planned as `wedge run` plans: the host probed only if the cell's expectation needs it.
        let mut cells = wedge::exec::host_facts::plan_probing(
            wedge::exec::host_facts::of_engine(engine),
            |facts| plan(facts, &scenarios, &options),
            |cells| wedge::plan::needs_host_probes(cells),
        )
        .map_err(|e| CellError::Bad(format!("{file}: {e}")))?;
        if cells.len() != 1 {
            return Err(CellError::Bad(format!(
                "{file} {filters:?}: {} cells match, not one",
                cells.len()
            )));
        }
        let planned = cells.remove(0);
        let name = format!("{} {}", planned.scenario.name, planned.cell.id());
        if let Some(why) = &planned.skip {
            return Err(CellError::Skipped(format!("{name}: {why}")));
        }
        Ok(BenchCell {
            name,
            planned,
            batches: 0,
        })
    }

    /// Runs `trials` trials of the cell, `jobs` at a time, and returns their records.
    pub fn run(&mut self, engine: &Engine, trials: u64, jobs: usize) -> Vec<TrialRecord> {
        let mut cell = self.planned.clone();
        cell.trials = u32::try_from(trials).unwrap_or(u32::MAX);
        cell.base_seed = self
            .planned
            .base_seed
            .wrapping_add(self.batches.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        self.batches += 1;
        let records = execute(engine, std::slice::from_ref(&cell), jobs, None, true)
            .unwrap_or_else(|e| panic!("{}: running its trials: {e}", self.name));
        assert_eq!(
            records.len() as u64,
            trials,
            "{}: the run was cancelled",
            self.name
        );
        for r in &records {
            assert!(
                r.leaks.is_empty(),
                "{} trial {}: left {:?} behind",
                self.name,
                r.trial,
                r.leaks
            );
        }
        records
    }
}

/// An engine for benches: wedge's binaries from this workspace's release build.
pub fn engine() -> Engine {
    let mut engine = Engine::new();
    // The bench runs from target/release/deps; the subjects are in target/release.
    engine.bin_dir = crate::release_binary("wedge-subject")
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    engine
}
