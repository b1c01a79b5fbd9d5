//! What the keeper does to itself first, before it blocks signals or makes a namespace: the part
//! of its start that a forked child of wedge's did before exec until wedge started keepers with
//! `posix_spawn` (`crate::engine::spawn` says why). In this order:
//!
//! 1. dies with wedge (`PR_SET_PDEATHSIG`), and exits at once if wedge is already gone (the
//!    signal is only armed from the call on: the parent's pid tells);
//! 2. joins the trial's cgroups (its own part's, then the v1 directories of its limits), so
//!    that everything it starts is the trial's;
//! 3. leads a process group of its own, or with a terminal a session whose controlling
//!    terminal is its stdin;
//! 4. takes the trial's CPUs.
//!
//! A failure is the keeper's report's `Failed` errno, as a failed exec of the program is.

use std::io;
use std::path::PathBuf;

/// The keeper's own setup, as its options carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Setup {
    /// wedge's pid (`--parent PID`): the keeper dies with it.
    pub parent: Option<i32>,
    /// Files to write "0" to, in order (`--cgroup FILE`, repeated): `cgroup.procs`, or a v1
    /// hierarchy's `tasks`.
    pub cgroups: Vec<PathBuf>,
    /// A session with stdin as its controlling terminal (`--tty`); else a process group.
    pub tty: bool,
    /// The CPUs it and everything it starts may run on (`--cpus 0,2`).
    pub cpus: Option<Vec<usize>>,
    /// The program waits, stopped just before its exec, until wedge sends it SIGCONT
    /// (`--stopped`): so that a tracer seizes it before its first call. The keeper reports it
    /// started once it has stopped; a failed exec is then the program's own exit 127.
    pub stopped: bool,
}

/// Why the setup options do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("{option} needs a value")]
    Missing { option: &'static str },
    #[error("--parent needs a pid, not {0:?}")]
    Parent(String),
    #[error("--cpus needs CPU numbers separated by commas, not {0:?}")]
    Cpus(String),
}

impl Setup {
    /// Its options.
    pub fn args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = self.parent {
            out.extend(["--parent".to_string(), p.to_string()]);
        }
        for c in &self.cgroups {
            out.extend(["--cgroup".to_string(), c.display().to_string()]);
        }
        if self.tty {
            out.push("--tty".to_string());
        }
        if self.stopped {
            out.push("--stopped".to_string());
        }
        if let Some(cpus) = &self.cpus {
            let list: Vec<String> = cpus.iter().map(usize::to_string).collect();
            out.extend(["--cpus".to_string(), list.join(",")]);
        }
        out
    }

    /// Takes its options out of `options`; returns it and the options left (the mode's).
    pub fn parse(options: &[String]) -> Result<(Setup, Vec<String>), SetupError> {
        let mut setup = Setup::default();
        let mut rest = Vec::new();
        let mut it = options.iter();
        while let Some(o) = it.next() {
            let mut value =
                |option: &'static str| it.next().cloned().ok_or(SetupError::Missing { option });
            match o.as_str() {
                "--parent" => {
                    let v = value("--parent")?;
                    setup.parent = Some(match v.parse::<i32>() {
                        Ok(p) if p > 0 => p,
                        _ => return Err(SetupError::Parent(v)),
                    });
                }
                "--cgroup" => setup.cgroups.push(value("--cgroup")?.into()),
                "--tty" => setup.tty = true,
                "--stopped" => setup.stopped = true,
                "--cpus" => {
                    let v = value("--cpus")?;
                    let cpus: Result<Vec<usize>, _> = v.split(',').map(str::parse).collect();
                    match cpus {
                        Ok(c) if !c.is_empty() => setup.cpus = Some(c),
                        _ => return Err(SetupError::Cpus(v)),
                    }
                }
                _ => rest.push(o.clone()),
            }
        }
        Ok((setup, rest))
    }

    /// Does it, in the order the module doc gives; exits (125) if wedge is already gone.
    pub fn apply(&self) -> io::Result<()> {
        if let Some(parent) = self.parent {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } < 0 {
                return Err(io::Error::last_os_error());
            }
            if nix::unistd::getppid().as_raw() != parent {
                std::process::exit(125);
            }
        }
        for file in &self.cgroups {
            // Written, never created or truncated: a file that is gone is an error.
            let mut f = std::fs::OpenOptions::new().write(true).open(file)?;
            std::io::Write::write_all(&mut f, b"0")?;
        }
        if self.tty {
            nix::unistd::setsid()?;
            // SAFETY: ioctl on stdin with an integer argument.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
                return Err(io::Error::last_os_error());
            }
        } else {
            nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))?;
        }
        if let Some(cpus) = &self.cpus {
            let mut set = nix::sched::CpuSet::new();
            for &c in cpus {
                set.set(c)?;
            }
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_round_trip_and_leave_the_modes_alone() {
        let setup = Setup {
            parent: Some(77),
            cgroups: vec![
                "/sys/fs/cgroup/t/subject/cgroup.procs".into(),
                "/v1/tasks".into(),
            ],
            tty: true,
            cpus: Some(vec![0, 3]),
            stopped: true,
        };
        let mut args = strings(&["--join", "12"]);
        args.extend(setup.args());
        let (parsed, rest) = Setup::parse(&args).unwrap();
        assert_eq!(parsed, setup);
        assert_eq!(rest, strings(&["--join", "12"]));
        assert_eq!(
            Setup::parse(&strings(&["--lifeline"])).unwrap(),
            (Setup::default(), strings(&["--lifeline"]))
        );
    }

    #[test]
    fn bad_setup_options_are_named() {
        let bad = |a: &[&str]| Setup::parse(&strings(a)).unwrap_err().to_string();
        assert_eq!(bad(&["--cgroup"]), "--cgroup needs a value");
        assert_eq!(bad(&["--parent", "0"]), "--parent needs a pid, not \"0\"");
        assert_eq!(bad(&["--parent", "x"]), "--parent needs a pid, not \"x\"");
        assert_eq!(
            bad(&["--cpus", "1,,2"]),
            "--cpus needs CPU numbers separated by commas, not \"1,,2\""
        );
        assert!(bad(&["--cpus", ""]).starts_with("--cpus needs"));
    }
}
