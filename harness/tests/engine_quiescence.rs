//! Whose quiescence decides (`[scenario] quiescence_of`): with `"subject"`, a frozen subject is
//! called hung before a client waits for it with a timeout of its own (with
//! the default, the client's timeout holds the verdict back), and a client waiting on a subject
//! that is still progressing is never called hung. Every run is under a watchdog.

mod support;

use std::time::Duration;

use support::{diagnosis, run};
use wedge::model::record::Verdict;

#[test]
fn a_frozen_subject_is_hung_within_the_window_whatever_its_clients_wait_for() {
    let records = run(
        "quiescence/frozen-subject.toml",
        &[],
        None,
        Duration::from_secs(60),
    );
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.verdict, Verdict::Hang, "{}", r.reason);
        assert!(r.met, "{}", r.reason);
        let d = diagnosis(r);
        assert!(d.reason.starts_with("quiescent for 300 ms"), "{}", d.reason);
        assert!(
            d.summary.contains("main thread blocked in read"),
            "{}",
            d.summary
        );
        // The client is still in the diagnosis, with its own timeout.
        assert!(
            d.summary.contains("sleeping in clock_nanosleep"),
            "{}",
            d.summary
        );
        // Before the client's 6 s timeout. (Within the window on an idle machine; another
        // program's one-shot alarm, whose owner /proc does not show, can delay it up to its
        // expiry: see the monitor's module doc.)
        assert!(r.time_to_verdict_ms < 6000.0, "{} ms", r.time_to_verdict_ms);
    }
}

#[test]
fn by_default_the_clients_timeouts_hold_the_verdict_back() {
    let records = run(
        "quiescence/frozen-trial.toml",
        &[],
        None,
        Duration::from_secs(60),
    );
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.verdict, Verdict::Hang, "{}", r.reason);
        // The client slept its 6 s out before the tree could be judged quiescent.
        assert!(
            r.time_to_verdict_ms >= 6000.0,
            "{} ms",
            r.time_to_verdict_ms
        );
    }
}

#[test]
fn a_client_waiting_on_a_progressing_subject_is_not_hung() {
    let records = run(
        "quiescence/progressing-subject.toml",
        &[],
        None,
        Duration::from_secs(60),
    );
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.verdict, Verdict::Pass, "{}: {r:?}", r.reason);
        assert!(r.diagnosis.is_none());
        // It slept its 1500 ms (five windows) and exited on its own.
        assert!(
            r.time_to_verdict_ms >= 1400.0,
            "{} ms",
            r.time_to_verdict_ms
        );
    }
}
