//! Starting the sandboxed command, and the hand-off of the seccomp listener from inside the
//! sandbox to the supervisor.
//!
//! The session starts `wedge-run __shim --fd N -- CMD ARGS...`, under bubblewrap or directly.
//! The shim (see [`run_shim`]) installs the filter, sends the listener back over a
//! `SOCK_SEQPACKET` socketpair with `SCM_RIGHTS`, plus `SCM_CREDENTIALS` so that the kernel
//! translates its pid into the session's pid namespace, waits for the session's go-ahead (by then
//! the supervisor is running and the session holds a pidfd for the command), closes everything,
//! and executes CMD. That exec is the first one the supervisor decides.

use std::ffi::{CString, OsStr, OsString};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixCredentials, recvmsg,
    sendmsg, setsockopt, socketpair, sockopt,
};

use super::filter::install_exec_filter;
use crate::mutation::{Mutation, active};

/// The hidden first argument that turns `wedge-run` into the in-sandbox shim.
pub const SHIM_ARG: &str = "__shim";
/// The shim's flag for a policy with `deny_tracing = false`.
const ALLOW_TRACING_ARG: &str = "--allow-tracing";

/// Exit codes, as a shell reports them.
pub const EXIT_RUNNER_ERROR: i32 = 125;
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;

/// Where the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxKind {
    /// bubblewrap: new pid namespace, read-only view of the host, dies with the runner.
    Bwrap,
    /// No sandbox: the child installs the filter itself.
    None,
}

/// The session's end of the hand-off channel and the shim's end, before the shim is started.
pub struct Channel {
    pub runner: OwnedFd,
    pub shim: OwnedFd,
}

impl Channel {
    pub fn new() -> nix::Result<Channel> {
        let (runner, shim) = socketpair(
            nix::sys::socket::AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        setsockopt(&runner, sockopt::PassCred, &true)?;
        Ok(Channel { runner, shim })
    }
}

/// `bwrap` (or `$WEDGE_BWRAP`) with the namespaces and mounts the shim runs in, ending in `--`:
/// what follows is the program to run. Public so a benchmark can run bubblewrap alone exactly as
/// `wedge-run` does and price the supervisor, not a different sandbox.
pub fn bwrap_command() -> Command {
    let mut c = Command::new(bwrap_path());
    c.args([
        "--die-with-parent",
        "--unshare-pid",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
    ]);
    if let Ok(cwd) = std::env::current_dir() {
        c.arg("--chdir").arg(cwd);
    }
    c.arg("--");
    c
}

/// The command line that starts the shim for `cmd` in the chosen sandbox.
pub fn shim_command(
    kind: SandboxKind,
    wedge_run: &Path,
    shim_fd: RawFd,
    deny_tracing: bool,
    cmd: &[OsString],
) -> Command {
    let mut command = match kind {
        SandboxKind::Bwrap => {
            let mut c = bwrap_command();
            c.arg(wedge_run);
            c
        }
        SandboxKind::None => Command::new(wedge_run),
    };
    command.arg(SHIM_ARG).arg("--fd").arg(shim_fd.to_string());
    if !deny_tracing {
        command.arg(ALLOW_TRACING_ARG);
    }
    command.arg("--").args(cmd);
    if active(Mutation::CallerPgrp) {
        command.process_group(0);
    }
    // SAFETY: only async-signal-safe calls (fcntl, prctl, getppid) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // The shim's end of the channel must survive the exec(s) up to the shim.
            let flags = libc::fcntl(shim_fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(shim_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Die with the session. PDEATHSIG fires when the *thread* that forked us exits, so the
            // session spawns from its main thread, which lives as long as we do. We stay in the
            // caller's process group: a group of our own would lose the terminal's foreground.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

fn bwrap_path() -> PathBuf {
    std::env::var_os("WEDGE_BWRAP").map_or_else(|| PathBuf::from("bwrap"), PathBuf::from)
}

/// What the shim handed over.
pub struct Handoff {
    pub listener: OwnedFd,
    /// The command's pid in the session's pid namespace.
    pub pid: libc::pid_t,
}

/// Runner side: waits for the shim's listener. `Ok(None)` when the shim ended without sending
/// one (it could not start the command, or the sandbox failed before the shim ran).
pub fn receive_listener(channel: &OwnedFd) -> Result<Option<Handoff>, Errno> {
    let mut byte = [0u8; 1];
    let mut space = nix::cmsg_space!(RawFd, UnixCredentials);
    loop {
        let mut iov = [IoSliceMut::new(&mut byte)];
        let msg = match recvmsg::<()>(
            channel.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(err) => return Err(err),
        };
        if msg.bytes == 0 {
            return Ok(None);
        }
        let (mut listener, mut pid) = (None, None);
        for cmsg in msg.cmsgs()? {
            match cmsg {
                ControlMessageOwned::ScmRights(fds) => {
                    for fd in fds {
                        // SAFETY: the kernel just installed `fd` in our table for us alone.
                        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                        listener.get_or_insert(fd);
                    }
                }
                ControlMessageOwned::ScmCredentials(creds) => pid = Some(creds.pid()),
                _ => {}
            }
        }
        return match (listener, pid) {
            (Some(listener), Some(pid)) if pid > 0 => Ok(Some(Handoff { listener, pid })),
            _ => Err(Errno::EPROTO),
        };
    }
}

/// Runner side: lets the shim go on to exec the command.
pub fn release_shim(channel: &OwnedFd) -> Result<(), Errno> {
    nix::unistd::write(channel, b"g").map(drop)
}

/// The in-sandbox shim: `__shim --fd N [--allow-tracing] -- CMD ARGS...`. Never returns.
pub fn run_shim(args: &[OsString]) -> ! {
    let code = match shim(args) {
        Ok(never) => match never {},
        Err((code, message)) => {
            eprintln!("wedge-run: {message}");
            code
        }
    };
    std::process::exit(code)
}

enum Never {}

/// `--fd N [--allow-tracing] -- CMD...`: the descriptor, whether tracing is denied, the command.
fn shim_args(args: &[OsString]) -> Result<(&OsString, bool, &[OsString]), (i32, String)> {
    let usage = || {
        let message = "shim: usage: __shim --fd N [--allow-tracing] -- CMD [ARGS...]";
        (EXIT_RUNNER_ERROR, message.to_owned())
    };
    let [flag, fd, rest @ ..] = args else {
        return Err(usage());
    };
    let (deny_tracing, rest) = match rest {
        [allow, rest @ ..] if allow == ALLOW_TRACING_ARG => (false, rest),
        _ => (true, rest),
    };
    match rest {
        [dashes, cmd @ ..] if flag == "--fd" && dashes == "--" && !cmd.is_empty() => {
            Ok((fd, deny_tracing, cmd))
        }
        _ => Err(usage()),
    }
}

fn shim(args: &[OsString]) -> Result<Never, (i32, String)> {
    let runner_err = |m: String| (EXIT_RUNNER_ERROR, m);
    let (fd, deny_tracing, cmd) = shim_args(args)?;
    let fd: RawFd = fd
        .to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| runner_err(format!("shim: bad descriptor {fd:?}")))?;
    // SAFETY: the session passed us this descriptor, and nothing else here owns it.
    let channel = unsafe { OwnedFd::from_raw_fd(fd) };

    // Resolve the program before the filter is in place, so a missing command is reported the
    // way a shell would, and so the supervisor sees the full path it decides on.
    let program = resolve_program(&cmd[0])
        .map_err(|(code, m)| (code, format!("{}: {m}", cmd[0].to_string_lossy())))?;

    let listener =
        install_exec_filter(deny_tracing).map_err(|e| runner_err(format!("shim: {e}")))?;
    let creds = UnixCredentials::new();
    let fds = [listener.as_raw_fd()];
    let messages = [
        ControlMessage::ScmRights(&fds),
        ControlMessage::ScmCredentials(&creds),
    ];
    sendmsg::<()>(
        channel.as_raw_fd(),
        &[IoSlice::new(b"l")],
        &messages,
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| runner_err(format!("shim: sending the listener: {e}")))?;
    drop(listener);
    let mut go = [0u8; 1];
    match nix::unistd::read(&channel, &mut go) {
        Ok(1) => {}
        Ok(_) => {
            return Err(runner_err(
                "shim: the runner went away before the command started".into(),
            ));
        }
        Err(e) => return Err(runner_err(format!("shim: waiting for the runner: {e}"))),
    }
    drop(channel);

    let path = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| runner_err("shim: NUL in path".into()))?;
    let argv = cmd
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| runner_err("shim: NUL in an argument".into()))?;
    let env = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| runner_err("shim: NUL in the environment".into()))?;
    let err = nix::unistd::execve(&path, &argv, &env).unwrap_err();
    let what = cmd[0].to_string_lossy();
    Err(match err {
        Errno::ENOENT => (EXIT_NOT_FOUND, format!("{what}: {err}")),
        Errno::EPERM => (
            EXIT_CANNOT_EXECUTE,
            format!("{what}: exec denied by the supervisor ({err})"),
        ),
        _ => (EXIT_CANNOT_EXECUTE, format!("{what}: {err}")),
    })
}

/// Finds `program` the way `execvp` does: as given if it has a slash, else on `PATH`.
pub fn resolve_program(program: &OsStr) -> Result<PathBuf, (i32, String)> {
    if program.is_empty() {
        return Err((EXIT_NOT_FOUND, "empty command name".into()));
    }
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut not_executable = None;
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
            not_executable.get_or_insert(candidate);
        }
    }
    match not_executable {
        Some(_) => Err((EXIT_CANNOT_EXECUTE, "Permission denied".into())),
        None => Err((EXIT_NOT_FOUND, "command not found".into())),
    }
}
