//! wedge's own sandbox runtime: the thing wedge's scenarios run and break.
//!
//! `wedge-run` (this crate's [`runner`]) runs a command under a seccomp user-notification exec
//! supervisor. Its shutdown is the famous close-doesn't-wake deadlock when run with
//! `--variant pre-fix`, and the fix ([`shutdown`], [`supervisor::supervise`]) otherwise.
//!
//! `wedge-agent` ([`agent`]) is an exec service whose blocking container build starves tokio
//! workers with `--strategy inline`, and does not with the fixed strategies.

pub mod agent;
pub mod exec_decision;
pub mod filter;
pub mod pidfd;
pub mod policy;
pub mod runner;
pub mod sandbox;
pub mod seccomp_notify;
pub mod shutdown;
pub mod signals;
pub mod supervisor;
pub mod sync;
