//! `index.html`: one self-contained page with, per scenario, the pass-rate table, a chart of the
//! pass rate by vCPUs, and the time-to-verdict distribution of each cell (inline SVG).
//!
//! The pass-rate chart is a grid of small panels, one per combination of the axes other than
//! `cpus` and `concurrency` (one per strategy, or per strategy × builder). Each panel plots the
//! fraction of trials that passed against the vCPU count, with its Wilson 95 % interval as a
//! whisker, and one coloured line per `concurrency` value (one line without that axis). Under
//! each point a small mark says whether the cell meets its expectation (a grey ring) or fails it
//! (a red cross). The rate plotted is the pass rate, not the rate of meeting the expectation,
//! because a measured-only cell meets it in every trial: charting that would hide the very
//! difference between configurations the cell measures. A cell without a `cpus` axis sits at the
//! host's CPU count when every host had the same, else at `—`; a cell without trials (skipped)
//! is named under the chart.

use std::fmt::Write;

use super::format::{Table, cell_text, ms, pct, table};
use crate::model::cell::Cell;
use crate::report::gate::GateFailure;
use crate::report::stats::{CellStats, Summary, wilson};

/// The axis whose values are the pass-rate chart's x positions.
const X_AXIS: &str = "cpus";
/// The axis whose values get a line each in the pass-rate chart, when a scenario has it.
const LINE_AXIS: &str = "concurrency";
/// The x position of a cell without a `cpus` axis when the host's CPU count is not known, and
/// the line of a cell without the line axis when others have it.
const NO_X: &str = "—";

/// Line colours; no red among them, which is the colour of the "fails expectation" mark.
const LINE_COLORS: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
];
const FAIL_COLOR: &str = "#d00000";

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
        let all: Vec<&CellStats> = summary
            .cells
            .iter()
            .filter(|c| c.scenario == scenario)
            .collect();
        out.push_str(&rate_chart(&all, host_cpus(summary)));
        let cells: Vec<&CellStats> = all
            .iter()
            .copied()
            .filter(|c| c.skipped.is_none())
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

/// The CPU count of the machine the trials ran on, when every host had the same one.
fn host_cpus(summary: &Summary) -> Option<usize> {
    let first = summary.hosts.first()?.cpus;
    summary
        .hosts
        .iter()
        .all(|h| h.cpus == first)
        .then_some(first)
}

/// One charted cell: the indices of its x position and its line in the [`Layout`].
struct Point<'a> {
    x: usize,
    line: usize,
    cell: &'a CellStats,
}

/// One small multiple: the cells that share every axis but `cpus` and the line axis.
struct Panel<'a> {
    /// Those shared axes.
    key: Cell,
    /// Their values, e.g. `inline · wedge` (the axis names are in the chart's caption).
    title: String,
    points: Vec<Point<'a>>,
}

/// A scenario's cells laid out for the pass-rate chart.
struct Layout<'a> {
    /// The x positions' labels: `cpus` values by number, then any other text (`—`).
    xs: Vec<String>,
    /// The line axis' values (by number, then as first seen); one `""` without a line axis.
    lines: Vec<String>,
    has_line_axis: bool,
    /// In the order of the scenario's cells (its matrix order).
    panels: Vec<Panel<'a>>,
    /// The axes the panels differ in, in order.
    panel_axes: Vec<String>,
    /// Cells without trials (skipped): no rate to plot, so they are named under the chart.
    uncharted: Vec<&'a CellStats>,
}

fn push_unique(values: &mut Vec<String>, value: &str) {
    if !values.iter().any(|v| v == value) {
        values.push(value.to_string());
    }
}

/// Orders axis values: numbers ascending, then other text in the order it came (a stable sort,
/// so `—` and string values keep the matrix's order).
fn order_values(values: &mut [String]) {
    values.sort_by(|a, b| match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.total_cmp(&y),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => std::cmp::Ordering::Equal,
    });
}

fn panel_key(cell: &Cell) -> Cell {
    cell.without(X_AXIS).without(LINE_AXIS)
}

/// Lays out a scenario's cells: panels by the other axes, x by `cpus`, lines by `concurrency`.
/// Every cell is either plotted or listed as uncharted.
fn layout<'a>(cells: &[&'a CellStats], host_cpus: Option<usize>) -> Layout<'a> {
    let has_line_axis = cells.iter().any(|c| c.cell.get(LINE_AXIS).is_some());
    // A cell without a cpus axis ran with every CPU of its host: that count is its x when the
    // summary knows it for certain, else it gets a position of its own.
    let x_of = |c: &CellStats| match (c.cell.get(X_AXIS), host_cpus) {
        (Some(v), _) => v.to_string(),
        (None, Some(n)) => n.to_string(),
        (None, None) => NO_X.to_string(),
    };
    let line_of = |c: &CellStats| match (has_line_axis, c.cell.get(LINE_AXIS)) {
        (false, _) => String::new(),
        (true, v) => v.unwrap_or(NO_X).to_string(),
    };
    let (charted, uncharted): (Vec<&CellStats>, Vec<&CellStats>) = cells
        .iter()
        .copied()
        .partition(|c| c.skipped.is_none() && c.trials > 0);
    let (mut xs, mut lines, mut panel_axes) = (Vec::new(), Vec::new(), Vec::new());
    for c in &charted {
        push_unique(&mut xs, &x_of(c));
        push_unique(&mut lines, &line_of(c));
        for (axis, _) in panel_key(&c.cell).pairs() {
            push_unique(&mut panel_axes, axis);
        }
    }
    order_values(&mut xs);
    order_values(&mut lines);
    let mut panels: Vec<Panel<'a>> = Vec::new();
    for c in charted {
        let key = panel_key(&c.cell);
        let point = Point {
            x: xs.iter().position(|v| *v == x_of(c)).unwrap_or(0),
            line: lines.iter().position(|v| *v == line_of(c)).unwrap_or(0),
            cell: c,
        };
        match panels.iter_mut().find(|p| p.key == key) {
            Some(p) => p.points.push(point),
            None => {
                let values: Vec<&str> = key.pairs().iter().map(|(_, v)| v.as_str()).collect();
                let title = if values.is_empty() {
                    "(all)".to_string()
                } else {
                    values.join(" · ")
                };
                panels.push(Panel {
                    key,
                    title,
                    points: vec![point],
                });
            }
        }
    }
    Layout {
        xs,
        lines,
        has_line_axis,
        panels,
        panel_axes,
        uncharted,
    }
}

/// Left of the first column of panels: the rotated y-axis title.
const GUTTER: f64 = 22.0;
/// Left of each plot, inside its panel: the percentage labels.
const PANEL_LEFT: f64 = 40.0;
/// Right of each plot: space between panels.
const PANEL_RIGHT: f64 = 22.0;
/// Above each plot: the panel's title.
const PANEL_TOP: f64 = 24.0;
/// Below each plot: the expectation marks, the vCPU labels, the axis title and a gap.
const PANEL_BOTTOM: f64 = 58.0;
const PLOT_H: f64 = 170.0;
/// The widest the panels may be together: the page's 1100 px less its margins.
const MAX_W: f64 = 1040.0;
/// Above the panels: two rows of legend, or one without a line axis (whose one line needs no
/// key).
fn legend_h(l: &Layout<'_>) -> f64 {
    if l.has_line_axis { 48.0 } else { 26.0 }
}
/// About the width of a character at 12 px in a sans-serif font: a guess that errs wide, for
/// what must not be clipped (titles).
const CHAR_W: f64 = 7.0;
/// The same, closer to the average, for spacing the legend's entries (7 leaves wide gaps).
const LEGEND_CHAR_W: f64 = 6.3;

/// The geometry of the chart: a legend on top, then a grid of equally sized panels.
struct Grid {
    legend_h: f64,
    cols: usize,
    panel_w: f64,
    plot_w: f64,
}

impl Grid {
    fn new(l: &Layout<'_>) -> Grid {
        // Each panel is wide enough for its title and for ~56 px per x position, so that lines
        // side by side in a slot stay apart.
        let longest = l
            .panels
            .iter()
            .map(|p| p.title.chars().count())
            .max()
            .unwrap_or(0) as f64;
        let plot_w = (56.0 * l.xs.len() as f64)
            .max(200.0)
            .max(CHAR_W * longest + 8.0);
        let panel_w = PANEL_LEFT + plot_w + PANEL_RIGHT;
        let cols = (((MAX_W - GUTTER) / panel_w).floor() as usize).clamp(1, l.panels.len().max(1));
        Grid {
            legend_h: legend_h(l),
            cols,
            panel_w,
            plot_w,
        }
    }

    /// The top-left corner of panel `i`'s plot area.
    fn origin(&self, i: usize) -> (f64, f64) {
        let (row, col) = ((i / self.cols) as f64, (i % self.cols) as f64);
        (
            GUTTER + col * self.panel_w + PANEL_LEFT,
            self.legend_h + row * (PANEL_TOP + PLOT_H + PANEL_BOTTOM) + PANEL_TOP,
        )
    }

    /// The centre of x position `xi` in a panel whose plot starts at `x0`.
    fn slot_x(&self, l: &Layout<'_>, x0: f64, xi: usize) -> f64 {
        x0 + (xi as f64 + 0.5) * self.plot_w / l.xs.len().max(1) as f64
    }

    /// The x of line `li` at position `xi` in a panel whose plot starts at `x0`.
    fn x_at(&self, l: &Layout<'_>, x0: f64, xi: usize, li: usize) -> f64 {
        let slot = self.plot_w / l.xs.len().max(1) as f64;
        let n = l.lines.len() as f64;
        // The lines sit side by side within a slot: at equal rates their whiskers would
        // otherwise hide one another.
        let step = (slot / (n + 1.0)).min(14.0);
        self.slot_x(l, x0, xi) + (li as f64 - (n - 1.0) / 2.0) * step
    }
}

/// The pass-rate chart of one scenario's cells (see the module doc): a caption naming what its
/// panels and lines are, the SVG, and a note naming the cells it has no rate for. Empty when
/// there is nothing to say.
fn rate_chart(cells: &[&CellStats], host_cpus: Option<usize>) -> String {
    let l = layout(cells, host_cpus);
    let mut s = String::new();
    if !l.panels.is_empty() {
        let g = Grid::new(&l);
        let (legend, legend_w) = chart_legend(&l);
        let rows = l.panels.len().div_ceil(g.cols) as f64;
        let w = (GUTTER + g.cols as f64 * g.panel_w).max(legend_w);
        let h = g.legend_h + rows * (PANEL_TOP + PLOT_H + PANEL_BOTTOM);
        let panels = if l.panel_axes.is_empty() {
            "one panel".to_string()
        } else {
            format!("one panel per {}", l.panel_axes.join(" × "))
        };
        let lines = if l.has_line_axis {
            format!("one line per {LINE_AXIS}")
        } else {
            "one line".to_string()
        };
        let _ = writeln!(
            s,
            "<p>Pass rate by vCPUs: {}, {}.</p>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" role=\"img\" aria-label=\"pass rate by vCPUs\" font-family=\"system-ui,sans-serif\">",
            escape(&panels),
            escape(&lines)
        );
        s.push_str(&legend);
        for i in 0..l.panels.len() {
            panel(&mut s, &l, &g, i);
        }
        s.push_str("</svg>\n");
    }
    if !l.uncharted.is_empty() {
        let names: Vec<String> = l
            .uncharted
            .iter()
            .map(|c| format!("<code>{}</code>", escape(&c.cell_id)))
            .collect();
        let _ = writeln!(
            s,
            "<p class=\"skip\">Not charted (no trials): {}</p>",
            names.join(", ")
        );
    }
    s
}

/// The legend above the panels, and how wide it is: the lines' colours on the first row, what
/// a point, its whisker and the mark under it mean on the second.
fn chart_legend(l: &Layout<'_>) -> (String, f64) {
    let mut s = String::new();
    let mut x = GUTTER;
    let text = |s: &mut String, x: f64, y: f64, t: &str| {
        let _ = write!(
            s,
            "<text x=\"{x:.1}\" y=\"{y:.1}\" font-size=\"12\">{}</text>",
            escape(t)
        );
        x + LEGEND_CHAR_W * t.chars().count() as f64
    };
    // Without a line axis the one line needs no key: the second row says what a point is.
    let keyed = if l.has_line_axis {
        l.lines.as_slice()
    } else {
        &[]
    };
    if l.has_line_axis {
        x = text(&mut s, x, 16.0, &format!("{LINE_AXIS}:")) + 10.0;
    }
    for (li, label) in keyed.iter().enumerate() {
        let color = LINE_COLORS[li % LINE_COLORS.len()];
        let _ = write!(
            s,
            "<line class=\"legend-line\" x1=\"{x:.1}\" x2=\"{:.1}\" y1=\"12\" y2=\"12\" stroke=\"{color}\" stroke-width=\"2\"/><circle cx=\"{:.1}\" cy=\"12\" r=\"3.5\" fill=\"{color}\"/>",
            x + 20.0,
            x + 10.0
        );
        x = text(&mut s, x + 26.0, 16.0, label) + 16.0;
    }
    let first_w = x;
    let y = legend_h(l) - 10.0;
    let mut x = GUTTER;
    let _ = write!(
        s,
        "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#555\" stroke-width=\"1.5\"/><circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"#555\"/>",
        x + 5.0,
        x + 5.0,
        y - 11.0,
        y + 3.0,
        x + 5.0,
        y - 4.0
    );
    x = text(
        &mut s,
        x + 14.0,
        y,
        "pass rate, whisker: its 95 % Wilson interval;",
    ) + 8.0;
    x = text(&mut s, x, y, "mark under each point:") + 10.0;
    let _ = write!(s, "{}", meets_mark(x, y - 4.0));
    x = text(&mut s, x + 8.0, y, "meets its expectation,") + 10.0;
    let _ = write!(s, "{}", fails_mark(x, y - 4.0, "fails its expectation"));
    x = text(&mut s, x + 8.0, y, "fails it") + 8.0;
    s.push('\n');
    // Widened as the spacing may be narrower than the text: the SVG must not clip it.
    (s, first_w.max(x) * CHAR_W / LEGEND_CHAR_W)
}

/// The mark of a cell that meets its expectation: a small hollow grey circle.
fn meets_mark(x: f64, y: f64) -> String {
    format!(
        "<circle class=\"meets\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"none\" stroke=\"#666\"/>"
    )
}

/// The mark of a cell that fails its expectation: a red cross, larger than the meets mark so
/// that it stands out in a row of them.
fn fails_mark(x: f64, y: f64, why: &str) -> String {
    format!(
        "<path class=\"fails\" d=\"M{:.1} {:.1}L{:.1} {:.1}M{:.1} {:.1}L{:.1} {:.1}\" stroke=\"{FAIL_COLOR}\" stroke-width=\"2\"><title>{}</title></path>",
        x - 3.5,
        y - 3.5,
        x + 3.5,
        y + 3.5,
        x - 3.5,
        y + 3.5,
        x + 3.5,
        y - 3.5,
        escape(why)
    )
}

/// Panel `i`: its title, axes, and a line per line value.
fn panel(s: &mut String, l: &Layout<'_>, g: &Grid, i: usize) {
    let p = &l.panels[i];
    let (x0, y0) = g.origin(i);
    let bottom = y0 + PLOT_H;
    let _ = writeln!(
        s,
        "<g class=\"panel\" data-panel=\"{}\">\n<text x=\"{x0:.1}\" y=\"{:.1}\" font-size=\"12\" font-weight=\"bold\">{}<title>{}</title></text>",
        escape(&p.key.id()),
        y0 - 10.0,
        escape(&p.title),
        escape(&p.key.id())
    );
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let y = y0 + (1.0 - tick) * PLOT_H;
        let _ = writeln!(
            s,
            "<line class=\"grid\" data-tick=\"{:.0}\" x1=\"{x0:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{:.0}%</text>",
            tick * 100.0,
            x0 + g.plot_w,
            if tick == 0.0 { "#888" } else { "#ddd" },
            x0 - 4.0,
            y + 4.0,
            tick * 100.0
        );
    }
    if i.is_multiple_of(g.cols) {
        // The y-axis title once per row of panels: the panels share their scale.
        let (tx, ty) = (GUTTER - 8.0, y0 + PLOT_H / 2.0);
        let _ = writeln!(
            s,
            "<text x=\"{tx:.1}\" y=\"{ty:.1}\" font-size=\"11\" text-anchor=\"middle\" transform=\"rotate(-90 {tx:.1} {ty:.1})\">pass rate (95 % Wilson CI)</text>"
        );
    }
    for (xi, label) in l.xs.iter().enumerate() {
        let _ = writeln!(
            s,
            "<text class=\"x-tick\" x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">{}</text>",
            g.slot_x(l, x0, xi),
            bottom + 28.0,
            escape(label)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">vCPUs</text>",
        x0 + g.plot_w / 2.0,
        bottom + 44.0
    );
    for li in 0..l.lines.len() {
        series(s, l, g, i, li);
    }
    s.push_str("</g>\n");
}

/// Line `li` of panel `i`: a polyline through its points by x, then each point.
fn series(s: &mut String, l: &Layout<'_>, g: &Grid, i: usize, li: usize) {
    let mut points: Vec<&Point<'_>> = l.panels[i].points.iter().filter(|p| p.line == li).collect();
    if points.is_empty() {
        return;
    }
    points.sort_by_key(|p| p.x);
    let (x0, y0) = g.origin(i);
    let color = LINE_COLORS[li % LINE_COLORS.len()];
    let xy = |p: &Point<'_>| (g.x_at(l, x0, p.x, li), y0 + (1.0 - rate(p.cell)) * PLOT_H);
    let path: Vec<String> = points
        .iter()
        .map(|p| {
            let (x, y) = xy(p);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    // The line first, so that the points and whiskers are drawn over it.
    let _ = writeln!(
        s,
        "<g class=\"line\" data-line=\"{}\">\n<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" stroke-opacity=\"0.8\"/>",
        escape(&l.lines[li]),
        path.join(" ")
    );
    for p in points {
        let (x, _) = xy(p);
        point(s, p.cell, x, y0, color);
    }
    s.push_str("</g>\n");
}

/// The fraction of a cell's trials that passed (0 without trials).
fn rate(c: &CellStats) -> f64 {
    if c.trials == 0 {
        0.0
    } else {
        c.passes as f64 / c.trials as f64
    }
}

/// One cell's point at `x` in a plot whose top is `y0`: its pass rate, the Wilson interval as a
/// whisker, and under the plot the mark of whether it meets its expectation.
fn point(s: &mut String, c: &CellStats, x: f64, y0: f64, color: &str) {
    let y = |r: f64| y0 + (1.0 - r) * PLOT_H;
    // From the counts, not the summary's stored interval: a summary written before pass
    // intervals were kept still charts right.
    let (lo, hi) = wilson(c.passes, c.trials);
    let miss = crate::report::gate::check_cell(c);
    let verdict = match &miss {
        None => "meets its expectation".to_string(),
        Some(why) => format!("fails its expectation: {why}"),
    };
    let _ = writeln!(
        s,
        "<g class=\"point\" data-cell=\"{id}\"><line class=\"ci\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"1.5\"/>\
         <path d=\"M{:.1} {:.1}h6M{:.1} {:.1}h6\" stroke=\"{color}\"/>\
         <circle cx=\"{x:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{color}\"><title>{id}: passed {}/{} = {} (95% CI {}–{}); {}</title></circle>",
        y(lo),
        y(hi),
        x - 3.0,
        y(lo),
        x - 3.0,
        y(hi),
        y(rate(c)),
        c.passes,
        c.trials,
        pct(rate(c)),
        pct(lo),
        pct(hi),
        escape(&verdict),
        id = escape(&c.cell_id),
    );
    let mark_y = y0 + PLOT_H + 11.0;
    let mark = match miss {
        None => meets_mark(x, mark_y),
        Some(_) => fails_mark(x, mark_y, &format!("{}: {verdict}", c.cell_id)),
    };
    let _ = writeln!(s, "{mark}</g>");
}

/// One strip per cell: every time-to-verdict (up to 200, evenly chosen) and the median.
fn time_chart(cells: &[&CellStats]) -> String {
    // The row labels are right-aligned against the plot, so the column left of it must be as
    // wide as the longest cell id at 11 px (CHAR_W is for 12 px and errs wide), or the labels
    // run off the picture's left edge.
    let longest = cells
        .iter()
        .map(|c| c.cell_id.chars().count())
        .max()
        .unwrap_or(0);
    let left = (CHAR_W * 11.0 / 12.0 * longest as f64 + 12.0).max(80.0);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::Host;

    /// A cell of scenario `s` with `passes` of `trials` passed: measured only (`any`), or
    /// expected to exit 0 in at least 80 % of trials (`exit`).
    fn stats(pairs: &[(&str, &str)], passes: u64, trials: u64, outcome: &str) -> CellStats {
        let expectation = match outcome {
            "any" => serde_json::json!({ "outcome": "any" }),
            _ => serde_json::json!({ "outcome": "exit", "exit": 0, "min_rate": 0.8 }),
        };
        // A measured-only cell meets its expectation in every trial, whatever the rate.
        let met = if outcome == "any" { trials } else { passes };
        let r = |k: u64| k as f64 / trials.max(1) as f64;
        let mut c: CellStats = serde_json::from_value(serde_json::json!({
            "scenario": "s", "file": "s.toml", "cell": {}, "cell_id": "",
            "expectation": expectation, "trials": trials, "passes": passes,
            "fails": trials - passes, "hangs": 0, "crashes": 0, "errors": 0, "met": met,
            "leaks": 0, "pass_rate": r(passes), "pass_interval": wilson(passes, trials),
            "met_rate": r(met), "met_interval": wilson(met, trials), "median_ms": null,
            "p99_ms": null, "max_ms": null, "times_ms": [],
        }))
        .unwrap();
        c.cell = Cell::new(
            pairs
                .iter()
                .map(|(a, v)| (a.to_string(), v.to_string()))
                .collect(),
        );
        c.cell_id = c.cell.id();
        c
    }

    fn summary(cells: Vec<CellStats>, host_cpus: &[usize]) -> Summary {
        let hosts = host_cpus
            .iter()
            .map(|&cpus| Host {
                kernel: "6.18".into(),
                cpus,
                isolation: "cgroup2".into(),
                backend: "host".into(),
                accel: None,
            })
            .collect();
        Summary {
            hosts,
            wedge_versions: vec!["0.1.0".into()],
            trials: cells.iter().map(|c| c.trials).sum(),
            cells,
            comparisons: vec![],
        }
    }

    /// The pass-rate chart's panels: each from its `<g class="panel"` to the chart's end.
    fn panels(html: &str) -> Vec<&str> {
        let chart = html.split("</svg>").next().unwrap_or("");
        chart.split("<g class=\"panel\"").skip(1).collect()
    }

    /// The number in attribute `name` of the first tag after `from` in `text`.
    fn attr(text: &str, from: &str, name: &str) -> f64 {
        let at = text
            .find(from)
            .unwrap_or_else(|| panic!("no {from} in {text}"));
        let rest = &text[at..];
        let start = rest.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        let len = rest[start..].find('"').unwrap();
        rest[start..start + len].parse().unwrap()
    }

    /// The markup of the point of `cell_id` in `panel`.
    fn point_of<'a>(panel: &'a str, cell_id: &str) -> &'a str {
        let at = panel
            .find(&format!("data-cell=\"{cell_id}\""))
            .unwrap_or_else(|| panic!("no point for {cell_id}"));
        let end = panel[at..].find("</g>").unwrap();
        &panel[at..at + end]
    }

    /// A vCPU sweep like reports/vcpu: `inline` falls at N=16, `zygote` never does.
    fn sweep() -> Summary {
        let mut cells = Vec::new();
        for strategy in ["inline", "zygote"] {
            for cpus in ["1", "2", "4", "8"] {
                for n in ["1", "4", "16"] {
                    let passes = match (strategy, cpus, n) {
                        ("inline", "8", "16") => 52,
                        ("inline", "4", "16") => 77,
                        _ => 100,
                    };
                    let pairs = [("strategy", strategy), ("cpus", cpus), ("concurrency", n)];
                    cells.push(stats(&pairs, passes, 100, "any"));
                }
            }
        }
        summary(cells, &[2])
    }

    #[test]
    fn a_falling_pass_rate_puts_the_point_lower() {
        // Every cell here meets its (measured-only) expectation: only the pass rate falls.
        let html = render(&sweep());
        let inline = panels(&html)[0];
        let at_1 = attr(
            point_of(inline, "strategy=inline,cpus=1,concurrency=16"),
            "<circle",
            "cy",
        );
        let at_8 = attr(
            point_of(inline, "strategy=inline,cpus=8,concurrency=16"),
            "<circle",
            "cy",
        );
        let (top, bottom) = (
            attr(inline, "data-tick=\"100\"", "y1"),
            attr(inline, "data-tick=\"0\"", "y1"),
        );
        assert!(
            (at_1 - top).abs() < 0.11,
            "100 % at the top: {at_1} vs {top}"
        );
        let expected = top + 0.48 * (bottom - top);
        assert!((at_8 - expected).abs() < 0.11, "52 %: {at_8} vs {expected}");
        assert!(html.contains("pass rate (95 % Wilson CI)") && html.contains(">vCPUs<"));
    }

    #[test]
    fn one_panel_per_other_axes_and_one_line_per_concurrency() {
        let mut cells = Vec::new();
        for strategy in ["inline", "zygote"] {
            for builder in ["wedge", "libcontainer"] {
                for cpus in ["1", "2"] {
                    for n in ["1", "4", "16"] {
                        let pairs = [
                            ("strategy", strategy),
                            ("builder", builder),
                            ("cpus", cpus),
                            ("concurrency", n),
                        ];
                        cells.push(stats(&pairs, 9, 10, "any"));
                    }
                }
            }
        }
        let html = render(&summary(cells, &[2]));
        let ps = panels(&html);
        assert_eq!(ps.len(), 4, "strategy × builder");
        assert!(ps[1].starts_with(" data-panel=\"strategy=inline,builder=libcontainer\""));
        assert!(ps[1].contains(">inline · libcontainer<"));
        assert!(html.contains("one panel per strategy × builder, one line per concurrency"));
        for p in ps {
            assert_eq!(p.matches("<polyline").count(), 3, "{p}");
            // Lines in numeric order, each through its two points.
            let lines: Vec<&str> = p.split("<g class=\"line\" data-line=\"").skip(1).collect();
            let values: Vec<&str> = lines.iter().map(|l| &l[..l.find('"').unwrap()]).collect();
            assert_eq!(values, ["1", "4", "16"]);
            for l in lines {
                assert_eq!(l.matches("class=\"point\"").count(), 2);
            }
        }
        // Each concurrency keeps its colour in every panel and in the legend.
        assert_eq!(
            html.matches("stroke=\"#2ca02c\" stroke-width=\"1.5\" stroke-opacity")
                .count(),
            4
        );
        assert!(html.contains("class=\"legend-line\""));
    }

    #[test]
    fn whiskers_span_the_wilson_interval() {
        let html = render(&sweep());
        let inline = panels(&html)[0];
        let (top, bottom) = (
            attr(inline, "data-tick=\"100\"", "y1"),
            attr(inline, "data-tick=\"0\"", "y1"),
        );
        let p = point_of(inline, "strategy=inline,cpus=8,concurrency=16");
        let (lo, hi) = wilson(52, 100);
        let y = |r: f64| bottom - r * (bottom - top);
        assert!((attr(p, "class=\"ci\"", "y1") - y(lo)).abs() < 0.11, "{p}");
        assert!((attr(p, "class=\"ci\"", "y2") - y(hi)).abs() < 0.11, "{p}");
        assert!(
            p.contains("passed 52/100 = 52.0% (95% CI 42.3%–61.5%)"),
            "{p}"
        );
    }

    #[test]
    fn a_cell_failing_its_expectation_gets_the_fails_mark() {
        let cells = vec![
            stats(&[("strategy", "inline"), ("cpus", "1")], 10, 20, "exit"),
            stats(&[("strategy", "inline"), ("cpus", "2")], 20, 20, "exit"),
            stats(&[("strategy", "inline"), ("cpus", "4")], 10, 20, "any"),
        ];
        let html = render(&summary(cells, &[2]));
        let p = panels(&html)[0];
        let failing = point_of(p, "strategy=inline,cpus=1");
        assert!(failing.contains("class=\"fails\""), "{failing}");
        assert!(!failing.contains("class=\"meets\""), "{failing}");
        assert!(point_of(p, "strategy=inline,cpus=2").contains("class=\"meets\""));
        // Measured only: half passed, yet it meets its expectation.
        assert!(point_of(p, "strategy=inline,cpus=4").contains("class=\"meets\""));
        // The legend explains both marks.
        let legend = html.split("<g class=\"panel\"").next().unwrap();
        assert!(legend.contains("class=\"meets\"") && legend.contains("class=\"fails\""));
    }

    /// The x labels of the first panel.
    fn x_labels(html: &str) -> Vec<String> {
        panels(html)[0]
            .split("class=\"x-tick\"")
            .skip(1)
            .map(|t| {
                let t = &t[t.find('>').unwrap() + 1..];
                t[..t.find('<').unwrap()].to_string()
            })
            .collect()
    }

    #[test]
    fn cells_without_cpus_sit_at_the_host_cpu_count_or_apart() {
        let cells = || {
            vec![
                stats(&[("strategy", "inline")], 5, 10, "any"),
                stats(&[("strategy", "inline"), ("cpus", "4")], 7, 10, "any"),
                stats(&[("strategy", "zygote")], 10, 10, "any"),
            ]
        };
        let html = render(&summary(cells(), &[2]));
        assert_eq!(x_labels(&html), ["2", "4"]);
        assert_eq!(
            html.matches("class=\"point\"").count(),
            3,
            "no cell dropped"
        );
        for hosts in [&[2, 4][..], &[]] {
            let html = render(&summary(cells(), hosts));
            assert_eq!(x_labels(&html), ["4", "—"], "hosts {hosts:?}");
            assert_eq!(html.matches("class=\"point\"").count(), 3);
        }
    }

    #[test]
    fn a_summary_without_trials_renders_without_a_chart() {
        let html = render(&summary(vec![], &[]));
        assert!(!html.contains("<svg"), "{html}");
        let mut skipped = stats(&[("strategy", "inline"), ("cpus", "4")], 0, 0, "exit");
        skipped.skipped = Some("needs 4 CPUs".into());
        let html = render(&summary(vec![skipped], &[2]));
        assert!(!html.contains("pass rate by vCPUs"), "{html}");
        assert!(html.contains("Not charted (no trials): <code>strategy=inline,cpus=4</code>"));
    }

    #[test]
    fn the_time_chart_leaves_room_for_its_longest_row_label() {
        let long = "a-strategy-with-a-long-name-for-its-pool-and-its-lock";
        let mut c = stats(&[("strategy", long), ("concurrency", "16")], 1, 1, "any");
        c.times_ms = vec![5.0];
        c.max_ms = Some(5.0);
        c.median_ms = Some(5.0);
        let html = render(&summary(vec![c.clone()], &[2]));
        let chart = html
            .split("aria-label=\"time to verdict\"")
            .nth(1)
            .expect("a time chart");
        let label_end = chart
            .find(&format!(">{}</text>", c.cell_id))
            .expect("the row label");
        // The label is right-aligned at its x: everything left of x must fit its text, at
        // no less than 6 px a character of an 11 px sans-serif font.
        let tag = chart[..label_end].rfind("<text x=").unwrap();
        let x_here = attr(&chart[tag..label_end], "<text", "x");
        assert!(
            x_here >= 6.0 * c.cell_id.chars().count() as f64,
            "label ends at x = {x_here}, too close to the edge for {:?}",
            c.cell_id
        );
    }

    #[test]
    fn chart_text_is_escaped() {
        let cells = vec![stats(
            &[
                ("strategy", "<b>&\"x"),
                ("cpus", "1"),
                ("concurrency", "<i>"),
            ],
            1,
            2,
            "any",
        )];
        let html = render(&summary(cells, &[]));
        assert!(!html.contains("<b>") && !html.contains("<i>"), "{html}");
        assert!(html.contains(">&lt;b&gt;&amp;&quot;x<"));
        assert!(html.contains("data-line=\"&lt;i&gt;\""));
    }
}
