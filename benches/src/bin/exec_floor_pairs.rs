//! The side-by-side report of issue 25: what an exec costs under `wedge-run` against the floor
//! (the hand-written `floor_supervisor`), as medians of alternating rounds. Each round runs every
//! arm once (in an order that rotates from round to round, so that no arm always runs first or
//! just after the same neighbour) and times the whole process: a shell loop of `--execs` execs of
//! `/bin/true`. Machine load drifts between rounds, so besides the ratio of the medians the
//! report gives the median of the per-round ratios, which a drift hits in both arms alike.
//!
//! Beside the time, each run's CPU (user + system, of the arm's process tree as `wait4`'s
//! resource usage counts it) is reported per exec: the wall-clock gap between two arms is what a
//! user waits, the CPU gap is the work one arm does that the other does not. (Under bubblewrap
//! only the processes outside the sandbox are counted; the report says so.)
//!
//! `--load N` measures every arm twice per round, once as above and once beside N busy threads
//! of this process (not counted in the arms' CPU), which compete for the CPUs as a build would;
//! the two passes alternate which goes first. The report then has a table per condition and the
//! degradation of each arm (loaded over idle, per round): the issue's "under load" target asks
//! that `wedge-run` degrade no more than the floor does.
//!
//! ```text
//! exec_floor_pairs [--rounds 9] [--execs 500] [--load 0]
//! ```
//!
//! Finds `floor_supervisor` and `wedge-run` beside itself (or in `$WEDGE_BIN_DIR`). Prints a
//! markdown report on stdout. Exit status: 0, 1 when an arm failed, 2 on bad arguments or a
//! missing binary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use wedge_benches::floor::{Arm, Bins, bwrap_usable, exec_loop};

const USAGE: &str = "usage: exec_floor_pairs [--rounds N] [--execs N] [--load N]";

/// The ratios the issue asks for: (numerator, denominator).
const RATIOS: [(Arm, Arm); 7] = [
    (Arm::Floor, Arm::Plain),
    (Arm::FloorRead, Arm::Floor),
    (Arm::WedgeRunNone, Arm::Plain),
    (Arm::WedgeRunNone, Arm::FloorRead),
    (Arm::WedgeRunBwrap, Arm::BwrapAlone),
    (Arm::FloorReadBwrap, Arm::BwrapAlone),
    (Arm::WedgeRunBwrap, Arm::FloorReadBwrap),
];

struct Options {
    rounds: usize,
    execs: u64,
    load: usize,
}

/// One timed run of an arm: wall-clock seconds, and CPU seconds of its process tree.
#[derive(Clone, Copy)]
struct Run {
    wall: f64,
    cpu: f64,
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1).collect()) {
        Ok(o) => o,
        Err(message) => {
            eprintln!("exec_floor_pairs: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let bins = match locate_bins() {
        Ok(b) => b,
        Err(message) => {
            eprintln!("exec_floor_pairs: {message}");
            return ExitCode::from(2);
        }
    };
    let arms: Vec<Arm> = match bwrap_usable() {
        Ok(()) => Arm::ALL.to_vec(),
        Err(why) => {
            println!("Skipping the bwrap arms, bwrap cannot run here: {why}\n");
            Arm::ALL.into_iter().filter(|a| !a.needs_bwrap()).collect()
        }
    };
    println!("Load average at start: {}", load_average());
    let runs = match measure(&options, &bins, &arms) {
        Ok(r) => r,
        Err(message) => {
            eprintln!("exec_floor_pairs: {message}");
            return ExitCode::from(1);
        }
    };
    let conditions = runs.len();
    for (threads, runs) in [0, options.load].into_iter().zip(&runs) {
        report(&options, threads, &arms, runs);
    }
    if conditions == 2 {
        degradation(&arms, &runs[0], &runs[1]);
    }
    println!("\nLoad average at end: {}", load_average());
    ExitCode::SUCCESS
}

/// `N` threads that spin until dropped: a steady, reproducible competitor for every CPU.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(n: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Load { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn parse_args(args: Vec<String>) -> Result<Options, String> {
    let mut options = Options {
        rounds: 9,
        execs: 500,
        load: 0,
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value (or is unknown)"))?;
        let n = value
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0 || flag == "--load")
            .ok_or_else(|| {
                let kind = if flag == "--load" { "a" } else { "a positive" };
                format!("{flag}: not {kind} number: {value:?}")
            })?;
        match flag.as_str() {
            "--load" => {
                options.load = usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= 1024)
                    .ok_or_else(|| format!("--load: at most 1024 threads, not {n}"))?
            }
            "--rounds" => {
                options.rounds =
                    usize::try_from(n).map_err(|_| format!("--rounds: too large: {n}"))?
            }
            "--execs" => options.execs = n,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

/// `$WEDGE_BIN_DIR`, else the directory this program was built into.
fn locate_bins() -> Result<Bins, String> {
    let dir = match std::env::var_os("WEDGE_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(PathBuf::from))
            .ok_or("cannot tell where this program is; set WEDGE_BIN_DIR")?,
    };
    let find = |name: &str| {
        let path = dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{} not found: build it with `cargo build --release -p wedge-runtime \
                 -p wedge-benches --bins` (or set WEDGE_BIN_DIR)",
                path.display()
            ))
        }
    };
    Ok(Bins {
        floor_supervisor: find("floor_supervisor")?,
        wedge_run: find("wedge-run")?,
    })
}

/// Every timed run, `runs[condition][arm][round]`: condition 0 alone, 1 beside the load (only
/// with `--load`). One untimed run of each arm first, so that the first round does not pay for
/// cold caches.
fn measure(options: &Options, bins: &Bins, arms: &[Arm]) -> Result<Vec<Vec<Vec<Run>>>, String> {
    let script = exec_loop(options.execs);
    let once = |arm: Arm| -> Result<Run, String> {
        let start = Instant::now();
        let child = arm
            .command(bins, &script)
            .spawn()
            .map_err(|e| format!("{}: cannot start: {e}", arm.name()))?;
        let (status, cpu) =
            wait_with_cpu(child.id()).map_err(|e| format!("{}: cannot wait: {e}", arm.name()))?;
        let wall = start.elapsed().as_secs_f64();
        if !status.success() {
            return Err(format!("{}: the loop failed: {status}", arm.name()));
        }
        Ok(Run { wall, cpu })
    };
    for &arm in arms {
        once(arm)?;
    }
    let loads: &[usize] = if options.load > 0 {
        &[0, options.load]
    } else {
        &[0]
    };
    let mut runs = vec![vec![Vec::with_capacity(options.rounds); arms.len()]; loads.len()];
    for round in 0..options.rounds {
        for pass in 0..loads.len() {
            // Alternate which condition goes first, as the arms rotate.
            let condition = (round + pass) % loads.len();
            let _load = Load::start(loads[condition]);
            for k in 0..arms.len() {
                let i = (round + k) % arms.len();
                runs[condition][i].push(once(arms[i])?);
            }
        }
    }
    Ok(runs)
}

/// Waits for the child `pid` and returns its status and the CPU seconds (user + system) it and
/// every descendant it waited for used. `std::process::Child` reports no resource usage, so the
/// child is reaped here with `wait4` (the `Child` handle is dropped unwaited, which is allowed).
fn wait_with_cpu(pid: u32) -> std::io::Result<(std::process::ExitStatus, f64)> {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0;
    // SAFETY: all-zero is a valid `rusage` (plain integers and timevals).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is this process's own unreaped child; both out-pointers are valid.
        let got = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
        if got == pid as i32 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    Ok((std::process::ExitStatus::from_raw(status), cpu))
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn report(options: &Options, threads: usize, arms: &[Arm], runs: &[Vec<Run>]) {
    println!(
        "\n## {}\n\n{} rounds, {} execs of /bin/true per run (per exec includes the loop's own \
         fork)\n",
        if threads == 0 {
            "Alone".to_string()
        } else {
            format!("Beside {threads} busy threads")
        },
        options.rounds,
        options.execs
    );
    let per_exec = |s: f64| s / options.execs as f64 * 1e6;
    let walls: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| r.iter().map(|r| r.wall).collect())
        .collect();
    println!("| arm | median s | median µs/exec | median CPU µs/exec |");
    println!("|---|---:|---:|---:|");
    for ((arm, wall), run) in arms.iter().zip(&walls).zip(runs) {
        let cpu: Vec<f64> = run.iter().map(|r| r.cpu).collect();
        println!(
            "| {} | {:.4} | {:.1} | {:.1} |",
            arm.name(),
            median(wall),
            per_exec(median(wall)),
            per_exec(median(&cpu))
        );
    }
    if arms.iter().any(|a| a.needs_bwrap()) {
        println!(
            "\nCPU of the bwrap arms counts only what runs outside the sandbox: bubblewrap does \
             not pass the usage of the processes it reaps inside on to its parent, so `wedge-run \
             --sandbox bwrap` shows wedge-run's own CPU (the supervisor's), and the other two \
             almost nothing."
        );
    }
    println!("\n| ratio | of medians | median of per-round ratios |");
    println!("|---|---:|---:|");
    let of = |arm: Arm| arms.iter().position(|&a| a == arm).map(|i| &walls[i]);
    for (num, den) in RATIOS {
        let name = format!("{} / {}", num.name(), den.name());
        let (Some(n), Some(d)) = (of(num), of(den)) else {
            println!("| {name} | n/a | n/a |");
            continue;
        };
        let per_round: Vec<f64> = n.iter().zip(d).map(|(a, b)| a / b).collect();
        println!(
            "| {name} | {:.3} | {:.3} |",
            median(n) / median(d),
            median(&per_round)
        );
    }
}

/// Each arm's time beside the load over its time alone in the same round, and the issue's two
/// comparisons: `wedge-run` may degrade no more than its floor does.
fn degradation(arms: &[Arm], alone: &[Vec<Run>], loaded: &[Vec<Run>]) {
    let factor = |i: usize| {
        let per_round: Vec<f64> = loaded[i]
            .iter()
            .zip(&alone[i])
            .map(|(l, a)| l.wall / a.wall)
            .collect();
        median(&per_round)
    };
    println!("\n## Degradation under load\n");
    println!("| arm | beside the load / alone (median of per-round ratios) |");
    println!("|---|---:|");
    for (i, arm) in arms.iter().enumerate() {
        println!("| {} | {:.3} |", arm.name(), factor(i));
    }
    let of = |arm: Arm| arms.iter().position(|&a| a == arm).map(factor);
    println!("\n| wedge-run degrades | its floor degrades | ratio |");
    println!("|---|---|---:|");
    for (run, floor) in [
        (Arm::WedgeRunNone, Arm::FloorRead),
        (Arm::WedgeRunBwrap, Arm::FloorReadBwrap),
    ] {
        if let (Some(r), Some(f)) = (of(run), of(floor)) {
            println!(
                "| {} {r:.3}× | {} {f:.3}× | {:.3} |",
                run.name(),
                floor.name(),
                r / f
            );
        }
    }
}

/// The first three fields of `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
