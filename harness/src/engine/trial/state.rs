//! What the phases of one trial share, none of it a bag they all mutate: the read-only
//! [`Context`] (the engine, the trial's spec and the [`Ground`] setup prepared) and the [`Proc`]
//! handle of each process wedge started.

use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Instant;

use super::engine::{Engine, TrialSpec};
use super::setup::Ground;
use crate::engine::isolation::TrialTree;
use crate::engine::output::Capture;
use crate::engine::spawn::Keeper;
use crate::model::scenario::Scenario;

/// What a running trial reads and never changes: copied freely between the phases' values.
#[derive(Clone, Copy)]
pub(crate) struct Context<'a> {
    engine: &'a Engine,
    spec: &'a TrialSpec<'a>,
    ground: &'a Ground,
}

impl<'a> Context<'a> {
    pub fn new(engine: &'a Engine, spec: &'a TrialSpec<'a>, ground: &'a Ground) -> Self {
        Context {
            engine,
            spec,
            ground,
        }
    }

    pub fn engine(&self) -> &'a Engine {
        self.engine
    }

    pub fn spec(&self) -> &'a TrialSpec<'a> {
        self.spec
    }

    pub fn scenario(&self) -> &'a Scenario {
        self.spec.scenario
    }

    pub fn ground(&self) -> &'a Ground {
        self.ground
    }

    pub fn tree(&self) -> &'a TrialTree {
        self.ground.tree()
    }

    /// Whether the run was cancelled (SIGINT): every wait and pause ends at once.
    pub fn cancelled(&self) -> bool {
        self.engine.cancel.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A process wedge started in the trial.
pub(crate) struct Proc {
    name: String,
    /// The program's own pid.
    pid: i32,
    /// The `wedge-init` keeper it runs under: wedge's child, which ends as the program ends.
    keeper: i32,
    child: Keeper,
    pidfd: Option<OwnedFd>,
    exit: Option<(ExitStatus, Instant)>,
    streams: Arc<Capture>,
}

impl Proc {
    /// A process just started: the program's `pid` running under `keeper`, wedge's `child`.
    pub fn new(name: &str, pid: i32, keeper: Keeper, streams: Arc<Capture>) -> Proc {
        let keeper_pid = keeper.id();
        // The keeper ends when, and as, the program ends: its pidfd is the exit event.
        let pidfd = wedge_sys::pidfd_open(keeper_pid).ok();
        Proc {
            name: name.to_string(),
            pid,
            keeper: keeper_pid,
            child: keeper,
            pidfd,
            exit: None,
            streams,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn keeper(&self) -> i32 {
        self.keeper
    }

    /// The keeper's pidfd (readable once it ended), when the kernel has pidfds.
    pub fn pidfd(&self) -> Option<&OwnedFd> {
        self.pidfd.as_ref()
    }

    pub fn streams(&self) -> &Arc<Capture> {
        &self.streams
    }

    /// The exit, if it was seen.
    pub fn exit(&self) -> Option<(ExitStatus, Instant)> {
        self.exit
    }

    /// The exit, once the process has ended (reaped here, so the reaper forgets it).
    pub fn poll_exit(&mut self) -> Option<(ExitStatus, Instant)> {
        if self.exit.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exit = Some((status, Instant::now()));
            crate::engine::reaper::disown(self.keeper);
        }
        self.exit
    }

    /// SIGKILL to the keeper (so the exit is known soon).
    pub fn kill_keeper(&mut self) {
        let _ = self.child.kill();
    }

    /// At teardown, after the tree was killed: waits for the keeper when nothing survived
    /// (else only kills and polls it, so a survivor cannot block), then forgets it.
    pub fn reap(&mut self, none_survived: bool) {
        if self.exit.is_none() {
            if none_survived {
                if let Ok(status) = self.child.wait() {
                    self.exit = Some((status, Instant::now()));
                }
            } else {
                let _ = self.child.kill();
                let _ = self.child.try_wait();
            }
        }
        crate::engine::reaper::disown(self.keeper);
    }
}

/// `comm[pid]`, or `[pid]` once the process is gone.
pub(crate) fn describe_pid(pid: i32) -> String {
    match crate::engine::proc::stat(pid) {
        Some(s) => format!("{}[{pid}]", s.comm),
        None => format!("[{pid}]"),
    }
}
