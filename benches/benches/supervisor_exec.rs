//! What `wedge-run` costs: per exec under supervision (the supervisor decides every exec), per
//! run (start-up, hand-off, shutdown), and from the command's exit to `wedge-run`'s own (the
//! fixed shutdown: the target ~10 ms p99, with the drain never firing), against the same work
//! without it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wedge_benches::floor::{Arm, Bins, bwrap_usable, exec_loop};
use wedge_benches::release_binary;
use wedge_benches::times::Times;
use wedge_runtime::supervisor::session::DRAIN_EXPIRED;

/// Execs per measured script run: enough that start-up is a small part of the time.
const EXECS: u64 = 200;

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

/// Every arm of the floor comparison (issue 25) in one group, so that they are measured in the
/// same run: the bare loop, the hand-written floor supervisor (with and without reading each
/// exec's arguments), `wedge-run`, and bubblewrap alone against `wedge-run` in bubblewrap.
fn per_exec(c: &mut Criterion) {
    let bins = Bins {
        floor_supervisor: PathBuf::from(env!("CARGO_BIN_EXE_floor_supervisor")),
        wedge_run: release_binary("wedge-run"),
    };
    let script = exec_loop(EXECS);
    let bwrap = bwrap_usable();
    if let Err(why) = &bwrap {
        println!("exec: skipping the bwrap arms, bwrap cannot run here: {why}");
    }
    let mut group = c.benchmark_group("exec");
    group.throughput(Throughput::Elements(EXECS));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for arm in Arm::ALL {
        if arm.needs_bwrap() && bwrap.is_err() {
            continue;
        }
        // The bare loop's id predates the floor arms; renaming it would break report history.
        let id = if arm == Arm::Plain {
            "unsupervised"
        } else {
            arm.name()
        };
        group.bench_function(id, |b| {
            b.iter_custom(|iters| timed(iters, || arm.command(&bins, &script)))
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

fn monotonic_ns() -> u128 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("the clock");
    now.tv_sec() as u128 * 1_000_000_000 + now.tv_nsec() as u128
}

/// Runs `command`, whose last act is `wedge-subject stamp`, to its end: the time from the
/// subject's stamp (taken just before its `_exit`) to this process seeing the command exit.
/// Panics if the fixed session's drain fired: an exit that only came from the drain giving up
/// is the regression this measures, not a slow sample.
fn exit_latency(command: &mut Command) -> Duration {
    let out = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("running the command");
    let seen = monotonic_ns();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{command:?} failed: {}: {stderr}",
        out.status
    );
    assert!(
        !stderr.contains(DRAIN_EXPIRED),
        "{command:?}: the drain fired: {stderr}"
    );
    let stamp: u128 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the subject's stamp");
    Duration::from_nanos(u64::try_from(seen.saturating_sub(stamp)).unwrap_or(u64::MAX))
}

fn exit_to_exit(c: &mut Criterion) {
    let wedge_run = release_binary("wedge-run");
    let subject = release_binary("wedge-subject");
    let mut group = c.benchmark_group("exit");
    group.sample_size(20);
    let direct: Vec<&std::ffi::OsStr> = vec![subject.as_os_str(), "stamp".as_ref()];
    let under = |sandbox: &'static str| {
        let mut argv: Vec<&std::ffi::OsStr> = vec![
            wedge_run.as_os_str(),
            "--sandbox".as_ref(),
            sandbox.as_ref(),
            "--".as_ref(),
        ];
        argv.extend(&direct);
        argv
    };
    // The command run directly is the floor: its own exit and this process's wake-up.
    for (name, argv) in [
        ("stamp, direct", direct.clone()),
        ("stamp, wedge-run --sandbox none", under("none")),
        ("stamp, wedge-run --sandbox bwrap", under("bwrap")),
    ] {
        let mut times = Times::default();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let mut command = Command::new(argv[0]);
                        command.args(&argv[1..]).env("RUST_LOG", "warn");
                        let latency = exit_latency(&mut command);
                        times.push(latency);
                        latency
                    })
                    .sum()
            })
        });
        println!("exit -> {name} exit: {}", times.describe());
    }
    group.finish();
}

criterion_group!(benches, per_exec, per_run, exit_to_exit);
criterion_main!(benches);
