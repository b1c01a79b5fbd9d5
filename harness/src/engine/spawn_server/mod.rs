//! Keepers forked by a resident server instead of exec'd one by one.
//!
//! The guarantee: a keeper started through the server is in every way wedge can observe the
//! keeper [`spawn::spawn`] would start for the same [`Request`]: wedge's child (it waits for
//! it, signals it, and is the parent its death signal watches), the same descriptors on the
//! same numbers and nothing else open, the same working directory and environment, an empty
//! signal mask, `comm` `wedge-init` and, with `CAP_SYS_RESOURCE`, the same command line. When the
//! server cannot be used the request is spawned directly, so nothing but the time differs.
//!
//! Why: every process a trial starts is started through a keeper, and an exec'd keeper pays
//! for its exec and its C library's start-up each time (about 0.8 ms a keeper on the 2-core
//! machine of `reports/bench.md`, where each trapped `CPUID` of glibc's cache probing costs
//! 7 µs; a fork of a small process, 0.13 ms). So wedge starts one `wedge-init --serve`
//! ([`serve`]) per engine, the first time it needs a keeper, and asks it for each keeper over
//! a `SOCK_SEQPACKET` socket ([`wire`]), the descriptors passed as `SCM_RIGHTS`.
//!
//! What is not the same, and why it does not matter:
//! - the keeper's environment is wedge's *at the server's start* plus the request's variables
//!   (wedge sets its own environment only before its engine starts, in a guest);
//! - glibc's cached thread id in the keeper is the server's (`fork_as_sibling` says what reads
//!   it; the keeper uses no such mutex, and its own forks are glibc's, which set it right);
//! - keepers are started one at a time (a fork and a few calls each, not an exec).
//!
//! The server is wedge's child, started from a thread of its own that lives as long as the
//! engine: a keeper's death signal is armed against the thread that started the server (its
//! parent, by `CLONE_PARENT`), which must not end before the keeper does. The server dies with
//! that thread and exits when wedge closes its socket. `WEDGE_KEEPER_SERVER=off` turns it off.

pub mod serve;
pub mod wire;

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, recv, sendmsg, socketpair,
};
use wedge_core::sync::Mutex;

use crate::engine::keeper::FINGERPRINT;
use crate::engine::reaper;
use crate::engine::spawn::{self, Keeper, Request};
use wire::{Answer, MAX_FDS, MAX_MESSAGE, Order};

/// The variable that turns the server off (`off`); unset or anything else leaves it on.
pub const ENV_VAR: &str = "WEDGE_KEEPER_SERVER";

/// How long the server may take to say hello, or a keeper to say it is ready: a net for a
/// server that is stuck, far above what either takes on a loaded machine (milliseconds).
const ANSWER_BOUND: Duration = Duration::from_secs(30);

/// Starts keepers: through the server when it is up, else directly.
#[derive(Default)]
pub struct Spawner {
    server: OnceLock<Option<Server>>,
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pid = self.server.get().and_then(|s| s.as_ref()).map(|s| s.pid);
        f.debug_struct("Spawner").field("server", &pid).finish()
    }
}

impl Spawner {
    /// Starts `req`'s keeper, recorded as owned by its trial ([`reaper::owned`]); its pid is
    /// known once this returns, and its start has succeeded (descriptors placed, directory
    /// entered), as with [`spawn::spawn`].
    pub fn spawn(&self, req: &Request<'_>) -> io::Result<Keeper> {
        // Started outside the reaper's lock: the server's own start takes it too, from another
        // thread, and a waiting reaper would stop that second reader while this one waits.
        let server = self.server(req.program);
        reaper::owned(
            || {
                if let Some(server) = server {
                    match server.spawn(req) {
                        Ok(keeper) => return Ok(keeper),
                        Err(Refusal::Direct) => {}
                        Err(Refusal::Failed(e)) => return Err(e),
                    }
                }
                spawn::spawn(req)
            },
            Keeper::id,
        )
    }

    /// The running server's pid, if one has started and is still in use.
    pub fn server_pid(&self) -> Option<i32> {
        let server = self.server.get()?.as_ref()?;
        server.talk.lock().as_ref().map(|_| server.pid)
    }

    /// The server for `program`, started on first use; `None` if it is off, did not start, or
    /// serves another program.
    fn server(&self, program: &Path) -> Option<&Server> {
        let server = self.server.get_or_init(|| {
            if std::env::var_os(ENV_VAR).is_some_and(|v| v == "off") {
                return None;
            }
            Server::start(program)
                .inspect_err(|e| tracing::debug!("no keeper server ({}): {e}", program.display()))
                .ok()
        });
        server.as_ref().filter(|s| s.program == program)
    }
}

/// Why a request did not get a keeper from the server.
enum Refusal {
    /// No keeper was forked: start it directly.
    Direct,
    /// The start failed (as a direct spawn's would), or the server broke after taking the order.
    Failed(io::Error),
}

/// A running `wedge-init --serve`.
struct Server {
    program: PathBuf,
    pid: i32,
    /// The socket, until the server is found broken (then every request goes direct).
    talk: Mutex<Option<OwnedFd>>,
    /// Dropped to let the server's thread wait for it and end.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(program: &Path) -> io::Result<Server> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let (started_tx, started_rx) = mpsc::channel();
        let (stop, stopped) = mpsc::channel::<()>();
        let path = program.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("keeper-server".into())
            .spawn(move || parent_thread(&path, theirs, &started_tx, &stopped))?;
        let pid = started_rx
            .recv()
            .map_err(|_| io::Error::other("the keeper server's thread ended"))?;
        let mut server = Server {
            program: program.to_path_buf(),
            pid: pid?,
            talk: Mutex::new(Some(ours)),
            stop: Some(stop),
            thread: Some(thread),
        };
        server.check_hello()?;
        tracing::debug!("keeper server {} ({})", server.pid, program.display());
        Ok(server)
    }

    /// Its hello: the pid it was started as, and the fingerprint of wedge's own sources.
    fn check_hello(&mut self) -> io::Result<()> {
        let talk = self.talk.lock();
        let sock = talk.as_ref().expect("a new server has its socket");
        match await_answer(sock)? {
            Answer::Hello { pid, fingerprint } if pid == self.pid && fingerprint == FINGERPRINT => {
                Ok(())
            }
            other => Err(io::Error::other(format!("not a keeper server: {other:?}"))),
        }
    }

    fn spawn(&self, req: &Request<'_>) -> Result<Keeper, Refusal> {
        let Some(order) = order_of(req) else {
            return Err(Refusal::Direct);
        };
        let bytes = order.encode();
        if bytes.len() > MAX_MESSAGE || req.fds.len() > MAX_FDS {
            return Err(Refusal::Direct);
        }
        let mut talk = self.talk.lock();
        let Some(sock) = talk.as_ref() else {
            return Err(Refusal::Direct);
        };
        let fds: Vec<i32> = req.fds.iter().map(|(fd, _)| fd.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        let iov = [IoSlice::new(&bytes)];
        if let Err(e) = sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            tracing::warn!("keeper server: {e}; starting keepers directly from now on");
            *talk = None;
            return Err(Refusal::Direct);
        }
        let answer = await_answer(sock);
        settle(answer, &mut talk)
    }
}

/// What an answer to an order means for the request, and for the server (`talk` is emptied
/// when it can no longer be trusted).
fn settle(answer: io::Result<Answer>, talk: &mut Option<OwnedFd>) -> Result<Keeper, Refusal> {
    match answer {
        Ok(Answer::Ready { pid, errno: 0 }) => Ok(Keeper::adopted(pid)),
        Ok(Answer::Ready { pid, errno }) => {
            // It exits 127 at once; it is wedge's child, and nobody else will reap it.
            let _ = Keeper::adopted(pid).wait();
            Err(Refusal::Failed(io::Error::from_raw_os_error(errno)))
        }
        Ok(Answer::Refused { errno }) => {
            let e = io::Error::from_raw_os_error(errno);
            tracing::warn!("keeper server refused: {e}; starting keepers directly from now on");
            *talk = None;
            Err(Refusal::Direct)
        }
        Ok(other) => {
            *talk = None;
            Err(Refusal::Failed(io::Error::other(format!(
                "keeper server answered {other:?}"
            ))))
        }
        Err(e) => {
            *talk = None;
            Err(Refusal::Failed(io::Error::new(
                e.kind(),
                format!("keeper server: {e}"),
            )))
        }
    }
}

/// The order for `req`, if the server can take it: its command line must be UTF-8, which the
/// keeper's own parsing needs (a direct spawn then fails exactly as before), and it must name
/// descriptors 0, 1 and 2 (a direct spawn passes on wedge's own where it does not; the
/// server's are `/dev/null`).
fn order_of(req: &Request<'_>) -> Option<Order> {
    if !(0..3).all(|n| req.fds.iter().any(|&(_, to)| to == n)) {
        return None;
    }
    let mut args = vec![req.program.as_os_str().to_os_string()];
    args.extend(req.args.iter().cloned());
    if args.iter().any(|a| a.to_str().is_none()) {
        return None;
    }
    Some(Order {
        targets: req.fds.iter().map(|&(_, to)| to).collect(),
        cwd: req.cwd.to_path_buf(),
        args,
        env: req.env.clone(),
    })
}

/// The next answer on `sock`, waiting at most [`ANSWER_BOUND`].
fn await_answer(sock: &OwnedFd) -> io::Result<Answer> {
    let end = Instant::now() + ANSWER_BOUND;
    let mut buf = [0u8; 256];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer"));
        }
        let mut fds = [nix::poll::PollFd::new(
            sock.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = nix::poll::PollTimeout::try_from(left).unwrap_or(nix::poll::PollTimeout::MAX);
        match nix::poll::poll(&mut fds, ms) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        match recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "it ended")),
            Ok(n) => return Answer::decode(&buf[..n]).map_err(io::Error::other),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The server's parent: starts it, reports its pid (or why not), and once told to stop (or the
/// engine is gone) waits for it. Living until then is its whole job; see the module doc.
fn parent_thread(
    program: &Path,
    theirs: OwnedFd,
    started: &mpsc::Sender<io::Result<i32>>,
    stop: &mpsc::Receiver<()>,
) {
    // Its standard streams are not wedge's: a reader of wedge's output sees its end when wedge
    // ends, not when the server does. (A keeper gets the streams its order names.)
    let null = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        Ok(null) => null,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let req = Request {
        program,
        // The last argument is room for each keeper's command line (serve::show_command_line).
        args: vec![
            serve::FLAG.into(),
            std::process::id().to_string().into(),
            " ".repeat(serve::TITLE_ROOM).into(),
        ],
        env: vec![],
        cwd: Path::new("/"),
        fds: vec![
            (null.as_fd(), 0),
            (null.as_fd(), 1),
            (null.as_fd(), 2),
            (theirs.as_fd(), serve::SOCKET_FD),
        ],
    };
    let spawned = reaper::owned(|| spawn::spawn(&req), Keeper::id);
    drop(req);
    drop((theirs, null));
    let mut keeper = match spawned {
        Ok(k) => k,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let _ = started.send(Ok(keeper.id()));
    // Returns when the engine's end drops the sender (after closing the socket and killing it).
    let _ = stop.recv();
    let _ = keeper.wait();
    reaper::disown(keeper.id());
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.talk.lock().take());
        // SAFETY: a signal to our own child, not yet reaped (its thread waits only after `stop`).
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
