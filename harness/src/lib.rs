//! wedge: scenario engine, watchdog, statistics and reports.
//!
//! A run loads scenario files ([`scenario`]), expands each into cells ([`cell`]), runs trials
//! ([`trial`]) in isolated process trees ([`isolation`], [`reaper`]) watched for quiescence
//! ([`monitor`], [`proc`]), appends each result to `trials.jsonl` ([`record`]), and turns the
//! records into statistics ([`stats`]), gates ([`gate`]) and reports ([`report`]).

/// wedge's version and the git commit it was built from, e.g. `0.1.0 (0123456789ab)`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("WEDGE_COMMIT"), ")");

pub mod cell;
pub mod executor;
pub mod gate;
pub mod isolation;
pub mod monitor;
pub mod output;
pub mod plan;
pub mod proc;
pub mod reaper;
pub mod record;
pub mod report;
pub mod reporter;
pub mod runner;
pub mod scenario;
pub mod stats;
pub mod subject;
pub mod suite;
pub mod trial;
