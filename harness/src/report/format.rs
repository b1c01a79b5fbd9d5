//! What the reports share: how numbers, durations and result cells read, and the layout of a
//! scenario's pass-rate table (rows: the other axes; columns: kernel and cpus).

use crate::report::stats::{CellStats, Summary};

/// Where trials ran, e.g. `host: Linux 6.18.44, 2 CPUs, isolation cgroup2` or
/// `vm (tcg): Linux 6.1.0-57-cloud-amd64, 4 CPUs, isolation cgroup2`.
pub fn machine(h: &crate::model::record::Host) -> String {
    let place = match (h.backend.as_str(), &h.accel) {
        ("host", _) => "host".to_string(),
        (backend, Some(accel)) => format!("{backend} ({accel})"),
        (backend, None) => backend.to_string(),
    };
    format!(
        "{place}: Linux {}, {} CPUs, isolation {}",
        h.kernel, h.cpus, h.isolation
    )
}

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
    let mark = if crate::report::gate::check_cell(c).is_none() {
        "✅"
    } else {
        "❌"
    };
    if c.expectation.outcome == crate::model::scenario::Outcome::Any {
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

/// The axes a pass-rate table spreads over its columns, in order: the kernel × vCPU comparison
/// reads across a row.
pub const COLUMN_AXES: [&str; 2] = ["kernel", "cpus"];

/// The table layout of one scenario: rows (the cell without its column axes), columns (the
/// values of `kernel` and `cpus` that occur).
pub struct Table<'a> {
    /// Column labels, e.g. `kernel 6.1 · 4 cpus`, or `all` when no column axis exists.
    pub columns: Vec<String>,
    pub rows: Vec<(String, Vec<Option<&'a CellStats>>)>,
    /// Whether any column axis exists (else one column, `all`).
    pub has_columns: bool,
}

/// A cell's column label.
fn column_of(c: &CellStats) -> String {
    let parts: Vec<String> = COLUMN_AXES
        .iter()
        .filter_map(|axis| {
            c.cell.get(axis).map(|v| match *axis {
                "cpus" => format!("{v} cpus"),
                _ => format!("kernel {v}"),
            })
        })
        .collect();
    if parts.is_empty() {
        "all".to_string()
    } else {
        parts.join(" · ")
    }
}

/// A cell's row key: the cell without its column axes.
fn row_of(c: &CellStats) -> String {
    COLUMN_AXES
        .iter()
        .fold(c.cell.clone(), |cell, axis| cell.without(axis))
        .id()
}

/// Orders columns: kernels in the order cells name them (the matrix's), then cpus by number.
fn column_order(c: &CellStats, kernels: &[String]) -> (usize, u64) {
    let kernel = c
        .cell
        .get("kernel")
        .and_then(|k| kernels.iter().position(|x| x == k))
        .unwrap_or(0);
    let cpus = c.cell.get("cpus").and_then(|v| v.parse().ok()).unwrap_or(0);
    (kernel, cpus)
}

/// Lays out the cells of `scenario` as rows × (kernel, cpus) columns.
pub fn table<'a>(summary: &'a Summary, scenario: &str) -> Table<'a> {
    let cells: Vec<&CellStats> = summary
        .cells
        .iter()
        .filter(|c| c.scenario == scenario)
        .collect();
    let has_columns = cells
        .iter()
        .any(|c| COLUMN_AXES.iter().any(|a| c.cell.get(a).is_some()));
    let mut kernels: Vec<String> = Vec::new();
    for c in &cells {
        if let Some(k) = c.cell.get("kernel")
            && !kernels.iter().any(|x| x == k)
        {
            kernels.push(k.to_string());
        }
    }
    let mut ordered = cells.clone();
    ordered.sort_by_key(|c| column_order(c, &kernels));
    let mut columns: Vec<String> = Vec::new();
    for c in &ordered {
        let col = column_of(c);
        if !columns.contains(&col) {
            columns.push(col);
        }
    }
    let mut row_keys: Vec<String> = Vec::new();
    for c in &cells {
        let key = row_of(c);
        if !row_keys.contains(&key) {
            row_keys.push(key);
        }
    }
    let rows = row_keys
        .into_iter()
        .map(|key| {
            let entries = columns
                .iter()
                .map(|col| {
                    cells
                        .iter()
                        .find(|c| row_of(c) == key && column_of(c) == *col)
                        .copied()
                })
                .collect();
            (key, entries)
        })
        .collect();
    Table {
        columns,
        rows,
        has_columns,
    }
}
