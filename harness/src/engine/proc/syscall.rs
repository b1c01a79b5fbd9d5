//! Decoding `/proc/<pid>/task/<tid>/syscall` on x86_64: syscall names, seccomp ioctl request names,
//! futex operations, and how long a blocked call can sleep (its timeout, read from the target's memory).
//!
//! Syscall numbers and names are the `syscalls` crate's x86_64 table (`Sysno`, generated from
//! the kernel's own), whatever the build target: `/proc` shows an x86_64 thread's numbers.
//! Futex operations are libc's `FUTEX_*`; the few ioctl requests and io_uring flags libc lacks
//! are written out here.

use std::time::Duration;

use syscalls::x86_64::Sysno;

pub use crate::model::syscall_names::{
    SECCOMP_IOCTLS, ioctl_request_name, ioctl_request_values, name, number, parse_number, sysno,
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

const FUTEX_PRIVATE_FLAG: u64 = libc::FUTEX_PRIVATE_FLAG as u64;
const FUTEX_CLOCK_REALTIME: u64 = libc::FUTEX_CLOCK_REALTIME as u64;

/// The futex command of operation `op`: its low 32 bits without the private and clock flags.
fn futex_cmd(op: u64) -> i32 {
    (op as u32 as i32) & !(libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME)
}

fn futex_cmd_name(cmd: i32) -> Option<&'static str> {
    Some(match cmd {
        libc::FUTEX_WAIT => "FUTEX_WAIT",
        libc::FUTEX_WAKE => "FUTEX_WAKE",
        libc::FUTEX_FD => "FUTEX_FD",
        libc::FUTEX_REQUEUE => "FUTEX_REQUEUE",
        libc::FUTEX_CMP_REQUEUE => "FUTEX_CMP_REQUEUE",
        libc::FUTEX_WAKE_OP => "FUTEX_WAKE_OP",
        libc::FUTEX_LOCK_PI => "FUTEX_LOCK_PI",
        libc::FUTEX_UNLOCK_PI => "FUTEX_UNLOCK_PI",
        libc::FUTEX_TRYLOCK_PI => "FUTEX_TRYLOCK_PI",
        libc::FUTEX_WAIT_BITSET => "FUTEX_WAIT_BITSET",
        libc::FUTEX_WAKE_BITSET => "FUTEX_WAKE_BITSET",
        libc::FUTEX_WAIT_REQUEUE_PI => "FUTEX_WAIT_REQUEUE_PI",
        libc::FUTEX_CMP_REQUEUE_PI => "FUTEX_CMP_REQUEUE_PI",
        libc::FUTEX_LOCK_PI2 => "FUTEX_LOCK_PI2",
        _ => return None,
    })
}

fn futex_op_name(op: u64) -> String {
    let cmd = futex_cmd(op);
    let mut name = match futex_cmd_name(cmd) {
        Some(n) => n.to_string(),
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
    let Some(call) = sysno(nr) else {
        return format!("syscall_{nr}");
    };
    match call {
        Sysno::ioctl => match ioctl_request_name(args[1]) {
            Some(req) => format!("ioctl({req})"),
            None => format!("ioctl({:#x})", args[1]),
        },
        Sysno::futex => format!("futex({})", futex_op_name(args[1])),
        Sysno::fcntl => match i32::try_from(args[1]) {
            Ok(libc::F_SETLKW) => "fcntl(F_SETLKW)".to_string(),
            Ok(libc::F_OFD_SETLKW) => "fcntl(F_OFD_SETLKW)".to_string(),
            _ => format!("fcntl({})", args[1]),
        },
        _ => call.name().to_string(),
    }
}

/// The call with its most telling arguments, e.g. `ioctl(fd 5, SECCOMP_IOCTL_NOTIF_RECV)`,
/// `read(fd 3, 4096 bytes)`, `wait4(pid -1)`.
pub fn call_detail(nr: u64, args: &[u64; 6]) -> String {
    let Some(call) = sysno(nr) else {
        return format!(
            "syscall_{nr}({:#x}, {:#x}, {:#x})",
            args[0], args[1], args[2]
        );
    };
    let name = call.name();
    let fd = args[0] as i64 as i32;
    match call {
        Sysno::ioctl => {
            let req = ioctl_request_name(args[1])
                .map_or_else(|| format!("{:#x}", args[1]), str::to_string);
            format!("ioctl(fd {fd}, {req})")
        }
        Sysno::futex => format!(
            "futex({:#x}, {}, {})",
            args[0],
            futex_op_name(args[1]),
            args[2] as i64 as i32
        ),
        Sysno::read
        | Sysno::write
        | Sysno::pread64
        | Sysno::pwrite64
        | Sysno::recvfrom
        | Sysno::sendto => format!("{name}(fd {fd}, {} bytes)", args[2]),
        Sysno::readv
        | Sysno::writev
        | Sysno::recvmsg
        | Sysno::sendmsg
        | Sysno::accept
        | Sysno::accept4
        | Sysno::connect
        | Sysno::flock
        | Sysno::fsync
        | Sysno::fdatasync
        | Sysno::epoll_wait
        | Sysno::epoll_pwait
        | Sysno::epoll_pwait2
        | Sysno::close => format!("{name}(fd {fd})"),
        Sysno::poll | Sysno::ppoll => format!("{name}({} fds)", args[1]),
        Sysno::wait4 => format!("wait4(pid {})", args[0] as i64 as i32),
        Sysno::waitid => format!("waitid(idtype {}, id {})", args[0], args[1] as i64 as i32),
        Sysno::fcntl => format!("{}(fd {fd})", call_name(nr, args).trim_end_matches(')')),
        Sysno::openat => format!("openat(dirfd {fd})"),
        Sysno::clone
        | Sysno::clone3
        | Sysno::execve
        | Sysno::exit_group
        | Sysno::pause
        | Sysno::rt_sigsuspend => format!("{name}()"),
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

/// Reads `len` bytes at an address of the blocked thread's memory (`None`: unreadable).
type ReadMem<'a> = &'a dyn Fn(u64, usize) -> Option<Vec<u8>>;

/// The timeout of blocked call `nr` with `args`, reading pointed-to timespecs with `read_mem`.
pub fn wait_bound(nr: u64, args: &[u64; 6], read_mem: ReadMem<'_>) -> WaitBound {
    let Some(call) = sysno(nr) else {
        return WaitBound::Indefinite;
    };
    let t = Timeouts(read_mem);
    match call {
        Sysno::nanosleep => t.required(args[0]),
        Sysno::clock_nanosleep if args[1] & libc::TIMER_ABSTIME as u64 != 0 => {
            t.absolute(args[2], Clock::from_id(args[0]))
        }
        Sysno::clock_nanosleep => t.required(args[2]),
        Sysno::poll => millis(args[2]),
        Sysno::epoll_wait | Sysno::epoll_pwait => millis(args[3]),
        Sysno::ppoll | Sysno::rt_sigtimedwait => t.relative(args[2]),
        Sysno::epoll_pwait2 | Sysno::semtimedop => t.relative(args[3]),
        Sysno::pselect6 | Sysno::io_getevents | Sysno::io_pgetevents | Sysno::recvmmsg => {
            t.relative(args[4])
        }
        Sysno::select => t.relative_timeval(args[4]),
        Sysno::mq_timedreceive | Sysno::mq_timedsend => t.absolute(args[4], Clock::Realtime),
        Sysno::futex => futex_bound(args[1], args[3], &t),
        Sysno::io_uring_enter => uring_bound(args, &t),
        Sysno::futex_waitv => t.absolute(args[3], Clock::from_id(args[4])),
        Sysno::futex_wait => t.absolute(args[4], Clock::from_id(args[5])),
        _ => WaitBound::Indefinite,
    }
}

/// A futex operation's own timeout: `FUTEX_WAIT`'s is relative, the bitset, requeue-PI and
/// `LOCK_PI2` waits' absolute on the clock the op names, `FUTEX_LOCK_PI`'s absolute realtime.
fn futex_bound(op: u64, timeout: u64, t: &Timeouts<'_>) -> WaitBound {
    let clock = if op & FUTEX_CLOCK_REALTIME != 0 {
        Clock::Realtime
    } else {
        Clock::Monotonic
    };
    match futex_cmd(op) {
        libc::FUTEX_WAIT => t.relative(timeout),
        libc::FUTEX_WAIT_BITSET | libc::FUTEX_WAIT_REQUEUE_PI | libc::FUTEX_LOCK_PI2 => {
            t.absolute(timeout, clock)
        }
        libc::FUTEX_LOCK_PI => t.absolute(timeout, Clock::Realtime),
        _ => WaitBound::Indefinite,
    }
}

/// A timeout in milliseconds as `poll` and `epoll_wait` take it: negative waits forever.
fn millis(ms: u64) -> WaitBound {
    let ms = ms as i64 as i32;
    if ms < 0 {
        WaitBound::Indefinite
    } else {
        WaitBound::Relative(Duration::from_millis(ms as u64))
    }
}

/// Reads the timeouts a blocked call points at.
struct Timeouts<'a>(ReadMem<'a>);

impl Timeouts<'_> {
    /// A `struct timespec` (negative fields clamp to zero).
    fn timespec(&self, addr: u64) -> Option<Duration> {
        let bytes = (self.0)(addr, 16)?;
        let sec = i64::from_ne_bytes(bytes[0..8].try_into().ok()?);
        let nsec = i64::from_ne_bytes(bytes[8..16].try_into().ok()?);
        Some(Duration::new(
            sec.max(0) as u64,
            nsec.clamp(0, 999_999_999) as u32,
        ))
    }

    /// A relative timespec that must be there (`nanosleep`): unreadable, even at 0, is unknown.
    fn required(&self, addr: u64) -> WaitBound {
        self.timespec(addr)
            .map_or(WaitBound::Unknown, WaitBound::Relative)
    }

    /// A relative timespec; a null pointer waits forever.
    fn relative(&self, addr: u64) -> WaitBound {
        if addr == 0 {
            return WaitBound::Indefinite;
        }
        self.required(addr)
    }

    /// An absolute timespec on `clock`; a null pointer waits forever.
    fn absolute(&self, addr: u64, clock: Clock) -> WaitBound {
        if addr == 0 {
            return WaitBound::Indefinite;
        }
        self.timespec(addr)
            .map_or(WaitBound::Unknown, |at| WaitBound::Absolute(clock, at))
    }

    /// A relative `struct timeval` (`select`); a null pointer waits forever.
    fn relative_timeval(&self, addr: u64) -> WaitBound {
        if addr == 0 {
            return WaitBound::Indefinite;
        }
        let timeval = || -> Option<Duration> {
            let bytes = (self.0)(addr, 16)?;
            let sec = i64::from_ne_bytes(bytes[0..8].try_into().ok()?);
            let usec = i64::from_ne_bytes(bytes[8..16].try_into().ok()?);
            Some(Duration::new(
                sec.max(0) as u64,
                (usec.clamp(0, 999_999) * 1000) as u32,
            ))
        };
        timeval().map_or(WaitBound::Unknown, WaitBound::Relative)
    }
}

/// `io_uring_enter`'s own timeout: with `IORING_ENTER_EXT_ARG`, the `ts` of its
/// `io_uring_getevents_arg` (`sigmask` u64, `sigmask_sz` u32, `min_wait_usec` u32, `ts` u64),
/// relative, or absolute with `IORING_ENTER_ABS_TIMER` on the ring's clock (monotonic unless one
/// was registered), taken as boottime: never later than the truth. An argument in a registered
/// region (`IORING_ENTER_EXT_ARG_REG`) is not read: unknown. (libc has no `IORING_ENTER_*`.)
fn uring_bound(args: &[u64; 6], t: &Timeouts<'_>) -> WaitBound {
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
    let ts = (t.0)(args[4], 24).and_then(|b| Some(u64::from_ne_bytes(b[16..24].try_into().ok()?)));
    let Some(ts) = ts else {
        return WaitBound::Unknown;
    };
    if ts == 0 {
        return WaitBound::Indefinite;
    }
    let Some(at) = t.timespec(ts) else {
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
