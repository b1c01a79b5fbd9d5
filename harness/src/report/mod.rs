//! Rendering a summary: `summary.json`, `summary.md`, `junit.xml`, `index.html`, each a pure
//! function of the [`Summary`] (so reports re-rendered from `trials.jsonl` are identical).

mod error;
pub mod format;
pub mod gate;
pub mod html;
pub mod junit;
pub mod live;
pub mod markdown;
pub mod merge;
pub mod stats;
pub mod terminal;

use std::path::Path;

use crate::report::stats::Summary;

pub use error::ReportError;

/// Writes every report of `summary` into `dir`. Each is rendered before anything is written, so a
/// rendering error leaves the directory as it was.
pub fn write_all(dir: &Path, summary: &Summary) -> Result<(), ReportError> {
    let json = serde_json::to_string_pretty(summary).map_err(ReportError::Json)? + "\n";
    let junit = junit::render(summary).map_err(ReportError::Junit)?;
    let files = [
        ("summary.json", json),
        ("summary.md", markdown::render(summary)),
        ("junit.xml", junit),
        ("index.html", html::render(summary)),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| ReportError::Write { path, source })?;
    }
    Ok(())
}

pub use format::{Table, cell_text, ms, pct, table};
