//! The state of one running trial: its tree, the processes wedge started in it, the watchdog,
//! and the log. Each phase (setup, steps, wait, teardown) works on this one struct.

use std::collections::BTreeSet;
use std::fs;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ExitStatus};
use std::sync::Arc;
use std::time::Instant;

use rand_chacha::ChaCha8Rng;

use super::engine::{Engine, TrialSpec};
use crate::isolation::TrialTree;
use crate::limits::Applied;
use crate::monitor::Monitor;
use crate::output::Capture;
use crate::subject::Vars;

/// A process wedge started in the trial.
pub(crate) struct Proc {
    pub name: String,
    /// The program's own pid.
    pub pid: i32,
    /// The `wedge-init` keeper it runs under: wedge's child, which ends as the program ends.
    pub keeper: i32,
    pub child: Child,
    pub pidfd: Option<OwnedFd>,
    pub exit: Option<(ExitStatus, Instant)>,
    pub streams: Arc<Capture>,
}

impl Proc {
    /// The exit, once the process has ended (reaped here, so the reaper forgets it).
    pub fn poll_exit(&mut self) -> Option<(ExitStatus, Instant)> {
        if self.exit.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exit = Some((status, Instant::now()));
            crate::reaper::disown(self.keeper);
        }
        self.exit
    }
}

/// One running trial.
pub(crate) struct Trial<'a> {
    pub engine: &'a Engine,
    pub spec: &'a TrialSpec<'a>,
    /// The trial's directory (`tmp/` and `work/` inside), removed at teardown.
    pub dir: PathBuf,
    pub vars: Vars,
    pub tree: TrialTree,
    /// Its `pids.max` and memory limit (v1 directories its processes join, on hybrid hosts).
    pub limits: Applied,
    pub rng: ChaCha8Rng,
    /// When the subject started (or the trial, before that); the deadline runs from it.
    pub start: Instant,
    pub deadline: Instant,
    pub monitor: Monitor,
    pub subject: Option<Proc>,
    pub subject_pgid: Option<i32>,
    pub stdin: Option<ChildStdin>,
    pub pty_master: Option<fs::File>,
    pub aux: Vec<Proc>,
    pub failpoints: Vec<String>,
    /// Signals a step sent to the subject (a death by one of them is no crash).
    pub sent_to_subject: BTreeSet<i32>,
    pub log: Vec<String>,
    pub last_output: usize,
    pub verdict_at: Option<Instant>,
    /// Taken at setup, for the leak checks of teardown.
    pub active_before: usize,
    pub started_before: u64,
    pub mounts_before: BTreeSet<String>,
    /// The trial's namespace (`isolation = "pid-namespace"`): the pid of its init, which every
    /// process started after the first joins, and the write end of the lifeline that keeps it.
    pub namespace: Option<(i32, OwnedFd)>,
}

impl Trial<'_> {
    /// Appends a line to the trial's log, stamped with the time since the subject started.
    pub fn note(&mut self, text: impl Into<String>) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        self.log.push(format!("{ms:9.1} ms  {}", text.into()));
    }

    /// Every process wedge started, the subject first.
    pub fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.subject.iter().chain(self.aux.iter())
    }
}

/// `comm[pid]`, or `[pid]` once the process is gone.
pub(crate) fn describe_pid(pid: i32) -> String {
    match crate::proc::stat(pid) {
        Some(s) => format!("{}[{pid}]", s.comm),
        None => format!("[{pid}]"),
    }
}
