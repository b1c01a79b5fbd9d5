//! `[[steps]]`: the script, turned once at load time into typed [`Action`]s. Each action holds
//! only what its meaning needs, already resolved: a `wait` on a blocked syscall carries the
//! syscall numbers and ioctl request values, a `signal` the signal. The engine executes these
//! actions and never the TOML step they came from.
//!
//! Loading also makes the subject's start explicit: a `start` step is inserted before the first
//! step that needs the subject (or at the end), so the engine never guesses when to start it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::error::StepError;
use super::exit::{parse_signal, validate_exit};
use super::locate::{Locator, ScenarioError, line_col};
use super::matrix::{Axis, CellMatch, cell_match};
use super::placeholders::Strings;
use super::spec::{ExitSpec, SignalTarget, Step, Stream, Until, Which};

/// One step of the plan: what to do, where it is in the file, and in which cells.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedStep {
    pub action: Action,
    /// The step's `line:col` in the file (for the trial log and failure reasons).
    pub at: (usize, usize),
    /// The cells the step runs in (every cell when empty).
    pub only: CellMatch,
}

/// What a step does. Strings may hold `{placeholders}`, filled per trial.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start the subject.
    Start,
    /// Enable a failpoint in the subject (before it starts); with `probability`, the trial's
    /// seed decides whether it is enabled.
    Failpoint {
        name: String,
        action: String,
        probability: Option<f64>,
    },
    /// Sleep `ms` plus a seeded random part of `jitter_ms`.
    Sleep { ms: u64, jitter_ms: Option<u64> },
    /// Write to the subject's stdin.
    Write { data: String },
    /// Close the subject's stdin (on a pty: send end-of-file).
    CloseStdin,
    /// Start another process inside the trial, named for later steps.
    Spawn {
        name: String,
        argv: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: Option<String>,
    },
    /// Run a process inside the trial to its end, within `timeout`, expecting `exit`.
    Run {
        name: String,
        argv: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: Option<String>,
        timeout: Duration,
        exit: ExitSpec,
    },
    /// Wait until a thread (of `process`, named `thread`) is blocked in one of `syscalls`.
    WaitBlocked {
        process: Option<String>,
        thread: Option<String>,
        syscalls: Vec<Syscall>,
        /// Narrows `ioctl` (when it is one of `syscalls`) to these requests.
        ioctl_request: Option<IoctlRequest>,
        timeout: Option<Duration>,
    },
    /// Wait until a process named `process` exists.
    WaitProcess {
        process: String,
        timeout: Option<Duration>,
    },
    /// Wait until the output matches `pattern` (a regex once filled in).
    WaitOutput {
        pattern: String,
        stream: Stream,
        timeout: Option<Duration>,
    },
    /// Wait until the subject (or the spawned process `process`) exits, then check `exit`.
    WaitExit {
        process: Option<String>,
        exit: Option<ExitSpec>,
        timeout: Option<Duration>,
    },
    /// Wait until a file exists at `path`.
    WaitPath {
        path: String,
        timeout: Option<Duration>,
    },
    /// Send `signal` `count` times, `interval_ms` (plus seeded jitter) apart, waiting for each
    /// to be delivered before the next.
    Signal {
        signal: Signal,
        target: Target,
        count: u32,
        interval_ms: u64,
        jitter_ms: Option<u64>,
    },
}

/// A syscall a `wait` names, with its x86_64 number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syscall {
    pub name: String,
    pub nr: u64,
}

/// An ioctl request a `wait` names, with every value it may have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoctlRequest {
    pub name: String,
    pub values: Vec<u64>,
}

/// Which process a signal goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The subject's main process.
    Subject,
    /// The subject's process group.
    Group,
    /// The trial's processes named `name` (which of them, when several).
    Process { name: String, which: Which },
}

/// The steps of a file as a plan, and the strings of each for the placeholder check.
pub(crate) struct Plan<'a> {
    pub steps: Vec<PlannedStep>,
    pub strings: Vec<Strings<'a>>,
}

/// What loading the steps so far has seen.
#[derive(Default)]
struct Seen {
    started: bool,
    spawned: BTreeSet<String>,
}

impl<'a> Plan<'a> {
    /// Checks one step (its `only`, its action) and adds it, with its strings.
    fn push(
        &mut self,
        step: &'a toml::Spanned<Step>,
        axes: &[Axis],
        loc: &Locator<'_>,
        seen: &mut Seen,
    ) -> Result<(), ScenarioError> {
        let span = step.span();
        let at = line_col(loc.source, span.start);
        let err = |e: StepError| loc.error(span.clone(), e.to_string());
        let only = cell_match(step.get_ref().only(), axes, "only").map_err(|e| err(e.into()))?;
        let action = action(step.get_ref(), &only, seen).map_err(err)?;
        self.steps.push(PlannedStep { action, at, only });
        let (texts, argv) = step_strings(step.get_ref());
        self.strings.push(Strings { span, texts, argv });
        Ok(())
    }
}

/// Checks every step and turns the script into a plan with an explicit start.
pub(crate) fn parse<'a>(
    steps: &'a [toml::Spanned<Step>],
    axes: &[Axis],
    loc: &Locator<'_>,
) -> Result<Plan<'a>, ScenarioError> {
    let mut plan = Plan {
        steps: Vec::new(),
        strings: Vec::new(),
    };
    let mut seen = Seen::default();
    let start = |at| PlannedStep {
        action: Action::Start,
        at,
        only: BTreeMap::new(),
    };
    for step in steps {
        let at = line_col(loc.source, step.span().start);
        let needs_start = !matches!(
            step.get_ref(),
            Step::Failpoint { .. } | Step::Sleep { .. } | Step::Start { .. }
        );
        if needs_start && !seen.started {
            plan.steps.push(start(at));
            seen.started = true;
        }
        plan.push(step, axes, loc, &mut seen)?;
    }
    if !seen.started {
        plan.steps
            .push(start(line_col(loc.source, loc.source.len())));
    }
    Ok(plan)
}

fn action(step: &Step, only: &CellMatch, seen: &mut Seen) -> Result<Action, StepError> {
    match step.clone() {
        Step::Start { .. } => {
            if !only.is_empty() {
                return Err(StepError::StartWithOnly);
            }
            if seen.started {
                return Err(StepError::AlreadyStarted);
            }
            seen.started = true;
            Ok(Action::Start)
        }
        Step::Failpoint {
            name,
            action,
            probability,
            ..
        } => {
            if seen.started {
                return Err(StepError::LateFailpoint(name));
            }
            if let Some(p) = probability
                && !(0.0..=1.0).contains(&p)
            {
                return Err(StepError::Probability(p));
            }
            Ok(Action::Failpoint {
                name,
                action,
                probability,
            })
        }
        Step::Wait { .. } => wait(step, seen),
        Step::Signal { .. } => signal(step),
        Step::Spawn {
            name,
            argv,
            env,
            cwd,
            ..
        } => {
            if argv.is_empty() {
                return Err(StepError::EmptyArgv);
            }
            if !seen.spawned.insert(name.clone()) {
                return Err(StepError::SpawnedTwice(name));
            }
            Ok(Action::Spawn {
                name,
                argv,
                env,
                cwd,
            })
        }
        Step::Run { .. } => run(step),
        Step::Write { data, .. } => Ok(Action::Write { data }),
        Step::CloseStdin { .. } => Ok(Action::CloseStdin),
        Step::Sleep { ms, jitter_ms, .. } => Ok(Action::Sleep { ms, jitter_ms }),
    }
}

/// The default bound of a `run` step.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(10);

/// A `run` step: a non-empty argv, a positive bound, a valid exit.
fn run(step: &Step) -> Result<Action, StepError> {
    let Step::Run {
        name,
        argv,
        env,
        cwd,
        timeout_ms,
        exit,
        ..
    } = step.clone()
    else {
        unreachable!("run() is only called for run steps")
    };
    let Some(first) = argv.first() else {
        return Err(StepError::EmptyArgv);
    };
    if timeout_ms == Some(0) {
        return Err(StepError::ZeroTimeout);
    }
    let exit = exit.unwrap_or(ExitSpec::Code(0));
    validate_exit(&exit)?;
    // A program spliced in from an axis (`{runtime...}`) is only known per cell.
    let name = name.unwrap_or_else(|| match first.contains('{') {
        true => "run".to_string(),
        false => first
            .rsplit('/')
            .next()
            .unwrap_or(first.as_str())
            .to_string(),
    });
    Ok(Action::Run {
        name,
        argv,
        env,
        cwd,
        timeout: timeout_ms.map_or(RUN_TIMEOUT, Duration::from_millis),
        exit,
    })
}

/// The steps of `[[teardown]]`: they run once the subject is stopped, so only steps that need
/// no running subject are allowed (`run`, `signal` to named processes, `sleep`).
pub(crate) fn parse_teardown<'a>(
    steps: &'a [toml::Spanned<Step>],
    axes: &[Axis],
    loc: &Locator<'_>,
) -> Result<Plan<'a>, ScenarioError> {
    let mut plan = Plan {
        steps: Vec::new(),
        strings: Vec::new(),
    };
    for step in steps {
        let allowed = match step.get_ref() {
            Step::Run { .. } | Step::Sleep { .. } => true,
            Step::Signal { to, .. } => *to == SignalTarget::Process,
            _ => false,
        };
        if !allowed {
            let why = StepError::NotForTeardown.to_string();
            return Err(loc.error(step.span(), why));
        }
        // Teardown steps are independent: none names a process another one waits for.
        plan.push(step, axes, loc, &mut Seen::default())?;
    }
    Ok(plan)
}

/// A `signal` step, its signal parsed and its target checked.
fn signal(step: &Step) -> Result<Action, StepError> {
    let Step::Signal {
        signal,
        to,
        process,
        which,
        count,
        interval_ms,
        jitter_ms,
        ..
    } = step.clone()
    else {
        unreachable!("signal() is only called with a signal step");
    };
    let Some(signal) = parse_signal(&signal) else {
        return Err(StepError::UnknownSignal(signal));
    };
    let target = match (to, process) {
        (SignalTarget::Process, None) => {
            return Err(StepError::UnnamedProcess);
        }
        (SignalTarget::Process, Some(name)) => Target::Process { name, which },
        (_, Some(_)) => return Err(StepError::ProcessWithoutTarget),
        (SignalTarget::Subject, None) => Target::Subject,
        (SignalTarget::Group, None) => Target::Group,
    };
    if count == Some(0) {
        return Err(StepError::ZeroCount);
    }
    Ok(Action::Signal {
        signal,
        target,
        count: count.unwrap_or(1),
        interval_ms: interval_ms.unwrap_or(0),
        jitter_ms,
    })
}

/// A `wait` step: one action per `until`, with the fields that `until` allows.
fn wait(step: &Step, seen: &Seen) -> Result<Action, StepError> {
    let Step::Wait {
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
    } = step.clone()
    else {
        unreachable!("wait() is only called with a wait step");
    };
    let timeout = timeout_ms.map(Duration::from_millis);
    let action = match until {
        Until::Blocked => {
            let (syscalls, ioctl_request) = blocked_in(syscall.as_ref(), request)?;
            Action::WaitBlocked {
                process: process.clone(),
                thread: thread.clone(),
                syscalls,
                ioctl_request,
                timeout,
            }
        }
        Until::Process => Action::WaitProcess {
            process: process.clone().ok_or(needs("process", "process"))?,
            timeout,
        },
        Until::Output => {
            let pattern = pattern.ok_or(needs("output", "pattern"))?;
            regex::Regex::new(&pattern).map_err(StepError::Pattern)?;
            Action::WaitOutput {
                pattern,
                stream,
                timeout,
            }
        }
        Until::Path => Action::WaitPath {
            path: path.ok_or(needs("path", "path"))?,
            timeout,
        },
        Until::Exited => Action::WaitExit {
            process: process.clone(),
            exit: exit.clone(),
            timeout,
        },
    };
    if thread.is_some() && until != Until::Blocked {
        return Err(StepError::OnlyFor {
            field: "thread",
            applies_to: "until = \"blocked\"",
        });
    }
    if let Some(e) = &exit {
        if until != Until::Exited {
            return Err(StepError::OnlyFor {
                field: "exit",
                applies_to: "until = \"exited\"",
            });
        }
        validate_exit(e)?;
    }
    if until == Until::Exited
        && let Some(p) = &process
        && !seen.spawned.contains(p.as_str())
    {
        return Err(StepError::NotSpawned(p.clone()));
    }
    Ok(action)
}

/// `until = "<until>"` given without `field`.
fn needs(until: &'static str, field: &'static str) -> StepError {
    StepError::Needs { until, field }
}

/// Resolves `syscall` (and ioctl `request`) of a `wait` on a blocked thread, once.
fn blocked_in(
    syscall: Option<&super::spec::Syscalls>,
    request: Option<String>,
) -> Result<(Vec<Syscall>, Option<IoctlRequest>), StepError> {
    let Some(sc) = syscall else {
        return Err(needs("blocked", "syscall"));
    };
    let names = sc.names();
    if names.is_empty() {
        return Err(StepError::NoSyscall);
    }
    let mut syscalls = Vec::new();
    for name in &names {
        let Some(nr) = crate::model::syscall_names::number(name) else {
            return Err(StepError::UnknownSyscall(name.to_string()));
        };
        syscalls.push(Syscall {
            name: name.to_string(),
            nr,
        });
    }
    let Some(req) = request else {
        return Ok((syscalls, None));
    };
    if !names.contains(&"ioctl") {
        return Err(StepError::OnlyFor {
            field: "request",
            applies_to: "syscall = \"ioctl\"",
        });
    }
    let Some(values) = crate::model::syscall_names::ioctl_request_values(&req) else {
        return Err(StepError::UnknownIoctl(req));
    };
    Ok((syscalls, Some(IoctlRequest { name: req, values })))
}

/// Every interpolated string of a step as written (checked even where its action ignores it,
/// e.g. `process` of an output wait, so the files that load stay the same), and apart, the argv
/// elements (where `{AXIS...}` splices a list).
fn step_strings(step: &Step) -> (Vec<&String>, Vec<&String>) {
    let mut out = Vec::new();
    let mut argv_out = Vec::new();
    match step {
        Step::Wait {
            process,
            thread,
            pattern,
            path,
            ..
        } => {
            out.extend(process);
            out.extend(thread);
            out.extend(pattern);
            out.extend(path);
        }
        Step::Signal { process, .. } => out.extend(process),
        Step::Write { data, .. } => out.push(data),
        Step::Failpoint { name, action, .. } => {
            out.push(name);
            out.push(action);
        }
        Step::Spawn { argv, env, cwd, .. } | Step::Run { argv, env, cwd, .. } => {
            argv_out.extend(argv);
            out.extend(env.values());
            out.extend(cwd);
        }
        Step::Start { .. } | Step::CloseStdin { .. } | Step::Sleep { .. } => {}
    }
    (out, argv_out)
}
