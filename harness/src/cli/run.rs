//! `wedge run`: plan the cells, run them, write `trials.jsonl` as trials finish and the
//! reports at the end (also when interrupted). With `--gate`, print the gate and exit 1 when it
//! fails; without, print how many cells missed their expectations and exit 0 (a measurement,
//! as `cargo bench` is; `--gate` is the `cargo test` of it).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use wedge_core::sync::Mutex;

use super::common::{Failure, install_interrupt, print_expectations, print_gate};
use wedge::engine::trial::Engine;
use wedge::exec::runner::{PlanOptions, default_jobs, execute_with, load_scenarios, plan};
use wedge::model::cell::{CellFilter, Shard};
use wedge::model::record::JsonlWriter;
use wedge::plan::needs_host_probes;

/// Run scenarios (default: every *.toml in the repository's scenarios/ directory, or
/// $WEDGE_SCENARIOS) and write trials.jsonl, summary.json, summary.md, junit.xml, index.html.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Scenario files or directories of them.
    scenarios: Vec<PathBuf>,
    /// Trials per cell (overrides each scenario's `trials`).
    #[arg(long)]
    trials: Option<u32>,
    /// Run only cells with AXIS=VALUE (repeat; values of one axis are alternatives).
    #[arg(long = "cell", value_name = "AXIS=VALUE")]
    cells: Vec<CellFilter>,
    /// Trials run in parallel (default: the host's CPU count; pinned trials never share CPUs).
    #[arg(long)]
    jobs: Option<usize>,
    /// Results directory (default: wedge-results/<UTC time>). Must not hold results yet.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Exit 1 when a cell misses its expectation (or was skipped, or a shard is missing).
    /// Without it the run reports how many cells missed and exits 0.
    #[arg(long)]
    gate: bool,
    /// With --gate: cells this host cannot run (listed either way) do not fail the gate.
    #[arg(long)]
    allow_skipped: bool,
    /// Run only the I-th of N deterministic slices of the cells (1-based), e.g. 2/4.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// Perturb the subject's scheduling in every cell without a `chaos` axis: off, rr
    /// (threads demoted to SCHED_IDLE at seeded times, the subject squeezed onto one CPU), pct
    /// (running threads demoted at those times, CPUs left alone) or syscall (threads held at
    /// seeded syscall entries, by a ptrace tracer); `harness/src/model/chaos.rs`.
    #[arg(long, value_name = "MODE")]
    chaos: Option<wedge::model::chaos::Chaos>,
    /// Base seed (overrides each scenario's `seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// Run 1-vCPU guests (TCG) under QEMU's record/replay and keep the recording of every boot
    /// in which a trial failed or hung, under OUT/recordings (`wedge replay --exact` replays
    /// it); guests with more vCPUs run in seeded virtual time, which QEMU cannot record.
    #[arg(long)]
    record: bool,
    #[command(flatten)]
    backend: super::common::BackendArgs,
    /// Run the whole matrix with every trial. Without it the run is the quick plan: every
    /// scenario on the host, each kernel and vCPU count of each scenario once in a VM with trial
    /// counts scaled to the guest's speed, and `opt_in` axis values only when a --cell filter
    /// names their axis (`harness/src/plan/depth.rs`).
    #[arg(long)]
    full: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

fn default_out() -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    PathBuf::from("wedge-results").join(stamp.replace(':', "-"))
}

/// Opens `out/trials.jsonl`, which must not hold results yet.
fn open_results(out: &std::path::Path) -> Result<(PathBuf, JsonlWriter), Failure> {
    let jsonl = out.join("trials.jsonl");
    if jsonl.metadata().is_ok_and(|m| m.len() > 0) {
        return Err(Failure::Input(format!(
            "{} already holds results; choose another --out (or merge with `wedge report`)",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| Failure::Input(format!("{}: {e}", out.display())))?;
    let writer = JsonlWriter::open(&jsonl)
        .map_err(|e| Failure::Input(format!("{}: {e}", jsonl.display())))?;
    Ok((jsonl, writer))
}

pub fn run(args: RunArgs) -> Result<(), Failure> {
    if args.trials == Some(0) {
        return Err(Failure::Input("--trials must be at least 1".into()));
    }
    if args.jobs == Some(0) {
        return Err(Failure::Input("--jobs must be at least 1".into()));
    }
    let loaded = load_scenarios(&args.scenarios)?;
    let engine = Engine::new();
    let vms = wedge::vm::support::HostVms::detect();
    let options = PlanOptions {
        filters: args.cells.clone(),
        shard: args.shard,
        trials: args.trials,
        seed: args.seed,
        depth: super::common::depth(args.full),
        chaos: args.chaos,
        ..super::common::backend_options(&args.backend, &vms)
    };
    let cells = wedge::exec::host_facts::plan_probing(
        wedge::exec::host_facts::of_engine(&engine),
        |facts| plan(facts, &loaded, &options),
        |cells| needs_host_probes(cells),
    )?;
    let out = args.out.clone().unwrap_or_else(default_out);
    let (jsonl, writer) = open_results(&out)?;
    let writer = Mutex::new(writer);
    install_interrupt(&engine);
    let jobs = args.jobs.unwrap_or_else(|| default_jobs(&engine));
    if !args.quiet {
        wedge::errln!(
            "wedge: {} cells of {} scenarios ({}), {} jobs, isolation {}, {}, results in {}",
            cells.len(),
            loaded.len(),
            if args.full {
                "the full matrix"
            } else {
                "the quick plan; --full for the whole matrix"
            },
            jobs,
            engine.host.isolation,
            super::common::vm_summary(&cells, &vms),
            out.display()
        );
    }
    let settings = vms.settings().map(|mut s| {
        s.record = args.record.then(|| out.join("recordings"));
        s
    });
    let records = execute_with(&engine, &cells, jobs, settings, Some(&writer), args.quiet)
        .map_err(|e| Failure::Io(format!("writing {}: {e}", jsonl.display())))?;
    finish(&args, &engine, &cells, &records, (&out, &jsonl))
}

/// Writes the reports, prints the table and the verdict (a gate's, or the expectations'), and
/// says how the run ends.
fn finish(
    args: &RunArgs,
    engine: &Engine,
    cells: &[wedge::exec::runner::PlannedCell],
    records: &[wedge::model::record::TrialRecord],
    (out, jsonl): (&std::path::Path, &std::path::Path),
) -> Result<(), Failure> {
    let interrupted = engine.cancel.load(Ordering::SeqCst);
    let summary = wedge::report::stats::summarize(records);
    wedge::report::write_all(out, &summary)
        .map_err(|e| Failure::Io(format!("writing reports in {}: {e}", out.display())))?;
    if !args.quiet {
        wedge::errln!(
            "wedge: wrote {}/summary.md (and summary.json, junit.xml, index.html)",
            out.display()
        );
    }
    if !args.quiet {
        // The result at a glance, the same layout as summary.md's tables.
        wedge::outln!("\n{}", wedge::report::terminal::render(&summary).trim_end());
    }
    if interrupted {
        print_interrupted(cells, records, args.gate, jsonl);
        return Err(Failure::Interrupted);
    }
    if !args.gate {
        // Without --gate a run measures: it reports what missed and exits 0.
        print_expectations(&summary);
        return Ok(());
    }
    let policy = wedge::report::gate::GatePolicy {
        allow_skipped: args.allow_skipped,
    };
    let failures = wedge::report::gate::gate(&summary, records, policy);
    print_gate(&failures);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failure::Gate)
    }
}

/// What an interrupted run says: how far it got, and never a verdict (it proves nothing either
/// way); "gate" only when a gate was asked for.
fn print_interrupted(
    cells: &[wedge::exec::runner::PlannedCell],
    records: &[wedge::model::record::TrialRecord],
    gate: bool,
    jsonl: &std::path::Path,
) {
    let planned: u64 = cells.iter().map(|c| u64::from(c.trials)).sum();
    let ran = records
        .iter()
        .filter(|r| r.verdict != wedge::model::record::Verdict::Skipped)
        .count();
    let what = if gate { "gate" } else { "expectations" };
    wedge::outln!(
        "{what}: none — the run was interrupted after {ran} of {planned} planned trials; \
         finished trials are kept in {}",
        jsonl.display()
    );
}
