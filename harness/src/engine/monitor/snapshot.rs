//! A snapshot: the processes of a trial's tree read from `/proc` at one instant.
//!
//! The guarantee: a snapshot holds only what the kernel showed for the pids asked for, each
//! process with its threads sorted by tid; a process or thread gone by the time it is read is
//! left out. `taken` is when the reading began: nothing in it is older.

use std::time::Instant;

use crate::engine::proc::{self, ProcessSample};

/// The processes of a tree at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub taken: Instant,
    pub processes: Vec<ProcessSample>,
}

impl Snapshot {
    /// Reads every process in `pids` (those that vanished meanwhile are skipped).
    pub fn take(pids: &[i32]) -> Snapshot {
        Snapshot {
            taken: Instant::now(),
            processes: pids
                .iter()
                .filter_map(|&pid| proc::read_process(pid))
                .collect(),
        }
    }

    /// Processes whose name is `name` (compared like the kernel's 15-byte `comm`).
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ProcessSample> + 'a {
        self.processes
            .iter()
            .filter(move |p| comm_matches(&p.stat.comm, name))
    }
}

/// Whether a kernel `comm` (at most 15 bytes) is `name`.
pub fn comm_matches(comm: &str, name: &str) -> bool {
    let truncated: String = name.bytes().take(15).map(char::from).collect();
    comm == name || comm == truncated
}
