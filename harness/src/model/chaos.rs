//! Chaos scheduling: the seeded perturbation schedule a trial applies to its subject's threads
//! from the outside, to make races the ordinary scheduler hides show up in fewer trials.
//!
//! Guarantee: the schedule is a pure function of the trial's seed. The same seed gives the same
//! perturbations (when, which pick, for how long), so `wedge replay --seed S` repeats them; which
//! thread a pick lands on is the pick modulo the subject's threads at that moment (sorted by
//! tid), so it is the same thread whenever the subject has reached the same point.
//!
//! Mode `rr`, after rr's chaos mode: every so often (gaps log-uniform in [`GAP_MS`]) one of the
//! subject's threads is demoted to `SCHED_IDLE` for a log-uniform time in [`HOLD_MS`], then
//! given back the policy it had. A `SCHED_IDLE` thread only runs when nothing else on its CPU
//! wants to, so a demoted lock holder keeps its lock longer and a demoted waker wakes later:
//! the windows races live in widen, with no change to the subject and no signal it can see.
//! The bounds are rr's shape scaled to wedge's trials (which last a second or two, not a whole
//! test suite): at most [`HOLD_MS`]'s upper bound, so a demoted thread on an idle CPU loses
//! nothing and one on a busy CPU is not starved past a trial's quiescence window for long.
//!
//! Mode `pct`, after PCT's priority change points: at the same seeded times, the thread whose
//! priority drops is one that is *running* at that instant (the pick modulo the subject's
//! threads in state R), and nothing else changes: no squeeze, so the subject keeps all its CPUs.
//! A thread that is running is the one that may be inside a critical section (holding an
//! allocator arena, the stderr lock, the process's cwd between `chdir` and `bind`); demoted there,
//! it holds it while the others run on, which is what the fork-while-locked and cwd-race hazards
//! need, and `rr`'s squeeze onto one CPU took away (`reports/determinism.md`).

use serde::{Deserialize, Serialize};

/// The range of gaps between perturbations, in milliseconds (log-uniform).
pub const GAP_MS: (f64, f64) = (1.0, 100.0);
/// The range of how long a thread stays demoted, in milliseconds (log-uniform).
pub const HOLD_MS: (f64, f64) = (1.0, 500.0);

/// How a trial perturbs its subject's scheduling (`[scenario] chaos`, the `chaos` axis,
/// `wedge run --chaos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Chaos {
    /// No perturbation.
    #[default]
    Off,
    /// Random threads demoted to `SCHED_IDLE` for log-uniform times (module doc).
    Rr,
    /// Running threads demoted at the same times, the subject's CPUs left alone (module doc).
    Pct,
}

impl Chaos {
    pub const NAMES: &[&str] = &["off", "rr", "pct"];

    pub fn as_str(self) -> &'static str {
        match self {
            Chaos::Off => "off",
            Chaos::Rr => "rr",
            Chaos::Pct => "pct",
        }
    }
}

impl std::str::FromStr for Chaos {
    type Err = String;

    fn from_str(s: &str) -> Result<Chaos, String> {
        match s {
            "off" => Ok(Chaos::Off),
            "rr" => Ok(Chaos::Rr),
            "pct" => Ok(Chaos::Pct),
            other => Err(format!(
                "chaos \"{other}\" is not a mode: one of {}",
                Chaos::NAMES.join(", ")
            )),
        }
    }
}

impl std::fmt::Display for Chaos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One perturbation of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perturbation {
    /// When, in milliseconds from the start of the trial's steps.
    pub at_ms: u64,
    /// Which thread: this modulo the subject's threads, sorted by tid.
    pub pick: u64,
    /// How long the thread stays demoted, in milliseconds.
    pub hold_ms: u64,
}

/// The perturbations of a trial with `seed`, in time order, endless (the trial stops taking
/// them when it ends).
pub fn schedule(seed: u64) -> impl Iterator<Item = Perturbation> {
    let mut rng = SplitMix(seed ^ 0x6368_616f_735f_7272); // "chaos_rr"
    let mut at = 0u64;
    std::iter::from_fn(move || {
        at += log_uniform(&mut rng, GAP_MS);
        Some(Perturbation {
            at_ms: at,
            pick: rng.next(),
            hold_ms: log_uniform(&mut rng, HOLD_MS),
        })
    })
}

/// A value log-uniform in `[lo, hi]`, rounded to whole milliseconds.
fn log_uniform(rng: &mut SplitMix, (lo, hi): (f64, f64)) -> u64 {
    let unit = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    (lo.ln() + unit * (hi.ln() - lo.ln())).exp().round() as u64
}

/// splitmix64: a tiny, well-mixed generator; the schedule needs reproducibility, not strength.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let a: Vec<Perturbation> = schedule(7).take(100).collect();
        let b: Vec<Perturbation> = schedule(7).take(100).collect();
        let c: Vec<Perturbation> = schedule(8).take(100).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn times_grow_and_stay_in_their_ranges() {
        let all: Vec<Perturbation> = schedule(1).take(10_000).collect();
        for pair in all.windows(2) {
            let gap = pair[1].at_ms - pair[0].at_ms;
            assert!((1..=100).contains(&gap), "{gap}");
        }
        assert!(all.iter().all(|p| (1..=500).contains(&p.hold_ms)));
        // Log-uniform: about as many holds in 1-22 ms as in 22-500 ms (the geometric middle).
        let short = all.iter().filter(|p| p.hold_ms <= 22).count();
        assert!((4000..6000).contains(&short), "{short}");
    }

    #[test]
    fn modes_parse_and_name_themselves() {
        for name in Chaos::NAMES {
            assert_eq!(name.parse::<Chaos>().unwrap().as_str(), *name);
        }
        let e = "pos".parse::<Chaos>().unwrap_err();
        assert!(e.contains("one of off, rr, pct"), "{e}");
    }
}
