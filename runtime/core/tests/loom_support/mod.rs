//! What every loom model test here shares: exploring a model with interleavings counted and timed,
//! expecting loom to find a failure, and expecting it to find a deadlock (in a child process).
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

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
/// checks that loom reported the deadlock. (Loom finds it, then aborts the process while unwinding
/// out of it, so it cannot be observed from inside.) coreutils `timeout` is the watchdog: loom
/// explores deterministically, but nothing here may hang CI.
pub fn expect_loom_deadlock(model_test: &str) {
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
    eprintln!(
        "{model_test}: loom found the deadlock in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        report.trim()
    );
}
