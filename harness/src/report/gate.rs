//! Expectations as gates: which cells miss theirs, and whether a run can be gated at all.
//!
//! [`check_cell`] judges one cell's numbers; [`gate`] is what `wedge run --gate` and `wedge gate`
//! decide on: every miss, every skipped cell (a cell that did not run proves nothing, unless
//! the run accepts skips), and every missing slice of a sharded run.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::model::record::TrialRecord;
use crate::model::scenario::Outcome;
use crate::report::stats::{CellStats, Summary};

/// The fewest trials a rate gate runs (defined with the expectation semantics, in the model).
pub use crate::model::scenario::MIN_RATE_TRIALS;

/// What a gate accepts beyond cells that meet their expectations.
#[derive(Debug, Clone, Copy, Default)]
pub struct GatePolicy {
    /// Skipped cells (this host cannot run them) pass (`--allow-skipped`).
    pub allow_skipped: bool,
}

/// A cell that misses its expectation, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateFailure {
    pub scenario: String,
    pub cell: String,
    pub reason: String,
}

/// Why `cell` misses its expectation, if it does. Skipped cells (which cannot run on this host)
/// do not fail the gate; the reports list them.
pub fn check_cell(cell: &CellStats) -> Option<String> {
    if cell.skipped.is_some() || cell.trials == 0 {
        return None;
    }
    let mut reasons = Vec::new();
    if cell.errors > 0 {
        reasons.push(format!(
            "{} of {} trials could not run",
            cell.errors, cell.trials
        ));
    }
    if cell.leaks > 0 {
        reasons.push(format!(
            "{} of {} trials left something behind",
            cell.leaks, cell.trials
        ));
    }
    let e = &cell.expectation;
    if e.min_rate.is_some() && cell.trials < u64::from(MIN_RATE_TRIALS) {
        reasons.push(format!(
            "{} trials cannot gate a rate (at least {MIN_RATE_TRIALS})",
            cell.trials
        ));
    }
    let what = match e.outcome {
        Outcome::Exit => "passed",
        Outcome::Hang => "caught hanging",
        Outcome::Any => "",
    };
    if e.outcome != Outcome::Any {
        match e.min_rate {
            Some(min) if cell.met_interval.0 < min => reasons.push(format!(
                "{}/{} {what}: the 95% lower bound {:.1}% is below the threshold {:.1}%",
                cell.met,
                cell.trials,
                cell.met_interval.0 * 100.0,
                min * 100.0
            )),
            None if cell.met < cell.trials => {
                reasons.push(format!("only {}/{} {what}", cell.met, cell.trials));
            }
            _ => {}
        }
    }
    if reasons.is_empty() {
        return None;
    }
    if let Some((seed, why)) = cell.misses.first() {
        reasons.push(format!("e.g. seed {seed}: {why}"));
    }
    Some(reasons.join("; "))
}

/// Every cell of the summary that misses its expectation.
pub fn evaluate(summary: &Summary) -> Vec<GateFailure> {
    summary
        .cells
        .iter()
        .filter_map(|c| {
            check_cell(c).map(|reason| GateFailure {
                scenario: c.scenario.clone(),
                cell: c.cell_id.clone(),
                reason,
            })
        })
        .collect()
}

/// Every reason the gate fails: cells that miss their expectations, skipped cells unless the
/// policy accepts them, and the slices missing from merged results of a sharded run.
pub fn gate(summary: &Summary, records: &[TrialRecord], policy: GatePolicy) -> Vec<GateFailure> {
    let mut failures = evaluate(summary);
    if !policy.allow_skipped {
        for c in summary.cells.iter().filter(|c| c.skipped.is_some()) {
            failures.push(GateFailure {
                scenario: c.scenario.clone(),
                cell: c.cell_id.clone(),
                reason: format!(
                    "skipped ({}); a cell that did not run proves nothing (--allow-skipped \
                     accepts skips)",
                    c.skipped.as_deref().unwrap_or_default()
                ),
            });
        }
    }
    failures.extend(missing_shards(records));
    failures
}

/// The slices of a sharded run that the records lack: a missing `I` of `N`, or fewer cells than
/// the plan had.
pub fn missing_shards(records: &[TrialRecord]) -> Vec<GateFailure> {
    let marks: BTreeSet<(usize, usize, usize)> = records
        .iter()
        .filter_map(|r| r.shard.map(|s| (s.count, s.plan_cells, s.index)))
        .collect();
    let plans: BTreeSet<(usize, usize)> = marks.iter().map(|&(n, cells, _)| (n, cells)).collect();
    let mut out = Vec::new();
    for (count, plan_cells) in plans {
        let fail = |reason: String| GateFailure {
            scenario: "(shards)".to_string(),
            cell: format!("--shard */{count}"),
            reason,
        };
        let missing: Vec<String> = (1..=count)
            .filter(|i| !marks.contains(&(count, plan_cells, *i)))
            .map(|i| format!("{i}/{count}"))
            .collect();
        if !missing.is_empty() {
            out.push(fail(format!(
                "shard {} missing from the results",
                missing.join(", ")
            )));
        }
        let cells: BTreeSet<(&str, usize)> = records
            .iter()
            .filter(|r| {
                r.shard
                    .is_some_and(|s| s.count == count && s.plan_cells == plan_cells)
            })
            .map(|r| (r.scenario.as_str(), r.cell_index))
            .collect();
        if missing.is_empty() && cells.len() < plan_cells {
            out.push(fail(format!(
                "the results hold {} of the plan's {plan_cells} cells",
                cells.len()
            )));
        }
    }
    out
}
