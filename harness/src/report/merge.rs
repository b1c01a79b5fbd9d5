//! Adding trials to a summary whose records are gone.
//!
//! A committed report (`reports/*/summary.json`) keeps every count, time and loss class of its
//! cells but not the `trials.jsonl` it came from (tens of megabytes). When more trials of the
//! same cells are run later, [`merge`] adds their summary to it, cell by cell, so a table can
//! grow to its trial target across sessions without re-running what was already measured.
//!
//! What adds exactly: the verdict counts, the met and leak counts, the loss classes, every
//! time-to-verdict (so the median and p99 are those of all trials), and therefore the Wilson
//! intervals and the comparisons, which are recomputed from the merged counts. What cannot:
//! a summary keeps only its most frequent hang diagnosis, so the merged `top_diagnosis` is the
//! larger of the two (their counts added when they name the same diagnosis); `misses` and
//! `kernel_splats` keep the first five of both, base first.

use crate::report::stats::{CellStats, Summary, compare_all, quantile, wilson};

/// `base` with `more` added: cells of the same scenario and id are summed; cells only in `more`
/// follow the base's cells in their own order.
pub fn merge(base: Summary, more: Summary) -> Summary {
    let mut cells = base.cells;
    for cell in more.cells {
        match cells
            .iter_mut()
            .find(|c| c.scenario == cell.scenario && c.cell_id == cell.cell_id)
        {
            Some(have) => add_cell(have, cell),
            None => cells.push(cell),
        }
    }
    let mut hosts = base.hosts;
    for h in more.hosts {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    let mut versions = base.wedge_versions;
    for v in more.wedge_versions {
        if !versions.contains(&v) {
            versions.push(v);
        }
    }
    let comparisons = compare_all(&cells);
    Summary {
        hosts,
        wedge_versions: versions,
        trials: base.trials + more.trials,
        cells,
        comparisons,
    }
}

/// Adds the trials of `more` (the same cell) to `have`.
fn add_cell(have: &mut CellStats, more: CellStats) {
    if more.trials == 0 {
        return;
    }
    if have.trials == 0 {
        // A cell skipped in the base and run now is simply the new one.
        *have = more;
        return;
    }
    have.trials += more.trials;
    have.passes += more.passes;
    have.fails += more.fails;
    have.hangs += more.hangs;
    have.crashes += more.crashes;
    have.errors += more.errors;
    have.met += more.met;
    have.leaks += more.leaks;
    let n = have.trials as f64;
    have.pass_rate = have.passes as f64 / n;
    have.pass_interval = wilson(have.passes, have.trials);
    have.met_rate = have.met as f64 / n;
    have.met_interval = wilson(have.met, have.trials);
    have.times_ms.extend(more.times_ms);
    have.times_ms.sort_by(f64::total_cmp);
    have.median_ms = quantile(&have.times_ms, 0.5);
    have.p99_ms = quantile(&have.times_ms, 0.99);
    have.max_ms = have.times_ms.last().copied();
    have.top_diagnosis = match (have.top_diagnosis.take(), more.top_diagnosis) {
        (Some((a, x)), Some((b, y))) if a == b => Some((a, x + y)),
        (Some((a, x)), Some((b, y))) => Some(if y > x { (b, y) } else { (a, x) }),
        (a, b) => a.or(b),
    };
    have.misses.extend(more.misses);
    have.misses.truncate(5);
    for splat in more.kernel_splats {
        if have.kernel_splats.len() < 5 && !have.kernel_splats.contains(&splat) {
            have.kernel_splats.push(splat);
        }
    }
    for (class, k) in more.losses {
        *have.losses.entry(class).or_default() += k;
    }
    have.skipped = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cell::Cell;
    use crate::model::record::{TrialRecord, Verdict};
    use crate::model::scenario::Scenario;
    use crate::report::stats::summarize;

    const SCENARIO: &str = "[subject]\nkind = \"command\"\nargv = [\"true\"]\n\
                            [matrix]\nstrategy = [\"zygote\", \"inline\"]\n[expect]\nexit = 0\n";

    /// Trials of one strategy's cell: (passed, time to verdict); a lost one is classed `slow`.
    fn records(strategy: &str, trials: &[(bool, f64)]) -> Vec<TrialRecord> {
        let s = Scenario::parse(std::path::Path::new("s.toml"), SCENARIO).unwrap();
        let index = usize::from(strategy == "inline");
        trials
            .iter()
            .enumerate()
            .map(|(i, &(pass, ms))| {
                let cell = Cell::new(vec![("strategy".into(), strategy.into())]);
                let verdict = if pass { Verdict::Pass } else { Verdict::Fail };
                let mut r = TrialRecord::sample(&s, cell, verdict, pass);
                (r.cell_index, r.trial, r.time_to_verdict_ms) = (index, i as u32, ms);
                r.loss = (!pass).then(|| "slow".to_string());
                r
            })
            .collect()
    }

    #[test]
    fn merging_two_summaries_equals_summarizing_all_their_records() {
        let mut a = records("zygote", &[(true, 2.0)]);
        a.extend(records("inline", &[(true, 5.0), (false, 9.0), (true, 1.0)]));
        let mut b = records("inline", &[(false, 3.0), (true, 7.0)]);
        b.extend(records("zygote", &[(false, 4.0)]));
        let merged = merge(summarize(&a), summarize(&b));
        let all: Vec<TrialRecord> = a.iter().chain(&b).cloned().collect();
        let whole = summarize(&all);
        assert_eq!(merged.trials, whole.trials);
        assert_eq!(merged.cells.len(), 2);
        for (m, w) in merged.cells.iter().zip(&whole.cells) {
            assert_eq!(m.cell_id, w.cell_id);
            assert_eq!(
                (m.trials, m.passes, m.fails, m.met),
                (w.trials, w.passes, w.fails, w.met)
            );
            assert_eq!(m.pass_interval, w.pass_interval);
            assert_eq!(m.times_ms, w.times_ms);
            assert_eq!(
                (m.median_ms, m.p99_ms, m.max_ms),
                (w.median_ms, w.p99_ms, w.max_ms)
            );
            assert_eq!(m.losses, w.losses);
        }
        assert_eq!(merged.comparisons, whole.comparisons);
    }

    #[test]
    fn a_cell_only_in_the_addition_follows_the_base_cells() {
        let a = records("zygote", &[(true, 1.0)]);
        let b = records("inline", &[(true, 1.0)]);
        let merged = merge(summarize(&a), summarize(&b));
        let ids: Vec<&str> = merged.cells.iter().map(|c| c.cell_id.as_str()).collect();
        assert_eq!(ids, ["strategy=zygote", "strategy=inline"]);
    }
}
