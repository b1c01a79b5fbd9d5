//! Decoding `/proc/<pid>/task/<tid>/syscall` on x86_64: syscall names, seccomp ioctl request names,
//! futex operations, and how long a blocked call can sleep (its timeout, read from the target's memory).

use std::time::Duration;

pub use crate::syscall_names::{
    SECCOMP_IOCTLS, ioctl_request_name, ioctl_request_values, name, number, parse_number,
};

/// What `/proc/<pid>/task/<tid>/syscall` says about a thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyscallState {
    /// The thread is on a CPU.
    Running,
    /// The thread is blocked but not inside a system call (e.g. a page fault or a stop).
    NotInSyscall,
    /// The thread is inside system call `nr` with these six arguments.
    In { nr: u64, args: [u64; 6] },
}

impl SyscallState {
    /// Parses the file's content: `running`, `-1 sp pc`, or `nr a1 .. a6 sp pc` in hex.
    pub fn parse(content: &str) -> Option<SyscallState> {
        let content = content.trim();
        if content == "running" {
            return Some(SyscallState::Running);
        }
        let mut fields = content.split_ascii_whitespace();
        let nr = fields.next()?;
        if nr.starts_with('-') {
            return Some(SyscallState::NotInSyscall);
        }
        let nr = parse_number(nr)?;
        let mut args = [0u64; 6];
        for arg in &mut args {
            *arg = parse_number(fields.next()?)?;
        }
        Some(SyscallState::In { nr, args })
    }
}

const FUTEX_PRIVATE_FLAG: u64 = 128;
const FUTEX_CLOCK_REALTIME: u64 = 256;
const FUTEX_CMD_MASK: u64 = !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);

const FUTEX_OPS: &[&str] = &[
    "FUTEX_WAIT",
    "FUTEX_WAKE",
    "FUTEX_FD",
    "FUTEX_REQUEUE",
    "FUTEX_CMP_REQUEUE",
    "FUTEX_WAKE_OP",
    "FUTEX_LOCK_PI",
    "FUTEX_UNLOCK_PI",
    "FUTEX_TRYLOCK_PI",
    "FUTEX_WAIT_BITSET",
    "FUTEX_WAKE_BITSET",
    "FUTEX_WAIT_REQUEUE_PI",
    "FUTEX_CMP_REQUEUE_PI",
    "FUTEX_LOCK_PI2",
];

fn futex_op_name(op: u64) -> String {
    let cmd = op & FUTEX_CMD_MASK & 0xffff_ffff;
    let mut name = match FUTEX_OPS.get(cmd as usize) {
        Some(n) => (*n).to_string(),
        None => format!("FUTEX_OP_{cmd:#x}"),
    };
    if op & FUTEX_PRIVATE_FLAG != 0 {
        name.push_str("_PRIVATE");
    }
    if op & FUTEX_CLOCK_REALTIME != 0 {
        name.push_str("|FUTEX_CLOCK_REALTIME");
    }
    name
}

/// A short name for a blocked call: the syscall name, with the ioctl request or futex operation,
/// e.g. `ioctl(SECCOMP_IOCTL_NOTIF_RECV)`, `futex(FUTEX_WAIT_PRIVATE)`, `read`.
pub fn call_name(nr: u64, args: &[u64; 6]) -> String {
    let name = name(nr).map_or_else(|| format!("syscall_{nr}"), str::to_string);
    match name.as_str() {
        "ioctl" => match ioctl_request_name(args[1]) {
            Some(req) => format!("ioctl({req})"),
            None => format!("ioctl({:#x})", args[1]),
        },
        "futex" => format!("futex({})", futex_op_name(args[1])),
        "fcntl" => match args[1] {
            7 => "fcntl(F_SETLKW)".to_string(),
            38 => "fcntl(F_OFD_SETLKW)".to_string(),
            cmd => format!("fcntl({cmd})"),
        },
        _ => name,
    }
}

/// The call with its most telling arguments, e.g. `ioctl(fd 5, SECCOMP_IOCTL_NOTIF_RECV)`,
/// `read(fd 3, 4096 bytes)`, `wait4(pid -1)`.
pub fn call_detail(nr: u64, args: &[u64; 6]) -> String {
    let Some(name) = name(nr) else {
        return format!(
            "syscall_{nr}({:#x}, {:#x}, {:#x})",
            args[0], args[1], args[2]
        );
    };
    let fd = args[0] as i64 as i32;
    match name {
        "ioctl" => {
            let req = ioctl_request_name(args[1])
                .map_or_else(|| format!("{:#x}", args[1]), str::to_string);
            format!("ioctl(fd {fd}, {req})")
        }
        "futex" => format!(
            "futex({:#x}, {}, {})",
            args[0],
            futex_op_name(args[1]),
            args[2] as i64 as i32
        ),
        "read" | "write" | "pread64" | "pwrite64" | "recvfrom" | "sendto" => {
            format!("{name}(fd {fd}, {} bytes)", args[2])
        }
        "readv" | "writev" | "recvmsg" | "sendmsg" | "accept" | "accept4" | "connect" | "flock"
        | "fsync" | "fdatasync" | "epoll_wait" | "epoll_pwait" | "epoll_pwait2" | "close" => {
            format!("{name}(fd {fd})")
        }
        "poll" | "ppoll" => format!("{name}({} fds)", args[1]),
        "wait4" => format!("wait4(pid {})", args[0] as i64 as i32),
        "waitid" => format!("waitid(idtype {}, id {})", args[0], args[1] as i64 as i32),
        "fcntl" => format!("{}(fd {fd})", call_name(nr, args).trim_end_matches(')')),
        "openat" => format!("openat(dirfd {fd})"),
        "clone" | "clone3" | "execve" | "exit_group" | "pause" | "rt_sigsuspend" => {
            format!("{name}()")
        }
        _ => format!("{name}({:#x}, {:#x}, {:#x})", args[0], args[1], args[2]),
    }
}

/// Which clock an absolute timeout is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    Realtime,
    Monotonic,
    Boottime,
}

impl Clock {
    fn from_id(id: u64) -> Clock {
        match id as i32 {
            libc::CLOCK_REALTIME | libc::CLOCK_TAI | libc::CLOCK_REALTIME_ALARM => Clock::Realtime,
            libc::CLOCK_BOOTTIME | libc::CLOCK_BOOTTIME_ALARM => Clock::Boottime,
            _ => Clock::Monotonic,
        }
    }

    /// The current value of this clock.
    pub fn now(self) -> Duration {
        let id = match self {
            Clock::Realtime => nix::time::ClockId::CLOCK_REALTIME,
            Clock::Monotonic => nix::time::ClockId::CLOCK_MONOTONIC,
            Clock::Boottime => nix::time::ClockId::CLOCK_BOOTTIME,
        };
        match nix::time::clock_gettime(id) {
            Ok(ts) => Duration::from(ts),
            Err(_) => Duration::ZERO,
        }
    }
}

/// How long a blocked call can sleep before its own timeout wakes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitBound {
    /// No timeout: only an outside event wakes it.
    Indefinite,
    /// Wakes at most this long after the call started.
    Relative(Duration),
    /// Wakes when `clock` reaches this value.
    Absolute(Clock, Duration),
    /// The timeout could not be read (e.g. the target's memory is unreadable).
    Unknown,
}

/// The timeout of blocked call `nr` with `args`, reading pointed-to timespecs with `read_mem`.
pub fn wait_bound(
    nr: u64,
    args: &[u64; 6],
    read_mem: &dyn Fn(u64, usize) -> Option<Vec<u8>>,
) -> WaitBound {
    let Some(name) = name(nr) else {
        return WaitBound::Indefinite;
    };
    let timespec = |addr: u64| -> Option<Duration> {
        let bytes = read_mem(addr, 16)?;
        let sec = i64::from_ne_bytes(bytes[0..8].try_into().ok()?);
        let nsec = i64::from_ne_bytes(bytes[8..16].try_into().ok()?);
        Some(Duration::new(
            sec.max(0) as u64,
            nsec.clamp(0, 999_999_999) as u32,
        ))
    };
    let timeval = |addr: u64| -> Option<Duration> {
        let bytes = read_mem(addr, 16)?;
        let sec = i64::from_ne_bytes(bytes[0..8].try_into().ok()?);
        let usec = i64::from_ne_bytes(bytes[8..16].try_into().ok()?);
        Some(Duration::new(
            sec.max(0) as u64,
            (usec.clamp(0, 999_999) * 1000) as u32,
        ))
    };
    let relative_ptr = |addr: u64| {
        if addr == 0 {
            WaitBound::Indefinite
        } else {
            timespec(addr).map_or(WaitBound::Unknown, WaitBound::Relative)
        }
    };
    let absolute_ptr = |addr: u64, clock: Clock| {
        if addr == 0 {
            WaitBound::Indefinite
        } else {
            timespec(addr).map_or(WaitBound::Unknown, |at| WaitBound::Absolute(clock, at))
        }
    };
    let millis = |ms: u64| {
        let ms = ms as i64 as i32;
        if ms < 0 {
            WaitBound::Indefinite
        } else {
            WaitBound::Relative(Duration::from_millis(ms as u64))
        }
    };
    match name {
        "nanosleep" => timespec(args[0]).map_or(WaitBound::Unknown, WaitBound::Relative),
        "clock_nanosleep" => {
            if args[1] & libc::TIMER_ABSTIME as u64 != 0 {
                absolute_ptr(args[2], Clock::from_id(args[0]))
            } else {
                timespec(args[2]).map_or(WaitBound::Unknown, WaitBound::Relative)
            }
        }
        "poll" => millis(args[2]),
        "epoll_wait" | "epoll_pwait" => millis(args[3]),
        "ppoll" => relative_ptr(args[2]),
        "epoll_pwait2" => relative_ptr(args[3]),
        "pselect6" => relative_ptr(args[4]),
        "select" => {
            if args[4] == 0 {
                WaitBound::Indefinite
            } else {
                timeval(args[4]).map_or(WaitBound::Unknown, WaitBound::Relative)
            }
        }
        "rt_sigtimedwait" => relative_ptr(args[2]),
        "semtimedop" => relative_ptr(args[3]),
        "io_getevents" | "io_pgetevents" | "recvmmsg" => relative_ptr(args[4]),
        "mq_timedreceive" | "mq_timedsend" => absolute_ptr(args[4], Clock::Realtime),
        "futex" => {
            let cmd = args[1] & FUTEX_CMD_MASK & 0xffff_ffff;
            let clock = if args[1] & FUTEX_CLOCK_REALTIME != 0 {
                Clock::Realtime
            } else {
                Clock::Monotonic
            };
            match cmd {
                0 => relative_ptr(args[3]),
                9 | 11 | 13 => absolute_ptr(args[3], clock),
                6 => absolute_ptr(args[3], Clock::Realtime),
                _ => WaitBound::Indefinite,
            }
        }
        "io_uring_enter" => uring_bound(args, read_mem),
        "futex_waitv" => absolute_ptr(args[3], Clock::from_id(args[4])),
        "futex_wait" => absolute_ptr(args[4], Clock::from_id(args[5])),
        _ => WaitBound::Indefinite,
    }
}

/// `io_uring_enter`'s own timeout: with `IORING_ENTER_EXT_ARG`, the `ts` of its
/// `io_uring_getevents_arg` (`sigmask` u64, `sigmask_sz` u32, `min_wait_usec` u32, `ts` u64),
/// relative, or absolute with `IORING_ENTER_ABS_TIMER` on the ring's clock (monotonic unless one
/// was registered), taken as boottime: never later than the truth. An argument in a registered
/// region (`IORING_ENTER_EXT_ARG_REG`) is not read: unknown.
fn uring_bound(args: &[u64; 6], read_mem: &dyn Fn(u64, usize) -> Option<Vec<u8>>) -> WaitBound {
    const EXT_ARG: u64 = 1 << 3;
    const ABS_TIMER: u64 = 1 << 5;
    const EXT_ARG_REG: u64 = 1 << 6;
    let flags = args[3];
    if flags & EXT_ARG == 0 {
        return WaitBound::Indefinite;
    }
    if flags & EXT_ARG_REG != 0 {
        return WaitBound::Unknown;
    }
    let ts =
        read_mem(args[4], 24).and_then(|b| Some(u64::from_ne_bytes(b[16..24].try_into().ok()?)));
    let Some(ts) = ts else {
        return WaitBound::Unknown;
    };
    if ts == 0 {
        return WaitBound::Indefinite;
    }
    let Some(at) = read_mem(ts, 16).and_then(|b| {
        let sec = i64::from_ne_bytes(b[0..8].try_into().ok()?);
        let nsec = i64::from_ne_bytes(b[8..16].try_into().ok()?);
        Some(Duration::new(
            sec.max(0) as u64,
            nsec.clamp(0, 999_999_999) as u32,
        ))
    }) else {
        return WaitBound::Unknown;
    };
    if flags & ABS_TIMER != 0 {
        WaitBound::Absolute(Clock::Boottime, at)
    } else {
        WaitBound::Relative(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_shapes() {
        assert_eq!(
            SyscallState::parse("running\n"),
            Some(SyscallState::Running)
        );
        assert_eq!(
            SyscallState::parse("-1 0x7ffd134d4200 0x7fae6da9aaec\n"),
            Some(SyscallState::NotInSyscall)
        );
        let s =
            SyscallState::parse("16 0x5 0xc0502100 0x7f00 0x0 0x0 0x0 0x7ffd 0x7fae\n").unwrap();
        assert_eq!(
            s,
            SyscallState::In {
                nr: 16,
                args: [5, 0xc050_2100, 0x7f00, 0, 0, 0]
            }
        );
        assert_eq!(SyscallState::parse("garbage"), None);
    }

    #[test]
    fn names_blocking_calls() {
        for (nr, n) in [
            (0, "read"),
            (1, "write"),
            (7, "poll"),
            (16, "ioctl"),
            (23, "select"),
            (34, "pause"),
            (35, "nanosleep"),
            (42, "connect"),
            (43, "accept"),
            (45, "recvfrom"),
            (47, "recvmsg"),
            (61, "wait4"),
            (72, "fcntl"),
            (73, "flock"),
            (130, "rt_sigsuspend"),
            (128, "rt_sigtimedwait"),
            (202, "futex"),
            (230, "clock_nanosleep"),
            (232, "epoll_wait"),
            (247, "waitid"),
            (257, "openat"),
            (270, "pselect6"),
            (271, "ppoll"),
            (281, "epoll_pwait"),
            (288, "accept4"),
            (426, "io_uring_enter"),
            (449, "futex_waitv"),
        ] {
            assert_eq!(name(nr), Some(n), "syscall {nr}");
            assert_eq!(number(n), Some(nr));
        }
        assert_eq!(name(100_000), None);
    }

    #[test]
    fn names_seccomp_ioctls_and_futex_ops() {
        let mut args = [5, 0xc050_2100, 0, 0, 0, 0];
        assert_eq!(call_name(16, &args), "ioctl(SECCOMP_IOCTL_NOTIF_RECV)");
        assert_eq!(
            call_detail(16, &args),
            "ioctl(fd 5, SECCOMP_IOCTL_NOTIF_RECV)"
        );
        args[1] = 0x8008_2102;
        assert_eq!(call_name(16, &args), "ioctl(SECCOMP_IOCTL_NOTIF_ID_VALID)");
        args[1] = 0x4008_2102;
        assert_eq!(call_name(16, &args), "ioctl(SECCOMP_IOCTL_NOTIF_ID_VALID)");
        args[1] = 0x1234;
        assert_eq!(call_name(16, &args), "ioctl(0x1234)");
        assert_eq!(
            call_name(202, &[0, 128, 2, 0, 0, 0]),
            "futex(FUTEX_WAIT_PRIVATE)"
        );
        assert_eq!(
            call_name(202, &[0, 9 | 128, 2, 0, 0, 0]),
            "futex(FUTEX_WAIT_BITSET_PRIVATE)"
        );
        assert_eq!(
            ioctl_request_values("SECCOMP_IOCTL_NOTIF_ID_VALID"),
            Some(vec![0x4008_2102, 0x8008_2102])
        );
        assert_eq!(ioctl_request_values("0x5401"), Some(vec![0x5401]));
        assert_eq!(ioctl_request_values("NOPE"), None);
    }

    #[test]
    fn reads_timeouts() {
        let ts = |sec: i64, nsec: i64| {
            let mut v = sec.to_ne_bytes().to_vec();
            v.extend_from_slice(&nsec.to_ne_bytes());
            v
        };
        let mem = move |addr: u64, _len: usize| -> Option<Vec<u8>> {
            match addr {
                0x1000 => Some(ts(2, 500_000_000)),
                _ => None,
            }
        };
        let nanosleep = number("nanosleep").unwrap();
        assert_eq!(
            wait_bound(nanosleep, &[0x1000, 0, 0, 0, 0, 0], &mem),
            WaitBound::Relative(Duration::from_millis(2500))
        );
        assert_eq!(
            wait_bound(nanosleep, &[0x2000, 0, 0, 0, 0, 0], &mem),
            WaitBound::Unknown
        );
        let futex = number("futex").unwrap();
        assert_eq!(
            wait_bound(futex, &[0, 128, 0, 0, 0, 0], &mem),
            WaitBound::Indefinite
        );
        assert_eq!(
            wait_bound(futex, &[0, 9 | 128, 0, 0x1000, 0, 0], &mem),
            WaitBound::Absolute(Clock::Monotonic, Duration::from_millis(2500))
        );
        let uring = number("io_uring_enter").unwrap();
        let mem_arg = move |addr: u64, len: usize| -> Option<Vec<u8>> {
            match addr {
                // io_uring_getevents_arg: ts at offset 16 points at 0x1000.
                0x3000 => Some(
                    [0u8; 16]
                        .iter()
                        .chain(&0x1000u64.to_ne_bytes())
                        .copied()
                        .collect(),
                ),
                _ => mem(addr, len),
            }
        };
        assert_eq!(
            wait_bound(uring, &[3, 0, 1, 1, 0, 0], &mem_arg),
            WaitBound::Indefinite
        );
        assert_eq!(
            wait_bound(uring, &[3, 0, 1, 1 | 8, 0x3000, 24], &mem_arg),
            WaitBound::Relative(Duration::from_millis(2500))
        );
        assert_eq!(
            wait_bound(uring, &[3, 0, 1, 1 | 8 | 32, 0x3000, 24], &mem_arg),
            WaitBound::Absolute(Clock::Boottime, Duration::from_millis(2500))
        );
        assert_eq!(
            wait_bound(uring, &[3, 0, 1, 1 | 8, 0x4000, 24], &mem_arg),
            WaitBound::Unknown
        );
        let poll = number("poll").unwrap();
        assert_eq!(
            wait_bound(poll, &[0, 1, u64::MAX, 0, 0, 0], &mem),
            WaitBound::Indefinite
        );
        assert_eq!(
            wait_bound(poll, &[0, 1, 100, 0, 0, 0], &mem),
            WaitBound::Relative(Duration::from_millis(100))
        );
        assert_eq!(
            wait_bound(16, &[5, 0xc050_2100, 0, 0, 0, 0], &mem),
            WaitBound::Indefinite
        );
    }
}
