//! Running a suite: finding scenario files, planning cells (filters, shards, host limits),
//! running trials on `--jobs` workers that share the host's CPUs without oversubscribing them,
//! and appending every finished trial to `trials.jsonl`.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};

use crate::cell::{Cell, CellFilter, Shard};
use crate::record::{JsonlWriter, TrialRecord, Verdict};
use crate::scenario::{Expectation, Scenario, ScenarioError};
use crate::trial::{
    Engine, TrialSpec, cpus_wanted, host_cannot_run, run_trial, skipped_record, trial_seed,
};

/// Bad input: a scenario error or a usage problem (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{0}")]
    Scenario(#[from] ScenarioError),
    #[error("{0}")]
    Usage(String),
}

/// The default suite's directory: `$WEDGE_SCENARIOS`, else the first `scenarios/` directory
/// found walking up from the current directory, else the source checkout's `scenarios/`.
pub fn default_suite_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WEDGE_SCENARIOS") {
        return Some(PathBuf::from(dir));
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            let candidate = dir.join("scenarios");
            if candidate.is_dir() {
                return Some(candidate);
            }
        }
    }
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    checkout.is_dir().then_some(checkout)
}

/// Every `*.toml` file in `dir`, sorted.
pub fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, InputError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| InputError::Usage(format!("{}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Loads the scenarios named on the command line (files or directories), or the default suite.
pub fn load_scenarios(args: &[PathBuf]) -> Result<Vec<Arc<Scenario>>, InputError> {
    let mut files = Vec::new();
    if args.is_empty() {
        let dir = default_suite_dir().ok_or_else(|| {
            InputError::Usage(
                "no scenarios given and no scenarios/ directory found (set WEDGE_SCENARIOS)".into(),
            )
        })?;
        files = toml_files(&dir)?;
        if files.is_empty() {
            return Err(InputError::Usage(format!(
                "no *.toml scenarios in {}",
                dir.display()
            )));
        }
    } else {
        for a in args {
            if a.is_dir() {
                files.extend(toml_files(a)?);
            } else {
                files.push(a.clone());
            }
        }
    }
    let mut scenarios: Vec<Arc<Scenario>> = Vec::new();
    for f in files {
        let s = Scenario::load(&f)?;
        if let Some(other) = scenarios.iter().find(|o| o.name == s.name) {
            return Err(InputError::Usage(format!(
                "{}: scenario name \"{}\" is also used by {}",
                f.display(),
                s.name,
                other.file.display()
            )));
        }
        scenarios.push(Arc::new(s));
    }
    scenarios.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(scenarios)
}

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
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub filters: Vec<CellFilter>,
    pub shard: Option<Shard>,
    pub trials: Option<u32>,
    pub seed: Option<u64>,
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
            out.push(PlannedCell {
                expectation: s.expectation(&cell, &engine.host.kernel),
                skip: host_cannot_run(engine, &cell),
                trials: options.trials.unwrap_or(s.trials),
                base_seed: options.seed.unwrap_or(s.seed),
                scenario: Arc::clone(s),
                cell,
                cell_index,
            });
        }
    }
    if out.is_empty() && !options.filters.is_empty() {
        return Err(InputError::Usage(
            "no cell matches the --cell filters".into(),
        ));
    }
    Ok(out)
}

/// A pool of the host's CPUs: a pinned trial takes as many as it may use, so parallel trials
/// never share a pinned CPU.
struct CpuPool {
    free: Mutex<Vec<usize>>,
    changed: Condvar,
}

impl CpuPool {
    fn take(&self, k: usize) -> Vec<usize> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while free.len() < k {
            free = self.changed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        free.sort_unstable();
        free.drain(..k).collect()
    }

    fn give(&self, cpus: Vec<usize>) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(cpus);
        self.changed.notify_all();
    }
}

/// Progress output: a bar on a terminal, one line per finished cell otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
}

impl Progress {
    fn new(total: u64, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:40}] {pos}/{len} trials {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        Progress { bar, quiet }
    }

    fn trial(&self, r: &TrialRecord) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(format!(
                "{} {} → {}",
                r.scenario,
                r.cell.id(),
                r.verdict.as_str()
            ));
        }
    }

    fn cell_done(&self, scenario: &str, cell: &Cell, records: &[TrialRecord]) {
        let count = |v: Verdict| records.iter().filter(|r| r.verdict == v).count();
        let met = records.iter().filter(|r| r.met).count();
        let line = if records.len() == 1 && records[0].verdict == Verdict::Skipped {
            format!("{scenario} {}: skipped ({})", cell.id(), records[0].reason)
        } else {
            format!(
                "{scenario} {}: {} trials, {met} met the expectation (pass {}, fail {}, hang {}, crash {}, error {})",
                cell.id(),
                records.len(),
                count(Verdict::Pass),
                count(Verdict::Fail),
                count(Verdict::Hang),
                count(Verdict::Crash),
                count(Verdict::Error)
            )
        };
        match &self.bar {
            Some(bar) => bar.println(line),
            None if !self.quiet => eprintln!("{line}"),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The default `--jobs`: as many as the host has CPUs, so trials do not compete for CPU time
/// (which could change timing-sensitive verdicts); the CPU pool keeps pinned trials apart.
pub fn default_jobs(engine: &Engine) -> usize {
    engine.host.cpus.max(1)
}

/// Runs every planned cell with `jobs` workers, appending records to `writer` (if any) as they
/// finish. Returns every record (finished trials only, when cancelled).
pub fn execute(
    engine: &Engine,
    cells: &[PlannedCell],
    jobs: usize,
    writer: Option<&Mutex<JsonlWriter>>,
    quiet: bool,
) -> std::io::Result<Vec<TrialRecord>> {
    let mut records: Vec<TrialRecord> = Vec::new();
    let mut queue = VecDeque::new();
    for (ci, c) in cells.iter().enumerate() {
        match &c.skip {
            Some(why) => {
                let r = skipped_record(
                    engine,
                    &c.scenario,
                    &c.cell,
                    c.cell_index,
                    c.expectation.clone(),
                    why.clone(),
                );
                if let Some(w) = writer {
                    w.lock().unwrap_or_else(|e| e.into_inner()).append(&r)?;
                }
                records.push(r);
            }
            None => queue.extend((0..c.trials).map(|t| (ci, t))),
        }
    }
    let total = queue.len() as u64;
    let progress = Progress::new(total, quiet);
    for c in cells.iter().filter(|c| c.skip.is_some()) {
        progress.cell_done(
            &c.scenario.name,
            &c.cell,
            &records
                .iter()
                .filter(|r| r.cell == c.cell && r.scenario == c.scenario.name)
                .cloned()
                .collect::<Vec<_>>(),
        );
    }
    let queue = Mutex::new(queue);
    let pool = CpuPool {
        free: Mutex::new(crate::trial::host_cpus()),
        changed: Condvar::new(),
    };
    let results: Mutex<Vec<TrialRecord>> = Mutex::new(Vec::new());
    let remaining: Mutex<Vec<u32>> = Mutex::new(
        cells
            .iter()
            .map(|c| if c.skip.is_some() { 0 } else { c.trials })
            .collect(),
    );
    let write_error: Mutex<Option<std::io::Error>> = Mutex::new(None);
    let jobs = jobs.clamp(1, total.max(1) as usize);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    if engine.cancel.load(Ordering::SeqCst) {
                        return;
                    }
                    let Some((ci, t)) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
                    else {
                        return;
                    };
                    let c = &cells[ci];
                    let want = cpus_wanted(&c.cell);
                    // A pinned trial holds its CPUs; unpinned trials only count against --jobs.
                    let taken = match want {
                        Some(k) => pool.take(k.min(engine.host.cpus.max(1))),
                        None => Vec::new(),
                    };
                    let spec = TrialSpec {
                        scenario: &c.scenario,
                        cell: c.cell.clone(),
                        cell_index: c.cell_index,
                        trial: t,
                        seed: trial_seed(c.base_seed, &c.scenario.name, &c.cell, t),
                        expectation: c.expectation.clone(),
                        cpus: want.map(|_| taken.clone()),
                    };
                    let record = run_trial(engine, &spec);
                    pool.give(taken);
                    let Some(record) = record else {
                        return;
                    };
                    if let Some(w) = writer
                        && let Err(e) = w.lock().unwrap_or_else(|e| e.into_inner()).append(&record)
                    {
                        *write_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                        engine.cancel.store(true, Ordering::SeqCst);
                    }
                    progress.trial(&record);
                    let mut res = results.lock().unwrap_or_else(|e| e.into_inner());
                    res.push(record);
                    let mut rem = remaining.lock().unwrap_or_else(|e| e.into_inner());
                    rem[ci] -= 1;
                    if rem[ci] == 0 {
                        let done: Vec<TrialRecord> = res
                            .iter()
                            .filter(|r| {
                                r.scenario == c.scenario.name && r.cell_index == c.cell_index
                            })
                            .cloned()
                            .collect();
                        progress.cell_done(&c.scenario.name, &c.cell, &done);
                    }
                }
            });
        }
    });
    progress.finish();
    if let Some(e) = write_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    records.extend(results.into_inner().unwrap_or_else(|e| e.into_inner()));
    records.sort_by(|a, b| {
        (&a.scenario, a.cell_index, a.trial).cmp(&(&b.scenario, b.cell_index, b.trial))
    });
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn pinned_trials_never_share_a_cpu() {
        let pool = Arc::new(CpuPool {
            free: Mutex::new(vec![0, 1]),
            changed: Condvar::new(),
        });
        let a = pool.take(1);
        let b = pool.take(1);
        assert_eq!(a.len(), 1);
        assert_ne!(a, b);
        // A trial wanting both CPUs waits until both are back.
        let (tx, rx) = mpsc::channel();
        let p = Arc::clone(&pool);
        let waiter = std::thread::spawn(move || tx.send(p.take(2)).unwrap());
        assert!(
            rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "took CPUs that were in use"
        );
        pool.give(a);
        pool.give(b);
        let both = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("never got the CPUs back");
        assert_eq!(both, vec![0, 1]);
        waiter.join().unwrap();
    }
}
