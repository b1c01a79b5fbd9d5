//! Loom model of the runtime's own shutdown: `wedge_core::supervise::{supervise,
//! supervise_pre_fix}` and `wedge_core::shutdown::ShutdownCoordinator`, unchanged, on a model
//! of the kernel pieces they wait on.
//!
//! Run with: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p wedge-core
//! --test loom_shutdown`.
//!
//! The kernel model (`kernel_model/`) follows what was measured on real kernels.
#![cfg(loom)]

mod loom_support;

mod kernel_model;

use kernel_model::{Kernel, ModelEventfd, ModelListener, answer};
use loom::sync::Arc;
use loom::thread;
use loom_support::{expect_loom_deadlock, model};
use wedge_core::shutdown::{DrainOutcome, ShutdownCoordinator, SupervisorExit};
use wedge_core::supervise::{supervise, supervise_pre_fix};

/// How the sandboxed side behaves in a model.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// One trapped exec, then the command exits but a background process keeps using the filter.
    Lingers,
    /// One trapped exec, then every filter user exits.
    Exits,
}

/// The fixed runner: a supervisor, a signal forwarder that begins shutdown (a repeated SIGINT),
/// the target, and the runner itself, which waits for the sandbox and then begins shutdown and
/// waits for the supervisor without a bound. In every interleaving the supervisor returns, the
/// wake is written exactly once, and the listener is closed only after the supervisor returned.
fn fixed_model(target: Target, since_6_11: bool) {
    let users = 1;
    let kernel = Kernel::new(users, since_6_11, true);
    let coordinator = Arc::new(ShutdownCoordinator::new(ModelEventfd(kernel.clone())));

    let supervisor = {
        let (kernel, coordinator) = (kernel.clone(), coordinator.clone());
        thread::spawn(move || {
            let listener = ModelListener(kernel.clone());
            let exit = supervise(&listener, &coordinator, |()| answer(&kernel));
            coordinator.finish(exit);
            exit
        })
    };
    let forwarder = {
        let coordinator = coordinator.clone();
        thread::spawn(move || {
            coordinator.begin();
        })
    };
    let sandbox = {
        let kernel = kernel.clone();
        thread::spawn(move || {
            kernel.trap();
            if let Target::Exits = target {
                kernel.user_exits();
            }
        })
    };

    // The runner: the sandbox exits, then shutdown.
    sandbox.join().unwrap();
    coordinator.begin();
    let outcome = coordinator.wait_finished(None);
    let exit = supervisor.join().unwrap();
    kernel.close();
    forwarder.join().unwrap();

    assert_eq!(outcome, DrainOutcome::Finished(exit));
    match target {
        Target::Lingers => assert_eq!(exit, SupervisorExit::ShutdownRequested),
        Target::Exits => assert!(matches!(
            exit,
            SupervisorExit::ShutdownRequested | SupervisorExit::FilterUsersGone
        )),
    }
    let (writes, _, _) = kernel.snapshot();
    assert_eq!(writes, 1, "the wake must be written exactly once");
    assert_eq!(coordinator.raise_count(), 1);
}

#[test]
fn fixed_returns_with_a_lingering_filter_user() {
    model("fixed/lingering", || fixed_model(Target::Lingers, false));
}

#[test]
fn fixed_returns_when_every_filter_user_exits_before_6_11() {
    model("fixed/exits/<6.11", || fixed_model(Target::Exits, false));
}

#[test]
fn fixed_returns_when_every_filter_user_exits_since_6_11() {
    model("fixed/exits/>=6.11", || fixed_model(Target::Exits, true));
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

/// The pre-fix runner: supervisor blocked in receive, runner closes the listener after the
/// sandbox exits and joins without a bound.
fn pre_fix_model(target: Target, since_6_11: bool) {
    let kernel = Kernel::new(1, since_6_11, false);
    let supervisor = {
        let kernel = kernel.clone();
        thread::spawn(move || {
            supervise_pre_fix(&ModelListener(kernel.clone()), |()| answer(&kernel))
        })
    };
    let sandbox = {
        let kernel = kernel.clone();
        thread::spawn(move || {
            kernel.trap();
            if let Target::Exits = target {
                kernel.user_exits();
            }
        })
    };
    sandbox.join().unwrap();
    kernel.close();
    supervisor.join().unwrap();
}

/// loom must find the close-doesn't-wake deadlock; if it ever stops finding it, this fails.
#[test]
fn loom_finds_the_pre_fix_deadlock_with_a_lingering_filter_user() {
    expect_loom_deadlock("model_pre_fix_lingering");
}

/// Before 6.11 the receive does not return even when every filter user has gone.
#[test]
fn loom_finds_the_pre_fix_deadlock_before_6_11_when_every_filter_user_exits() {
    expect_loom_deadlock("model_pre_fix_exits_before_6_11");
}

#[test]
#[ignore = "deadlocks by design; run through expect_loom_deadlock"]
fn model_pre_fix_lingering() {
    model("pre-fix/lingering", || pre_fix_model(Target::Lingers, true));
}

#[test]
#[ignore = "deadlocks by design; run through expect_loom_deadlock"]
fn model_pre_fix_exits_before_6_11() {
    model("pre-fix/exits/<6.11", || {
        pre_fix_model(Target::Exits, false)
    });
}
