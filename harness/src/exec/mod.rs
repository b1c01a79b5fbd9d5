//! Where trials run. An [`Executor`] is handed planned trials and hands back one
//! [`TrialRecord`] per finished trial, as it finishes, through a [`TrialSink`]; it decides only
//! where and how many at once. Planning (which trials, their seeds), judging (inside the engine
//! that runs each trial), statistics and reports are the same whatever the executor.
//!
//! [`host::HostExecutor`] runs trials on this machine, `--jobs` at a time, pinned trials holding
//! their CPUs. [`vm::VmExecutor`] boots a VM per (kernel, vCPUs) group, runs the same engine
//! inside the guest and streams the same records back through the same sink. [`Split`] hands
//! each trial to the one its cell's planned target names; [`Executors`] builds the pair for
//! `wedge run` and `wedge replay` alike.

pub mod guest_probe;
pub mod host;
pub mod host_facts;
pub mod runner;
pub mod vm;

use crate::engine::trial::Engine;
use crate::model::record::TrialRecord;
use crate::plan::{PlannedCell, PlannedTrial};
use crate::vm::support::VmSettings;

/// Receives each finished trial's record. Called from the executor's workers, in finishing
/// order.
pub trait TrialSink: Sync {
    fn finished(&self, trial: &PlannedTrial, record: TrialRecord);
}

/// Runs planned trials somewhere.
pub trait Executor {
    /// Runs `trials` (each naming its cell in `cells`), handing every finished record to
    /// `sink`. Returns once all have run, or early when the run is cancelled; a trial cut
    /// short by cancellation is not handed over.
    fn run(&self, cells: &[PlannedCell], trials: Vec<PlannedTrial>, sink: &dyn TrialSink);
}

/// Host trials to one executor, then VM trials to the other.
pub struct Split<'a> {
    pub host: &'a dyn Executor,
    /// `None` when VMs cannot run here (planning then gave no cell a VM target).
    pub vm: Option<&'a dyn Executor>,
}

impl Executor for Split<'_> {
    fn run(&self, cells: &[PlannedCell], trials: Vec<PlannedTrial>, sink: &dyn TrialSink) {
        let (vm, host): (Vec<PlannedTrial>, Vec<PlannedTrial>) = trials
            .into_iter()
            .partition(|t| matches!(cells[t.cell].target, crate::plan::backend::Target::Vm(_)));
        if !host.is_empty() {
            self.host.run(cells, host, sink);
        }
        if let (Some(executor), false) = (self.vm, vm.is_empty()) {
            executor.run(cells, vm, sink);
        }
    }
}

/// The executors of a run: the host's, and the VM's when this machine can boot guests (`vm`
/// settings given); each trial goes to the one its cell's planned target names.
pub struct Executors<'a> {
    host: host::HostExecutor<'a>,
    vm: Option<vm::VmExecutor<'a>>,
}

impl<'a> Executors<'a> {
    /// `jobs` trials at once on the host, `jobs` VMs at once.
    pub fn new(engine: &'a Engine, jobs: usize, vm: Option<VmSettings>) -> Executors<'a> {
        Executors {
            host: host::HostExecutor { engine, jobs },
            vm: vm.map(|settings| vm::VmExecutor {
                engine,
                jobs,
                settings,
            }),
        }
    }
}

impl Executor for Executors<'_> {
    fn run(&self, cells: &[PlannedCell], trials: Vec<PlannedTrial>, sink: &dyn TrialSink) {
        let split = Split {
            host: &self.host,
            vm: self.vm.as_ref().map(|v| v as &dyn Executor),
        };
        split.run(cells, trials, sink);
    }
}
