//! Ending a trial: [`Teardown`] takes the `Ground` setup made and the processes and log the
//! steps handed on, kills and reaps the whole tree, collects the output, and checks that nothing
//! was left behind (processes, the cgroup, mounts, temp files, the trial directory). Everything
//! found completes the observations the judge reads. Also here: what the subject left running
//! when it exited ([`lingering`]), which the steps ask when they settle the script's end.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::engine::TrialSpec;
use super::judge::{Observed, StepsEnd, exit_info};
use super::launch::Procs;
use super::log::Log;
use super::setup::Ground;
use super::state::{Context, describe_pid};
use crate::engine::isolation::Part;
use crate::engine::output::Capture;
use crate::model::scenario::Stream;

/// `pid`'s command name, or empty once it is gone.
fn comm(pid: i32) -> String {
    crate::engine::proc::stat(pid)
        .map(|s| s.comm)
        .unwrap_or_default()
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

/// What teardown adds to the record besides the observations.
pub(crate) struct Tails {
    pub stdout: String,
    pub stderr: String,
}

/// Anything of the subject's still alive after the linger grace was left behind, but the
/// processes the expectation allows (`allow_leftover_processes`), which are only noted.
pub(super) fn lingering(cx: &Context<'_>, log: &mut Log) -> Vec<String> {
    let grace_end = Instant::now() + cx.scenario().linger;
    let e = &cx.spec().expectation;
    loop {
        let left = cx.tree().pids(Some(Part::Subject));
        let (allowed, left): (Vec<i32>, Vec<i32>) = left.into_iter().partition(|&p| {
            !e.allow_leftover_processes.is_empty() && e.allows_process(&comm(p), &cmdline(p))
        });
        if left.is_empty() {
            note_allowed(log, &allowed);
            return Vec::new();
        }
        if Instant::now() >= grace_end {
            note_allowed(log, &allowed);
            let lingering: Vec<String> = left.iter().map(|&p| describe_pid(p)).collect();
            log.note(format!(
                "left running after the subject exited: {}",
                lingering.join(", ")
            ));
            return lingering;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn note_allowed(log: &mut Log, allowed: &[i32]) {
    if allowed.is_empty() {
        return;
    }
    let names: Vec<String> = allowed.iter().map(|&p| describe_pid(p)).collect();
    log.note(format!(
        "left running after the subject exited, as allowed (allow_leftover_processes): {}",
        names.join(", ")
    ));
}

/// The teardown phase: the ground setup prepared, and the processes and log the steps handed
/// on; it takes all of them apart.
pub(crate) struct Teardown<'a> {
    spec: &'a TrialSpec<'a>,
    ground: Ground,
    procs: Procs,
    log: Log,
}

impl<'a> Teardown<'a> {
    pub fn new(spec: &'a TrialSpec<'a>, ground: Ground, procs: Procs, log: Log) -> Teardown<'a> {
        Teardown {
            spec,
            ground,
            procs,
            log,
        }
    }

    /// Kills and reaps the tree, adds the output and every leak to `o`, and removes what the
    /// trial had; the completed observations, the output tails and the log.
    pub fn run(mut self, mut o: Observed) -> (Observed, Tails, Log) {
        let ended_on_its_own = o.exit.is_some() && !matches!(o.end, StepsEnd::Hang(_));
        self.procs.let_go();
        self.kill_and_reap(&mut o);
        let allowed = self.allowed_paths();
        self.check_escaped(&mut o, &allowed);
        let tails = self.collect_output(&mut o);
        if let Err(e) = self.ground.tree().remove() {
            let dir = self.ground.tree().dir();
            o.leaks.push(format!(
                "cgroup {} not removable: {e}",
                dir.map_or_else(String::new, |d| d.display().to_string())
            ));
        }
        if let Some(n) = self.ground.limits().oom_kills().filter(|&n| n > 0) {
            o.oom_kills = n;
            self.log.note(format!(
                "the kernel's OOM killer ended {n} process(es) at the trial's memory limit"
            ));
        }
        o.leaks.extend(self.ground.remove_limits());
        self.check_mounts(&mut o);
        if ended_on_its_own && o.lingering.is_empty() {
            self.check_temp_files(&mut o, &allowed);
        }
        self.check_shared_places(&mut o, &allowed);
        let dir = self.ground.dir();
        if let Err(e) = fs::remove_dir_all(dir) {
            o.leaks.push(format!(
                "trial directory {} not removable: {e}",
                dir.display()
            ));
        }
        super::engine::ACTIVE_TRIALS.fetch_sub(1, Ordering::SeqCst);
        (o, tails, self.log)
    }

    /// Cgroups the trial's processes made outside its own: removed, and leaks unless allowed.
    fn check_escaped(&mut self, o: &mut Observed, allowed: &[glob::Pattern]) {
        let alone = !self.ground.overlapped();
        let (escaped, notes) = self.ground.tree().remove_escaped(alone);
        for (path, message) in escaped {
            if allowed.iter().any(|p| p.matches_path(&path)) {
                self.log.note(format!("{message}, as allowed"));
            } else {
                o.leaks.push(message);
            }
        }
        for n in notes {
            self.log.note(n);
        }
    }

    /// What is left in the trial's own `tmp` directory: leaks unless allowed.
    fn check_temp_files(&mut self, o: &mut Observed, allowed: &[glob::Pattern]) {
        let Ok(entries) = fs::read_dir(&self.ground.vars().tmp) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if allowed.iter().any(|p| p.matches_path(&path)) {
                self.log
                    .note(format!("temp file {} left, as allowed", path.display()));
            } else {
                o.leaks.push(format!("temp file {}", path.display()));
            }
        }
    }

    fn kill_and_reap(&mut self, o: &mut Observed) {
        let survivors = self.ground.tree().kill_all(Duration::from_secs(5));
        for pid in &survivors {
            o.leaks
                .push(format!("process {} survived SIGKILL", describe_pid(*pid)));
        }
        for p in self.procs.all_mut() {
            p.reap(survivors.is_empty());
        }
        crate::engine::reaper::reap_orphans();
    }

    /// Waits for the output pipes to close (once every writer is dead) and takes the output.
    fn collect_output(&self, o: &mut Observed) -> Tails {
        let streams: Vec<Arc<Capture>> =
            self.procs.all().map(|p| Arc::clone(p.streams())).collect();
        let pipes_deadline = Instant::now() + Duration::from_secs(2);
        while streams.iter().any(|s| s.open_readers() > 0) && Instant::now() < pipes_deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut tails = Tails {
            stdout: String::new(),
            stderr: String::new(),
        };
        o.spawned = self
            .procs
            .aux()
            .iter()
            .map(|p| crate::model::record::Spawned {
                name: p.name().to_string(),
                exit: p.exit().map(|(status, _)| exit_info(status)),
                stdout_tail: p.streams().tail(Stream::Stdout),
                stderr_tail: p.streams().tail(Stream::Stderr),
            })
            .collect();
        if let Some(s) = self.procs.subject() {
            let streams = s.streams();
            tails.stdout = streams.tail(Stream::Stdout);
            tails.stderr = streams.tail(Stream::Stderr);
            let tty = streams.tty_tail();
            if !tty.is_empty() {
                tails.stdout.push_str(&format!("\n[tty] {tty}"));
            }
            o.stdout = streams.text(Stream::Stdout);
            o.stderr = streams.text(Stream::Stderr);
        }
        tails
    }

    /// `allow_leftover_paths` with this trial's placeholders filled (a pattern that does not fill
    /// or compile allows nothing, and is noted).
    fn allowed_paths(&mut self) -> Vec<glob::Pattern> {
        let mut out = Vec::new();
        for g in self.spec.expectation.allow_leftover_paths.clone() {
            let why = match self.ground.vars().fill(&g) {
                Err(e) => e.to_string(),
                Ok(filled) => match glob::Pattern::new(&filled) {
                    Ok(p) => {
                        out.push(p);
                        continue;
                    }
                    Err(e) => e.to_string(),
                },
            };
            self.log.note(format!(
                "allow_leftover_paths \"{g}\" allows nothing: {why}"
            ));
        }
        out
    }

    /// What the trial's processes left in `/tmp`, `/var/tmp`, `/run` and `/dev/shm`
    /// ([`crate::engine::leftovers`]): removed, and a leak unless allowed.
    fn check_shared_places(&mut self, o: &mut Observed, allowed: &[glob::Pattern]) {
        let marker = self.ground.tree().marker().to_string();
        let Ok(watcher) = crate::engine::leftovers::watcher() else {
            crate::engine::leftovers::trial_ended(&marker);
            return;
        };
        if !watcher.sync() {
            self.log
                .note("leftovers: the watcher did not catch up within 2 s".to_string());
        }
        let left = watcher.take(&marker);
        crate::engine::leftovers::trial_ended(&marker);
        for path in &left.uncertain {
            self.log.note(format!(
                "{} appeared while this and other trials ran, and its creator exited before it could be read: not blamed on this trial, not removed",
                path.display()
            ));
        }
        for path in left.made {
            let removed = match crate::engine::leftovers::remove(&path) {
                Ok(()) => "removed".to_string(),
                Err(e) => format!("not removable: {e}"),
            };
            if allowed.iter().any(|p| p.matches_path(&path)) {
                self.log
                    .note(format!("left {} as allowed ({removed})", path.display()));
            } else {
                o.leaks.push(format!("file {} ({removed})", path.display()));
            }
        }
    }

    /// New mounts are leaks: those under the trial's directory always (and they are detached so
    /// it can be removed), others only when no other trial ran meanwhile to blame them on.
    fn check_mounts(&self, o: &mut Observed) {
        let mounts_after: BTreeSet<String> =
            crate::engine::proc::mount_points().into_iter().collect();
        let overlapped = self.ground.overlapped();
        let mut inside = Vec::new();
        for m in mounts_after.difference(self.ground.mounts_before()) {
            let under_trial = Path::new(m).starts_with(self.ground.dir());
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
