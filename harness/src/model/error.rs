//! The model layer's errors outside scenarios (whose own live in `scenario/`): reading trial
//! records back. Each names the file, and the line when one is bad, and keeps its cause as
//! `#[source]`.

use std::path::PathBuf;

use thiserror::Error;

/// Why a `trials.jsonl` could not be read back.
#[derive(Debug, Error)]
pub enum RecordError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line other than a torn last one is not a record: its 1-based number.
    #[error("{}:{line}:{}: {source}", path.display(), source.column())]
    BadLine {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}
