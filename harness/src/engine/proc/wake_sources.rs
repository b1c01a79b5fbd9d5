//! What can wake a blocked thread besides its own timeout, as the kernel shows it: the timerfds,
//! epoll sets and signalfds a process holds (`/proc/PID/fd`, `/proc/PID/fdinfo/N`), the fds a
//! thread polls or selects on (read from its memory), its POSIX timers (`/proc/PID/timers`), its
//! signal dispositions (`/proc/PID/status`), and the system's armed hrtimers (`/proc/timer_list`).
//!
//! Everything here only reads and parses; what the observations mean for quiescence is decided by
//! `monitor::wake`, which needs no kernel. Each parser is total: malformed text gives `None` or an
//! empty list, and the caller treats "could not see" conservatively.
//!
//! The parsers are by hand: the `procfs` crate reads none of the timerfd, epoll, signalfd or
//! io_uring fdinfo, `/proc/PID/timers` or `/proc/timer_list`. It does read `status`, but the
//! signal masks are read on the monitor's sampling path, where its `Status` (every line parsed
//! into a map) costs about 40 µs a parse against 3 µs for the two lines wedge needs (release
//! build, measured on a loaded 2-core machine).
//!
//! What this kernel (6.18) shows, checked with a small C program:
//! - a timerfd's fdinfo has `clockid`, `ticks`, `settime flags`, `it_value: (sec, nsec)` (the
//!   time left to the next expiry, relative, even for `TFD_TIMER_ABSTIME`) and `it_interval`; a
//!   disarmed timerfd shows `it_value: (0, 0)`;
//! - an epoll fd's fdinfo has one `tfd: N events: HEX data: HEX pos:.. ino:.. sdev:..` line per
//!   watched fd (N is the fd number the watch was added under);
//! - `/proc/PID/timers` lists each POSIX timer as `ID: n`, `signal: N/ptr`,
//!   `notify: signal/pid.N|thread/tid.N|none`, `ClockID: n`, and an **armed and a disarmed timer
//!   look exactly the same** (no expiry, no armed flag): only `/proc/timer_list` (root) tells
//!   whether any POSIX timer is queued, as a `posix_timer_fn` hrtimer, without saying whose;
//! - interval timers and `alarm()` have no per-process view: `/proc/PID/stat` field 21
//!   (itrealvalue) is always 0, `/proc/PID/status` has nothing; an armed `ITIMER_REAL` shows in
//!   `/proc/timer_list` as an `it_real_fn` hrtimer, again without its owner.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use syscalls::x86_64::Sysno;

use super::syscall;

/// Most fds wedge reads from a poll or select set; a larger set counts as unreadable.
pub const MAX_WAIT_FDS: u64 = 4096;

/// A timerfd as its fdinfo shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerFd {
    pub clockid: i32,
    /// Expirations not yet read: a read returns at once while this is non-zero.
    pub ticks: u64,
    /// Time left to the next expiry; zero when disarmed.
    pub value: Duration,
    pub interval: Duration,
}

impl TimerFd {
    /// Whether it will expire (again) or has expired unread.
    pub fn armed(&self) -> bool {
        !self.value.is_zero() || self.ticks > 0
    }
}

/// An fd that can wake a waiter on its own, or that holds others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdObject {
    Timer(TimerFd),
    /// An epoll set: the fds it watches.
    Epoll(Vec<i32>),
    /// A signalfd: the signals it reads (bit `n - 1` for signal `n`).
    Signal(u64),
    /// An io_uring instance; `None`: its fdinfo did not parse.
    Ring(Option<Ring>),
}

/// An io_uring's counters as its fdinfo shows them (6.18: `SqHead`, `SqTail`, `CachedSqHead`,
/// `CqHead`, `CqTail`, `CachedCqTail`, then `PollList:` and `CqOverflowList:` each followed by
/// one indented line per entry). No field counts requests in flight; see [`Ring::idle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ring {
    pub sq_head: u32,
    pub sq_tail: u32,
    /// SQEs the kernel has consumed (submitted) since the ring was made.
    pub cached_sq_head: u32,
    pub cq_head: u32,
    pub cq_tail: u32,
    /// CQEs the kernel has posted since the ring was made.
    pub cached_cq_tail: u32,
    /// Entries listed under `PollList:` (armed polls) and `CqOverflowList:`.
    pub polls: usize,
    pub overflow: usize,
}

impl Ring {
    /// Whether nothing can complete on this ring: every SQE written was consumed, every SQE
    /// consumed has posted its CQE, every CQE posted was reaped, no poll is armed and nothing
    /// overflowed. One request posting no CQE (`IOSQE_CQE_SKIP_SUCCESS`) keeps a ring from ever
    /// looking idle, and a multishot one posting several makes the counts differ too: both are
    /// "in flight", the sound side.
    pub fn idle(&self) -> bool {
        self.sq_tail == self.cached_sq_head
            && self.sq_head == self.cached_sq_head
            && self.cached_sq_head == self.cached_cq_tail
            && self.cq_tail == self.cached_cq_tail
            && self.cq_head == self.cq_tail
            && self.polls == 0
            && self.overflow == 0
    }
}

/// Parses an io_uring's fdinfo; `None` if a counter is missing.
pub fn parse_ring(fdinfo: &str) -> Option<Ring> {
    let num = |key: &str| -> Option<u32> {
        fdinfo
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
            .trim()
            .parse()
            .ok()
    };
    // The indented lines after a `Key:` header line, up to the next unindented one.
    let listed = |key: &str| {
        fdinfo
            .lines()
            .skip_while(|l| !l.starts_with(key))
            .skip(1)
            .take_while(|l| l.starts_with([' ', '\t']))
            .count()
    };
    Some(Ring {
        sq_head: num("SqHead")?,
        sq_tail: num("SqTail")?,
        cached_sq_head: num("CachedSqHead")?,
        cq_head: num("CqHead")?,
        cq_tail: num("CqTail")?,
        cached_cq_tail: num("CachedCqTail")?,
        polls: listed("PollList:"),
        overflow: listed("CqOverflowList:"),
    })
}

/// A POSIX timer as `/proc/PID/timers` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PosixTimer {
    pub id: i64,
    pub signo: i32,
    /// `signal/pid.N`, `thread/tid.N` or `none`.
    pub notify: String,
    pub clock: i32,
}

/// A process's signal masks from `/proc/PID/status` (bit `n - 1` for signal `n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SignalMasks {
    pub caught: u64,
    pub ignored: u64,
}

/// The armed hrtimers of the whole system that matter here, as time left (latest bound).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelTimers {
    /// `it_real_fn`: an armed `ITIMER_REAL` / `alarm()` of some process.
    pub itimer_real: Vec<Duration>,
    /// `posix_timer_fn`: an armed POSIX timer of some process.
    pub posix: Vec<Duration>,
}

impl KernelTimers {
    /// The view of a list of system timers.
    pub fn of(timers: &[SystemTimer]) -> KernelTimers {
        let left = |real: bool| -> Vec<Duration> {
            timers
                .iter()
                .filter(|t| t.real == real)
                .map(|t| t.left)
                .collect()
        };
        KernelTimers {
            itimer_real: left(true),
            posix: left(false),
        }
    }
}

/// One armed `it_real_fn` or `posix_timer_fn` hrtimer of `/proc/timer_list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemTimer {
    /// `ITIMER_REAL` / `alarm()` (else a POSIX timer).
    pub real: bool,
    /// Its hard expiry on its clock base, in ns: the same timer shows the same value in every
    /// read until it fires or is re-armed, so it names the timer across reads. `None`: the line
    /// did not say.
    pub expires_ns: Option<u64>,
    /// Time left to the hard expiry, as of the kernel's clock reading during the read (0 when
    /// overdue).
    pub left: Duration,
}

impl SystemTimer {
    /// Whether `other` is this timer, armed the same (both must carry an expiry).
    pub fn same_as(&self, other: &SystemTimer) -> bool {
        self.real == other.real && self.expires_ns.is_some() && self.expires_ns == other.expires_ns
    }
}

/// The fds a blocked thread waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFds {
    /// The call does not wait on fds.
    None,
    Fds(Vec<i32>),
    /// It waits on fds, but wedge could not read which (memory unreadable, set too large).
    Unreadable,
}

/// Parses a timerfd's fdinfo; `None` if it is not one.
pub fn parse_timerfd(fdinfo: &str) -> Option<TimerFd> {
    let field = |key: &str| {
        fdinfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    let pair = |key: &str| -> Option<Duration> {
        let text = field(key)?.strip_prefix('(')?.strip_suffix(')')?;
        let (sec, nsec) = text.split_once(',')?;
        let sec: i64 = sec.trim().parse().ok()?;
        let nsec: i64 = nsec.trim().parse().ok()?;
        Some(Duration::new(
            sec.max(0) as u64,
            nsec.clamp(0, 999_999_999) as u32,
        ))
    };
    Some(TimerFd {
        clockid: field("clockid:")?.parse().ok()?,
        ticks: field("ticks:")?.parse().ok()?,
        value: pair("it_value:")?,
        interval: pair("it_interval:")?,
    })
}

/// The fds an epoll fdinfo lists (`tfd: N ...` lines).
pub fn parse_epoll(fdinfo: &str) -> Vec<i32> {
    fdinfo
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("tfd:"))
        .filter_map(|rest| rest.split_ascii_whitespace().next()?.parse().ok())
        .collect()
}

/// The mask of a signalfd's fdinfo (`sigmask: HEX`).
pub fn parse_signalfd(fdinfo: &str) -> Option<u64> {
    let hex = fdinfo.lines().find_map(|l| l.strip_prefix("sigmask:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Parses `/proc/PID/timers`: blocks of `ID:`, `signal:`, `notify:`, `ClockID:` lines.
pub fn parse_posix_timers(text: &str) -> Vec<PosixTimer> {
    let mut out: Vec<PosixTimer> = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "ID" => match value.parse() {
                Ok(id) => out.push(PosixTimer {
                    id,
                    signo: 0,
                    notify: String::new(),
                    clock: 0,
                }),
                Err(_) => continue,
            },
            "signal" => {
                if let Some(t) = out.last_mut() {
                    let n = value.split('/').next().unwrap_or("");
                    t.signo = n.trim().parse().unwrap_or(0);
                }
            }
            "notify" => {
                if let Some(t) = out.last_mut() {
                    t.notify = value.to_string();
                }
            }
            "ClockID" => {
                if let Some(t) = out.last_mut() {
                    t.clock = value.parse().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    out
}

/// Parses the signal masks of `/proc/PID/status`.
pub fn parse_signal_masks(status: &str) -> Option<SignalMasks> {
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    Some(SignalMasks {
        caught: mask("SigCgt:")?,
        ignored: mask("SigIgn:")?,
    })
}

/// Parses `/proc/timer_list`: every `it_real_fn` and `posix_timer_fn` entry, from its
/// `# expires at A-B nsecs [in X to Y nsecs]` line (B: its hard expiry; Y: the same, relative).
pub fn parse_timer_list(text: &str) -> Vec<SystemTimer> {
    let mut out = Vec::new();
    let mut pending: Option<bool> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') && line.contains("expires at") {
            let Some(real) = pending.take() else {
                continue;
            };
            let (expires_ns, left) = parse_expiry(line);
            out.push(SystemTimer {
                real,
                expires_ns,
                left,
            });
        } else if line.starts_with('#') {
            pending = if line.contains(", it_real_fn,") {
                Some(true)
            } else if line.contains(", posix_timer_fn,") {
                Some(false)
            } else {
                None
            };
        }
    }
    out
}

/// The hard expiry (absolute) and the time left to it of one `# expires at` line.
fn parse_expiry(line: &str) -> (Option<u64>, Duration) {
    let expires_ns = line
        .split_once("expires at ")
        .and_then(|(_, rest)| rest.split_ascii_whitespace().next())
        .and_then(|range| range.split_once('-'))
        .and_then(|(_, hard)| hard.parse::<u64>().ok());
    let left = line
        .split_once("[in ")
        .and_then(|(_, rest)| rest.split_once(" to "))
        .and_then(|(_, hard)| hard.split_ascii_whitespace().next())
        .and_then(|n| n.parse::<i64>().ok())
        .map_or(Duration::ZERO, |n| Duration::from_nanos(n.max(0) as u64));
    (expires_ns, left)
}

/// The fds (of any kind) set in `nfds` bits of an fd_set in `bytes`.
pub fn fd_set_members(bytes: &[u8], nfds: u64) -> Vec<i32> {
    (0..nfds.min(bytes.len() as u64 * 8))
        .filter(|&fd| bytes[(fd / 8) as usize] & (1 << (fd % 8)) != 0)
        .map(|fd| fd as i32)
        .collect()
}

/// The fds of a `struct pollfd` array (8 bytes each: fd, events, revents); negative fds are
/// skipped, as the kernel does.
pub fn pollfd_members(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(8)
        .filter_map(|c| {
            let fd = i32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            (fd >= 0).then_some(fd)
        })
        .collect()
}

/// The fds blocked call `nr` waits on, reading poll and select sets with `read_mem`.
pub fn wait_fds(
    nr: u64,
    args: &[u64; 6],
    read_mem: &dyn Fn(u64, usize) -> Option<Vec<u8>>,
) -> WaitFds {
    let fd = args[0] as i64 as i32;
    match syscall::sysno(nr) {
        Some(
            Sysno::read
            | Sysno::readv
            | Sysno::pread64
            | Sysno::preadv
            | Sysno::preadv2
            | Sysno::epoll_wait
            | Sysno::epoll_pwait
            | Sysno::epoll_pwait2
            | Sysno::io_uring_enter,
        ) => WaitFds::Fds(vec![fd]),
        Some(Sysno::poll | Sysno::ppoll) => {
            let nfds = args[1];
            if nfds == 0 {
                return WaitFds::Fds(Vec::new());
            }
            if nfds > MAX_WAIT_FDS {
                return WaitFds::Unreadable;
            }
            read_mem(args[0], nfds as usize * 8)
                .map_or(WaitFds::Unreadable, |b| WaitFds::Fds(pollfd_members(&b)))
        }
        Some(Sysno::select | Sysno::pselect6) => {
            let nfds = args[0];
            if nfds > MAX_WAIT_FDS {
                return WaitFds::Unreadable;
            }
            let len = nfds.div_ceil(64) as usize * 8;
            let mut fds = Vec::new();
            for &set in &args[1..4] {
                if set == 0 || len == 0 {
                    continue;
                }
                match read_mem(set, len) {
                    Some(bytes) => fds.extend(fd_set_members(&bytes, nfds)),
                    None => return WaitFds::Unreadable,
                }
            }
            fds.sort_unstable();
            fds.dedup();
            WaitFds::Fds(fds)
        }
        _ => WaitFds::None,
    }
}

/// The signal set an `rt_sigtimedwait` (or `sigwaitinfo`) waits for, from its first argument.
pub fn sigwait_set(
    nr: u64,
    args: &[u64; 6],
    read_mem: &dyn Fn(u64, usize) -> Option<Vec<u8>>,
) -> Option<u64> {
    if syscall::sysno(nr) != Some(Sysno::rt_sigtimedwait) {
        return None;
    }
    let bytes = read_mem(args[0], 8)?;
    Some(u64::from_ne_bytes(bytes.try_into().ok()?))
}

/// The timerfds, epoll sets, signalfds and io_urings process `pid` holds, by fd.
pub fn fd_objects(pid: i32) -> BTreeMap<i32, FdObject> {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(link) = fs::read_link(entry.path()) else {
            continue;
        };
        let kind = link.to_string_lossy();
        if !kind.starts_with("anon_inode:") {
            continue;
        }
        let info = || fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok();
        let object = match kind.as_ref() {
            "anon_inode:[timerfd]" => info().and_then(|i| parse_timerfd(&i)).map(FdObject::Timer),
            "anon_inode:[eventpoll]" => info().map(|i| FdObject::Epoll(parse_epoll(&i))),
            "anon_inode:[signalfd]" => info()
                .and_then(|i| parse_signalfd(&i))
                .map(FdObject::Signal),
            "anon_inode:[io_uring]" => Some(FdObject::Ring(info().and_then(|i| parse_ring(&i)))),
            _ => None,
        };
        if let Some(object) = object {
            out.insert(fd, object);
        }
    }
    out
}

/// The POSIX timers of process `pid`; `None` when the kernel has no `/proc/PID/timers`.
pub fn posix_timers(pid: i32) -> Option<Vec<PosixTimer>> {
    fs::read_to_string(format!("/proc/{pid}/timers"))
        .ok()
        .map(|t| parse_posix_timers(&t))
}

/// The signal masks of process `pid`.
pub fn signal_masks(pid: i32) -> Option<SignalMasks> {
    parse_signal_masks(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The system's armed interval and POSIX timers; `None` when `/proc/timer_list` is unreadable.
pub fn kernel_timers() -> Option<Vec<SystemTimer>> {
    fs::read_to_string("/proc/timer_list")
        .ok()
        .map(|t| parse_timer_list(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_io_uring_fdinfo() {
        let busy = "pos:\t0\nflags:\t02000002\nSqMask:\t0x3\nSqHead:\t1\nSqTail:\t1\n\
                    CachedSqHead:\t1\nCqMask:\t0x7\nCqHead:\t0\nCqTail:\t0\nCachedCqTail:\t0\n\
                    SQEs:\t0\nCQEs:\t0\nSqThread:\t-1\nPollList:\nCqOverflowList:\nNAPI:\tdisabled\n";
        let r = parse_ring(busy).unwrap();
        assert_eq!((r.cached_sq_head, r.cached_cq_tail, r.polls), (1, 0, 0));
        assert!(!r.idle());
        let done = busy
            .replace("CqTail:\t0", "CqTail:\t1")
            .replace("CqHead:\t0", "CqHead:\t1")
            .replace("CachedCqTail:\t0", "CachedCqTail:\t1");
        assert!(parse_ring(&done).unwrap().idle());
        let polled = done.replace("PollList:\n", "PollList:\n  op=6, task_works=0\n");
        assert_eq!(parse_ring(&polled).unwrap().polls, 1);
        assert!(!parse_ring(&polled).unwrap().idle());
        assert_eq!(parse_ring("SqHead:\t1\n"), None);
    }

    #[test]
    fn parses_timerfd_fdinfo() {
        let armed = "pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\nclockid: 1\nticks: 0\n\
                     settime flags: 00\nit_value: (2, 950308867)\nit_interval: (1, 200000000)\n";
        let t = parse_timerfd(armed).unwrap();
        assert_eq!(t.clockid, 1);
        assert_eq!(t.value, Duration::new(2, 950_308_867));
        assert_eq!(t.interval, Duration::from_millis(1200));
        assert!(t.armed());
        let disarmed =
            "clockid: 7\nticks: 0\nsettime flags: 00\nit_value: (0, 0)\nit_interval: (0, 0)\n";
        assert!(!parse_timerfd(disarmed).unwrap().armed());
        let fired = "clockid: 1\nticks: 2\nit_value: (0, 0)\nit_interval: (0, 0)\n";
        assert!(parse_timerfd(fired).unwrap().armed());
        assert_eq!(parse_timerfd("pos:\t0\nflags:\t02\n"), None);
    }

    #[test]
    fn parses_epoll_and_signalfd_fdinfo() {
        let ep = "pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\n\
                  tfd:        3 events:       19 data:               4d  pos:0 ino:40e sdev:10\n\
                  tfd:       12 events:       19 data:               4d  pos:0 ino:40e sdev:10\n";
        assert_eq!(parse_epoll(ep), vec![3, 12]);
        assert!(parse_epoll("pos:\t0\n").is_empty());
        assert_eq!(
            parse_signalfd("pos:\t0\nsigmask:\t0000000000002000\n"),
            Some(1 << 13)
        );
    }

    #[test]
    fn parses_posix_timers() {
        let text = "ID: 1\nsignal: 12/0000000000000000\nnotify: signal/pid.5865\nClockID: 0\n\
                    ID: 0\nsignal: 10/00007f0000000000\nnotify: thread/tid.5866\nClockID: 1\n";
        let timers = parse_posix_timers(text);
        assert_eq!(
            timers,
            vec![
                PosixTimer {
                    id: 1,
                    signo: 12,
                    notify: "signal/pid.5865".into(),
                    clock: 0
                },
                PosixTimer {
                    id: 0,
                    signo: 10,
                    notify: "thread/tid.5866".into(),
                    clock: 1
                },
            ]
        );
        assert!(parse_posix_timers("").is_empty());
    }

    #[test]
    fn parses_signal_masks() {
        let status = "Name:\tt\nSigQ:\t2/96363\nSigPnd:\t0000000000000000\nSigBlk:\t0000000000010000\n\
                      SigIgn:\t0000000000000006\nSigCgt:\t0000000000002200\n";
        let m = parse_signal_masks(status).unwrap();
        assert_eq!(m.caught, (1 << 9) | (1 << 13)); // SIGUSR1, SIGALRM
        assert_eq!(m.ignored, 0b110);
        assert_eq!(parse_signal_masks("Name:\tt\n"), None);
    }

    #[test]
    fn parses_timer_list() {
        let text = "now at 257557618348 nsecs\n\ncpu: 0\n clock 0:\nactive timers:\n\
             #0: <00000000b3b19be3>, tick_nohz_handler, S:01\n\
             # expires at 257560000000-257560000000 nsecs [in 2381652 to 2381652 nsecs]\n\
             #1: <00000000885f12eb>, it_real_fn, S:01\n\
             # expires at 257570530285-257570580285 nsecs [in 12911937 to 12961937 nsecs]\n\
             #2: <000000002ffb7738>, posix_timer_fn, S:01\n\
             # expires at 257980765131-257980815131 nsecs [in 423146783 to 423196783 nsecs]\n\
             #3: <000000006ab17261>, timerfd_tmrproc, S:01\n\
             # expires at 258480688048-258480688048 nsecs [in 923069700 to 923069700 nsecs]\n";
        let timers = parse_timer_list(text);
        assert_eq!(
            timers,
            vec![
                SystemTimer {
                    real: true,
                    expires_ns: Some(257_570_580_285),
                    left: Duration::from_nanos(12_961_937)
                },
                SystemTimer {
                    real: false,
                    expires_ns: Some(257_980_815_131),
                    left: Duration::from_nanos(423_196_783)
                },
            ]
        );
        let k = KernelTimers::of(&timers);
        assert_eq!(k.itimer_real, vec![Duration::from_nanos(12_961_937)]);
        assert_eq!(k.posix, vec![Duration::from_nanos(423_196_783)]);
        assert!(parse_timer_list("").is_empty());
        // Overdue, and an expiry the line does not give: no identity, time left still read.
        let odd = " #0: <0>, it_real_fn, S:01\n # expires at soon nsecs [in -5 to -5 nsecs]\n";
        assert_eq!(
            parse_timer_list(odd),
            vec![SystemTimer {
                real: true,
                expires_ns: None,
                left: Duration::ZERO
            }]
        );
        assert!(!parse_timer_list(odd)[0].same_as(&parse_timer_list(odd)[0]));
    }

    #[test]
    fn reads_poll_and_select_sets() {
        let pollfds: Vec<u8> = [(3i32, 1i16), (-1, 1), (7, 4)]
            .iter()
            .flat_map(|&(fd, ev)| {
                let mut v = fd.to_ne_bytes().to_vec();
                v.extend_from_slice(&ev.to_ne_bytes());
                v.extend_from_slice(&0i16.to_ne_bytes());
                v
            })
            .collect();
        let mut fdset = vec![0u8; 8];
        fdset[0] = 0b1000_0100; // fds 2 and 7
        let mem = move |addr: u64, len: usize| -> Option<Vec<u8>> {
            match addr {
                0x1000 if len == 24 => Some(pollfds.clone()),
                0x2000 if len == 8 => Some(fdset.clone()),
                _ => None,
            }
        };
        let poll = syscall::number("poll").unwrap();
        assert_eq!(
            wait_fds(poll, &[0x1000, 3, u64::MAX, 0, 0, 0], &mem),
            WaitFds::Fds(vec![3, 7])
        );
        assert_eq!(
            wait_fds(poll, &[0x3000, 3, u64::MAX, 0, 0, 0], &mem),
            WaitFds::Unreadable
        );
        assert_eq!(
            wait_fds(poll, &[0x1000, 100_000, 0, 0, 0, 0], &mem),
            WaitFds::Unreadable
        );
        let select = syscall::number("select").unwrap();
        assert_eq!(
            wait_fds(select, &[8, 0x2000, 0, 0, 0, 0], &mem),
            WaitFds::Fds(vec![2, 7])
        );
        // nfds 5 hides fd 7.
        assert_eq!(
            wait_fds(select, &[5, 0x2000, 0, 0, 0, 0], &mem),
            WaitFds::Fds(vec![2])
        );
        assert_eq!(
            wait_fds(select, &[8, 0x2000, 0x4000, 0, 0, 0], &mem),
            WaitFds::Unreadable
        );
        assert_eq!(
            wait_fds(0, &[4, 0, 8, 0, 0, 0], &mem),
            WaitFds::Fds(vec![4])
        );
        let futex = syscall::number("futex").unwrap();
        assert_eq!(wait_fds(futex, &[0; 6], &mem), WaitFds::None);
    }

    #[test]
    fn reads_its_own_timerfd() {
        // SAFETY: plain syscalls on an fd this test owns and closes.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, 0) };
        assert!(fd >= 0);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: 30,
                tv_nsec: 0,
            },
        };
        // SAFETY: `spec` is a valid itimerspec.
        assert_eq!(
            unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) },
            0
        );
        let me = std::process::id() as i32;
        let objects = fd_objects(me);
        match objects.get(&fd) {
            Some(FdObject::Timer(t)) => {
                assert!(t.armed());
                assert!(t.value <= Duration::from_secs(30) && t.value > Duration::from_secs(20));
            }
            other => panic!("fd {fd}: {other:?}"),
        }
        // SAFETY: closing our own fd.
        unsafe { libc::close(fd) };
        assert!(signal_masks(me).is_some());
    }
}
