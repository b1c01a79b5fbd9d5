//! Loom *design model* of worker starvation in `wedge-agent`: where the blocking container build
//! runs (`runtime/src/agent/spawn/mod.rs`) decides whether builds can starve the tokio workers of the
//! very task they wait for.
//!
//! A design model, not a check of the shipped code: `Spawner::spawn` needs tokio, which does not run
//! under loom, so its strategies are re-stated here (`Agent::run_exec`) as which worker slot is held
//! across which wait. What it checks: that design (a build that holds a worker while it waits for a
//! task that needs a worker deadlocks once builds ≥ workers; one on the blocking pool never does),
//! with the real `wedge_core::cwd::in_dir` and `SpawnLock` in the build. What it does not check:
//! that `Spawner::spawn` actually calls the build as re-stated here (a change there is not seen by
//! this model; only the agent's own tests run the real strategies), tokio's own scheduling (work
//! stealing, the LIFO slot, the blocking pool's size), or the zygote.
//!
//! Run with: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p wedge-core
//! --test loom_worker_slots`.
//!
//! What is modelled:
//! - **Worker slots.** The tokio runtime's C worker threads are a counting semaphore of C slots
//!   (loom `Mutex` + `Condvar`). Code that runs on a worker (a task being polled) holds a slot; a
//!   task parked at an `.await` holds none, and needs a slot again to be polled once woken.
//! - **Execs.** Each exec is one loom thread following its `run_exec` task through
//!   `Spawner::spawn`. Its build blocks until an event that only another task produces: a **helper
//!   task**, which must be polled on a worker (hold a slot) to produce it. In the agent this is any
//!   task the blocked build depends on: one that cancels a stuck build (`BuildProgress::cancel`, as
//!   the service's `kill_all` does, kills the build's processes and so ends its wait), or one that
//!   answers the build's handshake. (A timeout in the exec's *own* `select!` cannot fire at all
//!   while an inline build blocks that task's poll; the model covers the cross-task case.) The
//!   model's helper is the main thread; one poll of it answers every build (it needs one free
//!   worker, once).
//! - **Strategies**, as `Spawner::spawn` calls the build:
//!   - `inline`: `run_build` is called inside the async handler, so the build blocks while its task
//!     is being polled: it keeps its slot for the whole wait.
//!   - `blocking-pool`: the task calls `spawn_blocking` and awaits the handle: the build runs on its
//!     own (blocking-pool) thread, holding no slot, while the task is parked; woken, the task takes a
//!     slot again to deliver the result.
//!   - `blocking-pool-std-mutex`: the same, and the build goes through the real
//!     `wedge_core::cwd::in_dir` with the real `SpawnLock` before its wait (the lock is held
//!     only across the cwd section, never across the wait).
//!   - `blocking-pool-async-mutex`: the task awaits the async mutex (parked, no slot), holds it across
//!     the `spawn_blocking` await, and releases it when it is polled again.
//!
//!   (`zygote` hands the build to a helper process and awaits its answer over a socket: for the
//!   worker slots it is the blocking-pool case, with the build outside the slots.)
//!
//! Why it is faithful: the only question is whether a slot is held while the build waits, and that
//! is exactly what separates `run_build(..)` called directly in the `async` block (inline) from
//! `spawn_blocking(..).await` (every blocking-pool strategy). loom explores every order in which the
//! execs and the helper take slots; a deadlock is every thread blocked. With inline builds and
//! builds ≥ slots, loom must find the interleaving where every slot holds a blocked build and the
//! helper can never run (the `inline` hang at `--workers 1`, and at 2 workers with 2 stuck builds);
//! with builds < slots, or with the build outside the slots, no interleaving may deadlock. The
//! deadlocking models run in a child process, because loom aborts the process while unwinding out of
//! a deadlock; their tests assert that loom reported the deadlock, so they fail if it ever stops
//! being found.
#![cfg(loom)]

mod loom_support;

use std::io;
use std::path::Path;

use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use loom_support::{
    expect_loom_deadlock, model, report_stations_on_panic, reset_stations, station,
};
use wedge_core::cwd::{ProcessCwd, SpawnLock, in_dir};

/// Where the build runs (`agent::strategy::Strategy`, minus `zygote`: see the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strategy {
    Inline,
    BlockingPool,
    BlockingPoolStdMutex,
    BlockingPoolAsyncMutex,
}

impl Strategy {
    /// The name on the command line (`--strategy`).
    fn name(self) -> &'static str {
        match self {
            Strategy::Inline => "inline",
            Strategy::BlockingPool => "blocking-pool",
            Strategy::BlockingPoolStdMutex => "blocking-pool-std-mutex",
            Strategy::BlockingPoolAsyncMutex => "blocking-pool-async-mutex",
        }
    }
}

/// The runtime's worker threads: a counting semaphore of slots.
struct Slots {
    free: Mutex<usize>,
    changed: Condvar,
}

impl Slots {
    fn new(count: usize) -> Self {
        Self {
            free: Mutex::new(count),
            changed: Condvar::new(),
        }
    }

    /// A task (of the thread playing `role`) is polled: it needs a worker.
    fn take(&self, role: &str) {
        station(role, "waiting for a worker slot");
        let mut free = self.free.lock().unwrap();
        while *free == 0 {
            free = self.changed.wait(free).unwrap();
        }
        *free -= 1;
        station(role, "polled on a worker");
    }

    /// The task returned `Pending` (or finished): its worker is free.
    fn give_back(&self) {
        *self.free.lock().unwrap() += 1;
        self.changed.notify_one();
    }

    fn free(&self) -> usize {
        *self.free.lock().unwrap()
    }
}

/// What each build blocks on until the helper task produces it (an answer given before the build
/// waits is not lost).
struct Answers {
    given: Mutex<Vec<bool>>,
    changed: Condvar,
}

impl Answers {
    fn new(builds: usize) -> Self {
        Self {
            given: Mutex::new(vec![false; builds]),
            changed: Condvar::new(),
        }
    }

    /// The helper answers every build.
    fn give_all(&self) {
        self.given.lock().unwrap().fill(true);
        self.changed.notify_all();
    }

    /// Build `exec` blocks until it is answered.
    fn wait(&self, exec: usize) {
        let role = format!("build {exec}");
        station(&role, "blocked until answered");
        let mut given = self.given.lock().unwrap();
        while !given[exec] {
            given = self.changed.wait(given).unwrap();
        }
        station(&role, "answered");
    }
}

/// A cwd nobody looks at: the worker-slot model only needs `in_dir`'s locking, not the cwd race
/// (that is `loom_spawn_lock.rs`).
struct Unobserved;

impl ProcessCwd for Unobserved {
    type Saved = ();
    fn save(&self) -> io::Result<()> {
        Ok(())
    }
    fn enter(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }
    fn restore(&self, (): ()) -> io::Result<()> {
        Ok(())
    }
}

struct Agent {
    strategy: Strategy,
    slots: Slots,
    /// What the builds wait for, which only the helper task produces.
    answers: Answers,
    spawn_lock: SpawnLock,
    /// `Spawner::async_lock`.
    async_lock: Mutex<()>,
}

impl Agent {
    /// The blocking build: the cwd section (under the spawn lock for `blocking-pool-std-mutex`), then
    /// the wait that only the helper task can end.
    fn build(&self, exec: usize) {
        let lock = (self.strategy == Strategy::BlockingPoolStdMutex).then_some(&self.spawn_lock);
        in_dir(
            lock,
            &Unobserved,
            Path::new("/state"),
            || {},
            || Ok(()),
            || {},
        )
        .expect("the unobserved cwd cannot fail");
        self.answers.wait(exec);
    }

    /// `spawn_blocking(build)` awaited by a task that holds no slot while it waits.
    fn on_blocking_pool(agent: &Arc<Agent>, exec: usize) {
        let build = {
            let agent = agent.clone();
            thread::spawn(move || agent.build(exec))
        };
        agent.slots.give_back(); // the task is parked on the JoinHandle
        build.join().unwrap();
        agent.slots.take(&exec_role(exec)); // woken: polled again on a worker
    }

    /// The `run_exec` task of one exec, from its first poll to its reply.
    fn run_exec(agent: &Arc<Agent>, exec: usize) {
        let role = exec_role(exec);
        agent.slots.take(&role);
        match agent.strategy {
            Strategy::Inline => agent.build(exec),
            Strategy::BlockingPool | Strategy::BlockingPoolStdMutex => {
                Agent::on_blocking_pool(agent, exec)
            }
            Strategy::BlockingPoolAsyncMutex => {
                agent.slots.give_back(); // parked on `async_lock.lock().await`
                let serialised = agent.async_lock.lock().unwrap();
                agent.slots.take(&role); // woken holding the async mutex
                Agent::on_blocking_pool(agent, exec);
                drop(serialised);
            }
        }
        agent.slots.give_back(); // the reply is sent: the task is done
        station(&role, "replied");
    }
}

/// The station role of exec `exec`'s `run_exec` task.
fn exec_role(exec: usize) -> String {
    format!("exec {exec}")
}

/// `builds` execs on `slots` workers with `strategy`; the main thread is the helper task. Every
/// exec must reply and every slot be free at the end (or loom reports the deadlock).
fn agent_model(strategy: Strategy, slots: usize, builds: usize) {
    reset_stations();
    let agent = Arc::new(Agent {
        strategy,
        slots: Slots::new(slots),
        answers: Answers::new(builds),
        spawn_lock: SpawnLock::new(),
        async_lock: Mutex::new(()),
    });
    let execs: Vec<_> = (0..builds)
        .map(|exec| {
            let agent = agent.clone();
            thread::spawn(move || Agent::run_exec(&agent, exec))
        })
        .collect();
    // The helper task: one poll, on a worker, answers every build.
    agent.slots.take("helper");
    agent.answers.give_all();
    agent.slots.give_back();
    // Every exec replies: an exec that never does leaves the main thread blocked here, and once every
    // thread is blocked, loom reports the deadlock.
    for exec in execs {
        exec.join().unwrap();
    }
    assert_eq!(agent.slots.free(), slots, "a worker slot leaked");
}

/// Inline builds with more slots than builds: the helper always finds a free worker. (Shows the
/// model deadlocks only for the reason under test.)
#[test]
fn design_inline_with_fewer_builds_than_slots_never_deadlocks() {
    model("design/worker-slots/inline/2-slots/1-build", || {
        agent_model(Strategy::Inline, 2, 1)
    });
}

/// Every blocking-pool strategy, with as many builds as slots: no interleaving deadlocks. One test
/// runs the models one after another, so the two heaviest (2 slots, 2 builds: five loom threads)
/// do not compete with each other for the CPUs.
#[test]
fn design_blocking_pool_strategies_never_deadlock() {
    for strategy in [
        Strategy::BlockingPool,
        Strategy::BlockingPoolStdMutex,
        Strategy::BlockingPoolAsyncMutex,
    ] {
        for (slots, builds) in [(1, 1), (2, 2)] {
            model(
                &format!(
                    "design/worker-slots/{}/{slots}-slots/{builds}-builds",
                    strategy.name()
                ),
                move || agent_model(strategy, slots, builds),
            );
        }
    }
}

/// What loom reports for an inline deadlock with `builds` builds: every thread blocked (the main
/// thread, the helper, first).
fn inline_loom_states(builds: usize) -> Vec<&'static str> {
    vec!["Blocked"; 1 + builds]
}

/// One worker, one inline build: the build holds the only worker, the helper never runs.
#[test]
fn design_loom_finds_the_inline_deadlock_with_one_slot_and_one_build() {
    expect_loom_deadlock(
        "design_model_inline_1_slot_1_build",
        &inline_loom_states(1),
        &[
            "build=blocked until answered",
            "exec=polled on a worker",
            "helper=waiting for a worker slot",
        ],
    );
}

/// One worker, two inline builds: one build holds the worker, the other exec and the helper wait
/// for it.
#[test]
fn design_loom_finds_the_inline_deadlock_with_one_slot_and_two_builds() {
    expect_loom_deadlock(
        "design_model_inline_1_slot_2_builds",
        &inline_loom_states(2),
        &[
            "build=blocked until answered",
            "exec=polled on a worker",
            "exec=waiting for a worker slot",
            "helper=waiting for a worker slot",
        ],
    );
}

/// Two workers, two inline builds: both workers blocked in builds.
#[test]
fn design_loom_finds_the_inline_deadlock_with_two_slots_and_two_builds() {
    expect_loom_deadlock(
        "design_model_inline_2_slots_2_builds",
        &inline_loom_states(2),
        &[
            "build=blocked until answered",
            "build=blocked until answered",
            "exec=polled on a worker",
            "exec=polled on a worker",
            "helper=waiting for a worker slot",
        ],
    );
}

#[test]
#[ignore = "deadlocks by design; run through expect_loom_deadlock"]
fn design_model_inline_1_slot_1_build() {
    report_stations_on_panic();
    model("design/worker-slots/inline/1-slot/1-build", || {
        agent_model(Strategy::Inline, 1, 1)
    });
}

#[test]
#[ignore = "deadlocks by design; run through expect_loom_deadlock"]
fn design_model_inline_1_slot_2_builds() {
    report_stations_on_panic();
    model("design/worker-slots/inline/1-slot/2-builds", || {
        agent_model(Strategy::Inline, 1, 2)
    });
}

#[test]
#[ignore = "deadlocks by design; run through expect_loom_deadlock"]
fn design_model_inline_2_slots_2_builds() {
    report_stations_on_panic();
    model("design/worker-slots/inline/2-slots/2-builds", || {
        agent_model(Strategy::Inline, 2, 2)
    });
}
