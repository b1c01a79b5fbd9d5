//! Rendering a summary: `summary.json`, `summary.md`, `junit.xml`, `index.html`, each a pure
//! function of the [`Summary`] (so reports re-rendered from `trials.jsonl` are identical).

pub mod format;
pub mod html;
pub mod junit;
pub mod markdown;

use std::path::Path;

use crate::stats::Summary;

/// Writes every report of `summary` into `dir`.
pub fn write_all(dir: &Path, summary: &Summary) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(summary).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("summary.json"), json + "\n")?;
    std::fs::write(dir.join("summary.md"), markdown::render(summary))?;
    let junit = junit::render(summary).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("junit.xml"), junit)?;
    std::fs::write(dir.join("index.html"), html::render(summary))?;
    Ok(())
}

pub use format::{Table, cell_text, ms, pct, table};
