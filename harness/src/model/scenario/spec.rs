//! The scenario file format as written in TOML (see `scenarios/README.md`), as serde reads it.
//! Only the loader in this module reads these types; it turns them into the plan the engine runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::model::diagnosis::HangClass;

pub use super::exit::ExitSpec;

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    #[serde(default)]
    pub scenario: ScenarioHeader,
    pub subject: Spanned<SubjectSpec>,
    #[serde(default)]
    pub matrix: Option<Spanned<toml::Table>>,
    #[serde(default)]
    pub steps: Vec<Spanned<Step>>,
    /// Steps that run after the subject is stopped and before the leak checks, on every verdict.
    #[serde(default)]
    pub teardown: Vec<Spanned<Step>>,
    #[serde(default)]
    pub expect: Option<Spanned<ExpectSpec>>,
    /// `[[classify]]`: the named classes a lost trial is put in, first match wins.
    #[serde(default)]
    pub classify: Vec<Spanned<ClassifySpec>>,
}

/// `[scenario]`: name, trial counts, timing.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ScenarioHeader {
    /// Defaults to the file name without `.toml`.
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    /// Trials per cell (default 10).
    pub trials: Option<u32>,
    /// Base seed (default 0); each trial's seed derives from it, the scenario, cell and trial index.
    pub seed: Option<u64>,
    /// Per-trial deadline in milliseconds (default 30000).
    pub deadline_ms: Option<u64>,
    /// Quiescence window in milliseconds (default 1000); 0 turns early hang verdicts off.
    pub quiescence_ms: Option<u64>,
    /// Whose quiescence calls a hang (default `trial`).
    pub quiescence_of: Option<QuiescenceOf>,
    /// How long processes may outlive the subject before they count as left behind (default 1000).
    pub linger_ms: Option<u64>,
    /// How a trial's processes are contained (default `pid-namespace`).
    pub isolation: Option<Isolation>,
    /// The trial cgroup's `pids.max` (default [`crate::model::limit_spec::DEFAULT_PIDS_MAX`]).
    pub pids_max: Option<u64>,
    /// The trial cgroup's memory limit: bytes, or a string such as `"64M"` (default: none).
    pub memory_max: Option<toml::Value>,
    /// Axis values whose cells run only when asked for: `{ builder = ["libcontainer"] }` (a
    /// `--cell` filter on the axis, or `wedge run --full`).
    pub opt_in: Option<toml::Spanned<toml::Table>>,
    /// How trials perturb the subject's scheduling: `"off"` (default) or `"rr"`.
    pub chaos: Option<String>,
}

/// Whose quiescence calls a hang before the deadline.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum QuiescenceOf {
    /// Every process of the trial: the subject's tree and the processes the steps spawned.
    #[default]
    Trial,
    /// The subject's tree only: its threads, their timers and its output. The spawned processes
    /// (clients waiting on the subject with their own timeouts) are still diagnosed, but neither
    /// their timeouts nor their output keep a frozen subject from being called hung. For
    /// scenarios whose spawned processes only wait on the subject: a subject that waits on one of
    /// them instead can be called hung while that one is still working.
    Subject,
}

/// The isolation domain of a trial: where every process it starts runs. Both keep the promise
/// that nothing a trial starts survives it; they differ in what the subject sees.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// One pid namespace (and `/proc`) of the trial's own, whose pid 1 is wedge's init, for the
    /// subject and every process the steps start: nothing can leave it, and killing its init
    /// ends everything at once.
    #[default]
    PidNamespace,
    /// The host's pid namespace, contained by the trial's cgroups and a subreaper, as a CI job
    /// runs a runtime (for runtimes that refuse to run inside another sandbox, e.g. firejail).
    Cgroup,
}

impl Isolation {
    /// The name as scenarios spell it.
    pub fn name(self) -> &'static str {
        match self {
            Isolation::PidNamespace => "pid-namespace",
            Isolation::Cgroup => "cgroup",
        }
    }
}

/// How the subject's standard input is connected.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StdinMode {
    /// A pipe wedge writes to (`write` / `close-stdin` steps).
    #[default]
    Pipe,
    /// `/dev/null`.
    Null,
    /// A pseudo-terminal that is the subject's controlling terminal, with the subject in its
    /// foreground process group.
    Pty,
}

/// `[subject]`: what each trial starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SubjectSpec {
    /// Any program: `argv[0]` is looked up in wedge's binary directory, then `PATH`.
    Command {
        argv: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        cwd: Option<String>,
        #[serde(default)]
        stdin: StdinMode,
    },
    /// `wedge-run [--policy FILE] [--sandbox S] [--variant V] [--drain-ms MS] -- COMMAND...`.
    WedgeRun {
        command: Vec<String>,
        policy: Option<String>,
        sandbox: Option<String>,
        variant: Option<String>,
        drain_ms: Option<String>,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        cwd: Option<String>,
        #[serde(default)]
        stdin: StdinMode,
    },
    /// `wedge-agent serve --socket PATH [--workers N] [--strategy S] [--builder B]`.
    WedgeAgent {
        socket: Option<String>,
        workers: Option<String>,
        strategy: Option<String>,
        builder: Option<String>,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        cwd: Option<String>,
        #[serde(default)]
        stdin: StdinMode,
    },
}

/// Which process a signal goes to.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SignalTarget {
    /// The subject's main process.
    #[default]
    Subject,
    /// The subject's process group.
    Group,
    /// A process of the trial found by name (`process`).
    Process,
}

/// Which of several processes with the same name a step means.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Which {
    /// The one that started first (the outermost, e.g. the parent `bwrap`).
    #[default]
    Oldest,
    /// The one that started last.
    Newest,
    /// Every one.
    All,
}

/// What a `wait` step waits for.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Until {
    /// A thread (of `process`, named `thread`) is blocked in `syscall` (ioctl `request`).
    Blocked,
    /// A process named `process` exists.
    Process,
    /// The output matches `pattern`.
    Output,
    /// The subject (or the spawned process `process`) exited.
    Exited,
    /// A file exists at `path`.
    Path,
}

/// Which output a pattern is matched against.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Either stream (and the terminal, for `stdin = "pty"`).
    #[default]
    Any,
}

/// `only = { AXIS = VALUE | [VALUES] }`: the cells a step runs in (every cell when empty).
pub type Only = BTreeMap<String, toml::Value>;

/// One syscall name, or several alternatives.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Syscalls {
    One(String),
    Any(Vec<String>),
}

impl Syscalls {
    pub fn names(&self) -> Vec<&str> {
        match self {
            Syscalls::One(s) => vec![s.as_str()],
            Syscalls::Any(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// One step of the script. Every step may carry `only` to run in some cells only.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "do", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// Start the subject (implicit before the first step that needs it).
    Start {
        #[serde(default)]
        only: Only,
    },
    /// Wait until a condition holds.
    Wait {
        until: Until,
        process: Option<String>,
        thread: Option<String>,
        syscall: Option<Syscalls>,
        request: Option<String>,
        pattern: Option<String>,
        #[serde(default)]
        stream: Stream,
        path: Option<String>,
        exit: Option<ExitSpec>,
        timeout_ms: Option<u64>,
        #[serde(default)]
        only: Only,
    },
    /// Send a signal `count` times, waiting for each to be delivered before the next.
    Signal {
        signal: String,
        #[serde(default)]
        to: SignalTarget,
        process: Option<String>,
        #[serde(default)]
        which: Which,
        count: Option<u32>,
        interval_ms: Option<u64>,
        jitter_ms: Option<u64>,
        #[serde(default)]
        only: Only,
    },
    /// Write to the subject's stdin.
    Write {
        data: String,
        #[serde(default)]
        only: Only,
    },
    /// Close the subject's stdin (on a pty: send end-of-file).
    CloseStdin {
        #[serde(default)]
        only: Only,
    },
    /// Sleep `ms` plus a seeded random part of `jitter_ms`.
    Sleep {
        ms: u64,
        jitter_ms: Option<u64>,
        #[serde(default)]
        only: Only,
    },
    /// Enable a failpoint in the subject (`FAILPOINTS`, the fail crate's syntax, or
    /// `WEDGE_AGENT_FAILPOINTS` for a wedge-agent subject); with
    /// `probability`, the trial's seed decides whether it is enabled. Must come before `start`.
    Failpoint {
        name: String,
        action: String,
        probability: Option<f64>,
        #[serde(default)]
        only: Only,
    },
    /// Start another process inside the trial (e.g. a client), named for later steps.
    Spawn {
        name: String,
        argv: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        cwd: Option<String>,
        #[serde(default)]
        only: Only,
    },
    /// Run a process inside the trial to its end: the step fails if it does not exit within
    /// `timeout_ms` (default 10000) or exits otherwise than `exit` (default 0).
    Run {
        name: Option<String>,
        argv: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        cwd: Option<String>,
        timeout_ms: Option<u64>,
        exit: Option<ExitSpec>,
        #[serde(default)]
        only: Only,
    },
}

/// The subject's expected outcome.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It finishes and meets the exit/output expectations.
    #[default]
    Exit,
    /// wedge catches it hanging (the expectation for pre-fix variants).
    Hang,
    /// Anything: the cell is only measured, not gated.
    Any,
}

/// `[expect]` and each `[[expect.when]]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    pub outcome: Option<Outcome>,
    pub exit: Option<ExitSpec>,
    pub within_ms: Option<u64>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    /// A pattern that must NOT occur in stderr (e.g. a fix's "drain expired" marker).
    pub stderr_forbid: Option<String>,
    pub diagnosis: Option<String>,
    /// A regex the hang diagnosis must match (located, so a bad one is reported at its key).
    pub diagnosis_regex: Option<Spanned<String>>,
    /// The class the hang must have (located, so one outside a hang expectation is reported at
    /// its key).
    pub hang_class: Option<Spanned<HangClass>>,
    pub min_rate: Option<f64>,
    pub allow_lingering: Option<bool>,
    /// Processes that may outlive the subject: a comm or an argv glob each.
    pub allow_leftover_processes: Option<Vec<String>>,
    /// Leftover paths (globs, with placeholders) that do not fail the trial.
    pub allow_leftover_paths: Option<Vec<String>>,
    #[serde(default)]
    pub when: Vec<Spanned<WhenSpec>>,
}

/// A per-cell override: applies to cells whose axes match `cell` and, with `kernel`, when the
/// running kernel satisfies the comparison (e.g. `">= 6.11"`), and with `probe`, when every
/// named kernel probe gave the value (e.g. `{ recv_after_users_exit = "blocks" }`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WhenSpec {
    #[serde(default)]
    pub cell: BTreeMap<String, toml::Value>,
    pub kernel: Option<String>,
    #[serde(default)]
    pub probe: BTreeMap<String, String>,
    pub outcome: Option<Outcome>,
    pub exit: Option<ExitSpec>,
    pub within_ms: Option<u64>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    /// A pattern that must NOT occur in stderr (e.g. a fix's "drain expired" marker).
    pub stderr_forbid: Option<String>,
    pub diagnosis: Option<String>,
    /// A regex the hang diagnosis must match.
    pub diagnosis_regex: Option<Spanned<String>>,
    /// The class the hang must have.
    pub hang_class: Option<Spanned<HangClass>>,
    pub min_rate: Option<f64>,
    pub allow_lingering: Option<bool>,
    /// Processes that may outlive the subject: a comm or an argv glob each.
    pub allow_leftover_processes: Option<Vec<String>>,
    /// Leftover paths (globs, with placeholders) that do not fail the trial.
    pub allow_leftover_paths: Option<Vec<String>>,
}

/// `[[classify]]`: a named class of lost trials and the evidence that puts a trial in it. Every
/// condition given must hold; at least one of `stderr`, `stdout`, `diagnosis` and `verdict` must
/// be given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifySpec {
    /// The class's name in records and reports, unique within the file.
    pub name: Spanned<String>,
    /// A regex over the captured stderr of the subject and of the processes the steps started.
    pub stderr: Option<Spanned<String>>,
    /// A regex over their captured stdout.
    pub stdout: Option<Spanned<String>>,
    /// A regex over the hang diagnosis's text (a trial without one does not match).
    pub diagnosis: Option<Spanned<String>>,
    /// Only trials with one of these verdicts (`pass`, `fail`, `hang`, `crash`, `error`).
    pub verdict: Option<Spanned<Vec<Spanned<String>>>>,
    /// Only these cells (`{ AXIS = VALUE | [VALUES] }`, as `[[expect.when]]`'s `cell`).
    pub cell: Option<Spanned<BTreeMap<String, toml::Value>>>,
}

impl Step {
    /// The step's `only` map.
    pub fn only(&self) -> &Only {
        match self {
            Step::Start { only }
            | Step::CloseStdin { only }
            | Step::Wait { only, .. }
            | Step::Signal { only, .. }
            | Step::Write { only, .. }
            | Step::Sleep { only, .. }
            | Step::Failpoint { only, .. }
            | Step::Spawn { only, .. }
            | Step::Run { only, .. } => only,
        }
    }
}
