//! `junit.xml`: one test suite per scenario, one test case per cell; a cell that misses its
//! expectation is a failure, a cell that cannot run here is skipped.

use std::fmt::Write;

use super::format::pct;
use crate::stats::Summary;

/// Escapes text for XML attributes and content.
pub fn escape(text: &str) -> String {
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

/// Renders `junit.xml`.
pub fn render(summary: &Summary) -> String {
    let failures = crate::gate::evaluate(summary);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"wedge\" tests=\"{}\" failures=\"{}\">",
        summary.cells.len(),
        failures.len()
    );
    for scenario in summary.scenarios() {
        let cells: Vec<_> = summary
            .cells
            .iter()
            .filter(|c| c.scenario == scenario)
            .collect();
        let fails = failures.iter().filter(|f| f.scenario == scenario).count();
        let skipped = cells.iter().filter(|c| c.skipped.is_some()).count();
        let time: f64 = cells
            .iter()
            .map(|c| c.times_ms.iter().sum::<f64>())
            .sum::<f64>()
            / 1000.0;
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{fails}\" skipped=\"{skipped}\" time=\"{time:.3}\">",
            escape(scenario),
            cells.len()
        );
        for c in cells {
            let time = c.times_ms.iter().sum::<f64>() / 1000.0;
            let _ = writeln!(
                out,
                "    <testcase classname=\"wedge.{}\" name=\"{}\" time=\"{time:.3}\">",
                escape(scenario),
                escape(&c.cell_id)
            );
            if let Some(why) = &c.skipped {
                let _ = writeln!(out, "      <skipped message=\"{}\"/>", escape(why));
            } else if let Some(f) = failures
                .iter()
                .find(|f| f.scenario == c.scenario && f.cell == c.cell_id)
            {
                let _ = writeln!(
                    out,
                    "      <failure message=\"{}\" type=\"expectation\">{}</failure>",
                    escape(&f.reason),
                    escape(&format!(
                        "expected: {}\n{}",
                        c.expectation.describe(),
                        f.reason
                    ))
                );
            }
            let mut text = format!(
                "expected: {}\ntrials {}: pass {}, fail {}, hang {}, crash {}, error {}; {} {}/{} (95% CI {}–{})",
                c.expectation.describe(),
                c.trials,
                c.passes,
                c.fails,
                c.hangs,
                c.crashes,
                c.errors,
                c.rate_word(),
                c.met,
                c.trials,
                pct(c.met_interval.0),
                pct(c.met_interval.1)
            );
            if let Some((d, n)) = &c.top_diagnosis {
                let _ = write!(text, "\nhang diagnosis ({n} trials): {d}");
            }
            let _ = writeln!(out, "      <system-out>{}</system-out>", escape(&text));
            let _ = writeln!(out, "    </testcase>");
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
}
