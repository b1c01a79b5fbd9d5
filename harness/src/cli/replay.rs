//! `wedge replay SCENARIO --cell ... --seed S`: re-run one trial exactly as recorded (same
//! scenario, cell and seed), planned and executed the way `wedge run` plans and executes it,
//! and print everything the record holds.

use std::path::PathBuf;
use wedge::exec::runner::PlanOptions;
use wedge_core::sync::Mutex;

use super::common::{Failure, install_interrupt};
use wedge::engine::trial::Engine;
use wedge::exec::runner::{PlannedTrial, load_scenarios, plan_one};
use wedge::exec::{Executor, Executors, TrialSink};
use wedge::model::cell::CellFilter;
use wedge::model::record::{JsonlWriter, TrialRecord};

/// Keeps the one record of a replay.
struct One(Mutex<Option<TrialRecord>>);

impl TrialSink for One {
    fn finished(&self, _: &PlannedTrial, record: TrialRecord) {
        *self.0.lock() = Some(record);
    }
}

/// Re-run one trial exactly as recorded: same scenario, cell and seed; or, with --exact, a
/// recorded 1-vCPU guest boot instruction for instruction.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// The scenario file.
    #[arg(required_unless_present = "exact")]
    scenario: Option<PathBuf>,
    /// The cell (every axis of it), AXIS=VALUE each.
    #[arg(long = "cell", value_name = "AXIS=VALUE")]
    cells: Vec<CellFilter>,
    /// The trial's seed (from trials.jsonl or a report).
    #[arg(long, required_unless_present = "exact")]
    seed: Option<u64>,
    /// Replay a recording kept by `wedge run --record` (a directory under RESULTS/recordings)
    /// under QEMU's replay, and check that the console stream and every trial's verdict and
    /// diagnosis are the recorded ones, byte for byte (exit 3 when they are not).
    #[arg(long, value_name = "RECORDING", conflicts_with_all = ["scenario", "cells", "seed", "chaos", "record"])]
    exact: Option<PathBuf>,
    /// Run a VM cell's guest under instruction counting: a 1-vCPU guest recorded (kept under
    /// OUT/recordings when the trial fails or hangs; needs --out), more vCPUs in seeded virtual
    /// time (`harness/src/vm/qemu.rs`).
    #[arg(long, requires = "out")]
    record: bool,
    /// Perturb the subject's scheduling when the cell has no `chaos` axis: off, rr
    /// (threads demoted to SCHED_IDLE at seeded times, the subject squeezed onto one CPU), pct
    /// (running threads demoted at those times, CPUs left alone) or syscall (threads held at
    /// seeded syscall entries, by a ptrace tracer); `harness/src/model/chaos.rs`.
    #[arg(long, value_name = "MODE")]
    chaos: Option<wedge::model::chaos::Chaos>,
    /// Also append the record to DIR/trials.jsonl.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    backend: super::common::BackendArgs,
}

pub fn replay(args: ReplayArgs) -> Result<(), Failure> {
    if let Some(recording) = &args.exact {
        return super::replay_exact::replay_exact(recording);
    }
    let (Some(scenario), Some(seed)) = (args.scenario.clone(), args.seed) else {
        return Err(Failure::Input("replay needs a scenario and --seed".into()));
    };
    let loaded = load_scenarios(std::slice::from_ref(&scenario))?;
    // A directory loads every scenario in it: none (a results directory) or several is not a
    // trial to replay.
    if loaded.len() != 1 {
        return Err(Failure::Input(format!(
            "{}: replay takes one scenario file; this holds {} scenarios",
            scenario.display(),
            loaded.len()
        )));
    }
    let engine = Engine::new();
    let vms = wedge::vm::support::HostVms::detect();
    let options = PlanOptions {
        chaos: args.chaos,
        ..super::common::backend_options(&args.backend, &vms)
    };
    let cell = wedge::exec::host_facts::plan_probing(
        wedge::exec::host_facts::of_engine(&engine),
        |facts| plan_one(facts, &loaded[0], &args.cells, &options),
        wedge::plan::awaits_host_probes,
    )?;
    if let Some(why) = &cell.skip {
        return Err(Failure::Input(why.clone()));
    }
    install_interrupt(&engine);
    let trial = PlannedTrial {
        cell: 0,
        trial: 0,
        seed,
    };
    let one = One(Mutex::new(None));
    let settings = vms.settings().map(|mut s| {
        s.record = (args
            .record
            .then(|| args.out.as_ref().map(|o| o.join("recordings"))))
        .flatten();
        s
    });
    let executors = Executors::new(&engine, 1, settings);
    executors.run(std::slice::from_ref(&cell), vec![trial], &one);
    let Some(record) = one.0.into_inner() else {
        return Err(Failure::Interrupted);
    };
    super::show_record::print_record(&record);
    if let Some(dir) = args.out {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Failure::Input(format!("{}: {e}", dir.display())))?;
        JsonlWriter::open(&dir.join("trials.jsonl"))
            .and_then(|mut w| w.append(&record))
            .map_err(|e| Failure::Io(e.to_string()))?;
    }
    if record.met {
        Ok(())
    } else {
        Err(Failure::Gate)
    }
}
