//! The synchronisation facade the runtime's concurrency-critical code is written against.
//!
//! Normally these are `std`'s types; built with `RUSTFLAGS="--cfg loom"` they are loom's, so the
//! loom models in `runtime/core/tests/` check the very code that ships rather than a copy of it.
//! This file is the only one that knows the difference (as tokio's `src/loom/` is): callers see
//! one API whichever is underneath.
//!
//! [`Mutex`], [`RwLock`] and [`Condvar`] are poison-free: `lock` returns the guard itself. Every
//! lock of the runtime (and of the harness, which uses these too) guards state that stays
//! consistent between statements (a table, a flag, a queue, a `()` token), and no code holding one
//! of them leaves it half-updated across a call that could panic, so a panic in another holder
//! leaves nothing a later holder could misread. Recovering the guard is therefore sound, and it is
//! what every caller did by hand before (`unwrap_or_else(|p| p.into_inner())`). A panic still
//! propagates in the thread that panicked.
//!
//! The harness is never built under `--cfg loom` (the models build wedge-core alone), so its
//! locks are always std's; were it built so, its `static` locks would fail to compile (loom's have
//! no `const` constructor) rather than run outside a model.

#[cfg(not(loom))]
mod imp {
    pub use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    pub use std::sync::{Arc, MutexGuard, RwLockReadGuard, RwLockWriteGuard};
    pub use std::thread;
    pub use std::time::Instant;

    pub(super) use std::sync::{Condvar as RawCondvar, Mutex as RawMutex, RwLock as RawRwLock};
}

#[cfg(loom)]
mod imp {
    pub use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    pub use loom::sync::{Arc, MutexGuard, RwLockReadGuard, RwLockWriteGuard};
    pub use loom::thread;

    pub(super) use loom::sync::{Condvar as RawCondvar, Mutex as RawMutex, RwLock as RawRwLock};

    use std::time::Duration;

    loom::lazy_static! {
        /// The modelled clock: how many times a model's clock thread has let time pass. A loom
        /// static, so it starts at zero in every execution.
        static ref TICKS: AtomicU64 = AtomicU64::new(0);
    }

    /// The instant stand-in. loom has no clock, and its `Condvar::wait_timeout` never times out
    /// (it is a plain `wait`), so under loom time passes only where a model says so:
    /// [`clock::advance`] (called by a model's "clock" thread, which loom schedules at every point
    /// it explores) moves the clock one tick, and any positive duration is one tick long. A
    /// deadline check (`Instant::now() >= deadline`) therefore sees the deadline pass at whatever
    /// point loom runs the clock thread, and a model without one never sees time pass.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    pub struct Instant(u64);

    impl Instant {
        pub fn now() -> Self {
            Instant(TICKS.load(Ordering::SeqCst))
        }
    }

    impl std::ops::Add<Duration> for Instant {
        type Output = Instant;
        fn add(self, duration: Duration) -> Instant {
            Instant(self.0 + u64::from(!duration.is_zero()))
        }
    }

    impl std::ops::Sub for Instant {
        type Output = Duration;
        fn sub(self, earlier: Instant) -> Duration {
            Duration::from_millis(self.0.saturating_sub(earlier.0))
        }
    }

    /// The modelled clock's one control, for loom models.
    pub mod clock {
        /// Lets time pass: every deadline set before this call has now passed. It wakes nobody
        /// (loom's timed waits never time out), so a deadline is noticed at the waiter's next
        /// check, after a wake-up it gets anyway; an expiry that only a timer could end a wait
        /// for is not modelled (loom reports that interleaving as a deadlock instead).
        pub fn advance() {
            super::TICKS.fetch_add(1, super::Ordering::SeqCst);
        }
    }
}

#[cfg(loom)]
pub use imp::clock;
pub use imp::{
    Arc, AtomicBool, AtomicU64, AtomicUsize, Instant, MutexGuard, Ordering, RwLockReadGuard,
    RwLockWriteGuard, thread,
};

use std::time::Duration;

/// A mutual-exclusion lock whose `lock` cannot fail (see the module docs for why recovering from
/// poisoning is sound here).
pub struct Mutex<T: ?Sized>(imp::RawMutex<T>);

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: ?Sized> std::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the value: printing it would take the lock, and a Debug that can block is a trap.
        f.debug_struct("Mutex").finish_non_exhaustive()
    }
}

impl<T> Mutex<T> {
    /// A new, unlocked mutex holding `value`. `const` in normal builds, so it can be a `static`.
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Self {
        Self(imp::RawMutex::new(value))
    }

    /// A new, unlocked mutex holding `value` (loom's mutex cannot be built in a constant).
    #[cfg(loom)]
    pub fn new(value: T) -> Self {
        Self(imp::RawMutex::new(value))
    }

    /// The value, consuming the mutex.
    pub fn into_inner(self) -> T {
        self.0
            .into_inner()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Blocks until the lock is free, then takes it.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// A reader-writer lock, as poison-free as [`Mutex`] (see the module docs): many readers or one
/// writer at a time.
pub struct RwLock<T>(imp::RawRwLock<T>);

impl<T: Default> Default for RwLock<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> std::fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the value, for the reason given at Mutex's Debug.
        f.debug_struct("RwLock").finish_non_exhaustive()
    }
}

impl<T> RwLock<T> {
    /// A new, unlocked lock holding `value`. `const` in normal builds, so it can be a `static`.
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Self {
        Self(imp::RawRwLock::new(value))
    }

    /// A new, unlocked lock holding `value` (loom's lock cannot be built in a constant).
    #[cfg(loom)]
    pub fn new(value: T) -> Self {
        Self(imp::RawRwLock::new(value))
    }

    /// Blocks until no writer holds the lock, then takes a shared hold on it.
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        self.0.read().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Blocks until nobody holds the lock, then takes it alone.
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.0.write().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// A condition variable paired with [`Mutex`], as poison-free as it.
pub struct Condvar(imp::RawCondvar);

impl Default for Condvar {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Condvar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}

impl Condvar {
    /// A new condition variable. `const` in normal builds, so it can be a `static`.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self(imp::RawCondvar::new())
    }

    /// A new condition variable.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self(imp::RawCondvar::new())
    }

    /// Releases `guard`, waits for a notification (or a spurious wake-up), and takes the lock again.
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0
            .wait(guard)
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Like [`Condvar::wait`], for at most `timeout`. The flag says whether the wait timed out.
    /// Under loom it never times out (loom's own `wait_timeout` is a plain wait): callers decide
    /// expiry by checking their deadline against [`Instant`], which loom models (see there).
    pub fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, bool) {
        let (guard, result) = self
            .0
            .wait_timeout(guard, timeout)
            .unwrap_or_else(|poison| poison.into_inner());
        (guard, result.timed_out())
    }

    /// Wakes one waiter.
    pub fn notify_one(&self) {
        self.0.notify_one();
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.0.notify_all();
    }
}
