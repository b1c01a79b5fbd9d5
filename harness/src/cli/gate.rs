//! `wedge gate DIR`: exit 1 when any cell of a results directory misses its expectation.

use std::path::Path;

use super::common::{Failure, print_gate, read_dirs};

pub fn gate_dir(dir: &Path, policy: wedge::report::gate::GatePolicy) -> Result<(), Failure> {
    let records = read_dirs(&[dir.to_path_buf()])?;
    if records.is_empty() {
        return Err(Failure::Input(format!(
            "{}: trials.jsonl holds no trials, nothing to gate on",
            dir.display()
        )));
    }
    let summary = wedge::report::stats::summarize(&records);
    let failures = wedge::report::gate::gate(&summary, &records, policy);
    print_gate(&failures);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failure::Gate)
    }
}
