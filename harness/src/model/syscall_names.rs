//! The x86_64 system call and ioctl request names scenarios use (`wait_for =
//! { syscall = "futex" }`, `ioctl = "SECCOMP_IOCTL_NOTIF_RECV"`) and the decoder of `/proc`
//! syscall files reports with, by number and by name: plain data, so scenarios check names at
//! load without the `/proc` readers (the `proc::syscall` decoder).
//!
//! Syscall numbers and names are the `syscalls` crate's x86_64 table (`Sysno`, generated from
//! the kernel's own), whatever the build target: `/proc` shows an x86_64 thread's numbers. The
//! few ioctl requests are written out here.

use syscalls::x86_64::Sysno;

/// A number as `/proc` and scenario files write it: decimal, or hex with `0x`.
pub fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The x86_64 syscall numbered `nr`, if the kernel has one.
pub fn sysno(nr: u64) -> Option<Sysno> {
    Sysno::new(usize::try_from(nr).ok()?)
}

/// The x86_64 name of syscall `nr`.
pub fn name(nr: u64) -> Option<&'static str> {
    sysno(nr).map(|call| call.name())
}

/// The x86_64 number of the syscall called `name`.
pub fn number(name: &str) -> Option<u64> {
    let call: Sysno = name.parse().ok()?;
    u64::try_from(call.id()).ok()
}

/// Seccomp user-notification ioctl requests, by name and value (both directions of `ID_VALID`).
pub const SECCOMP_IOCTLS: &[(&str, u64)] = &[
    ("SECCOMP_IOCTL_NOTIF_RECV", 0xc050_2100),
    ("SECCOMP_IOCTL_NOTIF_SEND", 0xc018_2101),
    ("SECCOMP_IOCTL_NOTIF_ID_VALID", 0x4008_2102),
    ("SECCOMP_IOCTL_NOTIF_ID_VALID", 0x8008_2102),
    ("SECCOMP_IOCTL_NOTIF_ADDFD", 0x4018_2103),
    ("SECCOMP_IOCTL_NOTIF_SET_FLAGS", 0x4008_2104),
];

/// Other ioctl requests a blocked thread is commonly found in.
const OTHER_IOCTLS: &[(&str, u64)] = &[
    ("TCGETS", 0x5401),
    ("TCSETS", 0x5402),
    ("TCSETSW", 0x5403),
    ("TIOCSCTTY", 0x540e),
    ("TIOCGPGRP", 0x540f),
    ("TIOCSPGRP", 0x5410),
    ("TIOCGWINSZ", 0x5413),
    ("FIONREAD", 0x541b),
];

/// The name of ioctl request `request`, when known.
pub fn ioctl_request_name(request: u64) -> Option<&'static str> {
    let request = request & 0xffff_ffff;
    SECCOMP_IOCTLS
        .iter()
        .chain(OTHER_IOCTLS)
        .find(|&&(_, value)| value == request)
        .map(|&(name, _)| name)
}

/// Every value of the ioctl request called `name` (for matching), or `None` when unknown.
pub fn ioctl_request_values(name: &str) -> Option<Vec<u64>> {
    let values: Vec<u64> = SECCOMP_IOCTLS
        .iter()
        .chain(OTHER_IOCTLS)
        .filter(|&&(n, _)| n == name)
        .map(|&(_, v)| v)
        .collect();
    if values.is_empty() {
        parse_number(name).map(|v| vec![v])
    } else {
        Some(values)
    }
}
