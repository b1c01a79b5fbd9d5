//! The physical floor of a seccomp exec supervisor: the least a supervisor that sees every
//! `execve`/`execveat` of a command can do. It is what `wedge-run`'s per-exec cost is measured
//! against (issue 25): whatever `wedge-run` spends above this is its own, everything below it is
//! the kernel's.
//!
//! ```text
//! floor_supervisor [--read] -- CMD ARGS...
//! ```
//!
//! The child installs a classic-BPF filter that notifies `execve` and `execveat` (and allows
//! everything else), hands the listener to the parent over a socketpair, and executes CMD. The
//! parent answers every notification with `SECCOMP_USER_NOTIF_FLAG_CONTINUE`; with `--read` it
//! first reads the path and the argv out of the target with `process_vm_readv`, as any supervisor
//! that decides on them must, and checks the notification is still valid after reading.
//!
//! Hand-written on libc on purpose: it *is* the floor, so there is no library between the kernel
//! and the loop, no policy, no logging, no allocation per exec. Exits with CMD's status (128+N
//! when a signal N killed it), 125 when it could not supervise, 2 on bad arguments.

use std::ffi::{CString, OsString};
use std::fmt;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

const USAGE: &str = "usage: floor_supervisor [--read] -- CMD ARGS...";
/// Exit status when supervision itself failed (as `wedge-run` reports a runner error).
const EXIT_SUPERVISOR_ERROR: u8 = 125;

/// `AUDIT_ARCH_*` of the build target (`<linux/audit.h>`: the ELF machine | `__AUDIT_ARCH_64BIT`
/// 0x8000_0000 | `__AUDIT_ARCH_LE` 0x4000_0000). libc does not export these for glibc targets.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // EM_X86_64 = 62
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // EM_AARCH64 = 183

/// `seccomp_data` offsets: `int nr` at 0, `__u32 arch` at 4.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;

/// Bounds on what `--read` copies out of the target: a path is at most `PATH_MAX`, and a
/// supervisor deciding on argv needs a bounded amount of it.
const MAX_STRING: usize = libc::PATH_MAX as usize;
const MAX_ARGS: usize = 256;
const PAGE: usize = 4096;

/// A failed system call, named.
#[derive(Debug)]
struct SysError {
    what: &'static str,
    errno: Errno,
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.errno)
    }
}

fn named(what: &'static str) -> impl FnOnce(Errno) -> SysError {
    move |errno| SysError { what, errno }
}

fn main() -> ExitCode {
    let Some((read, cmd)) = parse_args(std::env::args_os().skip(1).collect()) else {
        eprintln!("floor_supervisor: {USAGE}");
        return ExitCode::from(2);
    };
    match supervise(read, &cmd) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("floor_supervisor: {e}");
            ExitCode::from(EXIT_SUPERVISOR_ERROR)
        }
    }
}

/// `[--read] -- CMD ARGS...` → (read, argv). `None` on anything else, or a NUL in an argument.
fn parse_args(args: Vec<OsString>) -> Option<(bool, Vec<CString>)> {
    let mut rest = args.as_slice();
    let read = rest.first().is_some_and(|a| a == "--read");
    if read {
        rest = &rest[1..];
    }
    let (dash, cmd) = rest.split_first()?;
    if dash != "--" || cmd.is_empty() {
        return None;
    }
    let argv = cmd
        .iter()
        .map(|a| CString::new(a.clone().into_vec()).ok())
        .collect::<Option<Vec<_>>>()?;
    Some((read, argv))
}

/// Starts CMD under the filter and serves its notifications until it exits.
fn supervise(read: bool, argv: &[CString]) -> Result<u8, SysError> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(named("socketpair"))?;
    // Everything the child needs is built before the fork.
    let filter = exec_filter();
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: this process is single-threaded (no thread was ever started), so the child may run
    // any code, allocation included, until it executes CMD or exits.
    match unsafe { fork() }.map_err(named("fork"))? {
        ForkResult::Child => child(theirs.as_raw_fd(), &filter, &ptrs),
        ForkResult::Parent { child } => {
            drop(theirs);
            let Some(listener) = receive_listener(&ours)? else {
                // The child failed before handing over (it said why): its status is ours.
                return wait_child(child);
            };
            serve(read, listener.as_fd(), child)
        }
    }
}

/// The filter: kill on a foreign architecture (its syscall numbers mean other things; a real
/// filter would also refuse x32's, this floor has none to refuse), notify `execve` and
/// `execveat`, allow the rest.
fn exec_filter() -> [libc::sock_filter; 8] {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    [
        stmt(load, OFFSET_ARCH),
        jeq(AUDIT_ARCH, 1, 0),
        stmt(ret, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(load, OFFSET_NR),
        jeq(libc::SYS_execve as u32, 2, 0),
        jeq(libc::SYS_execveat as u32, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(ret, libc::SECCOMP_RET_USER_NOTIF),
    ]
}

/// The child: filter, hand over the listener, execute CMD. Never returns.
fn child(channel: RawFd, filter: &[libc::sock_filter], argv: &[*const libc::c_char]) -> ! {
    let code = match install_and_send(channel, filter) {
        Ok(()) => {
            // SAFETY: `argv` is a NULL-terminated array of pointers to C strings that the
            // parent built before the fork and that live until the exec replaces this image.
            unsafe { libc::execvp(argv[0], argv.as_ptr()) };
            eprintln!("floor_supervisor: execvp: {}", Errno::last());
            127
        }
        Err(e) => {
            eprintln!("floor_supervisor: {e}");
            i32::from(EXIT_SUPERVISOR_ERROR)
        }
    };
    // SAFETY: _exit(2) ends the child without running the parent's atexit handlers.
    unsafe { libc::_exit(code) }
}

fn install_and_send(channel: RawFd, filter: &[libc::sock_filter]) -> Result<(), SysError> {
    // SAFETY: prctl(2) with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(SysError {
            what: "PR_SET_NO_NEW_PRIVS",
            errno: Errno::last(),
        });
    }
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: seccomp(2) reads `prog` and the filter it points to, both alive for the call; the
    // kernel copies the program.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        return Err(SysError {
            what: "seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER)",
            errno: Errno::last(),
        });
    }
    // SAFETY: seccomp returned a new listener descriptor that nothing else owns.
    let listener = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let fds = [listener.as_raw_fd()];
    let iov = [IoSlice::new(b"L")];
    sendmsg::<()>(
        channel,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(named("sendmsg(listener)"))?;
    // The parent holds its own copy now; the target must not keep one.
    drop(listener);
    Ok(())
}

/// The listener, or `None` when the child closed its end without sending one.
fn receive_listener(channel: &OwnedFd) -> Result<Option<OwnedFd>, SysError> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(RawFd);
    let msg = loop {
        match recvmsg::<()>(
            channel.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            other => break other.map_err(named("recvmsg(listener)"))?,
        }
    };
    for cmsg in msg.cmsgs().map_err(named("recvmsg(listener)"))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // SAFETY: SCM_RIGHTS installed `fd` in this process just now; we are its only owner.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    Ok(None)
}

/// The loop: answer every notification until the child exits, then return its status.
fn serve(read: bool, listener: BorrowedFd<'_>, child: Pid) -> Result<u8, SysError> {
    // SAFETY: pidfd_open(2) with integer arguments; the child is ours and not yet reaped.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) };
    if raw < 0 {
        return Err(SysError {
            what: "pidfd_open",
            errno: Errno::last(),
        });
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
    let mut scratch = Scratch::default();
    let mut listening = true;
    loop {
        // A negative fd is ignored by poll: once the listener hangs up (no task uses the filter
        // any more) only the pidfd is left to wait on.
        let mut fds = [
            pollfd(if listening { listener.as_raw_fd() } else { -1 }),
            pollfd(pidfd.as_raw_fd()),
        ];
        // SAFETY: poll(2) on an array that outlives the call, with its true length.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) } < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                errno => {
                    return Err(SysError {
                        what: "poll",
                        errno,
                    });
                }
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            answer(listener, read.then_some(&mut scratch))?;
        } else if fds[0].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            listening = false;
        }
        if fds[1].revents & libc::POLLIN != 0 {
            return wait_child(child);
        }
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// `waitpid` → an exit status as a shell reports it.
fn wait_child(child: Pid) -> Result<u8, SysError> {
    loop {
        match waitpid(child, None) {
            Err(Errno::EINTR) => continue,
            Err(errno) => {
                return Err(SysError {
                    what: "waitpid",
                    errno,
                });
            }
            Ok(WaitStatus::Exited(_, code)) => return Ok(code as u8),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as u8),
            Ok(_) => continue,
        }
    }
}

/// One notification: receive, (read), check validity, let the exec continue. `ENOENT` from the
/// kernel means the target died or was interrupted meanwhile: nothing to answer, not an error.
fn answer(listener: BorrowedFd<'_>, scratch: Option<&mut Scratch>) -> Result<(), SysError> {
    let fd = listener.as_raw_fd();
    // SAFETY: seccomp_notif is plain integers; all-zero is valid and RECV requires it zeroed.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: RECV writes one seccomp_notif into `req`, which outlives the call.
    if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } < 0 {
        return tolerate_gone("SECCOMP_IOCTL_NOTIF_RECV");
    }
    if let Some(scratch) = scratch {
        scratch.read_exec(&req);
        // A decision is only sound if the target is still the one that made the request.
        // SAFETY: ID_VALID reads one u64 from `req.id`, which outlives the call.
        if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &req.id) } < 0 {
            return tolerate_gone("SECCOMP_IOCTL_NOTIF_ID_VALID");
        }
    }
    let mut resp = libc::seccomp_notif_resp {
        id: req.id,
        val: 0,
        error: 0,
        flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
    };
    // SAFETY: SEND reads one seccomp_notif_resp from `resp`, which outlives the call.
    if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) } < 0 {
        return tolerate_gone("SECCOMP_IOCTL_NOTIF_SEND");
    }
    Ok(())
}

/// `Ok` for the errors that only mean the target went away (or a signal interrupted us).
fn tolerate_gone(what: &'static str) -> Result<(), SysError> {
    match Errno::last() {
        Errno::ENOENT | Errno::EINTR => Ok(()),
        errno => Err(SysError { what, errno }),
    }
}

/// Buffers `--read` reuses across notifications, so that reading costs copies, not allocation.
#[derive(Default)]
struct Scratch {
    path: Vec<u8>,
    pointers: Vec<u64>,
    arg: Vec<u8>,
}

impl Scratch {
    /// Copies the path and each argv string of an exec out of the target, as a supervisor that
    /// decides on them must. Unreadable memory ends the copy early: the exec fails on it anyway.
    fn read_exec(&mut self, req: &libc::seccomp_notif) {
        let pid = Pid::from_raw(req.pid as libc::pid_t);
        let args = &req.data.args;
        let (path, argv) = if i64::from(req.data.nr) == libc::SYS_execveat {
            (args[1], args[2])
        } else {
            (args[0], args[1])
        };
        let mut total = read_cstr(pid, path, &mut self.path);
        read_pointers(pid, argv, &mut self.pointers);
        for &ptr in &self.pointers {
            total += read_cstr(pid, ptr, &mut self.arg);
        }
        std::hint::black_box(total);
    }
}

/// Reads the NUL-terminated string at `addr` into `buf`, a page at most per call (a read that
/// crosses into an unmapped page would fail whole), up to [`MAX_STRING`]. Returns its length.
fn read_cstr(pid: Pid, addr: u64, buf: &mut Vec<u8>) -> usize {
    buf.clear();
    let mut at = addr as usize;
    while buf.len() < MAX_STRING {
        let chunk = (PAGE - at % PAGE).min(MAX_STRING - buf.len());
        let start = buf.len();
        buf.resize(start + chunk, 0);
        let Some(got) = read_remote(pid, at, &mut buf[start..]) else {
            buf.truncate(start);
            break;
        };
        if let Some(nul) = buf[start..start + got].iter().position(|&b| b == 0) {
            buf.truncate(start + nul);
            break;
        }
        buf.truncate(start + got);
        at += got;
    }
    buf.len()
}

/// Reads argv's pointer array at `addr` up to its NULL, at most [`MAX_ARGS`] entries.
fn read_pointers(pid: Pid, addr: u64, out: &mut Vec<u64>) {
    out.clear();
    let mut at = addr as usize;
    let mut page = [0u8; PAGE];
    while out.len() < MAX_ARGS && at != 0 {
        let chunk = (PAGE - at % PAGE).min((MAX_ARGS - out.len()) * 8);
        let Some(got) = read_remote(pid, at, &mut page[..chunk]) else {
            return;
        };
        for word in page[..got].chunks_exact(8) {
            let ptr = u64::from_ne_bytes(word.try_into().expect("8 bytes"));
            if ptr == 0 {
                return;
            }
            out.push(ptr);
        }
        at += got - got % 8;
        if got < 8 {
            return;
        }
    }
}

/// One `process_vm_readv`; `None` when nothing could be read.
fn read_remote(pid: Pid, addr: usize, buf: &mut [u8]) -> Option<usize> {
    let len = buf.len();
    let remote = [RemoteIoVec { base: addr, len }];
    match process_vm_readv(pid, &mut [IoSliceMut::new(buf)], &remote) {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}
