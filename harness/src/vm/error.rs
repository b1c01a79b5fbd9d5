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
    #[error(transparent)]
    Strip(#[from] super::strip::StripError),
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

/// Why a guest's `/init` could not run its plan (sent to the host in a `fatal` frame).
#[derive(Debug, Error)]
pub enum GuestError {
    #[error("{path}: {0}", path = super::wire::PLAN_PATH)]
    PlanRead(#[source] std::io::Error),
    #[error("{path}: {0}", path = super::wire::PLAN_PATH)]
    PlanParse(#[source] serde_json::Error),
    #[error(transparent)]
    Scenario(#[from] crate::model::scenario::ScenarioError),
    #[error("plan cell {cell} names scenario {scenario}")]
    NoScenario { cell: usize, scenario: usize },
    /// Setting up the guest's system: what was being done, and the error.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::errno::Errno,
    },
}

impl GuestError {
    /// For `map_err`: an I/O error while doing `what`.
    pub fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> GuestError {
        let what = what.to_string();
        move |source| GuestError::Io { what, source }
    }

    /// For `map_err`: a failed system call while doing `what`.
    pub fn sys(what: impl std::fmt::Display) -> impl FnOnce(nix::errno::Errno) -> GuestError {
        let what = what.to_string();
        move |source| GuestError::Sys { what, source }
    }
}

/// Why bytes are not a bzImage whose version wedge can read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BzImageError {
    #[error("no \"HdrS\" setup header at 0x202")]
    NoHeader,
    #[error("too short for a setup header")]
    Short,
    #[error("the setup header has no kernel_version string")]
    NoVersionString,
    #[error("kernel_version at {0:#x} is past the end")]
    PastTheEnd(usize),
    #[error("kernel_version at {0:#x} is not NUL-terminated")]
    Unterminated(usize),
    #[error("kernel_version at {0:#x} is not UTF-8")]
    NotUtf8(usize),
    #[error("no version in {0:?}")]
    NoVersion(String),
}

/// Why a kernel cannot be listed, fetched or read.
#[derive(Debug, Error)]
pub enum KernelError {
    #[error("{path}:{line}:{col}: {message}")]
    List {
        path: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("kernel {name}: {message}")]
    Fetch { name: String, message: String },
    #[error("kernel {name} is not fetched: run `wedge kernels fetch {name}`")]
    NotFetched { name: String },
    #[error("{path}: not a bzImage: {source}")]
    NotBzImage {
        path: String,
        #[source]
        source: BzImageError,
    },
}

/// What this machine lacks to boot guests.
#[derive(Debug, Clone, Error)]
pub enum SupportError {
    #[error("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")]
    NoQemu,
    #[error(
        "no guest build of wedge ({} is missing): build the workspace's binaries \
         (cargo build --release --workspace --all-features --bins), or set WEDGE_GUEST_BIN_DIR",
        missing.display()
    )]
    NoGuestBuild { missing: PathBuf },
    #[error(transparent)]
    KernelList(std::sync::Arc<KernelError>),
    #[error("the kernel list is empty")]
    EmptyKernelList,
    /// The kernel asked for cannot boot.
    #[error(transparent)]
    Kernel(std::sync::Arc<KernelError>),
    /// The kernel asked for is neither a file nor known, and the list that might know it is
    /// unreadable.
    #[error("{kernel} (and the kernel list is unreadable: {list})")]
    KernelWithoutList {
        #[source]
        kernel: std::sync::Arc<KernelError>,
        list: Box<SupportError>,
    },
}

/// Why a recording cannot be kept, read or replayed.
#[derive(Debug, Error)]
pub enum RecordingError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a recording manifest: {source}", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: recording format {found}; this wedge reads format {known}", dir.display())]
    Format {
        dir: PathBuf,
        found: u32,
        known: u32,
    },
    #[error(
        "{}: changed since it was recorded (SHA-256 {found}, recorded {recorded})",
        path.display()
    )]
    Altered {
        path: PathBuf,
        recorded: String,
        found: String,
    },
    #[error(
        "recorded by another QEMU build: the recording is of \"{recorded}\", this machine \
         runs \"{here}\"; a replay log only replays in the build that wrote it"
    )]
    OtherQemu { recorded: String, here: String },
    #[error("no QEMU to replay with: install qemu-system-x86 or set WEDGE_QEMU")]
    NoQemu,
}

impl RecordingError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> RecordingError {
        RecordingError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
