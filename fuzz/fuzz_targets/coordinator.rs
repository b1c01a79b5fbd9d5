//! The shutdown coordinator (runtime/core/src/shutdown.rs) driven by arbitrary sequences of what
//! the session, the signal forwarder and the supervisor do, checked against its stated guarantees
//! after every event:
//! - `begin` is idempotent: only the first call (of any number, from any threads) returns true
//!   and raises the wake signal, so the signal is raised exactly once once shutdown has begun,
//!   even when raising it fails;
//! - once begun, it stays begun; once the supervisor finished, its first exit stays the exit;
//! - a drain sees the exit if there is one and expires otherwise;
//! - the fixed shutdown sequence begins shutdown, joins the thread only after the supervisor
//!   finished, closes the listener the thread hands back only after joining it, and touches
//!   neither the thread nor the listener when the drain expires.
#![no_main]

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use wedge_core::shutdown::{
    DrainOutcome, JoinSupervisor, ShutdownCoordinator, ShutdownOutcome, SupervisorExit, WakeSignal,
    shut_down_fixed,
};

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Event {
    Begin,
    /// 2 to 5 threads call `begin` at once.
    BeginRace(u8),
    Finish(Exit),
    /// The next raises of the wake signal fail (or succeed again).
    WakeFails(bool),
    /// The session drains with no time left.
    Drain,
    /// The session waits without a bound (only once the supervisor finished: it would not return).
    WaitForever,
    /// The fixed sequence, with a supervisor thread that panics after it finished, or not.
    ShutDownFixed {
        panics: bool,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Exit {
    ShutdownRequested,
    FilterUsersGone,
    ListenerClosed,
    Failed,
}

impl From<Exit> for SupervisorExit {
    fn from(exit: Exit) -> Self {
        match exit {
            Exit::ShutdownRequested => SupervisorExit::ShutdownRequested,
            Exit::FilterUsersGone => SupervisorExit::FilterUsersGone,
            Exit::ListenerClosed => SupervisorExit::ListenerClosed,
            Exit::Failed => SupervisorExit::Failed,
        }
    }
}

/// A wake descriptor that counts how often it was raised and can be made to fail.
#[derive(Default)]
struct Wake {
    raised: AtomicUsize,
    fail: AtomicBool,
}

impl WakeSignal for Wake {
    fn raise(&self) -> std::io::Result<()> {
        self.raised.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the wake descriptor is gone"));
        }
        Ok(())
    }
}

/// The supervisor thread as the sequence sees it: records the join, hands back a listener that
/// records its close, or panics.
struct Thread<'a> {
    joined: &'a Cell<bool>,
    closed: &'a Cell<bool>,
    panics: bool,
}

struct Listener<'a>(&'a Cell<bool>);

impl Drop for Listener<'_> {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

impl<'a> JoinSupervisor for Thread<'a> {
    type Output = Listener<'a>;
    fn join(self) -> std::thread::Result<Listener<'a>> {
        assert!(
            !self.closed.get(),
            "the listener was closed before the join"
        );
        self.joined.set(true);
        if self.panics {
            return Err(Box::new("the supervisor panicked after it finished"));
        }
        Ok(Listener(self.closed))
    }
}

/// What the coordinator must report, kept by the model.
#[derive(Default)]
struct Model {
    begun: bool,
    exit: Option<SupervisorExit>,
}

fuzz_target!(|events: Vec<Event>| {
    let coordinator = ShutdownCoordinator::new(Wake::default());
    let mut model = Model::default();
    let mut races = 0;
    for mut event in events.into_iter().take(64) {
        // Threads are the slow part: two races per input keep the target fast.
        if let Event::BeginRace(_) = event {
            races += 1;
            if races > 2 {
                event = Event::Begin;
            }
        }
        step(&coordinator, &mut model, event);
        assert_eq!(coordinator.is_begun(), model.begun, "after {event:?}");
        assert_eq!(coordinator.exit(), model.exit, "after {event:?}");
        let raised = coordinator.wake_signal().raised.load(Ordering::SeqCst);
        assert_eq!(
            raised,
            usize::from(model.begun),
            "raised {raised} times after {event:?}"
        );
        assert_eq!(coordinator.raise_count(), raised);
    }
});

fn step(coordinator: &ShutdownCoordinator<Wake>, model: &mut Model, event: Event) {
    match event {
        Event::Begin => {
            assert_eq!(coordinator.begin(), !model.begun, "begin is not idempotent");
            model.begun = true;
        }
        Event::BeginRace(threads) => {
            let threads = 2 + usize::from(threads % 4);
            let first = std::thread::scope(|s| {
                let calls: Vec<_> = (0..threads)
                    .map(|_| s.spawn(|| coordinator.begin()))
                    .collect();
                calls
                    .into_iter()
                    .map(|c| c.join().expect("begin panicked"))
                    .filter(|&began| began)
                    .count()
            });
            assert_eq!(
                first,
                usize::from(!model.begun),
                "{first} of {threads} began shutdown"
            );
            model.begun = true;
        }
        Event::Finish(exit) => {
            coordinator.finish(exit.into());
            model.exit.get_or_insert(exit.into());
        }
        Event::WakeFails(fail) => coordinator.wake_signal().fail.store(fail, Ordering::SeqCst),
        Event::Drain => {
            let expected = model
                .exit
                .map_or(DrainOutcome::Expired, DrainOutcome::Finished);
            assert_eq!(coordinator.wait_finished(Some(Duration::ZERO)), expected);
        }
        Event::WaitForever => {
            if let Some(exit) = model.exit {
                assert_eq!(
                    coordinator.wait_finished(None),
                    DrainOutcome::Finished(exit)
                );
            }
        }
        Event::ShutDownFixed { panics } => shut_down(coordinator, model, panics),
    }
}

fn shut_down(coordinator: &ShutdownCoordinator<Wake>, model: &mut Model, panics: bool) {
    let (joined, closed) = (Cell::new(false), Cell::new(false));
    let thread = Thread {
        joined: &joined,
        closed: &closed,
        panics,
    };
    let outcome = shut_down_fixed(coordinator, thread, Duration::ZERO);
    model.begun = true;
    let expected = match model.exit {
        None => ShutdownOutcome::Expired,
        Some(exit) if panics => ShutdownOutcome::Panicked(exit),
        Some(exit) => ShutdownOutcome::Stopped(exit),
    };
    assert_eq!(outcome, expected);
    assert_eq!(joined.get(), model.exit.is_some(), "joined: {outcome:?}");
    assert_eq!(
        closed.get(),
        matches!(outcome, ShutdownOutcome::Stopped(_)),
        "closed: {outcome:?}"
    );
}
