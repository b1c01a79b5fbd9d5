//! What VM support this machine has, found once per run: QEMU, the guest's build of wedge,
//! the kernel list and cache. Planning asks it (through [`VmSupport`]) which kernels can boot;
//! the VM executor gets its [`VmSettings`].
//!
//! Guarantee: a missing piece is named with the command that supplies it, so a skipped cell
//! tells its user what to install, build or fetch.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::SupportError;
use super::kernels::{self, KnownKernel};
use super::qemu::{Accel, find_qemu};
use crate::plan::backend::{BootKernel, VmError, VmSupport};

/// The wedge binaries every guest holds; the first becomes `/init`.
pub const GUEST_BINARIES: [&str; 5] = [
    "wedge",
    "wedge-init",
    "wedge-subject",
    "wedge-run",
    "wedge-agent",
];

/// How this machine boots guests.
#[derive(Debug, Clone)]
pub struct VmSettings {
    pub qemu: PathBuf,
    pub accel: Accel,
    /// The wedge binaries the guest gets ([`guest_bin_dir`]).
    pub guest_bins: PathBuf,
    /// Where images are cached.
    pub cache: PathBuf,
    pub memory_mb: u32,
    /// Overrides of the budgets (`WEDGE_VM_BOOT_BUDGET_MS`, `WEDGE_VM_SILENCE_BUDGET_MS`): how
    /// long a guest may take to greet, and to send its next frame.
    pub boot_budget: Option<std::time::Duration>,
    pub silence_budget: Option<std::time::Duration>,
    /// `wedge run --record`: where kept recordings of 1-vCPU boots go (`vm::recording`); boots
    /// of more vCPUs run in seeded virtual time instead. None: neither.
    pub record: Option<PathBuf>,
}

/// This machine's VM support.
#[derive(Debug, Clone)]
pub struct HostVms {
    qemu: Option<PathBuf>,
    guest_bins: Result<PathBuf, SupportError>,
    list: Result<Vec<KnownKernel>, SupportError>,
    cache: PathBuf,
}

/// Where the guest's wedge binaries are: `$WEDGE_GUEST_BIN_DIR` (e.g. a static build from
/// `ci/build-static.sh`), else the directory wedge itself runs from, so a guest runs the very
/// build the host does (its shared libraries go into the image with it, `vm::image`); checked
/// to hold every guest binary.
pub fn guest_bin_dir() -> Result<PathBuf, SupportError> {
    let dir = std::env::var_os("WEDGE_GUEST_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(crate::plan::commands::own_dir);
    match GUEST_BINARIES.iter().find(|b| !dir.join(b).is_file()) {
        None => Ok(dir),
        Some(missing) => Err(SupportError::NoGuestBuild {
            missing: dir.join(missing),
        }),
    }
}

impl HostVms {
    /// Looks for everything a VM needs.
    pub fn detect() -> HostVms {
        let list_path = kernels::default_list_path();
        HostVms {
            qemu: find_qemu(),
            guest_bins: guest_bin_dir(),
            list: kernels::load_list(&list_path).map_err(|e| SupportError::KernelList(Arc::new(e))),
            cache: super::image::cache_dir(),
        }
    }

    /// The executor's settings, when VMs can run at all.
    pub fn settings(&self) -> Option<VmSettings> {
        Some(VmSettings {
            qemu: self.qemu.clone()?,
            accel: Accel::detect(),
            guest_bins: self.guest_bins.clone().ok()?,
            cache: self.cache.clone(),
            memory_mb: std::env::var("WEDGE_VM_MEMORY_MB")
                .ok()
                .and_then(|m| m.parse().ok())
                .unwrap_or(1024),
            boot_budget: env_ms("WEDGE_VM_BOOT_BUDGET_MS"),
            silence_budget: env_ms("WEDGE_VM_SILENCE_BUDGET_MS"),
            record: None,
        })
    }
}

impl VmSupport for HostVms {
    fn unavailable(&self) -> Option<VmError> {
        if self.qemu.is_none() {
            return Some(VmError::new(SupportError::NoQemu));
        }
        self.guest_bins.as_ref().err().cloned().map(VmError::new)
    }

    fn kernel(&self, name: &str) -> Result<BootKernel, VmError> {
        let list = self.list.as_deref().unwrap_or(&[]);
        match kernels::resolve(name, list, &self.cache) {
            Ok(k) => Ok(BootKernel {
                name: k.name,
                image: k.path,
                release: k.release,
                version: k.version,
            }),
            Err(e) => Err(VmError::new(match &self.list {
                Err(list) if !Path::new(name).exists() => SupportError::KernelWithoutList {
                    kernel: Arc::new(e),
                    list: Box::new(list.clone()),
                },
                _ => SupportError::Kernel(Arc::new(e)),
            })),
        }
    }

    fn time_scale(&self) -> u32 {
        Accel::detect().slowdown()
    }

    fn default_kernel(&self) -> Result<BootKernel, VmError> {
        let list = self.list.as_ref().map_err(|e| VmError::new(e.clone()))?;
        let first = list
            .first()
            .ok_or_else(|| VmError::new(SupportError::EmptyKernelList))?;
        self.kernel(&first.name)
    }
}

fn env_ms(name: &str) -> Option<std::time::Duration> {
    let ms: u64 = std::env::var(name).ok()?.parse().ok()?;
    Some(std::time::Duration::from_millis(ms))
}
