//! A cgroup that appears below a hierarchy's root while a trial runs, but never holds one of its
//! processes (a runtime killed between making its cgroups and moving into them), is noted in the
//! trial's log and never blamed on it nor removed: any other process on the machine (another
//! wedge, a container engine, systemd) may have made it. Blaming it by timing alone failed
//! unrelated trials while a runtime ran beside them. (Cgroups a trial's processes were seen in
//! are its own: engine_escapes.rs.) This file holds one test, so no other trial of this process
//! overlaps it.

mod support;

use std::time::Duration;

use support::{assert_nothing_left, run_unchecked};
use wedge::model::record::Verdict;

const LIMIT: Duration = Duration::from_secs(90);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn empty_cgroups_made_while_a_trial_ran_are_noted_not_blamed() {
    if !is_root() {
        eprintln!("skipped: making cgroups needs root");
        return;
    }
    let mounts: Vec<String> = wedge::engine::cgroupfs::hierarchies()
        .iter()
        .map(|h| h.mount.display().to_string())
        .collect();
    let records = run_unchecked("leaking/mkdir-only.toml", &[], None, LIMIT);
    let r = &records[0];
    let made = |mount: &str| format!("{mount}/mkdir-only-{}", r.seed);
    // Removed here, by the test that made them (through its subject), before any assertion.
    for mount in &mounts {
        let _ = std::fs::remove_dir(made(mount));
    }
    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    for mount in &mounts {
        let note = format!(
            "cgroup {} appeared while the trial ran, but no process of it was seen there",
            made(mount)
        );
        assert!(
            r.log.iter().any(|l| l.contains(&note)),
            "no note for {mount}: {:?}",
            r.log
        );
    }
    assert_nothing_left(r);
}
