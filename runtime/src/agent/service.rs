//! The gRPC service: accepts execs, runs the strategy's build, streams output, enforces timeouts and
//! answers `Wait`, `Kill`, `Stdin` and `Health`.

use super::build::{BuildError, BuildSpec, Builder, Built};
use super::kill;
use super::proto::agent_server::Agent;
use super::proto::{
    Accepted, ExecEvent, ExecRequest, ExitStatus, HealthRequest, HealthResponse, KillRequest,
    KillResponse, Output, OutputStream, Started, StdinRequest, StdinResponse, WaitRequest,
    exec_event::Event,
};
use super::spawn::{self, BuildProgress, Spawner};
use crate::sync::Mutex;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest, unix::AsyncFd};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Largest total size of program, arguments and environment of one exec.
pub const MAX_COMMAND_BYTES: usize = 256 * 1024;
/// How many finished execs stay known to `Wait` after they finished.
const FINISHED_KEPT: usize = 4096;
/// Output chunk size.
const CHUNK: usize = 64 * 1024;
/// The first read's buffer size: most commands an agent runs print little or nothing, and two
/// zeroed 64 KiB buffers per exec were page faults and memset for every one of them. A read that
/// fills the buffer grows it to [`CHUNK`], so a command that prints a lot is read in full chunks
/// from its second read on.
const FIRST_CHUNK: usize = 4 * 1024;

/// What a running exec's process is, for `Kill`.
#[derive(Debug)]
enum Process {
    /// The build is in progress; cancelling it kills what it created.
    Building(Arc<BuildProgress>),
    Running {
        pid: i32,
        pidfd: Arc<OwnedFd>,
    },
    /// Reaped, or never started: its pid may belong to someone else now.
    Gone,
}

struct Exec {
    process: Mutex<Process>,
    stdin: tokio::sync::Mutex<Option<pipe::Sender>>,
    /// The request said no stdin follows: the pipe is closed at the start.
    stdin_closed: bool,
    /// The command shares a pid namespace with others (the `libcontainer` builder): when it exits,
    /// what still holds its output is killed ([`kill`]), as the `wedge` builder's namespace
    /// teardown would.
    shares_namespace: bool,
    /// `None` until the exec finished.
    status: watch::Sender<Option<ExitStatus>>,
}

#[derive(Default)]
struct Table {
    execs: HashMap<u64, Arc<Exec>>,
    finished: VecDeque<u64>,
}

struct Shared {
    spawner: Arc<Spawner>,
    workers: u32,
    state_root: PathBuf,
    builder: Builder,
    next_id: AtomicU64,
    running: AtomicU64,
    table: Mutex<Table>,
}

/// The agent's gRPC service.
#[derive(Clone)]
pub struct AgentService {
    shared: Arc<Shared>,
}

impl AgentService {
    /// A service building with `builder` under `state_root` with `spawner`, on a runtime of
    /// `workers` workers.
    pub fn new(spawner: Spawner, workers: u32, state_root: PathBuf, builder: Builder) -> Self {
        Self {
            shared: Arc::new(Shared {
                spawner: Arc::new(spawner),
                workers,
                state_root,
                builder,
                next_id: AtomicU64::new(1),
                running: AtomicU64::new(0),
                table: Mutex::new(Table::default()),
            }),
        }
    }

    fn lookup(&self, id: u64) -> Result<Arc<Exec>, Status> {
        let table = self.shared.table.lock();
        table
            .execs
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no exec with id {id}")))
    }

    /// Kills every command still running (used at shutdown).
    pub fn kill_all(&self) {
        let table = self.shared.table.lock();
        for exec in table.execs.values() {
            let process = exec.process.lock();
            match &*process {
                Process::Running { pid, pidfd } => kill::command(*pid, pidfd, Signal::SIGKILL),
                Process::Building(progress) => progress.cancel(),
                Process::Gone => {}
            }
        }
    }
}

/// Checks an exec request's form and turns it into a build spec (without an id), touching
/// nothing outside it: the request is whatever a client sent, so every malformed field is an
/// `invalid_argument` status, never a panic. Whether the cwd exists is [`check_cwd`]'s job.
pub fn validate(
    request: ExecRequest,
    state_root: &Path,
    builder: &Builder,
) -> Result<BuildSpec, Status> {
    let invalid = |m: String| Err(Status::invalid_argument(m));
    if request.program.is_empty() {
        return invalid("program is empty".into());
    }
    let mut size = request.program.len();
    let no_nul = |what: &str, s: &str| {
        if s.contains('\0') {
            Err(Status::invalid_argument(format!(
                "{what} contains a NUL byte"
            )))
        } else {
            Ok(())
        }
    };
    no_nul("program", &request.program)?;
    for arg in &request.args {
        no_nul("an argument", arg)?;
        size += arg.len() + 1;
    }
    let mut env: Vec<(String, String)> = request.env.into_iter().collect();
    env.sort();
    for (key, value) in &env {
        if key.is_empty() || key.contains('=') {
            return invalid(format!(
                "environment variable name {key:?} is empty or contains '='"
            ));
        }
        no_nul("the environment", key)?;
        no_nul("the environment", value)?;
        size += key.len() + value.len() + 2;
    }
    if size > MAX_COMMAND_BYTES {
        return invalid(format!(
            "program, arguments and environment take {size} bytes, more than the limit of {MAX_COMMAND_BYTES}"
        ));
    }
    let cwd = if request.cwd.is_empty() {
        "/".to_string()
    } else {
        request.cwd
    };
    no_nul("cwd", &cwd)?;
    if !cwd.starts_with('/') {
        return invalid(format!("cwd {cwd:?} is not an absolute path"));
    }
    Ok(BuildSpec {
        exec_id: 0,
        state_root: state_root.to_path_buf(),
        program: request.program,
        args: request.args,
        env,
        cwd,
        builder: builder.clone(),
    })
}

/// Checks that a validated request's cwd is a directory that exists where the command will run: on
/// the host for the `wedge` builder, in the container's root filesystem for `libcontainer`.
fn check_cwd(cwd: &str, builder: &Builder) -> Result<(), Status> {
    let invalid = |m: String| Err(Status::invalid_argument(m));
    let seen = match builder {
        Builder::Wedge => PathBuf::from(cwd),
        Builder::Libcontainer(container) => container.rootfs.join(cwd.trim_start_matches('/')),
    };
    match std::fs::metadata(seen) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => invalid(format!("cwd {cwd} is not a directory")),
        Err(e) => invalid(format!(
            "cwd {cwd} does not exist or is not accessible: {e}"
        )),
    }
}

/// The signal a `Kill` request asks for: 0 means SIGKILL.
pub fn kill_signal(request: &KillRequest) -> Result<Signal, Status> {
    if request.signal == 0 {
        return Ok(Signal::SIGKILL);
    }
    Signal::try_from(request.signal)
        .map_err(|_| Status::invalid_argument(format!("{} is not a signal", request.signal)))
}

fn build_status(error: &BuildError) -> Status {
    match error {
        BuildError::Exec { errno, .. } if *errno == libc::ENOENT => {
            Status::not_found(error.to_string())
        }
        BuildError::Exec { errno, .. } if *errno == libc::EACCES => {
            Status::permission_denied(error.to_string())
        }
        BuildError::Exec { .. } => Status::failed_precondition(error.to_string()),
        BuildError::Cancelled => Status::cancelled(error.to_string()),
        BuildError::Failed(_) => Status::internal(format!("the container build failed: {error}")),
        BuildError::Unavailable(_) => Status::unavailable(error.to_string()),
    }
}

type EventSender = mpsc::Sender<Result<ExecEvent, Status>>;

fn event(e: Event) -> Result<ExecEvent, Status> {
    Ok(ExecEvent { event: Some(e) })
}

#[tonic::async_trait]
impl Agent for AgentService {
    type ExecStream = ReceiverStream<Result<ExecEvent, Status>>;

    async fn exec(
        &self,
        request: Request<ExecRequest>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let request = request.into_inner();
        let timeout = (request.timeout_ms > 0).then(|| Duration::from_millis(request.timeout_ms));
        let stdin_closed = request.stdin_closed;
        let mut spec = validate(request, &self.shared.state_root, &self.shared.builder)?;
        check_cwd(&spec.cwd, &spec.builder)?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        spec.exec_id = id;
        let progress = Arc::new(BuildProgress::default());
        let exec = Arc::new(Exec {
            process: Mutex::new(Process::Building(Arc::clone(&progress))),
            stdin: tokio::sync::Mutex::new(None),
            stdin_closed,
            shares_namespace: matches!(spec.builder, Builder::Libcontainer(_)),
            status: watch::channel(None).0,
        });
        self.shared.table.lock().execs.insert(id, Arc::clone(&exec));
        self.shared.running.fetch_add(1, Ordering::SeqCst);
        let (events, stream) = mpsc::channel(16);
        let _ = events.try_send(event(Event::Accepted(Accepted { id })));
        tracing::debug!(id, program = %spec.program, "exec accepted");
        tokio::spawn(run_exec(
            Arc::clone(&self.shared),
            exec,
            spec,
            progress,
            timeout,
            events,
        ));
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn stdin(
        &self,
        request: Request<StdinRequest>,
    ) -> Result<Response<StdinResponse>, Status> {
        let request = request.into_inner();
        let exec = self.lookup(request.id)?;
        if matches!(*exec.process.lock(), Process::Building(_)) {
            return Err(Status::failed_precondition(format!(
                "exec {} has not started yet (wait for its Started event)",
                request.id
            )));
        }
        let mut stdin = exec.stdin.lock().await;
        let Some(pipe) = stdin.as_mut() else {
            return Err(Status::failed_precondition(format!(
                "stdin of exec {} is closed",
                request.id
            )));
        };
        if let Err(e) = pipe.write_all(&request.data).await {
            *stdin = None;
            return Err(Status::failed_precondition(format!(
                "writing to stdin of exec {}: {e} (the command exited or closed its stdin)",
                request.id
            )));
        }
        if request.close {
            *stdin = None;
        }
        Ok(Response::new(StdinResponse {}))
    }

    async fn wait(&self, request: Request<WaitRequest>) -> Result<Response<ExitStatus>, Status> {
        let id = request.into_inner().id;
        let mut status = self.lookup(id)?.status.subscribe();
        let done = status
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Status::internal(format!("exec {id} was dropped")))?;
        Ok(Response::new(done.clone().expect("waited for Some")))
    }

    async fn kill(&self, request: Request<KillRequest>) -> Result<Response<KillResponse>, Status> {
        let request = request.into_inner();
        let signal = kill_signal(&request)?;
        let exec = self.lookup(request.id)?;
        let process = exec.process.lock();
        match &*process {
            Process::Running { pid, pidfd } => {
                kill::command(*pid, pidfd, signal);
                Ok(Response::new(KillResponse {}))
            }
            Process::Building(_) => Err(Status::failed_precondition(format!(
                "exec {} has not started yet (wait for its Started event)",
                request.id
            ))),
            Process::Gone => Err(Status::failed_precondition(format!(
                "exec {} has already finished",
                request.id
            ))),
        }
    }

    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthResponse>, Status> {
        if !self.shared.spawner.is_healthy() {
            return Err(Status::unavailable(
                "the zygote process is gone, so no exec can be built; restart the agent",
            ));
        }
        Ok(Response::new(HealthResponse {
            strategy: self.shared.spawner.strategy().name().to_string(),
            workers: self.shared.workers,
            running: self.shared.running.load(Ordering::SeqCst),
        }))
    }
}

/// Why the exec stops waiting for its build or its command.
enum Interrupt {
    TimedOut,
    ClientGone,
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One exec, from build to reaping; the only owner of the command's process.
async fn run_exec(
    shared: Arc<Shared>,
    exec: Arc<Exec>,
    spec: BuildSpec,
    progress: Arc<BuildProgress>,
    timeout: Option<Duration>,
    events: EventSender,
) {
    let id = spec.exec_id;
    let accepted = Instant::now();
    let deadline = timeout.map(|t| accepted + t);
    let mut build = Box::pin(shared.spawner.spawn(spec, Arc::clone(&progress)));
    // In progress while the exec waits for it. A build its exec gave up on (timed out, client
    // gone) may be stuck for good in the library, and must not keep other execs' leftovers
    // alive (`in_flight`): it stops counting here.
    let in_flight = super::in_flight::enter();
    let built = tokio::select! {
        built = &mut build => Ok(built),
        _ = until(deadline) => Err(Interrupt::TimedOut),
        _ = events.closed() => Err(Interrupt::ClientGone),
    };
    // The command has not exec'd yet when its build ends: it counts from before the build stops
    // counting until its exec ends (`in_flight`).
    let _command = match &built {
        Ok(Ok(built)) => Some(super::in_flight::command(built.pid)),
        _ => None,
    };
    drop(in_flight);
    let status = match built {
        Ok(Ok(built)) => run_command(&exec, built, deadline, &events, id, accepted).await,
        Ok(Err(failure)) => {
            let status = build_status(&failure.error);
            let error = format!("the command never ran: {}", failure.error);
            // A build that broke is the agent's problem and worth a warning; a program that is
            // missing or not executable is the caller's.
            match failure.error {
                BuildError::Failed(_) | BuildError::Unavailable(_) => tracing::warn!(id, "{error}"),
                BuildError::Exec { .. } | BuildError::Cancelled => tracing::debug!(id, "{error}"),
            }
            tokio::task::spawn_blocking(move || spawn::discard_failure(&failure));
            let _ = events.send(Err(status)).await;
            ExitStatus {
                id,
                error,
                duration_ms: accepted.elapsed().as_millis() as u64,
                ..ExitStatus::default()
            }
        }
        Err(interrupt) => {
            // Stop the build (kill what it created) and clean up after it in the background.
            progress.cancel();
            tokio::spawn(async move {
                match build.await {
                    Ok(built) => drop(tokio::task::spawn_blocking(move || spawn::discard(built))),
                    Err(failure) => drop(tokio::task::spawn_blocking(move || {
                        spawn::discard_failure(&failure)
                    })),
                }
            });
            let timed_out = matches!(interrupt, Interrupt::TimedOut);
            let status = ExitStatus {
                id,
                timed_out,
                error: if timed_out {
                    "the command never ran: the timeout fired during the build".into()
                } else {
                    "the command never ran: the client went away during the build".into()
                },
                duration_ms: accepted.elapsed().as_millis() as u64,
                ..ExitStatus::default()
            };
            let _ = events.send(event(Event::Exited(status.clone()))).await;
            status
        }
    };
    *exec.process.lock() = Process::Gone;
    finish(&shared, id, &exec, status);
}

fn finish(shared: &Shared, id: u64, exec: &Exec, status: ExitStatus) {
    exec.status.send_replace(Some(status));
    shared.running.fetch_sub(1, Ordering::SeqCst);
    let mut table = shared.table.lock();
    table.finished.push_back(id);
    while table.finished.len() > FINISHED_KEPT {
        if let Some(old) = table.finished.pop_front() {
            table.execs.remove(&old);
        }
    }
}

/// How soon to look again at what holds an exited command's output when some holder may be
/// another build in progress: a build lets go at its exec, within milliseconds.
const LOOK_AGAIN: Duration = Duration::from_millis(20);

/// How long after the command exited a holder may be spared as a build in progress at most. A
/// build that old can be stuck in the library for good (0.5.7's InitReady race leaves one
/// waiting on a channel that an init the race stranded keeps open, and an `inline` build blocks
/// the very worker that would time it out), and the kill then frees it too. A build's clone on
/// a working machine execs within milliseconds; two seconds leave a slow guest a hundredfold.
const SPARE_AT_MOST: Duration = Duration::from_secs(2);

/// Kills what holds an exited command's output ([`kill::output_holders`]); when it spared some
/// holder as a build in progress, the time to look again.
fn kill_output_holders(output: &kill::Output, id: u64, exited: Instant) -> Option<Instant> {
    let spare = if exited.elapsed() < SPARE_AT_MOST {
        super::in_flight::now()
    } else {
        super::in_flight::InProgress::default()
    };
    let holders = kill::output_holders(output, &spare);
    if !holders.killed.is_empty() {
        tracing::debug!(id, killed = ?holders.killed, "killed what still held the output");
    }
    (holders.spared > 0).then(|| Instant::now() + LOOK_AGAIN)
}

/// Streams a started command's output until it exited and its output ended, enforcing the deadline
/// and killing it if the client goes away; then reaps it.
async fn run_command(
    exec: &Exec,
    built: Built,
    deadline: Option<Instant>,
    events: &EventSender,
    id: u64,
    accepted: Instant,
) -> ExitStatus {
    let mut watched = match watch_command(exec, built, id).await {
        Ok(watched) => watched,
        Err(status) => return status,
    };
    let _ = events
        .send(event(Event::Started(Started { pid: watched.pid })))
        .await;
    let timed_out = stream_until_done(&mut watched, deadline, events, id).await;
    let Watched { pidfd, exited, .. } = watched;
    drop(exited);
    // Nobody may signal this pid once it is reaped.
    *exec.process.lock() = Process::Gone;
    exec.stdin.lock().await.take();
    let status = reap_command(pidfd, id, timed_out, accepted).await;
    let _ = events.send(event(Event::Exited(status.clone()))).await;
    status
}

/// A started command as the service watches it: its output pipes and its pidfd, registered with
/// the runtime (a pidfd is readable once its process exited).
struct Watched {
    pid: i32,
    pidfd: Arc<OwnedFd>,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
    exited: AsyncFd<Arc<OwnedFd>>,
    /// Set when the exec [shares a namespace](Exec::shares_namespace).
    output: Option<kill::Output>,
}

/// Records the command as running and registers its descriptors; the stdin pipe goes to the exec
/// (for `WriteStdin`). On failure the command is killed and reaped, and the status to report is
/// returned.
async fn watch_command(exec: &Exec, built: Built, id: u64) -> Result<Watched, ExitStatus> {
    let Built {
        pid,
        pidfd,
        stdin,
        stdout,
        stderr,
    } = built;
    let output = exec
        .shares_namespace
        .then(|| kill::Output::of(pid, &stdout, &stderr))
        .flatten();
    let pidfd = Arc::new(pidfd);
    *exec.process.lock() = Process::Running {
        pid,
        pidfd: Arc::clone(&pidfd),
    };
    let io = (
        pipe::Sender::from_owned_fd(stdin),
        pipe::Receiver::from_owned_fd(stdout),
        pipe::Receiver::from_owned_fd(stderr),
        // SAFETY: the AsyncFd holds an Arc of the pidfd, so the descriptor stays open and the same
        // for as long as it is registered.
        unsafe { AsyncFd::register_with_interest(Arc::clone(&pidfd), Interest::READABLE) }
            .map_err(std::io::Error::from),
    );
    let (stdin, stdout, stderr, exited) = match io {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        (a, b, c, d) => {
            let why = [a.err(), b.err(), c.err(), d.err()]
                .into_iter()
                .flatten()
                .next();
            tracing::error!(id, "registering the command's descriptors: {why:?}");
            kill::command(pid, &pidfd, Signal::SIGKILL);
            let _ = tokio::task::spawn_blocking(move || spawn::reap(&pidfd)).await;
            return Err(ExitStatus {
                id,
                error: "the agent could not watch the command".into(),
                ..ExitStatus::default()
            });
        }
    };
    // Dropping the pipe's write end closes the command's stdin.
    if !exec.stdin_closed {
        *exec.stdin.lock().await = Some(stdin);
    }
    Ok(Watched {
        pid,
        pidfd,
        stdout,
        stderr,
        exited,
        output,
    })
}

/// Forwards output until the command exited and both pipes ended; kills it at the deadline or when
/// the client goes away (whose output is dropped from then on). Returns whether the deadline fired.
async fn stream_until_done(
    watched: &mut Watched,
    deadline: Option<Instant>,
    events: &EventSender,
    id: u64,
) -> bool {
    let Watched {
        pid,
        pidfd,
        stdout,
        stderr,
        exited,
        output: leftovers,
    } = watched;
    let (pid, pidfd) = (*pid, &*pidfd);
    let (mut out_open, mut err_open, mut running) = (true, true, true);
    let (mut timed_out, mut client_gone) = (false, false);
    let mut pending: Option<ExecEvent> = None;
    let mut out_buf = vec![0u8; FIRST_CHUNK];
    let mut err_buf = vec![0u8; FIRST_CHUNK];
    // When to look again for what holds the output of a command that exited (some holders
    // were spared as builds in progress).
    let mut look_again: Option<Instant> = None;
    let mut exited_at = Instant::now();
    while running || out_open || err_open {
        tokio::select! {
            permit = events.reserve(), if pending.is_some() => match permit {
                Ok(permit) => permit.send(Ok(pending.take().expect("checked"))),
                Err(_) => pending = None,
            },
            read = stdout.read(&mut out_buf), if out_open && pending.is_none() => {
                (out_open, pending) = took(read, &mut out_buf, OutputStream::Stdout, !client_gone);
            },
            read = stderr.read(&mut err_buf), if err_open && pending.is_none() => {
                (err_open, pending) = took(read, &mut err_buf, OutputStream::Stderr, !client_gone);
            },
            ready = exited.readable(), if running => {
                // Readable means exited; keep the guard's readiness (nothing clears it).
                if let Ok(mut guard) = ready { guard.retain_ready(); }
                running = false;
                exited_at = Instant::now();
                if let Some(output) = leftovers.as_ref().filter(|_| out_open || err_open) {
                    look_again = kill_output_holders(output, id, exited_at);
                }
            },
            _ = until(look_again), if look_again.is_some() && (out_open || err_open) => {
                look_again = leftovers
                    .as_ref()
                    .and_then(|output| kill_output_holders(output, id, exited_at));
            },
            _ = until(deadline), if running && !timed_out => {
                timed_out = true;
                tracing::debug!(id, "timeout: killing the command");
                kill::command(pid, pidfd, Signal::SIGKILL);
            },
            _ = events.closed(), if !client_gone => {
                client_gone = true;
                pending = None;
                if running {
                    tracing::debug!(id, "client went away: killing the command");
                    kill::command(pid, pidfd, Signal::SIGKILL);
                }
            },
        }
    }
    timed_out
}

/// What one read of a command's output gives: whether that pipe is still open, and the event
/// to forward (none when the client is gone, `forward` false). A read that filled the buffer
/// grows it ([`grow_when_full`]).
fn took(
    read: std::io::Result<usize>,
    buf: &mut Vec<u8>,
    stream: OutputStream,
    forward: bool,
) -> (bool, Option<ExecEvent>) {
    match read {
        Ok(0) | Err(_) => (false, None),
        Ok(n) => {
            let event = forward.then(|| output(stream, &buf[..n]));
            grow_when_full(buf, n);
            (true, event)
        }
    }
}

/// After a read of `n` bytes into `buf`: a read that filled it grows it to [`CHUNK`].
fn grow_when_full(buf: &mut Vec<u8>, n: usize) {
    if n == buf.len() && buf.len() < CHUNK {
        buf.resize(CHUNK, 0);
    }
}

/// Reaps the command (on the blocking pool) and builds its final status.
async fn reap_command(
    pidfd: Arc<OwnedFd>,
    id: u64,
    timed_out: bool,
    accepted: Instant,
) -> ExitStatus {
    // The pidfd was readable, so the command normally is a zombie by now: reap it here, and
    // only wait on the blocking pool when it is not (a hop to another thread per exec otherwise).
    let waited = match spawn::try_reap(&pidfd) {
        Ok(Some(status)) => Ok(Ok(status)),
        _ => tokio::task::spawn_blocking(move || spawn::reap(&pidfd)).await,
    };
    let mut status = ExitStatus {
        id,
        timed_out,
        duration_ms: accepted.elapsed().as_millis() as u64,
        ..ExitStatus::default()
    };
    match waited {
        Ok(Ok(WaitStatus::Exited(_, code))) => status.exit_code = Some(code),
        Ok(Ok(WaitStatus::Signaled(_, signal, _))) => status.signal = Some(signal as i32),
        other => status.error = format!("waiting for the command: {other:?}"),
    }
    status
}

fn output(stream: OutputStream, data: &[u8]) -> ExecEvent {
    ExecEvent {
        event: Some(Event::Output(Output {
            stream: stream as i32,
            data: data.to_vec(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_buffer_grows_to_a_chunk_only_after_a_read_filled_it() {
        let mut buf = vec![0u8; FIRST_CHUNK];
        grow_when_full(&mut buf, FIRST_CHUNK - 1);
        assert_eq!(buf.len(), FIRST_CHUNK, "a short read leaves it small");
        grow_when_full(&mut buf, FIRST_CHUNK);
        assert_eq!(buf.len(), CHUNK, "a full read grows it");
        grow_when_full(&mut buf, CHUNK);
        assert_eq!(buf.len(), CHUNK, "never past a chunk");
    }

    fn request(program: &str, cwd: &str) -> ExecRequest {
        ExecRequest {
            program: program.into(),
            cwd: cwd.into(),
            ..ExecRequest::default()
        }
    }

    #[test]
    fn validate_checks_the_form_and_leaves_the_filesystem_to_check_cwd() {
        let spec = validate(
            request("true", "/no/such/dir"),
            Path::new("/s"),
            &Builder::Wedge,
        )
        .unwrap();
        assert_eq!(
            (spec.program.as_str(), spec.cwd.as_str()),
            ("true", "/no/such/dir")
        );
        assert!(check_cwd(&spec.cwd, &spec.builder).is_err());
        assert_eq!(
            validate(request("true", ""), Path::new("/s"), &Builder::Wedge)
                .unwrap()
                .cwd,
            "/"
        );
        for bad in [
            request("", "/"),
            request("a\0b", "/"),
            request("true", "rel"),
        ] {
            let status = validate(bad.clone(), Path::new("/s"), &Builder::Wedge).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn kill_signal_maps_zero_to_sigkill_and_rejects_non_signals() {
        let kill = |signal| kill_signal(&KillRequest { id: 1, signal });
        assert_eq!(kill(0).unwrap(), Signal::SIGKILL);
        assert_eq!(kill(15).unwrap(), Signal::SIGTERM);
        for bad in [-1, 65, i32::MAX] {
            assert_eq!(kill(bad).unwrap_err().code(), tonic::Code::InvalidArgument);
        }
    }
}
