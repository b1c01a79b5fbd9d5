//! Expectations as gates: which cells miss theirs.

use serde::{Deserialize, Serialize};

use crate::scenario::Outcome;
use crate::stats::{CellStats, Summary};

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
