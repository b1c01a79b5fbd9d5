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

/// The state letter of thread `tid` of `pid` (`t`: stopped by its tracer), if it still exists.
fn thread_state(pid: u32, tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// SIGKILLs the processes it names when dropped, unless disarmed: a failed assertion must not
/// leave the subject or the tracer behind.
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A thread that is not the leader execs while the tracer has the leader stopped: the kernel
/// ends the leader and gives the execer its id, and no exit is reported for either. The tracer
/// must see the exec (its log says so), forget what it held of the old threads and let the new
/// program run to its end.
#[test]
fn an_exec_from_a_thread_is_seen_and_the_new_program_runs() {
    let init = Path::new(env!("CARGO_BIN_EXE_wedge-init"));
    let mut subject = Command::new(env!("CARGO_BIN_EXE_wedge-subject"))
        .arg("exec-from-thread")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = subject.id();
    let mut guard = KillOnDrop(vec![pid]);
    // Both threads exist before the tracer comes, so it seizes both at once.
    let end = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count()) < 2 {
        assert!(Instant::now() < end, "the execer thread never started");
        std::thread::yield_now();
    }
    let mut tracer = syscall_holds::spawn(init, 23, &[pid as i32]).unwrap();
    guard.0.push(tracer.id());
    let mut stdout = BufReader::new(tracer.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(
        first.starts_with("chaos syscall: tracing 2 threads"),
        "{first}"
    );
    // Exec once the leader is seen stopped by the tracer: at a system call's edge or in a hold.
    while thread_state(pid, pid) != Some('t') {
        assert!(Instant::now() < end, "the leader was never seen stopped");
        std::thread::yield_now();
    }
    // Read on a thread of its own, so that a subject left stopped fails the test, not hangs it.
    let out = subject.stdout.take().unwrap();
    let (said_tx, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = said_tx.send(line);
    });
    let mut stdin = subject.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"go\n").unwrap();
    let said = said.recv_timeout(Duration::from_secs(30));
    assert_eq!(
        said.as_deref(),
        Ok("hello\n"),
        "the new program said nothing"
    );
    let status = loop {
        if let Some(status) = subject.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < end, "the new program never ended");
        std::thread::yield_now();
    };
    assert!(status.success(), "{status}");
    guard.0.clear();
    tracer.stdout = Some(stdout.into_inner());
    let log = syscall_holds::finish(tracer);
    assert!(
        log.iter()
            .any(|l| l.contains(&format!("of process {pid} exec'd"))),
        "{log:?}"
    );
}
