//! The spawn strategies under forced interleavings and stalls (needs the `failpoints` feature): the
//! pre-fix strategies are caught, the fixes hold.

#![cfg(all(feature = "failpoints", not(loom)))]

mod agent_support;

use agent_support::{Agent, AgentConfig, alive, request, wait_until, watchdog};
use std::time::Duration;
use wedge_runtime::agent::client::{self, Client, Outcome};
use wedge_runtime::agent::proto::{ExecRequest, HealthRequest};

fn config(strategy: &'static str, failpoints: &str) -> AgentConfig {
    AgentConfig {
        strategy: Some(strategy),
        workers: 1,
        failpoints: Some(failpoints.to_string()),
        ..AgentConfig::default()
    }
}

fn with_timeout(mut req: ExecRequest, ms: u64) -> ExecRequest {
    req.timeout_ms = ms;
    req
}

/// Starts an exec whose build the `stall` failpoint stalls, and waits (by /proc) until its init
/// process is stuck in pause().
async fn start_stalled_build(
    agent: &Agent,
    client: &Client,
    timeout_ms: u64,
) -> (i32, tokio::task::JoinHandle<Result<Outcome, tonic::Status>>) {
    let client = client.clone();
    let stalled = tokio::spawn(async move {
        client::run(
            &client,
            with_timeout(request("true", &[]), timeout_ms),
            Vec::new(),
        )
        .await
    });
    let mut paused = Vec::new();
    wait_until(20, "an init process is stalled in pause()", || {
        paused = agent.paused_children();
        !paused.is_empty()
    })
    .await;
    (paused[0], stalled)
}

#[test]
fn inline_a_stalled_build_freezes_health_and_every_other_exec() {
    watchdog(60, async {
        let agent = Agent::start(config("inline", "agent::build::stall=1*return")).await;
        let client = agent.client().await;
        let (_init, _stalled) = start_stalled_build(&agent, &client, 0).await;
        // The only worker thread is blocked inside the build: nothing else is served.
        let mut health_client = client.clone();
        let health = tokio::time::timeout(
            Duration::from_secs(1),
            health_client.health(HealthRequest {}),
        );
        assert!(
            health.await.is_err(),
            "Health answered while the inline build was stalled"
        );
        let other = client::run(&client, request("true", &[]), Vec::new());
        assert!(
            tokio::time::timeout(Duration::from_secs(1), other)
                .await
                .is_err(),
            "another exec completed while the inline build was stalled"
        );
    });
}

/// With every strategy but `inline`, Health answers and other execs complete while a build is stalled.
/// `blocking-pool` and `blocking-pool-std-mutex` build in parallel, so the other exec completes while
/// the stall lasts; `blocking-pool-async-mutex` and `zygote` build one at a time, so it completes once
/// the stalled exec's timeout has killed the stuck build (which must report `timed_out`).
fn other_strategies_keep_answering(strategy: &'static str, builds_in_parallel: bool) {
    watchdog(60, async {
        let agent = Agent::start(config(strategy, "agent::build::stall=1*return")).await;
        let client = agent.client().await;
        let timeout_ms = if builds_in_parallel { 30_000 } else { 1_500 };
        let (init, stalled) = start_stalled_build(&agent, &client, timeout_ms).await;
        let mut health_client = client.clone();
        let health = tokio::time::timeout(
            Duration::from_secs(5),
            health_client.health(HealthRequest {}),
        )
        .await
        .expect("Health must answer while a build is stalled")
        .expect("health")
        .into_inner();
        assert_eq!(health.strategy, strategy);
        assert_eq!(health.running, 1);
        let other = client::run(&client, request("echo", &["other"]), Vec::new())
            .await
            .expect("other exec");
        assert_eq!(other.status.exit_code, Some(0), "{:?}", other.status);
        assert_eq!(other.stdout, b"other\n");
        if builds_in_parallel {
            assert!(alive(init), "the stalled build should still be stalled");
            assert!(!stalled.is_finished());
        } else {
            let stalled = stalled.await.expect("task").expect("stalled exec");
            assert!(stalled.status.timed_out, "{:?}", stalled.status);
            assert!(
                stalled.status.error.contains("during the build"),
                "{:?}",
                stalled.status
            );
            wait_until(10, "the stuck init process is gone", || !alive(init)).await;
        }
    });
}

#[test]
fn blocking_pool_keeps_answering_while_a_build_is_stalled() {
    other_strategies_keep_answering("blocking-pool", true);
}

#[test]
fn blocking_pool_std_mutex_keeps_answering_while_a_build_is_stalled() {
    other_strategies_keep_answering("blocking-pool-std-mutex", true);
}

#[test]
fn blocking_pool_async_mutex_keeps_answering_while_a_build_is_stalled() {
    other_strategies_keep_answering("blocking-pool-async-mutex", false);
}

#[test]
fn zygote_keeps_answering_while_a_build_is_stalled() {
    other_strategies_keep_answering("zygote", false);
}

/// `--zygotes 2` builds two execs side by side: each zygote's first build stalls (a failpoint's
/// count is each zygote's own), and both are stalled at once, which one zygote, building one at a
/// time, can never show. Health counts both.
#[test]
fn two_zygotes_build_side_by_side() {
    watchdog(60, async {
        let agent = Agent::start(AgentConfig {
            zygotes: 2,
            ..config("zygote", "agent::build::stall=1*return")
        })
        .await;
        let client = agent.client().await;
        let execs: Vec<_> = (0..2)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move {
                    client::run(
                        &client,
                        with_timeout(request("true", &[]), 30_000),
                        Vec::new(),
                    )
                    .await
                })
            })
            .collect();
        wait_until(20, "two init processes stalled in pause() at once", || {
            agent.paused_children().len() == 2
        })
        .await;
        let mut health_client = client.clone();
        let health = health_client
            .health(HealthRequest {})
            .await
            .expect("health")
            .into_inner();
        assert_eq!(health.running, 2);
        assert!(execs.iter().all(|e| !e.is_finished()));
    });
}

/// Two builds forced into the cwd window at once (the rendezvous failpoint between `chdir` and `bind`).
async fn two_builds_in_the_cwd_window(
    strategy: &'static str,
    wait_ms: u64,
) -> Vec<Result<Outcome, tonic::Status>> {
    // Both builds enter their directories before either binds, and both bind before either changes
    // back: the binds happen while the process cwd is the directory entered last.
    let failpoints = format!(
        "agent::cwd::before-bind=rendezvous(2,{wait_ms});agent::cwd::after-bind=rendezvous(2,{wait_ms})"
    );
    let agent = Agent::start(config(strategy, &failpoints)).await;
    let client = agent.client().await;
    let run = || {
        client::run(
            &client,
            with_timeout(request("true", &[]), 20_000),
            Vec::new(),
        )
    };
    let (a, b) = tokio::join!(run(), run());
    vec![a, b]
}

fn describe(results: &[Result<Outcome, tonic::Status>]) -> String {
    results
        .iter()
        .map(|r| match r {
            Ok(o) => format!("ok {:?}", o.status),
            Err(e) => format!("error {:?}: {}", e.code(), e.message()),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn blocking_pool_cwd_race_puts_a_notify_socket_in_the_wrong_directory() {
    watchdog(60, async {
        let results = two_builds_in_the_cwd_window("blocking-pool", 10_000).await;
        let all_ok = results
            .iter()
            .all(|r| r.as_ref().is_ok_and(Outcome::success));
        assert!(
            !all_ok,
            "both builds succeeded despite sharing the cwd:\n{}",
            describe(&results)
        );
        let notify_errors = results
            .iter()
            .filter(|r| {
                r.as_ref()
                    .is_err_and(|e| e.message().contains("notify socket"))
            })
            .count();
        assert!(
            notify_errors >= 1,
            "expected a notify-socket bind or connect failure:\n{}",
            describe(&results)
        );
    });
}

fn cwd_window_is_safe(strategy: &'static str) {
    watchdog(60, async {
        let results = two_builds_in_the_cwd_window(strategy, 500).await;
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().is_ok_and(Outcome::success)),
            "{strategy}: a build failed:\n{}",
            describe(&results)
        );
    });
}

#[test]
fn blocking_pool_std_mutex_never_races_on_the_cwd() {
    cwd_window_is_safe("blocking-pool-std-mutex");
}

#[test]
fn zygote_never_races_on_the_cwd() {
    cwd_window_is_safe("zygote");
}

#[test]
fn blocking_pool_async_mutex_never_races_on_the_cwd() {
    cwd_window_is_safe("blocking-pool-async-mutex");
}

/// A thread of the agent holds the stderr lock across `clone3`: the in-process build's intermediate,
/// which logs, blocks forever on it and only the exec's timeout ends the build. The zygote clones in
/// another, single-threaded process, so the same lock held in the agent cannot affect it.
#[test]
fn a_log_lock_held_across_clone3_hangs_in_process_builds_but_not_the_zygote() {
    watchdog(60, async {
        let hold = "agent::build::hold-log-lock=1*return";
        let agent = Agent::start(config("blocking-pool-std-mutex", hold)).await;
        let client = agent.client().await;
        let hung = client::run(
            &client,
            with_timeout(request("true", &[]), 1_500),
            Vec::new(),
        )
        .await;
        let hung = hung.expect("exec");
        assert!(hung.status.timed_out, "{:?}", hung.status);
        assert!(
            hung.status.error.contains("during the build"),
            "{:?}",
            hung.status
        );
        // The failpoint fired once: the next build works.
        let next = client::run(&client, request("true", &[]), Vec::new())
            .await
            .expect("exec");
        assert!(next.success(), "{:?}", next.status);
        drop(agent);

        let agent = Agent::start(config("zygote", hold)).await;
        let client = agent.client().await;
        let fine = client::run(
            &client,
            with_timeout(request("true", &[]), 10_000),
            Vec::new(),
        )
        .await;
        let fine = fine.expect("exec");
        assert!(fine.success(), "{:?}", fine.status);
    });
}

/// An init process the agent never heard of (its intermediate died before reporting it) is reaped by
/// the agent's reaper once it exits, instead of staying a zombie.
#[test]
fn an_orphaned_init_process_is_reaped() {
    watchdog(60, async {
        let agent = Agent::start(config(
            "blocking-pool-std-mutex",
            "agent::build::lose-init=1*return",
        ))
        .await;
        let client = agent.client().await;
        let lost = client::run(&client, request("true", &[]), Vec::new()).await;
        let err = lost.expect_err("the build lost its init process");
        assert!(
            err.message().contains("before reporting the init process"),
            "{err:?}"
        );
        let zombie_inits = || {
            agent_support::children_of(agent.pid())
                .into_iter()
                .filter(|pid| {
                    let status =
                        std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                    status.contains("State:\tZ")
                        && status
                            .lines()
                            .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1"))
                })
                .count()
        };
        // The orphan exits once its handshake fails and is a zombie until the reaper's second scan.
        wait_until(15, "the orphaned init process is a zombie", || {
            zombie_inits() == 1
        })
        .await;
        wait_until(15, "the orphaned init process is reaped", || {
            zombie_inits() == 0
        })
        .await;
        let next = client::run(&client, request("true", &[]), Vec::new())
            .await
            .expect("exec");
        assert!(next.success(), "{:?}", next.status);
    });
}
