//! The VM backend: run cells inside a QEMU micro-VM with a chosen kernel and vCPU count.
//!
//! The guest is hermetic: it shares nothing with the host. Its root is an initramfs wedge
//! writes itself ([`initramfs`]), holding the static wedge binaries, the scenario files and the
//! host programs the scenarios run with their shared libraries ([`closure`]), cached by the
//! hash of its bytes ([`image`]). The kernels come from a checked-in list, fetched into the same
//! cache, or are any bzImage a user passes ([`kernels`]).

pub mod closure;
pub mod image;
pub mod initramfs;
pub mod kernels;
