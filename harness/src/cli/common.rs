//! What the verbs share: how a verb fails (each failure is one exit code), the interrupt
//! handler, reading results directories and printing a gate.

use std::path::PathBuf;
use std::sync::Arc;

use wedge::engine::trial::Engine;
use wedge::exec::runner::InputError;
use wedge::model::record::{TrialRecord, read_jsonl};

/// How a verb fails.
pub enum Failure {
    /// Bad input (exit 2).
    Input(String),
    /// The gate failed, or a replayed trial missed its expectation (exit 1).
    Gate,
    /// SIGINT or SIGTERM (exit 130).
    Interrupted,
    /// Writing results failed (exit 1).
    Io(String),
    /// `wedge replay --exact` ran, and the replay is not the recording (exit 3).
    Diverged,
}

impl From<InputError> for Failure {
    fn from(e: InputError) -> Failure {
        Failure::Input(e.to_string())
    }
}

/// A first SIGINT/SIGTERM cancels the run (finished trials and reports are kept); a second
/// one ends wedge at once.
pub fn install_interrupt(engine: &Engine) {
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ =
            signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&engine.cancel));
        let _ = signal_hook::flag::register(sig, Arc::clone(&engine.cancel));
    }
}

/// Prints the gate's verdict and every cell that misses its expectation.
pub fn print_gate(failures: &[wedge::report::gate::GateFailure]) {
    if failures.is_empty() {
        wedge::outln!("gate: pass — every cell meets its expectation");
    } else {
        wedge::outln!(
            "gate: FAIL — {} cells miss their expectation:",
            failures.len()
        );
        for f in failures {
            wedge::outln!("  {} {}: {}", f.scenario, f.cell, f.reason);
        }
    }
}

/// What a run without `--gate` says: how many cells missed their expectations (each listed
/// with why), and the cells this host skipped. It never says "gate": none was asked for.
pub fn print_expectations(summary: &wedge::report::stats::Summary) {
    let misses = wedge::report::gate::evaluate(summary);
    let skipped: Vec<_> = summary
        .cells
        .iter()
        .filter(|c| c.skipped.is_some())
        .collect();
    let judged = summary.cells.len() - skipped.len();
    if misses.is_empty() {
        wedge::outln!("expectations: all {judged} cells met");
    } else {
        wedge::outln!(
            "expectations: {} of {judged} cells missed (--gate exits 1 on this):",
            misses.len()
        );
        for f in &misses {
            wedge::outln!("  {} {}: {}", f.scenario, f.cell, f.reason);
        }
    }
    if !skipped.is_empty() {
        wedge::outln!(
            "expectations: {} cells skipped (this host cannot run them):",
            skipped.len()
        );
        for c in skipped {
            let why = c.skipped.as_deref().unwrap_or_default();
            wedge::outln!("  {} {}: {why}", c.scenario, c.cell_id);
        }
    }
}

/// Every record of the `trials.jsonl` of each directory.
pub fn read_dirs(dirs: &[PathBuf]) -> Result<Vec<TrialRecord>, Failure> {
    let mut all = Vec::new();
    for d in dirs {
        let path = d.join("trials.jsonl");
        if !path.is_file() {
            return Err(Failure::Input(format!("{}: no trials.jsonl", d.display())));
        }
        all.extend(read_jsonl(&path).map_err(|e| Failure::Input(e.to_string()))?);
    }
    Ok(all)
}

/// Plan options for `--backend`, `--kernel` and `--cpus` on this machine.
pub fn backend_options(
    args: &BackendArgs,
    vms: &wedge::vm::support::HostVms,
) -> wedge::exec::runner::PlanOptions {
    wedge::exec::runner::PlanOptions {
        backend: args.backend,
        kernel: args.kernel.clone(),
        cpus: args.cpus.map(|c| c as usize),
        vm: wedge::plan::backend::VmHandle(Arc::new(vms.clone())),
        ..Default::default()
    }
}

/// How many cells run in VMs, and how (for the run's first line).
pub fn vm_summary(
    cells: &[wedge::exec::runner::PlannedCell],
    vms: &wedge::vm::support::HostVms,
) -> String {
    let in_vm = cells
        .iter()
        .filter(|c| c.skip.is_none() && matches!(c.target, wedge::plan::backend::Target::Vm(_)))
        .count();
    match (in_vm, vms.settings()) {
        (0, _) => "all on the host".to_string(),
        (n, Some(s)) => format!("{n} cells in VMs ({})", s.accel.name()),
        (n, None) => format!("{n} cells in VMs (unavailable)"),
    }
}

/// Where cells run: `--backend`, `--kernel`, `--cpus`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BackendArgs {
    /// host: this machine only; vm: every cell in a QEMU VM; auto: this machine when it can,
    /// else a VM (cells needing another kernel or more CPUs).
    #[arg(long, value_enum, default_value_t = wedge::plan::backend::Backend::Auto)]
    pub backend: wedge::plan::backend::Backend,
    /// Kernel for cells without a `kernel` axis: a name from kernels.toml or a bzImage path.
    #[arg(long, value_name = "NAME|PATH")]
    pub kernel: Option<String>,
    /// CPUs for cells without a `cpus` axis (pinned on the host, vCPUs in a VM).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cpus: Option<u32>,
}

/// The plan depth of `wedge run` and `wedge list`: the quick plan unless `--full`.
pub fn depth(full: bool) -> wedge::plan::Depth {
    if full {
        wedge::plan::Depth::Full
    } else {
        wedge::plan::Depth::Quick
    }
}
