//! What `wedge-run` costs: per exec under supervision (the supervisor decides every exec), and
//! per run (start-up, hand-off, shutdown), against the same work without it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wedge_benches::release_binary;

/// Execs per measured script run: enough that start-up is a small part of the time.
const EXECS: u64 = 200;

fn script() -> String {
    format!("i=0; while [ $i -lt {EXECS} ]; do /bin/true; i=$((i+1)); done")
}

fn run(command: &mut Command) {
    let status = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running the command");
    assert!(status.success(), "{command:?} failed: {status}");
}

fn timed(iters: u64, mut make: impl FnMut() -> Command) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        run(&mut make());
    }
    start.elapsed()
}

fn per_exec(c: &mut Criterion) {
    let wedge_run = release_binary("wedge-run");
    let script = script();
    let mut group = c.benchmark_group("exec");
    group.throughput(Throughput::Elements(EXECS));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("unsupervised", |b| {
        b.iter_custom(|iters| {
            timed(iters, || {
                let mut c = Command::new("sh");
                c.args(["-c", &script]);
                c
            })
        })
    });
    for sandbox in ["none", "bwrap"] {
        group.bench_function(format!("wedge-run --sandbox {sandbox}"), |b| {
            b.iter_custom(|iters| {
                timed(iters, || {
                    let mut c = Command::new(&wedge_run);
                    c.args(["--sandbox", sandbox, "--", "sh", "-c", &script])
                        .env("RUST_LOG", "warn");
                    c
                })
            })
        });
    }
    group.finish();
}

fn per_run(c: &mut Criterion) {
    let wedge_run = release_binary("wedge-run");
    let mut group = c.benchmark_group("run");
    group.sample_size(20);
    group.bench_function("true", |b| {
        b.iter_custom(|iters| timed(iters, || Command::new("/bin/true")))
    });
    for sandbox in ["none", "bwrap"] {
        group.bench_function(format!("wedge-run --sandbox {sandbox} -- true"), |b| {
            b.iter_custom(|iters| {
                timed(iters, || {
                    let mut c = Command::new(&wedge_run);
                    c.args(["--sandbox", sandbox, "--", "/bin/true"])
                        .env("RUST_LOG", "warn");
                    c
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, per_exec, per_run);
criterion_main!(benches);
