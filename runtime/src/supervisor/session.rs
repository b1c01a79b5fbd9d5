//! One `wedge-run` session, start to end: start the sandbox, take the listener, supervise,
//! wait, shut down.
//!
//! Both variants share all of it except how the supervisor waits and how it is stopped:
//! - `fixed`: the supervisor waits in `ppoll([listener, eventfd])`; shutdown is
//!   [`ShutdownCoordinator::begin`] and a bounded drain; the listener is closed after the
//!   supervisor thread has returned.
//! - `pre-fix`: the supervisor blocks in `SECCOMP_IOCTL_NOTIF_RECV`; shutdown is
//!   `close(listener)` and an unbounded join, which never returns while a filter user is alive
//!   (and, before Linux 6.11, even when none is).

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, anyhow};

use super::effective::HeadCache;
use super::exec_decision::{self, ReadLimits};
use super::notify::{EventWake, Listener};
use super::policy::Policy;
use super::sandbox::{
    self, Channel, EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, EXIT_RUNNER_ERROR, SandboxKind,
};
use super::shutdown::{self, ShutdownCoordinator, ShutdownOutcome, SupervisorExit};
use super::signals::{self, Targets};
use super::supervise;
use crate::mutation::{Mutation, active};
use crate::sync::{Arc, Mutex};
use crate::sys::PidFd;

/// The thread name of the supervisor, as `/proc/PID/task/TID/comm` shows it.
pub const SUPERVISOR_THREAD: &str = "supervisor";

/// The start of the line the fixed session prints on stderr when its drain expires: a stable
/// marker, so a scenario can fail a trial that only finished because the drain gave up.
pub const DRAIN_EXPIRED: &str = "wedge-run: DRAIN EXPIRED";

/// The default bounded drain of the fixed session.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(2);

/// Which shutdown path the session uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// ppoll on the listener and an eventfd, idempotent begin, bounded drain.
    Fixed,
    /// Block in NOTIF_RECV; shut down with close(listener) and an unbounded join.
    #[value(name = "pre-fix")]
    PreFix,
}

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub policy: Policy,
    pub sandbox: SandboxKind,
    pub variant: Variant,
    pub drain: Duration,
    pub command: Vec<OsString>,
}

/// Runs the command under supervision; returns the exit code for `wedge-run`.
pub fn run(config: RunConfig) -> i32 {
    match run_supervised(config) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("wedge-run: {err:#}");
            EXIT_RUNNER_ERROR
        }
    }
}

/// The running supervisor, by variant.
enum Supervision {
    Fixed {
        coordinator: Arc<ShutdownCoordinator<EventWake>>,
        thread: JoinHandle<OwnedFd>,
    },
    PreFix {
        listener: OwnedFd,
        thread: JoinHandle<SupervisorExit>,
    },
}

fn run_supervised(config: RunConfig) -> anyhow::Result<i32> {
    let RunConfig {
        policy,
        sandbox,
        variant,
        drain,
        command,
    } = config;
    let deny_tracing = policy.deny_tracing();
    let policy = Arc::new(policy);
    let wedge_run = std::env::current_exe().context("locating wedge-run itself")?;
    let coordinator = match variant {
        Variant::Fixed => Some(Arc::new(ShutdownCoordinator::new(
            EventWake::new().context("creating the wake eventfd")?,
        ))),
        Variant::PreFix => None,
    };

    let targets = Arc::new(Mutex::new(Targets::default()));
    let on_escalation = coordinator.clone();
    signals::spawn_forwarder(targets.clone(), move || {
        // The pre-fix session had no way to tell its supervisor to stop: it only closed the
        // listener once the sandbox had exited.
        if let Some(coordinator) = &on_escalation {
            coordinator.begin();
        }
    })
    .context("installing signal handlers")?;

    let channel = Channel::new().context("creating the hand-off socketpair")?;
    // Spawned from the main thread, which lives as long as the child (PDEATHSIG is per thread).
    let shim_fd = channel.shim.as_raw_fd();
    let mut shim = sandbox::shim_command(sandbox, &wedge_run, shim_fd, deny_tracing, &command);
    let mut child = spawn_sandbox(&mut shim).with_context(|| match sandbox {
        SandboxKind::Bwrap => "starting bubblewrap (is the bubblewrap package installed?)",
        SandboxKind::None => "starting the sandboxed command",
    })?;
    drop(channel.shim);
    targets.lock().sandbox =
        Some(PidFd::open(child.id() as i32).context("pidfd_open on the sandbox")?);

    let handoff = match sandbox::receive_listener(&channel.runner) {
        Ok(Some(handoff)) => handoff,
        Ok(None) => {
            // The shim ended without a listener: it could not start the command (and said
            // why), or the sandbox itself failed.
            let status = child.wait().context("waiting for the sandbox")?;
            return match exit_code(status) {
                code @ (EXIT_CANNOT_EXECUTE | EXIT_NOT_FOUND | EXIT_RUNNER_ERROR) => Ok(code),
                code => Err(anyhow!(
                    "the sandbox exited with status {code} before the command started"
                )),
            };
        }
        Err(err) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(anyhow!(
                "receiving the seccomp listener from the sandbox: {err}"
            ));
        }
    };
    targets.lock().command = Some(PidFd::open(handoff.pid).context("pidfd_open on the command")?);

    let listener_raw = handoff.listener.as_raw_fd();
    let supervision = start_supervisor(handoff.listener, coordinator, policy)?;
    sandbox::release_shim(&channel.runner).context("releasing the shim")?;
    drop(channel.runner);

    let status = child.wait().context("waiting for the sandbox")?;
    tracing::debug!(?status, "sandbox exited; shutting down the supervisor");
    close_listener_early(listener_raw, &supervision);
    shut_down(supervision, drain);
    Ok(exit_code(status))
}

/// Starts the sandbox from the calling thread (the main thread: see [`sandbox::shim_command`]).
/// The `pdeathsig-thread` mutation spawns it from a thread that ends at once instead, so the
/// kernel's PDEATHSIG kills the sandbox as soon as that thread is gone.
fn spawn_sandbox(shim: &mut std::process::Command) -> std::io::Result<std::process::Child> {
    if !active(Mutation::PdeathsigThread) {
        return shim.spawn();
    }
    std::thread::scope(|s| s.spawn(|| shim.spawn()).join())
        .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread panicked")))
}

/// The `listener-handback` mutation: close the listener under the fixed supervisor before
/// shutdown and its join, as the pre-fix session does, instead of after the thread handed it back.
fn close_listener_early(listener: std::os::fd::RawFd, supervision: &Supervision) {
    if active(Mutation::ListenerHandback) && matches!(supervision, Supervision::Fixed { .. }) {
        // SAFETY: deliberately wrong (the supervisor thread still owns `listener`): this is the
        // reverted fix, compiled only into the mutation build.
        unsafe { libc::close(listener) };
    }
}

fn start_supervisor(
    listener: OwnedFd,
    coordinator: Option<Arc<ShutdownCoordinator<EventWake>>>,
    policy: Arc<Policy>,
) -> anyhow::Result<Supervision> {
    let builder = std::thread::Builder::new().name(SUPERVISOR_THREAD.into());
    let limits = ReadLimits::default();
    let supervision = match coordinator {
        Some(coordinator) => {
            let shared = coordinator.clone();
            let thread = builder.spawn(move || {
                let listener_fd = listener;
                let listener = Listener::new(listener_fd.as_raw_fd(), Some(shared.wake_signal()));
                let heads = HeadCache::default();
                let exit = supervise::supervise(&listener, &shared, |n| {
                    exec_decision::handle(&listener, &n, &policy, &limits, &heads);
                });
                shared.finish(exit);
                // Handed back so that the session closes it after this thread has returned.
                listener_fd
            })?;
            Supervision::Fixed {
                coordinator,
                thread,
            }
        }
        None => {
            let raw = listener.as_raw_fd();
            let thread = builder.spawn(move || {
                let listener = Listener::new(raw, None);
                let heads = HeadCache::default();
                supervise::supervise_pre_fix(&listener, |n| {
                    exec_decision::handle(&listener, &n, &policy, &limits, &heads);
                })
            })?;
            Supervision::PreFix { listener, thread }
        }
    };
    Ok(supervision)
}

/// Runs the shipped shutdown sequence (`wedge_core::shutdown`, the very functions the loom models
/// check) with the real thread and listener, and says what it could not do.
fn shut_down(supervision: Supervision, drain: Duration) {
    match supervision {
        Supervision::Fixed {
            coordinator,
            thread,
        } => match shutdown::shut_down_fixed(&coordinator, thread, drain) {
            ShutdownOutcome::Stopped(exit) => tracing::debug!(?exit, "supervisor finished"),
            ShutdownOutcome::Panicked(exit) => {
                tracing::debug!(?exit, "supervisor finished");
                eprintln!("wedge-run: the supervisor thread panicked");
            }
            ShutdownOutcome::Expired => {
                eprintln!(
                    "{DRAIN_EXPIRED}: the supervisor did not stop within the {} ms drain; \
                     exiting without it (its listener stays open until the process ends)",
                    drain.as_millis()
                );
                tracing::error!(
                    drain_ms = drain.as_millis() as u64,
                    "supervisor drain expired"
                );
            }
        },
        Supervision::PreFix { listener, thread } => {
            // The old shutdown: close the listener and wait for the supervisor to notice. A
            // close never wakes a thread blocked in NOTIF_RECV, so this join can last forever.
            let _ = shutdown::shut_down_pre_fix(listener, thread);
        }
    }
}

/// The exit code a shell would report for `status`.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => EXIT_RUNNER_ERROR,
    }
}
