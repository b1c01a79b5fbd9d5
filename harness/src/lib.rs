//! wedge: scenario engine, watchdog, statistics and reports.
//!
//! A run is a pipeline: [`suite`] finds and loads scenario files, each into a validated plan
//! ([`scenario`]: typed actions, per-cell expectations); [`plan`] picks the cells ([`cell`])
//! and seeds the trials; an [`executor`] runs them (today on the host) with the [`trial`]
//! engine, in isolated process trees ([`isolation`], [`reaper`]) watched for quiescence
//! ([`monitor`], [`proc`]); [`runner`] hands each [`record`] to the [`reporter`]s
//! (`trials.jsonl`, progress) as it finishes; [`stats`], [`gate`] and [`report`] turn the records
//! into statistics, gates and reports.

/// wedge's version and the git commit it was built from, e.g. `0.1.0 (0123456789ab)`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("WEDGE_COMMIT"), ")");

pub mod backend;
pub mod cell;
pub mod cgroupfs;
pub mod executor;
pub mod gate;
pub mod host_facts;
pub mod isolation;
pub mod leftovers;
pub mod limit_spec;
pub mod limits;
pub mod marker;
pub mod monitor;
pub mod output;
pub mod pidns;
pub mod plan;
pub mod probe;
pub mod probe_ids;
pub mod proc;
pub mod reaper;
pub mod record;
pub mod report;
pub mod reporter;
pub mod runner;
pub mod scenario;
pub mod stats;
pub mod stdio;
pub mod subject;
pub mod suite;
pub mod syscall_names;
pub mod trial;
pub mod vm;
