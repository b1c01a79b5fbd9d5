//! Planning a run: which cells of which scenarios run (filters, shards), what each expects on
//! this kernel, whether this host can run it, and each trial's seed. Planning is the same
//! whatever executor runs the trials, so a trial's identity and seed never depend on where it
//! ran.
//!
//! Guarantee: planning is pure. It starts no process, touches no cgroup and writes no file: what
//! it knows of the machine comes in as a [`HostFacts`] value the caller gathered, so `wedge list`
//! changes nothing and planning twice gives the same plan.
//!
//! Expectations keyed on kernel probes are resolved with the probe values of the machine the
//! cell runs on: the host's when the caller probed it ([`HostFacts::probes`]; a caller that has
//! not asks [`needs_host_probes`] whether the plan needs them), and a VM cell's provisionally,
//! with the committed reference report of its kernel (if any), the guest re-resolving it with
//! its own probes.

pub mod backend;
mod cell;
pub mod commands;
pub mod depth;
pub mod suite;
use std::sync::Arc;

use crate::model::cell::{Cell, CellFilter, Shard};
use crate::model::limit_spec::Enforcement;
use crate::model::probe_ids::ProbeValues;
use crate::model::record::Host;
use crate::model::scenario::{Expectation, ExpectationOf, MIN_RATE_TRIALS, Scenario};
use crate::plan::backend::{Backend, Target, VmHandle, Wants, choose};
use crate::plan::suite::InputError;
pub use cell::{PlannedCell, PlannedTrial};
pub use depth::Depth;

/// What planning knows about this machine, gathered by the caller before planning.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// Its kernel and CPUs: what decides whether a cell runs here.
    pub host: Host,
    /// Which limits it enforces: a cell whose scenario sets one it cannot is skipped.
    pub limits: Enforcement,
    /// Its probe values; `None`: not probed, so no override keyed on probes applies to a cell
    /// planned here (see [`needs_host_probes`]).
    pub probes: Option<ProbeValues>,
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
    /// The whole matrix, or the quick plan ([`depth`]).
    pub depth: Depth,
    /// `--chaos`: for cells without a `chaos` axis.
    pub chaos: Option<crate::model::chaos::Chaos>,
}

/// What `cell` asks for: its axes, else the run's options.
pub fn wants(cell: &Cell, options: &PlanOptions) -> Wants {
    Wants {
        kernel: cell
            .get("kernel")
            .map(str::to_string)
            .or_else(|| options.kernel.clone()),
        cpus: crate::model::cell::cpus_wanted(cell).or(options.cpus),
    }
}

/// Whether a cell of `cells` runs on this host with an expectation keyed on probes: then the
/// plan needs the host's probe values ([`HostFacts::probes`]) to be final.
pub fn needs_host_probes(cells: &[PlannedCell]) -> bool {
    cells.iter().any(awaits_host_probes)
}

/// Whether `c` runs on this host and its scenario keys expectations on probes.
pub fn awaits_host_probes(c: &PlannedCell) -> bool {
    c.skip.is_none() && c.target == Target::Host && c.scenario.uses_probes()
}

/// The probe values a cell on `target` is planned with: the host's (if probed), or a VM
/// kernel's from the committed reference reports (the guest re-resolves with its own).
fn planning_probes(target: &Target, facts: &HostFacts) -> Option<ProbeValues> {
    match target {
        Target::Host => facts.probes.clone(),
        Target::Vm(vm) => crate::probe::known::KnownReports::builtin()
            .ok()?
            .kernels
            .into_iter()
            .find(|k| k.release == vm.kernel.release)
            .map(|k| k.values()),
    }
}

/// The expectation `of` a cell on a machine whose probes gave `probes` (`None`: not probed, so
/// no override keyed on probes applies), its time bounds scaled by `time_scale` (a guest's: an
/// emulated one is slower by it; 1 on the host). The one resolution every planner uses, the
/// host's and a guest's re-resolving with its own probes, so the two never disagree.
pub fn resolve(
    of: &ExpectationOf<'_>,
    time_scale: u32,
    probes: Option<&ProbeValues>,
) -> Expectation {
    let mut expectation = of.with(probes);
    // Time bounds are host times.
    expectation.within_ms = expectation
        .within_ms
        .map(|ms| time_scaled_ms(ms, time_scale));
    expectation
}

/// Why a guest cannot run `cell` of `s`, when it needs a program only the host has: the agent's
/// `--builder libcontainer-latest` hands over to `wedge-agent-latest`, a second build of the agent
/// (runtime/libcontainer-latest) that the guest image does not carry (`vm::support::GUEST_BINARIES`).
fn guest_lacks(s: &Scenario, cell: &Cell) -> Option<String> {
    let agent = matches!(
        s.subject.program,
        crate::model::scenario::Program::WedgeAgent { .. }
    );
    (agent && cell.get("builder") == Some("libcontainer-latest")).then(|| {
        "the guest image carries no wedge-agent-latest (the libcontainer-latest build is host-only)"
            .to_string()
    })
}

/// Cell `cell_index` of `s` as planned on this host.
fn plan_cell(
    facts: &HostFacts,
    s: &Arc<Scenario>,
    (cell, cell_index): (Cell, usize),
    options: &PlanOptions,
) -> PlannedCell {
    let wants = wants(&cell, options);
    let (target, skip) = match choose(options.backend, &wants, &facts.host, &*options.vm.0) {
        Ok(target) => (target, None),
        Err(why) => (Target::Host, Some(why.to_string())),
    };
    // A limit the scenario sets is never dropped: without its controller the cell cannot run.
    let skip = skip.or_else(|| match target {
        Target::Host => facts.limits.refuses(&s.limits),
        Target::Vm(_) => guest_lacks(s, &cell),
    });
    let values = (s.uses_probes() && skip.is_none())
        .then(|| planning_probes(&target, facts))
        .flatten();
    let time_scale = match &target {
        Target::Host => 1,
        Target::Vm(vm) => vm.time_scale,
    };
    let version = target.kernel_version(&facts.host);
    let expectation = resolve(
        &s.expectation_of(&cell, version),
        time_scale,
        values.as_ref(),
    );
    let mut trials = options.trials.unwrap_or(s.trials);
    if expectation.min_rate.is_some() {
        // A rate needs trials to mean anything (see MIN_RATE_TRIALS).
        trials = trials.max(MIN_RATE_TRIALS);
    }
    let chaos = s.chaos_of(&cell, options.chaos);
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
        chaos,
    }
}

/// The cells of `scenarios` selected by `options`, in suite order. Filters naming an axis no
/// scenario has are bad input.
pub fn plan(
    facts: &HostFacts,
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
    let mut selected = Vec::new();
    for s in scenarios {
        for (cell_index, cell) in s.cells().into_iter().enumerate() {
            let opted_out = options.depth == Depth::Quick && s.opted_out(&cell, &options.filters);
            if cell.matches(&options.filters) && !opted_out {
                selected.push(plan_cell(facts, s, (cell, cell_index), options));
            }
        }
    }
    if selected.is_empty() && !options.filters.is_empty() {
        return Err(InputError::Usage(
            "no cell matches the --cell filters".into(),
        ));
    }
    if options.depth == Depth::Quick {
        selected = depth::quick(selected, &options.filters, options.trials.is_some());
    }
    // Shards slice the selected cells, so every shard of one command line agrees on them.
    let plan_cells = selected.len();
    let mut out: Vec<PlannedCell> = selected
        .into_iter()
        .enumerate()
        .filter(|(pos, _)| options.shard.is_none_or(|sh| sh.contains(*pos)))
        .map(|(_, c)| c)
        .collect();
    if let Some(sh) = options.shard {
        let mark = crate::model::record::ShardMark {
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
    facts: &HostFacts,
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
        [(cell_index, cell)] => Ok(plan_cell(facts, s, (cell.clone(), *cell_index), options)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_applies_probes_then_scales_time_bounds() {
        let text = "[subject]\nkind = \"command\"\nargv = [\"true\"]\n[expect]\nwithin_ms = 100\n\
                    [[expect.when]]\nprobe = { recv_after_users_exit = \"blocks\" }\nwithin_ms = 200\n";
        let s = Scenario::parse(std::path::Path::new("r.toml"), text).unwrap();
        let cell = &s.cells()[0];
        let of = s.expectation_of(cell, "6.18.0");
        assert_eq!(resolve(&of, 1, None).within_ms, Some(100));
        let blocks = ProbeValues::from([("recv_after_users_exit".into(), "blocks".into())]);
        assert_eq!(resolve(&of, 1, Some(&blocks)).within_ms, Some(200));
        assert_eq!(resolve(&of, 4, Some(&blocks)).within_ms, Some(800));
        assert_eq!(resolve(&of, 3, None).within_ms, Some(300));
    }
}
