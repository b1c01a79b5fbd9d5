//! The seccomp user-notification probes. Each forks a [`Target`] carrying a filter that traps
//! `getppid` (before starting any thread of its own) and watches what the listener does.
//!
//! "Does it stay blocked" is observed for [`OBSERVE`]: a wake-up the kernel delivers comes
//! within milliseconds (kernel-facts: ~5 ms for a signal), so a second without one is a no.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::Observed;
use super::child::{ChildEnd, errno_name, in_child, last_errno, ms_since};
use super::listener::{BlockedRecv, FD_SYNC_WAKE_UP, Script, Target, addfd, recv, respond};

/// How long a probe watches for something that does not happen.
pub const OBSERVE: Duration = Duration::from_millis(1000);

/// A target, or the row that says why there is none.
fn target(script: Script) -> Result<Target, Observed> {
    Target::spawn(0, script).map_err(|e| Observed::new("no", format!("no listener: {e}")))
}

pub fn user_notif() -> Observed {
    let avail =
        std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    let listed = avail.split_whitespace().any(|a| a == "user_notif");
    match Target::spawn(0, Script::WaitForGo) {
        Ok(t) => Observed::yes_no(
            listed,
            format!(
                "actions_avail {} user_notif; NEW_LISTENER gave fd {}",
                if listed { "lists" } else { "does not list" },
                t.fd()
            ),
        ),
        Err(e) => Observed::new("no", format!("actions_avail: {}; {e}", avail.trim())),
    }
}

pub fn close_wakes_recv() -> Observed {
    let mut t = match target(Script::WaitForGo) {
        Ok(t) => t,
        Err(o) => return o,
    };
    let r = match BlockedRecv::start(t.fd()) {
        Ok(r) => r,
        Err(e) => return Observed::new("error", e.to_string()),
    };
    let closed = Instant::now();
    t.close_listener();
    match r.outcome(OBSERVE) {
        None => Observed::new(
            "no",
            format!(
                "NOTIF_RECV still blocked {} ms after close(listener) from another thread",
                OBSERVE.as_millis()
            ),
        ),
        Some((res, at)) => Observed::new(
            "yes",
            format!(
                "NOTIF_RECV returned {} {:.1} ms after close(listener)",
                describe(&res),
                at.duration_since(closed).as_secs_f64() * 1000.0
            ),
        ),
    }
}

extern "C" fn on_signal(_: libc::c_int) {}

pub fn signal_wakes_recv() -> Observed {
    let t = match target(Script::WaitForGo) {
        Ok(t) => t,
        Err(o) => return o,
    };
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    if let Err(e) = unsafe { sigaction(Signal::SIGUSR1, &act) } {
        return Observed::new("error", format!("sigaction: {e}"));
    }
    let r = match BlockedRecv::start(t.fd()) {
        Ok(r) => r,
        Err(e) => return Observed::new("error", e.to_string()),
    };
    let sent = Instant::now();
    // SAFETY: the thread is alive (blocked in the receive), so its pthread_t is valid.
    unsafe { libc::pthread_kill(r.thread, libc::SIGUSR1) };
    match r.outcome(OBSERVE) {
        None => Observed::new(
            "blocks",
            format!(
                "NOTIF_RECV still blocked {} ms after SIGUSR1 (no SA_RESTART)",
                OBSERVE.as_millis()
            ),
        ),
        Some((res, at)) => {
            let value = match &res {
                Err(errno) => errno_name(*errno),
                Ok(_) => "error".to_string(),
            };
            Observed::new(
                value,
                format!(
                    "NOTIF_RECV returned {} {:.1} ms after SIGUSR1 (handler without SA_RESTART)",
                    describe(&res),
                    at.duration_since(sent).as_secs_f64() * 1000.0
                ),
            )
        }
    }
}

pub fn recv_after_users_exit() -> Observed {
    let mut t = match target(Script::WaitForGo) {
        Ok(t) => t,
        Err(o) => return o,
    };
    t.go();
    if let Err(e) = t.wait_exited().and_then(|()| t.reap()) {
        return Observed::new("error", e.to_string());
    }
    // Started on a thread so that a receive that blocks can be given up on.
    let (tx, rx) = std::sync::mpsc::channel();
    let fd = t.fd();
    let started = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(recv(fd));
    });
    match rx.recv_timeout(OBSERVE) {
        Err(_) => Observed::new(
            "blocks",
            format!(
                "NOTIF_RECV still blocked {} ms after the filter's only user exited and was reaped",
                OBSERVE.as_millis()
            ),
        ),
        Ok(res) => {
            let value = match &res {
                Err(errno) => errno_name(*errno),
                Ok(_) => "error".to_string(),
            };
            Observed::new(
                value,
                format!(
                    "NOTIF_RECV returned {} {:.1} ms after it started, the filter's only user reaped",
                    describe(&res),
                    ms_since(started)
                ),
            )
        }
    }
}

/// `poll(listener)`'s revents within `ms`.
fn poll_listener(fd: i32, ms: i32) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd that outlives the call.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n > 0 { p.revents } else { 0 }
}

pub fn pollhup_timing() -> Observed {
    let mut t = match target(Script::WaitForGo) {
        Ok(t) => t,
        Err(o) => return o,
    };
    let before = poll_listener(t.fd(), 0);
    if before & libc::POLLHUP != 0 {
        return Observed::new("error", "POLLHUP while the target was alive");
    }
    t.go();
    if let Err(e) = t.wait_exited() {
        return Observed::new("error", e.to_string());
    }
    let ms = OBSERVE.as_millis() as i32 / 2;
    let at_exit = poll_listener(t.fd(), ms);
    if at_exit & libc::POLLHUP != 0 {
        return Observed::new(
            "at-exit",
            format!("revents {at_exit:#x} once the target exited, before it was reaped"),
        );
    }
    if let Err(e) = t.reap() {
        return Observed::new("error", e.to_string());
    }
    let after_reap = poll_listener(t.fd(), ms);
    if after_reap & libc::POLLHUP != 0 {
        return Observed::new(
            "after-reap",
            format!(
                "no POLLHUP for {ms} ms while the target was a zombie (revents {at_exit:#x}); \
                 revents {after_reap:#x} after it was reaped"
            ),
        );
    }
    Observed::new(
        "never",
        format!("no POLLHUP within {ms} ms of the target's exit, nor {ms} ms after its reap"),
    )
}

pub fn ppoll_eventfd_wake() -> Observed {
    let t = match target(Script::WaitForGo) {
        Ok(t) => t,
        Err(o) => return o,
    };
    // SAFETY: eventfd(2) makes a new descriptor, owned at once.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if efd < 0 {
        return Observed::new("error", format!("eventfd: {}", errno_name(last_errno())));
    }
    // SAFETY: `efd` was just created and nothing else owns it.
    let efd = unsafe { OwnedFd::from_raw_fd(efd) };
    let (lfd, e) = (t.fd(), efd.as_raw_fd());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut fds = [
            libc::pollfd {
                fd: lfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: e,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: gettid returns the calling thread's id.
        let _ = tx.send(Err(unsafe { libc::gettid() }));
        // SAFETY: ppoll(2) on two pollfds that outlive the call, no timeout, no mask.
        let n = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, std::ptr::null(), std::ptr::null()) };
        let _ = tx.send(Ok((n, fds[0].revents, fds[1].revents, Instant::now())));
    });
    let Ok(Err(tid)) = rx.recv() else {
        return Observed::new("error", "the polling thread died");
    };
    let path = format!("/proc/self/task/{tid}/syscall");
    if !super::child::wait_in_syscall(&path, libc::SYS_ppoll, Duration::from_secs(5)) {
        return Observed::new(
            "error",
            "the polling thread was never seen blocked in ppoll",
        );
    }
    let written = Instant::now();
    // SAFETY: write(2) of 8 bytes from a live buffer to our eventfd.
    unsafe { libc::write(e, 1u64.to_ne_bytes().as_ptr().cast(), 8) };
    match rx.recv_timeout(OBSERVE) {
        Ok(Ok((n, lrev, erev, at))) => Observed::yes_no(
            n > 0 && erev & libc::POLLIN != 0,
            format!(
                "ppoll returned {n} {:.1} ms after the eventfd write; revents listener {lrev:#x}, eventfd {erev:#x}",
                at.duration_since(written).as_secs_f64() * 1000.0
            ),
        ),
        _ => Observed::new(
            "no",
            format!(
                "ppoll still blocked {} ms after the eventfd write",
                OBSERVE.as_millis()
            ),
        ),
    }
}

pub fn second_listener() -> Observed {
    let end = in_child(|| {
        if let Err(e) = super::listener::install_filter(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER) {
            return 200 + e.min(50);
        }
        match super::listener::install_filter(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER) {
            Ok(_) => 0,
            Err(errno) => errno,
        }
    });
    match end {
        Ok(ChildEnd::Code(0)) => Observed::new("ok", "a second NEW_LISTENER filter was installed"),
        Ok(ChildEnd::Code(c)) if c >= 200 => Observed::new(
            "error",
            format!("the first NEW_LISTENER failed: {}", errno_name(c - 200)),
        ),
        Ok(ChildEnd::Code(errno)) => Observed::new(
            errno_name(errno),
            format!(
                "the second NEW_LISTENER in one chain failed with {}",
                errno_name(errno)
            ),
        ),
        Ok(ChildEnd::Signal(s)) => Observed::new("error", format!("the child died of signal {s}")),
        Err(e) => Observed::new("error", e.to_string()),
    }
}

pub fn wait_killable_recv() -> Observed {
    match Target::spawn(
        libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
        Script::WaitForGo,
    ) {
        Ok(t) => Observed::new(
            "yes",
            format!("NEW_LISTENER | WAIT_KILLABLE_RECV accepted (fd {})", t.fd()),
        ),
        Err(e) => Observed::new("no", format!("NEW_LISTENER | WAIT_KILLABLE_RECV: {e}")),
    }
}

pub fn notif_sync_wakeup() -> Observed {
    let t = match target(Script::WaitForGo) {
        Ok(t) => t,
        Err(o) => return o,
    };
    // SAFETY: NOTIF_SET_FLAGS takes its flags as the argument itself, not a pointer.
    let r = unsafe { libc::ioctl(t.fd(), libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS, FD_SYNC_WAKE_UP) };
    if r == 0 {
        Observed::new(
            "yes",
            "NOTIF_SET_FLAGS(SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) returned 0",
        )
    } else {
        let errno = errno_name(last_errno());
        Observed::new(
            "no",
            format!("NOTIF_SET_FLAGS(SYNC_WAKE_UP) failed with {errno}"),
        )
    }
}

/// A target that calls `getppid`, and its notification.
fn trapped_call() -> Result<(Target, libc::seccomp_notif), Observed> {
    let t = target(Script::CallGetppid)?;
    match recv(t.fd()) {
        Ok(n) if n.data.nr == libc::SYS_getppid as i32 => Ok((t, n)),
        Ok(n) => Err(Observed::new(
            "error",
            format!("trapped syscall {} instead of getppid", n.data.nr),
        )),
        Err(e) => Err(Observed::new(
            "error",
            format!("NOTIF_RECV: {}", errno_name(e)),
        )),
    }
}

pub fn notif_continue() -> Observed {
    let (mut t, n) = match trapped_call() {
        Ok(x) => x,
        Err(o) => return o,
    };
    if let Err(e) = respond(
        t.fd(),
        n.id,
        0,
        libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
    ) {
        return Observed::new(
            "no",
            format!(
                "NOTIF_SEND with FLAG_CONTINUE failed with {}",
                errno_name(e)
            ),
        );
    }
    match t.read_values::<3>() {
        Ok([r, _, _]) if r == i64::from(std::process::id()) => Observed::new(
            "yes",
            format!("the trapped getppid ran and returned the real parent, {r}"),
        ),
        Ok([r, errno, _]) => Observed::new(
            "no",
            format!(
                "the trapped getppid returned {r} (errno {}) after CONTINUE",
                errno_name(errno as i32)
            ),
        ),
        Err(e) => Observed::new("error", e.to_string()),
    }
}

/// ADDFD of /dev/null into the trapped target with `flags`; the row.
fn addfd_probe(flags: u32, what: &str) -> Observed {
    let (mut t, n) = match trapped_call() {
        Ok(x) => x,
        Err(o) => return o,
    };
    let src = std::fs::File::open("/dev/null");
    let Ok(src) = src else {
        return Observed::new("error", "cannot open /dev/null");
    };
    let fd = match addfd(t.fd(), n.id, src.as_raw_fd(), flags) {
        Ok(fd) => fd,
        Err(e) => return Observed::new("no", format!("{what} failed with {}", errno_name(e))),
    };
    let send = flags & (libc::SECCOMP_ADDFD_FLAG_SEND as u32) != 0;
    if !send && let Err(e) = respond(t.fd(), n.id, i64::from(fd), 0) {
        return Observed::new("error", format!("NOTIF_SEND: {}", errno_name(e)));
    }
    match t.read_values::<3>() {
        Ok([r, _, open]) if r == i64::from(fd) && open == 1 => Observed::new(
            "yes",
            format!(
                "{what} installed fd {fd} in the target, open there{}",
                if send {
                    ", and answered getppid with it"
                } else {
                    ""
                }
            ),
        ),
        Ok([r, _, open]) => Observed::new(
            "no",
            format!("{what} returned fd {fd}, but the target saw getppid = {r}, open = {open}"),
        ),
        Err(e) => Observed::new("error", e.to_string()),
    }
}

pub fn notif_addfd() -> Observed {
    addfd_probe(0, "NOTIF_ADDFD")
}

pub fn addfd_send() -> Observed {
    addfd_probe(
        libc::SECCOMP_ADDFD_FLAG_SEND as u32,
        "NOTIF_ADDFD with ADDFD_FLAG_SEND",
    )
}

pub fn notif_fifo() -> Observed {
    const N: u64 = 3;
    let mut t = match target(Script::Fifo(N)) {
        Ok(t) => t,
        Err(o) => return o,
    };
    match t.read_values::<1>() {
        Ok([n]) if n == N as i64 => {}
        Ok([n]) => {
            return Observed::new(
                "error",
                format!("only {n} of {N} callers were seen blocked"),
            );
        }
        Err(e) => return Observed::new("error", e.to_string()),
    }
    let mut order = Vec::new();
    for _ in 0..N {
        match recv(t.fd()) {
            Ok(n) => {
                order.push(n.data.args[0]);
                let _ = respond(t.fd(), n.id, 0, 0);
            }
            Err(e) => return Observed::new("error", format!("NOTIF_RECV: {}", errno_name(e))),
        }
    }
    let fifo: Vec<u64> = (1..=N).collect();
    Observed::yes_no(
        order == fifo,
        format!("callers trapped in order 1, 2, 3 were received as {order:?}"),
    )
}

/// A receive's result in words.
fn describe(r: &Result<libc::seccomp_notif, i32>) -> String {
    match r {
        Ok(n) => format!("a notification (syscall {})", n.data.nr),
        Err(e) => errno_name(*e),
    }
}
