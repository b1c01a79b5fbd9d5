//! Nothing a subject starts leaves its trial, however it detaches itself: a child that moves to
//! a cgroup it made elsewhere, children in cgroups nested under the trial's, new pid and mount
//! namespaces. Each is judged right and nothing is left: processes, cgroups, mounts, temp
//! files. (The setsid double fork is engine.rs's daemon test.) Every run is under a watchdog.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{assert_nothing_left, diagnosis, run, run_unchecked};
use wedge::model::record::Verdict;

const LIMIT: Duration = Duration::from_secs(90);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// No cgroup a subject made is left at the hierarchy's root (each trial's own cgroups, nested
/// ones included, are checked by its record: a cgroup that cannot be removed is a leak).
fn assert_no_cgroups_left(names: &[&str]) {
    for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !names.iter().any(|n| name.starts_with(n)),
                "cgroup {} is left",
                e.path().display()
            );
        }
    }
}

#[test]
fn a_child_that_escapes_to_a_cgroup_it_made_is_killed_listed_and_its_cgroup_removed() {
    if !is_root() {
        eprintln!("skipped: moving between cgroups needs root");
        return;
    }
    for r in run_unchecked("leaking/escape-cgroup.toml", &[], None, LIMIT) {
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
        assert!(r.reason.contains("verdict was hang"), "{}", r.reason);
        let leak = r
            .leaks
            .iter()
            .find(|l| l.contains("escapee-"))
            .expect("leak");
        assert!(
            leak.ends_with("made outside the trial's tree (removed)"),
            "{leak}"
        );
        let listed = diagnosis(&r).processes.iter().any(|p| p.name == "sleep");
        assert!(
            listed,
            "the escaped child is in the diagnosis: {:?}",
            r.diagnosis
        );
        let path = leak.split(' ').nth(1).unwrap();
        assert!(!Path::new(path).exists(), "{path} is left");
        // Apart from the cgroup it reported, the trial left nothing.
        let mut rest = r.clone();
        rest.leaks.retain(|l| l != leak);
        assert_nothing_left(&rest);
    }
    assert_no_cgroups_left(&["escapee-"]);
}

#[test]
fn cgroups_nested_under_the_trials_are_the_trials() {
    if !is_root() {
        eprintln!("skipped: nesting cgroups needs root");
        return;
    }
    for r in run("nested-cgroup.toml", &[], None, LIMIT) {
        assert!(r.met, "{r:?}");
        assert_nothing_left(&r);
        match r.cell.get("mode").unwrap() {
            "exit" => assert_eq!(r.verdict, Verdict::Pass, "{r:?}"),
            _ => {
                assert_eq!(r.verdict, Verdict::Hang, "{r:?}");
                let listed = diagnosis(&r).processes.iter().any(|p| p.name == "sleep");
                assert!(listed, "{:?}", r.diagnosis);
            }
        }
    }
}

#[test]
fn new_pid_and_mount_namespaces_stay_in_the_trial() {
    if !is_root() {
        eprintln!("skipped: unshare needs root");
        return;
    }
    for r in run("unshare-ns.toml", &[], None, LIMIT) {
        assert_eq!(r.verdict, Verdict::Hang, "{r:?}");
        assert!(r.met, "{r:?}");
        assert_nothing_left(&r);
        let listed = diagnosis(&r).processes.iter().any(|p| p.name == "sleep");
        assert!(listed, "{:?}", r.diagnosis);
    }
}

#[test]
fn an_orphan_in_a_cgroup_of_its_own_is_found_without_a_namespace() {
    if !is_root() {
        eprintln!("skipped: moving between cgroups needs root");
        return;
    }
    let records = run_unchecked("leaking/escape-orphan.toml", &[], None, LIMIT);
    assert_eq!(records.len(), 4, "both isolations ran");
    for r in records {
        let isolation = r.cell.get("isolation").unwrap().to_string();
        // The subject exited 0, but left its child running: a failed trial either way.
        assert_eq!(r.verdict, Verdict::Fail, "{isolation}: {r:?}");
        assert!(
            r.lingering.iter().any(|p| p.contains("sleep")),
            "{isolation}: the orphan is listed as left running: {r:?}"
        );
        let leak = r
            .leaks
            .iter()
            .find(|l| l.contains("/orphan-"))
            .unwrap_or_else(|| panic!("{isolation}: the cgroup is a leak: {r:?}"));
        assert!(leak.ends_with("(removed)"), "{leak}");
        let mut rest = r.clone();
        rest.leaks.retain(|l| l != leak);
        rest.lingering.clear();
        assert_nothing_left(&rest);
    }
    assert_no_cgroups_left(&["orphan-"]);
}

#[test]
fn cgroups_made_in_every_v1_hierarchy_are_the_trials() {
    if !is_root() {
        eprintln!("skipped: making cgroups needs root");
        return;
    }
    let v1: Vec<String> = wedge::engine::cgroupfs::hierarchies()
        .iter()
        .filter(|h| h.controllers.is_some())
        .map(|h| h.mount.display().to_string())
        .collect();
    if v1.is_empty() {
        eprintln!("skipped: this host mounts no cgroup v1 hierarchy");
        return;
    }
    for r in run_unchecked("leaking/escape-v1.toml", &[], None, LIMIT) {
        let isolation = r.cell.get("isolation").unwrap().to_string();
        assert_eq!(r.verdict, Verdict::Fail, "{isolation}: {r:?}");
        assert!(r.reason.contains("verdict was hang"), "{}", r.reason);
        for mount in &v1 {
            let leak = r
                .leaks
                .iter()
                .find(|l| l.contains(&format!("cgroup {mount}/v1-escapee-")))
                .unwrap_or_else(|| panic!("{isolation}: no leak under {mount}: {:?}", r.leaks));
            // The topmost cgroup the trial made, with what is below it.
            assert!(!leak.contains("/inner"), "{leak}");
            assert!(leak.ends_with("(removed)"), "{leak}");
        }
        let mut rest = r.clone();
        rest.leaks.retain(|l| !l.contains("/v1-escapee-"));
        assert_nothing_left(&rest);
    }
    for mount in &v1 {
        let left: Vec<_> = std::fs::read_dir(mount)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("v1-escapee-"))
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "left: {left:?}");
    }
}

/// Removes what `leaking/shared-places.toml`'s subjects make (`wedge-left-*` in the shared
/// places), when dropped: so that a run whose check failed leaves nothing behind either (the
/// scenario's seeds are fixed, so a leftover would also be "there before" in the next run).
struct SharedPlacesSwept;

impl Drop for SharedPlacesSwept {
    fn drop(&mut self) {
        for root in ["/tmp", "/var/tmp", "/run", "/dev/shm"] {
            let Ok(entries) = std::fs::read_dir(root) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("wedge-left-") {
                    let _ = std::fs::remove_dir_all(e.path())
                        .or_else(|_| std::fs::remove_file(e.path()));
                }
            }
        }
        let _ = std::fs::remove_file("/tmp/wedge-preexisting-leftover");
    }
}

#[test]
fn files_left_in_the_shared_places_are_each_trials_own_leaks() {
    if !is_root() {
        eprintln!("skipped: watching the shared places needs root");
        return;
    }
    // Also at the start: what an earlier, interrupted run left.
    drop(SharedPlacesSwept);
    let _swept = SharedPlacesSwept;
    let before = "/tmp/wedge-preexisting-leftover";
    std::fs::write(before, "there before\n").unwrap();
    let records = run_unchecked("leaking/shared-places.toml", &[], None, LIMIT);
    assert_eq!(records.len(), 3);
    for r in records {
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
        let seed = r.seed;
        let mut want = vec![
            format!("file /dev/shm/wedge-left-{seed} (removed)"),
            format!("file /run/wedge-left-{seed} (removed)"),
            format!("file /tmp/wedge-left-{seed} (removed)"),
            format!("file /var/tmp/wedge-left-{seed} (removed)"),
        ];
        want.sort();
        let mut got: Vec<String> = r
            .leaks
            .iter()
            .filter(|l| l.starts_with("file "))
            .cloned()
            .collect();
        got.sort();
        // Exactly its own (three trials ran side by side), each topmost path once.
        assert_eq!(got, want, "{r:?}");
        for w in &want {
            let path = w.split(' ').nth(1).unwrap();
            assert!(!Path::new(path).exists(), "{path} is left");
        }
        let mut rest = r.clone();
        rest.leaks.retain(|l| !l.starts_with("file "));
        assert_nothing_left(&rest);
    }
    // Written to, not made, by the trials: still there.
    let kept = std::fs::read_to_string(before).unwrap();
    assert!(kept.starts_with("there before\n"), "{kept}");
    std::fs::remove_file(before).unwrap();
}
