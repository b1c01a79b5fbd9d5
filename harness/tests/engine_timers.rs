//! Timers a subject owns are wake sources: a wait they will end is never called a hang, and the
//! same wait on a timer that is never armed still is, with the timer named. Each subject comes
//! in both forms (timers-progress.toml, timers-stuck.toml: 500 ms window, 6 s deadline, 3 trials
//! per cell). Every run is under a watchdog.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{diagnosis, run};
use wedge::model::record::{TrialRecord, Verdict};

const MODES_PROGRESS: [&str; 5] = [
    "timerfd-tick",
    "epoll-timer",
    "poll-timer",
    "alarm-pause",
    "posix-timer",
];

const MODES_STUCK: [&str; 5] = [
    "timerfd-disarmed",
    "epoll-disarmed",
    "poll-disarmed",
    "pause-forever",
    "posix-timer-disarmed",
];

fn by_mode(records: &[TrialRecord]) -> BTreeMap<String, Vec<&TrialRecord>> {
    let mut out: BTreeMap<String, Vec<&TrialRecord>> = BTreeMap::new();
    for r in records {
        out.entry(r.cell.get("mode").unwrap().to_string())
            .or_default()
            .push(r);
    }
    out
}

/// How long each progressing subject waits in all before it exits: its timer's schedule.
fn waits_ms(mode: &str) -> f64 {
    match mode {
        "timerfd-tick" => 3600.0,
        "alarm-pause" => 2000.0,
        _ => 1500.0,
    }
}

#[test]
fn waits_woken_by_an_owned_timer_pass_every_trial() {
    let records = run(
        "timers-progress.toml",
        &[],
        Some(3),
        Duration::from_secs(120),
    );
    let modes = by_mode(&records);
    assert_eq!(modes.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut m = MODES_PROGRESS.to_vec();
        m.sort_unstable();
        m
    });
    for (mode, trials) in &modes {
        assert_eq!(trials.len(), 3, "{mode}");
        for r in trials {
            assert_eq!(r.verdict, Verdict::Pass, "{mode}: {}: {r:?}", r.reason);
            assert!(r.met, "{mode}: {}", r.reason);
            assert_eq!(r.exit.unwrap().code, Some(0), "{mode}");
            assert!(r.diagnosis.is_none(), "{mode}");
            // The subject really waited for its timer, several windows long, and was not cut off.
            let waited = waits_ms(mode);
            assert!(
                r.time_to_verdict_ms >= waited - 100.0 && r.time_to_verdict_ms < 6000.0,
                "{mode}: {} ms",
                r.time_to_verdict_ms
            );
        }
    }
}

/// The thread of the subject, which is single-threaded.
fn main_thread(r: &TrialRecord) -> &wedge::engine::monitor::ThreadDiag {
    let d = diagnosis(r);
    assert_eq!(d.processes.len(), 1, "{}", d.summary);
    let t = &d.processes[0].threads[0];
    assert!(t.main, "{}", d.summary);
    t
}

#[test]
fn the_same_waits_on_timers_never_armed_are_hangs_naming_the_call_and_timer() {
    let records = run("timers-stuck.toml", &[], Some(3), Duration::from_secs(120));
    let modes = by_mode(&records);
    assert_eq!(modes.len(), MODES_STUCK.len());
    for (mode, trials) in &modes {
        assert_eq!(trials.len(), 3, "{mode}");
        for r in trials {
            assert_eq!(r.verdict, Verdict::Hang, "{mode}: {r:?}");
            assert!(r.met, "{mode}: {}", r.reason);
            let d = diagnosis(r);
            // Normally the window; another test's armed alarm or POSIX timer (wedge cannot tell
            // whose) may delay the verdict, never past the deadline.
            assert!(
                d.reason.starts_with("quiescent for 500 ms")
                    || d.reason.starts_with("deadline of 6000 ms"),
                "{mode}: {}",
                d.reason
            );
            let t = main_thread(r);
            let wake = t.wake.as_deref().unwrap_or("");
            let (call, timer) = match mode.as_str() {
                "timerfd-disarmed" => ("read", true),
                "epoll-disarmed" => ("epoll_wait", true),
                "poll-disarmed" => ("poll", true),
                _ => ("pause", false),
            };
            assert_eq!(t.call.as_deref(), Some(call), "{mode}: {}", d.summary);
            if timer {
                let note = wake.split(';').next().unwrap_or("");
                assert!(
                    note.starts_with("timerfd fd ") && note.ends_with(" is disarmed"),
                    "{mode}: {wake:?}"
                );
                if mode == "epoll-disarmed" {
                    assert!(note.contains(" in epoll fd "), "{wake}");
                }
                // "blocked in", or "sleeping in" while another process's alarm may fire first.
                let blocked = format!("main thread blocked in {call} ({wake})");
                let sleeping = format!("main thread sleeping in {call} ({wake})");
                assert!(
                    d.summary.contains(&blocked) || d.summary.contains(&sleeping),
                    "{}",
                    d.summary
                );
            }
            if mode == "posix-timer-disarmed" && !wake.is_empty() {
                // Named, though another process's timer is what wedge saw armed.
                assert!(
                    wake.starts_with("POSIX timer 0 (CLOCK_MONOTONIC, signal 10 caught)")
                        || wake.starts_with("an alarm may be pending"),
                    "{wake}"
                );
            }
        }
    }
}
