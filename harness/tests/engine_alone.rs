//! A trial that runs alone in its process (this file holds one test, so no other trial of this
//! process overlaps it) owns every cgroup that appeared meanwhile below a hierarchy's root, even
//! one no process of it ever entered: a runtime killed between making its cgroups and moving
//! into them. Those are its leaks, removed while empty. (With another trial running, timing
//! alone blames nobody: engine_escapes.rs covers cgroups a trial's processes were seen in.)

mod support;

use std::time::Duration;

use support::{assert_nothing_left, run_unchecked};
use wedge::record::Verdict;

const LIMIT: Duration = Duration::from_secs(90);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn empty_cgroups_made_while_a_trial_ran_alone_are_its_leaks() {
    if !is_root() {
        eprintln!("skipped: making cgroups needs root");
        return;
    }
    let mounts: Vec<String> = wedge::cgroupfs::hierarchies()
        .iter()
        .map(|h| h.mount.display().to_string())
        .collect();
    for r in run_unchecked("leaking/mkdir-only.toml", &[], None, LIMIT) {
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
        for mount in &mounts {
            let leak = r
                .leaks
                .iter()
                .find(|l| l.contains(&format!("cgroup {mount}/mkdir-only-")))
                .unwrap_or_else(|| panic!("no leak under {mount}: {:?}", r.leaks));
            assert!(
                leak.ends_with("(no other trial ran meanwhile) (removed)"),
                "{leak}"
            );
        }
        let mut rest = r.clone();
        rest.leaks.retain(|l| !l.contains("/mkdir-only-"));
        assert_nothing_left(&rest);
    }
    for mount in &mounts {
        let left = std::fs::read_dir(mount)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("mkdir-only-"));
        assert!(!left, "a mkdir-only- cgroup is left under {mount}");
    }
}
