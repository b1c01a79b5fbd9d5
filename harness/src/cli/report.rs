//! `wedge report DIR... [--out DIR] [--reclassify]`: re-render the reports from `trials.jsonl`;
//! several directories are merged into `--out`, which must then be new.
//!
//! `--reclassify` puts every lost trial in its class again by the `[[classify]]` rules its
//! scenario file has now (a rule made sharper after the run, as the cwd race's was), rather
//! than the ones it had when the trial ran. It needs a new `--out`: the records written there
//! carry the new classes, and the originals are never rewritten.

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
    /// Classify every lost trial again by its scenario file's current [[classify]] rules (the
    /// file each record names, read from here); needs a new --out.
    #[arg(long)]
    reclassify: bool,
}

pub fn report(args: ReportArgs) -> Result<(), Failure> {
    let ReportArgs {
        dirs,
        out,
        reclassify,
    } = args;
    let dirs = dirs.as_slice();
    let mut records = read_dirs(dirs)?;
    if reclassify {
        if out.is_none()
            || dirs
                .iter()
                .any(|d| out.as_deref().is_some_and(|o| same_dir(d, o)))
        {
            return Err(Failure::Input(
                "--reclassify writes new records: it needs --out DIR, a new directory".into(),
            ));
        }
        classify_again(&mut records)?;
    }
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

/// Sets each record's loss class by the rules its scenario file has now; each file is read once.
fn classify_again(records: &mut [wedge::model::record::TrialRecord]) -> Result<(), Failure> {
    let mut scenarios = std::collections::HashMap::new();
    for r in records.iter_mut() {
        if !scenarios.contains_key(&r.file) {
            let loaded = wedge::model::scenario::Scenario::load(Path::new(&r.file))
                .map_err(|e| Failure::Input(format!("--reclassify: {e}")))?;
            scenarios.insert(r.file.clone(), loaded);
        }
        r.loss = wedge::model::loss::of(scenarios[&r.file].classes(), r);
    }
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}
