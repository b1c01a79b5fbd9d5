//! Why the reports of a run could not be written.

use std::path::PathBuf;

use thiserror::Error;

/// An error of [`write_all`](super::write_all). Rendering is pure and cannot fail on a valid
/// summary; what remains is the serialisers' own errors and the filesystem's.
#[derive(Debug, Error)]
pub enum ReportError {
    #[error("summary.json: {0}")]
    Json(#[source] serde_json::Error),
    #[error("junit.xml: {0}")]
    Junit(#[source] quick_junit::SerializeError),
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
