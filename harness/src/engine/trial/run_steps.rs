//! Running the steps: each planned [`Action`] of the cell, in order, with placeholders filled
//! for this trial. A step that fails ends the script with the step's position in the reason;
//! after the last step the trial waits for the subject to exit. [`Steps`] owns what changes
//! meanwhile (the processes, the watchdog, the log, the seeded choices); it settles how the
//! script ended into the [`Observed`] the judge reads, runs the `[[teardown]]` steps, and hands
//! its processes and log on to teardown.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::error::{StartError, StepError};
use super::judge::{Observed, StepsEnd, exit_info, exit_matches};
use super::launch::Procs;
use super::log::Log;
use super::state::{Context, Proc, describe_pid};
use super::wait::{Cond, WaitEnd, Waiting, Watch};
use crate::engine::monitor::Snapshot;
use crate::engine::proc::Pending;
use crate::model::scenario::{
    Action, ExitSpec, IoctlRequest, StdinMode, Syscall, Target, Which, describe_exit_spec,
};
use crate::plan::commands::{self, Launch, SubjectError, Vars};

/// `; stderr: …` with the last line of a process's output, for a failure reason.
fn output_of(p: &Proc) -> String {
    let err = p.streams().tail(crate::model::scenario::Stream::Stderr);
    let out = p.streams().tail(crate::model::scenario::Stream::Stdout);
    let last = |t: &str| t.trim_end().lines().last().unwrap_or("").to_string();
    match (last(&err), last(&out)) {
        (e, _) if !e.is_empty() => format!("; stderr: {e}"),
        (_, o) if !o.is_empty() => format!("; stdout: {o}"),
        _ => String::new(),
    }
}

/// `exit 3`, `signal KILL`: how a process ended, for the log and reasons.
fn describe_exit(info: &crate::model::record::ExitInfo) -> String {
    match (info.code, info.signal) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => match Signal::try_from(s) {
            Ok(sig) => format!("signal {}", sig.as_str().trim_start_matches("SIG")),
            Err(_) => format!("signal {s}"),
        },
        (None, None) => "an unknown status".to_string(),
    }
}

/// What a step that does not end the script returns; `Some` ends a wait.
type StepResult = Result<Option<WaitEnd>, StepError>;

/// The steps phase: what it owns while the cell's steps run (and, after the verdict, the
/// `[[teardown]]` steps), and hands to teardown when done.
pub(crate) struct Steps<'a> {
    cx: Context<'a>,
    log: Log,
    /// Draws the seeded choices of the steps (jitter, failpoint probabilities).
    rng: ChaCha8Rng,
    procs: Procs,
    watch: Watch,
    /// Failpoints the steps enabled, for the subject.
    failpoints: Vec<String>,
    /// Signals a step sent to the subject (a death by one of them is no crash).
    sent_to_subject: BTreeSet<i32>,
    /// Told when the subject has started (the chaos perturber, when there is one).
    start_signal: Option<crate::engine::chaos::StartSignal>,
}

impl<'a> Steps<'a> {
    /// The steps of the trial `cx`, with the log setup began; the clock runs from its start.
    pub fn new(cx: Context<'a>, log: Log) -> Steps<'a> {
        Steps {
            rng: ChaCha8Rng::seed_from_u64(cx.spec().seed),
            watch: Watch::new(log.start(), cx.scenario()),
            cx,
            log,
            procs: Procs::default(),
            failpoints: Vec::new(),
            sent_to_subject: BTreeSet::new(),
            start_signal: None,
        }
    }

    /// Has `signal` told once the subject has started.
    pub fn tell_start(&mut self, signal: crate::engine::chaos::StartSignal) {
        self.start_signal = Some(signal);
    }

    /// The processes and the log, for teardown.
    pub fn finish(self) -> (Procs, Log) {
        (self.procs, self.log)
    }

    fn vars(&self) -> &'a Vars {
        self.cx.ground().vars()
    }

    /// Appends a line to the trial's log.
    pub fn note(&mut self, line: impl Into<String>) {
        self.log.note(line);
    }

    /// Runs the cell's steps, then waits for the subject to exit.
    pub fn run(&mut self) -> WaitEnd {
        let scenario = self.cx.scenario();
        for (index, step) in scenario.steps.iter().enumerate() {
            if self.cx.cancelled() {
                return WaitEnd::Cancelled;
            }
            let (line, col) = step.at;
            let at = format!("step {} (line {line}:{col})", index + 1);
            if !scenario.step_applies(index, &self.cx.spec().cell) {
                continue;
            }
            if step.action == Action::Start
                && let Err(e) = self.start_subject()
            {
                return WaitEnd::Error(e.to_string());
            }
            match self.step(&step.action) {
                Ok(None | Some(WaitEnd::Met)) => {}
                Ok(Some(WaitEnd::Failed(reason))) => {
                    return WaitEnd::Failed(format!("{at}: {reason}"));
                }
                Err(e) => return WaitEnd::Failed(format!("{at}: {e}")),
                Ok(Some(end)) => return end,
            }
        }
        if self.procs.subject().is_some() {
            self.wait_for(&Cond::SubjectExited, None)
        } else {
            WaitEnd::Failed("the subject never started".to_string())
        }
    }

    /// Starts the subject; the log's stamps, the deadline and the watchdog run from then.
    fn start_subject(&mut self) -> Result<(), StartError> {
        let stopped = self
            .start_signal
            .as_ref()
            .is_some_and(|s| s.holds_the_start());
        let start = self
            .procs
            .start_subject(&self.cx, &self.failpoints, stopped, &mut self.log)?;
        if let Some(signal) = &self.start_signal {
            signal.started(self.procs.subject().map(|p| p.pid()));
        }
        self.log.restart(start);
        self.watch.restart(start, self.cx.scenario());
        Ok(())
    }

    /// Waits (under the watchdog) until `cond` holds or the wait ends otherwise.
    fn wait_for(&mut self, cond: &Cond, timeout: Option<Duration>) -> WaitEnd {
        let waiting = Waiting {
            cx: &self.cx,
            procs: &mut self.procs,
            log: &mut self.log,
        };
        self.watch.wait_for(waiting, cond, timeout)
    }

    /// How the script ended, the subject's exit and what it left running.
    pub fn settle(&mut self, end: WaitEnd) -> Observed {
        let end = match end {
            WaitEnd::Met => StepsEnd::Completed,
            WaitEnd::Cancelled => StepsEnd::Error("cancelled".to_string()),
            WaitEnd::Failed(reason) => {
                self.watch.verdict(Instant::now(), true);
                StepsEnd::Failed(reason)
            }
            WaitEnd::Error(reason) => StepsEnd::Error(reason),
            WaitEnd::Hang(diag) => StepsEnd::Hang(diag),
        };
        let mut o = Observed {
            subject_started: self.procs.subject().is_some(),
            sent_to_subject: self.sent_to_subject.clone(),
            ..Observed::default()
        };
        let Some(subject) = self.procs.subject_mut() else {
            o.end = end;
            return o;
        };
        if let Some((status, at)) = subject.poll_exit() {
            o.exit = Some(exit_info(status));
            if end == StepsEnd::Completed {
                self.watch.verdict(at, false);
            }
            o.lingering = super::teardown::lingering(&self.cx, &mut self.log);
        }
        o.end = end;
        let at = self.watch.verdict_at().unwrap_or_else(Instant::now);
        o.time_to_verdict_ms =
            (at.saturating_duration_since(self.log.start()).as_secs_f64() * 1000.0 * 1000.0)
                .round()
                / 1000.0;
        o
    }

    /// The scenario's `[[teardown]]` steps (e.g. `runc delete -f ID`), after the subject is
    /// stopped (SIGKILL to the subject's own process if it still runs; what it started stays
    /// for the steps to clean up); the failures, with why. A step that fails or overruns its
    /// bound does not stop the next one; none can hang wedge (each `run` has its bound, and the
    /// subject's end is awaited for a bounded time).
    pub fn run_teardown_steps(&mut self) -> Vec<String> {
        let scenario = self.cx.scenario();
        let mut failed = Vec::new();
        if scenario.teardown.is_empty() {
            return failed;
        }
        if self.procs.stop_subject() {
            self.log
                .note("teardown: the subject was stopped (SIGKILL)".to_string());
        }
        for (index, step) in scenario.teardown.iter().enumerate() {
            if !scenario.teardown_applies(index, &self.cx.spec().cell) {
                continue;
            }
            let (line, col) = step.at;
            self.log
                .note(format!("teardown step {} (line {line}:{col})", index + 1));
            if let Err(reason) = self.teardown_step(&step.action) {
                let reason = format!("teardown step {} (line {line}:{col}): {reason}", index + 1);
                self.log.note(reason.clone());
                failed.push(reason);
            }
        }
        failed
    }

    /// One teardown step (`run`, `sleep`, `signal` to named processes: checked at load).
    fn teardown_step(&mut self, action: &Action) -> Result<(), StepError> {
        match self.step(action)? {
            None | Some(WaitEnd::Met) => Ok(()),
            Some(WaitEnd::Failed(reason) | WaitEnd::Error(reason)) => Err(StepError::Ended(reason)),
            Some(WaitEnd::Cancelled) => Err(StepError::Cancelled),
            Some(WaitEnd::Hang(d)) => Err(StepError::Hang(d.summary)),
        }
    }

    fn step(&mut self, action: &Action) -> StepResult {
        match action {
            Action::Start => Ok(None),
            Action::Failpoint {
                name,
                action,
                probability,
            } => self.failpoint(name, action, *probability),
            Action::Sleep { ms, jitter_ms } => {
                let jitter = jitter_ms.map_or(0, |j| self.rng.random_range(0..=j));
                self.log.note(format!("sleep {} ms", ms + jitter));
                self.sleep(Duration::from_millis(ms + jitter));
                self.watch.activity(Instant::now());
                Ok(None)
            }
            Action::Write { data } => self.write_stdin(data),
            Action::CloseStdin => self.close_stdin(),
            Action::Spawn {
                name,
                argv,
                env,
                cwd,
            } => {
                self.start_aux(name, argv, env, cwd)?;
                Ok(None)
            }
            Action::Run {
                name,
                argv,
                env,
                cwd,
                timeout,
                exit,
            } => {
                let index = self.start_aux(name, argv, env, cwd)?;
                self.run_to_end(index, *timeout, exit)?;
                Ok(None)
            }
            Action::Signal {
                signal,
                target,
                count,
                interval_ms,
                jitter_ms,
            } => self.signal(*signal, target, *count, *interval_ms, *jitter_ms),
            wait => self.wait_step(wait),
        }
    }

    /// Starts a process of the steps (`spawn`, `run`) in the trial's aux part; its index in
    /// `aux`.
    fn start_aux(
        &mut self,
        name: &str,
        argv: &[String],
        env: &BTreeMap<String, String>,
        cwd: &Option<String>,
    ) -> Result<usize, StepError> {
        // Placeholders filled and `{AXIS...}` lists spliced in, as for the subject.
        let (program, args) = commands::command_argv(self.vars(), argv)?;
        let launch = Launch {
            program,
            args,
            env: env
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.vars().fill(v)?)))
                .collect::<Result<_, SubjectError>>()?,
            cwd: commands::fill_cwd(self.vars(), cwd)?,
            stdin: StdinMode::Null,
            // Failpoints go to the subject only.
            failpoints_var: commands::FAILPOINTS_VAR,
        };
        self.log.note(format!("spawn {name}: {}", launch.display()));
        let index = self
            .procs
            .start_aux(&self.cx, name, &launch)
            .map_err(|source| StepError::Spawn {
                name: name.to_string(),
                source,
            })?;
        self.watch.activity(Instant::now());
        Ok(index)
    }

    /// Waits (on its pidfd, up to `timeout`) for the process `aux[index]` to end, and checks
    /// its exit. A process that overruns is killed (its keeper, so its exit is known) and the
    /// step fails; its output tails go into the reason either way.
    fn run_to_end(
        &mut self,
        index: usize,
        timeout: Duration,
        exit: &ExitSpec,
    ) -> Result<(), StepError> {
        let end = Instant::now() + timeout;
        let status = loop {
            let p = self.procs.aux_mut(index);
            if let Some((status, _)) = p.poll_exit() {
                break Some(status);
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            match p.pidfd() {
                Some(fd) => {
                    let mut fds = [nix::poll::PollFd::new(
                        fd.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
                    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
                }
                None => std::thread::sleep(left.min(Duration::from_millis(1))),
            }
        };
        let p = self.procs.aux_mut(index);
        let name = p.name().to_string();
        let Some(status) = status else {
            p.kill_keeper();
            return Err(StepError::Overran {
                output: output_of(p),
                name,
                timeout_ms: timeout.as_millis(),
            });
        };
        let info = exit_info(status);
        self.log
            .note(format!("{name} ended: {}", describe_exit(&info)));
        // Its output is read by other threads: let them reach the pipes' end (bounded, since a
        // child it left may hold them open) before a failure quotes it.
        let streams = std::sync::Arc::clone(self.procs.aux()[index].streams());
        let settle = Instant::now() + Duration::from_millis(500);
        while streams.open_readers() > 0 && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(1));
        }
        if exit_matches(exit, info) {
            Ok(())
        } else {
            Err(StepError::Exit {
                name,
                got: describe_exit(&info),
                wanted: describe_exit_spec(exit),
                output: output_of(&self.procs.aux()[index]),
            })
        }
    }

    fn failpoint(&mut self, name: &str, action: &str, probability: Option<f64>) -> StepResult {
        let name = self.vars().fill(name)?;
        let action = self.vars().fill(action)?;
        let on = probability.is_none_or(|p| self.rng.random_bool(p));
        if on {
            self.failpoints.push(format!("{name}={action}"));
        }
        self.log.note(format!(
            "failpoint {name}={action}: {}",
            if on {
                "enabled"
            } else {
                "left off by the seed"
            }
        ));
        Ok(None)
    }

    fn write_stdin(&mut self, data: &str) -> StepResult {
        let data = self.vars().fill(data)?;
        self.log
            .note(format!("write {} bytes to stdin", data.len()));
        let Some(result) = self.procs.write_stdin(data.as_bytes()) else {
            return Err(StepError::NoStdin);
        };
        self.watch.activity(Instant::now());
        result.map(|()| None).map_err(StepError::Write)
    }

    fn close_stdin(&mut self) -> StepResult {
        self.log.note("close stdin");
        self.procs.close_stdin()?;
        self.watch.activity(Instant::now());
        Ok(None)
    }

    /// A wait action: its condition with placeholders filled, the wait, and an exit check.
    fn wait_step(&mut self, action: &Action) -> StepResult {
        let (cond, timeout, exit) = self.condition(action)?;
        self.log.note(format!("wait for {}", cond.describe()));
        let end = self.wait_for(&cond, timeout);
        if let (WaitEnd::Met, Some(spec)) = (&end, exit)
            && let Some(failed) = self.check_exit(&cond, spec)
        {
            return Ok(Some(failed));
        }
        if matches!(end, WaitEnd::Met) {
            self.log.note("  condition holds");
        }
        Ok(Some(end))
    }

    /// The condition of a wait action, its timeout and its exit expectation.
    fn condition<'s>(
        &self,
        action: &'s Action,
    ) -> Result<(Cond, Option<Duration>, Option<&'s ExitSpec>), StepError> {
        let fill = |text: &Option<String>| text.as_ref().map(|t| self.vars().fill(t)).transpose();
        Ok(match action {
            Action::WaitBlocked {
                process,
                thread,
                syscalls,
                ioctl_request,
                timeout,
            } => {
                let (process, thread) = (fill(process)?, fill(thread)?);
                let text = blocked_text(
                    process.as_deref(),
                    thread.as_deref(),
                    syscalls,
                    ioctl_request,
                );
                let cond = Cond::Blocked {
                    process,
                    thread,
                    nrs: syscalls.iter().map(|s| s.nr).collect(),
                    requests: ioctl_request.as_ref().map(|r| r.values.clone()),
                    text,
                };
                (cond, *timeout, None)
            }
            Action::WaitProcess { process, timeout } => {
                (Cond::Process(self.vars().fill(process)?), *timeout, None)
            }
            Action::WaitOutput {
                pattern,
                stream,
                timeout,
            } => {
                let p = self.vars().fill(pattern)?;
                let re = regex::Regex::new(&p)?;
                (Cond::Output(re, *stream), *timeout, None)
            }
            Action::WaitExit {
                process,
                exit,
                timeout,
            } => {
                let cond = match fill(process)? {
                    Some(name) => Cond::AuxExited(name),
                    None => Cond::SubjectExited,
                };
                (cond, *timeout, exit.as_ref())
            }
            Action::WaitPath { path, timeout } => (
                Cond::Path(PathBuf::from(self.vars().fill(path)?)),
                *timeout,
                None,
            ),
            other => unreachable!("not a wait: {other:?}"),
        })
    }

    /// After an exit wait: the failure when the process that exited missed `spec`.
    fn check_exit(&self, cond: &Cond, spec: &ExitSpec) -> Option<WaitEnd> {
        let (who, status) = match cond {
            Cond::AuxExited(name) => (
                name.as_str(),
                self.procs
                    .aux()
                    .iter()
                    .find(|p| p.name() == name)
                    .and_then(Proc::exit),
            ),
            _ => ("the subject", self.procs.subject().and_then(Proc::exit)),
        };
        let info = exit_info(status?.0);
        (!exit_matches(spec, info)).then(|| {
            WaitEnd::Failed(format!(
                "{who} ended with {info}, expected {}",
                describe_exit_spec(spec)
            ))
        })
    }

    fn signal(
        &mut self,
        sig: Signal,
        target: &Target,
        count: u32,
        interval_ms: u64,
        jitter_ms: Option<u64>,
    ) -> StepResult {
        let target = match target {
            Target::Process { name, which } => Target::Process {
                name: self.vars().fill(name)?,
                which: *which,
            },
            other => other.clone(),
        };
        for i in 0..count {
            if i > 0 {
                let jitter = jitter_ms.map_or(0, |j| self.rng.random_range(0..=j));
                let pause = interval_ms + jitter;
                if pause > 0 {
                    self.sleep(Duration::from_millis(pause));
                }
            }
            self.send_signal(sig, &target)?;
        }
        self.watch.activity(Instant::now());
        Ok(None)
    }

    /// A user-requested pause (the `sleep` step, signal intervals), cut short by cancellation.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.cx.cancelled() {
            let now = Instant::now();
            if now >= end {
                break;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }

    fn send_signal(&mut self, sig: Signal, target: &Target) -> Result<(), StepError> {
        let subject_pid = self
            .procs
            .subject()
            .map(Proc::pid)
            .ok_or(StepError::NotRunning)?;
        let targets: Vec<i32> = match target {
            Target::Subject => vec![subject_pid],
            Target::Group => {
                let pgid = self.procs.subject_pgid().unwrap_or(subject_pid);
                self.log.note(format!("send {sig} to process group {pgid}"));
                match killpg(Pid::from_raw(pgid), sig) {
                    Err(nix::errno::Errno::ESRCH) => {
                        // Everyone in the group has exited: what a zombie subject used to absorb.
                        self.log
                            .note(format!("  the group is gone; {sig} reaches nobody"));
                        return Ok(());
                    }
                    r => r.map_err(|source| StepError::Killpg {
                        pgid,
                        signal: sig,
                        source,
                    })?,
                }
                self.sent_to_subject.insert(sig as i32);
                self.await_delivery(subject_pid, sig);
                return Ok(());
            }
            Target::Process { name, which } => self.named(name, *which)?,
        };
        for pid in targets {
            self.log
                .note(format!("send {sig} to {}", describe_pid(pid)));
            if pid == subject_pid {
                self.sent_to_subject.insert(sig as i32);
            }
            match kill(Pid::from_raw(pid), sig) {
                // The subject already exited and its keeper reaped it at once; a signal to an
                // exited subject reaches nobody, as it did when wedge held its zombie.
                Err(nix::errno::Errno::ESRCH) if pid == subject_pid => {
                    self.log
                        .note(format!("  {pid} has exited; {sig} reaches nobody"));
                    continue;
                }
                r => r.map_err(|source| StepError::Kill {
                    pid,
                    signal: sig,
                    source,
                })?,
            }
            self.await_delivery(pid, sig);
        }
        Ok(())
    }

    /// The trial's processes called `name`, oldest first, narrowed by `which`.
    fn named(&self, name: &str, which: Which) -> Result<Vec<i32>, StepError> {
        let snap = Snapshot::take(&self.cx.tree().pids(None));
        let mut found: Vec<(u64, i32)> = snap
            .named(name)
            .map(|p| (p.stat.start_ticks, p.stat.pid))
            .collect();
        found.sort_unstable();
        if found.is_empty() {
            return Err(StepError::NoProcess(name.to_string()));
        }
        Ok(match which {
            Which::Oldest => vec![found[0].1],
            Which::Newest => vec![found[found.len() - 1].1],
            Which::All => found.into_iter().map(|(_, p)| p).collect(),
        })
    }

    /// Waits until `sig` is no longer pending in `pid` (so the next one is not merged with it),
    /// unless every thread blocks it while none runs, or the process is stopped; at most until
    /// the deadline. A process that blocks it but is running may be about to unblock it (a
    /// handler loop that blocks signals but in `sigsuspend`), so that is waited out too, for
    /// [`BLOCKED_RUNNING_AT_MOST`] at most: sending the next signal then would merge the two.
    fn await_delivery(&mut self, pid: i32, sig: Signal) {
        if sig == Signal::SIGKILL {
            return;
        }
        let end = self.watch.deadline();
        let blocked_until = Instant::now() + BLOCKED_RUNNING_AT_MOST;
        loop {
            match crate::engine::proc::signal_pending(pid, sig as i32) {
                Pending::Delivered | Pending::Gone => return,
                Pending::BlockedWhileRunning if Instant::now() < blocked_until.min(end) => {
                    std::thread::sleep(Duration::from_micros(200))
                }
                Pending::BlockedWhileRunning => {
                    self.log.note(format!(
                        "  {sig} stays pending: every thread of {pid} blocks it, running"
                    ));
                    return;
                }
                Pending::Blocked => {
                    self.log.note(format!(
                        "  {sig} stays pending: every thread of {pid} blocks it"
                    ));
                    return;
                }
                Pending::Stopped => {
                    self.log
                        .note(format!("  {sig} stays pending: {pid} is stopped"));
                    return;
                }
                Pending::Pending if Instant::now() >= end => {
                    self.log
                        .note(format!("  {sig} still pending in {pid} at the deadline"));
                    return;
                }
                Pending::Pending => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    }
}

/// How long a signal every thread blocks is waited for while the process runs (it may be
/// about to unblock it); a process that keeps it blocked that long is taken to mean it.
const BLOCKED_RUNNING_AT_MOST: Duration = Duration::from_secs(1);

/// `thread T of process P blocked in futex or ioctl(REQ)`, for the log and reasons.
fn blocked_text(
    process: Option<&str>,
    thread: Option<&str>,
    syscalls: &[Syscall],
    request: &Option<IoctlRequest>,
) -> String {
    let call = syscalls
        .iter()
        .map(|s| match request {
            Some(r) if s.name == "ioctl" => format!("{}({})", s.name, r.name),
            _ => s.name.clone(),
        })
        .collect::<Vec<_>>()
        .join(" or ");
    format!(
        "{} of {} blocked in {call}",
        thread.map_or("a thread".to_string(), |t| format!("thread {t}")),
        process.map_or("any process".to_string(), |p| format!("process {p}")),
    )
}
