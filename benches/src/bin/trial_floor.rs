//! The physical floor of one harness trial (issue 25): the least work a trial that isolates its
//! command in a cgroup and a pid namespace can do, so that `wedge run`'s trials per second can
//! be read against it. Each trial creates a cgroup, starts a static `true` straight into that
//! cgroup and into a new pid namespace (one `clone3` with `CLONE_INTO_CGROUP | CLONE_NEWPID`),
//! waits for it and removes the cgroup. Nothing else: no scenario, no records, no probes.
//!
//! ```text
//! trial_floor [--jobs N] [--trials M] [--true PATH]     (as root, cgroup2 mounted read-write)
//! ```
//!
//! `--true` defaults to `/bin/busybox` (Debian's busybox-static), run as `true` (argv[0] picks the
//! applet; any other `true` ignores it). Prints one JSON line:
//! `{"trials":M,"jobs":N,"seconds":S,"per_second":R}`. Its cgroups live under
//! `<cgroup2 mount>/wedge-trial-floor-PID`, removed at the end whatever happened.
//!
//! Exit status: 0 when every trial's command exited 0, 1 when a trial failed, 2 on bad arguments
//! or when no writable cgroup2 hierarchy is available.

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

const USAGE: &str = "usage: trial_floor [--jobs N] [--trials M] [--true PATH]";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// `CLONE_INTO_CGROUP` (5.7), a 64-bit flag only `clone3` takes; libc's constant is a `c_int`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// How long a cgroup may stay busy after its last process was reaped before removal gives up.
const RMDIR_PATIENCE: Duration = Duration::from_secs(1);

/// `struct clone_args` of `<linux/sched.h>` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`, 88 bytes);
/// libc only defines it for musl.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

struct Options {
    jobs: usize,
    trials: u64,
    program: CString,
}

/// What went wrong, and with which file or step.
#[derive(Debug)]
enum FloorError {
    /// No cgroup2 hierarchy in `/proc/self/mounts`.
    NoCgroup2,
    /// The hierarchy is there but this process cannot create a cgroup in it.
    NotWritable(PathBuf, io::Error),
    /// A trial's step failed.
    Trial(u64, &'static str, io::Error),
    /// A trial's command did not exit 0.
    Status(u64, WaitStatus),
}

impl fmt::Display for FloorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FloorError::NoCgroup2 => write!(f, "no cgroup v2 hierarchy is mounted"),
            FloorError::NotWritable(path, e) => write!(
                f,
                "the cgroup v2 hierarchy is not writable: cannot create {}: {e} \
                 (run as root with cgroup2 mounted read-write)",
                path.display()
            ),
            FloorError::Trial(i, what, e) => write!(f, "trial {i}: {what}: {e}"),
            FloorError::Status(i, s) => write!(f, "trial {i}: the command ended with {s:?}"),
        }
    }
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1).collect()) {
        Ok(o) => o,
        Err(message) => {
            eprintln!("trial_floor: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let parent = match ParentCgroup::create() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("trial_floor: {e}");
            return ExitCode::from(2);
        }
    };
    let start = Instant::now();
    let outcome = run_all(&options, &parent.path);
    let seconds = start.elapsed().as_secs_f64();
    drop(parent);
    if let Err(e) = outcome {
        eprintln!("trial_floor: {e}");
        return ExitCode::from(1);
    }
    println!(
        "{{\"trials\":{},\"jobs\":{},\"seconds\":{seconds:.6},\"per_second\":{:.1}}}",
        options.trials,
        options.jobs,
        options.trials as f64 / seconds
    );
    ExitCode::SUCCESS
}

fn parse_args(args: Vec<String>) -> Result<Options, String> {
    let mut options = Options {
        jobs: 2,
        trials: 1000,
        program: CString::from(c"/bin/busybox"),
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value (or is unknown)"))?;
        let positive = |v: &str| v.parse::<u64>().ok().filter(|&n| n > 0);
        match flag.as_str() {
            "--jobs" => {
                options.jobs = positive(&value)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| format!("--jobs: not a positive number: {value:?}"))?
            }
            "--trials" => {
                options.trials = positive(&value)
                    .ok_or_else(|| format!("--trials: not a positive number: {value:?}"))?
            }
            "--true" => {
                options.program = CString::new(value)
                    .map_err(|_| "--true: the path holds a NUL byte".to_string())?
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

/// `<cgroup2 mount>/wedge-trial-floor-PID`: every trial's cgroup is made in it. Dropping it
/// removes whatever trial cgroups are left, then itself.
struct ParentCgroup {
    path: PathBuf,
}

impl ParentCgroup {
    fn create() -> Result<ParentCgroup, FloorError> {
        let mount = cgroup2_mount().ok_or(FloorError::NoCgroup2)?;
        let path = mount.join(format!("wedge-trial-floor-{}", std::process::id()));
        std::fs::create_dir(&path).map_err(|e| FloorError::NotWritable(path.clone(), e))?;
        Ok(ParentCgroup { path })
    }
}

impl Drop for ParentCgroup {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = remove_cgroup(&entry.path());
                }
            }
        }
        if let Err(e) = remove_cgroup(&self.path) {
            eprintln!("trial_floor: removing {}: {e}", self.path.display());
        }
    }
}

/// The first cgroup2 mount: `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host.
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
        (kind == "cgroup2" && is_cgroup2(point)).then(|| PathBuf::from(point))
    })
}

fn is_cgroup2(path: &str) -> bool {
    let Ok(c) = CString::new(path) else {
        return false;
    };
    // SAFETY: statfs is plain integers; all-zero is a valid value for it to overwrite.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs(2) reads the C string `c` and fills `s`; both outlive the call.
    (unsafe { libc::statfs(c.as_ptr(), &mut s) }) == 0 && s.f_type as i64 == CGROUP2_SUPER_MAGIC
}

/// Removes an empty cgroup, waiting out the short `EBUSY` window after its last process.
fn remove_cgroup(path: &Path) -> io::Result<()> {
    let deadline = Instant::now() + RMDIR_PATIENCE;
    loop {
        match std::fs::remove_dir(path) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(100));
            }
            other => return other,
        }
    }
}

/// Runs the trials over `jobs` threads; the first failure stops the others at their next trial.
fn run_all(options: &Options, parent: &Path) -> Result<(), FloorError> {
    let next = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..options.jobs)
            .map(|_| {
                scope.spawn(|| {
                    let argv0 = c"true";
                    let argv = [argv0.as_ptr(), std::ptr::null()];
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= options.trials || failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        if let Err(e) = trial(parent, index, &options.program, &argv) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("a trial worker panicked"))
    })
}

/// One trial: its cgroup, its command in a new pid namespace in that cgroup, the cgroup gone.
fn trial(
    parent: &Path,
    index: u64,
    program: &CString,
    argv: &[*const libc::c_char; 2],
) -> Result<(), FloorError> {
    let at = |what| move |e| FloorError::Trial(index, what, e);
    let dir = parent.join(format!("t{index}"));
    std::fs::create_dir(&dir).map_err(at("creating its cgroup"))?;
    let ran = File::open(&dir)
        .map_err(at("opening its cgroup"))
        .and_then(|cgroup| start(&cgroup, program, argv).map_err(at("clone3")))
        .and_then(|pid| wait(index, pid));
    let removed = remove_cgroup(&dir).map_err(at("removing its cgroup"));
    ran.and(removed)
}

/// `clone3(CLONE_INTO_CGROUP | CLONE_NEWPID)`; the child, pid 1 of its namespace, executes
/// `program` with `argv` and an empty environment.
fn start(cgroup: &File, program: &CString, argv: &[*const libc::c_char; 2]) -> io::Result<Pid> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP | libc::CLONE_NEWPID as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: clone3(2) reads `args`, which outlives the call. With no stack given, the child
    // runs on a copy of this thread's stack, like fork's; in a multi-threaded process it may
    // only make async-signal-safe calls, and it makes two: execve and _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: `program`, `argv` and `envp` are a C string and NULL-terminated arrays of C
        // strings built before the clone, alive until the exec replaces this image.
        unsafe {
            libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127)
        }
    }
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Pid::from_raw(pid as libc::pid_t))
}

fn wait(index: u64, pid: Pid) -> Result<(), FloorError> {
    loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(FloorError::Trial(index, "waitpid", e.into())),
            Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(status) => return Err(FloorError::Status(index, status)),
        }
    }
}
