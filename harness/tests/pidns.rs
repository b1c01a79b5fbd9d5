//! `wedge-init` against real subjects: it ends as its subject ends, survives the group signals
//! meant for the subject, reports a failed exec, and killing its init ends every process the
//! subject left, however it detached itself. Every test runs under a watchdog.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wedge::engine::pidns::{REPORT_FD, Report};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `f` on another thread and fails the test if it takes longer than `limit`.
fn watchdog<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("watchdog: the test did not finish within {limit:?}"))
}

/// Starts `wedge-init -- argv` in a process group of its own with the report pipe on fd 3.
fn keeper(argv: &[&str]) -> (Child, Report) {
    // Close-on-exec: only the dup2'd copy on fd 3 may reach the keeper, or the subject's children
    // would hold the pipe open and the read below would never see its end.
    let (read, write): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wedge-init"));
    cmd.arg("--").args(argv).stdout(Stdio::null());
    let raw = write.as_raw_fd();
    // SAFETY: only dup2 and setpgid, both async-signal-safe, run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, REPORT_FD) < 0 || libc::setpgid(0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(write);
    let mut line = String::new();
    std::fs::File::from(read).read_to_string(&mut line).unwrap();
    (child, Report::decode(&line).unwrap())
}

fn finish(mut child: Child) -> ExitStatus {
    child.wait().unwrap()
}

/// Waits (bounded) until no process has `marker` in its command line.
fn gone(marker: &str, within: Duration) -> bool {
    let end = Instant::now() + within;
    loop {
        let alive = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        });
        if !alive {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn ends_with_the_subjects_exit_code_and_names_its_init() {
    watchdog(Duration::from_secs(20), || {
        let (child, report) = keeper(&["sh", "-c", "exit 7"]);
        let Report::Started { subject, init } = report else {
            panic!("{report:?}")
        };
        assert!(subject > 0);
        assert_eq!(
            init.is_some(),
            is_root(),
            "a pid namespace whenever wedge may make one"
        );
        assert_eq!(finish(child).code(), Some(7));
    });
}

#[test]
fn ends_by_the_subjects_signal() {
    watchdog(Duration::from_secs(20), || {
        let (child, _) = keeper(&["sh", "-c", "kill -TERM $$"]);
        assert_eq!(finish(child).signal(), Some(libc::SIGTERM));
    });
}

#[test]
fn reports_a_failed_exec() {
    watchdog(Duration::from_secs(20), || {
        let (child, report) = keeper(&["/nonexistent/wedge-no-such-program"]);
        assert_eq!(
            report,
            Report::Failed {
                errno: libc::ENOENT
            }
        );
        assert_eq!(finish(child).code(), Some(127));
    });
}

#[test]
fn survives_group_signals_meant_for_the_subject() {
    watchdog(Duration::from_secs(20), || {
        let (child, report) = keeper(&["sh", "-c", "trap 'exit 3' TERM; sleep 600 & wait"]);
        let Report::Started { subject, .. } = report else {
            panic!("{report:?}")
        };
        // The keeper made its own group. The trap is set before the shell forks `sleep`, so once
        // the child exists the shell handles TERM with `exit 3`.
        let group = child.id() as i32;
        let end = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{subject}/task/{subject}/children"))
            .is_ok_and(|c| c.trim().is_empty())
        {
            assert!(Instant::now() < end, "the subject never started its child");
            std::thread::sleep(Duration::from_millis(2));
        }
        // SAFETY: kill with a negative pid signals that process group.
        assert_eq!(unsafe { libc::kill(-group, libc::SIGTERM) }, 0);
        assert_eq!(
            finish(child).code(),
            Some(3),
            "the subject's trap, not the keeper's death"
        );
    });
}

#[test]
fn killing_the_init_ends_what_the_subject_left() {
    if !is_root() {
        eprintln!("skipped: creating a pid namespace needs root");
        return;
    }
    watchdog(Duration::from_secs(20), || {
        let marker = format!("600.{}", std::process::id());
        // A double-forked, setsid daemon the subject does not wait for.
        let script = format!("setsid sh -c 'sleep {marker}' </dev/null >/dev/null 2>&1 & exit 0");
        let (child, report) = keeper(&["sh", "-c", &script]);
        let Report::Started {
            init: Some(init), ..
        } = report
        else {
            panic!("{report:?}")
        };
        assert_eq!(finish(child).code(), Some(0));
        assert!(
            !gone(&marker, Duration::ZERO),
            "the daemon outlives its parent"
        );
        // SAFETY: kill of a pid this test was told about.
        assert_eq!(unsafe { libc::kill(init, libc::SIGKILL) }, 0);
        assert!(
            gone(&marker, Duration::from_secs(10)),
            "the daemon survived its namespace"
        );
    });
}
