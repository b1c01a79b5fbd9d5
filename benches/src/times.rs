//! Raw per-trial durations a bench saw, for the medians and tails criterion's per-sample means
//! hide (the targets are medians and p99s of single trials).

use std::time::Duration;

use wedge::report::stats::quantile;

/// Durations in milliseconds, in the order seen.
#[derive(Debug, Clone, Default)]
pub struct Times {
    ms: Vec<f64>,
}

impl Times {
    pub fn push(&mut self, d: Duration) {
        self.ms.push(d.as_secs_f64() * 1000.0);
    }

    pub fn push_ms(&mut self, ms: f64) {
        self.ms.push(ms);
    }

    pub fn len(&self) -> usize {
        self.ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ms.is_empty()
    }

    /// The `q`-quantile (nearest rank) in ms; `None` when nothing was seen.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let mut sorted = self.ms.clone();
        sorted.sort_by(f64::total_cmp);
        quantile(&sorted, q)
    }

    /// e.g. `n=20 median 412.0 ms, p90 530.1 ms, p99 601.9 ms, max 601.9 ms`.
    pub fn describe(&self) -> String {
        let q = |q: f64| self.quantile(q).unwrap_or(f64::NAN);
        format!(
            "n={} median {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.len(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut t = Times::default();
        assert!(t.quantile(0.5).is_none());
        for ms in [5.0, 1.0, 3.0, 2.0, 4.0] {
            t.push_ms(ms);
        }
        t.push(Duration::from_millis(6));
        assert_eq!(t.quantile(0.5), Some(3.0));
        assert_eq!(t.quantile(1.0), Some(6.0));
        assert_eq!(t.quantile(0.0), Some(1.0));
        assert_eq!(
            t.describe(),
            "n=6 median 3.0 ms, p90 6.0 ms, p99 6.0 ms, max 6.0 ms"
        );
    }
}
