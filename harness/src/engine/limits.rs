//! Per-trial resource limits. Every process of a trial (wedge's keeper and init included) counts
//! against one `pids.max`, a default bound even when the scenario names none, and, when the
//! scenario sets `memory_max`, against one memory limit: a fork bomb or a memory hog stops at its
//! trial's limit instead of starving the host and the trials next to it. A limit a scenario asks
//! for is never dropped silently: where no controller can enforce it the cell is skipped, saying
//! why ([`Support::refuses`]).
//!
//! A limit lives where this machine has its controller: on the trial's own cgroup when the
//! trial tree's hierarchy has it (cgroup2 with the controller delegated, or the v1 `pids` tree),
//! else in a per-trial directory of the controller's cgroup v1 hierarchy (hybrid machines), which
//! every trial process joins before exec, as it joins the trial's own cgroup.

use std::ffi::CString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::engine::isolation::{TreeKind, cgroup_dir, stale_run_dirs};

/// Why a limit a trial needs could not be set.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("the trial has no cgroup")]
    NoTrialCgroup,
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    /// This machine has no controller for it, and why.
    #[error("{0}")]
    Unavailable(String),
    #[error("cannot set {} to {value}: {source}", file.display())]
    Set {
        file: PathBuf,
        value: u64,
        #[source]
        source: io::Error,
    },
}

pub use crate::model::limit_spec::{
    DEFAULT_PIDS_MAX, Enforcement, Limits, MIN_MEMORY_MAX, MIN_PIDS_MAX, parse_size,
};

/// A cgroup controller wedge limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Pids,
    Memory,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Pids => "pids",
            Controller::Memory => "memory",
        }
    }

    /// The file that holds the limit (cgroup2 or v1 spelling).
    fn limit_file(self, v2: bool) -> &'static str {
        match (self, v2) {
            (Controller::Pids, _) => "pids.max",
            (Controller::Memory, true) => "memory.max",
            (Controller::Memory, false) => "memory.limit_in_bytes",
        }
    }
}

/// Where one controller's limit goes on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    /// On the trial's own cgroup (`v2`: the cgroup2 spelling of the files).
    TrialCgroup { v2: bool },
    /// In a per-trial directory under this one, wedge's cgroup in the controller's v1 hierarchy.
    V1(PathBuf),
    /// Nowhere, and why.
    Unavailable(String),
}

/// Where each controller's limits go, found once per run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Support {
    pub pids: Home,
    pub memory: Home,
}

/// Where `c`'s limit goes, from what the machine offers: the controllers the trial tree's
/// cgroup2 directory has (`None` when the tree is not cgroup2), whether the tree is the v1
/// `pids` hierarchy, and wedge's directory in `c`'s v1 hierarchy.
pub fn home_for(
    c: Controller,
    v2_controllers: Option<&str>,
    tree_is_v1_pids: bool,
    v1_dir: Option<PathBuf>,
) -> Home {
    if v2_controllers.is_some_and(|list| list.split_whitespace().any(|n| n == c.name())) {
        return Home::TrialCgroup { v2: true };
    }
    if c == Controller::Pids && tree_is_v1_pids {
        return Home::TrialCgroup { v2: false };
    }
    if let Some(dir) = v1_dir {
        return Home::V1(dir);
    }
    let v2 = match v2_controllers {
        Some(list) if list.trim().is_empty() => "wedge's cgroup2 has no controllers".to_string(),
        Some(list) => format!("wedge's cgroup2 has only: {}", list.trim()),
        None => "no cgroup2 tree".to_string(),
    };
    Home::Unavailable(format!(
        "the {} controller is not delegated to wedge ({v2}; no v1 {} hierarchy)",
        c.name(),
        c.name()
    ))
}

impl Support {
    /// Finds where limits go for trees of `kind`, enabling the controllers wedge's run cgroup
    /// offers in its subtree (so every trial cgroup has their files).
    pub fn detect(kind: &TreeKind) -> Support {
        let v2 = match kind {
            TreeKind::CgroupV2(run) => {
                let offered =
                    fs::read_to_string(run.join("cgroup.controllers")).unwrap_or_default();
                let mut enabled = String::new();
                for name in limited(&offered) {
                    // Enabling fails where wedge's own cgroup holds processes; then the v1
                    // hierarchy (if any) is the limit's home.
                    if fs::write(run.join("cgroup.subtree_control"), format!("+{name}")).is_ok() {
                        enabled.push_str(name);
                        enabled.push(' ');
                    }
                }
                Some(enabled)
            }
            _ => None,
        };
        let support = Support::with(v2.as_deref(), kind);
        for h in [&support.pids, &support.memory] {
            if let Home::V1(parent) = h {
                remove_stale(parent);
            }
        }
        support
    }

    /// Where limits would go in a run started now, found without creating or changing
    /// anything (for planning): `kind` is [`TreeKind::survey`]'s, whose cgroup2 directory's
    /// `cgroup.subtree_control` is what a run cgroup made in it is offered, and a fresh run
    /// cgroup, holding no process, enables every controller it is offered.
    pub fn survey(kind: &TreeKind) -> Support {
        let v2 = match kind {
            TreeKind::CgroupV2(parent) => {
                let offered =
                    fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
                Some(
                    limited(&offered)
                        .map(|n| format!("{n} "))
                        .collect::<String>(),
                )
            }
            _ => None,
        };
        Support::with(v2.as_deref(), kind)
    }

    /// Each controller's home given the controllers enabled for trial cgroups under a cgroup2
    /// tree (`None`: the tree is not cgroup2).
    fn with(v2_enabled: Option<&str>, kind: &TreeKind) -> Support {
        let tree_is_v1_pids = matches!(kind, TreeKind::CgroupV1(_));
        let home = |c: Controller| {
            home_for(
                c,
                v2_enabled,
                tree_is_v1_pids,
                cgroup_dir("cgroup", Some(c.name())),
            )
        };
        Support {
            pids: home(Controller::Pids),
            memory: home(Controller::Memory),
        }
    }

    /// Which limits can be enforced here, as planning reads it.
    pub fn enforcement(&self) -> Enforcement {
        let gap = |home: &Home| match home {
            Home::Unavailable(why) => Some(why.clone()),
            _ => None,
        };
        Enforcement {
            pids: gap(&self.pids),
            memory: gap(&self.memory),
        }
    }

    /// Why a cell with `limits` cannot run here, if it cannot: a limit the scenario sets that no
    /// controller enforces.
    pub fn refuses(&self, limits: &Limits) -> Option<String> {
        self.enforcement().refuses(limits)
    }
}

/// The controllers wedge limits among those `offered` (a `cgroup.controllers` list), in order.
fn limited(offered: &str) -> impl Iterator<Item = &'static str> + '_ {
    [Controller::Pids, Controller::Memory]
        .into_iter()
        .map(Controller::name)
        .filter(|name| offered.split_whitespace().any(|n| n == *name))
}

/// The limits set on one trial: the v1 directories its processes join, and where to read its
/// memory events. Removed with [`Applied::remove`] once the trial's processes are dead.
#[derive(Debug, Default)]
pub struct Applied {
    /// Per-trial v1 directories (made here, so removed here).
    v1_dirs: Vec<PathBuf>,
    /// The memory limit's directory and whether it is cgroup2.
    memory: Option<(PathBuf, bool)>,
    /// What the trial log should say about them.
    pub notes: Vec<String>,
}

/// Sets `limits` for the trial whose own cgroup is `trial_dir` (if any); `marker` names its v1
/// directories. An error is the trial's: a limit it needs could not be set.
pub fn apply(
    support: &Support,
    limits: &Limits,
    trial_dir: Option<&Path>,
    marker: &str,
) -> Result<Applied, LimitError> {
    let mut applied = Applied::default();
    let wanted = [
        (
            Controller::Pids,
            &support.pids,
            Some(limits.pids_max.unwrap_or(DEFAULT_PIDS_MAX)),
            limits.pids_max.is_some(),
        ),
        (Controller::Memory, &support.memory, limits.memory_max, true),
    ];
    for (c, home, value, required) in wanted {
        let Some(value) = value else { continue };
        let (dir, v2) = match place(home, trial_dir, marker) {
            Ok(Place::Trial(dir, v2)) => (dir, v2),
            Ok(Place::Made(dir)) => {
                applied.v1_dirs.push(dir.clone());
                (dir, false)
            }
            Err(why) if !required => {
                applied
                    .notes
                    .push(format!("no {} limit: {why}", c.limit_file(true)));
                continue;
            }
            Err(why) => {
                let _ = applied.remove();
                return Err(why);
            }
        };
        let file = dir.join(c.limit_file(v2));
        if let Err(e) = fs::write(&file, value.to_string()) {
            let _ = applied.remove();
            return Err(LimitError::Set {
                file,
                value,
                source: e,
            });
        }
        applied.notes.push(format!("{} = {value}", file.display()));
        if c == Controller::Memory {
            applied.memory = Some((dir, v2));
        }
    }
    Ok(applied)
}

/// The directory a limit is written in.
enum Place {
    /// The trial's own cgroup (cgroup2 spelling or not).
    Trial(PathBuf, bool),
    /// A v1 directory made for the trial.
    Made(PathBuf),
}

fn place(home: &Home, trial_dir: Option<&Path>, marker: &str) -> Result<Place, LimitError> {
    match (home, trial_dir) {
        (Home::TrialCgroup { v2 }, Some(d)) => Ok(Place::Trial(d.to_path_buf(), *v2)),
        (Home::TrialCgroup { .. }, None) => Err(LimitError::NoTrialCgroup),
        (Home::V1(parent), _) => {
            let dir = parent.join(format!("wedge-{marker}"));
            match fs::create_dir(&dir) {
                Ok(()) => Ok(Place::Made(dir)),
                Err(source) => Err(LimitError::CreateDir { dir, source }),
            }
        }
        (Home::Unavailable(why), _) => Err(LimitError::Unavailable(why.clone())),
    }
}

impl Applied {
    /// The `cgroup.procs` files a new trial process writes `0` to before exec.
    pub fn join_files(&self) -> Vec<CString> {
        self.v1_dirs
            .iter()
            .filter_map(|d| {
                CString::new(d.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok()
            })
            .collect()
    }

    /// How many processes the kernel's OOM killer ended at the trial's memory limit.
    pub fn oom_kills(&self) -> Option<u64> {
        let (dir, v2) = self.memory.as_ref()?;
        let file = if *v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        oom_kill_count(&fs::read_to_string(dir.join(file)).ok()?)
    }

    /// The per-trial v1 directories (the trial's own cgroups on hybrid hosts).
    pub fn v1_dirs(&self) -> &[PathBuf] {
        &self.v1_dirs
    }

    /// Removes the per-trial v1 directories with every cgroup a runtime nested in them, deepest
    /// first (call once the trial's processes are dead; one still inside is killed, and is a
    /// leak); each that cannot be removed is a leak, returned as the record says it.
    pub fn remove(&mut self) -> Vec<String> {
        let mut leaks = Vec::new();
        for dir in std::mem::take(&mut self.v1_dirs) {
            for pid in crate::engine::cgroupfs::kill_members(&dir) {
                leaks.push(format!(
                    "process {pid} was still in cgroup {} (killed)",
                    dir.display()
                ));
            }
            // A just-killed task may still be leaving the cgroup (EBUSY) for a moment.
            let end = Instant::now() + crate::engine::cgroupfs::REMOVE_BOUND;
            if let Err(e) = crate::engine::cgroupfs::remove_tree(&dir, end) {
                leaks.push(format!("cgroup {} not removable: {e}", dir.display()));
            }
        }
        leaks
    }
}

/// Removes the per-trial v1 directories (`wedge-PID-...`) of wedge processes that no longer
/// exist (killed with SIGKILL before their teardown), killing what is left in them first.
fn remove_stale(parent: &Path) {
    for dir in stale_run_dirs(parent) {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for p in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let mut gone = Applied {
            v1_dirs: vec![dir],
            ..Applied::default()
        };
        let _ = gone.remove();
    }
}

/// The `oom_kill N` line of cgroup2 `memory.events` or v1 `memory.oom_control`.
pub fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_from_either_spelling() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(v2), Some(1));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(oom_kill_count(v1), Some(3));
        assert_eq!(oom_kill_count("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn homes_prefer_the_trial_cgroup_then_v1() {
        let v1 = Some(PathBuf::from("/sys/fs/cgroup/memory/x"));
        assert_eq!(
            home_for(Controller::Memory, Some("pids memory"), false, v1.clone()),
            Home::TrialCgroup { v2: true }
        );
        // A hybrid machine: cgroup2 without the controller, v1 with it.
        assert_eq!(
            home_for(Controller::Memory, Some("hugetlb"), false, v1.clone()),
            Home::V1(v1.clone().unwrap())
        );
        assert_eq!(
            home_for(Controller::Pids, None, true, None),
            Home::TrialCgroup { v2: false }
        );
        let Home::Unavailable(why) = home_for(Controller::Memory, Some("hugetlb"), false, None)
        else {
            panic!()
        };
        assert!(why.contains("memory controller is not delegated"), "{why}");
        assert!(why.contains("only: hugetlb"), "{why}");
    }

    #[test]
    fn only_limits_a_scenario_sets_can_refuse_a_cell() {
        let s = Support {
            pids: Home::Unavailable("no pids".into()),
            memory: Home::Unavailable("no memory".into()),
        };
        assert_eq!(
            s.refuses(&Limits::default()),
            None,
            "the default pids bound never refuses"
        );
        let why = s
            .refuses(&Limits {
                pids_max: None,
                memory_max: Some(64 << 20),
            })
            .unwrap();
        assert_eq!(why, "memory_max cannot be enforced: no memory");
        assert!(
            s.refuses(&Limits {
                pids_max: Some(64),
                memory_max: None
            })
            .unwrap()
            .starts_with("pids_max")
        );
    }

    #[test]
    fn unenforceable_defaults_are_noted_not_errors() {
        let s = Support {
            pids: Home::Unavailable("no pids".into()),
            memory: Home::Unavailable("no memory".into()),
        };
        let a = apply(&s, &Limits::default(), None, "m").unwrap();
        assert_eq!(a.notes, ["no pids.max limit: no pids"]);
        assert!(a.join_files().is_empty());
        let e = apply(
            &s,
            &Limits {
                pids_max: None,
                memory_max: Some(1 << 30),
            },
            None,
            "m",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "no memory");
    }
}
