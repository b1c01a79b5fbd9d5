//! Helpers for engine tests that run scenario files against wedge-subject (the same as
//! engine.rs's, shared here so new engine test files need not copy them).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use wedge::engine::trial::Engine;
use wedge::exec::runner::{PlanOptions, execute, plan};
use wedge::model::cell::CellFilter;
use wedge::model::record::TrialRecord;
use wedge::model::scenario::Scenario;

pub fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(name)
}

pub fn engine() -> Engine {
    let mut e = Engine::new();
    e.bin_dir = Path::new(env!("CARGO_BIN_EXE_wedge-subject"))
        .parent()
        .unwrap()
        .to_path_buf();
    e
}

/// Runs `f` on another thread and fails the test if it takes longer than `limit`.
pub fn watchdog<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        // The sender went without sending: `f` panicked (its message is above).
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("watchdog: the test's body panicked"),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("watchdog: the test did not finish within {limit:?}")
        }
    }
}

/// Runs every trial of the matching cells of a scenario file, two at a time, under a watchdog of
/// `limit`, and checks that each left nothing behind.
pub fn run(file: &str, filters: &[&str], trials: Option<u32>, limit: Duration) -> Vec<TrialRecord> {
    let records = run_unchecked(file, filters, trials, limit);
    for r in &records {
        assert_nothing_left(r);
    }
    records
}

/// [`run`] without the leak check, for subjects whose leaks are the point (the caller checks
/// them).
pub fn run_unchecked(
    file: &str,
    filters: &[&str],
    trials: Option<u32>,
    limit: Duration,
) -> Vec<TrialRecord> {
    let path = scenario_path(file);
    let filters: Vec<CellFilter> = filters.iter().map(|f| f.parse().unwrap()).collect();
    watchdog(limit, move || {
        let engine = engine();
        let s = std::sync::Arc::new(Scenario::load(&path).unwrap());
        let cells = plan(
            &wedge::exec::host_facts::of_engine(&engine),
            &[s],
            &PlanOptions {
                filters,
                trials,
                ..PlanOptions::default()
            },
        )
        .unwrap();
        execute(&engine, &cells, 2, None, true).unwrap()
    })
}

/// Nothing of the trial is left: no process carrying its id, no temp directory, no cgroup.
pub fn assert_nothing_left(r: &TrialRecord) {
    assert!(r.leaks.is_empty(), "leaks: {:?}", r.leaks);
    if r.trial_id.is_empty() {
        return;
    }
    let needle = format!("WEDGE_TRIAL_ID={}", r.trial_id);
    for pid in wedge::engine::proc::all_pids() {
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            let has = env.split(|&b| b == 0).any(|e| e == needle.as_bytes());
            assert!(!has, "process {pid} of trial {} is still alive", r.trial_id);
        }
    }
    let tmp = std::env::temp_dir().join(format!("wedge-trial-{}", r.trial_id));
    assert!(!tmp.exists(), "{} is left", tmp.display());
}

pub fn diagnosis(r: &TrialRecord) -> &wedge::engine::monitor::Diagnosis {
    r.diagnosis
        .as_ref()
        .unwrap_or_else(|| panic!("no diagnosis: {r:?}"))
}
