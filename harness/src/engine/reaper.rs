//! wedge is a child subreaper (`wedge_sys::become_child_subreaper`): processes a trial orphans
//! (double-forked daemons, children of a killed runner) are re-parented to wedge instead of
//! init, so they stay in reach and wedge reaps their zombies. Children wedge spawned itself are
//! "owned" and waited for by their trial; every other zombie child is an orphan and is reaped
//! here.

use std::collections::HashSet;
use std::io;
use std::process::{Child, Command};
use wedge_core::sync::{Mutex, RwLock};

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

static SPAWNING: RwLock<()> = RwLock::new(());
static OWNED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Spawns `cmd` and records the child as owned (its trial waits for it), atomically with respect
/// to [`reap_orphans`].
pub fn spawn_owned(cmd: &mut Command) -> io::Result<Child> {
    owned(|| cmd.spawn(), |c| c.id() as i32)
}

/// Starts a child with `spawn` and records it (its pid by `pid_of`) as owned, atomically with
/// respect to [`reap_orphans`].
pub fn owned<T>(
    spawn: impl FnOnce() -> io::Result<T>,
    pid_of: impl Fn(&T) -> i32,
) -> io::Result<T> {
    let _guard = SPAWNING.read();
    let child = spawn()?;
    OWNED
        .lock()
        .get_or_insert_with(HashSet::new)
        .insert(pid_of(&child));
    Ok(child)
}

/// Forgets an owned child after its trial waited for it.
pub fn disown(pid: i32) {
    if let Some(set) = OWNED.lock().as_mut() {
        set.remove(&pid);
    }
}

/// wedge's children, from `/proc/self/task/*/children` (when the kernel has it).
fn children() -> Option<Vec<i32>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).ok()?;
        out.extend(
            text.split_ascii_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    Some(out)
}

/// Reaps every zombie child of wedge that no trial owns; returns their pids.
pub fn reap_orphans() -> Vec<i32> {
    let _guard = SPAWNING.write();
    let me = std::process::id() as i32;
    let owned = OWNED.lock().clone().unwrap_or_default();
    let mut reaped = Vec::new();
    for pid in children().unwrap_or_else(crate::engine::proc::all_pids) {
        if owned.contains(&pid) {
            continue;
        }
        let Some(stat) = crate::engine::proc::stat(pid) else {
            continue;
        };
        if stat.ppid == me
            && stat.state == 'Z'
            && waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG))
                .is_ok_and(|s| s.pid().is_some())
        {
            reaped.push(pid);
        }
    }
    reaped
}
