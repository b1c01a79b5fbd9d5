//! The system timers that can still be a still tree's (see "System timers that were never the
//! tree's" in the monitor's module doc).
//!
//! The guarantee: [`StillAlarms::fold`] drops a timer only once a snapshot shows it fired (or
//! was re-armed) without changing the tree; a timer it cannot follow always counts. Pure: the
//! instants and the timer listings come in as values.

use std::time::Instant;

use crate::engine::proc::wake_sources as procwake;

/// The system's `ITIMER_REAL` and POSIX timers followed through a tree's stillness: the only
/// ones that can still be the tree's (see the module doc).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StillAlarms {
    followed: Vec<Followed>,
    /// Reads folded in so far.
    reads: u32,
}

/// A system timer listed in the first reads of a stillness.
#[derive(Debug, Clone, PartialEq)]
struct Followed {
    /// As its latest listing shows it.
    timer: procwake::SystemTimer,
    /// It fires by then at the latest: its latest listing's end plus the time left it gave.
    due_by: Instant,
    /// The end of the first read since its latest listing that did not list it.
    missing_since: Option<Instant>,
}

/// Reads whose timers all count as armed when the stillness began. `/proc/timer_list` walks each
/// CPU's queue by index, dropping the lock between entries, so one read can skip a timer when
/// another ahead of it leaves the queue meanwhile; the union of two reads makes a timer of the
/// tree's missed by both unlikely. Any timer armed between them counts too (the sound side).
const START_READS: u32 = 2;

impl StillAlarms {
    /// Folds in a read of the system's timers that ended at `read_end`, made after the snapshot
    /// taken at `snap`, and returns those that may still be the tree's:
    /// - listed in one of the first [`START_READS`] reads, or later with the same expiry;
    /// - or, no longer listed, not yet shown to have fired without effect: that takes a
    ///   snapshot taken after a read that no longer listed it and after it was due. A timer of
    ///   the tree's that fires wakes it at once, but the read follows the snapshot: a timer gone
    ///   from the read may have fired after the snapshot was taken, which then shows nothing yet
    ///   (this was engine_timers' alarm-pause false hang, about 1 run in 4). And a timer not yet
    ///   due that the read missed has not fired at all.
    ///
    /// Timers listed first in a later read were armed since, so not by the tree; a listing
    /// without an expiry cannot be followed and always counts.
    pub fn fold(
        &mut self,
        timers: &[procwake::SystemTimer],
        snap: Instant,
        read_end: Instant,
    ) -> procwake::KernelTimers {
        let starting = self.reads < START_READS;
        self.reads += 1;
        let mut listed = vec![false; self.followed.len()];
        let mut out = Vec::new();
        for t in timers {
            if t.expires_ns.is_none() {
                out.push(*t);
                continue;
            }
            let same =
                (0..self.followed.len()).find(|&i| !listed[i] && self.followed[i].timer.same_as(t));
            let seen = Followed {
                timer: *t,
                due_by: read_end + t.left,
                missing_since: None,
            };
            match same {
                Some(i) => {
                    self.followed[i] = seen;
                    listed[i] = true;
                }
                None if starting => {
                    self.followed.push(seen);
                    listed.push(true);
                }
                None => {}
            }
        }
        for (f, listed) in self.followed.iter_mut().zip(listed) {
            if listed {
                out.push(f.timer);
                continue;
            }
            let first_missing = *f.missing_since.get_or_insert(read_end);
            if first_missing < snap && f.due_by <= snap {
                continue;
            }
            out.push(procwake::SystemTimer {
                left: f.due_by.saturating_duration_since(read_end),
                ..f.timer
            });
        }
        procwake::KernelTimers::of(&out)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_timers_armed_when_the_stillness_began_can_be_the_trees() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Times are ms after t0; a timer's expiry is on the same scale, and a read at `read`
        // lists it with the time left from then.
        let timer = |real, expires: u64, read: u64| procwake::SystemTimer {
            real,
            expires_ns: Some(expires * 1_000_000),
            left: ms(expires.saturating_sub(read)),
        };
        let fold = |still: &mut StillAlarms, list: &[(bool, u64)], snap: u64| {
            let read = snap + 1;
            let timers: Vec<_> = list.iter().map(|&(r, e)| timer(r, e, read)).collect();
            let mut c = still.fold(&timers, t0 + ms(snap), t0 + ms(read));
            c.itimer_real.sort();
            c
        };
        // A foreign periodic alarm due at 400, the tree's due at 5000, a POSIX timer due at 700;
        // the second read also lists an alarm the first skipped, due at 3000.
        let (periodic, tree, posix, skipped) =
            ((true, 400), (true, 5000), (false, 700), (true, 3000));
        let mut still = StillAlarms::default();
        let c = fold(&mut still, &[periodic, tree, posix], 0);
        assert_eq!(c.itimer_real, vec![ms(399), ms(4999)]);
        let c = fold(&mut still, &[periodic, tree, posix, skipped], 50);
        assert_eq!(c.itimer_real, vec![ms(349), ms(2949), ms(4949)]);
        // At 1000 the periodic one fired and was re-armed (a new expiry, so not the tree's:
        // armed since); the POSIX one is gone, and so is the tree's (a skip: not yet due). The
        // snapshot predates this read, so what fired may have fired after it: all still count.
        let rearmed = (true, 1400);
        let c = fold(&mut still, &[rearmed, skipped], 1000);
        assert_eq!(c.itimer_real, vec![ms(0), ms(1999), ms(3999)]);
        assert_eq!(c.posix, vec![ms(0)]);
        // The next snapshot follows that read and shows the tree unchanged: the periodic and the
        // POSIX one fired without effect. The tree's, not yet due, still counts.
        let c = fold(&mut still, &[rearmed, skipped], 1020);
        assert_eq!(c.itimer_real, vec![ms(1979), ms(3979)]);
        assert!(c.posix.is_empty());
        // Listed again after the skip: followed as before.
        let c = fold(&mut still, &[tree], 1060);
        assert_eq!(c.itimer_real, vec![ms(1939), ms(3939)]);
        // A listing without an expiry cannot be followed: it always counts.
        let vague = procwake::SystemTimer {
            expires_ns: None,
            ..timer(true, 9000, 1100)
        };
        let c = still.fold(
            &[vague, timer(true, 5000, 1101)],
            t0 + ms(1100),
            t0 + ms(1101),
        );
        assert_eq!(c.itimer_real.len(), 3);
        // Nothing in the first reads: nothing later can be the tree's.
        let mut empty = StillAlarms::default();
        for i in 0..START_READS {
            assert!(fold(&mut empty, &[], i.into()).itimer_real.is_empty());
        }
        assert!(fold(&mut empty, &[tree], 100).itimer_real.is_empty());
    }
}
