//! One trial's result, and `trials.jsonl`: appended and flushed per trial, read back by reports.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::cell::Cell;
use crate::model::diagnosis::Diagnosis;
use crate::model::error::RecordError;
use crate::model::scenario::Expectation;

/// What happened in a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The subject finished and met the exit/output expectations.
    Pass,
    /// The subject finished but missed an expectation, a step failed, or something leaked.
    Fail,
    /// The tree was quiescent for the window, or the deadline passed.
    Hang,
    /// The subject died of a signal nobody sent it.
    Crash,
    /// wedge could not run the trial (e.g. the subject binary is missing).
    Error,
    /// The cell cannot run here (e.g. it asks for more CPUs than the host has).
    Skipped,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Hang => "hang",
            Verdict::Crash => "crash",
            Verdict::Error => "error",
            Verdict::Skipped => "skipped",
        }
    }
}

/// A process a step started, as the record shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spawned {
    pub name: String,
    /// How it ended; `None` if wedge killed it at the end of the trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout_tail: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr_tail: String,
}

impl Spawned {
    /// `client: exit 1, stderr: "…last line…"`, for failure lines.
    pub fn summary(&self) -> String {
        let how = match self.exit {
            Some(ExitInfo { code: Some(c), .. }) => format!("exit {c}"),
            Some(ExitInfo {
                signal: Some(s), ..
            }) => format!("signal {s}"),
            _ => "killed at the end of the trial".to_string(),
        };
        let last = |t: &str| t.trim_end().lines().last().unwrap_or("").to_string();
        let mut out = format!("{}: {how}", self.name);
        for (stream, tail) in [("stderr", &self.stderr_tail), ("stdout", &self.stdout_tail)] {
            let l = last(tail);
            if !l.is_empty() {
                out.push_str(&format!(", {stream}: {l:?}"));
                break;
            }
        }
        out
    }
}

/// How the subject ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit {c}"),
            (None, Some(s)) => {
                let name = nix::sys::signal::Signal::try_from(s)
                    .map_or_else(|_| format!("{s}"), |s| s.as_str().to_string());
                write!(f, "killed by {name}")
            }
            (None, None) => write!(f, "unknown"),
        }
    }
}

/// The machine a trial ran on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub kernel: String,
    pub cpus: usize,
    pub isolation: String,
    /// `host`, or `vm` for a trial that ran inside a guest (whose kernel and CPUs the fields
    /// above then are).
    #[serde(default = "host_backend")]
    pub backend: String,
    /// How a guest's code ran: `kvm` or `tcg` (none on the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
}

fn host_backend() -> String {
    "host".to_string()
}

/// One line of `trials.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub scenario: String,
    pub file: String,
    pub cell: Cell,
    /// The cell's position in its scenario's matrix (keeps report order stable).
    #[serde(default)]
    pub cell_index: usize,
    pub trial: u32,
    pub seed: u64,
    /// The trial's unique id: its cgroup and temp directory names and the value of
    /// `WEDGE_TRIAL_ID` in its processes' environment.
    #[serde(default)]
    pub trial_id: String,
    pub verdict: Verdict,
    /// Whether the trial met its cell's expectation.
    pub met: bool,
    /// Why the verdict (and `met`) are what they are.
    pub reason: String,
    /// Why a trial that did not pass was lost: the name of the scenario's first `[[classify]]`
    /// entry its evidence matches, else `other`. None for a trial that passed, and for every
    /// trial of a scenario that classifies nothing (and in records older than classes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<String>,
    pub expectation: Expectation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    /// From the subject's start to the verdict.
    pub time_to_verdict_ms: f64,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Diagnosis>,
    /// Processes, mounts or temp files left behind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaks: Vec<String>,
    /// Processes still alive when the subject exited (killed by wedge afterwards).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lingering: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout_tail: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr_tail: String,
    /// The processes the steps started (clients, teardown commands): how each ended and the
    /// tails of its output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spawned: Vec<Spawned>,
    pub host: Host,
    pub wedge_version: String,
    /// The shard of a `--shard I/N` run this trial was part of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardMark>,
    /// The boot of a trial that ran (or was to run) in a VM; none for a host trial and in
    /// records written before VM facts were typed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmRun>,
}

impl TrialRecord {
    /// Whether the trial counts as passed in the reports' pass-rate table: for a measured-only
    /// cell (`outcome = "any"`) a `pass` verdict, else meeting the cell's expectation (a pass
    /// for `exit`, a caught hang for `hang`).
    pub fn passed(&self) -> bool {
        match self.expectation.outcome {
            crate::model::scenario::Outcome::Any => self.verdict == Verdict::Pass,
            _ => self.met,
        }
    }

    /// Whether the trial ran and did not pass: the trials `[[classify]]` puts in classes.
    pub fn lost(&self) -> bool {
        self.verdict != Verdict::Skipped && !self.passed()
    }
    /// A record of trial 0 of `cell` of scenario `s` on a 2-CPU 6.18 host, for unit tests of
    /// what reads records (stats, reports, classes); the rest of it empty.
    #[cfg(test)]
    pub fn sample(
        s: &crate::model::scenario::Scenario,
        cell: Cell,
        verdict: Verdict,
        met: bool,
    ) -> TrialRecord {
        TrialRecord {
            scenario: s.name.clone(),
            file: "t.toml".into(),
            expectation: s.expectation(&cell, "6.18.0"),
            cell,
            cell_index: 0,
            trial: 0,
            seed: 1,
            trial_id: String::new(),
            verdict,
            met,
            reason: String::new(),
            loss: None,
            exit: None,
            time_to_verdict_ms: 1.0,
            started_at: String::new(),
            diagnosis: None,
            leaks: vec![],
            lingering: vec![],
            cpus: None,
            log: vec![],
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            spawned: vec![],
            host: Host {
                kernel: "6.18.0".into(),
                cpus: 2,
                isolation: "cgroup2".into(),
                backend: "host".into(),
                accel: None,
            },
            wedge_version: "0".into(),
            shard: None,
            vm: None,
        }
    }
}

/// What a VM trial's boot showed, as facts rather than log lines: the reports read kernel splats
/// from here, whatever the trial's verdict.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VmRun {
    /// The kernel as the plan named it (a name from `kernels.toml`, or a bzImage path).
    pub kernel: String,
    /// `uname -r` in the guest, once it greeted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The guest's vCPUs.
    pub cpus: usize,
    /// How the guest's code ran: `kvm` or `tcg`.
    pub accel: String,
    /// From QEMU's start to the guest's greeting; none when it never greeted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hello_ms: Option<f64>,
    /// The factor the trial's time bounds were scaled by in this guest.
    pub time_scale: u32,
    /// Kernel splats the console showed during the boot, up to this record, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub splats: Vec<String>,
}

/// Which slice of a sharded plan a record came from, so that merged results can tell when a
/// slice is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMark {
    /// `I` of `--shard I/N`.
    pub index: usize,
    /// `N`.
    pub count: usize,
    /// The cells of the whole (unsharded) plan.
    pub plan_cells: usize,
}

/// Appends records to `trials.jsonl`, one line each, flushed as it goes.
#[derive(Debug)]
pub struct JsonlWriter {
    file: File,
}

impl JsonlWriter {
    pub fn open(path: &Path) -> std::io::Result<JsonlWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonlWriter { file })
    }

    pub fn append(&mut self, record: &TrialRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // One write(2) per record: once it returns, the line survives wedge crashing or being
        // killed (it is in the kernel's page cache).
        self.file.write_all(&line)?;
        self.file.flush()
    }
}

/// Reads every record of a `trials.jsonl`. A torn last line (a crash mid-write) is skipped;
/// any other bad line is an error with its line number.
pub fn read_jsonl(path: &Path) -> Result<Vec<TrialRecord>, RecordError> {
    let io = |source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(io)?;
    let mut records = Vec::new();
    let last = lines.len();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<TrialRecord>(line) {
            Ok(r) => records.push(r),
            Err(_) if i + 1 == last => {
                tracing::warn!("{}:{}: skipping a torn last line", path.display(), i + 1);
            }
            Err(source) => {
                return Err(RecordError::BadLine {
                    path: path.to_path_buf(),
                    line: i + 1,
                    source,
                });
            }
        }
    }
    Ok(records)
}
