//! `wedge probe` in a VM: boot a guest whose plan holds no cell and asks for the probe suite,
//! and take its report off the console.
//!
//! Guarantee: the boot is the executor's ([`crate::vm::boot`]): the same image builder, budgets and
//! console handling, so a guest that panics, goes silent or cannot boot gives an error that
//! says so and quotes its last console lines, never a hang.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::plan::backend::VmTarget;
use crate::plan::time_scaled;
use crate::probe::{PROBES, ProbeReport};
use crate::vm::boot::{Boot, BootConfig, Budgets, boot_and_watch, unfinished_reason};
use crate::vm::console::{Frame, FrameKind};
use crate::vm::error::ProbeVmError;
use crate::vm::guest_image::guest_image;
use crate::vm::support::VmSettings;
use crate::vm::wire::PackedPlan;

/// What the probe boot may take: a boot, then every probe's bound (see
/// [`crate::probe::run::SuiteOptions::this_program`]) before the one frame that carries them.
fn budgets(settings: &VmSettings, target: &VmTarget) -> Budgets {
    let slow = settings.accel.slowdown().max(target.time_scale);
    let probes = Duration::from_secs(10) * PROBES.len() as u32 + Duration::from_secs(15);
    Budgets {
        boot: time_scaled(Duration::from_secs(20), slow),
        silence: time_scaled(probes, slow),
    }
    .overridden(settings)
}

/// Boots `target` and runs the probe suite in it; the guest's report, named after the kernel.
pub fn probe_in_vm(
    target: &VmTarget,
    settings: &VmSettings,
    cancel: &AtomicBool,
) -> Result<ProbeReport, ProbeVmError> {
    let mut boot = Boot::default();
    let mut report: Option<Result<ProbeReport, serde_json::Error>> = None;
    match guest_image(settings, &PackedPlan::probe_only(target)) {
        Err(e) => boot.cut = Some(format!("cannot build the guest image: {e}")),
        Ok(initrd) => {
            let mut on_frame = |frame: &Frame, _: &Boot| {
                if frame.kind == FrameKind::Probes {
                    report = Some(serde_json::from_str::<ProbeReport>(&frame.payload));
                }
            };
            let config = BootConfig {
                settings,
                target,
                initrd,
                budgets: budgets(settings, target),
                cancel,
                icount: None,
                fixed_append: None,
                capture: false,
            };
            boot_and_watch(&config, &mut boot, &mut on_frame);
        }
    }
    match report {
        Some(Ok(mut r)) => {
            r.kernel = target.kernel.name.clone();
            r.accel = Some(settings.accel.name().to_string());
            Ok(r)
        }
        Some(Err(e)) => Err(ProbeVmError::Unreadable(e)),
        None if boot.done && boot.cut.is_none() => Err(ProbeVmError::NoProbes {
            kernel: target.kernel.name.clone(),
        }),
        None => Err(ProbeVmError::Boot {
            reason: unfinished_reason(&boot, target, settings.accel),
            tail: boot.tail().join("\n"),
        }),
    }
}
