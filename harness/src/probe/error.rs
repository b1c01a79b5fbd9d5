//! The probe layer's errors: why a piece of a probe could not be set up (a child, the target
//! carrying the filter, a receiving thread) and why a `--run-one` process's output is not a
//! result. Each keeps its cause as `#[source]`; their text ends up verbatim in a probe's
//! evidence, so it names the call that failed and its errno.

use thiserror::Error;

use crate::model::probe_ids::TokenError;

/// Why a probe's own machinery (forked children, the seccomp target, a receiving thread) failed.
#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("fork: {0}")]
    Fork(#[source] std::io::Error),
    #[error("waitpid {pid}: {source}")]
    Waitpid {
        pid: i32,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("waitid: {0}")]
    Waitid(#[source] nix::errno::Errno),
    #[error("socketpair: {0}")]
    Socketpair(#[source] std::io::Error),
    /// The target's `seccomp(NEW_LISTENER)` failed with this errno (shown by name, `EBUSY`).
    #[error("NEW_LISTENER failed: {:?}", nix::errno::Errno::from_raw(*.0))]
    NewListener(i32),
    #[error("no listener from the target: {0}")]
    NoListener(#[source] ListenerError),
    #[error("reading the target: {0}")]
    ReadTarget(#[source] std::io::Error),
    #[error("the receiving thread died")]
    ReceiverDied,
    #[error("the receiving thread was never seen blocked in NOTIF_RECV")]
    NeverBlocked,
}

/// Why the target's listener did not arrive over its socket.
#[derive(Debug, Error)]
pub enum ListenerError {
    #[error("recvmsg: {0}")]
    Recvmsg(#[source] nix::errno::Errno),
    #[error("the target exited before handing over its listener")]
    TargetExited,
    #[error("the target sent no descriptor")]
    NoDescriptor,
}

/// Why a `--run-one` process's output is not the result asked for.
#[derive(Debug, Error)]
pub enum ResultLineError {
    #[error("the probe printed no result")]
    NoResult,
    #[error("unreadable probe result: {0}")]
    Unreadable(#[source] serde_json::Error),
    #[error("asked for probe {asked}, got a result for {got}")]
    OtherProbe { asked: String, got: String },
    #[error(transparent)]
    Value(#[from] TokenError),
}
