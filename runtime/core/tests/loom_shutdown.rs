//! Loom model of the runtime's own shutdown: `wedge_core::supervise::{supervise,
//! supervise_pre_fix}`, `wedge_core::shutdown::ShutdownCoordinator` and the session's shutdown
//! sequence itself, `wedge_core::shutdown::{shut_down_fixed, shut_down_pre_fix}` (what wedge-run's
//! `session::shut_down` calls), unchanged, with loom threads and a model of the kernel pieces they
//! wait on.
//!
//! Run with: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p wedge-core
//! --test loom_shutdown`.
//!
//! The kernel model (`kernel_model/`) follows what was measured on real kernels. The drain's expiry:
//! loom has no clock and its timed waits never time out, so the `drain` models add a clock thread
//! (`wedge_core::sync::clock::advance`) that loom runs at every point it explores; the drain's
//! deadline check sees it pass there. They check that both the finished and the expired branch
//! were explored, and what must hold in each.
#![cfg(loom)]

mod loom_support;

mod kernel_model;

use std::time::Duration;

use kernel_model::{Kernel, KernelState, ModelEventfd, ModelListener, OwnedListener, answer};
use loom::sync::Arc;
use loom::thread;
use loom_support::{
    expect_loom_deadlock, model, report_stations_on_panic, reset_stations, station,
};
use wedge_core::shutdown::{
    DrainOutcome, JoinSupervisor, ShutdownCoordinator, ShutdownOutcome, SupervisorExit,
    shut_down_fixed, shut_down_pre_fix,
};
use wedge_core::supervise::{supervise, supervise_pre_fix};

/// The session's drain (any positive length: under loom it is one tick of the modelled clock).
const DRAIN: Duration = Duration::from_millis(500);

/// The supervisor thread as the runner joins it: records in the kernel model when the join has
/// returned (so a close can be checked to come after it), and the runner's station.
struct SupervisorThread<T> {
    handle: thread::JoinHandle<T>,
    kernel: Arc<Kernel>,
}

impl<T> JoinSupervisor for SupervisorThread<T> {
    type Output = T;
    fn join(self) -> std::thread::Result<T> {
        station("runner", "in join");
        let output = self.handle.join();
        station("runner", "joined");
        self.kernel.lock().joined = true;
        output
    }
}

/// How the sandboxed side behaves in a model.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// One trapped exec, then the command exits but a background process keeps using the filter.
    Lingers,
    /// One trapped exec, then every filter user exits.
    Exits,
}

/// The fixed runner: a supervisor, a signal forwarder that begins shutdown (a repeated SIGINT;
/// left out with the clock), the target, an optional clock that lets the drain expire, and the runner itself, which waits
/// for the sandbox and then runs the shipped `shut_down_fixed`. In every interleaving: the wake is
/// written exactly once; if the drain finished, the supervisor returned, its thread was joined and
/// only then the listener it handed back was closed; if it expired (only possible with the clock),
/// the runner returned without joining or closing anything. Returns the outcome.
fn fixed_model(target: Target, since_6_11: bool, clock: bool) -> ShutdownOutcome {
    let kernel = Kernel::new(1, since_6_11, true);
    let coordinator = Arc::new(ShutdownCoordinator::new(ModelEventfd(kernel.clone())));

    let handle = {
        let (kernel, coordinator) = (kernel.clone(), coordinator.clone());
        thread::spawn(move || {
            let listener = OwnedListener(kernel.clone());
            let exit = supervise(&ModelListener(kernel.clone()), &coordinator, |()| {
                answer(&kernel)
            });
            coordinator.finish(exit);
            kernel.record_return(exit);
            // Handed back, as the session's supervisor hands back its OwnedFd.
            listener
        })
    };
    // With the clock, the forwarder's racing begin is left out (the models without the clock
    // cover it): five threads are more than loom explores in reasonable time.
    let forwarder = (!clock).then(|| {
        let coordinator = coordinator.clone();
        thread::spawn(move || {
            coordinator.begin();
        })
    });
    let sandbox = {
        let kernel = kernel.clone();
        thread::spawn(move || {
            kernel.trap();
            if let Target::Exits = target {
                kernel.user_exits();
            }
        })
    };
    let clock = clock.then(|| thread::spawn(wedge_core::sync::clock::advance));

    // The runner: the sandbox exits, then the session's shutdown.
    sandbox.join().unwrap();
    let supervisor = SupervisorThread {
        handle,
        kernel: kernel.clone(),
    };
    let outcome = shut_down_fixed(&coordinator, supervisor, DRAIN);
    check_outcome(&kernel.lock(), outcome, target, clock.is_some());
    if let Some(forwarder) = forwarder {
        forwarder.join().unwrap();
    }
    if let Some(clock) = clock {
        clock.join().unwrap();
    }
    // Both begins have returned: the wake was raised, once.
    assert_eq!(
        kernel.snapshot().0,
        1,
        "the wake must be written exactly once"
    );
    assert_eq!(coordinator.raise_count(), 1);
    // The drain's own result agrees with what the sequence reported.
    match (outcome, coordinator.wait_finished(None)) {
        (ShutdownOutcome::Stopped(exit), DrainOutcome::Finished(drained)) => {
            assert_eq!(exit, drained)
        }
        (ShutdownOutcome::Expired, DrainOutcome::Finished(_)) => {}
        other => panic!("the sequence and the coordinator disagree: {other:?}"),
    }
    outcome
}

/// What must hold when the runner's `shut_down_fixed` has returned `outcome`.
fn check_outcome(state: &KernelState, outcome: ShutdownOutcome, target: Target, clock: bool) {
    match outcome {
        ShutdownOutcome::Stopped(exit) => {
            assert!(state.joined, "stopped without joining the supervisor");
            assert!(state.closed, "the listener was not closed");
            assert!(
                state.closed_after_join,
                "the listener was closed before the join"
            );
            assert_eq!(state.returned, Some(exit));
            match target {
                Target::Lingers => assert_eq!(exit, SupervisorExit::ShutdownRequested),
                Target::Exits => assert!(matches!(
                    exit,
                    SupervisorExit::ShutdownRequested | SupervisorExit::FilterUsersGone
                )),
            }
        }
        ShutdownOutcome::Expired => {
            assert!(clock, "the drain expired without time passing");
            assert!(!state.joined, "the runner joined after the drain expired");
            // The supervisor may have returned by now; the listener is closed only by its
            // thread's hand-back, never by the runner, and so never before it returned.
            assert!(!state.closed || state.returned.is_some());
        }
        ShutdownOutcome::Panicked(_) => panic!("the model's supervisor cannot panic"),
    }
}

/// Runs `fixed_model` with the clock and checks that loom explored both the finished and the
/// expired branch of the drain (a plain std counter outside the model).
fn drain_model(name: &str, target: Target, since_6_11: bool) {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    // Per call, not static: the two drain tests run at the same time.
    let counts = std::sync::Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let seen = counts.clone();
    model(name, move || {
        let counter = match fixed_model(target, since_6_11, true) {
            ShutdownOutcome::Stopped(_) => &seen.0,
            _ => &seen.1,
        };
        counter.fetch_add(1, SeqCst);
    });
    let (stopped, expired) = (counts.0.load(SeqCst), counts.1.load(SeqCst));
    eprintln!(
        "loom model {name}: {stopped} interleavings finished the drain, {expired} expired it"
    );
    assert!(stopped > 0, "loom never explored a drain that finished");
    assert!(expired > 0, "loom never explored a drain that expired");
}

#[test]
fn fixed_returns_with_a_lingering_filter_user() {
    model("fixed/lingering", || {
        fixed_model(Target::Lingers, false, false);
    });
}

#[test]
fn fixed_returns_when_every_filter_user_exits_before_6_11() {
    model("fixed/exits/<6.11", || {
        fixed_model(Target::Exits, false, false);
    });
}

#[test]
fn fixed_returns_when_every_filter_user_exits_since_6_11() {
    model("fixed/exits/>=6.11", || {
        fixed_model(Target::Exits, true, false);
    });
}

/// The drain with time passing, a filter user lingering: finished and expired both explored.
#[test]
fn drain_finishes_or_expires_with_a_lingering_filter_user() {
    drain_model("fixed/drain/lingering", Target::Lingers, false);
}

/// The drain with time passing, every filter user exiting (before 6.11).
#[test]
fn drain_finishes_or_expires_when_every_filter_user_exits_before_6_11() {
    drain_model("fixed/drain/exits/<6.11", Target::Exits, false);
}

/// Two begins that race each other and the supervisor's first wait: the wake is never lost and
/// written once.
#[test]
fn racing_begins_before_the_first_wait_are_not_lost() {
    model("fixed/racing-begins", || {
        let kernel = Kernel::new(1, false, true);
        let coordinator = Arc::new(ShutdownCoordinator::new(ModelEventfd(kernel.clone())));
        let begins: Vec<_> = (0..2)
            .map(|_| {
                let coordinator = coordinator.clone();
                thread::spawn(move || coordinator.begin())
            })
            .collect();
        let exit = supervise(&ModelListener(kernel.clone()), &coordinator, |()| {
            answer(&kernel)
        });
        let winners = begins
            .into_iter()
            .map(|b| b.join().unwrap() as usize)
            .sum::<usize>();
        assert_eq!(exit, SupervisorExit::ShutdownRequested);
        assert_eq!(winners, 1);
        assert_eq!(kernel.snapshot().0, 1);
    });
}

/// The pre-fix runner: supervisor blocked in receive; after the sandbox exits, the runner runs the
/// shipped `shut_down_pre_fix` (close the listener, then join without a bound).
fn pre_fix_model(target: Target, since_6_11: bool) {
    reset_stations();
    let kernel = Kernel::new(1, since_6_11, false);
    let handle = {
        let kernel = kernel.clone();
        thread::spawn(move || {
            station("supervisor", "running");
            let exit = supervise_pre_fix(&ModelListener(kernel.clone()), |()| answer(&kernel));
            station("supervisor", "returned");
            exit
        })
    };
    let sandbox = {
        let kernel = kernel.clone();
        thread::spawn(move || {
            station("sandbox", "running");
            kernel.trap();
            if let Target::Exits = target {
                kernel.user_exits();
            }
            station("sandbox", "exited");
        })
    };
    station("runner", "waiting for the sandbox");
    sandbox.join().unwrap();
    let supervisor = SupervisorThread {
        handle,
        kernel: kernel.clone(),
    };
    shut_down_pre_fix(OwnedListener(kernel.clone()), supervisor).unwrap();
}

/// What loom reports for both pre-fix deadlocks, in thread-id order: the runner (main) and the
/// supervisor blocked, the sandbox gone.
const PRE_FIX_LOOM_STATES: &[&str] = &["Blocked", "Blocked", "Terminated"];

/// Where the pre-fix deadlock leaves each thread: the runner in the unbounded join, the
/// supervisor in the receive the close did not wake.
const PRE_FIX_STUCK: &[&str] = &[
    "runner=in join",
    "sandbox=exited",
    "supervisor=blocked in NOTIF_RECV",
];

/// loom must find the close-doesn't-wake deadlock, with the runner stuck in the join and the
/// supervisor in NOTIF_RECV; if it ever stops finding it, this fails.
#[test]
fn loom_finds_the_pre_fix_deadlock_with_a_lingering_filter_user() {
    expect_loom_deadlock(
        "model_pre_fix_lingering",
        PRE_FIX_LOOM_STATES,
        PRE_FIX_STUCK,
    );
}

/// Before 6.11 the receive does not return even when every filter user has gone.
#[test]
fn loom_finds_the_pre_fix_deadlock_before_6_11_when_every_filter_user_exits() {
    expect_loom_deadlock(
        "model_pre_fix_exits_before_6_11",
        PRE_FIX_LOOM_STATES,
        PRE_FIX_STUCK,
    );
}

#[test]
#[ignore = "deadlocks by design; run through expect_loom_deadlock"]
fn model_pre_fix_lingering() {
    report_stations_on_panic();
    model("pre-fix/lingering", || pre_fix_model(Target::Lingers, true));
}

#[test]
#[ignore = "deadlocks by design; run through expect_loom_deadlock"]
fn model_pre_fix_exits_before_6_11() {
    report_stations_on_panic();
    model("pre-fix/exits/<6.11", || {
        pre_fix_model(Target::Exits, false)
    });
}
