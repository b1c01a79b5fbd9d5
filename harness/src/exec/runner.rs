//! Running a plan: skipped cells are recorded at once, every other cell's trials go to an
//! [`Executor`], and every record, as it arrives, goes to the reporters (`trials.jsonl`,
//! progress) as [`Event`]s. The run returns every record, in plan order, whichever executor ran
//! them and in whatever order they finished.

use std::sync::atomic::{AtomicBool, Ordering};
use wedge_core::sync::Mutex;

use crate::engine::trial::{Engine, skipped_record};
use crate::exec::{Executor, Executors, TrialSink};
use crate::model::record::{JsonlWriter, TrialRecord};
pub use crate::plan::suite::{InputError, default_suite_dir, load_scenarios, toml_files};
pub use crate::plan::{PlanOptions, PlannedCell, PlannedTrial, plan, plan_one};
use crate::report::live::jsonl::JsonlReporter;
use crate::report::live::progress::Progress;
use crate::report::live::{Event, Reporter};
use crate::vm::support::VmSettings;

/// The default `--jobs`: as many as the host has CPUs, so trials do not compete for CPU time
/// (which could change timing-sensitive verdicts); the CPU pool keeps pinned trials apart.
pub fn default_jobs(engine: &Engine) -> usize {
    engine.host.cpus.max(1)
}

/// Runs every planned cell on this host with `jobs` workers, appending records to `writer` (if
/// any) as they finish. Returns every record (finished trials only, when cancelled).
pub fn execute(
    engine: &Engine,
    cells: &[PlannedCell],
    jobs: usize,
    writer: Option<&Mutex<JsonlWriter>>,
    quiet: bool,
) -> std::io::Result<Vec<TrialRecord>> {
    execute_with(engine, cells, jobs, None, writer, quiet)
}

/// As [`execute`], with the cells planned for a VM booted as `vm` says (`jobs` VMs at once,
/// after the host's trials).
pub fn execute_with(
    engine: &Engine,
    cells: &[PlannedCell],
    jobs: usize,
    vm: Option<VmSettings>,
    writer: Option<&Mutex<JsonlWriter>>,
    quiet: bool,
) -> std::io::Result<Vec<TrialRecord>> {
    let jsonl = writer.map(|writer| JsonlReporter { writer });
    let weights = cells.iter().map(|c| {
        let scale = match &c.target {
            crate::plan::backend::Target::Vm(vm) => u64::from(vm.time_scale.max(1)),
            crate::plan::backend::Target::Host => 1,
        };
        let trials = if c.skip.is_some() { 0 } else { c.trials };
        (c.scenario.name.clone(), c.cell_index, trials, scale)
    });
    let progress = Progress::new(quiet, weights);
    let mut reporters: Vec<&dyn Reporter> = Vec::new();
    if let Some(j) = &jsonl {
        reporters.push(j);
    }
    reporters.push(&progress);
    run(engine, &Executors::new(engine, jobs, vm), cells, &reporters)
}

/// Runs `cells` on `executor`, telling `reporters` as it goes.
pub fn run(
    engine: &Engine,
    executor: &dyn Executor,
    cells: &[PlannedCell],
    reporters: &[&dyn Reporter],
) -> std::io::Result<Vec<TrialRecord>> {
    let collector = Collector {
        cells,
        reporters,
        cancel: &engine.cancel,
        records: Mutex::new(Vec::new()),
        remaining: Mutex::new(cells.iter().map(|c| c.trials).collect()),
        error: Mutex::new(None),
    };
    let skipped = record_skipped(engine, &collector)?;
    let trials: Vec<PlannedTrial> = cells
        .iter()
        .enumerate()
        .filter(|(_, c)| c.skip.is_none())
        .flat_map(|(i, c)| c.planned_trials(i))
        .collect();
    collector.tell(&Event::Started {
        trials: trials.len() as u64,
    });
    for r in &skipped {
        collector.tell(&Event::CellFinished {
            scenario: &r.scenario,
            cell: &r.cell,
            records: std::slice::from_ref(r),
        });
    }
    executor.run(cells, trials, &collector);
    collector.tell(&Event::Finished);
    if let Some(e) = collector.error.into_inner() {
        return Err(e);
    }
    let mut records = skipped;
    records.extend(collector.records.into_inner());
    records.sort_by(|a, b| {
        (&a.scenario, a.cell_index, a.trial).cmp(&(&b.scenario, b.cell_index, b.trial))
    });
    Ok(records)
}

/// Records every skipped cell, before any trial runs; a reporter's error ends the run here.
fn record_skipped(engine: &Engine, collector: &Collector<'_>) -> std::io::Result<Vec<TrialRecord>> {
    let mut skipped = Vec::new();
    for c in collector.cells {
        let Some(why) = &c.skip else { continue };
        let mut r = skipped_record(
            engine,
            &c.scenario,
            &c.cell,
            c.cell_index,
            c.expectation.clone(),
            why.clone(),
        );
        r.shard = c.shard;
        for reporter in collector.reporters {
            reporter.report(&Event::Skipped(&r))?;
        }
        skipped.push(r);
    }
    Ok(skipped)
}

/// The sink the executor hands records to: tells the reporters, keeps the records, and tells
/// when a cell's last trial is in.
struct Collector<'a> {
    cells: &'a [PlannedCell],
    reporters: &'a [&'a dyn Reporter],
    cancel: &'a AtomicBool,
    records: Mutex<Vec<TrialRecord>>,
    remaining: Mutex<Vec<u32>>,
    /// The first reporter error; it cancels the run.
    error: Mutex<Option<std::io::Error>>,
}

impl Collector<'_> {
    fn tell(&self, event: &Event<'_>) {
        for reporter in self.reporters {
            if let Err(e) = reporter.report(event) {
                self.error.lock().get_or_insert(e);
                self.cancel.store(true, Ordering::SeqCst);
            }
        }
    }
}

impl TrialSink for Collector<'_> {
    fn finished(&self, trial: &PlannedTrial, mut record: TrialRecord) {
        let c = &self.cells[trial.cell];
        record.shard = c.shard;
        self.tell(&Event::TrialFinished(&record));
        let mut records = self.records.lock();
        records.push(record);
        let mut remaining = self.remaining.lock();
        remaining[trial.cell] -= 1;
        if remaining[trial.cell] == 0 {
            let done: Vec<TrialRecord> = records
                .iter()
                .filter(|r| r.scenario == c.scenario.name && r.cell_index == c.cell_index)
                .cloned()
                .collect();
            self.tell(&Event::CellFinished {
                scenario: &c.scenario.name,
                cell: &c.cell,
                records: &done,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::Verdict;
    use crate::model::scenario::Scenario;
    use std::sync::Arc;

    /// Runs nothing: makes a record per trial and hands them over in reverse order, as an
    /// executor elsewhere (a VM) might.
    struct Fake<'a>(&'a Engine);

    impl Executor for Fake<'_> {
        fn run(&self, cells: &[PlannedCell], trials: Vec<PlannedTrial>, sink: &dyn TrialSink) {
            for t in trials.iter().rev() {
                let c = &cells[t.cell];
                let mut r = skipped_record(
                    self.0,
                    &c.scenario,
                    &c.cell,
                    c.cell_index,
                    c.expectation.clone(),
                    String::new(),
                );
                (r.verdict, r.met, r.trial, r.seed) = (Verdict::Pass, true, t.trial, t.seed);
                sink.finished(t, r);
            }
        }
    }

    /// Keeps a line per event.
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl Reporter for Log {
        fn report(&self, event: &Event<'_>) -> std::io::Result<()> {
            let line = match event {
                Event::Skipped(r) => format!("skipped {}", r.cell),
                Event::Started { trials } => format!("started {trials}"),
                Event::TrialFinished(r) => format!("trial {} {}", r.cell, r.trial),
                Event::CellFinished { cell, records, .. } => {
                    format!("cell {cell} {}", records.len())
                }
                Event::Finished => "finished".to_string(),
            };
            self.0.lock().push(line);
            Ok(())
        }
    }

    #[test]
    fn any_executor_feeds_the_same_records_and_events() {
        let text = "[scenario]\ntrials = 2\n[subject]\nkind = \"command\"\nargv = [\"true\"]\n\
                    [matrix]\ncpus = [\"1\", \"4096\"]\nv = [\"a\", \"b\"]\n";
        let s = Arc::new(Scenario::parse(std::path::Path::new("seam.toml"), text).unwrap());
        let engine = Engine::new();
        let cells = plan(
            &crate::exec::host_facts::of_engine(&engine),
            &[s],
            &PlanOptions::default(),
        )
        .unwrap();
        let log = Log::default();
        let records = run(&engine, &Fake(&engine), &cells, &[&log]).unwrap();
        // Plan order, whatever order they finished in; the cells no host has CPUs for are skipped.
        let order: Vec<(String, u32)> = records.iter().map(|r| (r.cell.id(), r.trial)).collect();
        let expected = [
            ("cpus=1,v=a", 0),
            ("cpus=1,v=a", 1),
            ("cpus=1,v=b", 0),
            ("cpus=1,v=b", 1),
            ("cpus=4096,v=a", 0),
            ("cpus=4096,v=b", 0),
        ];
        let expected: Vec<(String, u32)> =
            expected.iter().map(|(c, t)| (c.to_string(), *t)).collect();
        assert_eq!(order, expected);
        let seeds: Vec<u64> = cells[0].planned_trials(0).map(|t| t.seed).collect();
        assert_eq!(seeds, [records[0].seed, records[1].seed]);
        let log = log.0.into_inner();
        assert_eq!(
            log,
            [
                "skipped cpus=4096,v=a",
                "skipped cpus=4096,v=b",
                "started 4",
                "cell cpus=4096,v=a 1",
                "cell cpus=4096,v=b 1",
                "trial cpus=1,v=b 1",
                "trial cpus=1,v=b 0",
                "cell cpus=1,v=b 2",
                "trial cpus=1,v=a 1",
                "trial cpus=1,v=a 0",
                "cell cpus=1,v=a 2",
                "finished",
            ]
        );
    }
}
