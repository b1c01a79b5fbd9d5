//! Building a hang's [`Diagnosis`] from the verdict's snapshot and what the monitor followed.
//!
//! The guarantee: every field is what `/proc` showed at the verdict or what the monitor measured
//! over the trial (how long a thread has done what it does, what can wake it, its wake-ups and
//! CPU time); nothing here changes a verdict, it only explains one.

use std::time::{Duration, Instant};

use crate::engine::proc::syscall;
use crate::engine::proc::{self, SyscallState};

use super::awake::Seen;
use super::quiescence::Monitor;
use super::snapshot::Snapshot;
use crate::model::diagnosis::{Diagnosis, HangClass, ProcessDiag, ThreadDiag, summarize};
use crate::model::waitfor::{self, WaitGraph};

impl Monitor {
    /// The diagnosis of the tree as seen in `snap`, for a hang declared for `reason`.
    pub fn diagnose(&self, snap: &Snapshot, reason: &str) -> Diagnosis {
        let mut processes = Vec::new();
        for p in &snap.processes {
            let mut threads = Vec::new();
            for t in &p.threads {
                let track = self.tracks.get(&(p.stat.pid, t.tid));
                let (call, detail) = match &t.syscall {
                    Some(SyscallState::In { nr, args }) => (
                        Some(syscall::call_name(*nr, args)),
                        Some(syscall::call_detail(*nr, args)),
                    ),
                    _ => (None, None),
                };
                let for_ms = track.map_or(0, |tr| {
                    snap.taken.saturating_duration_since(tr.since).as_millis() as u64
                });
                let external = track.and_then(|tr| tr.external.as_ref());
                let in_ms = |w: Instant| w.saturating_duration_since(snap.taken).as_millis() as u64;
                let own = track.and_then(|tr| tr.wakes_at);
                // A timer that fires before the call's own timeout is what wakes it.
                let (wakes_in_ms, wake) = match external {
                    Some(e) if e.wakes && own.is_none_or(|o| e.at.is_none_or(|at| at < o)) => {
                        (e.at.map(in_ms), Some(e.text.clone()))
                    }
                    Some(e) if !e.wakes => (own.map(in_ms), Some(e.text.clone())),
                    _ => (own.map(in_ms), None),
                };
                threads.push(ThreadDiag {
                    tid: t.tid,
                    name: t.comm.clone(),
                    main: t.tid == p.stat.pid,
                    state: state_name(t.state).to_string(),
                    call,
                    detail,
                    wchan: proc::wchan(p.stat.pid, t.tid),
                    kernel_stack: proc::kernel_stack(p.stat.pid, t.tid),
                    for_ms,
                    wakes_in_ms,
                    wake,
                    running: matches!(t.syscall, Some(SyscallState::Running)) || t.state == 'R',
                });
            }
            processes.push(ProcessDiag {
                pid: p.stat.pid,
                ppid: p.stat.ppid,
                name: p.stat.comm.clone(),
                cmdline: proc::cmdline(p.stat.pid),
                state: state_name(p.stat.state).to_string(),
                threads,
            });
        }
        let waits = wait_graph(snap, &processes);
        let (awake, class) = self.awake_notes(snap.taken, &processes);
        let class = match &waits {
            Some(g) if !g.cycle.is_empty() => HangClass::Deadlock,
            _ => class,
        };
        let mut summary = summarize(&processes);
        for line in waits.iter().map(|g| &g.text).chain(awake.iter().take(3)) {
            summary = format!("{summary}; {line}");
        }
        Diagnosis {
            reason: reason.to_string(),
            summary,
            processes,
            waits,
            class: Some(class),
            awake,
        }
    }

    /// What kept the tree awake, when the verdict came at the deadline (never quiescent for
    /// the window), and the class of the hang apart from a cycle.
    fn awake_notes(&self, now: Instant, processes: &[ProcessDiag]) -> (Vec<String>, HangClass) {
        if self.quiescent_for_window(now) {
            return (Vec::new(), HangClass::Blocked);
        }
        let seen: Vec<Seen> = processes
            .iter()
            .flat_map(|p| {
                p.threads.iter().map(move |t| Seen {
                    pid: p.pid,
                    tid: t.tid,
                    who: format!("{}[{}] {}", p.name, p.pid, t.who()),
                    source: match (&t.wake, &t.call) {
                        (Some(w), _) => Some(w.clone()),
                        (None, Some(call)) if t.wakes_in_ms.is_some() => {
                            Some(format!("its timed {call}"))
                        }
                        _ => None,
                    },
                })
            })
            .collect();
        // SAFETY: sysconf takes an integer.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let window = if self.window.is_zero() {
            Duration::from_secs(1)
        } else {
            self.window
        };
        self.awake.explain(&seen, now, window, ticks)
    }
}

/// The wait-for graph of the tree in `snap` (`processes`: its diagnosis, in the same order).
fn wait_graph(snap: &Snapshot, processes: &[ProcessDiag]) -> Option<WaitGraph> {
    let mut obs = super::waitfor_edges::observe(&snap.processes);
    for (p, diag) in obs.processes.iter_mut().zip(processes) {
        for (t, td) in p.threads.iter_mut().zip(&diag.threads) {
            t.doing = td.doing();
        }
    }
    waitfor::build(&obs)
}

fn state_name(state: char) -> &'static str {
    match state {
        'R' => "running",
        'S' => "sleeping",
        'D' => "uninterruptible",
        'T' => "stopped",
        't' => "traced",
        'Z' => "zombie",
        'X' => "dead",
        'I' => "idle",
        'P' => "parked",
        _ => "unknown",
    }
}
