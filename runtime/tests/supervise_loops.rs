//! The supervisor's receive loops (`wedge_runtime::supervisor::{supervise, supervise_pre_fix}`, from
//! wedge-core) and the shutdown coordinator on real descriptors: a pipe stands in for the seccomp
//! listener, the wake is wedge-run's own eventfd ([`EventWake`]), and the wait is a real `ppoll`.
//! (The loom models check the same loops on a model of the kernel; these check them on the kernel.)

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};
use wedge_runtime::supervisor::notify::EventWake;
use wedge_runtime::supervisor::shutdown::{DrainOutcome, ShutdownCoordinator, SupervisorExit};
use wedge_runtime::supervisor::supervise::{DRAIN_LIMIT, NotifyListener, Readiness};
use wedge_runtime::supervisor::{supervise, supervise_pre_fix};
use wedge_runtime::sync::Arc;

/// A stand-in listener on a real pipe: readable (a "notification") when a byte is written,
/// hung up when the write end closes. Its wait is a real ppoll on [pipe, wake eventfd].
struct PipeListener<'w> {
    read: OwnedFd,
    wake: &'w EventWake,
}

impl NotifyListener for PipeListener<'_> {
    type Notification = u8;

    fn wait(&self, block: bool) -> Result<Readiness, Errno> {
        // SAFETY: the eventfd outlives this call.
        let wake = unsafe { BorrowedFd::borrow_raw(self.wake.as_raw_fd()) };
        let mut fds = [
            PollFd::new(self.read.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake, PollFlags::POLLIN),
        ];
        let timeout = if block {
            None
        } else {
            Some(nix::sys::time::TimeSpec::new(0, 0))
        };
        ppoll(&mut fds, timeout, None)?;
        let l = fds[0].revents().unwrap();
        Ok(Readiness {
            wake: fds[1].revents().unwrap().contains(PollFlags::POLLIN),
            notification: l.contains(PollFlags::POLLIN),
            hangup: l.contains(PollFlags::POLLHUP) && !l.contains(PollFlags::POLLIN),
            invalid: l.contains(PollFlags::POLLNVAL),
        })
    }

    fn receive(&self) -> Result<u8, Errno> {
        let mut b = [0u8; 1];
        match nix::unistd::read(&self.read, &mut b)? {
            0 => Err(Errno::ENOENT),
            _ => Ok(b[0]),
        }
    }
}

fn gettid() -> i32 {
    // SAFETY: plain syscall.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Waits (deadline 10 s) until thread `tid` of this process is blocked in ppoll (271).
fn wait_until_in_ppoll(tid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let syscall =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).unwrap_or_default();
        if syscall.split_whitespace().next() == Some("271") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "thread {tid} never reached ppoll: {syscall}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn setup() -> (OwnedFd, OwnedFd, Arc<ShutdownCoordinator<EventWake>>) {
    let (read, write) = nix::unistd::pipe().unwrap();
    (
        read,
        write,
        Arc::new(ShutdownCoordinator::new(EventWake::new().unwrap())),
    )
}

#[test]
fn begin_is_idempotent() {
    let (_r, _w, c) = setup();
    assert!(c.begin());
    assert!(!c.begin());
    assert!(!c.begin());
    assert!(c.is_begun());
    assert_eq!(c.raise_count(), 1);
}

#[test]
fn concurrent_begins_raise_the_wake_exactly_once() {
    for _ in 0..50 {
        let (_r, _w, c) = setup();
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let winners: usize = (0..8)
            .map(|_| {
                let (c, barrier) = (c.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    c.begin()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap() as usize)
            .sum();
        assert_eq!(winners, 1);
        assert_eq!(c.raise_count(), 1);
    }
}

#[test]
fn a_wake_before_the_wait_is_not_lost() {
    let (read, _write, c) = setup();
    // begin lands first; the supervisor's first wait must still return.
    c.begin();
    let listener = PipeListener {
        read,
        wake: c.wake_signal(),
    };
    assert_eq!(
        supervise(&listener, &c, |_| {}),
        SupervisorExit::ShutdownRequested
    );
}

#[test]
fn a_wake_reaches_a_supervisor_blocked_in_ppoll_even_when_the_flag_check_is_missed() {
    // Model the race the eventfd exists for: the supervisor checked the flag (false) and is
    // now parked in ppoll; only the eventfd can reach it.
    let (read, _write, c) = setup();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let c2 = c.clone();
    let handle = std::thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        let listener = PipeListener {
            read,
            wake: c2.wake_signal(),
        };
        let exit = supervise(&listener, &c2, |_| {});
        c2.finish(exit);
        exit
    });
    wait_until_in_ppoll(tid_rx.recv().unwrap());
    assert!(c.begin());
    assert_eq!(
        c.wait_finished(Some(Duration::from_secs(10))),
        DrainOutcome::Finished(SupervisorExit::ShutdownRequested)
    );
    assert_eq!(handle.join().unwrap(), SupervisorExit::ShutdownRequested);
}

#[test]
fn notifications_are_handled_and_pending_ones_drained_on_shutdown() {
    let (read, write, c) = setup();
    nix::unistd::write(&write, &[1, 2, 3]).unwrap();
    c.begin();
    let listener = PipeListener {
        read,
        wake: c.wake_signal(),
    };
    let mut seen = Vec::new();
    assert_eq!(
        supervise(&listener, &c, |n| seen.push(n)),
        SupervisorExit::ShutdownRequested
    );
    assert_eq!(
        seen,
        [1, 2, 3],
        "pending notifications are answered before returning"
    );
}

#[test]
fn the_drain_is_bounded() {
    let (read, write, c) = setup();
    nix::unistd::write(&write, &[7u8; DRAIN_LIMIT + 10]).unwrap();
    c.begin();
    let listener = PipeListener {
        read,
        wake: c.wake_signal(),
    };
    let mut handled = 0;
    supervise(&listener, &c, |_| handled += 1);
    assert_eq!(handled, DRAIN_LIMIT);
}

#[test]
fn hangup_ends_supervision() {
    let (read, write, c) = setup();
    nix::unistd::write(&write, &[9]).unwrap();
    drop(write);
    let listener = PipeListener {
        read,
        wake: c.wake_signal(),
    };
    let mut seen = Vec::new();
    assert_eq!(
        supervise(&listener, &c, |n| seen.push(n)),
        SupervisorExit::FilterUsersGone
    );
    assert_eq!(
        seen,
        [9],
        "a notification queued before the hang-up is still answered"
    );
    assert_eq!(c.raise_count(), 0);
}

#[test]
fn drain_wait_expires_when_the_supervisor_never_finishes() {
    let (_r, _w, c) = setup();
    c.begin();
    assert_eq!(
        c.wait_finished(Some(Duration::from_millis(20))),
        DrainOutcome::Expired
    );
    c.finish(SupervisorExit::ShutdownRequested);
    assert_eq!(
        c.wait_finished(Some(Duration::ZERO)),
        DrainOutcome::Finished(SupervisorExit::ShutdownRequested)
    );
}

#[test]
fn pre_fix_loop_leaves_only_on_ebadf() {
    // The pre-fix loop retries ENOENT (our pipe's EOF) forever; only EBADF ends it. A
    // closed descriptor number gives EBADF.
    struct Scripted(std::cell::RefCell<Vec<Result<u8, Errno>>>);
    impl NotifyListener for Scripted {
        type Notification = u8;
        fn wait(&self, _: bool) -> Result<Readiness, Errno> {
            unreachable!("the pre-fix loop never waits")
        }
        fn receive(&self) -> Result<u8, Errno> {
            self.0.borrow_mut().remove(0)
        }
    }
    let script = Scripted(std::cell::RefCell::new(vec![
        Ok(1),
        Err(Errno::ENOENT),
        Err(Errno::EINTR),
        Ok(2),
        Err(Errno::ENOENT),
        Err(Errno::EBADF),
    ]));
    let mut seen = Vec::new();
    assert_eq!(
        supervise_pre_fix(&script, |n| seen.push(n)),
        SupervisorExit::ListenerClosed
    );
    assert_eq!(seen, [1, 2]);
}
