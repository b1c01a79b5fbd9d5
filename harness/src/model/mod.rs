//! The model: what a scenario says and what a trial records. Plain data and its validation;
//! nothing here runs a process or touches the system, and nothing here depends on another layer.

pub mod cell;
pub mod chaos;
pub mod diagnosis;
pub mod error;
pub mod limit_spec;
pub mod loss;
pub mod probe_ids;
pub mod record;
pub mod scenario;
pub mod syscall_names;
pub mod waitfor;
