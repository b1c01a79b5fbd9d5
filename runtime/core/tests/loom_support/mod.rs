//! What every loom model test here shares: exploring a model with interleavings counted and timed,
//! expecting loom to find a failure, and expecting it to find a deadlock (in a child process) with
//! each thread stuck where the model says it must be.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where each model thread is, by role ("supervisor", "exec 1"): the last step it recorded with
/// [`station`]. A plain std map, outside the model (loom never sees it, so recording explores
/// nothing): loom runs its threads one at a time on one OS thread, and the map only reports.
static STATIONS: std::sync::Mutex<BTreeMap<String, &'static str>> =
    std::sync::Mutex::new(BTreeMap::new());

/// The line [`report_stations_on_panic`] prints, and [`expect_loom_deadlock`] looks for.
const STATIONS_LINE: &str = "model stations: ";

/// Records that the thread playing `role` is now at `place` (call it just before a step that may
/// block, and again after it).
pub fn station(role: &str, place: &'static str) {
    STATIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(role.to_owned(), place);
}

/// Forgets every station: call it first in a model, so the map describes one interleaving.
pub fn reset_stations() {
    STATIONS.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// Makes a panic (loom's deadlock report is one) also print where every model thread was, before
/// loom aborts the process while unwinding. For the child process of [`expect_loom_deadlock`].
pub fn report_stations_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        let stations = STATIONS.lock().unwrap_or_else(|p| p.into_inner());
        let line: Vec<String> = stations
            .iter()
            .map(|(role, place)| format!("{role} = {place}"))
            .collect();
        eprintln!("{STATIONS_LINE}{}", line.join("; "));
    }));
}

/// The stations of a report line with the digits taken out of the roles ("exec 1" is "exec"), sorted:
/// which thread of several alike is stuck where does not matter, how many of them are does.
fn station_kinds(line: &str) -> Vec<String> {
    let mut kinds: Vec<String> = line
        .split("; ")
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.replace(|c: char| c.is_ascii_digit(), "")
                .replace("  ", " ")
        })
        .map(|s| s.replace(" =", "=").replace("= ", "=").trim().to_owned())
        .collect();
    kinds.sort();
    kinds
}

/// Explores every interleaving of `f` (up to the preemption bound) and returns how the exploration
/// ended (a panic's payload if an interleaving failed), the number of interleavings run and the time.
pub fn explore(
    f: impl Fn() + Sync + Send + 'static,
) -> (std::thread::Result<()>, usize, std::time::Duration) {
    // A plain std counter: it counts executions, it is not part of the model.
    let explored = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = explored.clone();
    let started = std::time::Instant::now();
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        builder.check(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            f()
        })
    }));
    (outcome, explored.load(Ordering::SeqCst), started.elapsed())
}

/// Checks `f` in every interleaving; fails the test with the failing interleaving's panic.
pub fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    let (outcome, explored, took) = explore(f);
    if let Err(panic) = outcome {
        eprintln!("loom model {name}: failed in interleaving {explored}");
        std::panic::resume_unwind(panic);
    }
    eprintln!(
        "loom model {name}: {explored} interleavings explored in {:.1} s",
        took.as_secs_f64()
    );
}

/// Checks that loom finds an interleaving of `f` that fails with a panic containing `finding`: the
/// model of a bug must fail, and for that reason. (An assertion failing inside loom is an ordinary
/// panic that `check` propagates, unlike a deadlock, so it can be caught here, in-process.)
pub fn expect_loom_finds(name: &str, finding: &str, f: impl Fn() + Sync + Send + 'static) {
    let (outcome, explored, took) = explore(f);
    let Err(panic) = outcome else {
        panic!(
            "loom model {name}: {explored} interleavings explored in {:.1} s without finding \"{finding}\"",
            took.as_secs_f64()
        );
    };
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(a panic without a message)");
    assert!(
        message.contains(finding),
        "loom model {name} failed, but not with \"{finding}\": {message}"
    );
    eprintln!(
        "loom model {name}: found in interleaving {explored} after {:.1} s: {}",
        took.as_secs_f64(),
        message.lines().next().unwrap_or_default()
    );
}

/// Runs `model_test`, an ignored test of this binary that must deadlock, in a child process, and
/// checks that loom reported the deadlock with loom's thread states `loom_states` (e.g.
/// `"Blocked"` twice and `"Terminated"` once, in thread-id order) and the model's threads at
/// `stuck` (`"role=place"`, roles without their numbers, in any order; see [`station`]). (Loom
/// finds the deadlock, then aborts the process while unwinding out of it, so it cannot be observed
/// from inside.) coreutils `timeout` is the watchdog: loom explores deterministically, but nothing
/// here may hang CI.
pub fn expect_loom_deadlock(model_test: &str, loom_states: &[&str], stuck: &[&str]) {
    let exe = std::env::current_exe().unwrap();
    let started = std::time::Instant::now();
    let out = std::process::Command::new("timeout")
        .args(["--kill-after=5", "300"])
        .arg(exe)
        .args([
            model_test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("running the model in a child process");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "the model ran without loom finding a deadlock:\n{text}"
    );
    assert_ne!(
        out.status.code(),
        Some(124),
        "the model timed out instead of deadlocking:\n{text}"
    );
    let Some(report) = text.lines().find(|l| l.contains("deadlock; threads =")) else {
        panic!("the model failed, but not with loom's deadlock report:\n{text}");
    };
    let states: Vec<&str> = report
        .split("), (")
        .filter_map(|t| t.split_once(", ").map(|(_, state)| state))
        .map(|state| {
            state
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(
        states, loom_states,
        "loom's deadlock report has other thread states than expected: {report}"
    );
    let Some(stations) = text.lines().find_map(|l| l.strip_prefix(STATIONS_LINE)) else {
        panic!("the model deadlocked without reporting its stations:\n{text}");
    };
    let mut expected: Vec<String> = stuck.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(
        station_kinds(stations),
        expected,
        "the model deadlocked with threads stuck elsewhere than expected: {stations}"
    );
    eprintln!(
        "{model_test}: loom found the deadlock in {:.1} s: {}; {STATIONS_LINE}{stations}",
        started.elapsed().as_secs_f64(),
        report.trim()
    );
}
