//! Loom model of the spawn path's cwd critical section: `wedge_core::cwd::in_dir` and
//! `SpawnLock`, unchanged (built against `wedge_core::sync`, so under `--cfg loom` the lock is
//! loom's mutex), driven by two or three builder threads that share one modelled process-global
//! working directory.
//!
//! Run with: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p wedge-core
//! --test loom_spawn_lock`.
//!
//! What is modelled, and why it is faithful:
//! - The process-global cwd is one loom mutex holding the current directory, implementing the
//!   crate's own `ProcessCwd` trait: `save` reads it, `enter` (chdir) and `restore` (fchdir) write
//!   it. Like the kernel's cwd it is shared by every thread of the process, and each access is one
//!   atomic step.
//! - Each builder runs `in_dir(lock, &cwd, own_state_dir, ..)` exactly as `agent::build::build` does;
//!   its operation is the bind of `notify.sock` by relative name, which resolves against whatever the
//!   cwd is at that instant. The model records `(builder, cwd at the bind)`: a bind recorded in
//!   another builder's directory is the `EADDRINUSE` / misplaced-socket race of the `blocking-pool`
//!   strategy.
//! - `Some(&lock)` is the `blocking-pool-std-mutex` strategy (the static spawn lock); `None` is
//!   `blocking-pool` (no lock). The before/after hooks are the failpoints of the real build; they do
//!   nothing here (loom already switches threads at every access to the cwd).
//!
//! With the lock, every interleaving must bind in the builder's own directory and leave the cwd as
//! it was. Without it, loom must find a misplaced bind and a cwd left in a builder's directory;
//! those models fail by design (an assertion panics inside loom), and their tests assert that loom
//! reported exactly that finding, so they fail if the bug ever stops being found.
#![cfg(loom)]

mod loom_support;

use std::io;
use std::path::{Path, PathBuf};

use loom::sync::{Arc, Mutex};
use loom::thread;
use loom_support::{expect_loom_finds, model};
use wedge_core::cwd::{ProcessCwd, SpawnLock, in_dir};

/// The directory the process starts in (the agent's own cwd).
const HOME: &str = "/";

/// What a failing bind assertion says; the tests of the unlocked model look for it.
const MISPLACED: &str = "bound its notify socket outside its own state directory";
/// What a failing restore assertion says.
const NOT_RESTORED: &str = "the process cwd was not restored";

/// The process-global working directory: one value shared by every thread.
#[derive(Debug)]
struct ModelCwd {
    current: Mutex<PathBuf>,
}

impl ModelCwd {
    fn new() -> Self {
        Self {
            current: Mutex::new(PathBuf::from(HOME)),
        }
    }

    /// What a relative name resolves against right now.
    fn current(&self) -> PathBuf {
        self.current.lock().unwrap().clone()
    }
}

impl ProcessCwd for ModelCwd {
    type Saved = PathBuf;

    fn save(&self) -> io::Result<PathBuf> {
        Ok(self.current())
    }

    fn enter(&self, dir: &Path) -> io::Result<()> {
        *self.current.lock().unwrap() = dir.to_path_buf();
        Ok(())
    }

    fn restore(&self, saved: PathBuf) -> io::Result<()> {
        *self.current.lock().unwrap() = saved;
        Ok(())
    }
}

fn state_dir(builder: usize) -> PathBuf {
    PathBuf::from(format!("/state/exec-{builder}"))
}

/// Which property a model asserts.
#[derive(Clone, Copy, Debug)]
enum Check {
    /// Every bind happened in the builder's own directory.
    Binds,
    /// The cwd is back at `HOME` once every builder has finished.
    Restored,
    /// Both.
    Both,
}

/// `builders` builder threads, each binding by relative name inside `in_dir`, with or without the
/// spawn lock; then the checks of `check`.
fn builders_model(builders: usize, locked: bool, check: Check) {
    let cwd = Arc::new(ModelCwd::new());
    let lock = Arc::new(SpawnLock::new());
    // (builder, the cwd its bind resolved against), in bind order.
    let binds = Arc::new(Mutex::new(Vec::<(usize, PathBuf)>::new()));

    let handles: Vec<_> = (0..builders)
        .map(|builder| {
            let (cwd, lock, binds) = (cwd.clone(), lock.clone(), binds.clone());
            thread::spawn(move || {
                let dir = state_dir(builder);
                in_dir(
                    locked.then_some(&*lock),
                    &*cwd,
                    &dir,
                    || {},
                    || {
                        // bind("notify.sock"): the relative name resolves against the cwd now.
                        let at = cwd.current();
                        binds.lock().unwrap().push((builder, at.clone()));
                        Ok(at)
                    },
                    || {},
                )
                .expect("the modelled cwd operations cannot fail")
            })
        })
        .collect();
    let returned: Vec<PathBuf> = handles.into_iter().map(|h| h.join().unwrap()).collect();

    let binds = binds.lock().unwrap().clone();
    assert_eq!(binds.len(), builders, "every builder binds exactly once");
    if matches!(check, Check::Binds | Check::Both) {
        for (builder, at) in &binds {
            assert_eq!(
                *at,
                state_dir(*builder),
                "builder {builder} {MISPLACED} (binds: {binds:?})"
            );
        }
        for (builder, at) in returned.iter().enumerate() {
            assert_eq!(*at, state_dir(builder), "builder {builder} {MISPLACED}");
        }
    }
    if matches!(check, Check::Restored | Check::Both) {
        assert_eq!(
            cwd.current(),
            PathBuf::from(HOME),
            "{NOT_RESTORED} (binds: {binds:?})"
        );
    }
}

#[test]
fn with_the_spawn_lock_two_builders_bind_in_their_own_directories() {
    model("spawn-lock/locked/2-builders", || {
        builders_model(2, true, Check::Both)
    });
}

#[test]
fn with_the_spawn_lock_three_builders_bind_in_their_own_directories() {
    model("spawn-lock/locked/3-builders", || {
        builders_model(3, true, Check::Both)
    });
}

/// Without the lock (the `blocking-pool` strategy) loom must find a bind in another builder's
/// directory; if it ever stops finding it, this fails.
#[test]
fn loom_finds_the_misplaced_bind_without_the_spawn_lock() {
    expect_loom_finds("spawn-lock/unlocked/binds", MISPLACED, || {
        builders_model(2, false, Check::Binds)
    });
}

/// Without the lock loom must also find a builder restoring the cwd to another builder's directory.
#[test]
fn loom_finds_the_unrestored_cwd_without_the_spawn_lock() {
    expect_loom_finds("spawn-lock/unlocked/restore", NOT_RESTORED, || {
        builders_model(2, false, Check::Restored)
    });
}
