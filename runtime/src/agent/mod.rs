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
//! - [`failpoints`]: the named failpoints (feature `failpoints`), documented there;
//! - [`sys`]: the raw syscalls nix does not wrap.

pub mod build;
mod child;
pub mod cli;
pub mod client;
pub mod cwd;
pub mod failpoints;
pub mod service;
pub mod strategy;
pub mod sys;
pub mod zygote;

/// The generated gRPC types (`proto/agent.proto`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("wedge.agent.v1");
}

pub use strategy::Strategy;
