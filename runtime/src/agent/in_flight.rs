//! The builds in progress, by the tick each started at.
//!
//! Guarantee: while a build's [`Guard`] lives, [`oldest`] is at most the boot-time clock tick
//! (`/proc/PID/stat`'s `starttime` unit) at which that build started. So a process cloned by any
//! build still in progress has a `starttime` of at least [`oldest`], and a process cloned from
//! the agent with an earlier `starttime` belongs to no build in progress: a build that ended
//! left it behind.
//!
//! Why: a build clones the whole agent, every exec's pipes included, and holds them until its
//! command execs. When another exec's command has exited and its output is still open,
//! [`super::kill::output_holders`] must tell such a build (spared: it lets go at its exec) from
//! an init a failed build stranded (killed: it never execs, and the exec would wait forever).
//! The guard counts every strategy's build, the zygote's too, from the service's side, for as
//! long as its exec waits for it: a build given up on (its exec timed out) may be stuck in the
//! library for good, and what it cloned is then a leftover like any other.
//!
//! A build ends before its command execs: libcontainer's tenant init reports ready, is told to
//! start, and only then execs, still holding (close-on-exec, not yet closed) every descriptor
//! the agent had at its clone. So from the build's end until its exec ends, the command itself
//! is registered too ([`command`]): while it still runs the agent's binary it has not exec'd,
//! and is spared. (Before this, 2 of 1380 trials in 4- and 8-vCPU TCG guests lost an exec
//! `killed by signal 9` 0.6 s and 1.6 s after it was accepted, with nothing sending a signal:
//! this window explains it, though the records, at the `warn` log level, cannot show the kill.)

use crate::sync::Mutex;

/// Start ticks of the builds in progress (a handful at a time; a list is enough).
static STARTS: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());
/// The next guard's token.
static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One build in progress, from [`enter`] until dropped.
#[derive(Debug)]
pub struct Guard {
    token: u64,
}

/// Records a build starting now.
pub fn enter() -> Guard {
    let token = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    STARTS.lock().push((token, boot_ticks_now()));
    Guard { token }
}

impl Drop for Guard {
    fn drop(&mut self) {
        STARTS.lock().retain(|&(t, _)| t != self.token);
    }
}

/// The tick the oldest build in progress started at; `None` when none is.
pub fn oldest() -> Option<u64> {
    STARTS.lock().iter().map(|&(_, start)| start).min()
}

/// The pids of commands whose build ended and whose exec has not (a handful at a time).
static COMMANDS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// One build's command, from [`command`] until dropped (once its exec ended and it was reaped).
#[derive(Debug)]
pub struct Command {
    pid: i32,
}

/// Records that `pid` is the command of an exec in progress.
pub fn command(pid: i32) -> Command {
    COMMANDS.lock().push(pid);
    Command { pid }
}

impl Drop for Command {
    fn drop(&mut self) {
        let mut pids = COMMANDS.lock();
        if let Some(i) = pids.iter().position(|&p| p == self.pid) {
            pids.swap_remove(i);
        }
    }
}

/// What a sweep for leftovers must leave alone as part of another exec still under way.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InProgress {
    /// The start tick of the oldest build in progress ([`oldest`]).
    pub oldest: Option<u64>,
    /// The commands of execs in progress ([`command`]).
    pub commands: Vec<i32>,
}

/// The builds and commands in progress now.
pub fn now() -> InProgress {
    InProgress {
        oldest: oldest(),
        commands: COMMANDS.lock().clone(),
    }
}

/// Now on the boot-time clock, in clock ticks rounded down: the kernel's `starttime` is the
/// same clock at the clone, rounded down the same way, so a later clone never has a smaller one.
pub fn boot_ticks_now() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    });
    now / (1_000_000_000 / ticks_per_second())
}

/// `sysconf(_SC_CLK_TCK)`, the unit of `/proc/PID/stat` times (100 on Linux).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the C library; it takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_build_in_progress_is_the_earliest_guard_alive() {
        // Other tests may hold guards of their own: look at this test's only.
        let alive = |g: &Guard| STARTS.lock().iter().any(|&(t, _)| t == g.token);
        let first = enter();
        let at_first = oldest().expect("one build in progress");
        assert!(at_first <= boot_ticks_now());
        let second = enter();
        assert!(
            oldest().is_some_and(|o| o <= at_first),
            "a later build never moves it up"
        );
        drop(second);
        assert!(alive(&first));
        let token = first.token;
        drop(first);
        assert!(
            !STARTS.lock().iter().any(|&(t, _)| t == token),
            "dropped, forgotten"
        );
    }

    #[test]
    fn a_command_counts_until_its_guard_is_dropped() {
        // A pid no other test registers: this process's own.
        let me = std::process::id() as i32;
        let guard = command(me);
        assert!(now().commands.contains(&me));
        drop(guard);
        assert!(!now().commands.contains(&me), "dropped, forgotten");
    }

    /// This process's own `starttime` is on the same clock: never after now.
    #[test]
    fn start_ticks_are_on_the_proc_clock() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 1..];
        let start: u64 = after_name
            .split_whitespace()
            .nth(19)
            .unwrap()
            .parse()
            .unwrap();
        assert!(start <= boot_ticks_now(), "{start} > {}", boot_ticks_now());
    }
}
