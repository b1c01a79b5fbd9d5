//! Watching a trial's process tree: snapshots from `/proc`, quiescence, and the per-process,
//! per-thread diagnosis of a hang.
//!
//! # What counts as quiescent
//!
//! The guarantee: wedge calls a tree quiescent (a hang, once it lasts the window) only when no
//! thread of it can run again before the deadline by anything the tree itself set up: every
//! thread is asleep with no timeout that fires before the deadline and no timer of its own that
//! can wake it before then, no thread uses CPU or is woken (its context-switch count is still),
//! and no process or thread comes or goes. A progressing program is never called hung by the
//! window; when wedge cannot see whether a wake source is armed it assumes it is, and the tree is
//! judged at the deadline instead, which is still a hang verdict, only a later one.
//!
//! Per thread (the rule itself is in [`wake_rule`], pure; the kernel reading in `proc::wake_sources`):
//! - **state**: running ⇒ not quiescent; stopped, traced, zombie ⇒ quiescent. Asleep (`S`) ⇒
//!   quiescent only inside a syscall and as below. **Uninterruptible (`D`) is never quiescent**:
//!   the kernel shows no difference between slow I/O (a long `fsync`, a page fault on a loaded
//!   disk) and a stuck kernel-side wait, so a `D` wait ends only at the deadline, where it is a
//!   hang whose diagnosis says `uninterruptible` with its wchan and kernel stack.
//! - **its own timeout** (`proc::syscall::wait_bound`): a timed wait firing before the deadline
//!   is not quiescent; a timeout wedge cannot read counts as firing now.
//! - **timerfds it waits on**: a thread in `read`/`readv`/`pread` on an fd, in `epoll_wait`/
//!   `epoll_pwait`/`epoll_pwait2` on an epoll set (followed through nested sets), or in
//!   `poll`/`ppoll`/`select`/`pselect6` on a set read from its memory (at most 4096 fds), is not
//!   quiescent while a timerfd among those fds is armed to fire before the deadline (its fdinfo
//!   `it_value`) or has expired unread. A set wedge cannot read counts as waking any moment. A
//!   timerfd that nobody waits on wakes nobody: a futex deadlock beside a ticking timer is still
//!   judged (the ticking thread itself is not quiescent while it keeps waking).
//! - **io_uring**: a thread in `io_uring_enter(GETEVENTS)` has its own timeout only with
//!   `IORING_ENTER_EXT_ARG` (the argument's `ts`, read from its memory; absolute ones as
//!   boottime, never later than the truth). Completions wake it, and a request in flight may
//!   complete at any moment and do anything on completion (write a pipe, wake a futex), so
//!   while **any ring of the tree** may have one, no thread of the tree is quiescent. The
//!   kernel counts no requests in flight; a ring's fdinfo (6.18: `SqHead`, `SqTail`,
//!   `CachedSqHead`, `CqHead`, `CqTail`, `CachedCqTail`, `PollList`, `CqOverflowList`) shows
//!   it idle only when every SQE written was consumed, every one consumed has posted its CQE,
//!   every CQE was reaped, and no poll is armed nor CQE overflowed (`proc::wake_sources::Ring::idle`);
//!   anything else, or an fdinfo wedge cannot parse, counts as in flight. A request that posts
//!   no CQE or several (`IOSQE_CQE_SKIP_SUCCESS`, multishot) keeps its ring "in flight" for
//!   good: such a tree is judged at the deadline. A wait on an idle ring is a hang:
//!   `blocked in io_uring_enter (io_uring fd 3 has nothing in flight)`.
//! - **signals its process's timers can send** (to every interruptibly sleeping thread of that
//!   process, since a caught signal interrupts any such wait and a default-fatal one ends the
//!   process — neither is a hang):
//!   - `alarm()` / `ITIMER_REAL` has no per-process view (`/proc/PID/stat` field 21 is always 0).
//!     `/proc/timer_list` (root) lists every armed one in the system as `it_real_fn`, without its
//!     owner: if none armed anywhere fires before the deadline, the process's (if any) does not
//!     either; otherwise it may get SIGALRM as late as the latest of those, and is not quiescent
//!     while one is there, unless it ignores SIGALRM. Without `/proc/timer_list`: a process that catches SIGALRM is not quiescent before
//!     the deadline (too broad for a process that catches SIGALRM and really hangs, which is then
//!     judged at the deadline: sound, only later).
//!   - `ITIMER_VIRTUAL` / `ITIMER_PROF` (SIGVTALRM, SIGPROF) and POSIX timers on CPU-time clocks
//!     count the process's CPU time, which does not advance while every thread sleeps: they
//!     cannot wake a quiescent tree, so they are not wake sources.
//!   - POSIX timers are listed by `/proc/PID/timers` (id, signal, notify, clock) but an armed and
//!     a disarmed one look the same there; `/proc/timer_list` shows armed ones as
//!     `posix_timer_fn`. A timer whose signal the process catches, waits for or dies of is a wake
//!     source while some POSIX timer of the system fires before the deadline (it may be this
//!     one); none does ⇒ this one is disarmed or fires too late. Alarm clocks, an unreadable `/proc/timer_list`, or no `/proc/PID/timers` (with a
//!     caught signal) ⇒ not quiescent before the deadline.
//!
//! # Whose quiescence
//!
//! By default every process of the trial decides. A scenario may narrow that to the subject's
//! tree (`quiescence_of = "subject"`, [`Monitor::observe_where`]): the other processes are still
//! tracked and diagnosed, but neither what they do nor their timeouts count. That is for clients
//! that only wait on the subject with timeouts of their own (`wedge-agent exec --timeout`): they
//! would keep a frozen subject "active" until they expire, while nothing they can do then wakes it.
//!
//! # System timers that were never the tree's
//!
//! `/proc/timer_list` does not say whose an armed `ITIMER_REAL` or POSIX timer is, so any one in
//! the system may be a tree process's. But a tree that has not changed since an instant (every
//! thread asleep by its own rule, no CPU time, no wake-up, nobody came or went: *still*) cannot
//! have armed a timer since then, and a timer of its own that fired would have changed it (killed
//! the process, or woken the handler's thread). So only the system timers already armed when the
//! stillness began, with the same expiry (timer_list's absolute one), can still be the tree's
//! ([`StillAlarms`]); a foreign periodic timer (another program's 1 s `setitimer`) stops counting
//! once a snapshot taken after it fired shows the tree unchanged. When nothing
//! else held the tree back, the window then runs from the start of the stillness: the timers
//! that held it were shown foreign by firing without effect.
//!
//! The diagnosis names the wake source: `sleeping in read (timerfd fd 3 fires in 700 ms)`,
//! `blocked in read (timerfd fd 3 is disarmed)`, or the alarm or POSIX timer that may fire.
//!
//! # Files
//!
//! [`snapshot`] reads the tree from `/proc`; [`quiescence`] is the state machine fed with
//! snapshots, helped by [`wake_rule`] (what can wake a thread) and [`still`] (the system timers a
//! still tree may own); `diagnose` builds the [`Diagnosis`] of a hang with [`crate::model::waitfor`] (who
//! waits for whom) and [`awake`] (what kept it awake); [`crate::model::diagnosis`] holds the serialised
//! diagnosis types alone, so a record can carry one without this module.

pub mod awake;
mod diagnose;
pub mod quiescence;
pub mod snapshot;
pub mod still;
pub mod waitfor_edges;
pub mod wake_rule;

pub use crate::model::diagnosis::{Diagnosis, ProcessDiag, ThreadDiag, summarize};
pub use quiescence::Monitor;
pub use snapshot::{Snapshot, comm_matches};
pub use still::StillAlarms;
