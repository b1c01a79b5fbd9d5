//! What the session does with the signals it receives.
//!
//! The first SIGINT, SIGTERM or SIGHUP is forwarded to the sandboxed command, so it can clean up
//! like any program would. The second and every later one SIGKILLs the sandbox and begins
//! shutdown: a user pressing Ctrl-C twice means it. SIGWINCH is forwarded and never counted, so
//! resizing a terminal never escalates anything.

use nix::sys::signal::Signal;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGWINCH};
use signal_hook::iterator::Signals;

use crate::mutation::{Mutation, active};
use crate::sync::{Arc, Mutex};
use crate::sys::PidFd;

/// The signals the session handles.
pub const HANDLED: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGWINCH];

/// What to do with one received signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Pass it on to the command.
    Forward(Signal),
    /// SIGKILL the sandbox and begin shutdown.
    KillAndShutdown,
    /// Not one of ours.
    Ignore,
}

/// Counts terminating signals; see the module documentation.
#[derive(Debug, Default, Clone)]
pub struct Escalation {
    terminating: usize,
}

impl Escalation {
    pub fn on(&mut self, signal: i32) -> Action {
        let Ok(signal) = Signal::try_from(signal) else {
            return Action::Ignore;
        };
        match signal {
            Signal::SIGWINCH => Action::Forward(signal),
            Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP => {
                self.terminating += 1;
                if self.terminating == 1 || active(Mutation::SignalEscalation) {
                    Action::Forward(signal)
                } else {
                    Action::KillAndShutdown
                }
            }
            _ => Action::Ignore,
        }
    }

    /// Terminating signals received so far.
    pub fn count(&self) -> usize {
        self.terminating
    }
}

/// The processes signals go to, filled in as the session learns them.
#[derive(Debug, Default)]
pub struct Targets {
    /// The session's direct child: bubblewrap, or the command itself without a sandbox.
    pub sandbox: Option<PidFd>,
    /// The command, once the shim has handed over (in a bwrap sandbox it is bwrap's grandchild).
    pub command: Option<PidFd>,
}

/// Starts the thread that handles [`HANDLED`] for the rest of the process's life.
/// `shutdown` is called on every escalation.
pub fn spawn_forwarder<F>(targets: Arc<Mutex<Targets>>, shutdown: F) -> std::io::Result<()>
where
    F: Fn() + Send + 'static,
{
    let mut signals = Signals::new(HANDLED)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut escalation = Escalation::default();
            for signal in signals.forever() {
                let action = escalation.on(signal);
                let targets = targets.lock();
                match action {
                    Action::Forward(signal) => {
                        tracing::info!(?signal, "forwarding to the command");
                        if let Some(target) = targets.command.as_ref().or(targets.sandbox.as_ref())
                        {
                            let _ = target.signal(signal);
                        }
                    }
                    Action::KillAndShutdown => {
                        tracing::warn!(
                            count = escalation.count(),
                            "repeated signal: killing the sandbox, shutting down"
                        );
                        for target in [&targets.sandbox, &targets.command].into_iter().flatten() {
                            let _ = target.signal(Signal::SIGKILL);
                        }
                        drop(targets);
                        shutdown();
                    }
                    Action::Ignore => {}
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_terminating_signal_forwards_later_ones_escalate() {
        let mut e = Escalation::default();
        assert_eq!(e.on(SIGINT), Action::Forward(Signal::SIGINT));
        assert_eq!(e.on(SIGTERM), Action::KillAndShutdown);
        assert_eq!(e.on(SIGHUP), Action::KillAndShutdown);
        assert_eq!(e.count(), 3);
    }

    #[test]
    fn sigwinch_is_forwarded_and_never_counted() {
        let mut e = Escalation::default();
        for _ in 0..5 {
            assert_eq!(e.on(SIGWINCH), Action::Forward(Signal::SIGWINCH));
        }
        assert_eq!(e.on(SIGHUP), Action::Forward(Signal::SIGHUP));
        assert_eq!(e.on(SIGWINCH), Action::Forward(Signal::SIGWINCH));
        assert_eq!(e.on(SIGINT), Action::KillAndShutdown);
        assert_eq!(e.count(), 2);
    }

    #[test]
    fn other_signals_are_ignored() {
        let mut e = Escalation::default();
        assert_eq!(e.on(libc::SIGUSR1), Action::Ignore);
        assert_eq!(e.on(9999), Action::Ignore);
        assert_eq!(e.count(), 0);
    }
}
