//! Ending a trial: settle how the script ended (the subject's exit, what it left running, the
//! time to the verdict), then kill and reap the whole tree, collect the output, and check that
//! nothing was left behind (processes, the cgroup, mounts, temp files, the trial directory).
//! Everything found goes into the observations the judge reads.

use std::collections::BTreeSet;
use std::fs;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::judge::{Observed, StepsEnd, exit_info};
use super::state::{Trial, describe_pid};
use super::wait::WaitEnd;
use crate::isolation::Part;
use crate::output::Capture;
use crate::scenario::Stream;

/// `pid`'s command name, or empty once it is gone.
fn comm(pid: i32) -> String {
    crate::proc::stat(pid).map(|s| s.comm).unwrap_or_default()
}

/// `pid`'s command line, its arguments joined by spaces.
fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// How long the subject may take to end after its SIGKILL before teardown steps run anyway.
const STOP_BOUND: Duration = Duration::from_secs(5);

/// What teardown adds to the record besides the observations.
pub(crate) struct Tails {
    pub stdout: String,
    pub stderr: String,
}

impl Trial<'_> {
    /// How the script ended, the subject's exit and what it left running.
    pub fn settle(&mut self, end: WaitEnd) -> Observed {
        let end = match end {
            WaitEnd::Met => StepsEnd::Completed,
            WaitEnd::Cancelled => StepsEnd::Error("cancelled".to_string()),
            WaitEnd::Failed(reason) => {
                self.verdict_at.get_or_insert_with(Instant::now);
                StepsEnd::Failed(reason)
            }
            WaitEnd::Error(reason) => StepsEnd::Error(reason),
            WaitEnd::Hang(diag) => StepsEnd::Hang(diag),
        };
        let mut o = Observed {
            subject_started: self.subject.is_some(),
            sent_to_subject: self.sent_to_subject.clone(),
            ..Observed::default()
        };
        let Some(subject) = self.subject.as_mut() else {
            o.end = end;
            return o;
        };
        if let Some((status, at)) = subject.poll_exit() {
            o.exit = Some(exit_info(status));
            if end == StepsEnd::Completed {
                self.verdict_at = Some(at);
            }
            o.lingering = self.linger();
        }
        o.end = end;
        let at = self.verdict_at.unwrap_or_else(Instant::now);
        o.time_to_verdict_ms =
            (at.saturating_duration_since(self.start).as_secs_f64() * 1000.0 * 1000.0).round()
                / 1000.0;
        o
    }

    /// Anything of the subject's still alive after the linger grace was left behind, but the
    /// processes the expectation allows (`allow_leftover_processes`), which are only noted.
    fn linger(&mut self) -> Vec<String> {
        let grace_end = Instant::now() + self.spec.scenario.linger;
        let e = &self.spec.expectation;
        loop {
            let left = self.tree.pids(Some(Part::Subject));
            let (allowed, left): (Vec<i32>, Vec<i32>) = left.into_iter().partition(|&p| {
                !e.allow_leftover_processes.is_empty() && e.allows_process(&comm(p), &cmdline(p))
            });
            if left.is_empty() {
                self.note_allowed(&allowed);
                return Vec::new();
            }
            if Instant::now() >= grace_end {
                self.note_allowed(&allowed);
                let lingering: Vec<String> = left.iter().map(|&p| describe_pid(p)).collect();
                self.note(format!(
                    "left running after the subject exited: {}",
                    lingering.join(", ")
                ));
                return lingering;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn note_allowed(&mut self, allowed: &[i32]) {
        if allowed.is_empty() {
            return;
        }
        let names: Vec<String> = allowed.iter().map(|&p| describe_pid(p)).collect();
        self.note(format!(
            "left running after the subject exited, as allowed (allow_leftover_processes): {}",
            names.join(", ")
        ));
    }

    /// The scenario's `[[teardown]]` steps (e.g. `runc delete -f ID`), after the subject is
    /// stopped (SIGKILL to the subject's own process if it still runs; what it started stays
    /// for the steps to clean up). A step that fails or overruns its bound is recorded in `o`
    /// and the next one still runs; none can hang wedge (each `run` has its bound, and the
    /// subject's end is awaited for at most [`STOP_BOUND`]).
    pub fn run_teardown_steps(&mut self, o: &mut Observed) {
        let scenario = self.spec.scenario;
        if scenario.teardown.is_empty() {
            return;
        }
        self.stop_subject();
        for (index, step) in scenario.teardown.iter().enumerate() {
            if !scenario.teardown_applies(index, &self.spec.cell) {
                continue;
            }
            let (line, col) = step.at;
            self.note(format!("teardown step {} (line {line}:{col})", index + 1));
            if let Err(reason) = self.teardown_step(&step.action) {
                let reason = format!("teardown step {} (line {line}:{col}): {reason}", index + 1);
                self.note(reason.clone());
                o.teardown.push(reason);
            }
        }
    }

    /// One teardown step (`run`, `sleep`, `signal` to named processes: checked at load).
    fn teardown_step(&mut self, action: &crate::scenario::Action) -> Result<(), String> {
        match self.step(action)? {
            None | Some(WaitEnd::Met) => Ok(()),
            Some(WaitEnd::Failed(reason) | WaitEnd::Error(reason)) => Err(reason),
            Some(WaitEnd::Cancelled) => Err("cancelled".to_string()),
            Some(WaitEnd::Hang(d)) => Err(format!("hang: {}", d.summary)),
        }
    }

    /// Ends the subject's own process if it still runs, and waits (bounded) for its keeper.
    fn stop_subject(&mut self) {
        let Some(subject) = self.subject.as_mut() else {
            return;
        };
        if subject.poll_exit().is_some() {
            return;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(subject.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let end = Instant::now() + STOP_BOUND;
        while subject.poll_exit().is_none() && Instant::now() < end {
            if let Some(fd) = &subject.pidfd {
                let mut fds = [nix::poll::PollFd::new(
                    fd.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.note("teardown: the subject was stopped (SIGKILL)".to_string());
    }

    /// Kills and reaps the tree, collects the output into `o` and checks for leaks.
    pub fn tear_down(&mut self, o: &mut Observed) -> Tails {
        let ended_on_its_own = o.exit.is_some() && !matches!(o.end, StepsEnd::Hang(_));
        self.stdin = None;
        self.pty_master = None;
        // The namespace's init may end once nothing is left in it (kill_all kills it anyway).
        self.namespace = None;
        self.kill_and_reap(o);
        let (escaped, notes) = self.tree.remove_escaped(!self.overlapped());
        o.leaks.extend(escaped);
        for n in notes {
            self.note(n);
        }
        let tails = self.collect_output(o);
        if let Err(e) = self.tree.remove() {
            let dir = self.tree.dir();
            o.leaks.push(format!(
                "cgroup {} not removable: {e}",
                dir.map_or_else(String::new, |d| d.display().to_string())
            ));
        }
        if let Some(n) = self.limits.oom_kills().filter(|&n| n > 0) {
            o.oom_kills = n;
            self.note(format!(
                "the kernel's OOM killer ended {n} process(es) at the trial's memory limit"
            ));
        }
        o.leaks.extend(self.limits.remove());
        self.check_mounts(o);
        let allowed = self.allowed_paths();
        if ended_on_its_own
            && o.lingering.is_empty()
            && let Ok(entries) = fs::read_dir(&self.vars.tmp)
        {
            for e in entries.flatten() {
                let path = e.path();
                if allowed.iter().any(|p| p.matches_path(&path)) {
                    self.note(format!("temp file {} left, as allowed", path.display()));
                } else {
                    o.leaks.push(format!("temp file {}", path.display()));
                }
            }
        }
        self.check_shared_places(o, &allowed);
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            o.leaks.push(format!(
                "trial directory {} not removable: {e}",
                self.dir.display()
            ));
        }
        super::engine::ACTIVE_TRIALS.fetch_sub(1, Ordering::SeqCst);
        tails
    }

    fn kill_and_reap(&mut self, o: &mut Observed) {
        let survivors = self.tree.kill_all(Duration::from_secs(5));
        for pid in &survivors {
            o.leaks
                .push(format!("process {} survived SIGKILL", describe_pid(*pid)));
        }
        for p in self.subject.iter_mut().chain(self.aux.iter_mut()) {
            if p.exit.is_none() {
                if survivors.is_empty() {
                    if let Ok(status) = p.child.wait() {
                        p.exit = Some((status, Instant::now()));
                    }
                } else {
                    let _ = p.child.kill();
                    let _ = p.child.try_wait();
                }
            }
            crate::reaper::disown(p.keeper);
        }
        crate::reaper::reap_orphans();
    }

    /// Waits for the output pipes to close (once every writer is dead) and takes the output.
    fn collect_output(&self, o: &mut Observed) -> Tails {
        let streams: Vec<Arc<Capture>> = self.procs().map(|p| Arc::clone(&p.streams)).collect();
        let pipes_deadline = Instant::now() + Duration::from_secs(2);
        while streams.iter().any(|s| s.open_readers() > 0) && Instant::now() < pipes_deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut tails = Tails {
            stdout: String::new(),
            stderr: String::new(),
        };
        o.spawned = self
            .aux
            .iter()
            .map(|p| crate::record::Spawned {
                name: p.name.clone(),
                exit: p.exit.map(|(status, _)| exit_info(status)),
                stdout_tail: p.streams.tail(Stream::Stdout),
                stderr_tail: p.streams.tail(Stream::Stderr),
            })
            .collect();
        if let Some(s) = &self.subject {
            tails.stdout = s.streams.tail(Stream::Stdout);
            tails.stderr = s.streams.tail(Stream::Stderr);
            let tty = s.streams.tty_tail();
            if !tty.is_empty() {
                tails.stdout.push_str(&format!("\n[tty] {tty}"));
            }
            o.stdout = s.streams.text(Stream::Stdout);
            o.stderr = s.streams.text(Stream::Stderr);
        }
        tails
    }

    /// `allow_leftover_paths` with this trial's placeholders filled (a pattern that does not fill
    /// or compile allows nothing, and is noted).
    fn allowed_paths(&mut self) -> Vec<glob::Pattern> {
        let mut out = Vec::new();
        for g in self.spec.expectation.allow_leftover_paths.clone() {
            match self
                .vars
                .fill(&g)
                .and_then(|f| glob::Pattern::new(&f).map_err(|e| e.to_string()))
            {
                Ok(p) => out.push(p),
                Err(e) => self.note(format!("allow_leftover_paths \"{g}\" allows nothing: {e}")),
            }
        }
        out
    }

    /// What the trial's processes left in `/tmp`, `/var/tmp`, `/run` and `/dev/shm`
    /// ([`crate::leftovers`]): removed, and a leak unless allowed.
    fn check_shared_places(&mut self, o: &mut Observed, allowed: &[glob::Pattern]) {
        let marker = self.tree.marker().to_string();
        let Ok(watcher) = crate::leftovers::watcher() else {
            crate::leftovers::trial_ended(&marker);
            return;
        };
        if !watcher.sync() {
            self.note("leftovers: the watcher did not catch up within 2 s".to_string());
        }
        let left = watcher.take(&marker);
        crate::leftovers::trial_ended(&marker);
        for path in &left.uncertain {
            self.note(format!(
                "{} appeared while this and other trials ran, and its creator exited before it could be read: not blamed on this trial, not removed",
                path.display()
            ));
        }
        for path in left.made {
            let removed = match crate::leftovers::remove(&path) {
                Ok(()) => "removed".to_string(),
                Err(e) => format!("not removable: {e}"),
            };
            if allowed.iter().any(|p| p.matches_path(&path)) {
                self.note(format!("left {} as allowed ({removed})", path.display()));
            } else {
                o.leaks.push(format!("file {} ({removed})", path.display()));
            }
        }
    }

    /// Whether another trial ran while this one did (so a leftover outside this trial's own
    /// places cannot be blamed on it by timing alone).
    fn overlapped(&self) -> bool {
        self.active_before > 0
            || super::engine::STARTED_TRIALS.load(Ordering::SeqCst) != self.started_before + 1
    }

    /// New mounts are leaks: those under the trial's directory always (and they are detached so
    /// it can be removed), others only when no other trial ran meanwhile to blame them on.
    fn check_mounts(&self, o: &mut Observed) {
        let mounts_after: BTreeSet<String> = crate::proc::mount_points().into_iter().collect();
        let overlapped = self.overlapped();
        let mut inside = Vec::new();
        for m in mounts_after.difference(&self.mounts_before) {
            let under_trial = Path::new(m).starts_with(&self.dir);
            if under_trial || !overlapped {
                o.leaks.push(format!("mount {m}"));
            }
            if under_trial {
                inside.push(m.clone());
            }
        }
        // Detach deepest first; mounts elsewhere are only reported.
        inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in inside {
            if let Err(e) = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!("cannot detach leaked mount {m}: {e}");
            }
        }
    }
}
