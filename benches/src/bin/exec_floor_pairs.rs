//! The side-by-side report of issue 25: what an exec costs under `wedge-run` against the floor
//! (the hand-written `floor_supervisor`), as medians of alternating rounds. Each round runs every
//! arm once (in an order that rotates from round to round, so that no arm always runs first or
//! just after the same neighbour) and times the whole process: a shell loop of `--execs` execs of
//! `/bin/true`. Machine load drifts between rounds, so besides the ratio of the medians the
//! report gives the median of the per-round ratios, which a drift hits in both arms alike.
//!
//! ```text
//! exec_floor_pairs [--rounds 9] [--execs 500]
//! ```
//!
//! Finds `floor_supervisor` and `wedge-run` beside itself (or in `$WEDGE_BIN_DIR`). Prints a
//! markdown report on stdout. Exit status: 0, 1 when an arm failed, 2 on bad arguments or a
//! missing binary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use wedge_benches::floor::{Arm, Bins, bwrap_usable, exec_loop};

const USAGE: &str = "usage: exec_floor_pairs [--rounds N] [--execs N]";

/// The ratios the issue asks for: (numerator, denominator).
const RATIOS: [(Arm, Arm); 5] = [
    (Arm::Floor, Arm::Plain),
    (Arm::FloorRead, Arm::Floor),
    (Arm::WedgeRunNone, Arm::Plain),
    (Arm::WedgeRunNone, Arm::FloorRead),
    (Arm::WedgeRunBwrap, Arm::BwrapAlone),
];

struct Options {
    rounds: usize,
    execs: u64,
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
    let times = match measure(&options, &bins, &arms) {
        Ok(t) => t,
        Err(message) => {
            eprintln!("exec_floor_pairs: {message}");
            return ExitCode::from(1);
        }
    };
    report(&options, &arms, &times);
    println!("\nLoad average at end: {}", load_average());
    ExitCode::SUCCESS
}

fn parse_args(args: Vec<String>) -> Result<Options, String> {
    let mut options = Options {
        rounds: 9,
        execs: 500,
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value (or is unknown)"))?;
        let n = value
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{flag}: not a positive number: {value:?}"))?;
        match flag.as_str() {
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

/// Seconds per run, `times[arm][round]`. One untimed run of each arm first, so that the first
/// round does not pay for cold caches.
fn measure(options: &Options, bins: &Bins, arms: &[Arm]) -> Result<Vec<Vec<f64>>, String> {
    let script = exec_loop(options.execs);
    let once = |arm: Arm| -> Result<f64, String> {
        let start = Instant::now();
        let status = arm
            .command(bins, &script)
            .status()
            .map_err(|e| format!("{}: cannot start: {e}", arm.name()))?;
        let seconds = start.elapsed().as_secs_f64();
        if !status.success() {
            return Err(format!("{}: the loop failed: {status}", arm.name()));
        }
        Ok(seconds)
    };
    for &arm in arms {
        once(arm)?;
    }
    let mut times = vec![Vec::with_capacity(options.rounds); arms.len()];
    for round in 0..options.rounds {
        for k in 0..arms.len() {
            let i = (round + k) % arms.len();
            times[i].push(once(arms[i])?);
        }
    }
    Ok(times)
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

fn report(options: &Options, arms: &[Arm], times: &[Vec<f64>]) {
    println!(
        "\n{} rounds, {} execs of /bin/true per run (per exec includes the loop's own fork)\n",
        options.rounds, options.execs
    );
    println!("| arm | median s | median µs/exec |");
    println!("|---|---:|---:|");
    for (arm, t) in arms.iter().zip(times) {
        let m = median(t);
        let per_exec = m / options.execs as f64 * 1e6;
        println!("| {} | {m:.4} | {per_exec:.1} |", arm.name());
    }
    println!("\n| ratio | of medians | median of per-round ratios |");
    println!("|---|---:|---:|");
    let of = |arm: Arm| arms.iter().position(|&a| a == arm).map(|i| &times[i]);
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

/// The first three fields of `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
