//! The seccomp mechanics the user-notification probes share: a tiny filter written here (it
//! traps `getppid` to the listener and allows everything else), a forked target process that
//! installs it and hands the listener back over a socket, and the notification ioctls.
//!
//! Guarantee: a [`Target`] is killed and reaped when dropped, and the probe process itself
//! never carries a filter: only the target (and the children it forks) do, so "every user of
//! the filter exited" is something the probe controls.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::child::{fork_child, last_errno};
use super::error::{ListenerError, ProbeError};

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (6.6), not in every libc.
pub const FD_SYNC_WAKE_UP: u64 = 1;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// The filter: `getppid` on x86_64 goes to the listener, everything else is allowed.
fn filter() -> [libc::sock_filter; 6] {
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
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
    let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    [
        stmt(ld, 4), // seccomp_data.arch
        jeq(AUDIT_ARCH_X86_64, 0, 3),
        stmt(ld, 0), // seccomp_data.nr
        jeq(libc::SYS_getppid as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_USER_NOTIF),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Installs the filter on the calling thread with `flags`; the listener fd when `flags` asks
/// for one (else 0), or the errno.
pub fn install_filter(flags: libc::c_ulong) -> Result<RawFd, i32> {
    let prog = filter();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) sets a flag; seccomp(2) reads `fprog`, which points at
    // `prog`, alive for the call.
    let r = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r as RawFd)
    }
}

/// What the target does once it has handed over its listener.
#[derive(Debug, Clone, Copy)]
pub enum Script {
    /// Waits for a byte (or the socket's end), then exits.
    WaitForGo,
    /// Calls `getppid` once, writes `[return value, errno, whether the value is an open fd]`,
    /// then waits for the socket's end.
    CallGetppid,
    /// Forks `n` children one after another, each calling `getppid(i)` (i = 1..=n) once the
    /// previous one is seen blocked in it; writes how many were seen blocked, then waits.
    Fifo(u64),
}

/// A forked process carrying the filter, and the parent's end of its listener and socket.
pub struct Target {
    pub pid: i32,
    listener: Option<OwnedFd>,
    sock: UnixStream,
    reaped: bool,
}

impl Target {
    /// Forks a target that installs the filter with `NEW_LISTENER | extra` and runs `script`.
    /// Call only while this process has one thread.
    pub fn spawn(extra: libc::c_ulong, script: Script) -> Result<Target, ProbeError> {
        let (parent, child) = UnixStream::pair().map_err(ProbeError::Socketpair)?;
        let parent_raw = parent.as_raw_fd();
        let pid = fork_child(|| {
            // SAFETY: closes the child's copy of the parent's end (it would hide the parent's
            // death from the script); the child exits with _exit, so nothing closes it again.
            unsafe { libc::close(parent_raw) };
            let fd = match install_filter(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | extra) {
                Ok(fd) => fd,
                Err(errno) => {
                    let _ = send_fd(&child, -errno);
                    return 1;
                }
            };
            if send_fd(&child, fd).is_err() {
                return 1;
            }
            run_script(&child, script)
        })?;
        drop(child);
        let mut t = Target {
            pid,
            listener: None,
            sock: parent,
            reaped: false,
        };
        match recv_fd(&t.sock) {
            Ok(Ok(fd)) => t.listener = Some(fd),
            Ok(Err(errno)) => return Err(ProbeError::NewListener(errno)),
            Err(e) => return Err(ProbeError::NoListener(e)),
        }
        Ok(t)
    }

    /// The listener (closed: -1).
    pub fn fd(&self) -> RawFd {
        self.listener.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// Closes the parent's listener.
    pub fn close_listener(&mut self) {
        self.listener = None;
    }

    /// Tells a [`Script::WaitForGo`] target to exit.
    pub fn go(&mut self) {
        let _ = self.sock.write_all(&[1]);
    }

    /// Reads `N` values the script wrote.
    pub fn read_values<const N: usize>(&mut self) -> Result<[i64; N], ProbeError> {
        let mut out = [0i64; N];
        for v in &mut out {
            let mut b = [0u8; 8];
            self.sock
                .read_exact(&mut b)
                .map_err(ProbeError::ReadTarget)?;
            *v = i64::from_ne_bytes(b);
        }
        Ok(out)
    }

    /// Waits until the target has exited, leaving it a zombie.
    pub fn wait_exited(&self) -> Result<(), ProbeError> {
        use nix::sys::wait::{Id, WaitPidFlag, waitid};
        loop {
            let id = Id::Pid(nix::unistd::Pid::from_raw(self.pid));
            match waitid(id, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(ProbeError::Waitid(e)),
            }
        }
    }

    /// Reaps the (exited) target.
    pub fn reap(&mut self) -> Result<(), ProbeError> {
        self.reaped = true;
        super::child::wait_child(self.pid).map(|_| ())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: kill(2) on our own unreaped child: its pid cannot have been reused.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
            let _ = super::child::wait_child(self.pid);
        }
    }
}

fn write_values(sock: &UnixStream, values: &[i64]) {
    let mut s = sock;
    for v in values {
        let _ = s.write_all(&v.to_ne_bytes());
    }
}

/// Waits for a byte or the end of the socket.
fn wait_on(sock: &UnixStream) {
    let mut b = [0u8; 1];
    let _ = (&*sock).read(&mut b);
}

fn run_script(sock: &UnixStream, script: Script) -> i32 {
    match script {
        Script::WaitForGo => wait_on(sock),
        Script::CallGetppid => {
            // SAFETY: getppid takes no arguments.
            let r = unsafe { libc::syscall(libc::SYS_getppid) };
            let errno = last_errno();
            // SAFETY: fcntl(F_GETFD) only asks whether a descriptor is open.
            let open = r >= 0 && unsafe { libc::fcntl(r as RawFd, libc::F_GETFD) } >= 0;
            write_values(sock, &[r, i64::from(errno), i64::from(open)]);
            wait_on(sock);
        }
        Script::Fifo(n) => {
            let mut blocked = 0;
            for i in 1..=n {
                let Ok(pid) = fork_child(move || {
                    // SAFETY: getppid ignores its argument; the filter sees it in args[0].
                    unsafe { libc::syscall(libc::SYS_getppid, i) };
                    0
                }) else {
                    break;
                };
                let path = format!("/proc/{pid}/syscall");
                if !super::child::wait_in_syscall(&path, libc::SYS_getppid, Duration::from_secs(5))
                {
                    break;
                }
                blocked += 1;
            }
            write_values(sock, &[blocked]);
            wait_on(sock);
        }
    }
    0
}

/// Sends `fd` (or, when negative, an errno as a plain value) over `sock`.
fn send_fd(sock: &UnixStream, fd: RawFd) -> nix::Result<usize> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let payload = fd.to_ne_bytes();
    let iov = [std::io::IoSlice::new(&payload)];
    let fds = [fd];
    let cmsgs: &[ControlMessage] = if fd >= 0 {
        &[ControlMessage::ScmRights(&fds)]
    } else {
        &[]
    };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)
}

/// Receives what [`send_fd`] sent: the fd, or the errno the target got.
fn recv_fd(sock: &UnixStream) -> Result<Result<OwnedFd, i32>, ListenerError> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut payload = [0u8; 4];
    let mut iov = [std::io::IoSliceMut::new(&mut payload)];
    let mut space = nix::cmsg_space!(RawFd);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(ListenerError::Recvmsg)?;
    let mut got = None;
    for c in msg.cmsgs().map_err(ListenerError::Recvmsg)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            got = fds.first().copied();
        }
    }
    if msg.bytes != 4 {
        return Err(ListenerError::TargetExited);
    }
    let value = i32::from_ne_bytes(payload);
    match got {
        // SAFETY: SCM_RIGHTS installed this descriptor in our table just now; nothing else
        // owns it.
        Some(fd) => Ok(Ok(unsafe { OwnedFd::from_raw_fd(fd) })),
        None if value < 0 => Ok(Err(-value)),
        None => Err(ListenerError::NoDescriptor),
    }
}

/// `SECCOMP_IOCTL_NOTIF_RECV` on `fd`: the next notification, or the errno.
pub fn recv(fd: RawFd) -> Result<libc::seccomp_notif, i32> {
    // SAFETY: seccomp_notif is plain data; the kernel wants it zeroed and fills it.
    let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: NOTIF_RECV writes one seccomp_notif into `n`, which outlives the call.
    let r = unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) };
    if r < 0 { Err(last_errno()) } else { Ok(n) }
}

/// `SECCOMP_IOCTL_NOTIF_SEND`: answers notification `id`.
pub fn respond(fd: RawFd, id: u64, val: i64, flags: u32) -> Result<(), i32> {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val,
        error: 0,
        flags,
    };
    // SAFETY: NOTIF_SEND reads one seccomp_notif_resp from `resp`, alive for the call.
    let r = unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    if r < 0 { Err(last_errno()) } else { Ok(()) }
}

/// `SECCOMP_IOCTL_NOTIF_ADDFD`: copies `src` into notification `id`'s target; the new fd's
/// number there.
pub fn addfd(fd: RawFd, id: u64, src: RawFd, flags: u32) -> Result<i32, i32> {
    let mut add = libc::seccomp_notif_addfd {
        id,
        flags,
        srcfd: src as u32,
        newfd: 0,
        newfd_flags: 0,
    };
    // SAFETY: NOTIF_ADDFD reads one seccomp_notif_addfd from `add`, alive for the call.
    let r = unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_ADDFD, &mut add) };
    if r < 0 { Err(last_errno()) } else { Ok(r) }
}

/// A receive running on a thread of its own.
pub struct BlockedRecv {
    pub tid: i32,
    pub thread: libc::pthread_t,
    done: mpsc::Receiver<(Result<libc::seccomp_notif, i32>, Instant)>,
}

impl BlockedRecv {
    /// Starts `NOTIF_RECV` on `fd` in a new thread and waits until it is seen asleep in it.
    pub fn start(fd: RawFd) -> Result<BlockedRecv, ProbeError> {
        let (ids_tx, ids_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            // SAFETY: gettid and pthread_self only return ids of the calling thread.
            let ids = unsafe { (libc::gettid(), libc::pthread_self()) };
            let _ = ids_tx.send(ids);
            let r = recv(fd);
            let _ = done_tx.send((r, Instant::now()));
        });
        let (tid, thread) = ids_rx.recv().map_err(|_| ProbeError::ReceiverDied)?;
        let path = format!("/proc/self/task/{tid}/syscall");
        if !super::child::wait_in_syscall(&path, libc::SYS_ioctl, Duration::from_secs(5)) {
            return Err(ProbeError::NeverBlocked);
        }
        Ok(BlockedRecv { tid, thread, done })
    }

    /// The receive's result and when it came, if it came within `bound`.
    pub fn outcome(&self, bound: Duration) -> Option<(Result<libc::seccomp_notif, i32>, Instant)> {
        self.done.recv_timeout(bound).ok()
    }
}
