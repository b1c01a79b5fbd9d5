//! wedge: scenario engine, watchdog, statistics and reports.
//!
//! The crate is built in layers; each uses only the layers listed before it, never one after
//! (`ci/module-cycles.py`, part of the test command, holds every file and folder to that):
//!
//! 1. [`model`]: what a scenario says (the validated [`model::scenario::Scenario`], its cells)
//!    and what a trial records ([`model::record::TrialRecord`], its diagnosis and wait-for graph).
//! 2. [`probe`]: the kernel behaviours runtimes depend on, probed on this machine.
//! 3. [`plan`]: finding and loading the suite, choosing cells, their backend (host or a VM) and
//!    expectations, and every trial's seed. Pure: host facts come in as a value; planning starts
//!    no process and touches no cgroup or file.
//! 4. [`report`]: statistics, gates, the rendered reports, and the live reporters.
//! 5. [`engine`]: one trial from start to verdict, in an isolated process tree watched for
//!    quiescence through `/proc`.
//! 6. [`vm`]: QEMU guests: the image, the boot and its budgets, the console framing, and the plan
//!    the host sends a guest.
//! 7. [`exec`]: where trials run: the host executor, the VM executor, and the runner that feeds
//!    records to the reporters as they arrive.
//! 8. [`guest`]: wedge as a guest's `/init`, running the host's plan with the host executor.
//!
//! The `wedge` binary's `cli` sits on top; [`stdio`] is the one way wedge prints.

/// wedge's version and the git commit it was built from, e.g. `0.1.0 (0123456789ab)`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("WEDGE_COMMIT"), ")");

pub mod engine;
pub mod exec;
pub mod guest;
pub mod model;
pub mod plan;
pub mod probe;
pub mod report;
pub mod stdio;
pub mod vm;
