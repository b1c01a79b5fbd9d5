//! The VM layer's errors, one enum per area; each keeps its cause as `#[source]` and says where
//! (path, kernel, guest file) in its message.

use std::path::PathBuf;

use thiserror::Error;

use super::image::ImageError;

/// Why a guest image could not be built.
#[derive(Debug, Error)]
pub enum GuestImageError {
    #[error("cannot write the guest plan: {0}")]
    Plan(#[source] serde_json::Error),
    #[error("{}: {source}", path.display())]
    Scenario {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// Why probing a kernel in a VM gave no report.
#[derive(Debug, Error)]
pub enum ProbeVmError {
    #[error("unreadable probes frame: {0}")]
    Unreadable(#[source] serde_json::Error),
    #[error("vm (kernel {kernel}): the guest finished without sending its probes")]
    NoProbes { kernel: String },
    /// The boot ended early: why, and the guest's last console lines.
    #[error("{reason}\n{tail}")]
    Boot { reason: String, tail: String },
}
