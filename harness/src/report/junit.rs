//! `junit.xml`: one test suite per scenario, one test case per cell; a cell that misses its
//! expectation is a failure, a cell that cannot run here is skipped.
//!
//! This module only maps a [`Summary`] onto `quick-junit`'s model; the XML itself (escaping,
//! control characters, the element and attribute names CI systems read) is the crate's, the
//! same writer nextest uses, so the file reads in every CI system that reads nextest's.

use std::fmt::Write;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, SerializeError, TestCase, TestCaseStatus, TestSuite};

use super::format::pct;
use crate::report::gate::GateFailure;
use crate::report::stats::{CellStats, Summary};

/// Renders `junit.xml`. Serialising into memory does no I/O; an error here would be the XML
/// writer's own.
pub fn render(summary: &Summary) -> Result<String, SerializeError> {
    let failures = crate::report::gate::evaluate(summary);
    let mut report = Report::new("wedge");
    for scenario in summary.scenarios() {
        report.add_test_suite(suite(summary, scenario, &failures));
    }
    report.to_string()
}

/// The suite of one scenario; its time is the sum of its cells' trial times.
fn suite(summary: &Summary, scenario: &str, failures: &[GateFailure]) -> TestSuite {
    let cells: Vec<&CellStats> = summary
        .cells
        .iter()
        .filter(|c| c.scenario == scenario)
        .collect();
    let mut suite = TestSuite::new(scenario);
    suite.set_time(seconds(cells.iter().map(|c| total_ms(c)).sum()));
    for c in cells {
        let failure = failures
            .iter()
            .find(|f| f.scenario == c.scenario && f.cell == c.cell_id);
        suite.add_test_case(case(c, failure));
    }
    suite
}

/// The case of one cell: skipped when it cannot run here, failed when the gate's check of it
/// failed; its output is the cell's counts and interval in words.
fn case(c: &CellStats, failure: Option<&GateFailure>) -> TestCase {
    let status = if let Some(why) = &c.skipped {
        let mut status = TestCaseStatus::skipped();
        status.set_message(why.as_str());
        status
    } else if let Some(f) = failure {
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
        status
            .set_message(f.reason.as_str())
            .set_type("expectation")
            .set_description(format!(
                "expected: {}\n{}",
                c.expectation.describe(),
                f.reason
            ));
        status
    } else {
        TestCaseStatus::success()
    };
    let mut case = TestCase::new(c.cell_id.as_str(), status);
    case.set_classname(format!("wedge.{}", c.scenario))
        .set_time(seconds(total_ms(c)))
        .set_system_out(system_out(c));
    case
}

/// The cell in words: its expectation, its counts, and its hang diagnosis if it has one.
fn system_out(c: &CellStats) -> String {
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
    text
}

fn total_ms(c: &CellStats) -> f64 {
    c.times_ms.iter().sum()
}

/// Milliseconds as a duration; a cell without trials (whose sum is `-0.0`) takes no time.
fn seconds(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::ZERO)
}
