//! What VM support this machine has, found once per run: QEMU, the static guest build of wedge,
//! the kernel list and cache. Planning asks it (through [`VmSupport`]) which kernels can boot;
//! the VM executor gets its [`VmSettings`].
//!
//! Guarantee: a missing piece is named with the command that supplies it, so a skipped cell
//! tells its user what to install, build or fetch.

use std::path::{Path, PathBuf};

use super::kernels::{self, KnownKernel};
use super::qemu::{Accel, find_qemu};
use crate::backend::{BootKernel, VmError, VmSupport};
use crate::executor::vm::{GUEST_BINARIES, VmSettings};

/// This machine's VM support.
#[derive(Debug, Clone)]
pub struct HostVms {
    qemu: Option<PathBuf>,
    guest_bins: Result<PathBuf, String>,
    list: Result<Vec<KnownKernel>, String>,
    cache: PathBuf,
}

/// Where the static guest build is: `$WEDGE_GUEST_BIN_DIR`, else cargo's
/// `x86_64-unknown-linux-gnu/<profile>` beside the directory wedge runs from (what
/// `ci/build-static.sh` writes), checked to hold every guest binary.
pub fn guest_bin_dir() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("WEDGE_GUEST_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let own = crate::subject::own_dir();
            let profile = own
                .file_name()
                .map(|p| p.to_os_string())
                .unwrap_or_default();
            own.parent()
                .unwrap_or(Path::new("."))
                .join("x86_64-unknown-linux-gnu")
                .join(profile)
        }
    };
    match GUEST_BINARIES.iter().find(|b| !dir.join(b).is_file()) {
        None => Ok(dir),
        Some(missing) => Err(format!(
            "no static guest build of wedge ({} is missing): run ci/build-static.sh, or set \
             WEDGE_GUEST_BIN_DIR",
            dir.join(missing).display()
        )),
    }
}

impl HostVms {
    /// Looks for everything a VM needs.
    pub fn detect() -> HostVms {
        let list_path = kernels::default_list_path();
        HostVms {
            qemu: find_qemu(),
            guest_bins: guest_bin_dir(),
            list: kernels::load_list(&list_path).map_err(|e| e.to_string()),
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
        })
    }
}

impl VmSupport for HostVms {
    fn unavailable(&self) -> Option<String> {
        if self.qemu.is_none() {
            return Some(
                "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into(),
            );
        }
        self.guest_bins.as_ref().err().cloned()
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
            Err(e) => Err(VmError(match &self.list {
                Err(list_error) if !Path::new(name).exists() => {
                    format!("{e} (and the kernel list is unreadable: {list_error})")
                }
                _ => e.to_string(),
            })),
        }
    }

    fn time_scale(&self) -> u32 {
        Accel::detect().slowdown()
    }

    fn default_kernel(&self) -> Result<BootKernel, VmError> {
        let list = self.list.as_ref().map_err(|e| VmError(e.clone()))?;
        let first = list
            .first()
            .ok_or_else(|| VmError::from("the kernel list is empty"))?;
        self.kernel(&first.name)
    }
}

fn env_ms(name: &str) -> Option<std::time::Duration> {
    let ms: u64 = std::env::var(name).ok()?.parse().ok()?;
    Some(std::time::Duration::from_millis(ms))
}
