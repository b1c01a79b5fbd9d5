//! `wedge probe` in a VM: boot a guest whose plan holds no cell and asks for the probe suite,
//! and take its report off the console.
//!
//! Guarantee: the boot is the executor's ([`crate::executor::vm`]): the same image builder,
//! budgets and console handling, so a guest that panics, goes silent or cannot boot gives an
//! error that says so and quotes its last console lines, never a hang.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::backend::VmTarget;
use crate::executor::vm::{
    Boot, Budgets, VmSettings, boot_and_watch, guest_image, unfinished_reason,
};
use crate::probe::{PROBES, ProbeReport};
use crate::vm::console::FrameKind;
use crate::vm::guest::GuestPlan;

/// What the probe boot may take: a boot, then every probe's bound (see
/// [`crate::probe::run::SuiteOptions::this_program`]) before the one frame that carries them.
fn budgets(settings: &VmSettings, target: &VmTarget) -> Budgets {
    let slow = u64::from(settings.accel.slowdown().max(target.time_scale));
    Budgets {
        boot: Duration::from_secs(20 * slow),
        silence: Duration::from_secs(10 * slow * PROBES.len() as u64 + 15 * slow),
    }
    .overridden(settings)
}

/// Boots `target` and runs the probe suite in it; the guest's report, named after the kernel.
pub fn probe_in_vm(
    target: &VmTarget,
    settings: &VmSettings,
    cancel: &AtomicBool,
) -> Result<ProbeReport, String> {
    let plan = GuestPlan {
        probe: true,
        kernel_version: target.kernel.version.clone(),
        time_scale: target.time_scale,
        jobs: 1,
        scenarios: Vec::new(),
        cells: Vec::new(),
    };
    let mut boot = Boot::default();
    let mut report: Option<Result<ProbeReport, String>> = None;
    match guest_image(settings, &plan, Vec::new()) {
        Err(e) => boot.cut = Some(format!("cannot build the guest image: {e}")),
        Ok(initrd) => {
            let mut on_frame = |frame: &crate::vm::console::Frame, _: &Boot| {
                if frame.kind == FrameKind::Probes {
                    report = Some(
                        serde_json::from_str::<ProbeReport>(&frame.payload)
                            .map_err(|e| format!("unreadable probes frame: {e}")),
                    );
                }
            };
            let b = budgets(settings, target);
            boot_and_watch(
                settings,
                cancel,
                target,
                initrd,
                &b,
                &mut boot,
                &mut on_frame,
            );
        }
    }
    match report {
        Some(Ok(mut r)) => {
            r.kernel = target.kernel.name.clone();
            r.accel = Some(settings.accel.name().to_string());
            Ok(r)
        }
        Some(Err(e)) => Err(e),
        None if boot.done && boot.cut.is_none() => Err(format!(
            "vm (kernel {}): the guest finished without sending its probes",
            target.kernel.name
        )),
        None => Err(format!(
            "{}\n{}",
            unfinished_reason(&boot, target, settings.accel),
            boot.tail().join("\n")
        )),
    }
}
