//! wedge's own sandbox runtime: the thing wedge's scenarios run and break. It is two programs, and
//! the crate has one room for each:
//!
//! - [`supervisor`] is everything `wedge-run` is made of: it runs a command under a seccomp
//!   user-notification exec supervisor. Its shutdown is the famous close-doesn't-wake deadlock when
//!   run with `--variant pre-fix`, and the fix ([`supervisor::shutdown`],
//!   [`supervisor::supervise()`]) otherwise.
//! - [`agent`] is `wedge-agent`: an exec service whose blocking container build starves tokio
//!   workers with `--strategy inline`, and does not with the fixed strategies.
//!
//! Two shared floors sit beneath both rooms, as crates of their own: [`sys`] (`wedge-sys`, the raw
//! syscalls nix does not wrap, one copy each, also used by the harness) and [`sync`] (from
//! `wedge-core`, whose concurrency cores are the only code the loom models build and check).

pub mod agent;
pub mod supervisor;

pub use wedge_core::mutation;
pub use wedge_core::sync;
pub use wedge_sys as sys;
