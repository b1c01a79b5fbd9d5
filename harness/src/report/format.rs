//! What the reports share: how numbers, durations and result cells read, and the layout of a
//! scenario's pass-rate table (rows: the other axes; columns: cpus).

use crate::stats::{CellStats, Summary};

/// A percentage with one decimal, e.g. `99.5%`.
pub fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// A duration in ms, rounded for reading: `12 ms`, `1.23 s`.
pub fn ms(x: f64) -> String {
    if x < 1000.0 {
        format!("{x:.0} ms")
    } else {
        format!("{:.2} s", x / 1000.0)
    }
}

/// The short text of a cell in a pass-rate table, e.g. `✅ passed 20/20 (95% CI 83.9–100.0%)`.
pub fn cell_text(c: &CellStats) -> String {
    if let Some(why) = &c.skipped {
        return format!("⏭ skipped: {why}");
    }
    let mark = if crate::gate::check_cell(c).is_none() {
        "✅"
    } else {
        "❌"
    };
    if c.expectation.outcome == crate::scenario::Outcome::Any {
        // Measured, not gated: the rate is the result, never a tick; hangs and crashes in it
        // are called out.
        let mark = if mark == "❌" { "❌" } else { "📏" };
        let mut text = format!(
            "{mark} measured: passed {}/{} (95% CI {}–{})",
            c.passes,
            c.trials,
            pct(c.pass_interval.0),
            pct(c.pass_interval.1)
        );
        if c.hangs > 0 {
            text.push_str(&format!(", ⚠ {} hung", c.hangs));
        }
        if c.crashes > 0 {
            text.push_str(&format!(", ⚠ {} crashed", c.crashes));
        }
        return text;
    }
    format!(
        "{mark} {} {}/{} (95% CI {}–{})",
        c.rate_word(),
        c.met,
        c.trials,
        pct(c.met_interval.0),
        pct(c.met_interval.1)
    )
}

/// The table layout of one scenario: rows (cells without `cpus`), columns (`cpus` values).
pub struct Table<'a> {
    pub columns: Vec<String>,
    pub rows: Vec<(String, Vec<Option<&'a CellStats>>)>,
    pub has_cpus: bool,
}

/// Lays out the cells of `scenario` as rows × cpus columns.
pub fn table<'a>(summary: &'a Summary, scenario: &str) -> Table<'a> {
    let cells: Vec<&CellStats> = summary
        .cells
        .iter()
        .filter(|c| c.scenario == scenario)
        .collect();
    let has_cpus = cells.iter().any(|c| c.cell.get("cpus").is_some());
    let mut columns: Vec<String> = Vec::new();
    let mut row_keys: Vec<String> = Vec::new();
    for c in &cells {
        let col = c.cell.get("cpus").unwrap_or("all").to_string();
        if !columns.contains(&col) {
            columns.push(col);
        }
        let key = c.cell.without("cpus").id();
        if !row_keys.contains(&key) {
            row_keys.push(key);
        }
    }
    columns.sort_by_key(|c| c.parse::<u64>().unwrap_or(u64::MAX));
    let rows = row_keys
        .into_iter()
        .map(|key| {
            let entries = columns
                .iter()
                .map(|col| {
                    cells
                        .iter()
                        .find(|c| {
                            c.cell.without("cpus").id() == key
                                && c.cell.get("cpus").unwrap_or("all") == col
                        })
                        .copied()
                })
                .collect();
            (key, entries)
        })
        .collect();
    Table {
        columns,
        rows,
        has_cpus,
    }
}
