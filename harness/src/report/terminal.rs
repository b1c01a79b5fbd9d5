//! The pass-rate table `wedge run` prints when it ends: per scenario, the same layout as
//! `summary.md`'s (rows: the other axes; columns: kernels and vCPUs), in aligned plain text with
//! short entries, so the result of a run reads on the terminal without opening a file.
//!
//! An entry is the mark and the count that decides it: `✅ 20/20` (met the expectation),
//! `❌ 3/20`, `📏 17/20 85%` (measured only: the pass rate is the result), `⏭` (this host cannot
//! run the cell), `—` (no such cell). The Wilson intervals and the diagnoses are in `summary.md`.

use super::format::{Table, table};
use crate::report::stats::{CellStats, Summary};
use std::fmt::Write;

/// Renders every scenario's table of `summary`, each under its name.
pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    for scenario in summary.scenarios() {
        let _ = writeln!(out, "{scenario}");
        write_table(&mut out, &table(summary, scenario));
        out.push('\n');
    }
    out
}

/// One entry of the table (see the module doc).
fn entry(c: Option<&CellStats>) -> String {
    let Some(c) = c else {
        return "—".into();
    };
    if c.skipped.is_some() {
        return "⏭ skipped".into();
    }
    let met = crate::report::gate::check_cell(c).is_none();
    if c.expectation.outcome == crate::model::scenario::Outcome::Any {
        let mark = if met { "📏" } else { "❌" };
        let rate = 100.0 * c.passes as f64 / (c.trials.max(1) as f64);
        return format!("{mark} {}/{} {rate:.0}%", c.passes, c.trials);
    }
    let mark = if met { "✅" } else { "❌" };
    format!("{mark} {}/{}", c.met, c.trials)
}

/// Display width of `s` in a terminal: every char one column (the marks render as two columns
/// in most terminals, but each entry starts with one, so the columns stay aligned).
fn width(s: &str) -> usize {
    s.chars().count()
}

fn write_table(out: &mut String, t: &Table<'_>) {
    let head: Vec<String> = std::iter::once(String::new())
        .chain(t.columns.iter().cloned())
        .collect();
    let rows: Vec<Vec<String>> = t
        .rows
        .iter()
        .map(|(key, entries)| {
            let label = if key == "-" { "(all)" } else { key };
            std::iter::once(format!("  {label}"))
                .chain(entries.iter().map(|e| entry(*e)))
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = head.iter().map(|h| width(h)).collect();
    for row in &rows {
        for (w, text) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(text));
        }
    }
    for row in std::iter::once(&head).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(text, w)| format!("{text}{}", " ".repeat(w - width(text))))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cell::Cell;
    use crate::model::record::{TrialRecord, Verdict};
    use crate::model::scenario::Scenario;
    use crate::report::stats::summarize;

    const SCENARIO: &str = "[subject]\nkind = \"command\"\n\
                            argv = [\"true\"]\n[matrix]\nstrategy = [\"zygote\"]\n\
                            cpus = [1, 2]\n[expect]\nexit = 0\n";

    fn record(s: &Scenario, cpus: &str, index: usize, trial: u32, pass: bool) -> TrialRecord {
        let pairs = [("strategy", "zygote"), ("cpus", cpus)];
        let cell = Cell::new(pairs.map(|(a, v)| (a.to_string(), v.to_string())).to_vec());
        let verdict = if pass { Verdict::Pass } else { Verdict::Fail };
        let mut r = TrialRecord::sample(s, cell, verdict, pass);
        (r.cell_index, r.trial) = (index, trial);
        r
    }

    #[test]
    fn rows_are_the_other_axes_and_columns_the_kernels_and_cpus() {
        let s = Scenario::parse(std::path::Path::new("s.toml"), SCENARIO).unwrap();
        let mut records = Vec::new();
        for (i, cpus) in ["1", "2"].into_iter().enumerate() {
            for trial in 0..3 {
                records.push(record(&s, cpus, i, trial, cpus == "1" || trial > 0));
            }
        }
        let text = render(&summarize(&records));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "s");
        assert!(
            lines[1].contains("1 cpus") && lines[1].contains("2 cpus"),
            "{text}"
        );
        assert!(lines[2].starts_with("  strategy=zygote"), "{text}");
        assert!(
            lines[2].contains("✅ 3/3") && lines[2].contains("❌ 2/3"),
            "{text}"
        );
        // Aligned: the second column starts at the same place in the head and the row.
        assert_eq!(
            lines[1].chars().position(|c| c == '2'),
            lines[2].chars().position(|c| c == '❌')
        );
    }
}
