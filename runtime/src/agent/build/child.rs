//! The code that runs after `clone3`: the intermediate process and the init process. It is ordinary
//! Rust (it allocates, formats, logs through `tracing`), as real container builds are; that is what
//! makes cloning while another thread holds a lock (the allocator's, stderr's) a real hazard here.

use super::handshake::{Message, NOTIFY_SOCKET};
use crate::agent::failpoints;
use crate::sys::{self, Cloned};
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{BorrowedFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use wedge_core::cwd::{self, ThisProcess};

/// PATH used to find a program when the exec's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything the children need, prepared by the builder before `clone3`.
pub(super) struct ChildPlan<'a> {
    pub exec_id: u64,
    pub state_dir: &'a Path,
    pub program: CString,
    pub program_name: &'a str,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub path_var: Option<String>,
    pub cwd: CString,
    /// The intermediate's end of its SEQPACKET handshake socketpair with the builder.
    pub intermediate_sync: RawFd,
    /// The init's end of its SEQPACKET handshake socketpair with the builder.
    pub init_sync: RawFd,
    /// Write end of the exec-notify pipe (CLOEXEC: closed by a successful exec).
    pub exec_notify: RawFd,
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// The stall failpoint fired for this build: the init process stalls forever.
    pub stall: bool,
    /// The lose-init failpoint fired: the intermediate exits without reporting the init.
    pub lose_init: bool,
}

/// Writes one handshake message (one datagram). The descriptor belongs to the plan; it is not
/// closed here.
fn send(fd: RawFd, message: &Message) -> io::Result<()> {
    // SAFETY: `fd` is open for the life of this process (it is closed only by exec or exit).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let bytes = message.encode();
    let sent = nix::sys::socket::send(
        std::os::fd::AsRawFd::as_raw_fd(&borrowed),
        &bytes,
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
    )?;
    if sent != bytes.len() {
        return Err(io::Error::other("short handshake write"));
    }
    Ok(())
}

fn exit(code: i32) -> ! {
    // SAFETY: ends this child without running the parent's atexit handlers or destructors.
    unsafe { libc::_exit(code) }
}

/// The intermediate process: never returns.
pub(super) fn intermediate(plan: &ChildPlan<'_>) -> ! {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_intermediate(plan)));
    match outcome {
        Ok(Ok(())) => exit(0),
        Ok(Err(e)) => {
            let _ = send(plan.intermediate_sync, &Message::Failed(e.to_string()));
            exit(1)
        }
        Err(_) => exit(2),
    }
}

fn run_intermediate(plan: &ChildPlan<'_>) -> io::Result<()> {
    tracing::info!(
        exec = plan.exec_id,
        "intermediate: in new mount, uts and ipc namespaces"
    );
    let hostname = b"wedge";
    // SAFETY: a valid buffer of the given length.
    if unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) } < 0 {
        return Err(io::Error::other(format!(
            "sethostname: {}",
            io::Error::last_os_error()
        )));
    }
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| io::Error::other(format!("making / private: {e}")))?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
        .map_err(|e| io::Error::other(format!("unshare(CLONE_NEWPID): {e}")))?;
    // SAFETY: the child runs `init`, which never returns.
    match unsafe { sys::clone3(0) }.map_err(|e| io::Error::other(format!("clone3 of init: {e}")))? {
        Cloned::Child => init(plan),
        Cloned::Parent(_) if plan.lose_init => exit(3),
        Cloned::Parent(pid) => {
            tracing::debug!(
                exec = plan.exec_id,
                init = pid.as_raw(),
                "intermediate: init process created"
            );
            send(plan.intermediate_sync, &Message::InitPid(pid.as_raw()))
        }
    }
}

/// The init process (pid 1 of the new pid namespace): never returns.
fn init(plan: &ChildPlan<'_>) -> ! {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_init(plan)));
    match outcome {
        // `run_init` only returns on failure: a successful exec does not return.
        Ok(InitError::BeforeStart(message)) => {
            let _ = send(plan.init_sync, &Message::Failed(message));
            exit(1)
        }
        Ok(InitError::Exec(errno, message)) => {
            // SAFETY: the exec-notify write end is open until exec or exit.
            let mut pipe = unsafe { std::fs::File::from_raw_fd(plan.exec_notify) };
            let _ = pipe.write_all(&Message::ExecFailed { errno, message }.encode());
            std::mem::forget(pipe);
            exit(127)
        }
        Err(_) => exit(2),
    }
}

enum InitError {
    /// Failed before [`Message::Start`]: reported over the handshake socket.
    BeforeStart(String),
    /// Failed to exec (or to prepare it) after [`Message::Start`]: reported over the exec-notify pipe.
    Exec(i32, String),
}

fn run_init(plan: &ChildPlan<'_>) -> InitError {
    if let Err(e) = nix::unistd::setsid() {
        return InitError::BeforeStart(format!("setsid: {e}"));
    }
    let keep = [
        plan.init_sync,
        plan.exec_notify,
        plan.stdin,
        plan.stdout,
        plan.stderr,
    ];
    if let Err(e) = sys::close_fds_except(&keep) {
        return InitError::BeforeStart(format!("closing inherited descriptors: {e}"));
    }
    let connected = cwd::in_dir(
        None,
        &ThisProcess,
        plan.state_dir,
        || failpoints::hit(failpoints::CWD_BEFORE_CONNECT),
        || UnixStream::connect(NOTIFY_SOCKET),
        || {},
    );
    let mut conn = match connected {
        Ok(conn) => conn,
        Err(e) => {
            return InitError::BeforeStart(format!(
                "connecting to the notify socket {} in {}: {e}",
                NOTIFY_SOCKET,
                plan.state_dir.display()
            ));
        }
    };
    if let Err(e) = send(plan.init_sync, &Message::Connected) {
        return InitError::BeforeStart(format!("handshake: {e}"));
    }
    if plan.stall {
        tracing::debug!(
            exec = plan.exec_id,
            "init: stalled by failpoint {}",
            failpoints::STALL_BUILD
        );
        loop {
            nix::unistd::pause();
        }
    }
    let mut start = [0u8; Message::START_LEN];
    if let Err(e) = conn.read_exact(&mut start) {
        return InitError::Exec(0, format!("waiting for start: {e}"));
    }
    if Message::decode(&start) != Ok(Message::Start) {
        return InitError::Exec(0, "unexpected message on the notify socket".to_string());
    }
    drop(conn);
    match prepare_exec(plan) {
        Ok(never) => match never {},
        Err((errno, message)) => InitError::Exec(errno, message),
    }
}

/// Enters the working directory, wires stdio, resets signal state and execs. Returns only on failure.
fn prepare_exec(plan: &ChildPlan<'_>) -> Result<std::convert::Infallible, (i32, String)> {
    let os = |what: &str, e: nix::Error| (e as i32, format!("{what}: {}", e.desc()));
    nix::unistd::chdir(plan.cwd.as_c_str()).map_err(|e| os("chdir to the working directory", e))?;
    for (from, to) in [(plan.stdin, 0), (plan.stdout, 1), (plan.stderr, 2)] {
        // SAFETY: dup2 onto the standard descriptors of this single-threaded process.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(os("dup2", nix::Error::last()));
        }
    }
    // SAFETY: restoring default dispositions; no handler is installed.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }
        .map_err(|e| os("resetting SIGPIPE", e))?;
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| os("clearing the signal mask", e))?;

    let mut last_error = nix::Error::ENOENT;
    for candidate in candidates(plan) {
        match nix::unistd::execve(&candidate, &plan.argv, &plan.envp) {
            Err(nix::Error::ENOENT | nix::Error::ENOTDIR) => {}
            Err(e) => last_error = e,
        }
    }
    Err((last_error as i32, last_error.desc().to_string()))
}

/// The paths to try: the program itself if it names a path, else each PATH entry joined with it.
fn candidates(plan: &ChildPlan<'_>) -> Vec<CString> {
    if plan.program_name.contains('/') {
        return vec![plan.program.clone()];
    }
    let path = plan.path_var.as_deref().unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|dir| if dir.is_empty() { "." } else { dir })
        .filter_map(|dir| CString::new(format!("{dir}/{}", plan.program_name)).ok())
        .collect()
}
