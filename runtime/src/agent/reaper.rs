//! Reaps orphaned init processes nobody waits for.
//!
//! The agent is a child subreaper, so every init process (pid 1 of an exec's pid namespace) becomes its
//! child once the intermediate exits. Each exec waits for its own init through a pidfd. But an init can
//! be orphaned without the agent ever learning its pid: when an intermediate dies after cloning it and
//! before reporting it (for instance an intermediate deadlocked after `clone3` and killed by the exec's
//! timeout). Such an init fails its handshake and exits, and would stay a zombie forever. This task
//! finds zombie children that are init processes of a child pid namespace, are not [`track`]ed, and were
//! already zombies one scan earlier (so a pid reported a moment late is never stolen), and reaps them.
//!
//! With the `libcontainer` builder the library clones its intermediate and init processes as the
//! agent's children and, when a build fails, leaves them to their parent without saying which they
//! are. They are recognised by the names the library gives them (`youki:[1:INTER]`,
//! `youki:[2:INIT]`): a zombie still called that never ran a command, so nobody waits for its status.

use crate::sync::Mutex;
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::time::Duration;

static TRACKED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Says that an exec waits for the init process `pid` itself.
pub fn track(pid: i32) {
    TRACKED.lock().insert(pid);
}

/// How often the children are scanned.
const SCAN_EVERY: Duration = Duration::from_secs(1);

/// Scans forever (run it as a task of the agent's runtime).
pub async fn run() {
    let mut suspects = BTreeSet::new();
    let mut ticks = tokio::time::interval(SCAN_EVERY);
    loop {
        ticks.tick().await;
        suspects = tokio::task::spawn_blocking(move || scan(&suspects))
            .await
            .unwrap_or_default();
    }
}

/// One scan: reaps untracked zombie inits that were `suspects` already; returns the new suspects.
fn scan(suspects: &BTreeSet<i32>) -> BTreeSet<i32> {
    let me = std::process::id();
    let mut children = BTreeSet::new();
    for task in std::fs::read_dir(format!("/proc/{me}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let listed = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.extend(
            listed
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    let mut tracked = TRACKED.lock();
    tracked.retain(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
    let mut next = BTreeSet::new();
    for pid in children {
        if tracked.contains(&pid) || !(is_zombie_init(pid) || is_zombie_library_child(pid)) {
            continue;
        }
        if suspects.contains(&pid) {
            tracing::warn!(pid, "reaping an orphaned init process");
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        } else {
            next.insert(pid);
        }
    }
    next
}

/// Whether `pid` is a zombie that was pid 1 of a child pid namespace.
fn is_zombie_init(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    let zombie = field("State:").starts_with('Z');
    let ns_pids: Vec<String> = field("NSpid:")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    zombie && ns_pids.len() >= 2 && ns_pids.last().is_some_and(|p| p == "1")
}

/// Whether `pid` is a zombie that libcontainer cloned and that never exec'd: it still has the name the
/// library gave it.
fn is_zombie_library_child(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
    };
    field("State:").starts_with('Z') && field("Name:").starts_with("youki:[")
}
