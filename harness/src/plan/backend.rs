//! Where a cell runs: on this host, or in a VM with another kernel or more CPUs.
//!
//! Guarantees:
//! - The choice is a pure function of what the cell asks for (its `kernel` and `cpus` axes, or
//!   `--kernel` / `--cpus`), the backend asked for, the host, and what VM support there is; it
//!   is made once, at planning, so every trial of a cell runs in the same place.
//! - `host` never runs a cell the host cannot honour (another kernel, more CPUs than it has);
//!   `auto` runs such a cell in a VM when QEMU, a guest build of wedge and the kernel are all
//!   there; every cell that runs nowhere gets a reason that says what is missing.

use std::path::PathBuf;
use std::sync::Arc;

use crate::model::record::Host;

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Backend {
    /// Only this machine: cells it cannot run are skipped.
    Host,
    /// Every cell in a VM.
    Vm,
    /// This machine when it can, else a VM.
    #[default]
    Auto,
}

/// A kernel a VM can boot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BootKernel {
    /// As the user named it: a name from `kernels.toml` or a path.
    pub name: String,
    pub image: PathBuf,
    /// `uname -r` in the guest.
    pub release: String,
    /// The upstream version (`6.1.192`): what `kernel = "< 6.11"` expectations compare.
    pub version: String,
}

/// One VM configuration: every cell with the same one shares a boot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmTarget {
    pub kernel: BootKernel,
    pub cpus: usize,
    /// The factor the cell's time bounds are scaled by in this VM ([`VmSupport::time_scale`]).
    pub time_scale: u32,
}

/// Where a cell runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Target {
    #[default]
    Host,
    Vm(VmTarget),
}

impl Target {
    /// The kernel version a cell's expectations are resolved against.
    pub fn kernel_version<'a>(&'a self, host: &'a Host) -> &'a str {
        match self {
            Target::Host => &host.kernel,
            Target::Vm(vm) => &vm.kernel.version,
        }
    }
}

/// Why VM support cannot run a guest here or give a kernel (no QEMU, unknown, not fetched, no
/// list). The cause is the VM layer's own error, which planning (a layer below) cannot name: it
/// is kept whole behind the trait object, and its text is the message.
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct VmError(Arc<dyn std::error::Error + Send + Sync>);

impl VmError {
    /// Wraps VM support's own error.
    pub fn new(cause: impl std::error::Error + Send + Sync + 'static) -> VmError {
        VmError(Arc::new(cause))
    }
}

/// Two reasons are the same when they read the same: the causes' types are not comparable
/// behind the trait object, and a plan compares places only to tell them apart.
impl PartialEq for VmError {
    fn eq(&self, other: &VmError) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for VmError {}

/// A reason given as text ([`NoVm`]'s, and test doubles').
impl From<String> for VmError {
    fn from(why: String) -> VmError {
        VmError(Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
            why,
        )))
    }
}

impl From<&str> for VmError {
    fn from(why: &str) -> VmError {
        VmError::from(why.to_string())
    }
}

/// Why a cell can run nowhere under the backend asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    /// The host cannot run it, and `--backend host` allows nothing else.
    #[error("{why} (--backend host)")]
    HostOnly { why: String },
    /// No VM can run here at all (no QEMU, no guest build of wedge).
    #[error(transparent)]
    NoVm(VmError),
    /// VM support cannot give the kernel the cell needs.
    #[error(transparent)]
    Kernel(#[from] VmError),
    /// The host cannot run it, and no VM can either.
    #[error("{why}, and no VM can run it: {no_vm}")]
    Nowhere {
        why: String,
        #[source]
        no_vm: Box<PlaceError>,
    },
}

/// What VM support this machine has.
pub trait VmSupport: Send + Sync {
    /// Why no VM can run here at all (no QEMU, no guest build of wedge), if so.
    fn unavailable(&self) -> Option<VmError>;
    /// The kernel a name or path stands for, ready to boot, or why not.
    fn kernel(&self, name: &str) -> Result<BootKernel, VmError>;
    /// The kernel a VM boots when the cell names none.
    fn default_kernel(&self) -> Result<BootKernel, VmError>;
    /// How much longer than on the host a guest takes (1 with KVM; more under emulation): the
    /// factor a VM cell's time bounds (`within_ms`, the deadline) are scaled by.
    fn time_scale(&self) -> u32 {
        1
    }
}

/// No VM support at all (tests, and builds that cannot find one).
pub struct NoVm(pub String);

impl VmSupport for NoVm {
    fn unavailable(&self) -> Option<VmError> {
        Some(self.0.clone().into())
    }
    fn kernel(&self, _: &str) -> Result<BootKernel, VmError> {
        Err(self.0.clone().into())
    }
    fn default_kernel(&self) -> Result<BootKernel, VmError> {
        Err(self.0.clone().into())
    }
}

/// Shared VM support for planning (`Debug` and `Default` so plan options keep theirs).
#[derive(Clone)]
pub struct VmHandle(pub Arc<dyn VmSupport>);

impl Default for VmHandle {
    fn default() -> VmHandle {
        VmHandle(Arc::new(NoVm(
            "no VM support was set up for this run".into(),
        )))
    }
}

impl std::fmt::Debug for VmHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.unavailable() {
            None => f.write_str("VmHandle(available)"),
            Some(why) => write!(f, "VmHandle(unavailable: {why})"),
        }
    }
}

/// What a cell asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wants {
    /// A kernel name or path; `None` or `host` is the host's.
    pub kernel: Option<String>,
    pub cpus: Option<usize>,
}

/// Why the host cannot run a cell that `wants` this, if it cannot.
pub fn host_refuses(wants: &Wants, host: &Host, vm: &dyn VmSupport) -> Option<String> {
    if let Some(cpus) = wants.cpus
        && cpus > host.cpus
    {
        return Some(format!(
            "cell asks for {cpus} CPUs but this host has {}",
            host.cpus
        ));
    }
    let kernel = wants.kernel.as_deref().filter(|k| *k != "host")?;
    // A kernel the VM support knows is the host's when its release is the host's; a name it
    // does not know matches the host's release by prefix (`6.18` on a 6.18.44 host).
    let same = match vm.kernel(kernel) {
        Ok(k) => k.release == host.kernel,
        Err(_) => host.kernel.starts_with(kernel),
    };
    (!same).then(|| {
        format!(
            "cell asks for kernel {kernel} but the host runs {}",
            host.kernel
        )
    })
}

/// Where a cell that `wants` this runs under `backend`, or why it cannot run anywhere.
pub fn choose(
    backend: Backend,
    wants: &Wants,
    host: &Host,
    vm: &dyn VmSupport,
) -> Result<Target, PlaceError> {
    let refused = host_refuses(wants, host, vm);
    match (backend, refused) {
        (Backend::Host, None) | (Backend::Auto, None) => Ok(Target::Host),
        (Backend::Host, Some(why)) => Err(PlaceError::HostOnly { why }),
        (Backend::Vm, _) => vm_target(wants, host, vm),
        (Backend::Auto, Some(why)) => {
            vm_target(wants, host, vm).map_err(|no_vm| PlaceError::Nowhere {
                why,
                no_vm: Box::new(no_vm),
            })
        }
    }
}

fn vm_target(wants: &Wants, host: &Host, vm: &dyn VmSupport) -> Result<Target, PlaceError> {
    if let Some(why) = vm.unavailable() {
        return Err(PlaceError::NoVm(why));
    }
    let kernel = match wants.kernel.as_deref() {
        None | Some("host") => vm.default_kernel()?,
        Some(name) => vm.kernel(name)?,
    };
    Ok(Target::Vm(VmTarget {
        kernel,
        cpus: wants.cpus.unwrap_or(host.cpus).max(1),
        time_scale: vm.time_scale().max(1),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            kernel: "6.18.44-fc".into(),
            cpus: 2,
            isolation: "cgroup2".into(),
            backend: "host".into(),
            accel: None,
        }
    }

    fn k(name: &str, release: &str) -> BootKernel {
        BootKernel {
            name: name.into(),
            image: format!("/cache/{name}/vmlinuz").into(),
            release: release.into(),
            version: release.split('-').next().unwrap().into(),
        }
    }

    /// QEMU and a guest build, with two kernels, one of them not fetched.
    struct Vms;
    impl VmSupport for Vms {
        fn unavailable(&self) -> Option<VmError> {
            None
        }
        fn kernel(&self, name: &str) -> Result<BootKernel, VmError> {
            match name {
                "6.1" => Ok(k("6.1", "6.1.0-57-cloud-amd64")),
                "6.12" => Err("kernel 6.12 is not fetched: run `wedge kernels fetch 6.12`".into()),
                _ => Err(format!("unknown kernel {name}").into()),
            }
        }
        fn default_kernel(&self) -> Result<BootKernel, VmError> {
            self.kernel("6.1")
        }
    }

    fn wants(kernel: Option<&str>, cpus: Option<usize>) -> Wants {
        Wants {
            kernel: kernel.map(str::to_string),
            cpus,
        }
    }

    #[test]
    fn auto_runs_on_the_host_what_the_host_can() {
        for w in [
            wants(None, None),
            wants(Some("host"), Some(2)),
            wants(Some("6.18"), Some(1)),
        ] {
            assert_eq!(
                choose(Backend::Auto, &w, &host(), &Vms),
                Ok(Target::Host),
                "{w:?}"
            );
        }
    }

    #[test]
    fn auto_takes_a_vm_for_another_kernel_or_more_cpus() {
        let Ok(Target::Vm(t)) = choose(Backend::Auto, &wants(Some("6.1"), None), &host(), &Vms)
        else {
            panic!("6.1 should run in a VM");
        };
        assert_eq!((t.kernel.name.as_str(), t.cpus), ("6.1", 2));
        let Ok(Target::Vm(t)) = choose(Backend::Auto, &wants(None, Some(8)), &host(), &Vms) else {
            panic!("8 CPUs should run in a VM");
        };
        assert_eq!((t.kernel.name.as_str(), t.cpus), ("6.1", 8));
    }

    #[test]
    fn every_cell_that_runs_nowhere_says_why() {
        let e = choose(Backend::Auto, &wants(Some("6.12"), None), &host(), &Vms)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("host runs 6.18.44-fc") && e.contains("wedge kernels fetch 6.12"),
            "{e}"
        );
        let e = choose(Backend::Host, &wants(None, Some(4)), &host(), &Vms)
            .unwrap_err()
            .to_string();
        assert!(e.contains("4 CPUs") && e.contains("--backend host"), "{e}");
        let none = NoVm("qemu-system-x86_64 is not installed".into());
        let e = choose(Backend::Auto, &wants(None, Some(4)), &host(), &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("qemu-system-x86_64 is not installed"), "{e}");
        assert!(choose(Backend::Vm, &wants(None, None), &host(), &none).is_err());
    }

    #[test]
    fn vm_runs_even_what_the_host_could() {
        let got = choose(Backend::Vm, &wants(None, Some(1)), &host(), &Vms).unwrap();
        assert!(matches!(got, Target::Vm(VmTarget { cpus: 1, .. })));
        assert_eq!(got.kernel_version(&host()), "6.1.0");
    }

    #[test]
    fn a_known_kernel_with_the_hosts_release_is_the_host() {
        struct Same;
        impl VmSupport for Same {
            fn unavailable(&self) -> Option<VmError> {
                None
            }
            fn kernel(&self, n: &str) -> Result<BootKernel, VmError> {
                Ok(k(n, "6.18.44-fc"))
            }
            fn default_kernel(&self) -> Result<BootKernel, VmError> {
                self.kernel("x")
            }
        }
        assert_eq!(
            choose(Backend::Auto, &wants(Some("mine"), None), &host(), &Same),
            Ok(Target::Host)
        );
    }
}
