//! The spawn path: a real, blocking container build, written as plain synchronous code the way
//! container libraries are. Every strategy calls [`build`]; only where it is called from differs.
//!
//! 1. A per-exec state directory deep enough that `<dir>/notify.sock` is longer than a unix-socket path
//!    may be (108 bytes), so the notify socket is bound by relative name inside the cwd critical
//!    section ([`cwd::in_dir`]).
//! 2. `clone3` (raw syscall) of an intermediate process in new mount, uts and ipc namespaces; it
//!    unshares a new pid namespace and clones the init process (pid 1 there), reports the init's pid
//!    over a SEQPACKET socketpair and exits; the builder `waitpid`s it. The init process, orphaned, is
//!    reparented to the agent (a child subreaper), which later reaps it through a pidfd.
//! 3. The init process connects to the notify socket (again `chdir` + relative name), reports
//!    [`Message::Connected`] over the socketpair, waits for [`Message::Start`] on the notify
//!    connection and execs the command. The builder sends `Start` and blocks reading the CLOEXEC
//!    exec-notify pipe until EOF (exec done) or a [`Message::ExecFailed`] report.
//!
//! The messages are typed ([`handshake`]); the child side is [`child`], which depends on this module
//! only through what the builder hands it (a [`ChildPlan`]).

mod child;
pub mod handshake;
#[cfg(feature = "libcontainer")]
pub mod libcontainer;
#[cfg(all(feature = "libcontainer", feature = "failpoints"))]
pub mod library_hooks;

pub use wedge_core::cwd;

use super::failpoints;
use crate::sys::{self, Cloned};
use child::ChildPlan;
use cwd::{SpawnLock, ThisProcess};
use handshake::{HandshakeError, MAX_MESSAGE, Message, NOTIFY_SOCKET};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The length the notify socket's full path is padded to, well past `sizeof(sun_path)` (108).
const NOTIFY_PATH_LEN: usize = 140;

/// What to build and run: a validated exec request (no NUL bytes anywhere).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildSpec {
    pub exec_id: u64,
    /// The directory under which this exec's state directory is created.
    pub state_root: PathBuf,
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Absolute working directory of the command.
    pub cwd: String,
    /// Which code performs the build.
    pub builder: Builder,
}

/// Which code performs a build: wedge's own (this module), or youki's `libcontainer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Builder {
    /// The build below: libcontainer's steps, written out with failpoints between them.
    Wedge,
    /// A tenant build by `libcontainer` into the agent's container ([`libcontainer`] module).
    Libcontainer(ContainerRef),
}

/// Where the agent's container lives, for a tenant build to join it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRef {
    /// libcontainer's state root (the container's state is `root/id`).
    pub root: PathBuf,
    pub id: String,
    /// The container's root filesystem, as the host sees it (a command's cwd is checked in it).
    pub rootfs: PathBuf,
}

/// A process the build created, reported as soon as it exists so a timeout can kill it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Progress {
    /// The intermediate process was cloned (host pid).
    Intermediate(i32),
    /// The init process was cloned (host pid); it is also the command's process group.
    Init(i32),
}

/// A built and started command.
#[derive(Debug)]
pub struct Built {
    /// Host pid of the command (pid 1 of its pid namespace, leader of its own session and group).
    pub pid: i32,
    /// A pidfd of the command; the agent (the command's parent by then) waits on it.
    pub pidfd: OwnedFd,
    /// Write end of the command's stdin.
    pub stdin: OwnedFd,
    /// Read end of the command's stdout.
    pub stdout: OwnedFd,
    /// Read end of the command's stderr.
    pub stderr: OwnedFd,
}

/// Why a build failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum BuildError {
    #[error("the build was cancelled before it started")]
    Cancelled,
    #[error("cannot execute {program}: {message}")]
    Exec {
        program: String,
        errno: i32,
        message: String,
    },
    #[error("{0}")]
    Failed(String),
    /// The builder itself is gone (the zygote died): no build can work until the agent restarts.
    #[error("{0}")]
    Unavailable(String),
}

/// A failed build, with the pidfd of an init process it had created and killed, if any: the caller (the
/// init's parent) must reap it.
#[derive(Debug)]
pub struct BuildFailure {
    pub error: BuildError,
    pub orphan: Option<OwnedFd>,
}

impl From<BuildError> for BuildFailure {
    fn from(error: BuildError) -> Self {
        Self {
            error,
            orphan: None,
        }
    }
}

fn failed(what: impl std::fmt::Display) -> BuildFailure {
    BuildError::Failed(what.to_string()).into()
}

/// The state directory of exec `id` under `root`: `root/exec-<id>/<padding>`, so that the notify
/// socket's path is [`NOTIFY_PATH_LEN`] bytes long.
pub fn state_dir(root: &Path, id: u64) -> PathBuf {
    let base = root.join(format!("exec-{id}"));
    let used = base.as_os_str().len() + 1 + 1 + NOTIFY_SOCKET.len();
    let pad = NOTIFY_PATH_LEN.saturating_sub(used).clamp(8, 200);
    base.join("s".repeat(pad))
}

/// Removes `root/exec-<id>` when dropped.
struct StateDirGuard(PathBuf);

impl Drop for StateDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills and reaps the intermediate unless it was already reaped.
struct IntermediateGuard(Option<Pid>);

impl IntermediateGuard {
    fn reap(&mut self) -> Result<WaitStatus, BuildFailure> {
        let Some(pid) = self.0.take() else {
            return Err(failed("the intermediate process was already reaped"));
        };
        wait_retrying(pid).map_err(|e| failed(format_args!("waitpid of the intermediate: {e}")))
    }
}

impl Drop for IntermediateGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = wait_retrying(pid);
        }
    }
}

fn wait_retrying(pid: Pid) -> nix::Result<WaitStatus> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL)) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// Kills the init process on the error path and hands its pidfd to the caller for reaping.
struct InitGuard(Option<OwnedFd>);

impl InitGuard {
    fn fail(&mut self, error: impl Into<BuildFailure>) -> BuildFailure {
        let mut failure = error.into();
        if let Some(pidfd) = self.0.take() {
            let _ = sys::pidfd_send_signal(std::os::fd::AsFd::as_fd(&pidfd), Signal::SIGKILL);
            failure.orphan = Some(pidfd);
        }
        failure
    }
}

fn cstring(what: &str, s: &str) -> Result<CString, BuildFailure> {
    CString::new(s).map_err(|_| failed(format_args!("{what} contains a NUL byte")))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), BuildFailure> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| failed(format_args!("pipe2: {e}")))
}

fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), BuildFailure> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| failed(format_args!("socketpair: {e}")))
}

/// Receives one handshake message from a child's SEQPACKET socket (one datagram); `None` when the
/// child closed its end (exited) without sending one.
fn recv_message(sock: &mut UnixStream) -> io::Result<Option<Result<Message, HandshakeError>>> {
    let mut buf = [0u8; MAX_MESSAGE];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => return Ok(Some(Message::decode(&buf[..n]))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What a handshake message from `who` says when it is not the one expected, for a build error.
fn unexpected(who: &str, received: Result<Message, HandshakeError>) -> BuildFailure {
    match received {
        Ok(Message::Failed(why)) => failed(format_args!("{who}: error: {why}")),
        Ok(other) => failed(format_args!(
            "{who}: unexpected handshake message {other:?}"
        )),
        Err(e) => failed(format_args!("{who}: {e}")),
    }
}

/// The exec request as the children need it: C strings, checked for NUL bytes.
struct CommandLine {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    path_var: Option<String>,
}

impl CommandLine {
    fn of(spec: &BuildSpec) -> Result<Self, BuildFailure> {
        let argv = std::iter::once(spec.program.as_str())
            .chain(spec.args.iter().map(String::as_str))
            .map(|a| cstring("an argument", a))
            .collect::<Result<Vec<_>, _>>()?;
        let envp = spec
            .env
            .iter()
            .map(|(k, v)| cstring("the environment", &format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            program: cstring("program", &spec.program)?,
            argv,
            envp,
            cwd: cstring("cwd", &spec.cwd)?,
            path_var: spec
                .env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.clone()),
        })
    }
}

/// Creates the state directory and binds the notify socket in it by relative name, inside the cwd
/// critical section (under `lock`, if any).
fn bind_notify_socket(lock: Option<&SpawnLock>, dir: &Path) -> Result<UnixListener, BuildFailure> {
    std::fs::create_dir_all(dir).map_err(|e| {
        failed(format_args!(
            "creating state directory {}: {e}",
            dir.display()
        ))
    })?;
    cwd::in_dir(
        lock,
        &ThisProcess,
        dir,
        || failpoints::hit(failpoints::CWD_BEFORE_BIND),
        || UnixListener::bind(NOTIFY_SOCKET),
        || failpoints::hit(failpoints::CWD_AFTER_BIND),
    )
    .map_err(|e| {
        failed(format_args!(
            "binding the notify socket {NOTIFY_SOCKET} in {}: {e}",
            dir.display()
        ))
    })
}

/// The builder's ends of the handshake channels and of the command's stdio.
struct ParentEnds {
    intermediate_sync: UnixStream,
    init_sync: UnixStream,
    exec_notify: OwnedFd,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// The children's ends; the builder closes its copies once the intermediate is cloned.
struct ChildEnds {
    intermediate_sync: OwnedFd,
    init_sync: OwnedFd,
    exec_notify: OwnedFd,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// Handshake channels (one with each child, so their messages cannot overtake each other) and the
/// command's stdio, all CLOEXEC.
fn channels() -> Result<(ParentEnds, ChildEnds), BuildFailure> {
    let (intermediate_parent, intermediate_child) = seqpacket_pair()?;
    let (init_parent, init_child) = seqpacket_pair()?;
    let (notify_read, notify_write) = pipe()?;
    let (stdin_read, stdin_write) = pipe()?;
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    let parent = ParentEnds {
        intermediate_sync: UnixStream::from(intermediate_parent),
        init_sync: UnixStream::from(init_parent),
        exec_notify: notify_read,
        stdin: stdin_write,
        stdout: stdout_read,
        stderr: stderr_read,
    };
    let child = ChildEnds {
        intermediate_sync: intermediate_child,
        init_sync: init_child,
        exec_notify: notify_write,
        stdin: stdin_read,
        stdout: stdout_write,
        stderr: stderr_write,
    };
    Ok((parent, child))
}

/// Everything the children need, with the failpoints that shape them evaluated now.
fn child_plan<'a>(
    spec: &'a BuildSpec,
    dir: &'a Path,
    command: CommandLine,
    ends: &ChildEnds,
) -> ChildPlan<'a> {
    ChildPlan {
        exec_id: spec.exec_id,
        state_dir: dir,
        program: command.program,
        program_name: &spec.program,
        argv: command.argv,
        envp: command.envp,
        path_var: command.path_var,
        cwd: command.cwd,
        intermediate_sync: ends.intermediate_sync.as_raw_fd(),
        init_sync: ends.init_sync.as_raw_fd(),
        exec_notify: ends.exec_notify.as_raw_fd(),
        stdin: ends.stdin.as_raw_fd(),
        stdout: ends.stdout.as_raw_fd(),
        stderr: ends.stderr.as_raw_fd(),
        stall: failpoints::fires(failpoints::STALL_BUILD),
        lose_init: failpoints::fires(failpoints::LOSE_INIT),
    }
}

/// Clones the intermediate process in new mount, uts and ipc namespaces; returns its pid (in the
/// builder: the child runs the plan and never returns here).
fn clone_intermediate(plan: &ChildPlan<'_>) -> Result<Pid, BuildFailure> {
    // SAFETY: the child runs `child::intermediate`, which never returns (it ends in `_exit`). That the
    // child inherits locks held by other threads is the hazard this build keeps on purpose.
    let cloned =
        unsafe { sys::clone3(libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC) }
            .map_err(|e| failed(format_args!("clone3 of the intermediate process: {e}")))?;
    match cloned {
        Cloned::Child => child::intermediate(plan),
        Cloned::Parent(pid) => Ok(pid),
    }
}

/// The intermediate reports the init's pid, then exits.
fn receive_init_pid(intermediate_sync: &mut UnixStream) -> Result<Pid, BuildFailure> {
    match recv_message(intermediate_sync) {
        Ok(Some(Ok(Message::InitPid(pid)))) if pid > 0 => Ok(Pid::from_raw(pid)),
        Ok(Some(received)) => Err(unexpected("intermediate process", received)),
        Ok(None) => Err(failed(
            "the intermediate process exited before reporting the init process",
        )),
        Err(e) => Err(failed(format_args!(
            "reading from the intermediate process: {e}"
        ))),
    }
}

/// Reaps the intermediate and opens a pidfd on the init it left behind; a failed intermediate fails
/// the build (with the killed init's pidfd for the caller to reap).
fn reap_intermediate(
    mut guard: IntermediateGuard,
    intermediate: Pid,
    init: Pid,
) -> Result<InitGuard, BuildFailure> {
    let status = guard.reap()?;
    let pidfd = sys::pidfd_open(init.as_raw())
        .map_err(|e| failed(format_args!("pidfd_open of init {init}: {e}")));
    if status != WaitStatus::Exited(intermediate, 0) {
        let _ = kill(init, Signal::SIGKILL);
        let orphan = pidfd.ok();
        return Err(BuildFailure {
            error: BuildError::Failed(format!("the intermediate process ended with {status:?}")),
            orphan,
        });
    }
    Ok(InitGuard(Some(pidfd?)))
}

/// Waits for the init process to connect to the notify socket, then tells it to start. Returns the
/// notify connection, which the builder keeps open until the exec is done.
fn start_init(
    init: &mut InitGuard,
    init_sync: &mut UnixStream,
    listener: &UnixListener,
) -> Result<UnixStream, BuildFailure> {
    match recv_message(init_sync) {
        Ok(Some(Ok(Message::Connected))) => {}
        Ok(Some(received)) => return Err(init.fail(unexpected("init process", received))),
        Ok(None) => {
            return Err(init.fail(failed(
                "the init process exited before connecting to the notify socket",
            )));
        }
        Err(e) => return Err(init.fail(failed(format_args!("reading from the init process: {e}")))),
    }
    let (mut conn, _) = listener
        .accept()
        .map_err(|e| init.fail(failed(format_args!("accepting on the notify socket: {e}"))))?;
    if let Err(e) = conn.write_all(&Message::Start.encode()) {
        return Err(init.fail(failed(format_args!(
            "sending start to the init process: {e}"
        ))));
    }
    Ok(conn)
}

/// Blocks until the exec happened (EOF on the exec-notify pipe) or the init process reports why it
/// failed.
fn wait_for_exec(
    init: &mut InitGuard,
    exec_notify: OwnedFd,
    program: &str,
) -> Result<(), BuildFailure> {
    let mut report = Vec::new();
    if let Err(e) = std::fs::File::from(exec_notify).read_to_end(&mut report) {
        return Err(init.fail(failed(format_args!("reading the exec-notify pipe: {e}"))));
    }
    if report.is_empty() {
        return Ok(());
    }
    let error = match Message::decode(&report) {
        Ok(Message::ExecFailed { errno, message }) => BuildError::Exec {
            program: program.to_string(),
            errno,
            message,
        },
        Ok(other) => BuildError::Failed(format!("init process: unexpected exec report {other:?}")),
        Err(e) => BuildError::Failed(format!("init process: exec report: {e}")),
    };
    Err(init.fail(error))
}

/// Builds and starts the command of `spec`, blocking until it has exec'd (or failed to).
///
/// `lock` is the spawn lock around the cwd critical section (`None`: no lock). `cancelled` is checked
/// once, before any work: a build whose exec already timed out does nothing. `progress` hears of every
/// process the build creates, as soon as it exists.
pub fn build(
    spec: &BuildSpec,
    lock: Option<&SpawnLock>,
    cancelled: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<Built, BuildFailure> {
    if cancelled.load(Ordering::SeqCst) {
        return Err(BuildError::Cancelled.into());
    }
    if let Builder::Libcontainer(container) = &spec.builder {
        return by_libcontainer(spec, container, lock);
    }
    let command = CommandLine::of(spec)?;

    // 1. The state directory and the notify socket, bound by relative name.
    let dir = state_dir(&spec.state_root, spec.exec_id);
    let _state = StateDirGuard(spec.state_root.join(format!("exec-{}", spec.exec_id)));
    let listener = bind_notify_socket(lock, &dir)?;

    // 2. The channels, the intermediate (which clones the init), the init's pid.
    let (mut parent, child_ends) = channels()?;
    let plan = child_plan(spec, &dir, command, &child_ends);
    failpoints::hit(failpoints::BEFORE_CLONE3);
    let intermediate = clone_intermediate(&plan)?;
    let intermediate_guard = IntermediateGuard(Some(intermediate));
    progress(Progress::Intermediate(intermediate.as_raw()));
    drop(child_ends);
    let init = receive_init_pid(&mut parent.intermediate_sync)?;
    progress(Progress::Init(init.as_raw()));
    let mut init_guard = reap_intermediate(intermediate_guard, intermediate, init)?;

    // 3. The init connects and is told to start; the exec is awaited.
    let _conn = start_init(&mut init_guard, &mut parent.init_sync, &listener)?;
    wait_for_exec(&mut init_guard, parent.exec_notify, &spec.program)?;
    let pidfd = init_guard
        .0
        .take()
        .expect("the init pidfd is held until success");
    Ok(Built {
        pid: init.as_raw(),
        pidfd,
        stdin: parent.stdin,
        stdout: parent.stdout,
        stderr: parent.stderr,
    })
}

#[cfg(feature = "libcontainer")]
fn by_libcontainer(
    spec: &BuildSpec,
    container: &ContainerRef,
    lock: Option<&SpawnLock>,
) -> Result<Built, BuildFailure> {
    libcontainer::build(spec, container, lock)
}

#[cfg(not(feature = "libcontainer"))]
fn by_libcontainer(
    _spec: &BuildSpec,
    _container: &ContainerRef,
    _lock: Option<&SpawnLock>,
) -> Result<Built, BuildFailure> {
    Err(failed(
        "this wedge-agent was built without the `libcontainer` cargo feature",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notify_socket_path_is_longer_than_sun_path_allows() {
        for root in [
            "/tmp",
            "/run/wedge-agent/a-much-longer-state-root-than-usual",
        ] {
            let socket = state_dir(Path::new(root), 123_456).join(NOTIFY_SOCKET);
            let len = socket.as_os_str().len();
            assert!(len > 108, "{} is only {len} bytes", socket.display());
            // Binding it by its full path fails: hence the chdir workaround.
            let err =
                UnixListener::bind(&socket).expect_err("a path over 108 bytes cannot be bound");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        }
    }
}
