//! Progress output: a bar on a terminal, one line per finished cell otherwise (none with `-q`).

use std::io::IsTerminal;
use std::sync::OnceLock;

use super::{Event, Reporter};
use crate::model::cell::Cell;
use crate::model::record::{TrialRecord, Verdict};

/// Shows a run's progress on stderr.
pub struct Progress {
    quiet: bool,
    /// Made when the trials start (it needs their count); none off a terminal.
    bar: OnceLock<Option<indicatif::ProgressBar>>,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            bar: OnceLock::new(),
        }
    }

    fn bar(&self) -> Option<&indicatif::ProgressBar> {
        self.bar.get().and_then(Option::as_ref)
    }

    fn start(&self, total: u64) {
        let quiet = self.quiet;
        self.bar.get_or_init(|| {
            (!quiet && std::io::stderr().is_terminal()).then(|| {
                let bar = indicatif::ProgressBar::new(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{elapsed_precise} [{bar:40}] {pos}/{len} trials {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar
            })
        });
    }

    fn trial(&self, r: &TrialRecord) {
        if let Some(bar) = self.bar() {
            bar.inc(1);
            bar.set_message(format!(
                "{} {} → {}",
                r.scenario,
                r.cell.id(),
                r.verdict.as_str()
            ));
        }
    }

    fn cell_done(&self, scenario: &str, cell: &Cell, records: &[TrialRecord]) {
        let line = cell_line(scenario, cell, records);
        match self.bar() {
            Some(bar) => bar.println(line),
            None if !self.quiet => crate::errln!("{line}"),
            None => {}
        }
    }
}

/// The line for a finished cell: its counts by verdict, or why it was skipped.
fn cell_line(scenario: &str, cell: &Cell, records: &[TrialRecord]) -> String {
    let count = |v: Verdict| records.iter().filter(|r| r.verdict == v).count();
    let met = records.iter().filter(|r| r.met).count();
    if records.len() == 1 && records[0].verdict == Verdict::Skipped {
        return format!("{scenario} {}: skipped ({})", cell.id(), records[0].reason);
    }
    format!(
        "{scenario} {}: {} trials, {met} met the expectation (pass {}, fail {}, hang {}, crash {}, error {})",
        cell.id(),
        records.len(),
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Hang),
        count(Verdict::Crash),
        count(Verdict::Error)
    )
}

impl Reporter for Progress {
    fn report(&self, event: &Event<'_>) -> std::io::Result<()> {
        match event {
            Event::Started { trials } => self.start(*trials),
            Event::TrialFinished(r) => self.trial(r),
            Event::CellFinished {
                scenario,
                cell,
                records,
            } => self.cell_done(scenario, cell, records),
            Event::Finished => {
                if let Some(bar) = self.bar() {
                    bar.finish_and_clear();
                }
            }
            Event::Skipped(_) => {}
        }
        Ok(())
    }
}
