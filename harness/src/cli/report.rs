//! `wedge report DIR... [--out DIR] [--reclassify]`: re-render the reports from `trials.jsonl`;
//! several directories are merged into `--out`, which must then be new.
//!
//! `--reclassify` puts every lost trial in its class again by the `[[classify]]` rules its
//! scenario file has now (a rule made sharper after the run, as the cwd race's was), rather
//! than the ones it had when the trial ran. It needs a new `--out`: the records written there
//! carry the new classes, and the originals are never rewritten.
//!
//! `--base SUMMARY.json` adds the records to the cells of an earlier report whose records are
//! gone (a committed `reports/*/summary.json`), so a table grows across sessions to its trial
//! target (`report::merge` says what adds exactly). The merged bases are kept in `--out` as
//! `base.json`, and re-rendering a directory that has one includes it again. `--reclassify`
//! touches only the records: a base's cells keep the classes they were reported with.

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
    /// A summary.json whose cells the records are added to (an earlier report whose
    /// trials.jsonl is gone); repeatable; needs a new --out.
    #[arg(long, value_name = "SUMMARY.json")]
    base: Vec<PathBuf>,
}

/// Where `--out` keeps the bases it was merged onto.
const BASE_FILE: &str = "base.json";

pub fn report(args: ReportArgs) -> Result<(), Failure> {
    let ReportArgs {
        dirs,
        out,
        reclassify,
        base,
    } = args;
    let dirs = dirs.as_slice();
    let mut records = read_dirs(dirs)?;
    // A new directory for the merged records and reports (one that does not exist yet cannot
    // be an input, which exists).
    let new_out = out
        .as_deref()
        .is_some_and(|o| !dirs.iter().any(|d| same_dir(d, o)));
    if reclassify || !base.is_empty() {
        if !new_out {
            let flag = if reclassify { "--reclassify" } else { "--base" };
            return Err(Failure::Input(format!(
                "{flag} writes new records: it needs --out DIR, a new directory"
            )));
        }
        if reclassify {
            classify_again(&mut records)?;
        }
    }
    let bases = read_bases(&base, dirs)?;
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
    if new_out {
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
    let mut summary = wedge::report::stats::summarize(&records);
    if let Some(b) = bases {
        if new_out {
            write_base(&target.join(BASE_FILE), &b)?;
        }
        summary = wedge::report::merge::merge(b, summary);
    }
    wedge::report::write_all(&target, &summary).map_err(|e| Failure::Io(e.to_string()))?;
    let from_bases = summary.trials.saturating_sub(records.len() as u64);
    let split = if from_bases > 0 {
        format!(": {} new, {from_bases} from bases", records.len())
    } else {
        String::new()
    };
    wedge::outln!(
        "wrote {} (from {} trials{split})",
        target.join("summary.md").display(),
        summary.trials
    );
    Ok(())
}

/// The `--base` summaries and each directory's `base.json`, merged into one, if any.
fn read_bases(
    base: &[PathBuf],
    dirs: &[PathBuf],
) -> Result<Option<wedge::report::stats::Summary>, Failure> {
    let kept = dirs
        .iter()
        .map(|d| d.join(BASE_FILE))
        .filter(|p| p.is_file());
    let mut merged: Option<wedge::report::stats::Summary> = None;
    for path in base.iter().cloned().chain(kept) {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
        let summary = serde_json::from_str(&text).map_err(|e| {
            Failure::Input(format!("{}: not a wedge summary.json: {e}", path.display()))
        })?;
        merged = Some(match merged {
            Some(m) => wedge::report::merge::merge(m, summary),
            None => summary,
        });
    }
    Ok(merged)
}

fn write_base(path: &Path, base: &wedge::report::stats::Summary) -> Result<(), Failure> {
    let json = serde_json::to_string_pretty(base).map_err(|e| Failure::Io(e.to_string()))?;
    std::fs::write(path, json + "\n").map_err(|e| Failure::Io(format!("{}: {e}", path.display())))
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
