//! Starting processes inside the trial's tree: the subject (which starts the clock) and the
//! processes `spawn` steps name. Each joins its part of the tree in the child, before exec, so
//! nothing it starts can escape the tree.

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use super::state::{Proc, Trial};
use crate::isolation::{MARKER_VAR, Part};
use crate::monitor::Monitor;
use crate::output::{Capture, Source};
use crate::scenario::StdinMode;
use crate::subject::{self, Launch};
use crate::sys::pidfd_open;

/// A started process, and the subject's ends of its stdin (a pipe or a terminal).
pub(crate) type Started = (Proc, Option<ChildStdin>, Option<fs::File>);

impl Trial<'_> {
    /// Starts the subject; the deadline and the watchdog run from this moment.
    pub fn start_subject(&mut self) -> Result<(), String> {
        let launch = subject::subject_launch(self.spec.scenario, &self.vars)?;
        self.note(format!("start {}", launch.display()));
        // Time runs from just before the fork: the subject may run before spawn() returns.
        let start = Instant::now();
        let (proc, stdin, master) = self
            .spawn("subject", &launch, Part::Subject)
            .map_err(|e| format!("starting {}: {e}", launch.program.display()))?;
        self.subject_pgid = Some(proc.pid);
        self.stdin = stdin;
        self.pty_master = master;
        self.start = start;
        self.deadline = self.start + self.spec.scenario.deadline;
        self.monitor = Monitor::new(self.start, self.deadline, self.spec.scenario.quiescence);
        self.subject = Some(proc);
        Ok(())
    }

    /// Starts `launch` in `part` of the tree, capturing its output.
    pub fn spawn(&mut self, name: &str, launch: &Launch, part: Part) -> std::io::Result<Started> {
        let mut cmd = self.command(launch, part);
        let pty = match launch.stdin {
            StdinMode::Pipe => {
                cmd.stdin(Stdio::piped());
                None
            }
            StdinMode::Null => {
                cmd.stdin(Stdio::null());
                None
            }
            StdinMode::Pty => {
                let p = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
                cmd.stdin(Stdio::from(p.slave.try_clone()?));
                Some(p)
            }
        };
        self.in_child(&mut cmd, part, pty.is_some());
        let mut child = crate::reaper::spawn_owned(&mut cmd)?;
        let pid = child.id() as i32;
        self.tree.add_root(pid, part);
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
        let pidfd = pidfd_open(pid);
        let proc = Proc {
            name: name.to_string(),
            pid,
            child,
            pidfd,
            exit: None,
            streams,
        };
        Ok((proc, stdin, master))
    }

    /// The command line with the trial's environment, directory and output pipes.
    fn command(&self, launch: &Launch, part: Part) -> Command {
        let mut cmd = Command::new(&launch.program);
        cmd.args(&launch.args);
        cmd.env("TMPDIR", &self.vars.tmp);
        cmd.env(MARKER_VAR, self.tree.marker());
        let part_name = if part == Part::Subject {
            "subject"
        } else {
            "aux"
        };
        cmd.env("WEDGE_TRIAL_PART", part_name);
        cmd.env("WEDGE_SEED", self.spec.seed.to_string());
        if part == Part::Subject && !self.failpoints.is_empty() {
            cmd.env(launch.failpoints_var, self.failpoints.join(";"));
        }
        cmd.envs(&launch.env);
        cmd.current_dir(launch.cwd.clone().unwrap_or_else(|| self.vars.work.clone()));
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    /// What the child does before exec: join the tree's cgroup, become a process group (or a
    /// session with the terminal), die with wedge, and take its CPUs.
    fn in_child(&self, cmd: &mut Command, part: Part, with_tty: bool) {
        let join = self.tree.join_file(part);
        let cpus = self.spec.cpus.clone();
        // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
        // system calls (open/write/close, setpgid/setsid, ioctl, prctl, sched_setaffinity) on
        // memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(path) = &join {
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
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
}
