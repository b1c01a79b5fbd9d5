//! A criterion [`Measurement`] whose value is a count of failed trials, so criterion reports a
//! cell's failures per trial (its failure rate) the way it reports time per iteration, and its
//! baselines (`--save-baseline`, `--baseline`) flag a pass-rate regression like a slowdown.
//!
//! A failed trial is one whose verdict is not `pass` (fail, hang, crash or error): the rate of
//! the subject's bug, whatever the cell expects. Benches feed it with `iter_custom`: the routine
//! runs `iters` trials and returns how many failed, and criterion divides by `iters`.
//!
//! criterion's bootstrap resamples the per-sample rates; when every trial of every sample passes
//! (0 %) or fails (100 %), all resamples are equal and its interval collapses to a point, which
//! says nothing about how sure the estimate is. [`Tally`] keeps the raw counts so a bench can
//! print wedge's Wilson interval beside it, which stays honest at both ends.

use criterion::Throughput;
use criterion::measurement::{Measurement, ValueFormatter};
use wedge::model::record::{TrialRecord, Verdict};

/// Failed trials, counted (see the module doc).
#[derive(Debug, Clone, Copy, Default)]
pub struct Failures;

/// How many of `records` failed: their verdict is not `pass`.
pub fn failures(records: &[TrialRecord]) -> u64 {
    records
        .iter()
        .filter(|r| r.verdict != Verdict::Pass)
        .count() as u64
}

impl Measurement for Failures {
    // A failure count cannot be read off a clock at the start and the end of a routine: only
    // `iter_custom`, which returns the count itself, gives it a value.
    type Intermediate = ();
    type Value = f64;

    fn start(&self) -> Self::Intermediate {}

    fn end(&self, _: Self::Intermediate) -> Self::Value {
        0.0
    }

    fn add(&self, v1: &Self::Value, v2: &Self::Value) -> Self::Value {
        v1 + v2
    }

    fn zero(&self) -> Self::Value {
        0.0
    }

    fn to_f64(&self, value: &Self::Value) -> f64 {
        *value
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &RateFormatter
    }
}

/// Shows failures per trial as a percentage.
struct RateFormatter;

impl ValueFormatter for RateFormatter {
    fn scale_values(&self, _typical: f64, values: &mut [f64]) -> &'static str {
        for v in values {
            *v *= 100.0;
        }
        "% failed"
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        _throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        // A throughput of failures means nothing more than the rate: keep the rate.
        self.scale_values(0.0, values)
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "failures/trial"
    }
}

/// Every trial a bench ran for one cell, for the Wilson interval of its failure rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub trials: u64,
    pub failed: u64,
}

impl Tally {
    pub fn add(&mut self, records: &[TrialRecord]) {
        self.trials += records.len() as u64;
        self.failed += failures(records);
    }

    /// The failure rate and its Wilson 95 % interval (wedge's own, as its reports use).
    pub fn rate(&self) -> (f64, (f64, f64)) {
        let p = if self.trials == 0 {
            0.0
        } else {
            self.failed as f64 / self.trials as f64
        };
        (p, wedge::report::stats::wilson(self.failed, self.trials))
    }

    /// e.g. `3/40 failed = 7.5 % (Wilson 95 %: 2.6 %–19.9 %)`.
    pub fn describe(&self) -> String {
        let (p, (lo, hi)) = self.rate();
        format!(
            "{}/{} failed = {:.1} % (Wilson 95 %: {:.1} %–{:.1} %)",
            self.failed,
            self.trials,
            p * 100.0,
            lo * 100.0,
            hi * 100.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_formatter_shows_percent() {
        let mut v = [0.25, 1.0];
        assert_eq!(RateFormatter.scale_values(0.5, &mut v), "% failed");
        assert_eq!(v, [25.0, 100.0]);
        assert_eq!(Failures.add(&2.0, &3.0), 5.0);
        assert_eq!(Failures.zero(), 0.0);
    }

    #[test]
    fn wilson_stays_wide_where_the_bootstrap_collapses() {
        // Every trial passed: the rate is 0, but 20 trials cannot exclude a 16 % failure rate.
        let none = Tally {
            trials: 20,
            failed: 0,
        };
        let (p, (lo, hi)) = none.rate();
        assert_eq!((p, lo), (0.0, 0.0));
        assert!(hi > 0.15 && hi < 0.17, "{hi}");
        let all = Tally {
            trials: 20,
            failed: 20,
        };
        let (p, (lo, hi)) = all.rate();
        assert_eq!((p, hi), (1.0, 1.0));
        assert!(lo > 0.83 && lo < 0.85, "{lo}");
        assert_eq!(
            Tally {
                trials: 40,
                failed: 3
            }
            .describe(),
            "3/40 failed = 7.5 % (Wilson 95 %: 2.6 %–19.9 %)"
        );
    }
}
