//! Starting processes inside the trial's tree: the subject (which starts the clock) and the
//! processes `spawn` and `run` steps name. Each joins its part of the tree in the child, before
//! exec, and runs under `wedge-init` ([`crate::engine::pidns`]). With `isolation = "pid-namespace"` the
//! first process makes the trial's pid namespace and every later one joins it, so nothing any of
//! them starts can leave the trial (not by moving to another cgroup, not by `setsid` or double
//! forks) and all of them see the same pids and `/proc`; with `isolation = "cgroup"` they run in
//! the host's namespaces, contained by the trial's cgroups. [`Procs`] holds what was started (and
//! the subject's stdin ends and the namespace's lifeline) for the steps, then for teardown.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{StartError, StepError};
use super::log::Log;
use super::state::{Context, Proc};
use crate::engine::isolation::Part;
use crate::engine::marker::{MARKER_VAR, PART_VAR};
use crate::engine::output::{Capture, Source};
use crate::engine::pidns::{self, Report};
use crate::model::scenario::{Isolation, StdinMode};
use crate::plan::commands::{self, Launch};

/// The processes wedge started in the trial, and the subject's ends of its stdin (a pipe or a
/// terminal) and of the trial's pid namespace. Owned by the steps, then handed to teardown.
#[derive(Default)]
pub(crate) struct Procs {
    subject: Option<Proc>,
    /// The subject's process group (its keeper leads it).
    subject_pgid: Option<i32>,
    stdin: Option<ChildStdin>,
    pty_master: Option<fs::File>,
    /// The processes of `spawn` and `run` steps, in the order they started.
    aux: Vec<Proc>,
    /// The trial's namespace (`isolation = "pid-namespace"`): the pid of its init, which every
    /// process started after the first joins, and the write end of the lifeline that keeps it.
    namespace: Option<(i32, OwnedFd)>,
}

/// How a process is started: its part of the tree, and the failpoints (for the subject).
struct Start<'a> {
    name: &'a str,
    part: Part,
    failpoints: &'a [String],
}

impl Procs {
    /// Starts the subject; returns the instant the deadline and the watchdog run from.
    pub fn start_subject(
        &mut self,
        cx: &Context<'_>,
        failpoints: &[String],
        log: &mut Log,
    ) -> Result<Instant, StartError> {
        let launch = commands::subject_launch(cx.scenario(), cx.ground().vars())?;
        log.note(format!("start {}", launch.display()));
        // Time runs from just before the fork: the subject may run before spawn() returns.
        let start = Instant::now();
        let how = Start {
            name: "subject",
            part: Part::Subject,
            failpoints,
        };
        let (proc, stdin, master) =
            self.spawn(cx, &launch, how)
                .map_err(|source| StartError::Spawn {
                    program: launch.program.clone(),
                    source,
                })?;
        // The keeper leads the subject's process group (the subject runs in it).
        self.subject_pgid = Some(proc.keeper());
        self.stdin = stdin;
        self.pty_master = master;
        self.subject = Some(proc);
        Ok(start)
    }

    /// Starts a process of the steps in the trial's aux part; its index among them.
    pub fn start_aux(
        &mut self,
        cx: &Context<'_>,
        name: &str,
        launch: &Launch,
    ) -> io::Result<usize> {
        let how = Start {
            name,
            part: Part::Aux,
            failpoints: &[],
        };
        let (proc, _, _) = self.spawn(cx, launch, how)?;
        self.aux.push(proc);
        Ok(self.aux.len() - 1)
    }

    pub fn subject(&self) -> Option<&Proc> {
        self.subject.as_ref()
    }

    pub fn subject_mut(&mut self) -> Option<&mut Proc> {
        self.subject.as_mut()
    }

    pub fn subject_pgid(&self) -> Option<i32> {
        self.subject_pgid
    }

    /// The processes of the steps, in the order they started.
    pub fn aux(&self) -> &[Proc] {
        &self.aux
    }

    pub fn aux_mut(&mut self, index: usize) -> &mut Proc {
        &mut self.aux[index]
    }

    /// The first process of the steps called `name`.
    pub fn aux_named(&mut self, name: &str) -> Option<&mut Proc> {
        self.aux.iter_mut().find(|p| p.name() == name)
    }

    /// Every process wedge started, the subject first.
    pub fn all(&self) -> impl Iterator<Item = &Proc> {
        self.subject.iter().chain(self.aux.iter())
    }

    pub fn all_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
        self.subject.iter_mut().chain(self.aux.iter_mut())
    }

    /// Writes `data` to the subject's stdin (its pipe, or its terminal); `None` when it has none.
    pub fn write_stdin(&mut self, data: &[u8]) -> Option<io::Result<()>> {
        Some(match (&mut self.stdin, &mut self.pty_master) {
            (Some(pipe), _) => pipe.write_all(data).and_then(|()| pipe.flush()),
            (None, Some(master)) => master.write_all(data),
            (None, None) => return None,
        })
    }

    /// Ends the subject's input: EOF on its terminal, or its pipe closed.
    pub fn close_stdin(&mut self) -> Result<(), StepError> {
        if let Some(master) = &mut self.pty_master {
            // End of file on a terminal: VEOF at the start of a line.
            master.write_all(b"\n\x04").map_err(StepError::Eof)
        } else if self.stdin.take().is_none() {
            Err(StepError::StdinClosed)
        } else {
            Ok(())
        }
    }

    /// Ends the subject's own process if it still runs, and waits (bounded by `STOP_BOUND`)
    /// for its keeper; whether it had to be killed.
    pub fn stop_subject(&mut self) -> bool {
        let Some(subject) = self.subject.as_mut() else {
            return false;
        };
        if subject.poll_exit().is_some() {
            return false;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(subject.pid()),
            nix::sys::signal::Signal::SIGKILL,
        );
        let end = Instant::now() + STOP_BOUND;
        while subject.poll_exit().is_none() && Instant::now() < end {
            if let Some(fd) = subject.pidfd() {
                let mut fds = [nix::poll::PollFd::new(
                    fd.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        true
    }

    /// Closes the subject's input ends and lets go of the namespace's lifeline (its init may end
    /// once nothing is left in it): the first thing teardown does.
    pub fn let_go(&mut self) {
        self.stdin = None;
        self.pty_master = None;
        self.namespace = None;
    }

    /// Starts `launch` as `how` says, capturing its output.
    fn spawn(&mut self, cx: &Context<'_>, launch: &Launch, how: Start<'_>) -> io::Result<Started> {
        let mut cmd = command(cx, launch, &how);
        let pty = connect_stdin(&mut cmd, launch.stdin)?;
        // Close-on-exec: only the copies the child moves to fds 3 and 4 reach the keeper.
        let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mode = self.keeper_mode(cx);
        let lifeline = match mode {
            pidns::Mode::NewNamespace { lifeline: true } => {
                Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
            }
            _ => None,
        };
        cmd.args(mode.args())
            .arg("--")
            .arg(&launch.program)
            .args(&launch.args);
        let fds = (
            report_write.as_raw_fd(),
            lifeline.as_ref().map(|(read, _)| read.as_raw_fd()),
        );
        in_child(cx, &mut cmd, how.part, pty.is_some(), fds);
        let spawned = crate::engine::reaper::spawn_owned(&mut cmd);
        drop(report_write);
        let lifeline = lifeline.map(|(_, write)| write);
        let mut child = spawned.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{} (wedge's keeper): {e}",
                    cx.engine().init_program.display()
                ),
            )
        })?;
        let keeper = child.id() as i32;
        cx.tree().add_root(keeper, how.part);
        let (pid, init) = started(&mut child, keeper, report_read)?;
        cx.tree().add_keeper(keeper, init, how.part);
        if let (Some(init), Some(lifeline)) = (init, lifeline) {
            self.namespace = Some((init, lifeline));
        }
        let (streams, stdin, master) = capture(&mut child, pty)?;
        Ok((Proc::new(how.name, pid, child, streams), stdin, master))
    }

    /// How the next process's keeper runs it: in the host's namespaces (`isolation =
    /// "cgroup"`), in the trial's namespace once there is one, else making it.
    fn keeper_mode(&self, cx: &Context<'_>) -> pidns::Mode {
        match (cx.scenario().isolation_of(&cx.spec().cell), &self.namespace) {
            (Isolation::Cgroup, _) => pidns::Mode::NoNamespace,
            (Isolation::PidNamespace, Some((init, _))) => pidns::Mode::Join(*init),
            (Isolation::PidNamespace, None) => pidns::Mode::NewNamespace { lifeline: true },
        }
    }
}

/// How long the subject may take to end after its SIGKILL before teardown steps run anyway.
const STOP_BOUND: Duration = Duration::from_secs(5);

/// A started process, and the subject's ends of its stdin (a pipe or a terminal).
type Started = (Proc, Option<ChildStdin>, Option<fs::File>);

/// The command line (wedge-init, before its arguments) with the trial's environment, directory
/// and output pipes.
fn command(cx: &Context<'_>, launch: &Launch, how: &Start<'_>) -> Command {
    let vars = cx.ground().vars();
    let mut cmd = Command::new(&cx.engine().init_program);
    cmd.env("TMPDIR", &vars.tmp);
    cmd.env(MARKER_VAR, cx.tree().marker());
    cmd.env(PART_VAR, how.part.name());
    cmd.env("WEDGE_SEED", cx.spec().seed.to_string());
    if how.part == Part::Subject && !how.failpoints.is_empty() {
        cmd.env(launch.failpoints_var, how.failpoints.join(";"));
    }
    cmd.envs(&launch.env);
    cmd.current_dir(launch.cwd.clone().unwrap_or_else(|| vars.work.clone()));
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// What the child does before exec: join the tree's cgroup, become a process group (or a
/// session with the terminal), die with wedge, take its CPUs, and put the keeper's report
/// pipe on fd 3 (and its lifeline, if any, on fd 4).
fn in_child(
    cx: &Context<'_>,
    cmd: &mut Command,
    part: Part,
    with_tty: bool,
    fds: (i32, Option<i32>),
) {
    // The trial's own cgroup, then the v1 directories of its limits (hybrid hosts).
    let joins: Vec<std::ffi::CString> = cx
        .tree()
        .join_file(part)
        .into_iter()
        .chain(cx.ground().limits().join_files())
        .collect();
    let cpus = cx.spec().cpus.clone();
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (open/write/close, setpgid/setsid, ioctl, prctl, sched_setaffinity,
    // dup2/fcntl) on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            place_fds(fds)?;
            for path in &joins {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if !ok {
                    return Err(err);
                }
            }
            if with_tty {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::setpgid(0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(cpus) = &cpus {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                for &c in cpus {
                    libc::CPU_SET(c, &mut set);
                }
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Connects the new process's standard input as `mode` asks; the pty, if it is one.
fn connect_stdin(
    cmd: &mut Command,
    mode: StdinMode,
) -> io::Result<Option<nix::pty::OpenptyResult>> {
    Ok(match mode {
        StdinMode::Pipe => {
            cmd.stdin(Stdio::piped());
            None
        }
        StdinMode::Null => {
            cmd.stdin(Stdio::null());
            None
        }
        StdinMode::Pty => {
            let p = nix::pty::openpty(None, None).map_err(io::Error::from)?;
            cmd.stdin(Stdio::from(p.slave.try_clone()?));
            Some(p)
        }
    })
}

/// The keeper's report: the program's pid and the namespace's init; on a failed exec or a
/// keeper that never reported, the keeper is reaped and the error returned.
fn started(
    child: &mut std::process::Child,
    keeper: i32,
    report: OwnedFd,
) -> io::Result<(i32, Option<i32>)> {
    match read_report(report) {
        Ok(Report::Started { subject, init }) => Ok((subject, init)),
        Ok(Report::Failed { errno }) => {
            let _ = child.wait();
            crate::engine::reaper::disown(keeper);
            Err(io::Error::from_raw_os_error(errno))
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            crate::engine::reaper::disown(keeper);
            Err(e)
        }
    }
}

/// Starts reading the new process's output (and its pty); its stdin pipe and pty master.
fn capture(
    child: &mut std::process::Child,
    pty: Option<nix::pty::OpenptyResult>,
) -> io::Result<(Arc<Capture>, Option<ChildStdin>, Option<fs::File>)> {
    let streams = Arc::new(Capture::default());
    if let Some(out) = child.stdout.take() {
        streams.reader(out, Source::Stdout);
    }
    if let Some(err) = child.stderr.take() {
        streams.reader(err, Source::Stderr);
    }
    let stdin = child.stdin.take();
    let master = match pty {
        Some(p) => {
            drop(p.slave);
            let master = fs::File::from(p.master);
            streams.reader(master.try_clone()?, Source::Tty);
            Some(master)
        }
        None => None,
    };
    Ok((streams, stdin, master))
}

/// In the forked child: the report pipe onto fd 3 and the lifeline onto fd 4, neither
/// close-on-exec. Both are first moved above 9, so that neither can be overwritten by the
/// other's `dup2` whatever numbers they had.
fn place_fds((report, lifeline): (i32, Option<i32>)) -> std::io::Result<()> {
    let wanted = [
        Some((report, pidns::REPORT_FD)),
        lifeline.map(|l| (l, pidns::LIFELINE_FD)),
    ];
    let mut high = [-1; 2];
    for (slot, want) in high.iter_mut().zip(wanted) {
        if let Some((fd, _)) = want {
            // SAFETY: fcntl on a descriptor this process owns; async-signal-safe.
            *slot = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
            if *slot < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    for (fd, want) in high.into_iter().zip(wanted) {
        if let Some((_, target)) = want {
            // SAFETY: dup2 onto a descriptor number this child reserves for the keeper; the
            // copy it makes is not close-on-exec.
            if unsafe { libc::dup2(fd, target) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The keeper's one-line report: it comes as soon as the subject's exec succeeded or failed; the
/// bound only guards against a keeper that died before writing it.
fn read_report(read: OwnedFd) -> io::Result<Report> {
    let mut fds = [nix::poll::PollFd::new(
        read.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16))?;
    if ready == 0 {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "wedge-init did not report within 10 s",
        ));
    }
    let mut line = String::new();
    fs::File::from(read).take(256).read_to_string(&mut line)?;
    if line.is_empty() {
        return Err(io::Error::other("wedge-init ended without a report"));
    }
    Report::decode(&line).map_err(io::Error::other)
}
