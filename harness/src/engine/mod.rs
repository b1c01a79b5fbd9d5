//! The engine: one trial, start to verdict. A trial's process tree runs in its own isolation
//! domain ([`isolation`], [`pidns`], [`reaper`]) with its limits applied ([`limits`]); the
//! [`monitor`] samples `/proc` ([`proc`]) until the tree finishes or is quiescent, and
//! [`trial`] runs the phases (setup, steps, teardown, judge) and assembles the record.

pub mod cgroupfs;
pub mod chaos;
pub mod isolation;
pub mod keeper;
pub mod leftovers;
pub mod limits;
pub mod marker;
pub mod monitor;
pub mod output;
pub mod pidns;
pub mod proc;
pub mod reaper;
pub mod spawn;
pub mod spawn_server;
pub mod syscall_holds;
pub mod trial;
