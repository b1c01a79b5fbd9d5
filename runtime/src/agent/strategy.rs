//! The five spawn strategies: where [`build::build`] is called from. The build code is the same for all.

use super::build::{self, BuildError, BuildFailure, BuildSpec, Built, Progress};
use super::cwd::{SPAWN_LOCK, SpawnLock};
use super::failpoints;
use super::sys;
use super::zygote::Zygote;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

/// Where the blocking container build runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Strategy {
    /// Directly inside the async handler, on a runtime worker thread (the original bug: with one
    /// worker, a slow or stuck build stops the whole service).
    Inline,
    /// `spawn_blocking` without any lock (exposes the race on the process-global cwd).
    BlockingPool,
    /// `spawn_blocking` behind a `tokio::sync::Mutex` held across the await (builds one at a time).
    BlockingPoolAsyncMutex,
    /// `spawn_blocking`, with a static `std::sync::Mutex` around the cwd critical section.
    BlockingPoolStdMutex,
    /// A single-threaded helper process forked before the runtime performs every build.
    Zygote,
}

impl Strategy {
    /// The default of `wedge-agent serve` (chosen from measurements: see the agent README).
    pub const DEFAULT: Strategy = Strategy::Zygote;

    /// Every strategy, in the order of the README.
    pub const ALL: [Strategy; 5] = [
        Strategy::Inline,
        Strategy::BlockingPool,
        Strategy::BlockingPoolAsyncMutex,
        Strategy::BlockingPoolStdMutex,
        Strategy::Zygote,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Inline => "inline",
            Strategy::BlockingPool => "blocking-pool",
            Strategy::BlockingPoolAsyncMutex => "blocking-pool-async-mutex",
            Strategy::BlockingPoolStdMutex => "blocking-pool-std-mutex",
            Strategy::Zygote => "zygote",
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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
        let mut pids = self.pids.lock().unwrap_or_else(|p| p.into_inner());
        let pid = match progress {
            Progress::Intermediate(pid) => {
                if let Some(release) = self.cloned.lock().unwrap_or_else(|p| p.into_inner()).take()
                {
                    let _ = release.send(());
                }
                pid
            }
            Progress::Init(pid) => {
                // This exec reaps the init itself (see `reaper`).
                super::reaper::track(pid);
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
        let pids = self.pids.lock().unwrap_or_else(|p| p.into_inner());
        self.cancelled.store(true, Ordering::SeqCst);
        for pid in pids.iter() {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }

    /// Whether [`BuildProgress::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// Holds the stderr lock on a thread of the agent until the build has cloned (the `hold-log-lock`
/// failpoint); a no-op unless that failpoint fires.
struct LogLockHolder(Option<mpsc::Sender<()>>);

impl LogLockHolder {
    fn arm(progress: &BuildProgress) -> Self {
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
        *progress.cloned.lock().unwrap_or_else(|p| p.into_inner()) = Some(release.clone());
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

/// Runs builds with one strategy.
pub struct Spawner {
    strategy: Strategy,
    async_lock: tokio::sync::Mutex<()>,
    zygote: Option<Zygote>,
}

impl Spawner {
    /// A spawner for `strategy`; `zygote` must be given exactly for [`Strategy::Zygote`].
    pub fn new(strategy: Strategy, zygote: Option<Zygote>) -> Self {
        assert_eq!(
            strategy == Strategy::Zygote,
            zygote.is_some(),
            "the zygote strategy needs a zygote, and only it"
        );
        Self {
            strategy,
            async_lock: tokio::sync::Mutex::new(()),
            zygote,
        }
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Whether builds can work: false once the zygote died.
    pub fn is_healthy(&self) -> bool {
        self.zygote.as_ref().is_none_or(Zygote::is_alive)
    }

    /// Builds and starts `spec`. The returned future owns everything it needs.
    pub fn spawn(
        self: &Arc<Self>,
        spec: BuildSpec,
        progress: Arc<BuildProgress>,
    ) -> impl Future<Output = Result<Built, BuildFailure>> + Send + 'static {
        let this = Arc::clone(self);
        async move {
            let _holder = LogLockHolder::arm(&progress);
            match this.strategy {
                Strategy::Inline => run_build(&spec, None, &progress),
                Strategy::BlockingPool => on_blocking_pool(spec, None, progress).await,
                Strategy::BlockingPoolAsyncMutex => {
                    let _serialised = this.async_lock.lock().await;
                    on_blocking_pool(spec, None, progress).await
                }
                Strategy::BlockingPoolStdMutex => {
                    on_blocking_pool(spec, Some(&SPAWN_LOCK), progress).await
                }
                Strategy::Zygote => {
                    let zygote = this.zygote.as_ref().expect("checked in Spawner::new");
                    zygote.build(spec, progress).await
                }
            }
        }
    }
}

fn run_build(
    spec: &BuildSpec,
    lock: Option<&SpawnLock>,
    progress: &BuildProgress,
) -> Result<Built, BuildFailure> {
    build::build(spec, lock, &progress.cancelled, &mut |p| progress.record(p))
}

async fn on_blocking_pool(
    spec: BuildSpec,
    lock: Option<&'static SpawnLock>,
    progress: Arc<BuildProgress>,
) -> Result<Built, BuildFailure> {
    tokio::task::spawn_blocking(move || run_build(&spec, lock, &progress))
        .await
        .unwrap_or_else(|e| Err(BuildError::Failed(format!("the build thread failed: {e}")).into()))
}

/// Waits for (reaps) the process of `pidfd`, a child of this process. Blocks until it has exited.
pub fn reap(pidfd: &OwnedFd) -> nix::Result<nix::sys::wait::WaitStatus> {
    loop {
        match waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED) {
            Err(nix::Error::EINTR) => continue,
            other => return other,
        }
    }
}

/// Kills a built command nobody waits for any more (its whole pid namespace) and reaps it. Blocking.
pub fn discard(built: Built) {
    let _ = killpg(Pid::from_raw(built.pid), Signal::SIGKILL);
    let _ = sys::pidfd_send_signal(built.pidfd.as_fd(), Signal::SIGKILL);
    let _ = reap(&built.pidfd);
}

/// Reaps what a failed build left behind (an init process it killed). Blocking.
pub fn discard_failure(failure: &BuildFailure) {
    if let Some(orphan) = &failure.orphan {
        let _ = sys::pidfd_send_signal(orphan.as_fd(), Signal::SIGKILL);
        let _ = reap(orphan);
    }
}
