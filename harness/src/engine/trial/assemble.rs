//! Assembling a [`TrialRecord`]: the one place its fields are filled, for run trials and for
//! cells recorded as skipped alike.

use std::time::SystemTime;

use super::engine::{Engine, TrialSpec};
use super::judge::{Judgement, Observed};
use crate::model::cell::Cell;
use crate::model::record::{TrialRecord, Verdict};
use crate::model::scenario::{Expectation, Scenario};

/// Who a record is about: the trial's identity, fixed before it runs.
pub(crate) struct Head<'a> {
    pub scenario: &'a Scenario,
    pub cell: &'a Cell,
    pub cell_index: usize,
    pub trial: u32,
    pub seed: u64,
    pub trial_id: String,
    pub expectation: Expectation,
    pub cpus: Option<Vec<usize>>,
    pub started_at: String,
}

impl<'a> Head<'a> {
    /// The head of trial `spec`, starting now.
    pub fn of(spec: &'a TrialSpec<'a>, trial_id: String) -> Head<'a> {
        Head {
            scenario: spec.scenario,
            cell: &spec.cell,
            cell_index: spec.cell_index,
            trial: spec.trial,
            seed: spec.seed,
            trial_id,
            expectation: spec.expectation.clone(),
            cpus: spec.cpus.clone(),
            started_at: now(),
        }
    }
}

/// A missed expectation's reason, with how each process the steps started ended when one did
/// not end well (a client's own error is often the clue).
fn with_spawned(reason: String, met: bool, spawned: &[crate::model::record::Spawned]) -> String {
    let bad: Vec<String> = spawned
        .iter()
        .filter(|s| s.exit.is_none_or(|e| e.code != Some(0)))
        .map(crate::model::record::Spawned::summary)
        .collect();
    if met || bad.is_empty() {
        return reason;
    }
    format!("{reason} [spawned: {}]", bad.join("; "))
}

/// The time now, as records show it.
fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The record of a trial: its head, the judge's decision, what it observed, and its log; a trial
/// that did not pass is put in its scenario's class of losses (`model::loss`), from the record.
pub(crate) fn assemble(
    engine: &Engine,
    head: Head<'_>,
    judged: Judgement,
    observed: Observed,
    tails: (String, String),
    log: Vec<String>,
) -> TrialRecord {
    let mut record = TrialRecord {
        scenario: head.scenario.name.clone(),
        file: head.scenario.file.display().to_string(),
        cell: head.cell.clone(),
        cell_index: head.cell_index,
        trial: head.trial,
        seed: head.seed,
        trial_id: head.trial_id,
        verdict: judged.verdict,
        met: judged.met,
        reason: with_spawned(judged.reason, judged.met, &observed.spawned),
        loss: None,
        expectation: head.expectation,
        exit: observed.exit,
        time_to_verdict_ms: observed.time_to_verdict_ms,
        started_at: head.started_at,
        diagnosis: judged.diagnosis,
        leaks: observed.leaks,
        lingering: observed.lingering,
        cpus: head.cpus,
        log,
        stdout_tail: tails.0,
        stderr_tail: tails.1,
        spawned: observed.spawned,
        host: engine.host.clone(),
        wedge_version: crate::VERSION.to_string(),
        shard: None,
        vm: None,
    };
    record.loss = crate::model::loss::of(head.scenario.classes(), &record);
    record
}

/// The record of a cell that cannot run on this host (and why).
pub fn skipped_record(
    engine: &Engine,
    scenario: &Scenario,
    cell: &Cell,
    cell_index: usize,
    expectation: Expectation,
    why: String,
) -> TrialRecord {
    let head = Head {
        scenario,
        cell,
        cell_index,
        trial: 0,
        seed: 0,
        trial_id: String::new(),
        expectation,
        cpus: None,
        started_at: now(),
    };
    let judged = Judgement {
        verdict: Verdict::Skipped,
        ..Judgement::error(why)
    };
    let tails = (String::new(), String::new());
    assemble(engine, head, judged, Observed::default(), tails, Vec::new())
}
