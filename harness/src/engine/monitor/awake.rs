//! What kept a tree awake: for a hang judged only at the deadline (the tree was never quiescent
//! for the window), which threads woke, how often, through what, and which used the CPU.
//!
//! The guarantee: every line is measured, never inferred. A thread's wake-ups are the growth of
//! its context-switch count between snapshots, its CPU share the growth of its CPU time over the
//! last window; the source named is what the thread's wait shows at the verdict (its own timeout,
//! a timer it waits on, a signal its process's timers may send), else `source unknown`. Nothing
//! here changes a verdict: it explains one, and classifies it ([`HangClass`]).
//!
//! Pure: the monitor feeds [`Awake::note`] with each snapshot's counters; [`Awake::explain`]
//! reads no clock but the instants it is given.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

// Stored in records, so it lives with the other diagnosis types; re-exported here, where the
// classes are decided.
pub use crate::model::diagnosis::HangClass;

/// A thread using at least this share of a CPU over the last window is spinning.
const SPINNING: f64 = 0.5;
/// Samples kept per thread (2.5 s at the watchdog's slowest tick, 10 ms: two wakes of a 1 s
/// ticker).
const KEPT: usize = 256;
/// Threads followed at most (a fork bomb's thousands would cost memory for nothing).
const THREADS: usize = 256;

/// One thread's counters as seen by a snapshot.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    switches: u64,
    cpu_ticks: u64,
    /// On a CPU or waiting for one (`R`).
    running: bool,
}

/// The counters of every thread over the trial.
#[derive(Debug, Default)]
pub struct Awake {
    threads: BTreeMap<(i32, i32), VecDeque<Sample>>,
    /// The latest wake source seen on each thread's wait (a thread that keeps waking is seen
    /// asleep in only some snapshots, so the verdict's may not show it).
    sources: BTreeMap<(i32, i32), String>,
}

/// A thread of the verdict's snapshot, with what it is seen doing.
#[derive(Debug, Clone)]
pub struct Seen {
    pub pid: i32,
    pub tid: i32,
    /// e.g. `wedge-subject[12] main thread`.
    pub who: String,
    /// What its wait shows can wake it (`an alarm may be pending ...`, `timerfd fd 3 ...`), or
    /// its own timed call (`timed clock_nanosleep`).
    pub source: Option<String>,
}

impl Awake {
    /// Records a thread's counters at `at` (`running`: in state `R`).
    pub fn note(
        &mut self,
        at: Instant,
        id: (i32, i32),
        switches: u64,
        cpu_ticks: u64,
        running: bool,
    ) {
        if self.threads.len() >= THREADS && !self.threads.contains_key(&id) {
            return;
        }
        let samples = self.threads.entry(id).or_default();
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(Sample {
            at,
            switches,
            cpu_ticks,
            running,
        });
    }

    /// Forgets the threads `keep` rejects (gone from the tree).
    pub fn retain(&mut self, keep: impl Fn(&(i32, i32)) -> bool) {
        self.threads.retain(|id, _| keep(id));
        self.sources.retain(|id, _| keep(id));
    }

    /// Records what a thread's wait showed could wake it (a timer, its own timeout).
    pub fn note_source(&mut self, id: (i32, i32), source: &str) {
        self.sources.insert(id, short_source(source));
    }

    /// The lines saying what kept the threads `seen` awake up to `now`, and the class of the
    /// hang: `window` is the span CPU shares are measured over, `ticks_per_s` the kernel's
    /// clock ticks per second.
    pub fn explain(
        &self,
        seen: &[Seen],
        now: Instant,
        window: Duration,
        ticks_per_s: u64,
    ) -> (Vec<String>, HangClass) {
        let mut spinning = Vec::new();
        let mut woke = Vec::new();
        for s in seen {
            let Some(samples) = self.threads.get(&(s.pid, s.tid)) else {
                continue;
            };
            let share = cpu_share(samples, now, window, ticks_per_s).unwrap_or(0.0);
            // Runnable in most snapshots: spinning, even when other work kept it off the CPU.
            if share >= SPINNING || running_share(samples, now, window) >= SPINNING {
                spinning.push(format!(
                    "spinning: {} used {:.0} % of a CPU in the last {}",
                    s.who,
                    share * 100.0,
                    super::wake_rule::human(window)
                ));
            } else if let Some(every) = wake_period(samples) {
                let source = s
                    .source
                    .as_deref()
                    .map(short_source)
                    .or_else(|| self.sources.get(&(s.pid, s.tid)).cloned());
                woke.push(format!(
                    "never quiescent: {} woke every {} ({})",
                    s.who,
                    super::wake_rule::human(every),
                    source.as_deref().unwrap_or("source unknown")
                ));
            }
        }
        let class = if !spinning.is_empty() {
            HangClass::Spinning
        } else if !woke.is_empty() {
            HangClass::Stalled
        } else {
            HangClass::Blocked
        };
        spinning.extend(woke);
        (spinning, class)
    }
}

/// The share of a CPU the samples show used over the last `window` before `now` (from the
/// newest sample at least that old, else the oldest); `None` with fewer than two samples.
fn cpu_share(
    samples: &VecDeque<Sample>,
    now: Instant,
    window: Duration,
    ticks_per_s: u64,
) -> Option<f64> {
    let last = samples.back()?;
    let from = samples
        .iter()
        .rev()
        .find(|s| now.saturating_duration_since(s.at) >= window)
        .or(samples.front())?;
    let span = last.at.saturating_duration_since(from.at).as_secs_f64();
    if span <= 0.0 || ticks_per_s == 0 {
        return None;
    }
    let used = last.cpu_ticks.saturating_sub(from.cpu_ticks) as f64 / ticks_per_s as f64;
    Some(used / span)
}

/// The share of the snapshots over the last `window` that saw the thread runnable.
fn running_share(samples: &VecDeque<Sample>, now: Instant, window: Duration) -> f64 {
    let recent: Vec<&Sample> = samples
        .iter()
        .filter(|s| now.saturating_duration_since(s.at) <= window)
        .collect();
    if recent.is_empty() {
        return 0.0;
    }
    recent.iter().filter(|s| s.running).count() as f64 / recent.len() as f64
}

/// How often the thread woke: the span from the first snapshot that saw it wake to the last,
/// over the snapshots in between that saw it wake (a wake-up can count several context
/// switches: a preemption, a signal handler). `None` under two wakes seen.
fn wake_period(samples: &VecDeque<Sample>) -> Option<Duration> {
    let woke: Vec<Instant> = samples
        .iter()
        .zip(samples.iter().skip(1))
        .filter(|(a, b)| b.switches > a.switches)
        .map(|(_, b)| b.at)
        .collect();
    let (first, last) = (woke.first()?, woke.last()?);
    let wakes = u32::try_from(woke.len() - 1).ok().filter(|&n| n > 0)?;
    Some(last.saturating_duration_since(*first) / wakes)
}

/// A wake source as the line names it: `ITIMER_REAL`, `a POSIX timer`, `timerfd fd 3`, or the
/// text itself.
fn short_source(text: &str) -> String {
    if text.contains("ITIMER_REAL") || text.contains("SIGALRM") {
        "ITIMER_REAL".to_string()
    } else if text.contains("POSIX timer") {
        "a POSIX timer".to_string()
    } else if text.starts_with("timerfd fd ") {
        text.split_ascii_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(source: Option<&str>) -> Seen {
        Seen {
            pid: 1,
            tid: 1,
            who: "x[1] main thread".into(),
            source: source.map(str::to_string),
        }
    }

    #[test]
    fn a_thread_on_the_cpu_is_spinning() {
        let t0 = Instant::now();
        let mut a = Awake::default();
        // 100 ticks/s, 10 ms apart: one tick per sample is a whole CPU.
        for i in 0..100u64 {
            a.note(t0 + Duration::from_millis(10 * i), (1, 1), i, i, true);
        }
        let now = t0 + Duration::from_millis(990);
        let (lines, class) = a.explain(&[seen(None)], now, Duration::from_millis(500), 100);
        assert_eq!(class, HangClass::Spinning);
        assert_eq!(
            lines,
            vec!["spinning: x[1] main thread used 100 % of a CPU in the last 500 ms"]
        );
    }

    #[test]
    fn a_thread_woken_by_a_timer_says_how_often_and_why() {
        let t0 = Instant::now();
        let mut a = Awake::default();
        // Samples every 10 ms; a wake-up every 200 ms, no CPU to speak of.
        for i in 0..100u64 {
            a.note(t0 + Duration::from_millis(10 * i), (1, 1), i / 20, 0, false);
        }
        let now = t0 + Duration::from_millis(990);
        let source = "an alarm may be pending (... ITIMER_REAL ...), SIGALRM caught";
        let (lines, class) = a.explain(&[seen(Some(source))], now, Duration::from_millis(500), 100);
        assert_eq!(class, HangClass::Stalled);
        assert_eq!(
            lines,
            vec!["never quiescent: x[1] main thread woke every 200 ms (ITIMER_REAL)"]
        );
    }

    #[test]
    fn a_still_thread_says_nothing() {
        let t0 = Instant::now();
        let mut a = Awake::default();
        for i in 0..10u64 {
            a.note(t0 + Duration::from_millis(10 * i), (1, 1), 5, 3, false);
        }
        let (lines, class) = a.explain(&[seen(None)], t0, Duration::from_millis(500), 100);
        assert!(lines.is_empty());
        assert_eq!(class, HangClass::Blocked);
    }
}
