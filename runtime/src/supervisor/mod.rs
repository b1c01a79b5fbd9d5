//! `wedge-run`: a seccomp user-notification exec supervisor, everything the binary is made of.
//!
//! wedge-run starts the command in a sandbox whose seccomp filter traps every `execve`/`execveat`,
//! takes the filter's listener, and answers each trapped exec from its policy, on a supervisor
//! thread, until the command's sandbox exits; then it stops the supervisor. How it stops it is the
//! point: `--variant pre-fix` blocks in `SECCOMP_IOCTL_NOTIF_RECV` and closes the listener to stop
//! (which wakes nobody: the close-doesn't-wake deadlock), the fixed variant waits in `ppoll` on the
//! listener and an eventfd and always returns within its bounded drain.
//!
//! One job per file, dependencies pointing down the list:
//! - [`session`]: one run, start to end (sandbox, hand-off, supervisor thread, wait, shut down);
//! - [`signals`]: what the session does with SIGINT/SIGTERM/SIGHUP/SIGWINCH;
//! - [`sandbox`] (+ the shim, its child half): bubblewrap or no sandbox, the filter installed in the
//!   child and the listener handed back over a socketpair;
//! - [`filter`]: the seccomp filter itself (libseccomp);
//! - [`exec_decision`]: reading a trapped exec's arguments and answering it from the policy;
//! - [`effective`]: what a trapped exec really runs (symlinks, `#!` lines, loaders, `env`), the
//!   command the policy is asked about;
//! - [`policy`]: which programs may run (a pure function of the path and argv);
//! - [`notify`]: the notification ioctls and the `ppoll` wait, implementing the loops' listener
//!   trait ([`NotifyListener`](supervise::NotifyListener)), and the eventfd wake;
//! - [`supervise`](mod@supervise) and [`shutdown`] (from `wedge-core`, so loom checks them): the
//!   receive loops and the shutdown coordinator, re-exported.

pub mod effective;
pub mod exec_decision;
pub mod filter;
pub mod notify;
pub mod policy;
pub mod sandbox;
pub mod session;
pub mod signals;

pub use wedge_core::shutdown;
pub use wedge_core::supervise;
pub use wedge_core::supervise::{supervise, supervise_pre_fix};
