//! Running probes: each in its own process under a deadline ([`run_suite`]), and the body of
//! that process ([`run_one`]).
//!
//! Guarantee: [`run_suite`] returns one result per probe of [`super::PROBES`], in order, within
//! about the sum of the bounds: a probe process past its bound is killed with its process group
//! (the seccomp targets it forked included) and reaped, and its row says `blocks`.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Observed, PROBES, ProbeResult, parse_result_line};

/// How to run the suite.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// The wedge binary to re-execute as `wedge probe --run-one ID`.
    pub wedge: PathBuf,
    /// Each probe process's deadline.
    pub bound: Duration,
}

impl SuiteOptions {
    /// This very program, with a bound of 10 s (`slowdown` times that in a slow VM): every probe
    /// observes for at most a second, so 10 s means it is stuck.
    pub fn this_program(slowdown: u32) -> SuiteOptions {
        SuiteOptions {
            wedge: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("wedge")),
            bound: Duration::from_secs(10 * u64::from(slowdown.max(1))),
        }
    }
}

/// The values this machine's probes give, each probe re-executing `wedge` (the `wedge` binary)
/// under the default bound: what a run resolves expectations keyed on probes with.
pub fn probe_host(wedge: PathBuf) -> super::ProbeValues {
    let options = SuiteOptions {
        wedge,
        ..SuiteOptions::this_program(1)
    };
    run_suite(&options)
        .into_iter()
        .map(|r| (r.id, r.value))
        .collect()
}

/// Runs every probe, one process at a time (probes time things; they must not compete).
pub fn run_suite(options: &SuiteOptions) -> Vec<ProbeResult> {
    PROBES.iter().map(|p| run_isolated(options, p.id)).collect()
}

/// Runs probe `id` in a child process of its own, under `options.bound`.
fn run_isolated(options: &SuiteOptions, id: &str) -> ProbeResult {
    let started = Instant::now();
    let failed = |value: &str, evidence: String| ProbeResult {
        id: id.to_string(),
        value: value.to_string(),
        evidence,
        ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    let mut child = match Command::new(&options.wedge)
        .args(["probe", "--run-one", id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return failed(
                "error",
                format!("cannot start {}: {e}", options.wedge.display()),
            );
        }
    };
    let pid = child.id() as i32;
    let exited = wait_exit(pid, started + options.bound);
    // The whole group goes, whatever happened: a probe's forked targets must not outlive it.
    // SAFETY: kill(2) on our own child's process group (pgid == its pid, set at spawn); while
    // the child is unreaped its pid, and so the group id, cannot be reused.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let status = child.wait();
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    if !exited {
        return failed(
            "blocks",
            format!(
                "no result within its bound of {} ms: killed",
                options.bound.as_millis()
            ),
        );
    }
    match parse_result_line(id, &stdout) {
        Ok(mut r) => {
            r.ms = started.elapsed().as_secs_f64() * 1000.0;
            r
        }
        Err(why) => {
            let how = match status {
                Ok(s) => match s.signal() {
                    Some(sig) => format!("killed by signal {sig}"),
                    None => format!("exit {}", s.code().unwrap_or(-1)),
                },
                Err(e) => format!("wait failed: {e}"),
            };
            let tail = stderr.lines().last().unwrap_or("").trim();
            failed("error", format!("{why} ({how}) {tail}").trim().to_string())
        }
    }
}

/// Whether child `pid` exited before `deadline` (it stays unreaped: the caller reaps it).
fn wait_exit(pid: i32, deadline: Instant) -> bool {
    let Ok(pidfd) = wedge_sys::pidfd_open(pid) else {
        // No pidfd: fall back on waitid polling with WNOWAIT, bounded by the deadline.
        return wait_exit_polling(pid, deadline);
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [nix::poll::PollFd::new(
            pidfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(0) if left.is_zero() => return false,
            Ok(0) => {}
            Ok(_) => return true,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return wait_exit_polling(pid, deadline),
        }
    }
}

fn wait_exit_polling(pid: i32, deadline: Instant) -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
        match waitid(Id::Pid(nix::unistd::Pid::from_raw(pid)), flags) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {}
            _ => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
        // Without a pidfd there is nothing to block on; a short pause bounds the polling.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The body of `wedge probe --run-one ID`: runs the probe in this process and prints its result
/// as one JSON line. Returns false for an unknown id.
pub fn run_one(id: &str) -> bool {
    let Some(body) = body(id) else {
        return false;
    };
    let started = Instant::now();
    let o = body();
    let r = ProbeResult {
        id: id.to_string(),
        value: o.value,
        evidence: o.evidence,
        ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    crate::outln!(
        "{}",
        serde_json::to_string(&r).unwrap_or_else(|_| "{}".into())
    );
    true
}

/// The function that runs probe `id`.
fn body(id: &str) -> Option<fn() -> Observed> {
    use super::{abi, process, seccomp};
    let f: fn() -> Observed = match id {
        "user_notif" => seccomp::user_notif,
        "close_wakes_recv" => seccomp::close_wakes_recv,
        "signal_wakes_recv" => seccomp::signal_wakes_recv,
        "recv_after_users_exit" => seccomp::recv_after_users_exit,
        "pollhup_timing" => seccomp::pollhup_timing,
        "ppoll_eventfd_wake" => seccomp::ppoll_eventfd_wake,
        "second_listener" => seccomp::second_listener,
        "notif_continue" => seccomp::notif_continue,
        "notif_addfd" => seccomp::notif_addfd,
        "addfd_send" => seccomp::addfd_send,
        "wait_killable_recv" => seccomp::wait_killable_recv,
        "notif_sync_wakeup" => seccomp::notif_sync_wakeup,
        "notif_fifo" => seccomp::notif_fifo,
        "ia32_emulation" => abi::ia32_emulation,
        "x32_syscalls" => abi::x32_syscalls,
        "pidfd" => process::pidfd,
        "clone3_into_cgroup" => process::clone3_into_cgroup,
        "cgroup2" => process::cgroup2,
        "user_ns" => process::user_ns,
        "pid_ns" => process::pid_ns,
        _ => return None,
    };
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_has_a_body_and_nothing_else_does() {
        for p in PROBES {
            assert!(body(p.id).is_some(), "{}", p.id);
        }
        assert!(body("no_such_probe").is_none());
        assert!(!run_one("no_such_probe"));
    }

    #[test]
    fn a_program_that_cannot_start_is_an_error_row() {
        let options = SuiteOptions {
            wedge: PathBuf::from("/nonexistent/wedge"),
            bound: Duration::from_secs(1),
        };
        let r = run_isolated(&options, "pid_ns");
        assert_eq!(r.value, "error");
        assert!(r.evidence.contains("/nonexistent/wedge"), "{}", r.evidence);
    }
}
