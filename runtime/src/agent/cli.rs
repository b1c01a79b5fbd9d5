//! The `wedge-agent` command line: `serve` and `exec`.

use super::build::Builder;
use super::client::{self, Outcome};
use super::failpoints;
use super::proto::agent_server::AgentServer;
use super::proto::{ExecRequest, OutputStream};
use super::second_build;
use super::service::AgentService;
use super::spawn::zygote::Zygote;
use super::spawn::{self, Spawner, Strategy};
use crate::sys;
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// wedge's exec agent: a gRPC exec service over a unix socket, as guest agents of micro-VM sandboxes
/// run; each exec is a real container build (namespaces, clone3, notify socket handshakes).
#[derive(Debug, Parser)]
#[command(name = "wedge-agent", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the exec service on a unix socket until SIGTERM or SIGINT.
    Serve(ServeArgs),
    /// Run a command on a serving agent, N copies at once; exit 0 only if all exited with status 0.
    Exec(ExecArgs),
    /// Ask a serving agent's Health; exit 0 when it answers (1 when it fails or the timeout passes).
    Health(HealthArgs),
}

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The unix socket of the agent.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// Give up after this many milliseconds [default: wait for the answer however long it takes,
    /// which is what a harness watching for a frozen agent wants].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The unix socket to serve on (a stale socket file there is replaced).
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// Tokio worker threads [default: the number of available CPUs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: Option<u32>,
    /// Where the container build runs.
    #[arg(long, value_enum, value_name = "S", default_value_t = Strategy::DEFAULT)]
    pub strategy: Strategy,
    /// Where this agent's state directory (wedge-agent-<pid>, removed on exit) is created [default: $TMPDIR].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Which code builds each exec: wedge's own build, or youki's libcontainer (a tenant of one
    /// container the agent starts; needs the `libcontainer` cargo feature): 0.5.7, or the current
    /// release through a second build of the agent (`libcontainer-latest`).
    #[arg(long, value_enum, value_name = "B", default_value_t = BuilderKind::Wedge)]
    pub builder: BuilderKind,
    /// The static busybox the `libcontainer` builder's container is made of [default: `busybox`
    /// found in $PATH, else /bin/busybox].
    #[arg(long, value_name = "PATH")]
    pub busybox: Option<PathBuf>,
    /// With `--strategy zygote`: how many zygotes build side by side (each single-threaded, each
    /// with its own cwd, so no more hazards than one). An exec goes to the one with the fewest
    /// builds waiting.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub zygotes: u32,
}

/// The values of `serve --builder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BuilderKind {
    /// wedge's own build, with failpoints between its steps.
    Wedge,
    /// youki's libcontainer 0.5.7, as boxlite's guest uses it.
    Libcontainer,
    /// youki's libcontainer, the current release (0.7.0): runs `wedge-agent-latest`, the agent
    /// built against it (`ci/build-libcontainer-latest.sh`).
    LibcontainerLatest,
}

#[cfg(feature = "libcontainer")]
use super::build::libcontainer::Container;

/// Stands for the container in a build without the `libcontainer` feature: no value can exist.
#[cfg(not(feature = "libcontainer"))]
enum Container {}

#[cfg(not(feature = "libcontainer"))]
impl Container {
    fn reference(&self) -> &super::build::ContainerRef {
        match *self {}
    }
    fn destroy(self) {
        match self {}
    }
}

/// `--busybox`, or the first `busybox` in `$PATH`, or `/bin/busybox`.
#[cfg(feature = "libcontainer")]
fn busybox(args: &ServeArgs) -> PathBuf {
    if let Some(given) = &args.busybox {
        return given.clone();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("busybox"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"))
}

/// Starts the container the `libcontainer` builder's execs join (none for the `wedge` builder).
/// Called while the process is single-threaded: the library clones.
fn start_container(args: &ServeArgs, state_root: &Path) -> Result<Option<Container>> {
    use clap::ValueEnum as _;
    // Each binary builds with the one release it links (second_build.rs).
    match (args.builder, second_build::IS_SECOND_BUILD) {
        (BuilderKind::Wedge, _) => Ok(None),
        (BuilderKind::Libcontainer, false) | (BuilderKind::LibcontainerLatest, true) => {
            create_container(args, state_root).map(Some)
        }
        (other, _) => bail!(
            "--builder {}: this wedge-agent links libcontainer {}",
            other
                .to_possible_value()
                .map_or_else(|| "?".to_string(), |v| v.get_name().to_string()),
            second_build::LIBRARY_VERSION
        ),
    }
}

#[cfg(feature = "libcontainer")]
fn create_container(args: &ServeArgs, state_root: &Path) -> Result<Container> {
    Container::create(state_root, &busybox(args)).with_context(|| {
        format!(
            "starting the libcontainer {} builder's container",
            second_build::LIBRARY_VERSION
        )
    })
}

#[cfg(not(feature = "libcontainer"))]
fn create_container(_: &ServeArgs, _: &Path) -> Result<Container> {
    bail!(
        "--builder libcontainer: this wedge-agent was built without the `libcontainer` cargo feature"
    )
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The unix socket of the agent.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// How many copies of the command to run at once.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Timeout of each copy in milliseconds, build included [default: none].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// An environment variable of the command (repeatable); the command inherits nothing else.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory of the command [default: /].
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// `wedge-agent`'s main: parses the command line (bad arguments exit with status 2) and runs it.
pub fn main() -> ExitCode {
    second_build::keep_process_name();
    crate::mutation::check_env();
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        Command::Exec(_) | Command::Health(_) => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEDGE_AGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve(args).map(|()| ExitCode::SUCCESS),
        Command::Exec(args) => exec(args),
        Command::Health(args) => health(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("wedge-agent: {e:#}");
        ExitCode::FAILURE
    })
}

/// Makes sure descriptors 0, 1 and 2 are open, so no pipe of a build lands on them.
fn ensure_standard_fds() -> Result<()> {
    for fd in 0..3 {
        if nix::fcntl::fcntl(
            // SAFETY: only queried, never closed.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .is_err()
        {
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?;
            let null = std::os::fd::IntoRawFd::into_raw_fd(null);
            if null != fd {
                bail!("descriptor {fd} is closed and /dev/null did not take its place");
            }
        }
    }
    Ok(())
}

fn prepare_socket(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("checking {}", path.display())),
        Ok(meta) if !meta.file_type().is_socket() => {
            bail!("{} exists and is not a socket", path.display())
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!("another agent is already serving on {}", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))
        }
    }
}

/// How long `serve` lets the runtime's remaining tasks finish once it has stopped serving.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// The start of the line `serve` prints on stderr when it stops with builds still running after
/// [`SHUTDOWN_TIMEOUT`]: a stable marker, so a scenario can fail such a trial.
pub const FORCED_STOP: &str = "wedge-agent: FORCED STOP";

/// A directory of this agent's own, made empty: exec ids restart at 1 in every agent, and an agent
/// that was killed mid-build leaves its state behind. Absolute: the agent changes its cwd.
fn fresh_state_root(args: &ServeArgs) -> Result<PathBuf> {
    let state_root = args
        .state_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("wedge-agent-{}", std::process::id()));
    let state_root = std::path::absolute(&state_root).context("the state directory")?;
    if state_root.exists() {
        std::fs::remove_dir_all(&state_root).with_context(|| {
            format!(
                "removing the stale state directory {}",
                state_root.display()
            )
        })?;
    }
    std::fs::create_dir_all(&state_root)
        .with_context(|| format!("creating the state directory {}", state_root.display()))?;
    Ok(state_root)
}

fn serve(args: ServeArgs) -> Result<()> {
    if args.builder == BuilderKind::LibcontainerLatest && !second_build::IS_SECOND_BUILD {
        // Before anything of this process's own exists: the second build takes over.
        return second_build::exec_second_build();
    }
    failpoints::configure_from_env()?;
    ensure_standard_fds()?;
    sys::become_child_subreaper().context("PR_SET_CHILD_SUBREAPER")?;
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let state_root = fresh_state_root(&args)?;
    // Absolute, as the state directory: the agent changes its cwd below.
    let socket = std::path::absolute(&args.socket).context("the socket path")?;
    prepare_socket(&socket)?;
    // Relative paths are resolved in the state directory from here on: a notify socket bound by a
    // relative name in the wrong directory (the cwd race) lands in it and goes with it.
    std::env::set_current_dir(&state_root)
        .with_context(|| format!("entering the state directory {}", state_root.display()))?;
    let container = start_container(&args, &state_root)?;
    let builder = container.as_ref().map_or(Builder::Wedge, |c| {
        Builder::Libcontainer(c.reference().clone())
    });
    // The zygotes are forked while this process is still single-threaded.
    let zygotes = match args.strategy {
        Strategy::Zygote => (0..args.zygotes)
            .map(|_| Zygote::start())
            .collect::<Result<Vec<_>>>()?,
        _ => Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers as usize)
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let service = AgentService::new(
        Spawner::new(args.strategy, zygotes),
        workers,
        state_root.clone(),
        builder,
    );
    let served = runtime.block_on(serve_until_signalled(
        &socket,
        service,
        args.strategy,
        workers,
    ));
    // The container goes first: a libcontainer build stuck on one of its processes (which no exec
    // timeout can cancel: the library reports no pid) fails once they are killed, and returns.
    if let Some(container) = container {
        container.destroy();
    }
    runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
    // tokio does not say whether the timeout cut anything short; a build still running in this
    // process (inline on a worker, or on the blocking pool) is what it would have waited for.
    let running = spawn::builds_in_process();
    if running > 0 {
        eprintln!("{FORCED_STOP} ({running} tasks still running)");
    }
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_dir_all(&state_root);
    served
}

/// Binds and listens on `socket` so that the path appears only once it accepts connections.
///
/// `bind` creates the path and `listen` comes after it: a client that waits for the path (the
/// harness's scenarios do, and any script would) and connects in between is refused. Chaos
/// scheduling found exactly that (`reports/determinism.md`). So the socket is bound and listened
/// on under a temporary name beside it, then renamed into place, which is atomic. An existing
/// path is refused, as `bind` refused it.
fn bind_ready(socket: &Path) -> Result<tokio::net::UnixListener> {
    if socket.symlink_metadata().is_ok() {
        bail!("binding {}: the path exists already", socket.display());
    }
    let mut name = socket.as_os_str().to_owned();
    name.push(format!(".{}.binding", std::process::id()));
    let temporary = std::path::PathBuf::from(name);
    let _ = std::fs::remove_file(&temporary);
    let listener = tokio::net::UnixListener::bind(&temporary)
        .with_context(|| format!("binding {}", temporary.display()))?;
    if let Err(e) = std::fs::rename(&temporary, socket) {
        let _ = std::fs::remove_file(&temporary);
        return Err(e).with_context(|| format!("binding {}", socket.display()));
    }
    Ok(listener)
}

async fn serve_until_signalled(
    socket: &Path,
    service: AgentService,
    strategy: Strategy,
    workers: u32,
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let listener = bind_ready(socket)?;
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let stopping = Arc::new(tokio::sync::Notify::new());
    let on_signal = {
        let (service, stopping) = (service.clone(), Arc::clone(&stopping));
        async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::info!("stopping: killing every command");
            service.kill_all();
            stopping.notify_one();
        }
    };
    let server = tonic::transport::Server::builder()
        .add_service(
            AgentServer::new(service)
                .max_decoding_message_size(8 << 20)
                .max_encoding_message_size(8 << 20),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            on_signal,
        );
    tokio::spawn(super::reaper::run());
    tracing::info!(socket = %socket.display(), %strategy, workers, "serving");
    tokio::select! {
        served = server => served.context("serving")?,
        // Streams of commands that do not die promptly must not hold the agent up forever.
        _ = async { stopping.notified().await; tokio::time::sleep(Duration::from_secs(2)).await } => {
            tracing::warn!("stopping without waiting for the remaining streams");
        }
    }
    Ok(())
}

fn health(args: HealthArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let mut client = client::connect(&args.socket)
            .await
            .with_context(|| format!("connecting to {}", args.socket.display()))?;
        let ask = client.health(super::proto::HealthRequest {});
        let answer = match args.timeout {
            Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), ask).await {
                Ok(answer) => answer,
                Err(_) => bail!("no answer to Health within {ms} ms"),
            },
            None => ask.await,
        };
        let health = answer.context("Health failed")?.into_inner();
        println!(
            "healthy: strategy={} workers={} running={}",
            health.strategy, health.workers, health.running
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// How long an idle blocking-pool thread waits for work before it exits (tokio's default is
/// 10 s). An idle pool thread sits in a *timed* futex wait, and a timed wait is a wake source: a
/// watchdog that cannot see what the thread will do when it wakes must count it as progress to
/// come. With the default, a frozen agent (every worker stuck) still looked alive for 10 s after
/// the reaper's last scan, and `wedge` rightly waited that out before calling the hang
/// (reports/bench.md). The agent's blocking work (builds, reaper scans, discards) comes in
/// bursts well inside this bound, so a short keep-alive costs at most a thread start per burst.
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_millis(200);

fn exec(args: ExecArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(exec_copies(args))
}

async fn exec_copies(args: ExecArgs) -> Result<ExitCode> {
    let client = client::connect(&args.socket)
        .await
        .with_context(|| format!("connecting to {}", args.socket.display()))?;
    let (program, rest) = args.command.split_first().context("no command given")?;
    let request = ExecRequest {
        program: program.clone(),
        args: rest.to_vec(),
        env: args.env.iter().cloned().collect(),
        cwd: args.cwd.clone().unwrap_or_default(),
        timeout_ms: args.timeout.unwrap_or(0),
        // The client closes it at the start: `exec` sends no stdin.
        stdin_closed: true,
    };
    let n = args.concurrency as usize;
    let started = Instant::now();
    let results: Vec<Result<Outcome, tonic::Status>> = if n == 1 {
        // One copy: stream its output live.
        let live = client::run_with(&client, request, Vec::new(), |stream, data| {
            let _ = match stream {
                OutputStream::Stderr => std::io::stderr().write_all(data),
                _ => std::io::stdout().write_all(data),
            };
        })
        .await;
        vec![live]
    } else {
        let copies: Vec<_> = (0..n)
            .map(|_| {
                let (client, request) = (client.clone(), request.clone());
                tokio::spawn(async move { client::run(&client, request, Vec::new()).await })
            })
            .collect();
        let mut results = Vec::with_capacity(n);
        for copy in copies {
            results.push(
                copy.await
                    .unwrap_or_else(|e| Err(tonic::Status::internal(e.to_string()))),
            );
        }
        results
    };
    let elapsed = started.elapsed();
    let mut ok = 0;
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for (i, result) in results.iter().enumerate() {
        let line = match result {
            Ok(outcome) => {
                if n > 1 {
                    stdout.write_all(&outcome.stdout)?;
                    stderr.write_all(&outcome.stderr)?;
                }
                ok += usize::from(outcome.success());
                describe(outcome)
            }
            Err(status) => format!("failed: {:?}: {}", status.code(), status.message()),
        };
        writeln!(stderr, "wedge-agent: exec {}/{n}: {line}", i + 1)?;
    }
    let secs = elapsed.as_secs_f64();
    writeln!(
        stderr,
        "wedge-agent: {ok}/{n} completed with status 0 in {:.3} s ({:.1} execs/s)",
        secs,
        n as f64 / secs.max(1e-9)
    )?;
    Ok(if ok == n {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn describe(outcome: &Outcome) -> String {
    let status = &outcome.status;
    let how = match (status.exit_code, status.signal) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "did not run".to_string(),
    };
    let mut line = format!("id {} {how} in {} ms", status.id, status.duration_ms);
    if status.timed_out {
        line.push_str(" (timed out)");
    }
    if !status.error.is_empty() {
        line.push_str(&format!(" ({})", status.error));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_path_appears_listening_and_an_existing_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("wedge-bind-ready-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("agent.sock");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        runtime.block_on(async {
            let _listener = bind_ready(&socket).expect("bound");
            // Listening already: a connection is accepted into the backlog at once.
            std::os::unix::net::UnixStream::connect(&socket).expect("connects");
            let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
            assert_eq!(left.len(), 1, "only the socket itself: {left:?}");
            let e = bind_ready(&socket).expect_err("the path exists");
            assert!(e.to_string().contains("exists already"), "{e}");
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
