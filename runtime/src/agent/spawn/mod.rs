//! The five spawn strategies: where [`build::build`] is called from. The build code is the same for
//! all; what differs is which thread blocks in it, and what it holds meanwhile.
//!
//! - this file: [`Strategy`] and the [`Spawner`] that runs builds with one;
//! - [`progress`]: [`BuildProgress`], what an in-flight build has created (so it can be cancelled);
//! - [`cleanup`]: reaping and discarding what a build left behind;
//! - [`zygote`]: the single-threaded helper process of the `zygote` strategy.
//!
//! The imports point one way: this file uses the three others, `zygote` uses `progress` and
//! `cleanup`, and those two use only the build.

pub mod cleanup;
pub mod progress;
pub mod zygote;

pub use cleanup::{discard, discard_failure, reap, try_reap};
pub use progress::BuildProgress;

use super::build::cwd::SpawnLock;
use super::build::{self, BuildError, BuildFailure, BuildSpec, Built};
use crate::mutation::{Mutation, active};
use progress::LogLockHolder;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use zygote::Zygote;

/// The process-wide spawn lock of the `blocking-pool-std-mutex` strategy. (Lazily built: the lock is
/// wedge-core's, written to be loom-checkable, and loom's mutex has no `const` constructor.)
static SPAWN_LOCK: LazyLock<SpawnLock> = LazyLock::new(SpawnLock::new);

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

/// Runs builds with one strategy.
pub struct Spawner {
    strategy: Strategy,
    async_lock: tokio::sync::Mutex<()>,
    zygotes: Vec<Zygote>,
}

impl Spawner {
    /// A spawner for `strategy`; `zygotes` must be non-empty exactly for [`Strategy::Zygote`].
    pub fn new(strategy: Strategy, zygotes: Vec<Zygote>) -> Self {
        assert_eq!(
            strategy == Strategy::Zygote,
            !zygotes.is_empty(),
            "the zygote strategy needs a zygote, and only it"
        );
        Self {
            strategy,
            async_lock: tokio::sync::Mutex::new(()),
            zygotes,
        }
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Whether builds can work: false once a zygote died (the execs sent to it would fail).
    pub fn is_healthy(&self) -> bool {
        self.zygotes.iter().all(Zygote::is_alive)
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
                    let lock = (!active(Mutation::StdSpawnLock)).then(|| &*SPAWN_LOCK);
                    on_blocking_pool(spec, lock, progress).await
                }
                Strategy::Zygote if active(Mutation::Zygote) => {
                    on_blocking_pool(spec, Some(&*SPAWN_LOCK), progress).await
                }
                Strategy::Zygote => {
                    // The one with the fewest builds sent and not yet answered; ties go to the
                    // first, so one zygote sees every exec that comes alone.
                    let zygote = this
                        .zygotes
                        .iter()
                        .min_by_key(|z| z.waiting())
                        .expect("checked in Spawner::new");
                    zygote.build(spec, progress).await
                }
            }
        }
    }
}

/// Builds running in this process right now (on a worker or the blocking pool; a zygote's builds
/// run in the zygote and are not counted).
static IN_PROCESS_BUILDS: AtomicUsize = AtomicUsize::new(0);

/// How many builds are running in this process: what the runtime's shutdown would wait for.
pub fn builds_in_process() -> usize {
    IN_PROCESS_BUILDS.load(Ordering::SeqCst)
}

/// Counts one in-process build for as long as it lives (also when it unwinds).
struct InProcessBuild;

impl InProcessBuild {
    fn start() -> Self {
        IN_PROCESS_BUILDS.fetch_add(1, Ordering::SeqCst);
        InProcessBuild
    }
}

impl Drop for InProcessBuild {
    fn drop(&mut self) {
        IN_PROCESS_BUILDS.fetch_sub(1, Ordering::SeqCst);
    }
}

fn run_build(
    spec: &BuildSpec,
    lock: Option<&SpawnLock>,
    progress: &BuildProgress,
) -> Result<Built, BuildFailure> {
    let _counted = InProcessBuild::start();
    build::build(spec, lock, progress.cancelled(), &mut |p| {
        progress.record(p)
    })
}

async fn on_blocking_pool(
    spec: BuildSpec,
    lock: Option<&'static SpawnLock>,
    progress: Arc<BuildProgress>,
) -> Result<Built, BuildFailure> {
    if active(Mutation::SpawnBlocking) {
        return run_build(&spec, lock, &progress);
    }
    tokio::task::spawn_blocking(move || run_build(&spec, lock, &progress))
        .await
        .unwrap_or_else(|e| Err(BuildError::Failed(format!("the build thread failed: {e}")).into()))
}
