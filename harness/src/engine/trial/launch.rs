//! Starting processes inside the trial's tree: the subject (which starts the clock) and the
//! processes `spawn` and `run` steps name. Each joins its part of the tree in the child, before
//! exec, and runs under `wedge-init` ([`crate::engine::pidns`]). With `isolation = "pid-namespace"` the
//! first process makes the trial's pid namespace and every later one joins it, so nothing any of
//! them starts can leave the trial (not by moving to another cgroup, not by `setsid` or double
//! forks) and all of them see the same pids and `/proc`; with `isolation = "cgroup"` they run in
//! the host's namespaces, contained by the trial's cgroups. [`Procs`] holds what was started (and
//! the subject's stdin ends and the namespace's lifeline) for the steps, then for teardown.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{StartError, StepError};
use super::log::Log;
use super::state::{Context, Proc};
use crate::engine::isolation::Part;
use crate::engine::marker::{MARKER_VAR, PART_VAR};
use crate::engine::output::{Capture, Source};
use crate::engine::pidns::{self, Report};
use crate::engine::spawn::{self, Keeper};
use crate::model::scenario::{Isolation, StdinMode};
use crate::plan::commands::{self, Launch};

/// The processes wedge started in the trial, and the subject's ends of its stdin (a pipe or a
/// terminal) and of the trial's pid namespace. Owned by the steps, then handed to teardown.
#[derive(Default)]
pub(crate) struct Procs {
    subject: Option<Proc>,
    /// The subject's process group (its keeper leads it).
    subject_pgid: Option<i32>,
    stdin: Option<fs::File>,
    pty_master: Option<fs::File>,
    /// The processes of `spawn` and `run` steps, in the order they started.
    aux: Vec<Proc>,
    /// The trial's namespace (`isolation = "pid-namespace"`): the pid of its init, which every
    /// process started after the first joins, and the write end of the lifeline that keeps it.
    namespace: Option<(i32, OwnedFd)>,
}

/// How a process is started: its part of the tree, the failpoints (for the subject), and
/// whether it waits, stopped before its exec, for SIGCONT ([`pidns::Setup::stopped`]).
struct Start<'a> {
    name: &'a str,
    part: Part,
    failpoints: &'a [String],
    stopped: bool,
}

impl Procs {
    /// Starts the subject (`stopped`: it waits for SIGCONT before its exec); returns the
    /// instant the deadline and the watchdog run from.
    pub fn start_subject(
        &mut self,
        cx: &Context<'_>,
        failpoints: &[String],
        stopped: bool,
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
            stopped,
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
            stopped: false,
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
        let stdin = Input::open(launch.stdin)?;
        let (out_read, out_write) = cloexec_pipe()?;
        let (err_read, err_write) = cloexec_pipe()?;
        let (report_read, report_write) = cloexec_pipe()?;
        let mode = self.keeper_mode(cx);
        let lifeline = match mode {
            pidns::Mode::NewNamespace { lifeline: true } => Some(cloexec_pipe()?),
            _ => None,
        };
        let cwd = launch
            .cwd
            .clone()
            .unwrap_or_else(|| cx.ground().vars().work.clone());
        let mut fds = vec![
            (stdin.child_end(), 0),
            (out_write.as_fd(), 1),
            (err_write.as_fd(), 2),
            (report_write.as_fd(), pidns::REPORT_FD),
        ];
        if let Some((read, _)) = &lifeline {
            fds.push((read.as_fd(), pidns::LIFELINE_FD));
        }
        let request = spawn::Request {
            program: &cx.engine().init_program,
            args: keeper_args(mode, setup(cx, &how, stdin.is_tty()), launch),
            env: environment(cx, launch, &how),
            cwd: &cwd,
            fds,
        };
        let spawned = cx.engine().keepers.spawn(&request);
        drop(request);
        // Only the keeper holds the child's ends now: their end of file is its own.
        drop((out_write, err_write, report_write));
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
        let keeper = child.id();
        cx.tree().add_root(keeper, how.part);
        let (pid, init) = started(&mut child, keeper, report_read)?;
        cx.tree().add_keeper(keeper, init, how.part);
        if let (Some(init), Some(lifeline)) = (init, lifeline) {
            self.namespace = Some((init, lifeline));
        }
        let (streams, stdin, master) = capture(out_read, err_read, stdin)?;
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
type Started = (Proc, Option<fs::File>, Option<fs::File>);

/// The keeper's arguments: its mode and setup, `--`, then the program's command line.
fn keeper_args(mode: pidns::Mode, setup: pidns::Setup, launch: &Launch) -> Vec<OsString> {
    let mut args: Vec<OsString> = mode.args().into_iter().map(Into::into).collect();
    args.extend(setup.args().into_iter().map(Into::into));
    args.push("--".into());
    args.push(launch.program.clone().into());
    args.extend(launch.args.iter().map(Into::into));
    args
}

/// The variables the keeper (and so the program) gets on top of wedge's environment.
fn environment(cx: &Context<'_>, launch: &Launch, how: &Start<'_>) -> Vec<(OsString, OsString)> {
    let vars = cx.ground().vars();
    let mut env: Vec<(OsString, OsString)> = vec![
        ("TMPDIR".into(), vars.tmp.clone().into()),
        (MARKER_VAR.into(), cx.tree().marker().into()),
        (PART_VAR.into(), how.part.name().into()),
        ("WEDGE_SEED".into(), cx.spec().seed.to_string().into()),
    ];
    if how.part == Part::Subject && !how.failpoints.is_empty() {
        env.push((
            launch.failpoints_var.into(),
            how.failpoints.join(";").into(),
        ));
    }
    // The launch's own last: it may set any of the above.
    for (k, v) in &launch.env {
        env.retain(|(have, _)| have != k.as_str());
        env.push((k.into(), v.into()));
    }
    env
}

/// What the keeper does to itself before anything else ([`pidns::Setup`]): die with wedge, join
/// the tree's cgroup (then the v1 directories of its limits, on hybrid hosts), lead a process
/// group (or a session with the terminal), take its CPUs.
fn setup(cx: &Context<'_>, how: &Start<'_>, with_tty: bool) -> pidns::Setup {
    let cgroups = cx
        .tree()
        .join_file(how.part)
        .into_iter()
        .chain(cx.ground().limits().join_files())
        .map(|c| OsString::from_vec(c.into_bytes()).into())
        .collect();
    pidns::Setup {
        parent: Some(std::process::id() as i32),
        cgroups,
        tty: with_tty,
        cpus: cx.spec().cpus.clone(),
        stopped: how.stopped,
    }
}

fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// The new process's standard input, as the launch asks: a pipe, nothing, or a terminal.
enum Input {
    /// The read end (the child's) and the write end (wedge's: the subject's stdin).
    Pipe(OwnedFd, OwnedFd),
    Null(fs::File),
    Pty(Pty),
}

impl Input {
    fn open(mode: StdinMode) -> io::Result<Input> {
        Ok(match mode {
            StdinMode::Pipe => {
                let (read, write) = cloexec_pipe()?;
                Input::Pipe(read, write)
            }
            StdinMode::Null => Input::Null(fs::File::open("/dev/null")?),
            StdinMode::Pty => Input::Pty(Pty::open()?),
        })
    }

    fn is_tty(&self) -> bool {
        matches!(self, Input::Pty(_))
    }

    /// What becomes the child's descriptor 0.
    fn child_end(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Input::Pipe(read, _) => read.as_fd(),
            Input::Null(null) => null.as_fd(),
            Input::Pty(p) => p.slave.as_fd(),
        }
    }
}

/// A terminal pair, both ends close-on-exec from the start. `openpty` opens them inheritable, so
/// a keeper another trial started meanwhile (and its subject) held this trial's terminal, and
/// the terminal's end of file waited for that other trial.
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

impl Pty {
    fn open() -> io::Result<Pty> {
        use nix::fcntl::OFlag;
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
        nix::pty::grantpt(&master)?;
        nix::pty::unlockpt(&master)?;
        let path = nix::pty::ptsname_r(&master)?;
        let slave = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)?;
        // SAFETY: the descriptor of the PtyMaster, whose ownership passes to the OwnedFd.
        let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
        Ok(Pty {
            master,
            slave: slave.into(),
        })
    }
}

/// The keeper's report: the program's pid and the namespace's init; on a failed exec or a
/// keeper that never reported, the keeper is reaped and the error returned.
fn started(child: &mut Keeper, keeper: i32, report: OwnedFd) -> io::Result<(i32, Option<i32>)> {
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
    out: OwnedFd,
    err: OwnedFd,
    input: Input,
) -> io::Result<(Arc<Capture>, Option<fs::File>, Option<fs::File>)> {
    let streams = Arc::new(Capture::default());
    streams.reader(fs::File::from(out), Source::Stdout);
    streams.reader(fs::File::from(err), Source::Stderr);
    Ok(match input {
        // The child's end is closed with `Input`'s other parts.
        Input::Pipe(_, write) => (streams, Some(fs::File::from(write)), None),
        Input::Null(_) => (streams, None, None),
        Input::Pty(p) => {
            drop(p.slave);
            let master = fs::File::from(p.master);
            streams.reader(master.try_clone()?, Source::Tty);
            (streams, None, Some(master))
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn cloexec(fd: &OwnedFd) -> bool {
        // SAFETY: F_GETFD on a descriptor we own.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        flags >= 0 && flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn a_trials_terminal_is_never_inherited_by_another_trials_keeper() {
        let pty = Pty::open().expect("a terminal pair");
        assert!(cloexec(&pty.master), "the master is close-on-exec");
        assert!(cloexec(&pty.slave), "the slave is close-on-exec");
        // And it is a terminal, which the keeper makes its controlling one.
        assert!(nix::unistd::isatty(&pty.slave).unwrap());
    }
}
