//! The shutdown coordinator: how wedge-run's session (and its signal forwarder) tell the supervisor
//! to stop, and how the session waits for it with a bounded drain.
//!
//! The supervisor never blocks in `SECCOMP_IOCTL_NOTIF_RECV`: it waits in `ppoll` on the listener
//! *and* a wake descriptor (an eventfd). [`ShutdownCoordinator::begin`] sets a flag and then makes
//! the wake descriptor readable, exactly once however many threads call it. Because an eventfd
//! stays readable once written, a `begin` that lands before the supervisor reaches its wait is
//! never lost: the wait returns at once.
//!
//! [`shut_down_fixed`] is the session's whole shutdown sequence (begin, bounded drain, join, and
//! only then close the listener the thread hands back), and [`shut_down_pre_fix`] the old one
//! (close, then an unbounded join). wedge-run's session calls them with its std thread and listener.
//!
//! Everything here is written against [`crate::sync`], so the loom models in `runtime/core/tests/`
//! check this very code, sequence included, with loom threads, a modelled wake descriptor and a
//! modelled listener.

use std::time::Duration;

use crate::mutation::{Mutation, active};
use crate::sync::{AtomicBool, AtomicUsize, Condvar, Instant, Mutex, Ordering, thread};

/// Something that can be made readable to wake a waiting supervisor: an eventfd in the real
/// runtime, a model of one under loom.
pub trait WakeSignal {
    /// Makes the wake descriptor readable. Must stay readable until the supervisor returns.
    fn raise(&self) -> std::io::Result<()>;
}

/// How the supervisor ended, as reported to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupervisorExit {
    /// Shutdown was requested through the coordinator.
    ShutdownRequested,
    /// The listener hung up: no task uses the filter any more.
    FilterUsersGone,
    /// The listener descriptor is not valid any more (`EBADF` / `POLLNVAL`).
    ListenerClosed,
    /// Waiting on the listener failed in a way the supervisor cannot recover from.
    Failed,
}

#[derive(Debug, Default)]
struct Completion {
    exit: Option<SupervisorExit>,
}

/// Shared between the supervisor thread, the session and the signal forwarder.
#[derive(Debug)]
pub struct ShutdownCoordinator<W> {
    begun: AtomicBool,
    raises: AtomicUsize,
    wake: W,
    completion: Mutex<Completion>,
    completed: Condvar,
}

/// What [`ShutdownCoordinator::wait_finished`] observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// The supervisor returned within the drain window.
    Finished(SupervisorExit),
    /// The drain window passed with the supervisor still running.
    Expired,
}

impl<W: WakeSignal> ShutdownCoordinator<W> {
    pub fn new(wake: W) -> Self {
        Self {
            begun: AtomicBool::new(false),
            raises: AtomicUsize::new(0),
            wake,
            completion: Mutex::new(Completion::default()),
            completed: Condvar::new(),
        }
    }

    /// Asks the supervisor to stop. Idempotent and safe from any thread: only the first call
    /// raises the wake signal. Returns whether this call was the one that began shutdown.
    pub fn begin(&self) -> bool {
        if self.begun.swap(true, Ordering::SeqCst) && !active(Mutation::BeginIdempotence) {
            return false;
        }
        self.raises.fetch_add(1, Ordering::SeqCst);
        if active(Mutation::EventfdWake) {
            return true;
        }
        if let Err(err) = self.wake.raise() {
            // The flag is set, so a supervisor between two waits still sees it; one already
            // parked in ppoll would not, which is why this is loud.
            tracing::error!(%err, "shutdown: could not raise the wake signal");
        }
        true
    }

    /// Whether shutdown has begun. The supervisor checks this before each wait.
    pub fn is_begun(&self) -> bool {
        self.begun.load(Ordering::SeqCst)
    }

    /// How many times the wake signal was raised (at most one, whatever races).
    pub fn raise_count(&self) -> usize {
        self.raises.load(Ordering::SeqCst)
    }

    /// The supervisor's last act: records how it ended and wakes the session's drain.
    pub fn finish(&self, exit: SupervisorExit) {
        let mut completion = self.completion.lock();
        completion.exit.get_or_insert(exit);
        self.completed.notify_all();
    }

    /// How the supervisor ended, if it has.
    pub fn exit(&self) -> Option<SupervisorExit> {
        self.completion.lock().exit
    }

    /// Waits for the supervisor to finish: at most `drain`, or without bound when `None`.
    pub fn wait_finished(&self, drain: Option<Duration>) -> DrainOutcome {
        let drain = drain.filter(|_| !active(Mutation::BoundedDrain));
        let mut completion = self.completion.lock();
        match drain {
            None => loop {
                if let Some(exit) = completion.exit {
                    return DrainOutcome::Finished(exit);
                }
                completion = self.completed.wait(completion);
            },
            Some(drain) => {
                let deadline = Instant::now() + drain;
                loop {
                    if let Some(exit) = completion.exit {
                        return DrainOutcome::Finished(exit);
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        return DrainOutcome::Expired;
                    }
                    completion = self.completed.wait_timeout(completion, deadline - now).0;
                }
            }
        }
    }

    /// The wake signal, for the supervisor's wait.
    pub fn wake_signal(&self) -> &W {
        &self.wake
    }
}

/// The supervisor's thread as the shutdown sequence sees it: something to join that hands back
/// what the thread returned (the fixed supervisor returns its listener, so that the session closes
/// it only after the thread is gone).
pub trait JoinSupervisor {
    /// What the thread returns.
    type Output;
    /// Blocks until the thread has returned; `Err` with the panic payload if it panicked.
    fn join(self) -> std::thread::Result<Self::Output>;
}

/// A thread of the facade: std's in a normal build, loom's under `--cfg loom`.
impl<T> JoinSupervisor for thread::JoinHandle<T> {
    type Output = T;
    fn join(self) -> std::thread::Result<T> {
        thread::JoinHandle::join(self)
    }
}

/// How [`shut_down_fixed`] ended. The caller reports it (printing is not this crate's job).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// The supervisor finished within the drain, its thread was joined, and then the listener it
    /// handed back was closed.
    Stopped(SupervisorExit),
    /// The supervisor finished within the drain, but its thread panicked afterwards (so there was
    /// no listener to hand back: it was closed while unwinding, after the supervisor returned).
    Panicked(SupervisorExit),
    /// The drain passed with the supervisor still running: the sequence returned without joining
    /// it and without touching the listener, which stays open until the process ends.
    Expired,
}

/// The fixed session's shutdown: begin shutdown, wait for the supervisor at most `drain`, then
/// join its thread and close (drop) the listener it hands back. On expiry it returns at once,
/// leaving the thread (and the listener it owns) alone: closing a listener a running supervisor
/// may still use is the fd-reuse race, and an unbounded join is the hang this replaces.
pub fn shut_down_fixed<W, J>(
    coordinator: &ShutdownCoordinator<W>,
    thread: J,
    drain: Duration,
) -> ShutdownOutcome
where
    W: WakeSignal,
    J: JoinSupervisor,
{
    coordinator.begin();
    match coordinator.wait_finished(Some(drain)) {
        DrainOutcome::Finished(exit) => match thread.join() {
            Ok(listener) => {
                drop(listener);
                ShutdownOutcome::Stopped(exit)
            }
            Err(_) => ShutdownOutcome::Panicked(exit),
        },
        // Dropping the handle detaches the thread; it still owns the listener.
        DrainOutcome::Expired => ShutdownOutcome::Expired,
    }
}

/// The pre-fix session's shutdown, kept to reproduce the bug: close the listener, then join the
/// supervisor without a bound. A close never wakes a thread blocked in `SECCOMP_IOCTL_NOTIF_RECV`,
/// so while a filter user lives (and, before Linux 6.11, even when none does) the join never
/// returns.
pub fn shut_down_pre_fix<L, J>(listener: L, thread: J) -> std::thread::Result<J::Output>
where
    J: JoinSupervisor,
{
    drop(listener);
    thread.join()
}
