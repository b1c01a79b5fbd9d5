//! Progress output: a bar on a terminal, one line per finished cell otherwise (none with `-q`),
//! each with an estimate of the time left.
//!
//! The estimate weighs each trial by its cell's time scale (1 on the host, the guest's slowdown in
//! an emulated VM), since a TCG trial takes many host trials' time: time left = time so far ×
//! weight left / weight done. It is rough early on and when cells differ in length (a hang
//! waits for its window, a pass does not), and it does not see VM boots coming; it says so by
//! being "about".

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Event, Reporter};
use crate::model::cell::Cell;
use crate::model::record::{TrialRecord, Verdict};

/// Shows a run's progress on stderr.
pub struct Progress {
    quiet: bool,
    /// Made when the trials start (it needs their count); none off a terminal.
    bar: OnceLock<Option<indicatif::ProgressBar>>,
    eta: Eta,
}

/// The time-left estimate (module doc).
struct Eta {
    /// Each cell's weight per trial, by (scenario, cell index).
    weights: HashMap<(String, usize), u64>,
    total: u64,
    done: AtomicU64,
    started: OnceLock<Instant>,
}

impl Eta {
    fn trial_done(&self, scenario: &str, cell_index: usize) {
        let weight = self
            .weights
            .get(&(scenario.to_string(), cell_index))
            .copied()
            .unwrap_or(1);
        self.done.fetch_add(weight, Ordering::Relaxed);
    }

    /// `[N% done, 1m05s so far, about 3m20s left]`, or nothing before any trial finished.
    fn text(&self) -> String {
        let done = self.done.load(Ordering::Relaxed).min(self.total);
        let Some(started) = self.started.get() else {
            return String::new();
        };
        if done == 0 || self.total == 0 {
            return String::new();
        }
        let elapsed = started.elapsed();
        let left = elapsed.mul_f64((self.total - done) as f64 / done as f64);
        format!(
            "[{}% done, {} so far, about {} left]",
            done * 100 / self.total,
            short(elapsed),
            short(left)
        )
    }
}

/// A duration as `42s` or `3m05s`.
fn short(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

impl Progress {
    /// Progress of a run of `cells`, each `(scenario, cell index, trials, weight per trial)`.
    pub fn new(
        quiet: bool,
        cells: impl IntoIterator<Item = (String, usize, u32, u64)>,
    ) -> Progress {
        let mut weights = HashMap::new();
        let mut total = 0;
        for (scenario, index, trials, weight) in cells {
            total += u64::from(trials) * weight;
            weights.insert((scenario, index), weight);
        }
        Progress {
            quiet,
            bar: OnceLock::new(),
            eta: Eta {
                weights,
                total,
                done: AtomicU64::new(0),
                started: OnceLock::new(),
            },
        }
    }

    fn bar(&self) -> Option<&indicatif::ProgressBar> {
        self.bar.get().and_then(Option::as_ref)
    }

    fn start(&self, total: u64) {
        self.eta.started.get_or_init(Instant::now);
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
        self.eta.trial_done(&r.scenario, r.cell_index);
        if let Some(bar) = self.bar() {
            bar.inc(1);
            bar.set_message(format!(
                "{} {} {} → {}",
                self.eta.text(),
                r.scenario,
                r.cell.id(),
                r.verdict.as_str()
            ));
        }
    }

    fn cell_done(&self, scenario: &str, cell: &Cell, records: &[TrialRecord]) {
        let mut line = cell_line(scenario, cell, records);
        let eta = self.eta.text();
        if !eta.is_empty() && self.bar().is_none() {
            line = format!("{line} {eta}");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_weighs_trials_by_their_cells_time_scale() {
        let eta = Progress::new(true, [("a".into(), 0, 10, 1), ("b".into(), 0, 1, 10)]).eta;
        assert_eq!(eta.total, 20);
        assert_eq!(eta.text(), "", "nothing before the run started");
        eta.started.get_or_init(Instant::now);
        assert_eq!(eta.text(), "", "nothing before a trial finished");
        for _ in 0..10 {
            eta.trial_done("a", 0);
        }
        assert!(eta.text().starts_with("[50% done, "), "{}", eta.text());
        eta.trial_done("b", 0);
        assert!(eta.text().starts_with("[100% done, "), "{}", eta.text());
        assert!(eta.text().ends_with("about 0s left]"), "{}", eta.text());
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(short(Duration::from_secs(42)), "42s");
        assert_eq!(short(Duration::from_secs(185)), "3m05s");
    }
}
