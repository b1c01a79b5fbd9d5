//! wedge: scenario engine, watchdog, statistics and reports.
//!
//! A run loads scenario files ([`scenario`]), expands each into cells ([`cell`]), runs trials
//! ([`trial`]) in isolated process trees ([`isolation`], [`reaper`]) watched for quiescence
//! ([`monitor`], [`proc`]), appends each result to `trials.jsonl` ([`record`]), and turns the
//! records into statistics ([`stats`]), gates ([`gate`]) and reports ([`report`]).

pub mod cell;
pub mod gate;
pub mod isolation;
pub mod monitor;
pub mod proc;
pub mod reaper;
pub mod record;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod stats;
pub mod subject;
pub mod trial;
