//! wedge-agent's named failpoints: the one place they are listed and documented.
//!
//! They exist so the harness can force interleavings and stalls of the spawn path deterministically.
//! They are compiled in only with the cargo feature `failpoints`; without it [`hit`] and [`fires`] are
//! empty inline functions and setting [`ENV`] makes `wedge-agent serve` refuse to start.
//!
//! # Configuration
//!
//! `WEDGE_AGENT_FAILPOINTS="NAME=ACTIONS;NAME=ACTIONS"`, read once by `wedge-agent serve` before it forks
//! the zygote or starts the tokio runtime. `ACTIONS` is either
//! - a [`fail` crate](https://docs.rs/fail) action list, e.g. `return`, `1*return`, `sleep(200)`, `pause`,
//!   `2*off->return` (`N*` limits how many times an action fires), or
//! - `rendezvous(N)` or `rendezvous(N,MS)`: the first `N` threads that reach the point wait for each other
//!   (each at most `MS` milliseconds, default 2000) and then go on together; later arrivals pass. This is
//!   how a test forces two builds to be inside the same window at once without sleeping. When the code
//!   serialises the window (a lock, the single-threaded zygote), the first arrival waits its `MS` alone and
//!   goes on, so a rendezvous never deadlocks.
//! - `hold(OTHER)` or `hold(OTHER,MS)`: the first thread that reaches the point waits until another thread
//!   has passed the failpoint `OTHER` (at most `MS` milliseconds, default 2000); later arrivals pass. This
//!   orders two builds one way: one is held inside a window until the other has left its own.
//!
//! Failpoints are evaluated in the process that performs the build (the agent, or the zygote for
//! `--strategy zygote`), before `clone3`, so `N*` counts are exact. The one exception is
//! [`CWD_BEFORE_CONNECT`], evaluated in each init process on its own copy of the configuration.
//!
//! # The failpoints
//!
//! | name | where | meaning of `return` / useful actions |
//! |---|---|---|
//! | `agent::cwd::before-enter` | `libcontainer` builder only (`build/library_hooks.rs`): the cwd is saved, the `chdir` into the container's state directory comes next | `rendezvous(2)` makes two builds save the same cwd before either enters |
//! | `agent::cwd::restored` | `libcontainer` builder only: right after the builder's `chdir` back | the `OTHER` of a `hold` |
//! | `agent::cwd::before-bind` | builder, after `chdir(state dir)`, before `bind("notify.sock")` (`libcontainer`: before its bind or connect by relative name) | `rendezvous(2)` forces two builds into the cwd window at once; `sleep(MS)` widens it |
//! | `agent::cwd::after-bind` | builder, after the `bind` (whether it failed or not), before `chdir` back | with `before-bind=rendezvous(2)`, `rendezvous(2)` here too makes both builds bind before either changes back: both binds land in the directory entered last (one `EADDRINUSE`, the other possibly in the wrong directory) |
//! | `agent::cwd::before-connect` | init process, after its `chdir(state dir)`, before `connect("notify.sock")` | `sleep(MS)`, `pause` |
//! | `agent::build::before-clone3` | builder, just before the `clone3` of the intermediate | `sleep(MS)`, `pause`, `rendezvous(N)` |
//! | `agent::build::stall` | decided in the builder, acted on by the init process | `return`: the init process connects to the notify socket and then stalls forever in `pause()` before reading "start" (a stuck child); the build blocks until the exec's timeout kills it |
//! | `agent::build::lose-init` | decided in the builder, acted on by the intermediate | `return`: the intermediate exits right after cloning the init process without reporting its pid, as if it died there; the build fails and the orphaned init, once it exits, is reaped by the agent's reaper |
//! | `agent::build::hold-log-lock` | the agent, at the spawn call site | `return`: a thread of the agent takes the stderr lock (which the `tracing` log writer uses) and holds it until the build's `clone3` has happened, so the intermediate, which logs, inherits a locked stderr and blocks forever (the fork-while-locked hazard). With `--strategy zygote` the lock is held in the agent, not in the zygote that forks, so the build is unaffected |

use anyhow::Result;

/// The environment variable `wedge-agent serve` reads the failpoint configuration from.
pub const ENV: &str = "WEDGE_AGENT_FAILPOINTS";

/// After `chdir` into the state directory, before binding the notify socket by its relative name.
pub const CWD_BEFORE_BIND: &str = "agent::cwd::before-bind";
/// After binding the notify socket (whether it worked or not), before changing back.
pub const CWD_AFTER_BIND: &str = "agent::cwd::after-bind";
/// `libcontainer` builder: the cwd is saved, the `chdir` into the container's directory is next.
pub const CWD_BEFORE_ENTER: &str = "agent::cwd::before-enter";
/// `libcontainer` builder: right after the builder's `chdir` back.
pub const CWD_RESTORED: &str = "agent::cwd::restored";
/// In the init process, after `chdir` into the state directory, before connecting to the notify socket.
pub const CWD_BEFORE_CONNECT: &str = "agent::cwd::before-connect";
/// Just before the `clone3` of the intermediate process.
pub const BEFORE_CLONE3: &str = "agent::build::before-clone3";
/// `return` makes the init process of this build stall forever (a stuck child).
pub const STALL_BUILD: &str = "agent::build::stall";
/// `return` makes the intermediate exit without reporting the init process it cloned.
pub const LOSE_INIT: &str = "agent::build::lose-init";
/// `return` makes a thread of the agent hold the stderr/log lock across this build's `clone3`.
pub const HOLD_LOG_LOCK: &str = "agent::build::hold-log-lock";

/// Every failpoint name; configuring any other name is an error.
pub const ALL: [&str; 9] = [
    CWD_BEFORE_BIND,
    CWD_AFTER_BIND,
    CWD_BEFORE_ENTER,
    CWD_RESTORED,
    CWD_BEFORE_CONNECT,
    BEFORE_CLONE3,
    STALL_BUILD,
    LOSE_INIT,
    HOLD_LOG_LOCK,
];

/// Reads [`ENV`] and configures the failpoints. Errors on unknown names, bad actions, or when the
/// variable is set in a build without the `failpoints` feature.
pub fn configure_from_env() -> Result<()> {
    let spec = match std::env::var(ENV) {
        Ok(spec) if !spec.trim().is_empty() => spec,
        _ => return Ok(()),
    };
    configure(&spec)
}

#[cfg(not(feature = "failpoints"))]
fn configure(_spec: &str) -> Result<()> {
    anyhow::bail!(
        "{ENV} is set, but this wedge-agent was built without the `failpoints` cargo feature"
    )
}

#[cfg(feature = "failpoints")]
fn configure(spec: &str) -> Result<()> {
    enabled::configure(spec)
}

/// Runs the failpoint `name` (sleep, pause, rendezvous, ...). A `return` action does nothing here.
#[inline]
pub fn hit(name: &'static str) {
    #[cfg(feature = "failpoints")]
    enabled::hit(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Runs the failpoint `name` and says whether its action was `return`.
#[inline]
pub fn fires(name: &'static str) -> bool {
    #[cfg(feature = "failpoints")]
    return enabled::fires(name);
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        false
    }
}

#[cfg(feature = "failpoints")]
mod enabled {
    use super::{ALL, ENV};
    use crate::sync::{Condvar, Mutex};
    use anyhow::{Context, Result, bail};
    use std::time::{Duration, Instant};

    struct Rendezvous {
        name: &'static str,
        parties: usize,
        wait: Duration,
        arrived: usize,
    }

    static RENDEZVOUS: Mutex<Vec<Rendezvous>> = Mutex::new(Vec::new());
    static ARRIVALS: Condvar = Condvar::new();

    /// A `hold(OTHER,MS)`: its first arrival waits for a pass of `other`.
    struct Hold {
        name: &'static str,
        other: &'static str,
        wait: Duration,
        used: bool,
    }

    /// The holds, and how many times each failpoint was passed (what a hold waits on).
    type Holds = (Vec<Hold>, Vec<(&'static str, u64)>);
    static HOLDS: Mutex<Holds> = Mutex::new((Vec::new(), Vec::new()));
    static PASSES: Condvar = Condvar::new();

    fn known(name: &str) -> Result<&'static str> {
        ALL.iter().copied().find(|k| *k == name).with_context(|| {
            format!(
                "{ENV}: unknown failpoint `{name}`; known: {}",
                ALL.join(", ")
            )
        })
    }

    /// `hold(OTHER)` or `hold(OTHER,MS)`.
    fn configure_hold(name: &'static str, actions: &str, args: &str) -> Result<()> {
        let args = args
            .strip_suffix(')')
            .with_context(|| format!("{ENV}: `{actions}` lacks its closing parenthesis"))?;
        let mut parts = args.split(',').map(str::trim);
        let other = known(parts.next().unwrap_or_default())?;
        let wait_ms: u64 = match parts.next() {
            Some(ms) => ms
                .parse()
                .with_context(|| format!("{ENV}: bad wait in `{actions}`"))?,
            None => 2000,
        };
        if other == name || parts.next().is_some() {
            bail!(
                "{ENV}: `{actions}` must be hold(OTHER) or hold(OTHER,MS), OTHER another failpoint"
            );
        }
        let mut holds = HOLDS.lock();
        holds.0.retain(|h| h.name != name);
        holds.0.push(Hold {
            name,
            other,
            wait: Duration::from_millis(wait_ms),
            used: false,
        });
        Ok(())
    }

    fn passes(table: &[(&'static str, u64)], name: &str) -> u64 {
        table
            .iter()
            .find(|(k, _)| *k == name)
            .map_or(0, |(_, c)| *c)
    }

    /// Counts a pass of `name`; the first arrival at a hold on `name` first waits for another pass
    /// of its `other`.
    fn hold(name: &'static str) {
        let mut holds = HOLDS.lock();
        let waiting = holds
            .0
            .iter_mut()
            .find(|h| h.name == name && !h.used)
            .map(|h| {
                h.used = true;
                (h.other, h.wait)
            });
        if let Some((other, wait)) = waiting {
            let seen = passes(&holds.1, other);
            let deadline = Instant::now() + wait;
            while passes(&holds.1, other) == seen {
                let now = Instant::now();
                if now >= deadline {
                    tracing::warn!(failpoint = name, other, "hold: gave up waiting");
                    break;
                }
                holds = PASSES.wait_timeout(holds, deadline - now).0;
            }
        }
        match holds.1.iter_mut().find(|(k, _)| *k == name) {
            Some((_, count)) => *count += 1,
            None => holds.1.push((name, 1)),
        }
        PASSES.notify_all();
    }

    pub(super) fn configure(spec: &str) -> Result<()> {
        for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, actions) = entry
                .split_once('=')
                .with_context(|| format!("{ENV}: `{entry}` is not NAME=ACTIONS"))?;
            let (name, actions) = (name.trim(), actions.trim());
            let name = known(name)?;
            if let Some(args) = actions.strip_prefix("hold(") {
                configure_hold(name, actions, args)?;
            } else if let Some(args) = actions.strip_prefix("rendezvous(") {
                let args = args
                    .strip_suffix(')')
                    .with_context(|| format!("{ENV}: `{actions}` lacks its closing parenthesis"))?;
                let mut parts = args.split(',').map(str::trim);
                let parties: usize = parts
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .with_context(|| format!("{ENV}: bad party count in `{actions}`"))?;
                let wait_ms: u64 = match parts.next() {
                    Some(ms) => ms
                        .parse()
                        .with_context(|| format!("{ENV}: bad wait in `{actions}`"))?,
                    None => 2000,
                };
                if parties < 2 || parts.next().is_some() {
                    bail!(
                        "{ENV}: `{actions}` must be rendezvous(N) or rendezvous(N,MS) with N >= 2"
                    );
                }
                let mut table = RENDEZVOUS.lock();
                table.retain(|r| r.name != name);
                table.push(Rendezvous {
                    name,
                    parties,
                    wait: Duration::from_millis(wait_ms),
                    arrived: 0,
                });
            } else {
                fail::cfg(name, actions)
                    .map_err(|e| anyhow::anyhow!("{ENV}: failpoint `{name}`: {e}"))?;
            }
        }
        Ok(())
    }

    fn rendezvous(name: &'static str) {
        let mut table = RENDEZVOUS.lock();
        let Some(index) = table.iter().position(|r| r.name == name) else {
            return;
        };
        let (parties, wait) = (table[index].parties, table[index].wait);
        if table[index].arrived >= parties {
            return;
        }
        table[index].arrived += 1;
        ARRIVALS.notify_all();
        let deadline = Instant::now() + wait;
        while table[index].arrived < parties {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    failpoint = name,
                    "rendezvous: gave up waiting for the other parties"
                );
                return;
            }
            table = ARRIVALS.wait_timeout(table, deadline - now).0;
        }
    }

    pub(super) fn hit(name: &'static str) {
        rendezvous(name);
        hold(name);
        let _ = fail::eval(name, |_| ());
    }

    pub(super) fn fires(name: &'static str) -> bool {
        rendezvous(name);
        hold(name);
        fail::eval(name, |_| ()).is_some()
    }
}
