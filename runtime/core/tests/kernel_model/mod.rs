//! A model of the kernel pieces the supervisor waits on, shared by the loom models and the
//! property tests. It is written against `wedge_core::sync`, so it uses loom's types under
//! `--cfg loom` and std's otherwise.
//!
//! It follows what was measured (see `docs/kernel-facts.md`):
//! - a receive blocks until a notification is queued or a signal interrupts it (`EINTR`);
//!   `close(listener)` wakes nobody, because the blocked call holds its own reference to the
//!   file; a call entered after the close gets `EBADF`;
//! - since Linux 6.11 a receive returns `ENOENT` once no task uses the filter;
//! - the eventfd stays readable once written; poll reports `POLLHUP` once no task uses the
//!   filter.
#![allow(dead_code)]

use nix::errno::Errno;
use wedge_core::shutdown::{SupervisorExit, WakeSignal};
use wedge_core::supervise::{NotifyListener, Readiness};
use wedge_core::sync::{Arc, Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
pub struct KernelState {
    /// Notifications queued and not yet received.
    pub pending: usize,
    /// Tasks that use the filter.
    pub users: usize,
    /// The eventfd is readable.
    pub eventfd: bool,
    /// How many times the eventfd was written.
    pub eventfd_writes: usize,
    /// close(listener) has happened.
    pub closed: bool,
    /// Notifications the supervisor answered.
    pub answered: usize,
    /// The supervisor is about to sleep in a blocking wait or receive.
    pub parked: bool,
    /// A signal is pending for the supervisor thread: its next blocking call returns `EINTR`.
    pub signal: bool,
    /// How `supervise` returned, once it has.
    pub returned: Option<SupervisorExit>,
    /// The runner's join of the supervisor thread has returned.
    pub joined: bool,
    /// close(listener) came after the runner's join returned.
    pub closed_after_join: bool,
}

pub struct Kernel {
    pub state: Mutex<KernelState>,
    pub changed: Condvar,
    pub since_6_11: bool,
    /// The fixed runner must never touch the listener after closing it: using it then fails the
    /// model. The pre-fix runner does exactly that (the fd-number reuse race), so it may.
    pub forbid_use_after_close: bool,
}

impl Kernel {
    pub fn new(users: usize, since_6_11: bool, forbid_use_after_close: bool) -> Arc<Kernel> {
        Arc::new(Kernel {
            state: Mutex::new(KernelState {
                users,
                ..KernelState::default()
            }),
            changed: Condvar::new(),
            since_6_11,
            forbid_use_after_close,
        })
    }

    /// A filter user makes a trapped syscall.
    pub fn trap(&self) {
        let mut state = self.lock();
        state.pending += 1;
        state.parked = false;
        drop(state);
        self.changed.notify_all();
    }

    /// A filter user exits (and, for kernels before 6.11, is reaped).
    pub fn user_exits(&self) {
        let mut state = self.lock();
        state.users -= 1;
        state.parked = false;
        drop(state);
        self.changed.notify_all();
    }

    /// close(listener): marks the descriptor closed and, as measured, wakes nobody.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.closed_after_join = state.joined;
    }

    pub fn snapshot(&self) -> (usize, usize, bool) {
        let s = self.lock();
        (s.eventfd_writes, s.answered, s.closed)
    }

    /// A signal for the supervisor thread (a handler without SA_RESTART): a blocking call it is
    /// sleeping in returns `EINTR`; outside one, the handler runs and nothing else changes.
    pub fn signal(&self) {
        let mut state = self.lock();
        if state.parked {
            state.signal = true;
            state.parked = false;
            drop(state);
            self.changed.notify_all();
        }
    }

    /// The supervisor's thread records how `supervise` returned.
    pub fn record_return(&self, exit: SupervisorExit) {
        self.lock().returned = Some(exit);
        self.changed.notify_all();
    }

    /// Waits until the supervisor is parked in a blocking call or has returned; returns the
    /// state then. Panics after 10 s (a supervisor that spins never parks). For the std
    /// property tests: loom explores schedules itself.
    #[cfg(not(loom))]
    pub fn settle(&self) -> MutexGuard<'_, KernelState> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut state = self.lock();
        while !(state.parked || state.returned.is_some()) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "the supervisor neither parked nor returned: {state:?}"
            );
            state = self.changed.wait_timeout(state, left).0;
        }
        state
    }

    /// Locks the state; the facade's mutex is poison-free, so clean-up after a failed assertion
    /// elsewhere never panics again.
    pub fn lock(&self) -> MutexGuard<'_, KernelState> {
        self.state.lock()
    }

    fn sleep<'a>(&self, state: MutexGuard<'a, KernelState>) -> MutexGuard<'a, KernelState> {
        self.changed.wait(state)
    }

    /// Sleeps in the blocking call `call` until something changes; `Err(EINTR)` if a signal came.
    /// Under loom it records the supervisor's station (`blocked in <call>`), so that a deadlocked
    /// model says where the supervisor is stuck.
    fn block<'a>(
        &self,
        mut state: MutexGuard<'a, KernelState>,
        call: &'static str,
    ) -> Result<MutexGuard<'a, KernelState>, Errno> {
        state.parked = true;
        self.changed.notify_all();
        #[cfg(loom)]
        crate::loom_support::station("supervisor", call);
        #[cfg(not(loom))]
        let _ = call;
        state = self.sleep(state);
        #[cfg(loom)]
        crate::loom_support::station("supervisor", "running");
        state.parked = false;
        if std::mem::take(&mut state.signal) {
            return Err(Errno::EINTR);
        }
        Ok(state)
    }

    fn check_open(&self, state: &KernelState) -> Result<(), Errno> {
        if state.closed {
            assert!(
                !self.forbid_use_after_close,
                "the supervisor used the listener after it was closed"
            );
            return Err(Errno::EBADF);
        }
        Ok(())
    }
}

pub struct ModelListener(pub Arc<Kernel>);

impl NotifyListener for ModelListener {
    type Notification = ();

    fn wait(&self, block: bool) -> Result<Readiness, Errno> {
        let kernel = &self.0;
        let mut state = kernel.lock();
        kernel.check_open(&state)?;
        loop {
            let ready = Readiness {
                wake: state.eventfd,
                notification: state.pending > 0,
                hangup: state.users == 0,
                invalid: false,
            };
            if !block || ready.wake || ready.notification || ready.hangup {
                return Ok(ready);
            }
            state = kernel.block(state, "blocked in ppoll")?;
        }
    }

    fn receive(&self) -> Result<(), Errno> {
        let kernel = &self.0;
        let mut state = kernel.lock();
        kernel.check_open(&state)?;
        loop {
            if state.pending > 0 {
                state.pending -= 1;
                return Ok(());
            }
            if kernel.since_6_11 && state.users == 0 {
                return Err(Errno::ENOENT);
            }
            // Blocked in the ioctl. A later close does not change anything we look at.
            state = kernel.block(state, "blocked in NOTIF_RECV")?;
        }
    }
}

/// The eventfd.
pub struct ModelEventfd(pub Arc<Kernel>);

impl WakeSignal for ModelEventfd {
    fn raise(&self) -> std::io::Result<()> {
        let mut state = self.0.lock();
        state.eventfd = true;
        state.eventfd_writes += 1;
        state.parked = false;
        drop(state);
        self.0.changed.notify_all();
        Ok(())
    }
}

/// The listener descriptor a supervisor thread owns and hands back: dropping it is
/// close(listener), as dropping the session's `OwnedFd` is.
pub struct OwnedListener(pub Arc<Kernel>);

impl Drop for OwnedListener {
    fn drop(&mut self) {
        self.0.close();
    }
}

pub fn answer(kernel: &Kernel) {
    kernel.lock().answered += 1;
}
