//! The host executor: trials run on this machine on `--jobs` workers that share its CPUs
//! without oversubscribing them. A trial pinned to k CPUs (the `cpus` axis) holds k of them
//! from a pool, so pinned trials never share a CPU, whatever `--jobs` says.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use wedge_core::sync::{Condvar, Mutex};

use super::{Executor, TrialSink};
use crate::engine::trial::{Engine, TrialSpec, host_cpus, run_trial};
use crate::model::cell::Cell;
use crate::model::scenario::{Expectation, Scenario};
use crate::plan::{PlannedCell, PlannedTrial};

/// Runs trials on this machine with `jobs` workers.
pub struct HostExecutor<'a> {
    pub engine: &'a Engine,
    pub jobs: usize,
}

impl Executor for HostExecutor<'_> {
    fn run(&self, cells: &[PlannedCell], trials: Vec<PlannedTrial>, sink: &dyn TrialSink) {
        let cells: Vec<HostCell<'_>> = cells.iter().map(HostCell::from).collect();
        run_here(self.engine, self.jobs, &cells, trials, sink);
    }
}

/// What the engine needs of a cell to run its trials here, whoever planned it: the host's
/// planner ([`PlannedCell`]), or a guest's `/init` from the plan the host packed for it.
#[derive(Debug, Clone, Copy)]
pub struct HostCell<'a> {
    pub scenario: &'a Scenario,
    pub cell: &'a Cell,
    pub cell_index: usize,
    pub expectation: &'a Expectation,
    /// CPUs each trial is pinned to, if the cell asks for a number.
    pub cpus: Option<usize>,
    pub chaos: crate::model::chaos::Chaos,
}

impl<'a> From<&'a PlannedCell> for HostCell<'a> {
    fn from(c: &'a PlannedCell) -> HostCell<'a> {
        HostCell {
            scenario: &c.scenario,
            cell: &c.cell,
            cell_index: c.cell_index,
            expectation: &c.expectation,
            cpus: c.cpus,
            chaos: c.chaos,
        }
    }
}

/// Runs `trials` (each naming its cell in `cells`) on this machine with `jobs` workers, handing
/// every finished record to `sink`; returns once all have run or the run is cancelled.
pub fn run_here(
    engine: &Engine,
    jobs: usize,
    cells: &[HostCell<'_>],
    trials: Vec<PlannedTrial>,
    sink: &dyn TrialSink,
) {
    let jobs = jobs.clamp(1, trials.len().max(1));
    let queue = Mutex::new(VecDeque::from(trials));
    let pool = CpuPool::new(host_cpus());
    let next = || queue.lock().pop_front();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                while !engine.cancel.load(Ordering::SeqCst) {
                    let Some(planned) = next() else {
                        return;
                    };
                    let c = &cells[planned.cell];
                    let want = c.cpus;
                    // A pinned trial holds its CPUs; unpinned trials only count against --jobs.
                    let taken = match want {
                        Some(k) => pool.take(k.min(engine.host.cpus.max(1))),
                        None => Vec::new(),
                    };
                    let spec = TrialSpec {
                        scenario: c.scenario,
                        cell: c.cell.clone(),
                        cell_index: c.cell_index,
                        trial: planned.trial,
                        seed: planned.seed,
                        expectation: c.expectation.clone(),
                        cpus: want.map(|_| taken.clone()),
                        chaos: c.chaos,
                    };
                    let record = run_trial(engine, &spec);
                    pool.give(taken);
                    let Some(record) = record else {
                        return;
                    };
                    sink.finished(&planned, record);
                }
            });
        }
    });
}

/// A pool of the host's CPUs: a pinned trial takes as many as it may use, so parallel trials
/// never share a pinned CPU.
struct CpuPool {
    free: Mutex<Vec<usize>>,
    changed: Condvar,
}

impl CpuPool {
    fn new(cpus: Vec<usize>) -> CpuPool {
        CpuPool {
            free: Mutex::new(cpus),
            changed: Condvar::new(),
        }
    }

    /// Takes the `k` lowest free CPUs, waiting until that many are free.
    fn take(&self, k: usize) -> Vec<usize> {
        let mut free = self.free.lock();
        while free.len() < k {
            free = self.changed.wait(free);
        }
        free.sort_unstable();
        free.drain(..k).collect()
    }

    fn give(&self, cpus: Vec<usize>) {
        self.free.lock().extend(cpus);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, mpsc};
    use std::time::Duration;

    #[test]
    fn pinned_trials_never_share_a_cpu() {
        let pool = Arc::new(CpuPool::new(vec![0, 1]));
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
