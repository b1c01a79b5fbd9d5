//! Property test of the shutdown coordinator and the fixed supervisor loop: random sequences of
//! begin / notification / target exit / signal / close, run against the real
//! `ShutdownCoordinator` and `supervise` on the kernel model, compared after every step with a
//! reference state machine.
#![cfg(not(loom))]

mod kernel_model;

use std::sync::Arc;
use std::thread::JoinHandle;

use kernel_model::{Kernel, ModelEventfd, ModelListener, answer};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use wedge_core::shutdown::{ShutdownCoordinator, SupervisorExit};
use wedge_core::supervise::supervise;

#[derive(Debug, Clone, Copy)]
enum Step {
    /// `begin()` from the runner or the signal forwarder.
    Begin,
    /// A filter user makes a trapped exec.
    Notification,
    /// A filter user exits.
    TargetExit,
    /// A signal interrupts the supervisor's wait.
    Signal,
    /// The runner closes the listener (only ever after the supervisor returned).
    Close,
}

#[derive(Debug, Clone)]
struct Reference {
    since_6_11: bool,
    users: usize,
    begun: bool,
    answered: usize,
    exit: Option<SupervisorExit>,
    closed: bool,
}

impl ReferenceStateMachine for Reference {
    type State = Reference;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Reference> {
        (1usize..=3, any::<bool>())
            .prop_map(|(users, since_6_11)| Reference {
                since_6_11,
                users,
                begun: false,
                answered: 0,
                exit: None,
                closed: false,
            })
            .boxed()
    }

    fn transitions(_: &Reference) -> BoxedStrategy<Step> {
        prop_oneof![
            1 => Just(Step::Begin),
            4 => Just(Step::Notification),
            2 => Just(Step::TargetExit),
            2 => Just(Step::Signal),
            1 => Just(Step::Close),
        ]
        .boxed()
    }

    fn preconditions(state: &Reference, step: &Step) -> bool {
        match step {
            Step::Notification | Step::TargetExit => state.users > 0,
            Step::Close => state.exit.is_some() && !state.closed,
            Step::Begin | Step::Signal => true,
        }
    }

    fn apply(mut state: Reference, step: &Step) -> Reference {
        let running = state.exit.is_none();
        match step {
            Step::Begin => {
                state.begun = true;
                if running {
                    state.exit = Some(SupervisorExit::ShutdownRequested);
                }
            }
            Step::Notification => {
                if running {
                    state.answered += 1;
                }
            }
            Step::TargetExit => {
                state.users -= 1;
                if running && state.users == 0 {
                    state.exit = Some(SupervisorExit::FilterUsersGone);
                }
            }
            Step::Signal => {}
            Step::Close => state.closed = true,
        }
        state
    }
}

struct Supervised {
    kernel: Arc<Kernel>,
    coordinator: Arc<ShutdownCoordinator<ModelEventfd>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Whatever the sequence left running is shut down the fixed way, and must stop.
        self.coordinator.begin();
        if let Some(thread) = self.thread.take() {
            // A supervisor that panicked has failed the test already; never panic here.
            let _ = thread.join();
        }
    }
}

struct CoordinatorTest;

impl StateMachineTest for CoordinatorTest {
    type SystemUnderTest = Supervised;
    type Reference = Reference;

    fn init_test(reference: &Reference) -> Supervised {
        let kernel = Kernel::new(reference.users, reference.since_6_11, true);
        let coordinator = Arc::new(ShutdownCoordinator::new(ModelEventfd(kernel.clone())));
        let thread = {
            let (kernel, coordinator) = (kernel.clone(), coordinator.clone());
            std::thread::spawn(move || {
                let exit = supervise(&ModelListener(kernel.clone()), &coordinator, |()| {
                    answer(&kernel)
                });
                coordinator.finish(exit);
                kernel.record_return(exit);
            })
        };
        drop(kernel.settle());
        Supervised {
            kernel,
            coordinator,
            thread: Some(thread),
        }
    }

    fn apply(sut: Supervised, _: &Reference, step: Step) -> Supervised {
        match step {
            Step::Begin => {
                sut.coordinator.begin();
            }
            Step::Notification => sut.kernel.trap(),
            Step::TargetExit => sut.kernel.user_exits(),
            Step::Signal => sut.kernel.signal(),
            Step::Close => sut.kernel.close(),
        }
        drop(sut.kernel.settle());
        sut
    }

    fn check_invariants(sut: &Supervised, reference: &Reference) {
        let state = sut.kernel.settle();
        assert_eq!(
            state.returned, reference.exit,
            "how (and whether) the supervisor returned"
        );
        assert_eq!(sut.coordinator.exit(), reference.exit);
        assert_eq!(
            state.answered, reference.answered,
            "every notification is answered while supervising"
        );
        let raises = sut.coordinator.raise_count();
        assert_eq!(
            raises, reference.begun as usize,
            "the wake is raised once, on the first begin"
        );
        assert_eq!(state.eventfd_writes, raises);
        if reference.exit.is_none() {
            assert_eq!(
                state.pending, 0,
                "nothing is left queued while the supervisor runs"
            );
            assert!(
                state.parked,
                "a running supervisor sleeps in its wait, not in a spin"
            );
        }
        assert_eq!(sut.coordinator.is_begun(), reference.begun);
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Relative to the crate directory, where cargo runs tests; the default cannot find an
        // integration test's source inside a workspace.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/prop_coordinator.txt"
        ))),
        ..ProptestConfig::default()
    })]
    #[test]
    fn coordinator_matches_its_reference(sequential 1..30 => CoordinatorTest);
}
