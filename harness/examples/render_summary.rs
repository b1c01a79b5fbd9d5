//! Re-renders `summary.md` and `index.html` in a results directory from its `summary.json`, so
//! that a report whose `trials.jsonl` is not kept (`reports/vcpu`) can be redrawn by a newer
//! renderer. `wedge report` needs the trials; this needs only the summary.
//!
//! `cargo run --release -p wedge --example render_summary -- reports/vcpu`

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .ok_or("usage: render_summary DIR (a directory holding summary.json)")?
        .into();
    let text = std::fs::read_to_string(dir.join("summary.json"))?;
    let summary: wedge::report::stats::Summary = serde_json::from_str(&text)?;
    std::fs::write(
        dir.join("summary.md"),
        wedge::report::markdown::render(&summary),
    )?;
    std::fs::write(
        dir.join("index.html"),
        wedge::report::html::render(&summary),
    )?;
    Ok(())
}
