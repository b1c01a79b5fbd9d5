//! `wedge-run` end to end: real seccomp, real bubblewrap, on this machine.

mod support;

use std::process::Command;

use nix::sys::signal::Signal;
use support::*;

const SYS_IOCTL: i64 = 16;
const SYS_FUTEX: i64 = 202;
const SYS_PPOLL: i64 = 271;
const SECCOMP_IOCTL_NOTIF_RECV: u64 = 0xc050_2100;

const SANDBOXES: [&str; 2] = ["none", "bwrap"];

fn wedge_run_cmd(
    sandbox: &str,
    variant: &str,
    policy: Option<&std::path::Path>,
    cmd: &[&str],
) -> Command {
    let mut c = Command::new(wedge_run());
    c.args(["--sandbox", sandbox, "--variant", variant]);
    if let Some(policy) = policy {
        c.arg("--policy").arg(policy);
    }
    c.arg("--").args(cmd);
    c
}

fn run(sandbox: &str, policy: Option<&std::path::Path>, cmd: &[&str]) -> (i32, String, String) {
    Subject::start(wedge_run_cmd(sandbox, "fixed", policy, cmd)).finish()
}

fn policy_file(dir: &TempDir, allow: &[&str], deny: &[&str]) -> std::path::PathBuf {
    let list = |rules: &[&str]| {
        rules
            .iter()
            .map(|r| format!("{r:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    dir.file(
        "policy.toml",
        &format!("allow = [{}]\ndeny = [{}]\n", list(allow), list(deny)),
    )
}

#[test]
fn allowed_and_denied_commands() {
    let dir = TempDir::new("policy");
    let policy = policy_file(&dir, &["echo allowed but listed"], &["echo", "git push"]);
    for sandbox in SANDBOXES {
        let (code, out, err) = run(sandbox, Some(&policy), &["/bin/echo", "hello"]);
        assert_eq!(code, 126, "{sandbox}: a denied command exits 126\n{err}");
        assert!(out.is_empty(), "{sandbox}: denied echo printed {out:?}");
        assert!(
            err.contains("exec denied") && err.contains("rule=\"echo\""),
            "{sandbox}: {err}"
        );

        let (code, out, err) = run(
            sandbox,
            Some(&policy),
            &["echo", "allowed", "but", "listed", "!"],
        );
        assert_eq!(
            (code, out.as_str()),
            (0, "allowed but listed !\n"),
            "{sandbox}: allow overrides deny\n{err}"
        );
        assert!(
            err.contains("exec allowed") && err.contains("rule=\"echo allowed but listed\""),
            "{err}"
        );

        let (code, out, err) = run(sandbox, Some(&policy), &["true"]);
        assert_eq!((code, out.as_str()), (0, ""), "{sandbox}: {err}");
        assert!(
            err.contains("no rule matched"),
            "{sandbox}: every decision is logged: {err}"
        );
    }
}

#[test]
fn a_denied_command_started_from_a_script_is_denied() {
    let dir = TempDir::new("nested");
    let victim = dir.0.join("victim");
    std::fs::create_dir(&victim).unwrap();
    let script = dir.file(
        "script.sh",
        &format!(
            "#!/bin/sh\nrm -rf {}\necho \"rm=$?\"\n[ -d {} ] && echo still-there\nexit 0\n",
            victim.display(),
            victim.display()
        ),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let policy = policy_file(&dir, &[], &["rm -rf"]);
    for sandbox in SANDBOXES {
        let (code, out, err) = run(sandbox, Some(&policy), &[script.to_str().unwrap()]);
        assert_eq!(code, 0, "{sandbox}: {err}");
        assert!(
            out.contains("rm=126") && out.contains("still-there"),
            "{sandbox}: {out}\n{err}"
        );
        assert!(
            err.contains("exec denied") && err.contains("rule=\"rm -rf\""),
            "{sandbox}: {err}"
        );
        assert!(victim.exists());
    }
    // And without the rule the same script really does remove it (under --sandbox none; bwrap's
    // view of the host is read-only), so the denial above is what kept it.
    let (code, out, err) = run("none", None, &[script.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("rm=0") && !out.contains("still-there"),
        "{out}"
    );
}

#[test]
fn execveat_with_empty_path_is_denied() {
    for sandbox in SANDBOXES {
        let (code, out, err) = run(
            sandbox,
            None,
            &[exec_probe(), "execveat-empty-path", "/bin/true"],
        );
        assert_eq!(code, 0, "{sandbox}: {out}\n{err}");
        assert!(
            out.contains("refused") && out.contains("errno 1)"),
            "{sandbox}: EPERM expected: {out}"
        );
        assert!(err.contains("AT_EMPTY_PATH"), "{sandbox}: {err}");
    }
}

#[test]
fn exec_from_a_multithreaded_process_is_denied() {
    for sandbox in SANDBOXES {
        let (code, out, err) = run(sandbox, None, &[exec_probe(), "threaded-exec", "/bin/true"]);
        assert_eq!(code, 0, "{sandbox}: {out}\n{err}");
        assert!(
            out.contains("threaded execve refused: EPERM"),
            "{sandbox}: {out}"
        );
        assert!(err.contains("2 threads"), "{sandbox}: {err}");
    }
}

#[test]
fn i386_int80_execve_kills_the_process() {
    // Without a filter the i386 execve fails with EFAULT (our pointer does not fit in 32 bits);
    // if it does not even get that far, this kernel has no ia32 emulation to test.
    let out = Command::new(exec_probe())
        .args(["int80-execve", "/bin/true"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if !(out.status.success() && text.contains("errno 14")) {
        let reason = format!(
            "this kernel has no ia32 emulation (int 0x80 gave {:?}: {text})",
            out.status
        );
        return cannot_run("ia32-execve", &reason);
    }
    for sandbox in SANDBOXES {
        let (code, out, err) = run(sandbox, None, &[exec_probe(), "int80-execve", "/bin/true"]);
        assert_eq!(
            code,
            128 + libc::SIGSYS,
            "{sandbox}: killed by SIGSYS expected\n{out}\n{err}"
        );
    }
}

#[test]
fn x32_syscall_numbers_kill_the_process() {
    for sandbox in SANDBOXES {
        let (code, out, err) = run(sandbox, None, &[exec_probe(), "x32-getpid"]);
        assert_eq!(code, 128 + libc::SIGSYS, "{sandbox}: {out}\n{err}");
    }
}

#[test]
fn the_listener_never_reaches_the_command() {
    for sandbox in SANDBOXES {
        let (code, out, err) = run(sandbox, None, &["sh", "-c", "ls -l /proc/$$/fd"]);
        assert_eq!(code, 0, "{sandbox}: {err}");
        assert!(out.contains("0 ->"), "{sandbox}: listing expected: {out}");
        assert!(
            !out.contains("seccomp"),
            "{sandbox}: the command holds a seccomp listener:\n{out}"
        );
    }
}

#[test]
fn exit_statuses_are_those_a_shell_reports() {
    let dir = TempDir::new("status");
    let not_executable = dir.file("plain", "#!/bin/sh\n");
    for sandbox in SANDBOXES {
        assert_eq!(
            run(sandbox, None, &["sh", "-c", "exit 7"]).0,
            7,
            "{sandbox}"
        );
        assert_eq!(
            run(sandbox, None, &["sh", "-c", "kill -TERM $$"]).0,
            128 + 15,
            "{sandbox}"
        );
        let (code, _, err) = run(sandbox, None, &["wedge-no-such-command"]);
        assert_eq!(code, 127, "{sandbox}: {err}");
        assert!(err.contains("command not found"), "{err}");
        assert_eq!(
            run(sandbox, None, &[not_executable.to_str().unwrap()]).0,
            126,
            "{sandbox}"
        );
    }
}

#[test]
fn a_bad_policy_is_refused_before_anything_runs() {
    let dir = TempDir::new("badpolicy");
    let policy = dir.file("bad.toml", "deny = [\"git push\"]\nalow = [\"x\"]\n");
    let marker = dir.0.join("ran");
    let (code, _, err) = run("none", Some(&policy), &["touch", marker.to_str().unwrap()]);
    assert_eq!(code, 125, "{err}");
    assert!(
        err.contains(&format!("{}:2:1:", policy.display())),
        "file:line:col expected: {err}"
    );
    assert!(!marker.exists(), "the command ran despite the bad policy");
}

#[test]
fn bad_arguments_exit_125() {
    let mut s = Subject::start({
        let mut c = Command::new(wedge_run());
        c.args(["--sandbox", "docker", "--", "true"]);
        c
    });
    let (code, _, err) = s.finish();
    assert_eq!(code, 125);
    assert!(err.contains("invalid value 'docker'"), "{err}");
}

/// bubblewrap SIGKILLed while the command runs: the runner exits promptly, reporting the kill,
/// and nothing is left behind.
#[test]
fn sandbox_killed_mid_session() {
    let mut subject = Subject::start(wedge_run_cmd(
        "bwrap",
        "fixed",
        None,
        &["sh", "-c", "echo ready; exec sleep 600"],
    ));
    subject.wait_stdout("ready");
    let bwrap = children(subject.pid());
    assert_eq!(
        bwrap.len(),
        1,
        "wedge-run's only child is bubblewrap: {bwrap:?}"
    );
    assert_eq!(comm(bwrap[0]), "bwrap");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(bwrap[0]), Signal::SIGKILL).unwrap();
    let status = subject.expect_exit();
    assert_eq!(status.code(), Some(128 + 9), "{}", subject.stderr.text());
    assert!(subject.kill_and_reap().is_empty());
}

/// Leaves a `sleep` running after the command exits. The script waits, with shell builtins only
/// (no exec of its own), until the background process has finished its exec of sleep, so that
/// exec is answered and the sleep is a live filter user at shutdown; then it waits for a line on
/// stdin before exiting, so the test decides when the command exits.
const LINGER: &str = "sleep 600 & p=$!; until read c < /proc/$p/comm && [ \"$c\" = sleep ]; do :; done; \
                      echo lingering=$p; read go; exit 3";

fn lingering_pid(subject: &Subject) -> i32 {
    subject.wait_stdout("lingering=");
    let out = subject.stdout.text();
    let pid = out
        .split("lingering=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap();
    pid.parse().unwrap()
}

/// Waits until the supervisor thread of `runner` is blocked in `syscall` (and, for ioctl, with
/// `request`), then lets the command exit.
fn let_the_command_exit_once_supervisor_waits(
    subject: &mut Subject,
    syscall: i64,
    request: Option<u64>,
) {
    let runner = subject.pid();
    wait_until("the supervisor to wait for the next notification", || {
        threads(runner).iter().any(|t| {
            t.name == "supervisor"
                && t.in_syscall(syscall)
                && request.is_none_or(|r| t.arg(1) == Some(r))
        })
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", threads(runner)));
    use std::io::Write;
    subject.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
}

/// A background process outlives the command, so a filter user is alive at shutdown. The fixed
/// runner exits; the pre-fix runner is stuck for good with its supervisor in NOTIF_RECV.
#[test]
fn a_lingering_process_does_not_hold_up_the_fixed_runner() {
    let mut subject =
        Subject::start_with_stdin(wedge_run_cmd("none", "fixed", None, &["sh", "-c", LINGER]));
    let lingering = lingering_pid(&subject);
    let_the_command_exit_once_supervisor_waits(&mut subject, SYS_PPOLL, None);
    let status = subject.expect_exit();
    assert_eq!(status.code(), Some(3), "{}", subject.stderr.text());
    assert!(
        alive(lingering),
        "the background process is still running after wedge-run exited"
    );
    assert!(subject.kill_and_reap().is_empty());
}

/// The fixed runner stops its supervisor through the coordinator, with the listener still open
/// under it (closed only once the thread has handed it back), and well within the drain: the
/// supervisor reports that shutdown was requested, not that its listener vanished, and the drain
/// never expires.
#[test]
fn the_fixed_supervisor_stops_on_request_with_its_listener_open() {
    let mut command = wedge_run_cmd("none", "fixed", None, &["sh", "-c", LINGER]);
    command.env("RUST_LOG", "wedge_runtime=debug,wedge_core=debug");
    let mut subject = Subject::start_with_stdin(command);
    let _lingering = lingering_pid(&subject);
    let_the_command_exit_once_supervisor_waits(&mut subject, SYS_PPOLL, None);
    let status = subject.expect_exit();
    // Not `complete()`: the lingering sleep holds the pipe open. wedge-run has exited, so waiting
    // for its line only waits for our reader thread.
    subject.wait_stderr("supervisor finished");
    let stderr = subject.stderr.text();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("supervisor finished exit=ShutdownRequested"),
        "the supervisor must end because shutdown was requested:\n{stderr}"
    );
    assert!(
        !stderr.contains("wedge-run: DRAIN EXPIRED"),
        "the drain must not expire:\n{stderr}"
    );
    assert!(subject.kill_and_reap().is_empty());
}

#[test]
fn a_lingering_process_deadlocks_the_pre_fix_runner() {
    let mut subject = Subject::start_with_stdin(wedge_run_cmd(
        "none",
        "pre-fix",
        None,
        &["sh", "-c", LINGER],
    ));
    let runner = subject.pid();
    let lingering = lingering_pid(&subject);
    let_the_command_exit_once_supervisor_waits(
        &mut subject,
        SYS_IOCTL,
        Some(SECCOMP_IOCTL_NOTIF_RECV),
    );
    // The deadlock, observed: the command has exited and been reaped (wedge-run has no child
    // left), the main thread is parked in join (futex), the supervisor is blocked in
    // ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV), and a filter user is alive, so no
    // notification and no ENOENT can ever arrive to release it.
    let stuck = || {
        let threads = threads(runner);
        let supervisor = threads.iter().any(|t| {
            t.name == "supervisor"
                && t.in_syscall(SYS_IOCTL)
                && t.arg(1) == Some(SECCOMP_IOCTL_NOTIF_RECV)
        });
        let main_in_join = threads
            .iter()
            .any(|t| t.tid == runner && t.in_syscall(SYS_FUTEX));
        supervisor && main_in_join && children(runner).is_empty() && alive(lingering)
    };
    wait_until("the pre-fix runner to be stuck", stuck).unwrap_or_else(|e| {
        panic!(
            "{e}\nthreads: {:?}\nstderr:\n{}",
            threads(runner),
            subject.stderr.text()
        )
    });
    assert!(subject.wait_exit(std::time::Duration::ZERO).is_none());
    assert!(subject.kill_and_reap().is_empty());
}

/// The first SIGINT is forwarded to the command (which dies of it); nothing escalates.
#[test]
fn one_sigint_is_forwarded_to_the_command() {
    for sandbox in SANDBOXES {
        let mut subject = Subject::start(wedge_run_cmd(
            sandbox,
            "fixed",
            None,
            &["sh", "-c", "echo ready; exec sleep 600"],
        ));
        subject.wait_stdout("ready");
        subject.wait_stderr("exec allowed pid"); // the exec of sleep
        wait_until("sleep to run", || {
            subject.stderr.text().matches("exec allowed").count() >= 2
        })
        .unwrap();
        subject.signal(Signal::SIGINT);
        let status = subject.expect_exit();
        assert_eq!(
            status.code(),
            Some(128 + 2),
            "{sandbox}: {}",
            subject.stderr.text()
        );
        assert!(
            !subject.stderr.text().contains("repeated signal"),
            "{sandbox}"
        );
    }
}

/// A command that survives SIGINT: the second SIGINT kills the sandbox and ends the run, and
/// SIGWINCHes in between are forwarded but never counted.
#[test]
fn a_second_sigint_kills_the_sandbox_and_sigwinch_never_counts() {
    let script = "trap 'echo int' INT; trap 'echo winch' WINCH; sleep 600 & echo ready; while :; do wait; done";
    for sandbox in SANDBOXES {
        let mut subject =
            Subject::start(wedge_run_cmd(sandbox, "fixed", None, &["sh", "-c", script]));
        subject.wait_stdout("ready");
        let count =
            |s: &Subject, what: &str| s.stdout.text().lines().filter(|l| *l == what).count();
        for n in 1..=2 {
            subject.signal(Signal::SIGWINCH);
            wait_until("winch", || count(&subject, "winch") == n).unwrap();
        }
        subject.signal(Signal::SIGINT);
        wait_until("int", || count(&subject, "int") == 1).unwrap();
        subject.signal(Signal::SIGWINCH);
        wait_until("winch", || count(&subject, "winch") == 3).unwrap();
        assert!(
            subject.wait_exit(std::time::Duration::ZERO).is_none(),
            "{sandbox}: still running after one SIGINT"
        );
        subject.signal(Signal::SIGINT);
        let status = subject.expect_exit();
        assert_eq!(
            status.code(),
            Some(128 + 9),
            "{sandbox}: {}",
            subject.stderr.text()
        );
        // The exit can be seen before the collector thread has read wedge-run's last line, so
        // wait for the line (bounded) rather than read the pipe once.
        wait_until("the repeated-signal notice", || {
            subject.stderr.text().contains("repeated signal")
        })
        .unwrap_or_else(|e| panic!("{sandbox}: {e}\nstderr:\n{}", subject.stderr.text()));
        assert_eq!(
            count(&subject, "int"),
            1,
            "{sandbox}: the second SIGINT is not forwarded"
        );
    }
}

/// A target that dies after the supervisor has read its request (killed there by the mutation
/// build's instrumentation) is refused as stale: what was read no longer describes a live exec.
#[cfg(feature = "mutations")]
#[test]
fn a_target_that_dies_after_its_request_was_read_is_refused_as_stale() {
    let mut command = wedge_run_cmd(
        "none",
        "fixed",
        None,
        &["sh", "-c", "/bin/true; echo status=$?"],
    );
    command.env("WEDGE_RUN_KILL_AFTER_READ", "/bin/true");
    let (code, out, err) = Subject::start(command).finish();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("status=137"),
        "the target was killed: {out}\n{err}"
    );
    assert!(
        err.contains("the notification is no longer valid"),
        "the stale notification must be refused:\n{err}"
    );
}
