//! The VM backend: run cells inside a QEMU micro-VM with a chosen kernel and vCPU count.
//!
//! The guest is hermetic: it shares nothing with the host. Its root is an initramfs wedge
//! writes itself ([`initramfs`]), holding wedge's own binaries (the host's build without debug
//! info, [`strip`]), the scenario files and the host programs the scenarios run, each with its
//! shared libraries ([`closure`]), cached by the
//! hash of its bytes ([`image`]). The kernels come from a checked-in list, fetched into the same
//! cache, or are any bzImage a user passes ([`kernels`]). [`qemu`] boots and watches one VM;
//! `guest` (a layer above) is wedge as the guest's `/init`, running the plan the host packed for it
//! ([`wire`], in an image built by [`guest_image`]) with the host's engine and streaming
//! records over the serial console in [`console`] frames; [`boot`] boots one guest and watches
//! its console within its budgets; [`recording`] keeps a 1-vCPU boot's QEMU record/replay log when a trial in it
//! failed, and [`replay`] runs it again; [`support`] finds what this machine has. The VM executor
//! (`exec::vm`, a layer above) ties them together.

pub mod boot;
pub mod closure;
pub mod console;
pub mod error;
pub mod guest_image;
pub mod image;
pub mod initramfs;
pub mod kernels;
pub mod qemu;
pub mod recording;
pub mod replay;
pub mod strip;
pub mod support;
pub mod wire;
