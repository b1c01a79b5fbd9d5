//! `wedge-agent`: a guest-agent exec service of the kind micro-VM sandboxes run inside the VM, with the
//! worker-starvation and fork-safety bugs of such agents behind a strategy switch.
//!
//! One job per module:
//! - [`cli`]: the `serve` and `exec` commands;
//! - [`service`]: the gRPC service (exec table, output streaming, timeouts, kill, wait);
//! - [`client`]: the client library;
//! - [`strategy`]: the five spawn strategies (where the build is called from);
//! - [`build`] and `child`: the blocking container build, before and after `clone3`;
//! - [`cwd`]: the cwd critical section and the spawn lock (model-checkable);
//! - [`zygote`]: the single-threaded build helper;
//! - [`reaper`]: reaps orphaned init processes nobody waits for;
//! - [`failpoints`]: the named failpoints (feature `failpoints`), documented there;
//! - [`sys`]: the raw syscalls nix does not wrap.
//!
//! Built with `--cfg loom`, only [`cwd`] exists (with loom's synchronisation types), so a loom model can
//! drive the cwd critical section and the spawn lock; the rest needs tokio, which does not build there.

pub mod cwd;

#[cfg(not(loom))]
pub mod build;
#[cfg(not(loom))]
mod child;
#[cfg(not(loom))]
pub mod cli;
#[cfg(not(loom))]
pub mod client;
#[cfg(not(loom))]
pub mod failpoints;
#[cfg(not(loom))]
pub mod reaper;
#[cfg(not(loom))]
pub mod service;
#[cfg(not(loom))]
pub mod strategy;
#[cfg(not(loom))]
pub mod sys;
#[cfg(not(loom))]
pub mod zygote;

/// The generated gRPC types (`proto/agent.proto`).
#[cfg(not(loom))]
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("wedge.agent.v1");
}

#[cfg(not(loom))]
pub use strategy::Strategy;
