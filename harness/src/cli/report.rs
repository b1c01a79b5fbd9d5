//! `wedge report DIR... [--out DIR]`: re-render the reports from `trials.jsonl`; several
//! directories are merged into `--out`, which must then be new.

use std::path::{Path, PathBuf};

use super::common::{Failure, read_dirs};
use wedge::model::record::JsonlWriter;

/// Re-render the reports from trials.jsonl; several directories are merged into --out.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Results directories.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Where to write the merged trials.jsonl and reports (required with several DIRs).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn report(args: ReportArgs) -> Result<(), Failure> {
    let ReportArgs { dirs, out } = args;
    let dirs = dirs.as_slice();
    let records = read_dirs(dirs)?;
    let target = match (&out, dirs) {
        (Some(o), _) => o.clone(),
        (None, [one]) => one.clone(),
        (None, _) => {
            return Err(Failure::Input(
                "several results directories need --out DIR for the merged report".into(),
            ));
        }
    };
    std::fs::create_dir_all(&target)
        .map_err(|e| Failure::Input(format!("{}: {e}", target.display())))?;
    let merged = out.is_some() && !dirs.iter().any(|d| same_dir(d, &target));
    if merged {
        let jsonl = target.join("trials.jsonl");
        if jsonl.metadata().is_ok_and(|m| m.len() > 0) {
            return Err(Failure::Input(format!(
                "{} already holds results",
                target.display()
            )));
        }
        let mut w = JsonlWriter::open(&jsonl).map_err(|e| Failure::Io(e.to_string()))?;
        for r in &records {
            w.append(r).map_err(|e| Failure::Io(e.to_string()))?;
        }
    } else if out.is_some() && dirs.len() > 1 {
        return Err(Failure::Input(
            "--out must be a new directory when merging".into(),
        ));
    }
    let summary = wedge::report::stats::summarize(&records);
    wedge::report::write_all(&target, &summary).map_err(|e| Failure::Io(e.to_string()))?;
    wedge::outln!(
        "wrote {} (from {} trials)",
        target.join("summary.md").display(),
        records.len()
    );
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}
