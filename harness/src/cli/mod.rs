//! The `wedge` command line: the verbs and their flags, and the exit codes every verb shares
//! (0 ok, 1 gate failed or a replayed trial missed its expectation, 2 bad input, 3 an exact
//! replay differed from its recording, 130 interrupted). Each verb is one module holding its clap
//! `Args` struct (flags and help text) and its entry function: [`run`], [`list`], [`replay`] (with
//! [`replay_exact`] for recordings), [`report`], [`gate`], [`kernels`], [`probe`]; what they share (failures, the interrupt handler, result directories) is in [`common`].

mod common;
mod gate;
mod kernels;
mod list;
mod probe;
mod replay;
mod replay_exact;
mod report;
mod run;
mod show_record;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use common::Failure;

/// wedge: run scenario scripts against a sandbox runtime many times, decide pass / fail / hang /
/// crash for every trial, diagnose hangs, and gate on pass rates.
///
/// Exit codes: 0 ok, 1 gate failed (or a replayed trial missed its expectation), 2 bad input,
/// 3 an exact replay (`wedge replay --exact`) differed from its recording, 130 interrupted
/// (finished trials are kept).
#[derive(Parser, Debug)]
#[command(name = "wedge", version = wedge::VERSION, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The verbs; each one's flags and help text are its `Args` struct, in its own module.
#[derive(Subcommand, Debug)]
enum Command {
    Run(run::RunArgs),
    List(list::ListArgs),
    Replay(replay::ReplayArgs),
    Report(report::ReportArgs),
    Gate(gate::GateArgs),
    Kernels(kernels::KernelsArgs),
    Probe(probe::ProbeArgs),
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
        Command::Run(args) => run::run(args),
        Command::List(args) => list::list(&args),
        Command::Replay(args) => replay::replay(args),
        Command::Report(args) => report::report(args),
        Command::Gate(args) => gate::gate(&args),
        Command::Kernels(args) => kernels::kernels(args),
        Command::Probe(args) => probe::probe(args),
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
        Err(Failure::Diverged) => ExitCode::from(3),
        Err(Failure::Interrupted) => ExitCode::from(130),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own checks of the verbs' `Args` structs: no two flags share a name, every
    /// `conflicts_with` names a flag that exists, and so on.
    #[test]
    fn the_verbs_args_are_consistent() {
        super::Cli::command().debug_assert();
    }
}
