//! Why a trial phase could not do its part. Every message names what failed and where (a path,
//! a pid, a program, the process's last output line), as the reasons in records always did:
//! a record's reason is one of these, displayed.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::signal::Signal;

use crate::engine::limits::LimitError;
use crate::plan::commands::SubjectError;

/// Why a trial could not be set up (its `error` verdict).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    #[error("cannot create the trial directory {}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create the trial's cgroup: {0}")]
    Tree(#[source] io::Error),
    #[error("cannot limit the trial: {0}")]
    Limit(#[source] LimitError),
}

/// Why the subject could not be started (the trial's `error` verdict).
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error(transparent)]
    Launch(#[from] SubjectError),
    #[error("starting {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Why a step (of `[[steps]]` or `[[teardown]]`) failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    #[error(transparent)]
    Fill(#[from] SubjectError),
    #[error("spawning {name}: {source}")]
    Spawn {
        name: String,
        #[source]
        source: io::Error,
    },
    /// A `run` step's process overran its timeout (`output`: its last line, if any).
    #[error("{name} did not end within {timeout_ms} ms{output}")]
    Overran {
        name: String,
        timeout_ms: u128,
        output: String,
    },
    /// A `run` step's process ended otherwise than expected.
    #[error("{name} ended with {got} where {wanted} was expected{output}")]
    Exit {
        name: String,
        got: String,
        wanted: String,
        output: String,
    },
    #[error("stdin is closed (or not a pipe)")]
    NoStdin,
    #[error("stdin is already closed (or not a pipe)")]
    StdinClosed,
    #[error("writing to stdin: {0}")]
    Write(#[source] io::Error),
    #[error("sending EOF to the terminal: {0}")]
    Eof(#[source] io::Error),
    #[error(transparent)]
    Pattern(#[from] regex::Error),
    #[error("the subject is not running")]
    NotRunning,
    #[error("no process named {0} in the trial")]
    NoProcess(String),
    #[error("killpg({pgid}, {signal}): {source}")]
    Killpg {
        pgid: i32,
        signal: Signal,
        #[source]
        source: Errno,
    },
    #[error("kill({pid}, {signal}): {source}")]
    Kill {
        pid: i32,
        signal: Signal,
        #[source]
        source: Errno,
    },
    /// A teardown step's wait that failed, or wedge could not do its part (why).
    #[error("{0}")]
    Ended(String),
    #[error("cancelled")]
    Cancelled,
    /// A teardown step's wait caught a hang (the diagnosis's summary).
    #[error("hang: {0}")]
    Hang(String),
}
