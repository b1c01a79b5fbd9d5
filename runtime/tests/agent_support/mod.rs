//! Shared code of the wedge-agent tests: start an agent in its own process group, talk to it, and
//! kill and reap every process it started when the test ends (pass or fail); a watchdog per test.

#![allow(dead_code)]

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use wedge_runtime::agent::client::{self, Client};
use wedge_runtime::agent::proto::{ExecRequest, HealthRequest};

pub const AGENT: &str = env!("CARGO_BIN_EXE_wedge-agent");

/// Runs a test body on a fresh runtime and fails it (dropping, so cleaning up, everything it holds)
/// if it does not finish within `secs`.
pub fn watchdog<F: Future>(secs: u64, body: F) -> F::Output {
    become_subreaper();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime");
    runtime.block_on(async {
        match tokio::time::timeout(Duration::from_secs(secs), body).await {
            Ok(output) => output,
            Err(_) => panic!("watchdog: the test did not finish within {secs} s"),
        }
    })
}

/// Orphans of an agent killed by a test are reparented to the test process, which reaps them.
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        wedge_runtime::sys::become_child_subreaper().expect("PR_SET_CHILD_SUBREAPER")
    });
}

/// A unique scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("wedge-agent-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `wedge-agent serve`, killed with everything it started when dropped.
pub struct Agent {
    child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
    dir: TempDir,
}

/// How to start an agent.
/// The builder the agent tests run with: `$WEDGE_TEST_AGENT_BUILDER` (`wedge` when unset).
/// `ci/test.sh` runs the agent's tests once with each builder (and each libcontainer release).
pub fn builder() -> String {
    std::env::var("WEDGE_TEST_AGENT_BUILDER").unwrap_or_else(|_| "wedge".into())
}

/// Whether the tests run against youki's libcontainer, either release (see [`builder`]):
/// `libcontainer` (0.5.7) or `libcontainer-latest` (the second build, `wedge-agent-latest`).
pub fn libcontainer() -> bool {
    builder().starts_with("libcontainer")
}

#[derive(Default, Clone)]
pub struct AgentConfig {
    pub strategy: Option<&'static str>,
    pub workers: u32,
    pub failpoints: Option<String>,
    pub env: Vec<(String, String)>,
    /// `serve --zygotes N` (0: the agent's default).
    pub zygotes: u32,
}

impl Agent {
    pub async fn start(config: AgentConfig) -> Agent {
        let dir = TempDir::new(config.strategy.unwrap_or("default"));
        let socket = dir.0.join("agent.sock");
        let log = dir.0.join("agent.log");
        let mut command = Command::new(AGENT);
        command
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--workers")
            .arg(config.workers.max(1).to_string())
            .arg("--state-dir")
            .arg(dir.0.join("state"))
            .arg("--builder")
            .arg(builder());
        if let Some(strategy) = config.strategy {
            command.arg("--strategy").arg(strategy);
        }
        if config.zygotes > 0 {
            command.arg("--zygotes").arg(config.zygotes.to_string());
        }
        command.env_remove("WEDGE_AGENT_FAILPOINTS");
        if let Some(failpoints) = &config.failpoints {
            command.env("WEDGE_AGENT_FAILPOINTS", failpoints);
        }
        for (k, v) in &config.env {
            command.env(k, v);
        }
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("agent log"));
        let child = command.spawn().expect("starting wedge-agent");
        let agent = Agent {
            child,
            socket,
            log,
            dir,
        };
        agent.wait_ready().await;
        agent
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until the agent answers Health (deadline: 20 s).
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut client) = client::connect(&self.socket).await
                && client.health(HealthRequest {}).await.is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not come up; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn client(&self) -> Client {
        client::connect(&self.socket)
            .await
            .expect("connecting to the agent")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Children of the agent whose only thread is blocked in `pause()` (a stalled init process).
    pub fn paused_children(&self) -> Vec<i32> {
        children_of(self.pid())
            .into_iter()
            .filter(|pid| syscall_of(*pid) == Some(libc::SYS_pause))
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let agent = self.pid();
        let tree = descendants(agent);
        let _ = killpg(Pid::from_raw(agent), Signal::SIGKILL);
        for pid in &tree {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
        // The agent's orphans are now ours (we are a subreaper): reap them. In whatever order they
        // become ready: a dying pid-namespace init (libcontainer's container) waits until the
        // zombies of its namespace are reaped, so waiting for it first would wait forever. Other
        // tests' agents are our children too, so only these pids are waited for, polling.
        let me = std::process::id() as i32;
        let mut left: Vec<i32> = tree
            .into_iter()
            .filter(|&pid| parent_of(pid) == Some(me))
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !left.is_empty() && std::time::Instant::now() < deadline {
            left.retain(|&pid| {
                matches!(
                    waitpid(
                        Pid::from_raw(pid),
                        Some(nix::sys::wait::WaitPidFlag::WNOHANG)
                    ),
                    Ok(nix::sys::wait::WaitStatus::StillAlive)
                )
            });
            std::thread::yield_now();
        }
    }
}

fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    Some(after_comm.split(' ').map(str::to_string).collect())
}

/// The parent pid of `pid`, if it exists.
pub fn parent_of(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|state| state != "Z" && state != "X"))
}

/// The syscall the (single-threaded) process `pid` is blocked in.
pub fn syscall_of(pid: i32) -> Option<i64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn all_parents() -> HashMap<i32, i32> {
    let mut parents = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            && let Some(ppid) = parent_of(pid)
        {
            parents.insert(pid, ppid);
        }
    }
    parents
}

pub fn children_of(parent: i32) -> Vec<i32> {
    all_parents()
        .into_iter()
        .filter(|(_, p)| *p == parent)
        .map(|(c, _)| c)
        .collect()
}

/// Every process below `root` (not `root` itself), parents before children.
pub fn descendants(root: i32) -> Vec<i32> {
    let parents = all_parents();
    let mut found = Vec::new();
    let mut seen = HashSet::from([root]);
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (child, _) in parents.iter().filter(|(_, p)| **p == parent) {
            if seen.insert(*child) {
                found.push(*child);
                frontier.push(*child);
            }
        }
    }
    found
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after `secs`.
pub async fn wait_until(secs: u64, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An exec request for `program args...` with a plain PATH.
pub fn request(program: &str, args: &[&str]) -> ExecRequest {
    ExecRequest {
        program: program.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
        cwd: String::new(),
        timeout_ms: 0,
        stdin_closed: false,
    }
}

/// `sh -c SCRIPT sh ARGS...`
pub fn shell(script: &str, args: &[&str]) -> ExecRequest {
    let mut all = vec!["-c", script, "sh"];
    all.extend_from_slice(args);
    request("sh", &all)
}
