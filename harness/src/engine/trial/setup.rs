//! Setting up a trial: its directory, its process tree and its placeholder values. Nothing of
//! the subject runs yet; a failure here is the trial's `error` verdict.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::engine::{Engine, TrialSpec};
use super::error::SetupError;
use super::log::Log;
use crate::engine::isolation::TrialTree;
use crate::engine::limits::Applied;
use crate::plan::commands::{self, Vars};

/// What setup prepares and teardown takes apart: the trial's directory, its placeholder values,
/// its process tree with its limits, and the facts its leak checks compare against.
pub(crate) struct Ground {
    /// The trial's directory (`tmp/` and `work/` inside), removed at teardown.
    dir: PathBuf,
    vars: Vars,
    tree: TrialTree,
    /// Its `pids.max` and memory limit (v1 directories its processes join, on hybrid hosts).
    limits: Applied,
    /// Trials running when this one began, and trials begun before it (of this process).
    active_before: usize,
    started_before: u64,
    mounts_before: BTreeSet<String>,
}

impl Ground {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn vars(&self) -> &Vars {
        &self.vars
    }

    pub fn tree(&self) -> &TrialTree {
        &self.tree
    }

    pub fn limits(&self) -> &Applied {
        &self.limits
    }

    /// Removes the limits' own cgroups; what could not be removed, as leaks.
    pub fn remove_limits(&mut self) -> Vec<String> {
        self.limits.remove()
    }

    /// The mount points there were when the trial began.
    pub fn mounts_before(&self) -> &BTreeSet<String> {
        &self.mounts_before
    }

    /// Whether another trial ran while this one did (so a leftover outside this trial's own
    /// places cannot be blamed on it by timing alone).
    pub fn overlapped(&self) -> bool {
        self.active_before > 0
            || super::engine::STARTED_TRIALS.load(Ordering::SeqCst) != self.started_before + 1
    }
}

/// Creates the trial's directory and tree; `marker` names both and must be unique. The log
/// opens with setup's notes and counts from now.
pub(crate) fn set_up(
    engine: &Engine,
    spec: &TrialSpec<'_>,
    marker: &str,
) -> Result<(Ground, Log), SetupError> {
    let dir = engine.temp_root.join(format!("wedge-trial-{marker}"));
    let tmp = dir.join("tmp");
    let work = dir.join("work");
    // Parent first: `create_dir_all(&tmp)` would try `tmp` first and fail once per trial.
    let made = [&dir, &tmp, &work]
        .into_iter()
        .try_for_each(fs::create_dir_all);
    if let Err(source) = made {
        return Err(SetupError::Dir { dir, source });
    }
    let (tree, limits) = contain(engine, spec, marker).inspect_err(|_| {
        let _ = fs::remove_dir_all(&dir);
    })?;
    // Heard from before the subject starts: what its processes make in the shared places.
    crate::engine::leftovers::trial_began(marker);
    let watching = crate::engine::leftovers::watcher().err();
    let active_before = super::engine::ACTIVE_TRIALS.fetch_add(1, Ordering::SeqCst);
    let started_before = super::engine::STARTED_TRIALS.fetch_add(1, Ordering::SeqCst);
    let mounts_before: BTreeSet<String> = crate::engine::proc::mount_points().into_iter().collect();
    let vars = vars(engine, spec, tmp, work);
    let notes =
        limits
            .notes
            .iter()
            .map(|n| format!("limit: {n}"))
            .chain(watching.map(|why| {
                format!("leftovers outside the trial's own places are not seen: {why}")
            }));
    let log = Log::new(Instant::now(), notes.collect::<Vec<_>>());
    let ground = Ground {
        dir,
        vars,
        tree,
        limits,
        active_before,
        started_before,
        mounts_before,
    };
    Ok((ground, log))
}

/// The trial's placeholder values.
fn vars(engine: &Engine, spec: &TrialSpec<'_>, tmp: PathBuf, work: PathBuf) -> Vars {
    let mut vars = Vars {
        cell: spec.cell.clone(),
        socket: work.join("agent.sock"),
        tmp,
        work,
        seed: spec.seed,
        trial: spec.trial,
        scenario_dir: spec.scenario.dir(),
        bin_dir: engine.bin_dir.clone(),
        splices: spec.scenario.splices(&spec.cell),
        rng: Vars::rng_for(spec.seed),
    };
    if let Some(explicit) = commands::explicit_socket(spec.scenario)
        && let Ok(path) = vars.fill(explicit)
    {
        vars.socket = PathBuf::from(path);
    }
    vars
}

/// The trial's process tree and its limits; on an error, neither is left.
fn contain(
    engine: &Engine,
    spec: &TrialSpec<'_>,
    marker: &str,
) -> Result<(TrialTree, Applied), SetupError> {
    let tree = TrialTree::create(&engine.tree_kind, marker).map_err(SetupError::Tree)?;
    match crate::engine::limits::apply(&engine.limits, &spec.scenario.limits, tree.dir(), marker) {
        Ok(limits) => {
            tree.add_own_dirs(limits.v1_dirs());
            Ok((tree, limits))
        }
        Err(e) => {
            let _ = tree.remove();
            Err(SetupError::Limit(e))
        }
    }
}
