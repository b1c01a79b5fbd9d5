//! `wedge list`: the scenarios, their cells and each cell's expectation, as a run would plan
//! them here.
//!
//! Guarantee: listing changes nothing and starts nothing: it plans with the facts a run would
//! find ([`wedge::exec::host_facts::surveyed`]), never builds the trial engine, and never probes; an
//! expectation a run resolves with this host's probes is shown as decided at run time.

use std::path::PathBuf;

use super::common::{BackendArgs, Failure};
use wedge::exec::runner::{PlanOptions, load_scenarios, plan};
use wedge::model::cell::CellFilter;
use wedge::plan::awaits_host_probes;
use wedge::plan::backend::Target;

/// List scenarios, their cells and each cell's expectation.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Scenario files or directories (default: the default suite).
    scenarios: Vec<PathBuf>,
    /// Only cells with AXIS=VALUE.
    #[arg(long = "cell", value_name = "AXIS=VALUE")]
    cells: Vec<CellFilter>,
    #[command(flatten)]
    backend: BackendArgs,
    /// The whole matrix, as `wedge run --full` plans it (default: the quick plan `wedge run`
    /// runs without it).
    #[arg(long)]
    full: bool,
}

pub fn list(args: &ListArgs) -> Result<(), Failure> {
    let loaded = load_scenarios(&args.scenarios)?;
    // Planned with the VM support `run` would have, so a cell `run` boots a VM for is shown as
    // running there, not as skipped.
    let vms = wedge::vm::support::HostVms::detect();
    let cells = plan(
        &wedge::exec::host_facts::surveyed(),
        &loaded,
        &PlanOptions {
            filters: args.cells.clone(),
            depth: super::common::depth(args.full),
            ..super::common::backend_options(&args.backend, &vms)
        },
    )?;
    let mut current = String::new();
    for c in &cells {
        if c.scenario.name != current {
            current = c.scenario.name.clone();
            wedge::outln!(
                "{} ({}, {} trials, deadline {} ms, quiescence {} ms){}",
                c.scenario.name,
                c.scenario.file.display(),
                c.trials,
                c.scenario.deadline.as_millis(),
                c.scenario.quiescence.as_millis(),
                if c.scenario.description.is_empty() {
                    String::new()
                } else {
                    format!("\n  {}", c.scenario.description.trim())
                }
            );
        }
        let skip = match (&c.skip, &c.target) {
            (Some(why), _) => format!("  [skipped here: {why}]"),
            (None, Target::Vm(vm)) => format!(
                "  [in a VM: kernel {}, {} vCPUs, {} trials]",
                vm.kernel.name, vm.cpus, c.trials
            ),
            (None, Target::Host) if awaits_host_probes(c) => {
                "  [overrides keyed on probes: decided at run time]".to_string()
            }
            (None, Target::Host) => String::new(),
        };
        wedge::outln!(
            "  {:<40} expect {}{skip}",
            c.cell.id(),
            c.expectation.describe()
        );
    }
    Ok(())
}
