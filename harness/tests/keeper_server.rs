//! The keeper server (`wedge-init --serve`): a keeper it forks is the keeper a direct spawn
//! would start (wedge's child, the same descriptors, directory, environment, signal state and
//! command line), a start that fails is an error with nothing left behind, bad frames are
//! refused without ending the server, and the server ends with its engine. Every test runs
//! under a watchdog.

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};
use wedge::engine::pidns::{self, REPORT_FD, Report};
use wedge::engine::spawn::{self, Keeper, Request};
use wedge::engine::spawn_server::serve::{FLAG, SOCKET_FD};
use wedge::engine::spawn_server::wire::{Answer, Order};
use wedge::engine::spawn_server::{ENV_VAR, Spawner};

mod support;

use support::watchdog;

const KEEPER: &str = env!("CARGO_BIN_EXE_wedge-init");

fn cloexec_pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
}

/// What the subject prints about its keeper and itself: everything a direct spawn fixes.
const PORTRAIT: &str = r#"
k=$PPID
tr '\0' ' ' < /proc/$k/cmdline | sed 's/ *$//'; echo
cat /proc/$k/comm
awk '{print "keeper parent", $4}' /proc/$k/stat
basename "$(readlink /proc/$k/exe)"
ls /proc/$k/fd | sort -n | awk '$1 < 10' | tr '\n' ' '; echo
pwd
echo "var=$WEDGE_KEEPER_TEST_VAR home=${HOME:+set}"
grep -E '^(SigBlk|SigIgn)' /proc/self/status
echo "keeper descriptors: $(ls /proc/$k/fd | wc -l)"
"#;

/// Starts a keeper (`program`) running `sh -c PORTRAIT` (no pid namespace: the keeper is the
/// subject's parent) with `start`, and returns what the subject printed.
fn portrait(program: &Path, start: impl FnOnce(&Request<'_>) -> std::io::Result<Keeper>) -> String {
    let (out_read, out_write) = cloexec_pipe();
    let (report_read, report_write) = cloexec_pipe();
    let null = std::fs::File::open("/dev/null").unwrap();
    let setup = pidns::Setup {
        parent: Some(std::process::id() as i32),
        ..Default::default()
    };
    let mut args: Vec<OsString> = pidns::Mode::NoNamespace
        .args()
        .into_iter()
        .chain(setup.args())
        .map(Into::into)
        .collect();
    args.extend(["--".into(), "sh".into(), "-c".into(), PORTRAIT.into()]);
    let req = Request {
        program,
        args,
        env: vec![("WEDGE_KEEPER_TEST_VAR".into(), "seven".into())],
        cwd: Path::new("/usr"),
        fds: vec![
            (null.as_fd(), 0),
            (out_write.as_fd(), 1),
            (out_write.as_fd(), 2),
            (report_write.as_fd(), REPORT_FD),
        ],
    };
    let mut keeper = start(&req).expect("the keeper starts");
    drop(req);
    drop((out_write, report_write));
    let mut line = String::new();
    std::fs::File::from(report_read)
        .read_to_string(&mut line)
        .unwrap();
    assert!(
        matches!(Report::decode(&line), Ok(Report::Started { .. })),
        "{line:?}"
    );
    let mut text = String::new();
    std::fs::File::from(out_read)
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(keeper.wait().unwrap().code(), Some(0), "{text}");
    text
}

/// A symbolic link to the keeper under another name, removed when dropped.
struct Link(std::path::PathBuf);

impl Link {
    fn new(name: &str) -> Link {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(KEEPER, &path).unwrap();
        Link(path)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_served_keeper_is_the_keeper_a_direct_spawn_starts() {
    watchdog(Duration::from_secs(60), || {
        // Under another name, as the static keeper runs: its comm must still be wedge-init.
        let link = Link::new("wedge-init-static");
        let program = link.0.clone();
        let spawner = Spawner::default();
        let served = portrait(&program, |r| spawner.spawn(r));
        assert!(
            spawner.server_pid().is_some(),
            "the keeper came from the server (is {ENV_VAR} set?)"
        );
        let direct = portrait(&program, spawn::spawn);
        // The last line counts every descriptor: a direct spawn also passes on those wedge
        // inherited without close-on-exec (here, the test harness's), which the server closes.
        let head = |t: &str| {
            t.lines()
                .take(t.lines().count() - 1)
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(head(&served), head(&direct));
        assert!(served.ends_with("keeper descriptors: 3\n"), "{served}");
        let me = std::process::id();
        assert!(
            served.contains(&format!("keeper parent {me}\n")),
            "{served}"
        );
        assert!(
            served.contains(&format!("-{me} --no-pidns --parent {me} -- sh -c")),
            "the keeper's command line: {served}"
        );
        assert!(served.contains("var=seven home=set"), "{served}");
        assert!(served.contains("\n0 1 2 \n"), "{served}");
        assert!(
            served.contains("\nwedge-init\nkeeper parent"),
            "comm: {served}"
        );
        assert!(served.contains("\n/usr\n"), "{served}");
    });
}

#[test]
fn a_start_that_fails_is_an_error_and_the_server_serves_on() {
    watchdog(Duration::from_secs(60), || {
        let spawner = Spawner::default();
        let _ = portrait(Path::new(KEEPER), |r| spawner.spawn(r));
        let server = spawner.server_pid().expect("a server");
        let null = std::fs::File::open("/dev/null").unwrap();
        // The report goes on 3, the number the server's own socket has.
        let (report_read, report_write) = cloexec_pipe();
        let req = Request {
            program: Path::new(KEEPER),
            args: vec!["--".into(), "true".into()],
            env: vec![],
            cwd: Path::new("/nonexistent/wedge-no-such-dir"),
            fds: vec![
                (null.as_fd(), 0),
                (null.as_fd(), 1),
                (null.as_fd(), 2),
                (report_write.as_fd(), REPORT_FD),
            ],
        };
        let err = spawner.spawn(&req).expect_err("no such directory");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        drop(req);
        drop(report_write);
        let mut stray = Vec::new();
        std::fs::File::from(report_read)
            .read_to_end(&mut stray)
            .unwrap();
        assert!(stray.is_empty(), "the answer went to the report: {stray:?}");
        let _ = portrait(Path::new(KEEPER), |r| spawner.spawn(r));
        assert_eq!(spawner.server_pid(), Some(server), "the same server");
        drop(spawner);
        assert!(
            !Path::new(&format!("/proc/{server}")).exists(),
            "the server ended (and was reaped) with its spawner"
        );
    });
}

/// `wedge-init --serve` on a socket of the test's own.
fn bare_server() -> (std::process::Child, OwnedFd) {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let raw = theirs.as_raw_fd();
    let mut cmd = Command::new(KEEPER);
    cmd.args([FLAG, &std::process::id().to_string()])
        .stdin(Stdio::null());
    // SAFETY: only dup2, async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, SOCKET_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(theirs);
    (child, ours)
}

fn answer(sock: &OwnedFd) -> Answer {
    let mut buf = [0u8; 256];
    let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    Answer::decode(&buf[..n]).unwrap()
}

#[test]
fn bad_frames_are_refused_and_the_server_ends_at_end_of_file() {
    watchdog(Duration::from_secs(60), || {
        let (mut child, sock) = bare_server();
        assert!(matches!(answer(&sock), Answer::Hello { pid, .. } if pid == child.id() as i32));
        let refused = Answer::Refused {
            errno: libc::EINVAL,
        };
        send(sock.as_raw_fd(), b"garbage", MsgFlags::empty()).unwrap();
        assert_eq!(answer(&sock), refused);
        let order = Order {
            targets: vec![0, 1],
            cwd: "/".into(),
            args: vec![KEEPER.into(), "--".into(), "true".into()],
            env: vec![],
        };
        // Two targets named, no descriptor sent.
        send(sock.as_raw_fd(), &order.encode(), MsgFlags::empty()).unwrap();
        assert_eq!(answer(&sock), refused);
        let bytes = order.encode();
        send(
            sock.as_raw_fd(),
            &bytes[..bytes.len() - 3],
            MsgFlags::empty(),
        )
        .unwrap();
        assert_eq!(answer(&sock), refused);
        drop(sock);
        assert_eq!(child.wait().unwrap().code(), Some(0));
    });
}
