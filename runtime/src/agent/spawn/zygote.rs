//! The `zygote` strategy: a single-threaded helper process, forked before the tokio runtime starts,
//! performs every build. Being single-threaded, nothing can hold a lock while it clones, and nobody
//! else changes its cwd. The agent sends it one [`BuildSpec`] at a time over a stream socketpair; it
//! answers with progress messages and a final message that carries the command's pidfd and stdio
//! descriptors by `SCM_RIGHTS`.
//!
//! Frames are a little-endian `u32` length and a JSON body ([`Reply`] from the zygote, [`BuildSpec`]
//! to it). A reply's descriptors ride on the first byte of its frame.

use super::cleanup;
use super::progress::BuildProgress;
use crate::agent::build::{self, BuildError, BuildFailure, BuildSpec, Built, Progress};
use crate::sync::Mutex;
use crate::sys;
use anyhow::{Context, Result};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
    recvmsg, sendmsg, socketpair,
};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use tokio::sync::oneshot;

/// Largest frame either side accepts (requests are validated far below this).
const MAX_FRAME: usize = 16 << 20;

/// A message from the zygote.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Progress(Progress),
    /// Carries 4 descriptors: pidfd, stdin, stdout, stderr.
    Built {
        pid: i32,
    },
    /// Carries 1 descriptor (the killed init's pidfd, to reap) when `orphan` is true.
    Failed {
        error: BuildError,
        orphan: bool,
    },
}

struct Job {
    spec: BuildSpec,
    progress: Arc<BuildProgress>,
    reply: oneshot::Sender<Result<Built, BuildFailure>>,
}

/// The agent's handle on its zygote.
pub struct Zygote {
    jobs: Mutex<mpsc::Sender<Job>>,
    pid: Pid,
    alive: Arc<AtomicBool>,
    /// Builds sent to it and not yet answered (how a pool of zygotes picks one).
    waiting: AtomicUsize,
}

/// Counts one build as waiting on a zygote for as long as it lives (a cancelled exec's future
/// is dropped mid-await: the count goes down then too).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn gone(why: &str) -> BuildFailure {
    BuildError::Unavailable(format!(
        "the zygote process is gone ({why}); restart the agent"
    ))
    .into()
}

impl Zygote {
    /// Forks the zygote. Must be called while the process is single-threaded (before the runtime).
    pub fn start() -> Result<Self> {
        let (agent_end, zygote_end) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("socketpair for the zygote")?;
        // SAFETY: called before any other thread exists (documented precondition), so the child is a
        // complete copy of this process.
        match unsafe { nix::unistd::fork() }.context("forking the zygote")? {
            ForkResult::Child => {
                drop(agent_end);
                let code = match zygote_main(UnixStream::from(zygote_end)) {
                    Ok(()) => 0,
                    Err(e) => {
                        tracing::error!("zygote: {e:#}");
                        1
                    }
                };
                // SAFETY: leave without running the agent's exit handlers.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(zygote_end);
                let (jobs, queue) = mpsc::channel();
                let socket = UnixStream::from(agent_end);
                let alive = Arc::new(AtomicBool::new(true));
                let client_alive = Arc::clone(&alive);
                std::thread::Builder::new()
                    .name("zygote-client".into())
                    .spawn(move || client_loop(socket, queue, child, &client_alive))
                    .context("starting the zygote client thread")?;
                tracing::info!(pid = child.as_raw(), "zygote started");
                Ok(Self {
                    jobs: Mutex::new(jobs),
                    pid: child,
                    alive,
                    waiting: AtomicUsize::new(0),
                })
            }
        }
    }

    /// The zygote's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// False once talking to the zygote failed (it died): every build fails from then on.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Builds sent to this zygote and not answered yet.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Has the zygote perform one build. Builds are performed one at a time, in order.
    pub async fn build(
        &self,
        spec: BuildSpec,
        progress: Arc<BuildProgress>,
    ) -> Result<Built, BuildFailure> {
        let _waiting = Waiting::start(&self.waiting);
        let (reply, answer) = oneshot::channel();
        let job = Job {
            spec,
            progress,
            reply,
        };
        let sent = self.jobs.lock().send(job);
        if sent.is_err() {
            return Err(gone("its job queue is closed"));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(gone("its client thread ended")))
    }
}

/// The zygote: reads build requests and performs them, one by one, until the agent hangs up.
fn zygote_main(socket: UnixStream) -> Result<()> {
    sys::die_with_parent().context("PR_SET_PDEATHSIG")?;
    let never_cancelled = AtomicBool::new(false);
    loop {
        let Some((body, _)) = read_frame(&socket).context("reading a request")? else {
            return Ok(());
        };
        let spec: BuildSpec = serde_json::from_slice(&body).context("decoding a request")?;
        let mut progress_error = None;
        let mut report = |p: Progress| {
            if progress_error.is_none()
                && let Err(e) = write_reply(&socket, &Reply::Progress(p), &[])
            {
                progress_error = Some(e);
            }
        };
        if let build::Builder::Libcontainer(_) = spec.builder {
            build_in_helper(&socket, &spec).context("a libcontainer build")?;
            continue;
        }
        let result = build::build(&spec, None, &never_cancelled, &mut report);
        if let Some(e) = progress_error {
            return Err(e).context("sending progress");
        }
        send_result(&socket, result).context("sending a reply")?;
    }
}

/// Sends a build's result: the command's descriptors, or the failure (with the pidfd of a killed
/// init to reap, if any).
fn send_result(socket: &UnixStream, result: Result<Built, BuildFailure>) -> io::Result<()> {
    match result {
        Ok(built) => {
            let fds =
                [&built.pidfd, &built.stdin, &built.stdout, &built.stderr].map(|fd| fd.as_raw_fd());
            write_reply(socket, &Reply::Built { pid: built.pid }, &fds)
        }
        Err(failure) => {
            let orphan: Vec<RawFd> = failure.orphan.iter().map(|fd| fd.as_raw_fd()).collect();
            let reply = Reply::Failed {
                error: failure.error,
                orphan: !orphan.is_empty(),
            };
            write_reply(socket, &reply, &orphan)
        }
    }
}

/// Performs a libcontainer build in a child of the zygote, then relays its answer to the agent.
///
/// The library clones the command as a sibling of its intermediate process, that is as a child of
/// the process that called it. Called in the zygote, the command would be the zygote's child, and
/// the agent could neither wait for it nor reap it. In a helper that exits right after the build,
/// the command is orphaned and reparented to the agent, the nearest child subreaper. The helper
/// answers over a socketpair and the zygote forwards the answer only once it has reaped the helper:
/// the agent must not wait for the command before it is the command's parent (a command that
/// exited at once would otherwise be waited for while still the helper's child: `ECHILD`). The
/// zygote builds one at a time, so replies stay in order; a helper that died without answering is
/// answered for.
fn build_in_helper(socket: &UnixStream, spec: &BuildSpec) -> Result<()> {
    let (zygote_end, helper_end) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("socketpair for a build helper")?;
    let (zygote_end, helper_end) = (UnixStream::from(zygote_end), UnixStream::from(helper_end));
    // SAFETY: the zygote is single-threaded, so the child is a complete copy of it.
    let helper = match unsafe { nix::unistd::fork() }.context("forking a build helper")? {
        ForkResult::Child => {
            // The library forks without exec, so whatever the helper holds its children hold: a
            // child stranded by a failed build that kept the zygote's socket to the agent would
            // keep the agent from ever seeing the zygote die (no end-of-file on that socket).
            // The helper answers on its own socketpair, so it lets go of the agent's socket first.
            // SAFETY: this process is a fork that leaves by `_exit`, so the `UnixStream` owning
            // the descriptor is never dropped, and nothing else here uses the descriptor.
            unsafe { libc::close(socket.as_raw_fd()) };
            let never_cancelled = AtomicBool::new(false);
            let result = build::build(spec, None, &never_cancelled, &mut |_| {});
            let code = i32::from(send_result(&helper_end, result).is_err());
            // SAFETY: leave without running exit handlers; the answer is written.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(helper_end);
    let status = loop {
        match nix::sys::wait::waitpid(helper, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.context("waiting for the build helper")?,
        }
    };
    let answer = match read_frame(&zygote_end) {
        Ok(Some((body, fds))) => serde_json::from_slice::<Reply>(&body)
            .ok()
            .map(|r| (r, fds)),
        _ => None,
    };
    let (reply, fds) = answer.unwrap_or_else(|| {
        let error = BuildError::Failed(format!("the build helper ended with {status:?}"));
        (
            Reply::Failed {
                error,
                orphan: false,
            },
            Vec::new(),
        )
    });
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    write_reply(socket, &reply, &raw).context("sending a reply")
}

/// Requests the agent keeps queued in the zygote's socket beyond the one being built. With the
/// next request already there, the zygote starts the next build as soon as it has answered,
/// instead of idling until this thread has woken up, read the reply and written the next request:
/// two cross-process wake-ups per build, on the path that bounds the agent's exec rate (the
/// zygote builds one at a time). A job sent ahead whose exec is cancelled meanwhile is still
/// built, and its processes are killed as soon as they exist ([`BuildProgress::record`]).
const AHEAD: usize = 1;

/// The agent side: hands jobs to the zygote in order and routes its replies to them.
fn client_loop(socket: UnixStream, queue: mpsc::Receiver<Job>, zygote: Pid, alive: &AtomicBool) {
    let mut sent: VecDeque<Job> = VecDeque::new();
    let why = loop {
        match send_jobs(&socket, &queue, &mut sent) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => break e.to_string(),
        }
        let Some(job) = sent.front() else { continue };
        match await_reply(&socket, job) {
            Ok(result) => deliver(sent.pop_front().expect("the front job"), result),
            Err(e) => break e.to_string(),
        }
    };
    tracing::error!("the zygote process is gone: {why}");
    alive.store(false, Ordering::SeqCst);
    // Make sure it is gone (it may only have broken the protocol), and reap it.
    let _ = nix::sys::signal::kill(zygote, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(zygote, None);
    for job in sent.into_iter().chain(queue) {
        let _ = job.reply.send(Err(gone(&why)));
    }
}

/// Sends the zygote the queued jobs, up to [`AHEAD`] beyond the one in flight, waiting for one
/// when none is; cancelled ones are answered at once. `Ok(false)`: the queue is closed and
/// nothing is in flight.
fn send_jobs(
    socket: &UnixStream,
    queue: &mpsc::Receiver<Job>,
    sent: &mut VecDeque<Job>,
) -> io::Result<bool> {
    while sent.len() <= AHEAD {
        let job = if sent.is_empty() {
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return Ok(false),
            }
        } else {
            match queue.try_recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        };
        if job.progress.is_cancelled() {
            let _ = job.reply.send(Err(BuildError::Cancelled.into()));
            continue;
        }
        let body = serde_json::to_vec(&job.spec).map_err(io::Error::other);
        // In flight from here: a failed send fails it with the others.
        sent.push_back(job);
        write_frame(socket, &body?, &[])?;
    }
    Ok(true)
}

/// Hands a build's result to its exec; one nobody waits for any more is discarded, so the command
/// does not leak.
fn deliver(job: Job, result: Result<Built, BuildFailure>) {
    if let Err(Ok(orphaned)) = job.reply.send(result) {
        cleanup::discard(orphaned);
    }
}

/// Reads the zygote's replies to `job` (the oldest in flight): its progress, then its result.
fn await_reply(socket: &UnixStream, job: &Job) -> io::Result<Result<Built, BuildFailure>> {
    loop {
        let Some((body, mut fds)) = read_frame(socket)? else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the zygote closed its socket",
            ));
        };
        let reply: Reply = serde_json::from_slice(&body).map_err(io::Error::other)?;
        match reply {
            Reply::Progress(p) => job.progress.record(p),
            Reply::Built { pid } => {
                if fds.len() != 4 {
                    return Err(io::Error::other(format!(
                        "expected 4 descriptors, got {}",
                        fds.len()
                    )));
                }
                let stderr = fds.pop().expect("4 fds");
                let stdout = fds.pop().expect("4 fds");
                let stdin = fds.pop().expect("4 fds");
                let pidfd = fds.pop().expect("4 fds");
                return Ok(Ok(Built {
                    pid,
                    pidfd,
                    stdin,
                    stdout,
                    stderr,
                }));
            }
            Reply::Failed { error, orphan } => {
                let orphan = if orphan { fds.pop() } else { None };
                return Ok(Err(BuildFailure { error, orphan }));
            }
        }
    }
}

fn write_reply(socket: &UnixStream, reply: &Reply, fds: &[RawFd]) -> io::Result<()> {
    let body = serde_json::to_vec(reply).map_err(io::Error::other)?;
    write_frame(socket, &body, fds)
}

fn write_frame(socket: &UnixStream, body: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(body);
    let mut sent = 0;
    if !fds.is_empty() {
        let rights = [ControlMessage::ScmRights(fds)];
        sent = loop {
            match sendmsg::<UnixAddr>(
                socket.as_raw_fd(),
                &[IoSlice::new(&frame)],
                &rights,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Err(nix::Error::EINTR) => continue,
                other => break other?,
            }
        };
    }
    (&*socket).write_all(&frame[sent..])
}

/// Reads one frame and any descriptors sent with it; `None` on a clean EOF before a frame.
fn read_frame(socket: &UnixStream) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut header = [0u8; 4];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < header.len() {
        let mut cmsg = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [IoSliceMut::new(&mut header[got..])];
        let msg = match recvmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::Error::EINTR) => continue,
            other => other?,
        };
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: descriptors just received by this process belong to nobody else.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if msg.bytes == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated frame header",
            ));
        }
        got += msg.bytes;
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other(format!(
            "frame of {len} bytes is too large"
        )));
    }
    let mut body = vec![0u8; len];
    (&*socket).read_exact(&mut body)?;
    Ok(Some((body, fds)))
}
