//! Planning a run: which cells of which scenarios run (filters, shards), what each expects on
//! this kernel, whether this host can run it, and each trial's seed. Planning is the same
//! whatever executor runs the trials, so a trial's identity and seed never depend on where it
//! ran.
//!
//! Expectations keyed on kernel probes are resolved with the probe values of the machine the
//! cell runs on: the host is probed once per plan, and only when a planned host cell's scenario
//! needs it ([`HostProbes`]); a VM cell's expectation is provisional (resolved with the
//! committed reference report of its kernel, if any) and re-resolved by the guest with its own
//! probes.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::backend::{Backend, Target, VmHandle, Wants, choose};
use crate::cell::{Cell, CellFilter, Shard};
use crate::probe::ProbeValues;
use crate::scenario::{Expectation, Scenario};
use crate::suite::InputError;
use crate::trial::{Engine, trial_seed};

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
    pub shard: Option<crate::record::ShardMark>,
    /// Where its trials run.
    pub target: Target,
    /// CPUs each trial gets (the `cpus` axis, else `--cpus`): pinned on the host, the vCPU
    /// count of a VM.
    pub cpus: Option<usize>,
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

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub filters: Vec<CellFilter>,
    pub shard: Option<Shard>,
    pub trials: Option<u32>,
    pub seed: Option<u64>,
    /// `--backend`.
    pub backend: Backend,
    /// `--kernel`: for cells without a `kernel` axis.
    pub kernel: Option<String>,
    /// `--cpus`: for cells without a `cpus` axis.
    pub cpus: Option<usize>,
    /// What VM support this machine has.
    pub vm: VmHandle,
}

/// What `cell` asks for: its axes, else the run's options.
pub fn wants(cell: &Cell, options: &PlanOptions) -> Wants {
    Wants {
        kernel: cell
            .get("kernel")
            .map(str::to_string)
            .or_else(|| options.kernel.clone()),
        cpus: crate::trial::cpus_wanted(cell).or(options.cpus),
    }
}

/// The host's probe values, probed at most once, on first need.
pub struct HostProbes {
    wedge: PathBuf,
    values: OnceLock<ProbeValues>,
}

impl HostProbes {
    /// Probes the host by re-executing `wedge` (the `wedge` binary next to this program's).
    pub fn new(wedge: PathBuf) -> HostProbes {
        HostProbes {
            wedge,
            values: OnceLock::new(),
        }
    }

    /// The host's values, probing it now if it was not yet.
    pub fn get(&self) -> &ProbeValues {
        self.values.get_or_init(|| {
            let mut options = crate::probe::run::SuiteOptions::this_program(1);
            options.wedge = self.wedge.clone();
            let results = crate::probe::run::run_suite(&options);
            results.into_iter().map(|r| (r.id, r.value)).collect()
        })
    }

    /// Whether the host was probed.
    pub fn probed(&self) -> bool {
        self.values.get().is_some()
    }
}

impl Default for HostProbes {
    fn default() -> HostProbes {
        HostProbes::new(crate::subject::own_dir().join("wedge"))
    }
}

/// The probe values a cell on `target` is planned with: the host's (probed now if need be), or
/// a VM kernel's from the committed reference reports (the guest re-resolves with its own).
fn planning_probes(target: &Target, probes: &HostProbes) -> Option<ProbeValues> {
    match target {
        Target::Host => Some(probes.get().clone()),
        Target::Vm(vm) => crate::probe::known::KnownReports::builtin()
            .ok()?
            .kernels
            .into_iter()
            .find(|k| k.release == vm.kernel.release)
            .map(|k| k.values()),
    }
}

/// Cell `cell_index` of `s` as planned on this host.
fn plan_cell(
    engine: &Engine,
    s: &Arc<Scenario>,
    (cell, cell_index): (Cell, usize),
    options: &PlanOptions,
    probes: &HostProbes,
) -> PlannedCell {
    let wants = wants(&cell, options);
    let (target, skip) = match choose(options.backend, &wants, &engine.host, &*options.vm.0) {
        Ok(target) => (target, None),
        Err(why) => (Target::Host, Some(why)),
    };
    // A limit the scenario sets is never dropped: without its controller the cell cannot run.
    let skip = skip.or_else(|| match target {
        Target::Host => engine.limits.refuses(&s.limits),
        _ => None,
    });
    let values = (s.uses_probes() && skip.is_none())
        .then(|| planning_probes(&target, probes))
        .flatten();
    let version = target.kernel_version(&engine.host);
    let mut expectation = s.expectation_with(&cell, version, values.as_ref());
    if let Target::Vm(vm) = &target {
        // Time bounds are host times; an emulated guest is slower by its scale.
        expectation.within_ms = expectation
            .within_ms
            .map(|ms| time_scaled_ms(ms, vm.time_scale));
    }
    let mut trials = options.trials.unwrap_or(s.trials);
    if expectation.min_rate.is_some() {
        // A rate needs trials to mean anything (see gate::MIN_RATE_TRIALS).
        trials = trials.max(crate::gate::MIN_RATE_TRIALS);
    }
    PlannedCell {
        expectation,
        skip,
        trials,
        base_seed: options.seed.unwrap_or(s.seed),
        shard: None,
        scenario: Arc::clone(s),
        cell,
        cell_index,
        target,
        cpus: wants.cpus,
    }
}

/// The cells of `scenarios` selected by `options`, in suite order. Filters naming an axis no
/// scenario has are bad input.
pub fn plan(
    engine: &Engine,
    scenarios: &[Arc<Scenario>],
    options: &PlanOptions,
) -> Result<Vec<PlannedCell>, InputError> {
    for f in &options.filters {
        if !scenarios
            .iter()
            .any(|s| s.axes.iter().any(|a| a.name == f.axis))
        {
            return Err(InputError::Usage(format!(
                "--cell {}={}: no scenario has an axis \"{}\"",
                f.axis, f.value, f.axis
            )));
        }
    }
    let probes = HostProbes::default();
    let mut out = Vec::new();
    let mut position = 0;
    for s in scenarios {
        for (cell_index, cell) in s.cells().into_iter().enumerate() {
            let pos = position;
            position += 1;
            if !cell.matches(&options.filters) || options.shard.is_some_and(|sh| !sh.contains(pos))
            {
                continue;
            }
            out.push(plan_cell(engine, s, (cell, cell_index), options, &probes));
        }
    }
    if out.is_empty() && !options.filters.is_empty() {
        return Err(InputError::Usage(
            "no cell matches the --cell filters".into(),
        ));
    }
    if let Some(sh) = options.shard {
        let plan_cells = scenarios
            .iter()
            .flat_map(|s| s.cells())
            .filter(|c| c.matches(&options.filters))
            .count();
        let mark = crate::record::ShardMark {
            index: sh.index,
            count: sh.count,
            plan_cells,
        };
        for c in &mut out {
            c.shard = Some(mark);
        }
    }
    if out.is_empty() {
        return Err(InputError::Usage(match options.shard {
            Some(sh) => format!("shard {}/{} holds no cells", sh.index, sh.count),
            None => "the plan has no cells: no scenario has any".into(),
        }));
    }
    Ok(out)
}

/// The one cell of `s` the filters name (for `wedge replay`), planned as a run would plan it.
pub fn plan_one(
    engine: &Engine,
    s: &Arc<Scenario>,
    filters: &[CellFilter],
    options: &PlanOptions,
) -> Result<PlannedCell, InputError> {
    let matching: Vec<(usize, Cell)> = s
        .cells()
        .into_iter()
        .enumerate()
        .filter(|(_, c)| c.matches(filters))
        .collect();
    match matching.as_slice() {
        [(cell_index, cell)] => Ok(plan_cell(
            engine,
            s,
            (cell.clone(), *cell_index),
            options,
            &HostProbes::default(),
        )),
        [] => Err(InputError::Usage(format!(
            "no cell of {} matches the --cell filters",
            s.name
        ))),
        many => {
            let ids: Vec<String> = many.iter().map(|(_, c)| c.id()).collect();
            Err(InputError::Usage(format!(
                "the --cell filters match {} cells; name one of: {}",
                many.len(),
                ids.join("  ")
            )))
        }
    }
}

/// A host time bound as it holds in a guest that runs `time_scale` times slower than the host
/// (1 on the host and under KVM): the one place host bounds become guest bounds (deadlines,
/// `within_ms`, VM budgets).
pub fn time_scaled(bound: std::time::Duration, time_scale: u32) -> std::time::Duration {
    bound.saturating_mul(time_scale.max(1))
}

/// [`time_scaled`] for a bound in milliseconds (`within_ms`).
pub fn time_scaled_ms(ms: u64, time_scale: u32) -> u64 {
    let scaled = time_scaled(std::time::Duration::from_millis(ms), time_scale);
    u64::try_from(scaled.as_millis()).unwrap_or(u64::MAX)
}
