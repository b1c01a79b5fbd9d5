//! `wedge gate DIR`: exit 1 when any cell of a results directory misses its expectation.

use std::path::PathBuf;

use super::common::{Failure, print_gate, read_dirs};

/// Exit 1 when any cell of a results directory misses its expectation (or was skipped, or a
/// shard of a merged sharded run is missing), printing those cells.
#[derive(clap::Args, Debug)]
pub struct GateArgs {
    /// A results directory.
    results_dir: PathBuf,
    /// Skipped cells (listed either way) do not fail the gate.
    #[arg(long)]
    allow_skipped: bool,
}

pub fn gate(args: &GateArgs) -> Result<(), Failure> {
    let dir = &args.results_dir;
    let records = read_dirs(std::slice::from_ref(dir))?;
    if records.is_empty() {
        return Err(Failure::Input(format!(
            "{}: trials.jsonl holds no trials, nothing to gate on",
            dir.display()
        )));
    }
    let summary = wedge::report::stats::summarize(&records);
    let policy = wedge::report::gate::GatePolicy {
        allow_skipped: args.allow_skipped,
    };
    let failures = wedge::report::gate::gate(&summary, &records, policy);
    print_gate(&failures);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failure::Gate)
    }
}
