//! `summary.md`: a pass-rate table per scenario (rows: variants/strategies; columns: kernel and
//! cpus), the lost trials by class (when the scenario classifies them), the
//! per-cell details, hang diagnoses, replay commands for misses, and significant differences.

use std::fmt::Write;

use super::format::{Table, cell_text, ms, pct, table};
use crate::report::gate::GateFailure;
use crate::report::stats::{CellStats, Summary};

/// Renders `summary.md`.
pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    let failures = crate::report::gate::evaluate(summary);
    write_header(&mut out, summary, &failures);
    for scenario in summary.scenarios() {
        let file = summary
            .cells
            .iter()
            .find(|c| c.scenario == scenario)
            .map(|c| c.file.clone())
            .unwrap_or_default();
        let _ = writeln!(out, "## {scenario}\n");
        let _ = writeln!(out, "`{file}`\n");
        write_rate_table(&mut out, &table(summary, scenario));
        let cells: Vec<&CellStats> = summary
            .cells
            .iter()
            .filter(|c| c.scenario == scenario)
            .collect();
        write_loss_table(&mut out, &cells);
        write_cell_table(&mut out, &cells);
        write_notes(&mut out, &cells);
        write_comparisons(&mut out, summary, scenario);
        out.push('\n');
    }
    if !failures.is_empty() {
        let _ = writeln!(out, "## Gate failures\n");
        for f in &failures {
            let _ = writeln!(out, "- {} `{}`: {}", f.scenario, f.cell, f.reason);
        }
    }
    out
}

/// The host(s), versions, counts and the gate's verdict.
fn write_header(out: &mut String, summary: &Summary, failures: &[GateFailure]) {
    let _ = writeln!(out, "# wedge results\n");
    for h in &summary.hosts {
        let _ = writeln!(out, "- {}", super::format::machine(h));
    }
    let _ = writeln!(out, "- wedge {}", summary.wedge_versions.join(", "));
    let _ = writeln!(
        out,
        "- {} trials in {} cells of {} scenarios",
        summary.trials,
        summary.cells.len(),
        summary.scenarios().len()
    );
    if failures.is_empty() {
        let _ = writeln!(out, "- gate: **pass** (every cell meets its expectation)\n");
    } else {
        let _ = writeln!(
            out,
            "- gate: **FAIL** ({} cells miss their expectation)\n",
            failures.len()
        );
    }
}

/// The pass-rate table: rows are the other axes, columns the kernels and cpus.
fn write_rate_table(out: &mut String, t: &Table<'_>) {
    let head = if t.has_columns {
        "kernel · cpus →"
    } else {
        ""
    };
    let _ = write!(out, "| {head} |");
    for c in &t.columns {
        let _ = write!(out, " {c} |");
    }
    let _ = write!(out, "\n|---|");
    for _ in &t.columns {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    for (key, entries) in &t.rows {
        let _ = write!(out, "| {} |", if key == "-" { "(all)" } else { key });
        for e in entries {
            let _ = write!(out, " {} |", e.map_or_else(|| "—".to_string(), cell_text));
        }
        out.push('\n');
    }
}

/// `Lost trials by class`: one row per cell with classified losses, one column per class seen
/// in the scenario (by name, `other` and `unclassified` last); nothing when none has any.
fn write_loss_table(out: &mut String, cells: &[&CellStats]) {
    let lossy: Vec<&&CellStats> = cells.iter().filter(|c| !c.losses.is_empty()).collect();
    if lossy.is_empty() {
        return;
    }
    let mut classes: Vec<&str> = Vec::new();
    for c in &lossy {
        for class in c.losses.keys() {
            if !classes.contains(&class.as_str()) {
                classes.push(class);
            }
        }
    }
    let last = [
        crate::model::scenario::OTHER,
        crate::model::scenario::UNCLASSIFIED,
    ];
    classes.sort_by_key(|c| (last.iter().position(|l| l == c), *c));
    let _ = write!(out, "\nLost trials by class:\n\n| cell | lost |");
    for class in &classes {
        let _ = write!(out, " {class} |");
    }
    let _ = write!(out, "\n|---|---|");
    out.push_str(&"---|".repeat(classes.len()));
    out.push('\n');
    for c in lossy {
        let total: u64 = c.losses.values().sum();
        let _ = write!(out, "| {} | {total} |", c.cell_id);
        for class in &classes {
            let _ = write!(out, " {} |", c.losses.get(*class).copied().unwrap_or(0));
        }
        out.push('\n');
    }
}

/// One line per cell: counts, pass rate with its interval, timing.
fn write_cell_table(out: &mut String, cells: &[&CellStats]) {
    let _ = writeln!(
        out,
        "\n| cell | expectation | trials | pass | fail | hang | crash | error | pass rate (95% CI) | median | p99 |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for c in cells {
        if c.skipped.is_some() {
            let _ = writeln!(
                out,
                "| {} | {} | skipped | | | | | | | | |",
                c.cell_id,
                c.expectation.describe()
            );
            continue;
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} ({}–{}) | {} | {} |",
            c.cell_id,
            c.expectation.describe(),
            c.trials,
            c.passes,
            c.fails,
            c.hangs,
            c.crashes,
            c.errors,
            pct(c.pass_rate),
            pct(c.pass_interval.0),
            pct(c.pass_interval.1),
            c.median_ms.map_or_else(|| "—".to_string(), ms),
            c.p99_ms.map_or_else(|| "—".to_string(), ms),
        );
    }
}

/// Skips, hang diagnoses and a replay command for every miss.
fn write_notes(out: &mut String, cells: &[&CellStats]) {
    let notes: Vec<_> = cells
        .iter()
        .filter(|c| {
            c.top_diagnosis.is_some()
                || !c.misses.is_empty()
                || c.skipped.is_some()
                || !c.kernel_splats.is_empty()
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(out);
        for c in notes {
            for splat in &c.kernel_splats {
                let _ = writeln!(out, "- `{}` ⚠ kernel splat in its VM: {splat}", c.cell_id);
            }
            if let Some(why) = &c.skipped {
                let _ = writeln!(out, "- `{}` skipped: {why}", c.cell_id);
            }
            if let Some((d, n)) = &c.top_diagnosis {
                let _ = writeln!(
                    out,
                    "- `{}` hang diagnosis ({n}/{} trials): {d}",
                    c.cell_id, c.trials
                );
            }
            for (seed, why) in &c.misses {
                let cells: String = c
                    .cell
                    .pairs()
                    .iter()
                    .map(|(a, v)| format!(" --cell {a}={v}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "- `{}` missed (seed {seed}): {}  \n  replay: `wedge replay {}{cells} --seed {seed}`",
                    c.cell_id,
                    why.replace('\n', " "),
                    c.file
                );
            }
        }
    }
}

/// The comparisons of cells differing in one axis, and the significant ones.
fn write_comparisons(out: &mut String, summary: &Summary, scenario: &str) {
    let comps: Vec<_> = summary
        .comparisons
        .iter()
        .filter(|x| x.scenario == scenario)
        .collect();
    let significant: Vec<_> = comps.iter().filter(|x| x.significant).collect();
    if !comps.is_empty() {
        let _ = writeln!(
            out,
            "\nComparisons of cells differing in one axis: {} of {} differ significantly in pass rate (95% Newcombe interval excludes 0).",
            significant.len(),
            comps.len()
        );
        for x in significant {
            let _ = writeln!(
                out,
                "- {} vs {}: {} vs {} (difference {} to {})",
                x.a,
                x.b,
                pct(x.rate_a),
                pct(x.rate_b),
                pct(x.interval.0),
                pct(x.interval.1)
            );
        }
    }
}
