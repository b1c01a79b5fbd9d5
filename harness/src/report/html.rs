//! `index.html`: one self-contained page with inline SVG charts per scenario: the rate of trials
//! meeting the expectation with its 95 % interval by cpus for each row (variant/strategy), and
//! the time-to-verdict distribution of each cell.

use std::fmt::Write;

use super::format::{Table, cell_text, ms, pct, table};
use crate::report::gate::GateFailure;
use crate::report::stats::{CellStats, Summary};

const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

/// Renders `index.html`.
pub fn render(summary: &Summary) -> String {
    let failures = crate::report::gate::evaluate(summary);
    let mut out = String::new();
    out.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>wedge results</title>\n<style>\n\
         body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}\n\
         table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}\n\
         th{background:#f4f4f4}.fail{color:#b00}.ok{color:#070}.skip{color:#777}svg{display:block;margin:1em 0}\n\
         code{background:#f4f4f4;padding:1px 3px}\n</style>\n</head>\n<body>\n<h1>wedge results</h1>\n<ul>\n",
    );
    write_header(&mut out, summary, &failures);
    for scenario in summary.scenarios() {
        let t = table(summary, scenario);
        let _ = writeln!(out, "<h2>{}</h2>", escape(scenario));
        write_rate_table(&mut out, &t);
        out.push_str(&rate_chart(&t));
        let cells: Vec<&CellStats> = summary
            .cells
            .iter()
            .filter(|c| c.scenario == scenario && c.skipped.is_none())
            .collect();
        out.push_str(&time_chart(&cells));
        for c in &cells {
            if let Some((d, n)) = &c.top_diagnosis {
                let _ = writeln!(
                    out,
                    "<p><code>{}</code> hang diagnosis ({n}/{} trials): {}</p>",
                    escape(&c.cell_id),
                    c.trials,
                    escape(d)
                );
            }
        }
    }
    if !failures.is_empty() {
        out.push_str("<h2>Gate failures</h2>\n<ul>\n");
        for f in &failures {
            let _ = writeln!(
                out,
                "<li>{} <code>{}</code>: {}</li>",
                escape(&f.scenario),
                escape(&f.cell),
                escape(&f.reason)
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// The host(s), versions, counts and the gate's verdict.
fn write_header(out: &mut String, summary: &Summary, failures: &[GateFailure]) {
    for h in &summary.hosts {
        let _ = writeln!(out, "<li>{}</li>", escape(&super::format::machine(h)));
    }
    let _ = writeln!(
        out,
        "<li>wedge {}; {} trials in {} cells</li>",
        escape(&summary.wedge_versions.join(", ")),
        summary.trials,
        summary.cells.len()
    );
    if failures.is_empty() {
        let _ = writeln!(out, "<li class=\"ok\">gate: pass</li>");
    } else {
        let _ = writeln!(
            out,
            "<li class=\"fail\">gate: FAIL ({} cells)</li>",
            failures.len()
        );
    }
    out.push_str("</ul>\n");
}

/// The pass-rate table, each result cell coloured by whether it meets its expectation.
fn write_rate_table(out: &mut String, t: &Table<'_>) {
    out.push_str("<table>\n<tr><th></th>");
    for c in &t.columns {
        let _ = write!(out, "<th>{}</th>", escape(c));
    }
    out.push_str("</tr>\n");
    for (key, entries) in &t.rows {
        let _ = write!(
            out,
            "<tr><th>{}</th>",
            escape(if key == "-" { "(all)" } else { key })
        );
        for e in entries {
            let text = e.map_or_else(|| "—".to_string(), cell_text);
            let class = e.map_or("", |c| {
                if c.skipped.is_some() {
                    "skip"
                } else if crate::report::gate::check_cell(c).is_some() {
                    "fail"
                } else {
                    "ok"
                }
            });
            let _ = write!(out, "<td class=\"{class}\">{}</td>", escape(&text));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

/// Rate of trials meeting the expectation, with 95 % intervals, by cpus, one series per row.
fn rate_chart(t: &Table<'_>) -> String {
    // The legend sits right of the plot, one line per row: size the chart so that every label
    // fits (about 6.5 px per character at 11 px) and every row has its line.
    let longest = t
        .rows
        .iter()
        .map(|(key, _)| key.chars().count())
        .max()
        .unwrap_or(0) as f64;
    let (left, top, bottom, plot_w) = (50.0, 20.0, 40.0, 390.0);
    let right = (34.0 + 6.5 * longest).max(200.0);
    let w = left + plot_w + right;
    let h = (top + 14.0 * t.rows.len() as f64 + 20.0).max(280.0);
    let plot_h = 280.0 - top - bottom;
    let y = |rate: f64| top + (1.0 - rate) * plot_h;
    let ncols = t.columns.len().max(1) as f64;
    let nrows = t.rows.len().max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"rate by cpus\">"
    );
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{:.0}%</text>",
            left + plot_w,
            y(tick),
            y(tick),
            left - 4.0,
            y(tick) + 4.0,
            tick * 100.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"12\" y=\"{:.1}\" font-size=\"11\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">trials meeting the expectation (95% CI)</text>",
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    for (ci, col) in t.columns.iter().enumerate() {
        let x = left + (ci as f64 + 0.5) * plot_w / ncols;
        let _ = writeln!(
            s,
            "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">{}</text>",
            top + plot_h + 18.0,
            escape(col)
        );
    }
    let plot = Plot {
        left,
        top,
        plot_w,
        plot_h,
        ncols,
        nrows,
    };
    for (ri, (key, entries)) in t.rows.iter().enumerate() {
        rate_series(&mut s, &plot, ri, key, entries);
    }
    s.push_str("</svg>\n");
    s
}

/// The geometry of the rate chart's plot area.
struct Plot {
    left: f64,
    top: f64,
    plot_w: f64,
    plot_h: f64,
    ncols: f64,
    nrows: f64,
}

/// One row's series in the rate chart: a point with its interval per column, a line through
/// them, and the row's legend entry.
fn rate_series(s: &mut String, plot: &Plot, ri: usize, key: &str, entries: &[Option<&CellStats>]) {
    let Plot {
        left,
        top,
        plot_w,
        plot_h,
        ncols,
        nrows,
    } = *plot;
    let y = |rate: f64| top + (1.0 - rate) * plot_h;
    let color = COLORS[ri % COLORS.len()];
    let offset = (ri as f64 - (nrows - 1.0) / 2.0) * (plot_w / ncols / (nrows + 1.0)).min(12.0);
    let mut points = Vec::new();
    for (ci, e) in entries.iter().enumerate() {
        let Some(c) = e.filter(|c| c.skipped.is_none() && c.trials > 0) else {
            continue;
        };
        let x = left + (ci as f64 + 0.5) * plot_w / ncols + offset;
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"2\"/>\
             <circle cx=\"{x:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"><title>{}: {} {}/{} ({}–{})</title></circle>",
            y(c.met_interval.0),
            y(c.met_interval.1),
            y(c.met_rate),
            escape(&c.cell_id),
            c.rate_word(),
            c.met,
            c.trials,
            pct(c.met_interval.0),
            pct(c.met_interval.1)
        );
        points.push(format!("{x:.1},{:.1}", y(c.met_rate)));
    }
    if points.len() > 1 {
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-opacity=\"0.5\"/>",
            points.join(" ")
        );
    }
    let ly = top + 14.0 * ri as f64 + 8.0;
    let _ = writeln!(
        s,
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
        left + plot_w + 10.0,
        ly - 8.0,
        left + plot_w + 24.0,
        ly + 1.0,
        escape(if key == "-" { "(all)" } else { key })
    );
}

/// One strip per cell: every time-to-verdict (up to 200, evenly chosen) and the median.
fn time_chart(cells: &[&CellStats]) -> String {
    let left = 260.0;
    let plot_w = 360.0;
    let row_h = 18.0;
    let h = 40.0 + row_h * cells.len() as f64;
    let max = cells
        .iter()
        .filter_map(|c| c.max_ms)
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let x = |v: f64| left + v / max * plot_w;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0}\" height=\"{h:.0}\" role=\"img\" aria-label=\"time to verdict\">",
        left + plot_w + 20.0
    );
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"12\" font-size=\"12\">time to verdict (0 – {})</text>",
        escape(&ms(max))
    );
    for (i, c) in cells.iter().enumerate() {
        let cy = 30.0 + row_h * i as f64;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text><line x1=\"{left}\" x2=\"{:.1}\" y1=\"{cy:.1}\" y2=\"{cy:.1}\" stroke=\"#eee\"/>",
            left - 6.0,
            cy + 4.0,
            escape(&c.cell_id),
            left + plot_w
        );
        let n = c.times_ms.len();
        let step = n.div_ceil(200).max(1);
        for v in c.times_ms.iter().step_by(step) {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{cy:.1}\" r=\"2.5\" fill=\"#1f77b4\" fill-opacity=\"0.5\"/>",
                x(*v)
            );
        }
        if let Some(m) = c.median_ms {
            let _ = writeln!(
                s,
                "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#000\" stroke-width=\"2\"><title>median {}</title></line>",
                x(m),
                x(m),
                cy - 6.0,
                cy + 6.0,
                escape(&ms(m))
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Escapes text for HTML attributes and content; control characters other than whitespace are
/// dropped (a subject's output may hold any byte).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}
