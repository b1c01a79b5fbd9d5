//! What an in-flight build has created so far ([`BuildProgress`]), shared between the build and the
//! exec that awaits it, whichever strategy runs the build.

use crate::agent::build::Progress;
use crate::agent::failpoints;
use crate::sync::Mutex;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

/// What an in-flight build has created so far, shared between the build and the exec that awaits it,
/// so a timeout (or a client that went away) can cancel a build that has not started and kill the
/// processes of one that is stuck.
#[derive(Debug, Default)]
pub struct BuildProgress {
    cancelled: AtomicBool,
    /// Processes to kill on cancel: the intermediate until the init exists, then the init.
    pids: Mutex<Vec<i32>>,
    /// Released once the build has cloned (see the `hold-log-lock` failpoint).
    cloned: Mutex<Option<mpsc::Sender<()>>>,
}

impl BuildProgress {
    /// Records a process the build created; kills it at once if the build was already cancelled.
    pub fn record(&self, progress: Progress) {
        let mut pids = self.pids.lock();
        let pid = match progress {
            Progress::Intermediate(pid) => {
                if let Some(release) = self.cloned.lock().take() {
                    let _ = release.send(());
                }
                pid
            }
            Progress::Init(pid) => {
                // This exec reaps the init itself (see `reaper`).
                crate::agent::reaper::track(pid);
                // The intermediate exits on its own now and is reaped by the builder.
                pids.clear();
                pid
            }
        };
        pids.push(pid);
        if self.is_cancelled() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Cancels the build: one that has not started will not, and the processes of one in progress are
    /// killed (which unblocks the builder).
    pub fn cancel(&self) {
        let pids = self.pids.lock();
        self.cancelled.store(true, Ordering::SeqCst);
        for pid in pids.iter() {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }

    /// Whether [`BuildProgress::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// The cancellation flag, as the build checks it before any work.
    pub fn cancelled(&self) -> &AtomicBool {
        &self.cancelled
    }
}

/// Holds the stderr lock on a thread of the agent until the build has cloned (the `hold-log-lock`
/// failpoint); a no-op unless that failpoint fires.
pub(super) struct LogLockHolder(Option<mpsc::Sender<()>>);

impl LogLockHolder {
    pub(super) fn arm(progress: &BuildProgress) -> Self {
        if !failpoints::fires(failpoints::HOLD_LOG_LOCK) {
            return Self(None);
        }
        let (release, released) = mpsc::channel::<()>();
        let (ready, is_ready) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("log-lock-holder".into())
            .spawn(move || {
                let guard = std::io::stderr().lock();
                let _ = ready.send(());
                let _ = released.recv();
                drop(guard);
            });
        if spawned.is_err() || is_ready.recv().is_err() {
            return Self(None);
        }
        *progress.cloned.lock() = Some(release.clone());
        Self(Some(release))
    }
}

impl Drop for LogLockHolder {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            let _ = release.send(());
        }
    }
}
