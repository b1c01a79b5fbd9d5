//! Test support: start a subject in its own process group, wait on observable state with a
//! deadline, and always kill and reap everything it started.
#![allow(dead_code)]

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

/// The safety net for every wait in these tests: far longer than any correct run takes.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn wedge_run() -> &'static str {
    env!("CARGO_BIN_EXE_wedge-run")
}

pub fn exec_probe() -> &'static str {
    env!("CARGO_BIN_EXE_wedge-exec-probe")
}

/// Makes this test process the reaper of orphans left by its subjects, so that they can be
/// reaped (and counted) here rather than by init.
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        wedge_runtime::sys::become_child_subreaper().expect("PR_SET_CHILD_SUBREAPER");
    });
}

/// Output collected from a pipe by a background thread.
#[derive(Clone, Default)]
pub struct Captured {
    bytes: Arc<Mutex<Vec<u8>>>,
    eof: Arc<std::sync::atomic::AtomicBool>,
}

impl Captured {
    fn collect(mut pipe: impl Read + Send + 'static) -> Captured {
        let captured = Captured::default();
        let (sink, eof) = (captured.bytes.clone(), captured.eof.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            eof.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        captured
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }

    /// Everything written, once every writer has gone (the pipe reached EOF).
    pub fn complete(&self) -> String {
        wait_until("the output pipe to close", || {
            self.eof.load(std::sync::atomic::Ordering::SeqCst)
        })
        .unwrap();
        self.text()
    }
}

/// A running subject: its own process group, killed and reaped on drop.
pub struct Subject {
    child: Child,
    /// Its standard input, when started with [`Subject::start_with_stdin`].
    pub stdin: Option<std::process::ChildStdin>,
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
    pub stdout: Captured,
    pub stderr: Captured,
}

impl Subject {
    /// Starts `command` in a new process group with piped stdout/stderr and stdin from
    /// /dev/null.
    pub fn start(mut command: Command) -> Subject {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        Subject::spawn(command)
    }

    /// Like [`Subject::start`], with a pipe to the subject's stdin in [`Subject::stdin`].
    pub fn start_with_stdin(mut command: Command) -> Subject {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        Subject::spawn(command)
    }

    /// Starts `command` as configured by the caller, which must put it in a process group of
    /// its own (`process_group(0)` or `setsid`).
    pub fn spawn(mut command: Command) -> Subject {
        become_subreaper();
        let mut child = command.spawn().expect("spawning the subject");
        let stdout = child
            .stdout
            .take()
            .map(Captured::collect)
            .unwrap_or_default();
        let stderr = child
            .stderr
            .take()
            .map(Captured::collect)
            .unwrap_or_default();
        let stdin = child.stdin.take();
        let pidfd = pidfd_open(child.id() as i32);
        Subject {
            child,
            stdin,
            pidfd,
            status: None,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for the subject to exit, at most `within`. `None` if it is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32).unwrap();
            let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Ok(0) => return None,
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => panic!("poll on pidfd: {e}"),
            }
        }
        self.status = Some(self.child.wait().expect("reaping the subject"));
        // Its stdout/stderr may still be written by processes it left behind; give the
        // collectors the output that is already there.
        self.status
    }

    /// Waits for exit within [`DEADLINE`]; panics (and the drop cleans up) if it does not.
    pub fn expect_exit(&mut self) -> ExitStatus {
        let status = self.wait_exit(DEADLINE);
        status.unwrap_or_else(|| {
            panic!(
                "subject still running after {DEADLINE:?}\nstdout:\n{}\nstderr:\n{}",
                self.stdout.text(),
                self.stderr.text()
            )
        })
    }

    /// Waits for exit, kills and reaps whatever is left, checks nothing survived, and returns
    /// the exit code (128+N for a signal) with the complete stdout and stderr.
    pub fn finish(&mut self) -> (i32, String, String) {
        use std::os::unix::process::ExitStatusExt;
        let status = self.expect_exit();
        let left = self.kill_and_reap();
        assert!(left.is_empty(), "left behind: {left:?}");
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        (code, self.stdout.complete(), self.stderr.complete())
    }

    /// Waits until `stdout` contains `needle`.
    pub fn wait_stdout(&self, needle: &str) {
        wait_until(&format!("stdout to contain {needle:?}"), || {
            self.stdout.text().contains(needle)
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nstdout:\n{}\nstderr:\n{}",
                self.stdout.text(),
                self.stderr.text()
            )
        });
    }

    /// Waits until `stderr` contains `needle`.
    pub fn wait_stderr(&self, needle: &str) {
        wait_until(&format!("stderr to contain {needle:?}"), || {
            self.stderr.text().contains(needle)
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nstdout:\n{}\nstderr:\n{}",
                self.stdout.text(),
                self.stderr.text()
            )
        });
    }

    pub fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(Pid::from_raw(self.pid()), signal).expect("signalling the subject");
    }

    /// Kills the whole process group and reaps every member that is (or becomes) our child.
    /// Returns the pids of group members still visible in /proc afterwards (should be none).
    pub fn kill_and_reap(&mut self) -> Vec<i32> {
        let pgid = Pid::from_raw(self.pid());
        let _ = killpg(pgid, Signal::SIGKILL);
        if self.status.is_none() {
            self.status = self.child.wait().ok();
        }
        while let Ok(_) | Err(Errno::EINTR) = waitpid(Pid::from_raw(-pgid.as_raw()), None) {}
        processes_in_group(pgid.as_raw())
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        let left = self.kill_and_reap();
        if !left.is_empty() && !std::thread::panicking() {
            panic!("processes left behind in group {}: {left:?}", self.pid());
        }
    }
}

pub fn pidfd_open(pid: i32) -> OwnedFd {
    wedge_runtime::sys::pidfd_open(pid).unwrap_or_else(|e| panic!("pidfd_open({pid}): {e}"))
}

/// A security test that cannot run on this machine (e.g. no ia32 emulation to attack) fails,
/// unless the run names it in `WEDGE_ALLOW_SKIP` (a comma-separated list of skip names): a
/// silently skipped security check reads as a passed one.
pub fn cannot_run(name: &str, reason: &str) {
    let allowed = std::env::var("WEDGE_ALLOW_SKIP").unwrap_or_default();
    if allowed.split(',').any(|a| a.trim() == name) {
        eprintln!("SKIPPED (allowed by WEDGE_ALLOW_SKIP): {name}: {reason}");
        return;
    }
    panic!(
        "security test {name} cannot run here: {reason}; set WEDGE_ALLOW_SKIP={name} to allow it"
    );
}

/// Polls `condition` until it holds, with [`DEADLINE`] as the safety net. The interval is a
/// polling period for state that offers no notification (/proc, captured output), not a wait
/// for something to happen.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        if Instant::now() > deadline {
            return Err(format!("timed out after {DEADLINE:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Pids of live (non-zombie) processes whose process group is `pgid`.
pub fn processes_in_group(pgid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some((state, group)) = stat_state_and_pgrp(pid)
            && group == pgid
            && state != 'Z'
            && state != 'X'
        {
            found.push(pid);
        }
    }
    found
}

fn stat_state_and_pgrp(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let mut fields = after.split(' ');
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// One thread of a process: its name and the syscall it is in, from /proc.
#[derive(Debug, Clone)]
pub struct ThreadState {
    pub tid: i32,
    pub name: String,
    /// `/proc/PID/task/TID/syscall` split into fields: syscall number then arguments (hex).
    pub syscall: Vec<String>,
}

impl ThreadState {
    /// Whether the thread is blocked in syscall `nr` (decimal).
    pub fn in_syscall(&self, nr: i64) -> bool {
        self.syscall.first().and_then(|s| s.parse::<i64>().ok()) == Some(nr)
    }

    /// Argument `i` (0-based) of the syscall it is blocked in.
    pub fn arg(&self, i: usize) -> Option<u64> {
        let hex = self.syscall.get(1 + i)?;
        u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok()
    }
}

pub fn threads(pid: i32) -> Vec<ThreadState> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let read = |f: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/{f}")).unwrap_or_default()
        };
        out.push(ThreadState {
            tid,
            name: read("comm").trim().to_owned(),
            syscall: read("syscall")
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        });
    }
    out
}

/// Pids of the direct children of `pid` (all threads).
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|s| s.parse::<i32>().ok()),
        );
    }
    out
}

pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Whether `pid` is a live (non-zombie) process.
pub fn alive(pid: i32) -> bool {
    matches!(stat_state_and_pgrp(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("wedge-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn file(&self, name: &str, contents: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until the kernel's coarse clock has passed `path`'s status change time, the moment from
/// which the supervisor keeps the head it reads (`HeadCache`); a deadline as a net.
pub fn settled(path: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    use wedge_runtime::supervisor::effective::ctime_is_past;
    let meta = std::fs::metadata(path).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !ctime_is_past((meta.ctime(), meta.ctime_nsec())) {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock stands still"
        );
        std::thread::yield_now();
    }
}
