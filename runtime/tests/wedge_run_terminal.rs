//! The sandboxed command keeps the terminal's foreground: a program that reads from the tty is
//! not stopped by SIGTTIN (which is what happens when a runner puts it in a process group of
//! its own).

mod support;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use support::*;

/// Starts `wedge-run` as the leader of a new session whose controlling terminal is a fresh
/// pseudo-terminal; returns the subject and the terminal's master side.
fn start_on_terminal(sandbox: &str, script: &str) -> (Subject, OwnedFd) {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = pty.slave;
    let mut command = Command::new(wedge_run());
    command
        .args(["--sandbox", sandbox, "--", "sh", "-c", script])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    (Subject::spawn(command), pty.master)
}

/// Collects everything the terminal shows.
fn screen(master: &OwnedFd) -> Arc<Mutex<String>> {
    let screen = Arc::new(Mutex::new(String::new()));
    let sink = screen.clone();
    let mut reader = std::fs::File::from(master.try_clone().unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        // Ends with EIO once every holder of the slave side has gone.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    screen
}

#[test]
fn a_command_reading_the_terminal_is_not_stopped() {
    for sandbox in ["none", "bwrap"] {
        let script = "echo ready; read line < /dev/tty; echo \"got:$line\"";
        let (mut subject, master) = start_on_terminal(sandbox, script);
        let shown = screen(&master);
        wait_until("the command to start", || {
            shown.lock().unwrap().contains("ready")
        })
        .unwrap();
        let mut input = std::fs::File::from(master.try_clone().unwrap());
        input.write_all(b"hello\n").unwrap();
        wait_until("the command to echo the line it read", || {
            shown.lock().unwrap().contains("got:hello")
        })
        .unwrap_or_else(|e| {
            panic!(
                "{sandbox}: {e}; the command was probably stopped by SIGTTIN\n{}",
                shown.lock().unwrap()
            )
        });
        let status = subject.expect_exit();
        assert_eq!(
            status.code(),
            Some(0),
            "{sandbox}: {}",
            shown.lock().unwrap()
        );
    }
}
