//! Per-cell statistics over trial records: counts, Wilson 95 % intervals, time-to-verdict
//! quantiles, and significance of the difference between two cells (Newcombe's interval).
//!
//! Why no crate: the intervals are closed formulas of a few lines each at one fixed z, checked
//! in the tests against published values. Of the crates looked at, `wilson` and `bpci` compute
//! the single-proportion Wilson interval only (no interval for a difference, so Newcombe's would
//! still be ours), and `statrs` has the distributions but no binomial confidence intervals. A
//! dependency would take over the easiest dozen lines and leave the rest here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::cell::Cell;
use crate::model::record::{Host, TrialRecord, Verdict};
use crate::model::scenario::{Expectation, Outcome};

/// z for a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval (95 %) of `successes` out of `n`; `(0, 1)` for `n == 0`.
pub fn wilson(successes: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let p = successes as f64 / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// The `q`-quantile (nearest rank) of sorted values; `None` when empty.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Newcombe's hybrid score interval (95 %) for `p1 - p2`.
pub fn difference_interval(s1: u64, n1: u64, s2: u64, n2: u64) -> (f64, f64) {
    let p1 = if n1 == 0 { 0.0 } else { s1 as f64 / n1 as f64 };
    let p2 = if n2 == 0 { 0.0 } else { s2 as f64 / n2 as f64 };
    let (l1, u1) = wilson(s1, n1);
    let (l2, u2) = wilson(s2, n2);
    let d = p1 - p2;
    let lo = d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt();
    let hi = d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt();
    (lo, hi)
}

/// Statistics of one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellStats {
    pub scenario: String,
    pub file: String,
    pub cell: Cell,
    pub cell_id: String,
    pub expectation: Expectation,
    /// Why the cell did not run here, if it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub trials: u64,
    pub passes: u64,
    pub fails: u64,
    pub hangs: u64,
    pub crashes: u64,
    pub errors: u64,
    /// Trials that met the cell's expectation (passes for `exit`, caught hangs for `hang`).
    pub met: u64,
    pub leaks: u64,
    pub pass_rate: f64,
    pub pass_interval: (f64, f64),
    pub met_rate: f64,
    pub met_interval: (f64, f64),
    pub median_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Every time-to-verdict, sorted (for charts).
    pub times_ms: Vec<f64>,
    /// The most frequent hang diagnosis and how many trials had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_diagnosis: Option<(String, u64)>,
    /// Up to five trials that missed the expectation: seed and reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub misses: Vec<(u64, String)>,
    /// Kernel splats a VM's console showed while this cell's trials ran (up to five, distinct),
    /// reported even when every trial passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_splats: Vec<String>,
    /// The trials that did not pass, by the class `[[classify]]` put them in (`unclassified` for
    /// records without one); empty when no record of the cell carries a class.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub losses: BTreeMap<String, u64>,
}

impl CellStats {
    /// What the rate in tables means: `passed` for `exit` cells, `caught` for `hang` cells.
    pub fn rate_word(&self) -> &'static str {
        match self.expectation.outcome {
            Outcome::Hang => "caught",
            _ => "passed",
        }
    }
}

/// Two cells of a scenario that differ in one axis and share an expected outcome, and whether
/// their pass rates differ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub scenario: String,
    pub axis: String,
    pub a: String,
    pub b: String,
    pub rate_a: f64,
    pub rate_b: f64,
    /// 95 % interval of rate_a − rate_b.
    pub interval: (f64, f64),
    /// The interval excludes 0.
    pub significant: bool,
}

/// Everything the reports show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub hosts: Vec<Host>,
    pub wedge_versions: Vec<String>,
    pub trials: u64,
    pub cells: Vec<CellStats>,
    pub comparisons: Vec<Comparison>,
}

impl Summary {
    /// Scenario names in report order.
    pub fn scenarios(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.cells.iter().map(|c| c.scenario.as_str()).collect();
        names.dedup();
        names
    }
}

/// Builds the summary of a set of records (in any order; cells keep their matrix order).
pub fn summarize(records: &[TrialRecord]) -> Summary {
    let mut groups: BTreeMap<(String, usize, String), Vec<&TrialRecord>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.scenario.clone(), r.cell_index, r.cell.id()))
            .or_default()
            .push(r);
    }
    let mut hosts: Vec<Host> = Vec::new();
    let mut versions: Vec<String> = Vec::new();
    for r in records {
        if !hosts.contains(&r.host) {
            hosts.push(r.host.clone());
        }
        if !versions.contains(&r.wedge_version) {
            versions.push(r.wedge_version.clone());
        }
    }
    let cells: Vec<CellStats> = groups
        .into_iter()
        .map(|((scenario, _, cell_id), rs)| cell_stats(scenario, cell_id, &rs))
        .collect();
    let comparisons = compare_all(&cells);
    Summary {
        hosts,
        wedge_versions: versions,
        trials: records
            .iter()
            .filter(|r| r.verdict != Verdict::Skipped)
            .count() as u64,
        cells,
        comparisons,
    }
}

/// The statistics of one cell from its records (skipped records count as no trial).
fn cell_stats(scenario: String, cell_id: String, rs: &[&TrialRecord]) -> CellStats {
    let first = rs[0];
    let run: Vec<&&TrialRecord> = rs
        .iter()
        .filter(|r| r.verdict != Verdict::Skipped)
        .collect();
    let skipped = (run.is_empty()).then(|| first.reason.clone());
    let count = |v: Verdict| run.iter().filter(|r| r.verdict == v).count() as u64;
    let trials = run.len() as u64;
    let passes = count(Verdict::Pass);
    let met = run.iter().filter(|r| r.met).count() as u64;
    let mut times: Vec<f64> = run.iter().map(|r| r.time_to_verdict_ms).collect();
    times.sort_by(f64::total_cmp);
    let mut diagnoses: BTreeMap<String, u64> = BTreeMap::new();
    for r in &run {
        if let Some(d) = &r.diagnosis {
            *diagnoses.entry(normalize_pids(&d.summary)).or_default() += 1;
        }
    }
    let top_diagnosis = diagnoses
        .iter()
        .max_by_key(|(s, n)| (**n, std::cmp::Reverse(s.as_str())))
        .map(|(s, n)| (s.clone(), *n));
    let mut misses: Vec<(u64, String)> = run
        .iter()
        .filter(|r| !r.met)
        .map(|r| (r.trial, r.seed, r.reason.clone()))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|(_, seed, reason)| (seed, reason))
        .collect();
    misses.truncate(5);
    let mut kernel_splats: Vec<String> = Vec::new();
    let splats = run
        .iter()
        .filter_map(|r| r.vm.as_ref())
        .flat_map(|vm| &vm.splats);
    for splat in splats {
        if kernel_splats.len() < 5 && !kernel_splats.contains(splat) {
            kernel_splats.push(splat.clone());
        }
    }
    let rate = |k: u64| {
        if trials == 0 {
            0.0
        } else {
            k as f64 / trials as f64
        }
    };
    CellStats {
        scenario,
        file: first.file.clone(),
        cell: first.cell.clone(),
        cell_id,
        expectation: first.expectation.clone(),
        skipped,
        trials,
        passes,
        fails: count(Verdict::Fail),
        hangs: count(Verdict::Hang),
        crashes: count(Verdict::Crash),
        errors: count(Verdict::Error),
        met,
        leaks: run.iter().filter(|r| !r.leaks.is_empty()).count() as u64,
        pass_rate: rate(passes),
        pass_interval: wilson(passes, trials),
        met_rate: rate(met),
        met_interval: wilson(met, trials),
        median_ms: quantile(&times, 0.5),
        p99_ms: quantile(&times, 0.99),
        max_ms: times.last().copied(),
        times_ms: times,
        top_diagnosis,
        misses,
        kernel_splats,
        losses: losses(&run),
    }
}

/// The lost trials of a cell by class, counted only when some record of it carries a class (a
/// scenario that classifies nothing adds nothing to the reports); a lost record without one
/// (written before classes, merged with newer results) counts as `unclassified`.
fn losses(run: &[&&TrialRecord]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if run.iter().all(|r| r.loss.is_none()) {
        return out;
    }
    for r in run.iter().filter(|r| r.lost()) {
        let class = r
            .loss
            .as_deref()
            .unwrap_or(crate::model::scenario::UNCLASSIFIED);
        *out.entry(class.to_string()).or_default() += 1;
    }
    out
}

/// Replaces `[1234]` pid markers and long hex addresses so identical diagnoses from different
/// trials group together.
pub fn normalize_pids(summary: &str) -> String {
    let re = regex::Regex::new(r"\[\d+\]").expect("static regex");
    // Addresses in a wait-for line (`mutex 0x55d0…`) move with ASLR from trial to trial.
    let addr = regex::Regex::new(r"0x[0-9a-f]{5,}").expect("static regex");
    let summary = re.replace_all(summary, "");
    addr.replace_all(&summary, "0x…").into_owned()
}

pub(crate) fn compare_all(cells: &[CellStats]) -> Vec<Comparison> {
    let mut out = Vec::new();
    for (i, a) in cells.iter().enumerate() {
        for b in &cells[i + 1..] {
            // Only cells expected to behave alike are compared (not a fixed and a pre-fix variant).
            if a.scenario != b.scenario
                || a.expectation.outcome != b.expectation.outcome
                || a.skipped.is_some()
                || b.skipped.is_some()
                || a.trials == 0
                || b.trials == 0
            {
                continue;
            }
            let pa = a.cell.pairs();
            let pb = b.cell.pairs();
            if pa.len() != pb.len() {
                continue;
            }
            let differing: Vec<&str> = pa
                .iter()
                .zip(pb)
                .filter(|(x, y)| x != y)
                .map(|(x, _)| x.0.as_str())
                .collect();
            if differing.len() != 1 {
                continue;
            }
            let interval = difference_interval(a.passes, a.trials, b.passes, b.trials);
            out.push(Comparison {
                scenario: a.scenario.clone(),
                axis: differing[0].to_string(),
                a: a.cell_id.clone(),
                b: b.cell_id.clone(),
                rate_a: a.pass_rate,
                rate_b: b.pass_rate,
                interval,
                significant: interval.0 > 0.0 || interval.1 < 0.0,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnoses_group_across_pids_and_addresses() {
        assert_eq!(
            normalize_pids(
                "abba[12]: main thread blocked in futex; lock-order cycle: abba[12] thread \
                 a[13] holds mutex 0x55d0c4ee90 and waits for mutex 0x55d0c4eec0"
            ),
            "abba: main thread blocked in futex; lock-order cycle: abba thread a holds mutex \
             0x… and waits for mutex 0x…"
        );
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-4
    }

    #[test]
    fn wilson_known_values() {
        // Reference values (Wilson 1927; Newcombe 1998 table I).
        let (lo, hi) = wilson(81, 263);
        assert!(close(lo, 0.2553) && close(hi, 0.3662), "{lo} {hi}");
        let (lo, hi) = wilson(20, 20);
        assert!(close(lo, 0.8389) && close(hi, 1.0), "{lo} {hi}");
        let (lo, hi) = wilson(0, 10);
        assert!(close(lo, 0.0) && close(hi, 0.2775), "{lo} {hi}");
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        // 1000 of 1000 gives a lower bound above 99.5 %.
        assert!(wilson(1000, 1000).0 > 0.995);
    }

    #[test]
    fn newcombe_known_value() {
        // Newcombe 1998, example (56/70 vs 48/80): 0.0524 to 0.3339.
        let (lo, hi) = difference_interval(56, 70, 48, 80);
        assert!(close(lo, 0.0524) && close(hi, 0.3339), "{lo} {hi}");
        let (lo, hi) = difference_interval(5, 10, 5, 10);
        assert!(lo < 0.0 && hi > 0.0);
    }

    #[test]
    fn quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[3.0], 0.99), Some(3.0));
    }

    proptest::proptest! {
        #[test]
        fn wilson_contains_the_estimate(n in 1u64..5000, k in 0u64..5000) {
            let k = k % (n + 1);
            let (lo, hi) = wilson(k, n);
            let p = k as f64 / n as f64;
            proptest::prop_assert!(lo <= p + 1e-12 && p <= hi + 1e-12 && 0.0 <= lo && hi <= 1.0);
        }
    }
}
