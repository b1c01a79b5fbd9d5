//! Killing a command and everything it left behind.
//!
//! Guarantee: after [`command`] with SIGKILL and, once the command exited, [`output_holders`],
//! no process of the command's pid namespace holds the command's output pipes, so the service's
//! wait for end-of-output ends.
//!
//! Why two steps. With the `wedge` builder the command is pid 1 of a pid namespace of its own:
//! when it dies the kernel kills every process in there, so its pipes close with it. With the
//! `libcontainer` builder it is one tenant of the container's namespace, whose init is a long
//! `sleep`: a grandchild that double-forked (`setsid cmd &`) is reparented to that init and would
//! keep the output pipe open, and the exec would never end. So:
//! 1. [`command`] lists the command's whole process tree (`/proc/*/task/*/children`, a generation
//!    at a time) *before* it kills anything: killing a parent first would reparent its children
//!    out of reach.
//! 2. [`output_holders`], called once the command exited, finds what the tree walk cannot see (a
//!    process orphaned before the kill, or one forked while the tree was being listed) by what it
//!    holds: any process of the command's pid namespace with the write end of the command's
//!    stdout or stderr open. That is exactly what the wedge builder's namespace teardown kills as
//!    far as the exec's output is concerned. A leftover that closed its output is not found; it
//!    stays a tenant of the container until the agent destroys it (the agent README says so).
//!
//! Both read `/proc` and are only called on the kill path or for the shared-namespace builder, so
//! the common `wedge` exec pays nothing.

use super::in_flight::InProgress;
use crate::sys;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// Most generations of descendants walked (a fork bomb must not keep the walk going).
const MAX_GENERATIONS: usize = 64;

/// Sends `signal` to the command's process group and, for SIGKILL, to every descendant listed
/// beforehand and to the command itself through its pidfd (which cannot reach a recycled pid).
pub fn command(pid: i32, pidfd: &OwnedFd, signal: Signal) {
    if signal != Signal::SIGKILL {
        let _ = killpg(Pid::from_raw(pid), signal);
        return;
    }
    let tree = descendants(pid);
    let _ = killpg(Pid::from_raw(pid), signal);
    for p in tree {
        let _ = nix::sys::signal::kill(Pid::from_raw(p), signal);
    }
    let _ = sys::pidfd_send_signal(pidfd.as_fd(), signal);
}

/// Every descendant of `pid` still linked to it, a generation at a time, listed before any is
/// killed.
fn descendants(pid: i32) -> Vec<i32> {
    let mut generation = vec![pid];
    let mut found = Vec::new();
    for _ in 0..MAX_GENERATIONS {
        let next: Vec<i32> = generation.iter().flat_map(|&p| children_of(p)).collect();
        if next.is_empty() {
            break;
        }
        found.extend_from_slice(&next);
        generation = next;
    }
    found
}

fn children_of(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|listed| {
            listed
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// What identifies a command's output for [`output_holders`]: its pid namespace and the inodes
/// of its output pipes (a pipe's two ends share one inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pid_ns: u64,
    pipes: [u64; 2],
}

impl Output {
    /// Reads the identity of `pid`'s output while `pid` is alive (a zombie has no namespace
    /// link); `None` if it is already gone.
    pub fn of(pid: i32, stdout: &OwnedFd, stderr: &OwnedFd) -> Option<Output> {
        let pid_ns = std::fs::metadata(format!("/proc/{pid}/ns/pid")).ok()?.ino();
        let inode = |fd: &OwnedFd| std::fs::File::from(fd.try_clone().ok()?).metadata().ok();
        Some(Output {
            pid_ns,
            pipes: [inode(stdout)?.ino(), inode(stderr)?.ino()],
        })
    }
}

/// What [`output_holders`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Holders {
    /// The holders it SIGKILLed.
    pub killed: Vec<i32>,
    /// Holders it left alone as possibly a build in progress ([`is_build_in_progress`]): look
    /// again later, when they have exec'd (and let go) or their build has ended (and they are
    /// stranded, and killed).
    pub spared: usize,
}

/// SIGKILLs every process of `output`'s pid namespace (never the agent itself, nor what may be
/// part of another exec under way, [`is_build_in_progress`] by `spare`) that has one of its
/// pipes open.
pub fn output_holders(output: &Output, spare: &InProgress) -> Holders {
    let me = std::process::id() as i32;
    let my_exe = exe_of("self");
    let names = output.pipes.map(|inode| format!("pipe:[{inode}]"));
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Holders::default();
    };
    let (spared, holders): (Vec<i32>, Vec<i32>) = procs
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && in_namespace(pid, output.pid_ns))
        .filter(|&pid| holds_any(pid, &names))
        .partition(|&pid| is_build_in_progress(pid, my_exe, spare));
    for &pid in &holders {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    Holders {
        killed: holders,
        spared: spared.len(),
    }
}

/// Whether `pid` may be another exec's build in progress: a clone of the agent (or of its
/// zygote) that has not exec'd yet (its binary and its parent's are the agent's own), made no
/// earlier than the oldest build in progress started. A clone copies every descriptor the agent
/// has, close-on-exec or not, so a build's intermediate or init holds the pipes of every other
/// exec in flight until it execs, and drops them there. Killing it for that lost the other exec
/// (`killed by signal 9`, or the library's `waiting for init ready` when it was the init) each
/// time one exec ended while another was being built. A clone older than every build in
/// progress was left by one that ended (an init a failed build stranded: it never execs) and is
/// killed like any leftover. A real leftover of the command has exec'd something, and was
/// reparented to the container's init, never to the agent (an orphan goes to a subreaper only
/// within its own pid namespace). The command of another exec whose build has ended is spared
/// too while it still runs the agent's binary: it has not exec'd yet (`in_flight` says why).
fn is_build_in_progress(pid: i32, agent_exe: Option<(u64, u64)>, spare: &InProgress) -> bool {
    let Some(agent_exe) = agent_exe else {
        return false;
    };
    let runs_agent = |pid: &str| exe_of(pid) == Some(agent_exe);
    if !runs_agent(&pid.to_string()) {
        return false;
    }
    spare.commands.contains(&pid)
        || spare.oldest.is_some_and(|oldest| {
            parent_of(pid).is_some_and(|p| runs_agent(&p.to_string()))
                && start_ticks(pid).is_some_and(|start| start >= oldest)
        })
}

/// The device and inode of the binary `/proc/PID/exe` names (`PID` may be `self`).
fn exe_of(pid: &str) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Field `n` (1-based, as proc(5) numbers them; `n` ≥ 3) of `/proc/PID/stat`, counted after the
/// parenthesised name, which may hold spaces.
fn stat_field(pid: i32, n: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(n - 3)?.parse().ok()
}

/// The parent's pid (field 4).
fn parent_of(pid: i32) -> Option<i32> {
    stat_field(pid, 4).and_then(|p| i32::try_from(p).ok())
}

/// When the process started, in clock ticks since boot (field 22, `starttime`).
fn start_ticks(pid: i32) -> Option<u64> {
    stat_field(pid, 22)
}

fn in_namespace(pid: i32, pid_ns: u64) -> bool {
    std::fs::metadata(format!("/proc/{pid}/ns/pid")).is_ok_and(|m| m.ino() == pid_ns)
}

fn holds_any(pid: i32, names: &[String; 2]) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| names.iter().any(|n| target.as_os_str() == n.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    /// Close-on-exec: tests run in parallel, and another test's child must not inherit these
    /// (it would be a holder too, and killed).
    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe")
    }

    /// A fork of this process that has not exec'd, as a build in progress is: it holds every
    /// descriptor this process had at the fork until it exits, and exits once `release` is
    /// written to.
    fn clone_in_progress() -> (Pid, OwnedFd) {
        use std::os::fd::AsRawFd;
        let (wait, release) = pipe();
        // SAFETY: the child of this multi-threaded process calls only read(2) and _exit(2),
        // which are async-signal-safe, on a descriptor it owns.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => unsafe {
                let mut byte = 0u8;
                libc::read(wait.as_raw_fd(), (&raw mut byte).cast(), 1);
                libc::_exit(0)
            },
            nix::unistd::ForkResult::Parent { child } => (child, release),
        }
    }

    /// A grandchild that left its parent's session (and its tree, once the parent exits) still
    /// holds the output pipe: found by what it holds, and killed. A clone of this process that
    /// holds it only because it was cloned while the pipe was open is spared while a build that
    /// started no later than it is in progress, and killed once none is (it was stranded).
    #[test]
    fn an_orphan_holding_the_output_is_found_and_killed() {
        // SAFETY: a prctl with integer arguments only. The orphan is reparented to this process
        // (not to an init that may not reap), so it is reaped below.
        assert_eq!(
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
            0
        );
        let (read, write) = pipe();
        let (err_read, err_write) = pipe();
        // `try_clone` duplicates close-on-exec too; the child's stdio is a dup2 without it.
        let mut shell = Command::new("sh")
            .args(["-c", "setsid sleep 1000 & echo $!"])
            .stdout(Stdio::from(write.try_clone().expect("dup")))
            .stderr(Stdio::from(err_write))
            .process_group(0)
            .spawn()
            .expect("sh");
        let output = Output::of(std::process::id() as i32, &read, &err_read)
            .expect("our own output identity");
        let build_started = super::super::in_flight::boot_ticks_now();
        let (bystander, release) = clone_in_progress();
        let stop_bystander = |why: &str| -> ! {
            let _ = nix::unistd::write(&release, b"x");
            panic!("{why}")
        };
        drop(write);
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(std::fs::File::from(read.try_clone().expect("dup"))),
            &mut line,
        )
        .expect("the orphan's pid");
        let orphan: i32 = line.trim().parse().expect("a pid");
        shell.wait().expect("sh exits");
        let builds = |oldest: u64| InProgress {
            oldest: Some(oldest),
            commands: Vec::new(),
        };
        let first = output_holders(&output, &builds(build_started));
        nix::sys::wait::waitpid(Pid::from_raw(orphan), None).expect("reaping the orphan");
        if first
            != (Holders {
                killed: vec![orphan],
                spared: 1,
            })
        {
            stop_bystander(&format!(
                "{first:?}: the orphan {orphan}, the build {bystander}"
            ));
        }
        // No build in progress, but the clone is the command of an exec whose build ended and
        // which has not exec'd yet: spared, for as long as it is registered.
        let handed_over = super::super::in_flight::command(bystander.as_raw());
        let as_command = output_holders(&output, &super::super::in_flight::now());
        drop(handed_over);
        if as_command
            != (Holders {
                killed: vec![],
                spared: 1,
            })
        {
            stop_bystander(&format!("{as_command:?}: the command {bystander}"));
        }
        // Every build in progress started after the clone: it was left behind by one that ended.
        let after = start_ticks(bystander.as_raw()).expect("the clone's start") + 1;
        let second = output_holders(&output, &builds(after));
        if second
            != (Holders {
                killed: vec![bystander.as_raw()],
                spared: 0,
            })
        {
            stop_bystander(&format!("{second:?}: the stranded clone {bystander}"));
        }
        assert_eq!(
            nix::sys::wait::waitpid(bystander, None).expect("reaping the stranded clone"),
            nix::sys::wait::WaitStatus::Signaled(bystander, Signal::SIGKILL, false),
        );
        // Every writer is gone, so the read end sees end-of-file.
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(read), &mut rest).expect("eof");
    }
}
