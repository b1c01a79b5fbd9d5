//! The synchronisation facade the runtime's concurrency-critical code is written against.
//!
//! Normally these are the `std` types. Built with `RUSTFLAGS="--cfg loom"` they are loom's, so the
//! loom models in `runtime/tests/` check the very code that ships rather than a copy of it.

#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub use std::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub use std::thread;

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(loom)]
pub use loom::thread;
