//! wedge-agent's exec throughput against what bounds it: 64 concurrent `/bin/true` execs through
//! the service (zygote strategy, 1 and 2 workers, one HTTP/2 connection, as `wedge-agent exec
//! --concurrency 64` sends them) against the same 64 container builds done by a plain program
//! with the agent's own build code and no service (`direct-builds`). The target is the agent at
//! ≥ 0.8× the direct builds' rate; each batch's time is kept so the summary lines give medians
//! and the ratio of one run. A third arm runs two zygotes (`--zygotes 2`, 2 workers): they build
//! two at a time, which the one-at-a-time direct builder does not, so its ratio says what the
//! pool gains a user, not that the service costs less. Needs root (the builds clone into new
//! namespaces).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wedge_benches::release_binary;
use wedge_benches::times::Times;
use wedge_runtime::agent::client::{self, Client};
use wedge_runtime::agent::proto::ExecRequest;

/// Execs per batch, as in the measurement.
const EXECS: u64 = 64;

/// How long a fresh agent may take to answer.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A `wedge-agent serve` of this bench's own, killed (with everything it started) on drop.
struct Agent {
    child: Child,
    dir: PathBuf,
    client: Client,
}

impl Agent {
    fn start(runtime: &tokio::runtime::Runtime, workers: u32, zygotes: u32, dir: &Path) -> Agent {
        let socket = dir.join("agent.sock");
        let child = Command::new(release_binary("wedge-agent"))
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .args(["--strategy", "zygote", "--workers", &workers.to_string()])
            .args(["--zygotes", &zygotes.to_string()])
            .arg("--state-dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting wedge-agent");
        let mut agent = Agent {
            child,
            dir: dir.to_path_buf(),
            client: runtime.block_on(Self::connect(&socket)),
        };
        // One exec before measuring: the zygote and the connection are warm.
        agent.batch(runtime, 1);
        agent
    }

    /// Connects once the agent answers a health check (its socket exists and it serves).
    async fn connect(socket: &Path) -> Client {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(mut c) = client::connect(socket).await
                && c.health(wedge_runtime::agent::proto::HealthRequest {})
                    .await
                    .is_ok()
            {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "wedge-agent did not answer on {} within {READY_WITHIN:?}",
                socket.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `n` concurrent `/bin/true` execs; panics unless every one exited 0.
    fn batch(&mut self, runtime: &tokio::runtime::Runtime, n: u64) -> Duration {
        let request = ExecRequest {
            program: "/bin/true".into(),
            timeout_ms: 10_000,
            ..ExecRequest::default()
        };
        runtime.block_on(async {
            let start = Instant::now();
            let copies: Vec<_> = (0..n)
                .map(|_| {
                    let (c, r) = (self.client.clone(), request.clone());
                    tokio::spawn(async move { client::run(&c, r, Vec::new()).await })
                })
                .collect();
            for copy in copies {
                let outcome = copy.await.expect("the exec task").expect("the exec");
                assert!(outcome.success(), "an exec failed: {:?}", outcome.status);
            }
            start.elapsed()
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // The agent's group holds the zygote and any intermediate; each init is pid 1 of its own
        // pid namespace and session, and dies with its namespace once its parent agent is gone.
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A scratch directory of this bench's own under the system's temp directory.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wedge-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the scratch directory");
    dir
}

/// `rounds` rounds of [`EXECS`] direct builds, timed by `direct-builds` itself (so its own
/// start-up is left out, as the agent's is).
fn direct(rounds: u64, root: &Path) -> Duration {
    let out = Command::new(release_binary("direct-builds"))
        .args([EXECS.to_string(), rounds.to_string()])
        .arg(root)
        .stdin(Stdio::null())
        .output()
        .expect("running direct-builds");
    assert!(
        out.status.success(),
        "direct-builds failed: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let ns: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("direct-builds prints nanoseconds");
    Duration::from_nanos(ns)
}

fn rate(times: &Times) -> f64 {
    times
        .quantile(0.5)
        .map_or(f64::NAN, |ms| EXECS as f64 / (ms / 1000.0))
}

fn agent_vs_direct(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the client's runtime");
    let mut group = c.benchmark_group("agent_exec");
    group.throughput(Throughput::Elements(EXECS));
    group.sample_size(20);
    let root = scratch("direct-builds");
    let mut direct_times = Times::default();
    group.bench_function("64 builds, direct", |b| {
        b.iter_custom(|iters| {
            let d = direct(iters, &root);
            direct_times.push(d / iters as u32);
            d
        })
    });
    let _ = std::fs::remove_dir_all(&root);
    let mut summary = Vec::new();
    for (workers, zygotes) in [(1, 1), (2, 1), (2, 2)] {
        let mut agent = Agent::start(&runtime, workers, zygotes, &scratch("agent"));
        let mut times = Times::default();
        let arm = match zygotes {
            1 => format!("zygote, {workers} workers"),
            n => format!("{n} zygotes, {workers} workers"),
        };
        group.bench_function(format!("64 execs, {arm}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let d = agent.batch(&runtime, EXECS);
                        times.push(d);
                        d
                    })
                    .sum()
            })
        });
        summary.push((arm, times));
    }
    group.finish();
    println!(
        "direct builds: {} per {EXECS}: {:.0} builds/s",
        direct_times.describe(),
        rate(&direct_times)
    );
    for (arm, times) in summary {
        println!(
            "agent, {arm}: {} per {EXECS}: {:.0} execs/s, {:.2}x the direct rate (target >= 0.8x)",
            times.describe(),
            rate(&times),
            rate(&times) / rate(&direct_times)
        );
    }
}

criterion_group!(benches, agent_vs_direct);
criterion_main!(benches);
