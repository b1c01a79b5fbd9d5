//! Setting up a trial: its directory, its process tree and its placeholder values. Nothing of
//! the subject runs yet; a failure here is the trial's `error` verdict.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::engine::{Engine, TrialSpec};
use super::state::Trial;
use crate::isolation::TrialTree;
use crate::monitor::Monitor;
use crate::subject::{self, Vars};

/// Creates the trial's directory and tree; `marker` names both and must be unique.
pub(crate) fn set_up<'a>(
    engine: &'a Engine,
    spec: &'a TrialSpec<'a>,
    marker: &str,
) -> Result<Trial<'a>, String> {
    let dir = engine.temp_root.join(format!("wedge-trial-{marker}"));
    let tmp = dir.join("tmp");
    let work = dir.join("work");
    if let Err(e) = fs::create_dir_all(&tmp).and_then(|()| fs::create_dir_all(&work)) {
        return Err(format!(
            "cannot create the trial directory {}: {e}",
            dir.display()
        ));
    }
    let (tree, limits) = contain(engine, spec, marker).inspect_err(|_| {
        let _ = fs::remove_dir_all(&dir);
    })?;
    // Heard from before the subject starts: what its processes make in the shared places.
    crate::leftovers::trial_began(marker);
    let watching = crate::leftovers::watcher().err();
    let active_before = super::engine::ACTIVE_TRIALS.fetch_add(1, Ordering::SeqCst);
    let started_before = super::engine::STARTED_TRIALS.fetch_add(1, Ordering::SeqCst);
    let mounts_before: BTreeSet<String> = crate::proc::mount_points().into_iter().collect();
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
    if let Some(explicit) = subject::explicit_socket(spec.scenario)
        && let Ok(path) = vars.fill(explicit)
    {
        vars.socket = PathBuf::from(path);
    }
    let now = Instant::now();
    let deadline = now + spec.scenario.deadline;
    let log = limits
        .notes
        .iter()
        .map(|n| format!("{:9.1} ms  limit: {n}", 0.0))
        .chain(watching.map(|why| {
            format!(
                "{:9.1} ms  leftovers outside the trial's own places are not seen: {why}",
                0.0
            )
        }))
        .collect();
    Ok(Trial {
        limits,
        engine,
        spec,
        dir,
        vars,
        tree,
        rng: ChaCha8Rng::seed_from_u64(spec.seed),
        start: now,
        deadline,
        monitor: Monitor::new(now, deadline, spec.scenario.quiescence),
        subject: None,
        subject_pgid: None,
        stdin: None,
        pty_master: None,
        aux: Vec::new(),
        failpoints: Vec::new(),
        sent_to_subject: BTreeSet::new(),
        log,
        last_output: 0,
        verdict_at: None,
        active_before,
        started_before,
        mounts_before,
        namespace: None,
    })
}

/// The trial's process tree and its limits; on an error, neither is left.
fn contain(
    engine: &Engine,
    spec: &TrialSpec<'_>,
    marker: &str,
) -> Result<(TrialTree, crate::limits::Applied), String> {
    let tree = TrialTree::create(&engine.tree_kind, marker)
        .map_err(|e| format!("cannot create the trial's cgroup: {e}"))?;
    match crate::limits::apply(&engine.limits, &spec.scenario.limits, tree.dir(), marker) {
        Ok(limits) => {
            tree.add_own_dirs(limits.v1_dirs());
            Ok((tree, limits))
        }
        Err(e) => {
            let _ = tree.remove();
            Err(format!("cannot limit the trial: {e}"))
        }
    }
}
