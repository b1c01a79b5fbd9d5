//! The kernel's seccomp user-notification protocol: receive, respond, check an id is still valid,
//! and wait in `ppoll` on the listener plus an eventfd.
//!
//! libseccomp compiles and loads the filter (see [`super::filter`]), but its notification helpers
//! retry `EINTR` internally and fold every failure into one error code, which hides exactly the
//! `ENOENT`/`EBADF`/`EINTR` distinctions the supervisor's shutdown depends on. So the ioctls are
//! issued here, on libc's definitions of the kernel structures.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::time::TimeSpec;

use super::shutdown::WakeSignal;
use super::supervise::{NotifyListener, Readiness};

/// One notification as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    pub id: u64,
    /// The target's pid, in the supervisor's pid namespace.
    pub pid: u32,
    pub syscall: i32,
    pub arch: u32,
    pub args: [u64; 6],
}

/// How the supervisor answers a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Let the syscall run (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
    Continue,
    /// Fail the syscall with this errno.
    Fail(Errno),
}

/// A seccomp listener descriptor. It does not own the descriptor: who closes it, and when, is
/// exactly what differs between the fixed and the pre-fix session.
#[derive(Debug, Clone, Copy)]
pub struct Listener<'w> {
    fd: RawFd,
    wake: Option<&'w EventWake>,
}

impl<'w> Listener<'w> {
    /// A listener that waits on `fd` and, when given, on the wake eventfd too.
    ///
    /// The caller keeps `fd` open for as long as it uses the listener, except in the pre-fix
    /// session, whose whole point is that it does not.
    pub fn new(fd: RawFd, wake: Option<&'w EventWake>) -> Self {
        Self { fd, wake }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd
    }

    /// Answers notification `id`.
    pub fn respond(&self, id: u64, response: Response) -> Result<(), Errno> {
        let (error, flags) = match response {
            Response::Continue => (0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
            Response::Fail(errno) => (-(errno as i32), 0),
        };
        let mut resp = libc::seccomp_notif_resp {
            id,
            val: 0,
            error,
            flags,
        };
        loop {
            // SAFETY: `resp` is a valid seccomp_notif_resp for the duration of the call.
            let rc = unsafe { libc::ioctl(self.fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
            match Errno::result(rc) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// Whether notification `id` is still pending, i.e. its target has not died (and its pid not
    /// been reused) since it was received.
    pub fn id_valid(&self, id: u64) -> bool {
        let mut id = id;
        loop {
            // SAFETY: `id` is a valid u64 for the duration of the call.
            let rc = unsafe { libc::ioctl(self.fd, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) };
            match Errno::result(rc) {
                Ok(_) => return true,
                Err(Errno::EINTR) => continue,
                Err(_) => return false,
            }
        }
    }
}

impl NotifyListener for Listener<'_> {
    type Notification = Notification;

    fn wait(&self, block: bool) -> Result<Readiness, Errno> {
        // SAFETY: see `Listener::new`; a descriptor closed under us shows up as POLLNVAL.
        let listener = unsafe { BorrowedFd::borrow_raw(self.fd) };
        // On the stack: this runs once per notification, an allocation each time is waste.
        let watch = PollFd::new(listener, PollFlags::POLLIN);
        let mut both = [watch.clone(), watch];
        let fds = match self.wake {
            Some(wake) => {
                both[1] = PollFd::new(wake.fd.as_fd(), PollFlags::POLLIN);
                &mut both[..]
            }
            None => &mut both[..1],
        };
        let timeout = if block {
            None
        } else {
            Some(TimeSpec::new(0, 0))
        };
        ppoll(fds, timeout, None)?;
        let listener = fds[0].revents().unwrap_or(PollFlags::empty());
        let wake = fds
            .get(1)
            .and_then(PollFd::revents)
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        Ok(Readiness {
            wake,
            notification: listener.contains(PollFlags::POLLIN),
            hangup: listener.intersects(PollFlags::POLLHUP | PollFlags::POLLERR),
            invalid: listener.contains(PollFlags::POLLNVAL),
        })
    }

    fn receive(&self) -> Result<Notification, Errno> {
        // SAFETY: seccomp_notif is plain data; all-zero is the state the kernel requires.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: `req` is a valid, zeroed seccomp_notif for the duration of the call.
        let rc = unsafe { libc::ioctl(self.fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) };
        Errno::result(rc)?;
        Ok(Notification {
            id: req.id,
            pid: req.pid,
            syscall: req.data.nr,
            arch: req.data.arch,
            args: req.data.args,
        })
    }
}

/// The fixed supervisor's wake descriptor: an eventfd that stays readable once written.
#[derive(Debug)]
pub struct EventWake {
    fd: EventFd,
}

impl EventWake {
    pub fn new() -> std::io::Result<Self> {
        let fd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Self { fd })
    }
}

impl WakeSignal for EventWake {
    fn raise(&self) -> std::io::Result<()> {
        match self.fd.write(1) {
            Ok(_) => Ok(()),
            // The counter is saturated, so it is readable already.
            Err(Errno::EAGAIN) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

impl AsRawFd for EventWake {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_fd().as_raw_fd()
    }
}
