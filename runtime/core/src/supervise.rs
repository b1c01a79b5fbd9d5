//! The supervisor's receive loops: the fixed one (wait in `ppoll` on the listener and the wake
//! descriptor) and the pre-fix one (block directly in `SECCOMP_IOCTL_NOTIF_RECV`).
//!
//! Both are written against [`NotifyListener`], so the same loops run on the kernel's seccomp
//! listener (wedge-run's `supervisor::notify::Listener`, which implements the trait) and, in the
//! loom models, on a faithful model of it (a receive that only a notification or a signal wakes,
//! a close that wakes nobody). The traits live here, with the loops generic over them, so the
//! ioctl layer depends on the loops and never the other way round.

use nix::errno::Errno;

use crate::mutation::{Mutation, active};
use crate::shutdown::{ShutdownCoordinator, SupervisorExit, WakeSignal};

/// What a wait on `[listener, wake]` reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The wake descriptor is readable: shutdown has begun.
    pub wake: bool,
    /// A notification is pending (`POLLIN` on the listener).
    pub notification: bool,
    /// No task uses the filter any more (`POLLHUP`/`POLLERR` on the listener).
    pub hangup: bool,
    /// The listener descriptor is not open (`POLLNVAL`).
    pub invalid: bool,
}

/// The kernel side of a seccomp user-notification listener, as the supervisor sees it.
pub trait NotifyListener {
    type Notification;

    /// Waits until the listener or the wake descriptor is ready (`ppoll`). `Err(EINTR)` when a
    /// signal interrupted the wait. With `block == false` it only looks (zero timeout).
    fn wait(&self, block: bool) -> Result<Readiness, Errno>;

    /// Receives one notification (`SECCOMP_IOCTL_NOTIF_RECV`). Blocks while none is pending.
    fn receive(&self) -> Result<Self::Notification, Errno>;
}

/// How many notifications the fixed supervisor still answers after shutdown began, at most, so a
/// target spinning on exec cannot keep the supervisor alive.
pub const DRAIN_LIMIT: usize = 64;

/// The fixed receive loop. Returns when shutdown begins (after answering what is already
/// pending, up to [`DRAIN_LIMIT`]), when no task uses the filter any more, or when the listener
/// is gone. Never blocks in `receive` without first seeing the listener readable.
pub fn supervise<L, W, H>(
    listener: &L,
    coordinator: &ShutdownCoordinator<W>,
    mut handle: H,
) -> SupervisorExit
where
    L: NotifyListener,
    W: WakeSignal,
    H: FnMut(L::Notification),
{
    let exit = loop {
        if coordinator.is_begun() {
            break drain(listener, &mut handle);
        }
        let ready = match listener.wait(true) {
            Ok(ready) => ready,
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(Errno::EBADF) => break SupervisorExit::ListenerClosed,
            Err(err) => {
                tracing::error!(%err, "supervisor: waiting on the listener failed");
                break SupervisorExit::Failed;
            }
        };
        if ready.invalid {
            break SupervisorExit::ListenerClosed;
        }
        if ready.notification {
            match receive_one(listener, &mut handle) {
                Received::Handled | Received::Nothing => {}
                Received::ListenerClosed => break SupervisorExit::ListenerClosed,
                Received::Failed => break SupervisorExit::Failed,
            }
            // Look again before acting on a wake or hang-up reported together with it: more
            // notifications may be queued behind this one.
            continue;
        }
        if ready.wake {
            break drain(listener, &mut handle);
        }
        if ready.hangup {
            break SupervisorExit::FilterUsersGone;
        }
    };
    tracing::debug!(?exit, "supervisor returned");
    exit
}

/// After shutdown began: answer the notifications already queued, without blocking, then stop.
fn drain<L, H>(listener: &L, handle: &mut H) -> SupervisorExit
where
    L: NotifyListener,
    H: FnMut(L::Notification),
{
    let limit = if active(Mutation::BoundedDrain) {
        usize::MAX
    } else {
        DRAIN_LIMIT
    };
    for _ in 0..limit {
        match listener.wait(false) {
            Ok(ready) if ready.notification => match receive_one(listener, handle) {
                Received::Handled | Received::Nothing => {}
                Received::ListenerClosed | Received::Failed => break,
            },
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
            _ => break,
        }
    }
    SupervisorExit::ShutdownRequested
}

enum Received {
    Handled,
    Nothing,
    ListenerClosed,
    Failed,
}

fn receive_one<L, H>(listener: &L, handle: &mut H) -> Received
where
    L: NotifyListener,
    H: FnMut(L::Notification),
{
    match listener.receive() {
        Ok(notification) => {
            handle(notification);
            Received::Handled
        }
        // ENOENT: the target died (or, since 6.11, no filter user is left) between the wakeup
        // and the receive. EINTR/EAGAIN: try again on the next wait.
        Err(Errno::ENOENT) | Err(Errno::EINTR) | Err(Errno::EAGAIN) => Received::Nothing,
        Err(Errno::EBADF) => Received::ListenerClosed,
        Err(err) => {
            tracing::error!(%err, "supervisor: receiving a notification failed");
            Received::Failed
        }
    }
}

/// The pre-fix receive loop, kept to be caught: it blocks directly in `receive`, treats `ENOENT`
/// as "try again" and leaves only on `EBADF`, expecting a `close(listener)` from another thread
/// to wake it. No close ever does, so with a filter user still alive (or, before Linux 6.11,
/// with none left) it never returns.
pub fn supervise_pre_fix<L, H>(listener: &L, mut handle: H) -> SupervisorExit
where
    L: NotifyListener,
    H: FnMut(L::Notification),
{
    loop {
        match listener.receive() {
            Ok(notification) => handle(notification),
            Err(Errno::ENOENT) | Err(Errno::EINTR) => continue,
            Err(Errno::EBADF) => return SupervisorExit::ListenerClosed,
            Err(err) => {
                tracing::error!(%err, "pre-fix supervisor: receive failed");
                return SupervisorExit::Failed;
            }
        }
    }
}
