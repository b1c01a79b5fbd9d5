//! Running one trial: start the subject in its own isolated tree, run the steps, wait for the
//! verdict (exit, or a hang caught by quiescence or the deadline), kill and reap everything, and
//! check that nothing was left behind.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cell::Cell;
use crate::isolation::{Backend, MARKER_VAR, Part, TrialTree};
use crate::monitor::{Diagnosis, Monitor, Snapshot, comm_matches};
use crate::output::{Capture, Source, tail_of};
use crate::proc::{self as procfs, Pending, SyscallState};
use crate::record::{ExitInfo, Host, TrialRecord, Verdict};
use crate::scenario::{
    ExitSpec, Expectation, Outcome, Scenario, SignalTarget, StdinMode, Step, Stream, Until, Which,
    parse_signal,
};
use crate::subject::{self, Launch, Vars};

/// x86_64 `ioctl`.
const IOCTL: u64 = 16;

/// What every trial of a run shares.
#[derive(Debug)]
pub struct Engine {
    pub backend: Backend,
    pub bin_dir: PathBuf,
    pub host: Host,
    /// Set on SIGINT: running trials stop and are not recorded.
    pub cancel: Arc<AtomicBool>,
    temp_root: PathBuf,
    active: AtomicUsize,
    started: AtomicU64,
}

impl Engine {
    /// Detects the isolation backend and makes wedge a subreaper.
    pub fn new() -> Engine {
        if let Err(e) = crate::reaper::become_subreaper() {
            tracing::warn!("cannot become a child subreaper: {e}");
        }
        let backend = Backend::detect();
        tracing::debug!("isolation backend: {backend:?}");
        remove_stale_trial_dirs(&std::env::temp_dir());
        Engine {
            host: Host {
                kernel: procfs::kernel_release(),
                cpus: host_cpus().len(),
                isolation: backend.name().to_string(),
            },
            backend,
            bin_dir: subject::bin_dir(),
            cancel: Arc::new(AtomicBool::new(false)),
            temp_root: std::env::temp_dir(),
            active: AtomicUsize::new(0),
            started: AtomicU64::new(0),
        }
    }
}

impl Default for Engine {
    fn default() -> Engine {
        Engine::new()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.backend.cleanup();
    }
}

/// Removes the trial directories (`wedge-trial-PID-...`) of wedge processes that no longer exist.
fn remove_stale_trial_dirs(temp_root: &Path) {
    let Ok(entries) = fs::read_dir(temp_root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("wedge-trial-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The CPUs wedge may run on.
pub fn host_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&i| set.is_set(i).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// One trial to run.
#[derive(Debug, Clone)]
pub struct TrialSpec<'a> {
    pub scenario: &'a Scenario,
    pub cell: Cell,
    pub cell_index: usize,
    pub trial: u32,
    pub seed: u64,
    pub expectation: Expectation,
    /// Pin the subject to these CPUs.
    pub cpus: Option<Vec<usize>>,
}

/// The seed of trial `trial` of `cell` in `scenario` with base seed `base`.
pub fn trial_seed(base: u64, scenario: &str, cell: &Cell, trial: u32) -> u64 {
    // FNV-1a over the identity, mixed with splitmix64.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in scenario.bytes().chain([0]).chain(cell.id().bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = base ^ h ^ (u64::from(trial)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A process wedge started in the trial.
struct Proc {
    name: String,
    pid: i32,
    child: Child,
    pidfd: Option<OwnedFd>,
    exit: Option<(ExitStatus, Instant)>,
    streams: Arc<Capture>,
}

impl Proc {
    fn poll_exit(&mut self) -> Option<(ExitStatus, Instant)> {
        if self.exit.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exit = Some((status, Instant::now()));
            crate::reaper::disown(self.pid);
        }
        self.exit
    }
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

fn exit_info(status: ExitStatus) -> ExitInfo {
    ExitInfo {
        code: status.code(),
        signal: status.signal(),
    }
}

/// Whether an exit matches an exit expectation.
pub fn exit_matches(spec: &ExitSpec, exit: ExitInfo) -> bool {
    match spec {
        ExitSpec::Code(c) => exit.code == Some(*c),
        ExitSpec::Word(w) => match w.as_str() {
            "any" => true,
            "success" => exit.code == Some(0),
            "failure" | "nonzero" => exit.code.is_some_and(|c| c != 0),
            "signal" => exit.signal.is_some(),
            name => parse_signal(name).is_some_and(|s| exit.signal == Some(s as i32)),
        },
    }
}

fn describe_exit_spec(spec: &ExitSpec) -> String {
    match spec {
        ExitSpec::Code(c) => format!("exit {c}"),
        ExitSpec::Word(w) => format!("exit {w}"),
    }
}

enum WaitEnd {
    Met,
    Failed(String),
    /// wedge could not do its part (e.g. start the subject).
    Error(String),
    Hang(Diagnosis),
    Cancelled,
}

enum Cond<'a> {
    Blocked {
        process: Option<&'a str>,
        thread: Option<&'a str>,
        /// Any of these syscalls (`requests` narrows ioctl).
        nrs: Vec<u64>,
        requests: Option<Vec<u64>>,
        text: String,
    },
    Process(String),
    Output(regex::Regex, Stream),
    SubjectExited,
    AuxExited(String),
    Path(PathBuf),
}

impl Cond<'_> {
    fn describe(&self) -> String {
        match self {
            Cond::Blocked { text, .. } => text.clone(),
            Cond::Process(name) => format!("a process named {name}"),
            Cond::Output(re, s) => format!("{s:?} output matching /{re}/").to_lowercase(),
            Cond::SubjectExited => "the subject to exit".to_string(),
            Cond::AuxExited(n) => format!("{n} to exit"),
            Cond::Path(p) => format!("{} to exist", p.display()),
        }
    }
}

struct Trial<'a> {
    engine: &'a Engine,
    spec: &'a TrialSpec<'a>,
    vars: Vars,
    tree: TrialTree,
    rng: ChaCha8Rng,
    start: Instant,
    deadline: Instant,
    monitor: Monitor,
    subject: Option<Proc>,
    subject_pgid: Option<i32>,
    stdin: Option<ChildStdin>,
    pty_master: Option<fs::File>,
    aux: Vec<Proc>,
    failpoints: Vec<String>,
    sent_to_subject: BTreeSet<i32>,
    log: Vec<String>,
    last_output: usize,
    verdict_at: Option<Instant>,
}

static TRIAL_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Runs one trial and returns its record, or `None` when the run was cancelled meanwhile.
pub fn run_trial(engine: &Engine, spec: &TrialSpec<'_>) -> Option<TrialRecord> {
    let begin = Instant::now();
    let started_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let n = TRIAL_COUNTER.fetch_add(1, Ordering::SeqCst);
    let marker = format!(
        "{}-{}-t{}-{}",
        std::process::id(),
        n,
        spec.trial,
        spec.seed % 0x1_0000
    );
    let mut record = TrialRecord {
        scenario: spec.scenario.name.clone(),
        file: spec.scenario.file.display().to_string(),
        cell: spec.cell.clone(),
        cell_index: spec.cell_index,
        trial: spec.trial,
        seed: spec.seed,
        trial_id: marker.clone(),
        verdict: Verdict::Error,
        met: false,
        reason: String::new(),
        expectation: spec.expectation.clone(),
        exit: None,
        time_to_verdict_ms: 0.0,
        started_at,
        diagnosis: None,
        leaks: Vec::new(),
        lingering: Vec::new(),
        cpus: spec.cpus.clone(),
        log: Vec::new(),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        host: engine.host.clone(),
        wedge_version: crate::VERSION.to_string(),
    };

    let dir = engine.temp_root.join(format!("wedge-trial-{marker}"));
    let tmp = dir.join("tmp");
    let work = dir.join("work");
    if let Err(e) = fs::create_dir_all(&tmp).and_then(|()| fs::create_dir_all(&work)) {
        record.reason = format!("cannot create the trial directory {}: {e}", dir.display());
        return Some(record);
    }
    let tree = match TrialTree::create(&engine.backend, &marker) {
        Ok(t) => t,
        Err(e) => {
            record.reason = format!("cannot create the trial's cgroup: {e}");
            let _ = fs::remove_dir_all(&dir);
            return Some(record);
        }
    };
    let active_before = engine.active.fetch_add(1, Ordering::SeqCst);
    let started_before = engine.started.fetch_add(1, Ordering::SeqCst);
    let mounts_before: BTreeSet<String> = procfs::mount_points().into_iter().collect();

    let vars = Vars {
        cell: spec.cell.clone(),
        socket: work.join("agent.sock"),
        tmp: tmp.clone(),
        work: work.clone(),
        seed: spec.seed,
        trial: spec.trial,
        scenario_dir: spec.scenario.dir(),
        bin_dir: engine.bin_dir.clone(),
        rng: Vars::rng_for(spec.seed),
    };
    let mut vars = vars;
    if let Some(explicit) = subject::explicit_socket(spec.scenario)
        && let Ok(path) = vars.fill(explicit)
    {
        vars.socket = PathBuf::from(path);
    }
    let now = Instant::now();
    let mut trial = Trial {
        engine,
        spec,
        vars,
        tree,
        rng: ChaCha8Rng::seed_from_u64(spec.seed),
        start: now,
        deadline: now + spec.scenario.deadline,
        monitor: Monitor::new(now, now + spec.scenario.deadline, spec.scenario.quiescence),
        subject: None,
        subject_pgid: None,
        stdin: None,
        pty_master: None,
        aux: Vec::new(),
        failpoints: Vec::new(),
        sent_to_subject: BTreeSet::new(),
        log: Vec::new(),
        last_output: 0,
        verdict_at: None,
    };

    let t0 = Instant::now();
    tracing::debug!(trial = %marker, "set up in {:?}", t0.duration_since(begin));
    let end = trial.run_steps();
    tracing::debug!(trial = %marker, "steps done after {:?}", t0.elapsed());
    let cancelled = matches!(end, WaitEnd::Cancelled);
    trial.finish(end, &mut record);

    // Tear down: kill everything, reap, and check what is left.
    let ended_on_its_own = record.exit.is_some() && record.diagnosis.is_none();
    trial.stdin = None;
    trial.pty_master = None;
    tracing::debug!(trial = %marker, "verdict after {:?}", t0.elapsed());
    let survivors = trial.tree.kill_all(Duration::from_secs(5));
    tracing::debug!(trial = %marker, "killed after {:?}", t0.elapsed());
    for pid in &survivors {
        record
            .leaks
            .push(format!("process {} survived SIGKILL", describe_pid(*pid)));
    }
    for p in trial.subject.iter_mut().chain(trial.aux.iter_mut()) {
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
        crate::reaper::disown(p.pid);
    }
    crate::reaper::reap_orphans();
    // Output pipes close once every writer is dead.
    let streams: Vec<Arc<Capture>> = trial
        .subject
        .iter()
        .chain(trial.aux.iter())
        .map(|p| Arc::clone(&p.streams))
        .collect();
    let pipes_deadline = Instant::now() + Duration::from_secs(2);
    while streams.iter().any(|s| s.open_readers() > 0) && Instant::now() < pipes_deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    if let Some(s) = &trial.subject {
        record.stdout_tail = s.streams.tail(Stream::Stdout);
        record.stderr_tail = s.streams.tail(Stream::Stderr);
        let tty = s.streams.tty_text();
        if !tty.is_empty() {
            record
                .stdout_tail
                .push_str(&format!("\n[tty] {}", tail_of(&tty)));
        }
    }
    tracing::debug!(trial = %marker, "reaped and drained after {:?}", t0.elapsed());
    // Output expectations are checked once all output is in.
    trial.check_output(&mut record);
    if let Err(e) = trial.tree.remove() {
        record.leaks.push(format!(
            "cgroup {} not removable: {e}",
            trial
                .tree
                .dir()
                .map_or_else(String::new, |d| d.display().to_string())
        ));
    }
    let mounts_after: BTreeSet<String> = procfs::mount_points().into_iter().collect();
    let overlapped =
        active_before > 0 || engine.started.load(Ordering::SeqCst) != started_before + 1;
    let mut inside = Vec::new();
    for m in mounts_after.difference(&mounts_before) {
        let under_trial = Path::new(m).starts_with(&dir);
        if under_trial || !overlapped {
            record.leaks.push(format!("mount {m}"));
        }
        if under_trial {
            inside.push(m.clone());
        }
    }
    // Detach what was left inside the trial's directory (deepest first) so it can be removed;
    // mounts elsewhere are only reported.
    inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in inside {
        if let Err(e) = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!("cannot detach leaked mount {m}: {e}");
        }
    }
    if ended_on_its_own
        && record.lingering.is_empty()
        && let Ok(entries) = fs::read_dir(&tmp)
    {
        for e in entries.flatten() {
            record
                .leaks
                .push(format!("temp file {}", e.path().display()));
        }
    }
    if let Err(e) = fs::remove_dir_all(&dir) {
        record.leaks.push(format!(
            "trial directory {} not removable: {e}",
            dir.display()
        ));
    }
    engine.active.fetch_sub(1, Ordering::SeqCst);
    tracing::debug!(trial = %marker, "cleaned up after {:?}", t0.elapsed());
    if cancelled {
        return None;
    }
    trial.judge(&mut record);
    record.log = std::mem::take(&mut trial.log);
    Some(record)
}

fn describe_pid(pid: i32) -> String {
    match procfs::stat(pid) {
        Some(s) => format!("{}[{pid}]", s.comm),
        None => format!("[{pid}]"),
    }
}

impl Trial<'_> {
    fn note(&mut self, text: impl Into<String>) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        self.log.push(format!("{ms:9.1} ms  {}", text.into()));
    }

    fn run_steps(&mut self) -> WaitEnd {
        let steps = self.spec.scenario.steps.clone();
        for (index, (step, (line, col))) in steps.iter().enumerate() {
            if self.engine.cancel.load(Ordering::SeqCst) {
                return WaitEnd::Cancelled;
            }
            let at = format!("step {} (line {line}:{col})", index + 1);
            if !self.spec.scenario.step_applies(index, &self.spec.cell) {
                continue;
            }
            if matches!(step, Step::Start { .. })
                && let Err(reason) = self.start_subject()
            {
                return WaitEnd::Error(reason);
            }
            match self.step(step) {
                Ok(None) => {}
                Ok(Some(WaitEnd::Met)) => {}
                Ok(Some(WaitEnd::Failed(reason))) => {
                    return WaitEnd::Failed(format!("{at}: {reason}"));
                }
                Ok(Some(end)) => return end,
                Err(reason) => return WaitEnd::Failed(format!("{at}: {reason}")),
            }
        }
        if self.subject.is_some() {
            self.wait_for(&Cond::SubjectExited, None)
        } else {
            WaitEnd::Failed("the subject never started".to_string())
        }
    }

    fn step(&mut self, step: &Step) -> Result<Option<WaitEnd>, String> {
        match step {
            Step::Start { .. } => Ok(None),
            Step::Failpoint {
                name,
                action,
                probability,
                ..
            } => {
                let name = self.vars.fill(name)?;
                let action = self.vars.fill(action)?;
                let on = probability.is_none_or(|p| self.rng.random_bool(p));
                if on {
                    self.failpoints.push(format!("{name}={action}"));
                }
                self.note(format!(
                    "failpoint {name}={action}: {}",
                    if on {
                        "enabled"
                    } else {
                        "left off by the seed"
                    }
                ));
                Ok(None)
            }
            Step::Sleep { ms, jitter_ms, .. } => {
                let jitter = jitter_ms.map_or(0, |j| self.rng.random_range(0..=j));
                self.note(format!("sleep {} ms", ms + jitter));
                self.sleep(Duration::from_millis(ms + jitter));
                self.monitor.activity(Instant::now());
                Ok(None)
            }
            Step::Write { data, .. } => {
                let data = self.vars.fill(data)?;
                self.note(format!("write {} bytes to stdin", data.len()));
                let result = match (&mut self.stdin, &mut self.pty_master) {
                    (Some(pipe), _) => pipe.write_all(data.as_bytes()).and_then(|()| pipe.flush()),
                    (None, Some(master)) => master.write_all(data.as_bytes()),
                    (None, None) => return Err("stdin is closed (or not a pipe)".to_string()),
                };
                self.monitor.activity(Instant::now());
                result
                    .map(|()| None)
                    .map_err(|e| format!("writing to stdin: {e}"))
            }
            Step::CloseStdin { .. } => {
                self.note("close stdin");
                if let Some(master) = &mut self.pty_master {
                    // End of file on a terminal: VEOF at the start of a line.
                    master
                        .write_all(b"\n\x04")
                        .map_err(|e| format!("sending EOF to the terminal: {e}"))?;
                } else if self.stdin.take().is_none() {
                    return Err("stdin is already closed (or not a pipe)".to_string());
                }
                self.monitor.activity(Instant::now());
                Ok(None)
            }
            Step::Spawn {
                name,
                argv,
                env,
                cwd,
                ..
            } => {
                let argv: Vec<String> = argv
                    .iter()
                    .map(|a| self.vars.fill(a))
                    .collect::<Result<_, _>>()?;
                let launch = Launch {
                    program: subject::program(&argv[0], &self.vars)?,
                    args: argv[1..].to_vec(),
                    env: env
                        .iter()
                        .map(|(k, v)| Ok((k.clone(), self.vars.fill(v)?)))
                        .collect::<Result<_, String>>()?,
                    cwd: subject::fill_cwd(&self.vars, cwd)?,
                    stdin: StdinMode::Null,
                    // Failpoints go to the subject only.
                    failpoints_var: subject::FAILPOINTS_VAR,
                };
                self.note(format!("spawn {name}: {}", launch.display()));
                let proc = self
                    .spawn(name, &launch, Part::Aux)
                    .map_err(|e| format!("spawning {name}: {e}"))?;
                self.aux.push(proc.0);
                self.monitor.activity(Instant::now());
                Ok(None)
            }
            Step::Wait {
                until,
                process,
                thread,
                syscall,
                request,
                pattern,
                stream,
                path,
                exit,
                timeout_ms,
                ..
            } => {
                let process = process.as_ref().map(|p| self.vars.fill(p)).transpose()?;
                let thread = thread.as_ref().map(|t| self.vars.fill(t)).transpose()?;
                let cond = match until {
                    Until::Blocked => {
                        let names: Vec<String> = syscall
                            .as_ref()
                            .map(|s| s.names().into_iter().map(str::to_string).collect())
                            .unwrap_or_default();
                        let nrs = names
                            .iter()
                            .map(|n| {
                                crate::proc::syscall::number(n)
                                    .ok_or_else(|| format!("unknown syscall {n}"))
                            })
                            .collect::<Result<Vec<u64>, String>>()?;
                        let requests = request
                            .as_ref()
                            .and_then(|r| crate::proc::syscall::ioctl_request_values(r));
                        let call = names
                            .iter()
                            .map(|n| match request {
                                Some(r) if n == "ioctl" => format!("{n}({r})"),
                                _ => n.clone(),
                            })
                            .collect::<Vec<_>>()
                            .join(" or ");
                        let text = format!(
                            "{} of {} blocked in {call}",
                            thread
                                .as_ref()
                                .map_or("a thread".to_string(), |t| format!("thread {t}")),
                            process
                                .as_ref()
                                .map_or("any process".to_string(), |p| format!("process {p}")),
                        );
                        Cond::Blocked {
                            process: None,
                            thread: None,
                            nrs,
                            requests,
                            text,
                        }
                    }
                    Until::Process => Cond::Process(process.clone().unwrap_or_default()),
                    Until::Output => {
                        let p = self.vars.fill(pattern.as_deref().unwrap_or_default())?;
                        Cond::Output(regex::Regex::new(&p).map_err(|e| e.to_string())?, *stream)
                    }
                    Until::Exited => match &process {
                        Some(name) => Cond::AuxExited(name.clone()),
                        None => Cond::SubjectExited,
                    },
                    Until::Path => Cond::Path(PathBuf::from(
                        self.vars.fill(path.as_deref().unwrap_or_default())?,
                    )),
                };
                // The blocked condition borrows names; rebuild it with them.
                let cond = match cond {
                    Cond::Blocked {
                        nrs,
                        requests,
                        text,
                        ..
                    } => Cond::Blocked {
                        process: process.as_deref(),
                        thread: thread.as_deref(),
                        nrs,
                        requests,
                        text,
                    },
                    other => other,
                };
                self.note(format!("wait for {}", cond.describe()));
                let end = self.wait_for(&cond, timeout_ms.map(Duration::from_millis));
                if let (WaitEnd::Met, Some(spec)) = (&end, exit) {
                    let status = match &cond {
                        Cond::AuxExited(name) => self
                            .aux
                            .iter()
                            .find(|p| &p.name == name)
                            .and_then(|p| p.exit),
                        _ => self.subject.as_ref().and_then(|p| p.exit),
                    };
                    if let Some((status, _)) = status {
                        let info = exit_info(status);
                        if !exit_matches(spec, info) {
                            return Ok(Some(WaitEnd::Failed(format!(
                                "{} ended with {info}, expected {}",
                                process.as_deref().unwrap_or("the subject"),
                                describe_exit_spec(spec)
                            ))));
                        }
                    }
                }
                if matches!(end, WaitEnd::Met) {
                    self.note("  condition holds");
                }
                Ok(Some(end))
            }
            Step::Signal {
                signal,
                to,
                process,
                which,
                count,
                interval_ms,
                jitter_ms,
                ..
            } => {
                let sig = parse_signal(signal).ok_or_else(|| format!("unknown signal {signal}"))?;
                let process = process.as_ref().map(|p| self.vars.fill(p)).transpose()?;
                for i in 0..count.unwrap_or(1) {
                    if i > 0 {
                        let jitter = jitter_ms.map_or(0, |j| self.rng.random_range(0..=j));
                        let pause = interval_ms.unwrap_or(0) + jitter;
                        if pause > 0 {
                            self.sleep(Duration::from_millis(pause));
                        }
                    }
                    self.send_signal(sig, *to, process.as_deref(), *which)?;
                }
                self.monitor.activity(Instant::now());
                Ok(None)
            }
        }
    }

    /// A user-requested pause (the `sleep` step, signal intervals), cut short by cancellation.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.engine.cancel.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= end {
                break;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }

    fn send_signal(
        &mut self,
        sig: Signal,
        to: SignalTarget,
        process: Option<&str>,
        which: Which,
    ) -> Result<(), String> {
        let subject_pid = self
            .subject
            .as_ref()
            .map(|p| p.pid)
            .ok_or("the subject is not running")?;
        let targets: Vec<i32> = match to {
            SignalTarget::Subject => vec![subject_pid],
            SignalTarget::Group => {
                let pgid = self.subject_pgid.unwrap_or(subject_pid);
                self.note(format!("send {sig} to process group {pgid}"));
                killpg(Pid::from_raw(pgid), sig)
                    .map_err(|e| format!("killpg({pgid}, {sig}): {e}"))?;
                self.sent_to_subject.insert(sig as i32);
                self.await_delivery(subject_pid, sig);
                return Ok(());
            }
            SignalTarget::Process => {
                let name = process.unwrap_or_default();
                let snap = Snapshot::take(&self.tree.pids(None));
                let mut found: Vec<(u64, i32)> = snap
                    .named(name)
                    .map(|p| (p.stat.start_ticks, p.stat.pid))
                    .collect();
                found.sort_unstable();
                if found.is_empty() {
                    return Err(format!("no process named {name} in the trial"));
                }
                match which {
                    Which::Oldest => vec![found[0].1],
                    Which::Newest => vec![found[found.len() - 1].1],
                    Which::All => found.into_iter().map(|(_, p)| p).collect(),
                }
            }
        };
        for pid in targets {
            self.note(format!("send {sig} to {}", describe_pid(pid)));
            if pid == subject_pid {
                self.sent_to_subject.insert(sig as i32);
            }
            kill(Pid::from_raw(pid), sig).map_err(|e| format!("kill({pid}, {sig}): {e}"))?;
            self.await_delivery(pid, sig);
        }
        Ok(())
    }

    /// Waits until `sig` is no longer pending in `pid` (so the next one is not merged with it),
    /// unless every thread blocks it or the process is stopped; at most until the deadline.
    fn await_delivery(&mut self, pid: i32, sig: Signal) {
        if sig == Signal::SIGKILL {
            return;
        }
        let end = self.deadline;
        loop {
            match procfs::signal_pending(pid, sig as i32) {
                Pending::Delivered | Pending::Gone => return,
                Pending::Blocked => {
                    self.note(format!(
                        "  {sig} stays pending: every thread of {pid} blocks it"
                    ));
                    return;
                }
                Pending::Stopped => {
                    self.note(format!("  {sig} stays pending: {pid} is stopped"));
                    return;
                }
                Pending::Pending if Instant::now() >= end => {
                    self.note(format!("  {sig} still pending in {pid} at the deadline"));
                    return;
                }
                Pending::Pending => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    }

    fn start_subject(&mut self) -> Result<(), String> {
        let launch = subject::subject_launch(self.spec.scenario, &self.vars)?;
        self.note(format!("start {}", launch.display()));
        // Time runs from just before the fork: the subject may run before spawn() returns.
        let start = Instant::now();
        let (proc, stdin, master) = self
            .spawn("subject", &launch, Part::Subject)
            .map_err(|e| format!("starting {}: {e}", launch.program.display()))?;
        self.subject_pgid = Some(proc.pid);
        self.stdin = stdin;
        self.pty_master = master;
        self.start = start;
        self.deadline = self.start + self.spec.scenario.deadline;
        self.monitor = Monitor::new(self.start, self.deadline, self.spec.scenario.quiescence);
        self.subject = Some(proc);
        Ok(())
    }

    fn spawn(
        &mut self,
        name: &str,
        launch: &Launch,
        part: Part,
    ) -> std::io::Result<(Proc, Option<ChildStdin>, Option<fs::File>)> {
        let mut cmd = Command::new(&launch.program);
        cmd.args(&launch.args);
        cmd.env("TMPDIR", &self.vars.tmp);
        cmd.env(MARKER_VAR, self.tree.marker());
        cmd.env(
            "WEDGE_TRIAL_PART",
            if part == Part::Subject {
                "subject"
            } else {
                "aux"
            },
        );
        cmd.env("WEDGE_SEED", self.spec.seed.to_string());
        if part == Part::Subject && !self.failpoints.is_empty() {
            cmd.env(launch.failpoints_var, self.failpoints.join(";"));
        }
        cmd.envs(&launch.env);
        cmd.current_dir(launch.cwd.clone().unwrap_or_else(|| self.vars.work.clone()));
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut pty = None;
        match launch.stdin {
            StdinMode::Pipe => {
                cmd.stdin(Stdio::piped());
            }
            StdinMode::Null => {
                cmd.stdin(Stdio::null());
            }
            StdinMode::Pty => {
                let p = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
                cmd.stdin(Stdio::from(p.slave.try_clone()?));
                pty = Some(p);
            }
        }
        let join = self.tree.join_file(part);
        let cpus = self.spec.cpus.clone();
        let with_tty = pty.is_some();
        // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
        // system calls (open/write/close, setpgid/setsid, ioctl, prctl, sched_setaffinity) on
        // memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(path) = &join {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                    let err = std::io::Error::last_os_error();
                    libc::close(fd);
                    if !ok {
                        return Err(err);
                    }
                }
                if with_tty {
                    if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::setpgid(0, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(cpus) = &cpus {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    for &c in cpus {
                        libc::CPU_SET(c, &mut set);
                    }
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = crate::reaper::spawn_owned(&mut cmd)?;
        let pid = child.id() as i32;
        self.tree.add_root(pid, part);
        let streams = Arc::new(Capture::default());
        if let Some(out) = child.stdout.take() {
            streams.reader(out, Source::Stdout);
        }
        if let Some(err) = child.stderr.take() {
            streams.reader(err, Source::Stderr);
        }
        let stdin = child.stdin.take();
        let master = match pty {
            Some(p) => {
                drop(p.slave);
                let master = fs::File::from(p.master);
                streams.reader(master.try_clone()?, Source::Tty);
                Some(master)
            }
            None => None,
        };
        let pidfd = pidfd_open(pid);
        Ok((
            Proc {
                name: name.to_string(),
                pid,
                child,
                pidfd,
                exit: None,
                streams,
            },
            stdin,
            master,
        ))
    }

    fn cond_holds(&mut self, cond: &Cond<'_>, snap: &Snapshot) -> bool {
        match cond {
            Cond::Blocked {
                process,
                thread,
                nrs,
                requests,
                ..
            } => snap.processes.iter().filter(|p| process.is_none_or(|n| comm_matches(&p.stat.comm, n))).any(|p| {
                p.threads.iter().any(|t| {
                    thread.is_none_or(|n| comm_matches(&t.comm, n))
                        && matches!(t.state, 'S' | 'D')
                        && matches!(&t.syscall, Some(SyscallState::In { nr, args })
                            if nrs.contains(nr)
                                && (*nr != IOCTL || requests.as_ref().is_none_or(|r| r.contains(&(args[1] & 0xffff_ffff)))))
                })
            }),
            Cond::Process(name) => snap.named(name).next().is_some(),
            Cond::Output(re, stream) => self.subject.as_ref().is_some_and(|s| re.is_match(&s.streams.text(*stream))),
            Cond::SubjectExited => self.subject.as_mut().is_some_and(|s| s.poll_exit().is_some()),
            Cond::AuxExited(name) => self.aux.iter_mut().find(|p| &p.name == name).is_some_and(|p| p.poll_exit().is_some()),
            Cond::Path(p) => p.exists(),
        }
    }

    /// Waits until `cond` holds; the tree's quiescence, the deadline, the subject's exit (for
    /// conditions it cannot meet once gone) and `timeout` end the wait otherwise.
    fn wait_for(&mut self, cond: &Cond<'_>, timeout: Option<Duration>) -> WaitEnd {
        let step_end = timeout.map(|t| Instant::now() + t);
        let window = self.spec.scenario.quiescence;
        let tick = (window / 20).clamp(Duration::from_millis(2), Duration::from_millis(10));
        loop {
            if self.engine.cancel.load(Ordering::SeqCst) {
                return WaitEnd::Cancelled;
            }
            let subject_exit = self.subject.as_mut().and_then(Proc::poll_exit);
            let snap = Snapshot::take(&self.tree.pids(None));
            if self.cond_holds(cond, &snap) {
                return WaitEnd::Met;
            }
            // Judge quiescence at the instant the snapshot was taken, so the diagnosis's
            // durations are never shorter than the window.
            let now = snap.taken;
            if let Some((status, _)) = subject_exit
                && !matches!(cond, Cond::AuxExited(_) | Cond::Path(_))
            {
                // Output may still be in flight: check once more when the pipes are drained.
                let drained = self
                    .subject
                    .as_ref()
                    .is_none_or(|s| s.streams.open_readers() == 0);
                if drained
                    || now.saturating_duration_since(subject_exit.map_or(now, |e| e.1))
                        > Duration::from_millis(200)
                {
                    return WaitEnd::Failed(format!(
                        "the subject ended ({}) before {}",
                        exit_info(status),
                        cond.describe()
                    ));
                }
            }
            let output = self
                .subject
                .iter()
                .chain(self.aux.iter())
                .map(|p| p.streams.total())
                .sum();
            if output != self.last_output {
                self.last_output = output;
                self.monitor.activity(now);
            }
            self.monitor.observe(&snap);
            // Reached with the subject gone only for conditions other processes can still meet.
            if self.monitor.quiescent_for_window(now) {
                self.verdict_at = Some(now);
                let reason = format!("quiescent for {} ms", window.as_millis());
                self.note(format!("hang: {reason}"));
                return WaitEnd::Hang(self.monitor.diagnose(&snap, &reason));
            }
            if now >= self.deadline {
                self.verdict_at = Some(now);
                let reason = format!(
                    "deadline of {} ms passed",
                    self.spec.scenario.deadline.as_millis()
                );
                self.note(format!("hang: {reason}"));
                return WaitEnd::Hang(self.monitor.diagnose(&snap, &reason));
            }
            if let Some(end) = step_end
                && now >= end
            {
                return WaitEnd::Failed(format!(
                    "timed out after {} ms waiting for {}",
                    timeout.unwrap_or_default().as_millis(),
                    cond.describe()
                ));
            }
            // Sleep one tick, waking at once if the subject exits.
            let wait = tick.min(self.deadline.saturating_duration_since(now));
            match self.subject.as_ref().and_then(|s| {
                if s.exit.is_none() {
                    s.pidfd.as_ref()
                } else {
                    None
                }
            }) {
                Some(fd) => {
                    let mut fds = [nix::poll::PollFd::new(
                        fd.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
                    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
                }
                None => std::thread::sleep(wait),
            }
        }
    }

    /// Records how the steps ended and, if the subject exited, what it left running.
    fn finish(&mut self, end: WaitEnd, record: &mut TrialRecord) {
        match end {
            WaitEnd::Met => {}
            WaitEnd::Cancelled => {
                record.reason = "cancelled".to_string();
            }
            WaitEnd::Failed(reason) => {
                self.verdict_at.get_or_insert_with(Instant::now);
                record.verdict = Verdict::Fail;
                record.reason = reason;
            }
            WaitEnd::Error(reason) => {
                record.reason = reason;
            }
            WaitEnd::Hang(diag) => {
                record.verdict = Verdict::Hang;
                record.reason = format!("{}: {}", diag.reason, diag.summary);
                record.diagnosis = Some(diag);
            }
        }
        let Some(subject) = self.subject.as_mut() else {
            if record.reason.is_empty() {
                record.reason = "the subject never started".to_string();
            }
            return;
        };
        if let Some((status, at)) = subject.poll_exit() {
            record.exit = Some(exit_info(status));
            if record.verdict == Verdict::Error && record.reason.is_empty() {
                self.verdict_at = Some(at);
            }
            // Anything of the subject's still alive after the linger grace was left behind.
            let grace_end = Instant::now() + self.spec.scenario.linger;
            loop {
                let left = self.tree.pids(Some(Part::Subject));
                if left.is_empty() {
                    break;
                }
                if Instant::now() >= grace_end {
                    record.lingering = left.iter().map(|&p| describe_pid(p)).collect();
                    self.note(format!(
                        "left running after the subject exited: {}",
                        record.lingering.join(", ")
                    ));
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let at = self.verdict_at.unwrap_or_else(Instant::now);
        record.time_to_verdict_ms =
            (at.saturating_duration_since(self.start).as_secs_f64() * 1000.0 * 1000.0).round()
                / 1000.0;
    }

    fn check_output(&self, record: &mut TrialRecord) {
        if record.verdict != Verdict::Error
            || record.exit.is_none()
            || record.expectation.outcome == Outcome::Hang
        {
            return;
        }
        let Some(s) = &self.subject else { return };
        for (pattern, stream, label) in [
            (&record.expectation.stdout, Stream::Stdout, "stdout"),
            (&record.expectation.stderr, Stream::Stderr, "stderr"),
        ] {
            if let Some(p) = pattern
                && let Ok(re) = regex::Regex::new(p)
                && !re.is_match(&s.streams.text(stream))
            {
                record.verdict = Verdict::Fail;
                record.reason = format!("{label} does not match /{p}/");
            }
        }
    }

    /// Settles the verdict and whether the trial met its expectation.
    fn judge(&self, record: &mut TrialRecord) {
        let e = &record.expectation;
        if record.verdict == Verdict::Error
            && let Some(exit) = record.exit
        {
            // The subject exited and no step failed: compare with the expectation.
            let expected_signal = e
                .exit
                .as_ref()
                .is_some_and(|spec| exit.signal.is_some() && exit_matches(spec, exit));
            if let Some(sig) = exit.signal
                && !self.sent_to_subject.contains(&sig)
                && !expected_signal
            {
                record.verdict = Verdict::Crash;
                record.reason = format!("the subject was {exit}, which nobody sent it");
            } else if let Some(spec) = &e.exit
                && e.outcome != Outcome::Hang
                && !exit_matches(spec, exit)
            {
                record.verdict = Verdict::Fail;
                record.reason = format!("ended with {exit}, expected {}", describe_exit_spec(spec));
            } else if let Some(ms) = e.within_ms
                && record.time_to_verdict_ms > ms as f64
            {
                record.verdict = Verdict::Fail;
                record.reason = format!(
                    "ended after {:.0} ms, expected within {ms} ms",
                    record.time_to_verdict_ms
                );
            } else {
                record.verdict = Verdict::Pass;
                record.reason = format!("ended with {exit}");
            }
        }
        if !record.lingering.is_empty() && !e.allow_lingering && record.verdict == Verdict::Pass {
            record.verdict = Verdict::Fail;
            record.reason = format!(
                "left processes running after it exited: {}",
                record.lingering.join(", ")
            );
        }
        if !record.leaks.is_empty() && record.verdict != Verdict::Error {
            record.reason = format!(
                "leaked {} (verdict was {}: {})",
                record.leaks.join(", "),
                record.verdict.as_str(),
                record.reason
            );
            record.verdict = Verdict::Fail;
        }
        record.met = match e.outcome {
            Outcome::Exit => record.verdict == Verdict::Pass,
            Outcome::Hang => {
                record.verdict == Verdict::Hang
                    && e.diagnosis.as_ref().is_none_or(|want| {
                        record
                            .diagnosis
                            .as_ref()
                            .is_some_and(|d| d.summary.contains(want.as_str()))
                    })
            }
            Outcome::Any => record.verdict != Verdict::Error && record.leaks.is_empty(),
        };
        if e.outcome == Outcome::Hang && record.verdict == Verdict::Hang && !record.met {
            record.reason = format!(
                "{} — expected a diagnosis containing \"{}\"",
                record.reason,
                e.diagnosis.clone().unwrap_or_default()
            );
        }
    }
}

/// The record of a cell that cannot run on this host (and why).
pub fn skipped_record(
    engine: &Engine,
    scenario: &Scenario,
    cell: &Cell,
    cell_index: usize,
    expectation: Expectation,
    why: String,
) -> TrialRecord {
    TrialRecord {
        scenario: scenario.name.clone(),
        file: scenario.file.display().to_string(),
        cell: cell.clone(),
        cell_index,
        trial: 0,
        seed: 0,
        trial_id: String::new(),
        verdict: Verdict::Skipped,
        met: false,
        reason: why,
        expectation,
        exit: None,
        time_to_verdict_ms: 0.0,
        started_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        diagnosis: None,
        leaks: Vec::new(),
        lingering: Vec::new(),
        cpus: None,
        log: Vec::new(),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        host: engine.host.clone(),
        wedge_version: crate::VERSION.to_string(),
    }
}

/// Why `cell` cannot run on this host, if it cannot.
pub fn host_cannot_run(engine: &Engine, cell: &Cell) -> Option<String> {
    if let Some(cpus) = cell.get("cpus").and_then(|c| c.parse::<usize>().ok())
        && cpus > engine.host.cpus
    {
        return Some(format!(
            "cell asks for {cpus} CPUs but this host has {}; the VM backend runs such cells",
            engine.host.cpus
        ));
    }
    if let Some(kernel) = cell.get("kernel")
        && kernel != "host"
        && !engine.host.kernel.starts_with(kernel)
    {
        return Some(format!(
            "cell asks for kernel {kernel} but the host runs {}; the VM backend runs other kernels",
            engine.host.kernel
        ));
    }
    None
}

/// Pins for a cell: `Some(k)` CPUs when the cell has a `cpus` axis.
pub fn cpus_wanted(cell: &Cell) -> Option<usize> {
    cell.get("cpus").and_then(|c| c.parse().ok())
}
