//! The tracer of chaos mode `syscall` (`wedge-init --hold-syscalls`): it traces what it is given,
//! and however it ends, every thread it held goes on untraced.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wedge::engine::syscall_holds;

/// The `TracerPid` of process `pid` (0: not traced).
fn tracer_of(pid: u32) -> i32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("TracerPid:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Reads `n` lines of `out`, or fails after `limit`.
fn lines(out: &mut BufReader<File>, n: usize, limit: Duration) {
    let end = Instant::now() + limit;
    let mut line = String::new();
    for _ in 0..n {
        assert!(Instant::now() < end, "the subject stopped making progress");
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the subject ended");
    }
}

/// A shell that writes forever (every `echo` a `write`, one in 32 of them held while traced),
/// and the read end of its output: a pipe of one page, so that what the test reads was written
/// moments before, not buffered from before the tracer came.
fn subject() -> (std::process::Child, BufReader<File>) {
    let (read, write) = nix::unistd::pipe().unwrap();
    nix::fcntl::fcntl(&read, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
    let child = Command::new("sh")
        .args(["-c", "while :; do echo tick; done"])
        .stdout(Stdio::from(write))
        .spawn()
        .unwrap();
    (child, BufReader::new(File::from(read)))
}

#[test]
fn a_tracer_killed_mid_hold_lets_its_subject_go_on() {
    let init = Path::new(env!("CARGO_BIN_EXE_wedge-init"));
    let (mut subject, mut out) = subject();
    let mut tracer = syscall_holds::spawn(init, 21, &[subject.id() as i32]).unwrap();
    let mut first = String::new();
    BufReader::new(tracer.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.starts_with("chaos syscall: tracing 1 threads"),
        "{first}"
    );
    assert_eq!(tracer_of(subject.id()), tracer.id() as i32);
    // Traced, it still runs (slower: two stops a call, and now and then a hold).
    lines(&mut out, 200, Duration::from_secs(30));
    tracer.kill().unwrap();
    tracer.wait().unwrap();
    // The kernel detaches the tracees of a tracer that died, and resumes any it held.
    let end = Instant::now() + Duration::from_secs(10);
    while tracer_of(subject.id()) != 0 {
        assert!(Instant::now() < end, "still traced by a dead tracer");
        std::thread::yield_now();
    }
    lines(&mut out, 10_000, Duration::from_secs(30));
    subject.kill().unwrap();
    subject.wait().unwrap();
}

#[test]
fn a_tracer_told_to_stop_lists_its_holds_and_lets_go() {
    let init = Path::new(env!("CARGO_BIN_EXE_wedge-init"));
    let (mut subject, mut out) = subject();
    let mut tracer = syscall_holds::spawn(init, 22, &[subject.id() as i32]).unwrap();
    let mut stdout = BufReader::new(tracer.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    lines(&mut out, 2000, Duration::from_secs(30));
    tracer.stdout = Some(stdout.into_inner());
    let log = syscall_holds::finish(tracer);
    assert_eq!(tracer_of(subject.id()), 0);
    // 2000 lines (of which at most a page, 819, written before the tracer came) at one in 32: some held, each at `write` (the shell makes no other call here
    // but the ones around its start, which came before the tracer).
    let holds: Vec<&String> = log.iter().filter(|l| l.contains(" held ")).collect();
    assert!(!holds.is_empty(), "{log:?}");
    assert!(holds.iter().any(|l| l.contains(" at write ")), "{log:?}");
    lines(&mut out, 10_000, Duration::from_secs(30));
    subject.kill().unwrap();
    subject.wait().unwrap();
}
