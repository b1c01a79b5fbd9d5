//! The concurrency cores of wedge's runtime, written so that loom can check the code that ships.
//!
//! Everything here synchronises only through [`sync`], the std/loom facade: a normal build uses
//! std's types, a build with `RUSTFLAGS="--cfg loom"` uses loom's, and the loom models in
//! `runtime/core/tests/` drive these very functions. This is the only crate built under
//! `--cfg loom`, so the models compile nothing they do not check (no tokio, no tonic, no libseccomp).
//!
//! - [`sync`]: the facade (a poison-free `Mutex`/`Condvar`, atomics, threads, and a clock that
//!   loom can stand in for);
//! - [`shutdown`]: how wedge-run's session and signal forwarder stop the supervisor, the bounded
//!   drain, and the session's whole shutdown sequence (fixed and pre-fix), generic over its thread
//!   and listener;
//! - [`supervise`]: the supervisor's receive loops (fixed and pre-fix), generic over the listener
//!   they wait on: the traits the seccomp ioctl layer implements;
//! - [`cwd`]: wedge-agent's cwd critical section and the spawn lock that serialises it;
//! - [`mutation`]: the curated mutations `ci/mutants.sh` runs (feature `mutations`; inert without).

pub mod cwd;
pub mod mutation;
pub mod shutdown;
pub mod supervise;
pub mod sync;
