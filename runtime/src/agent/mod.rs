//! `wedge-agent`: a guest-agent exec service of the kind micro-VM sandboxes run inside the VM, with the
//! worker-starvation and fork-safety bugs of such agents behind a strategy switch.
//!
//! One job per module, dependencies pointing down the list:
//! - [`cli`]: the `serve` and `exec` commands;
//! - [`service`]: the gRPC service (exec table, output streaming, timeouts, kill, wait);
//! - [`client`]: the client library;
//! - [`spawn`]: the five spawn strategies (where the build is called from), the build's progress and
//!   clean-up, and the single-threaded zygote helper;
//! - [`build`]: the blocking container build, its child side after `clone3`, the typed handshake
//!   between them, and the cwd critical section with its spawn lock (from `wedge-core`, so loom
//!   checks it);
//! - [`kill`]: kills a command, its process tree and whatever still holds its output;
//! - [`in_flight`]: the builds in progress, by start time (what `kill` must not take for leftovers);
//! - [`reaper`]: reaps orphaned init processes nobody waits for;
//! - [`failpoints`]: the named failpoints (feature `failpoints`), documented there.
//!
//! The raw syscalls it makes (`clone3`, pidfds, `close_range`, the `prctl`s) are [`crate::sys`].

pub mod build;
pub mod cli;
pub mod client;
pub mod failpoints;
pub mod in_flight;
pub mod kill;
pub mod reaper;
pub mod second_build;
pub mod service;
pub mod spawn;

/// The generated gRPC types (`proto/agent.proto`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("wedge.agent.v1");
}

pub use spawn::Strategy;
