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

/// Re-run one trial exactly as recorded: same scenario, cell and seed.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// The scenario file.
    scenario: PathBuf,
    /// The cell (every axis of it), AXIS=VALUE each.
    #[arg(long = "cell", value_name = "AXIS=VALUE")]
    cells: Vec<CellFilter>,
    /// The trial's seed (from trials.jsonl or a report).
    #[arg(long)]
    seed: u64,
    /// Perturb the subject's scheduling when the cell has no a `chaos` axis: off or rr
    /// (threads demoted to SCHED_IDLE at seeded times; `harness/src/model/chaos.rs`).
    #[arg(long, value_name = "MODE")]
    chaos: Option<wedge::model::chaos::Chaos>,
    /// Also append the record to DIR/trials.jsonl.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    backend: super::common::BackendArgs,
}

pub fn replay(args: ReplayArgs) -> Result<(), Failure> {
    let loaded = load_scenarios(std::slice::from_ref(&args.scenario))?;
    // A directory loads every scenario in it: none (a results directory) or several is not a
    // trial to replay.
    if loaded.len() != 1 {
        return Err(Failure::Input(format!(
            "{}: replay takes one scenario file; this holds {} scenarios",
            args.scenario.display(),
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
        seed: args.seed,
    };
    let one = One(Mutex::new(None));
    let executors = Executors::new(&engine, 1, vms.settings());
    executors.run(std::slice::from_ref(&cell), vec![trial], &one);
    let Some(record) = one.0.into_inner() else {
        return Err(Failure::Interrupted);
    };
    print_record(&record);
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

fn print_record(r: &TrialRecord) {
    wedge::outln!("{} {} seed {}", r.scenario, r.cell.id(), r.seed);
    wedge::outln!("verdict: {} ({})", r.verdict.as_str(), r.reason);
    wedge::outln!(
        "expectation: {} — {}",
        r.expectation.describe(),
        if r.met { "met" } else { "MISSED" }
    );
    if let Some(class) = &r.loss {
        wedge::outln!("lost: {class} (the scenario's [[classify]])");
    }
    wedge::outln!("time to verdict: {:.1} ms", r.time_to_verdict_ms);
    if let Some(d) = &r.diagnosis {
        wedge::outln!("diagnosis ({}):", d.reason);
        for p in &d.processes {
            wedge::outln!(
                "  {}[{}] ppid {} {} — {}",
                p.name,
                p.pid,
                p.ppid,
                p.state,
                p.cmdline.join(" ")
            );
            for t in &p.threads {
                wedge::outln!(
                    "    {}[{}] {}{}{} (for {} ms)",
                    t.name,
                    t.tid,
                    t.phrase(),
                    t.detail
                        .as_ref()
                        .map_or_else(String::new, |d| format!(" — {d}")),
                    t.wchan
                        .as_ref()
                        .map_or_else(String::new, |w| format!(", wchan {w}")),
                    t.for_ms
                );
                for frame in t.kernel_stack.iter().take(8) {
                    wedge::outln!("        {frame}");
                }
            }
        }
    }
    for l in &r.leaks {
        wedge::outln!("leak: {l}");
    }
    for l in &r.lingering {
        wedge::outln!("lingering: {l}");
    }
    if !r.log.is_empty() {
        wedge::outln!("log:");
        for l in &r.log {
            wedge::outln!("  {l}");
        }
    }
    if !r.stdout_tail.is_empty() {
        wedge::outln!("stdout:\n{}", r.stdout_tail);
    }
    if !r.stderr_tail.is_empty() {
        wedge::outln!("stderr:\n{}", r.stderr_tail);
    }
}
