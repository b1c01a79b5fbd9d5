//! Finding and loading scenario files: the files named on the command line (or the default
//! suite), loaded into plans with names unique across the suite, sorted by name. Any problem
//! here is bad input (exit 2).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::scenario::{Scenario, ScenarioError};

/// Bad input: a scenario error or a usage problem (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{0}")]
    Scenario(#[from] ScenarioError),
    #[error("{0}")]
    Usage(String),
}

/// The default suite's directory: `$WEDGE_SCENARIOS`, else the first `scenarios/` directory
/// found walking up from the current directory, else the source checkout's `scenarios/`.
pub fn default_suite_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WEDGE_SCENARIOS") {
        return Some(PathBuf::from(dir));
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            let candidate = dir.join("scenarios");
            if candidate.is_dir() {
                return Some(candidate);
            }
        }
    }
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    checkout.is_dir().then_some(checkout)
}

/// Every `*.toml` file in `dir`, sorted.
pub fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, InputError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| InputError::Usage(format!("{}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// The files to load: those named (directories expanded), or the default suite's.
fn scenario_files(args: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    if !args.is_empty() {
        let mut files = Vec::new();
        for a in args {
            if a.is_dir() {
                files.extend(toml_files(a)?);
            } else {
                files.push(a.clone());
            }
        }
        return Ok(files);
    }
    let dir = default_suite_dir().ok_or_else(|| {
        InputError::Usage(
            "no scenarios given and no scenarios/ directory found (set WEDGE_SCENARIOS)".into(),
        )
    })?;
    let files = toml_files(&dir)?;
    if files.is_empty() {
        return Err(InputError::Usage(format!(
            "no *.toml scenarios in {}",
            dir.display()
        )));
    }
    Ok(files)
}

/// Loads the scenarios named on the command line (files or directories), or the default suite.
pub fn load_scenarios(args: &[PathBuf]) -> Result<Vec<Arc<Scenario>>, InputError> {
    let mut scenarios: Vec<Arc<Scenario>> = Vec::new();
    for f in scenario_files(args)? {
        let s = Scenario::load(&f)?;
        if let Some(other) = scenarios.iter().find(|o| o.name == s.name) {
            return Err(InputError::Usage(format!(
                "{}: scenario name \"{}\" is also used by {}",
                f.display(),
                s.name,
                other.file.display()
            )));
        }
        scenarios.push(Arc::new(s));
    }
    scenarios.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(scenarios)
}
