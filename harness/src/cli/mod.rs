//! The `wedge` command line: the verbs and their flags, and the exit codes every verb shares
//! (0 ok, 1 gate failed or a replayed trial missed its expectation, 2 bad input, 130
//! interrupted). Each verb is one module: [`run`], [`list`], [`replay`], [`report`], [`gate`],
//! [`kernels`], [`probe`];
//! what they share (failures, the interrupt handler, result directories) is in [`common`].

mod common;
mod gate;
mod kernels;
mod list;
mod probe;
mod replay;
mod report;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use common::Failure;
use wedge::model::cell::{CellFilter, Shard};

/// wedge: run scenario scripts against a sandbox runtime many times, decide pass / fail / hang /
/// crash for every trial, diagnose hangs, and gate on pass rates.
///
/// Exit codes: 0 ok, 1 gate failed (or a replayed trial missed its expectation), 2 bad input,
/// 130 interrupted (finished trials are kept).
#[derive(Parser, Debug)]
#[command(name = "wedge", version = wedge::VERSION, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run scenarios (default: every *.toml in the repository's scenarios/ directory, or
    /// $WEDGE_SCENARIOS) and write trials.jsonl, summary.json, summary.md, junit.xml, index.html.
    Run {
        /// Scenario files or directories of them.
        scenarios: Vec<PathBuf>,
        /// Trials per cell (overrides each scenario's `trials`).
        #[arg(long)]
        trials: Option<u32>,
        /// Run only cells with AXIS=VALUE (repeat; values of one axis are alternatives).
        #[arg(long = "cell", value_name = "AXIS=VALUE")]
        cells: Vec<CellFilter>,
        /// Trials run in parallel (default: the host's CPU count; pinned trials never share CPUs).
        #[arg(long)]
        jobs: Option<usize>,
        /// Results directory (default: wedge-results/<UTC time>). Must not hold results yet.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Exit 1 when a cell misses its expectation (or was skipped, or a shard is missing).
        /// Without it the run reports how many cells missed and exits 0.
        #[arg(long)]
        gate: bool,
        /// With --gate: cells this host cannot run (listed either way) do not fail the gate.
        #[arg(long)]
        allow_skipped: bool,
        /// Run only the I-th of N deterministic slices of the cells (1-based), e.g. 2/4.
        #[arg(long, value_name = "I/N")]
        shard: Option<Shard>,
        /// Base seed (overrides each scenario's `seed`).
        #[arg(long)]
        seed: Option<u64>,
        #[command(flatten)]
        backend: common::BackendArgs,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List scenarios, their cells and each cell's expectation.
    List {
        /// Scenario files or directories (default: the default suite).
        scenarios: Vec<PathBuf>,
        /// Only cells with AXIS=VALUE.
        #[arg(long = "cell", value_name = "AXIS=VALUE")]
        cells: Vec<CellFilter>,
        #[command(flatten)]
        backend: common::BackendArgs,
    },
    /// Re-run one trial exactly as recorded: same scenario, cell and seed.
    Replay {
        /// The scenario file.
        scenario: PathBuf,
        /// The cell (every axis of it), AXIS=VALUE each.
        #[arg(long = "cell", value_name = "AXIS=VALUE")]
        cells: Vec<CellFilter>,
        /// The trial's seed (from trials.jsonl or a report).
        #[arg(long)]
        seed: u64,
        /// Also append the record to DIR/trials.jsonl.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        backend: common::BackendArgs,
    },
    /// Re-render the reports from trials.jsonl; several directories are merged into --out.
    Report {
        /// Results directories.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where to write the merged trials.jsonl and reports (required with several DIRs).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Exit 1 when any cell of a results directory misses its expectation (or was skipped, or a
    /// shard of a merged sharded run is missing), printing those cells.
    Gate {
        /// A results directory.
        results_dir: PathBuf,
        /// Skipped cells (listed either way) do not fail the gate.
        #[arg(long)]
        allow_skipped: bool,
    },
    /// The guest kernels of the VM backend (kernels.toml, or $WEDGE_KERNELS): list or fetch them.
    Kernels {
        #[command(subcommand)]
        verb: kernels::KernelsVerb,
    },
    /// Probe the kernel behaviours sandbox runtimes depend on (seccomp user notification, the
    /// syscall ABIs, process handling): a table of id, value and evidence. With --kernel, in a VM.
    Probe {
        #[command(flatten)]
        backend: common::BackendArgs,
        /// Print the full report as JSON.
        #[arg(long)]
        json: bool,
        /// Say which known kernel (reports/kernels.json) this one behaves like, each
        /// difference, and what it means for the scenario library.
        #[arg(long)]
        compare: bool,
        /// Probe the host and every kernel of kernels.toml; write DIR/kernels.json and
        /// DIR/kernels.md.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["json", "compare"])]
        report: Option<PathBuf>,
        /// Run one probe in this process and print its result (how `wedge probe` runs each).
        #[arg(long, hide = true, value_name = "ID")]
        run_one: Option<String>,
    },
}

/// Parses the command line, runs the verb and maps its outcome to wedge's exit codes.
pub fn main() -> ExitCode {
    if wedge::guest::is_guest() {
        wedge::guest::main();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            scenarios,
            trials,
            cells,
            jobs,
            out,
            gate,
            allow_skipped,
            shard,
            seed,
            backend,
            quiet,
        } => run::run(run::RunArgs {
            scenarios,
            trials,
            filters: cells,
            jobs,
            out,
            gate,
            policy: wedge::report::gate::GatePolicy { allow_skipped },
            shard,
            seed,
            backend,
            quiet,
        }),
        Command::List {
            scenarios,
            cells,
            backend,
        } => list::list(&scenarios, &cells, &backend),
        Command::Replay {
            scenario,
            cells,
            seed,
            out,
            backend,
        } => replay::replay(&scenario, &cells, seed, out, &backend),
        Command::Report { dirs, out } => report::report(&dirs, out),
        Command::Gate {
            results_dir,
            allow_skipped,
        } => gate::gate_dir(
            &results_dir,
            wedge::report::gate::GatePolicy { allow_skipped },
        ),
        Command::Kernels { verb } => kernels::kernels(verb),
        Command::Probe {
            backend,
            json,
            compare,
            report,
            run_one,
        } => probe::probe(probe::ProbeArgs {
            backend,
            json,
            compare,
            report,
            run_one,
        }),
    };
    exit_code(result)
}

/// The exit code of a verb's outcome, after saying why it failed.
fn exit_code(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Gate) => ExitCode::from(1),
        Err(Failure::Input(m)) => {
            wedge::errln!("wedge: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Io(m)) => {
            wedge::errln!("wedge: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Interrupted) => ExitCode::from(130),
    }
}
