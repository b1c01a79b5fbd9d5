//! What every trial of a run shares ([`Engine`]: the kind of process tree, wedge's binaries,
//! the host, cancellation) and what identifies one trial ([`TrialSpec`], its seed).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

use nix::unistd::Pid;

use crate::engine::isolation::TreeKind;
use crate::engine::limits::Support;
use crate::model::cell::Cell;
use crate::model::record::Host;
use crate::model::scenario::{Expectation, Scenario};

/// What every trial of a run shares.
#[derive(Debug)]
pub struct Engine {
    /// How trial trees are isolated on this machine.
    pub tree_kind: TreeKind,
    /// Where trials' `pids_max` and `memory_max` go on this machine.
    pub limits: Support,
    pub bin_dir: PathBuf,
    /// The `wedge-init` every trial process runs under ([`crate::engine::pidns`]): wedge's own, found
    /// next to wedge, whatever `bin_dir` says.
    pub init_program: PathBuf,
    /// Starts the keepers, through a resident keeper server when it can
    /// ([`crate::engine::spawn_server`]).
    pub keepers: crate::engine::spawn_server::Spawner,
    pub host: Host,
    /// Set on SIGINT: running trials stop and are not recorded.
    pub cancel: Arc<AtomicBool>,
    pub(crate) temp_root: PathBuf,
}

/// Trials running now, and trials started so far, in this process (every engine of it: tests
/// build several): a trial that overlapped no other one can blame every new mount and cgroup
/// on itself.
pub(crate) static ACTIVE_TRIALS: AtomicUsize = AtomicUsize::new(0);
pub(crate) static STARTED_TRIALS: AtomicU64 = AtomicU64::new(0);

impl Engine {
    /// Detects the kind of process tree and makes wedge a subreaper.
    pub fn new() -> Engine {
        if let Err(e) = wedge_sys::become_child_subreaper() {
            tracing::warn!("cannot become a child subreaper: {e}");
        }
        let tree_kind = TreeKind::detect();
        tracing::debug!("isolation: {tree_kind:?}");
        remove_stale_trial_dirs(&std::env::temp_dir());
        let limits = Support::detect(&tree_kind);
        tracing::debug!("limits: {limits:?}");
        Engine {
            limits,
            host: Host {
                kernel: crate::engine::proc::kernel_release(),
                cpus: host_cpus().len(),
                isolation: tree_kind.name().to_string(),
                backend: "host".into(),
                accel: None,
            },
            tree_kind,
            bin_dir: crate::plan::commands::bin_dir(),
            init_program: crate::engine::keeper::program(&crate::plan::commands::own_dir()),
            keepers: Default::default(),
            cancel: Arc::new(AtomicBool::new(false)),
            temp_root: std::env::temp_dir(),
        }
    }
}

impl Default for Engine {
    fn default() -> Engine {
        Engine::new()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.tree_kind.cleanup();
    }
}

/// Removes the trial directories (`wedge-trial-PID-...`) of wedge processes that no longer exist.
fn remove_stale_trial_dirs(temp_root: &Path) {
    let Ok(entries) = fs::read_dir(temp_root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("wedge-trial-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The CPUs wedge may run on.
pub fn host_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&i| set.is_set(i).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// One trial to run.
#[derive(Debug, Clone)]
pub struct TrialSpec<'a> {
    pub scenario: &'a Scenario,
    pub cell: Cell,
    pub cell_index: usize,
    pub trial: u32,
    pub seed: u64,
    pub expectation: Expectation,
    /// Pin the subject to these CPUs.
    pub cpus: Option<Vec<usize>>,
    /// How the subject's scheduling is perturbed while the steps run.
    pub chaos: crate::model::chaos::Chaos,
}

pub use crate::model::cell::{cpus_wanted, trial_seed};
