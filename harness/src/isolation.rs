//! Each trial's process tree, isolated so everything it started can be found and killed: a cgroup
//! (v2 where a cgroup2 hierarchy is mounted, else the v1 `pids` hierarchy), or, without cgroups,
//! wedge's subreaper plus an environment marker every descendant inherits.
//!
//! A trial tree has two parts: `subject` (the subject and all it starts) and `aux` (processes
//! the scenario spawns next to it, e.g. clients).

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The environment variable that marks every process of a trial (used by the cgroup-less kind
/// of tree and in diagnoses).
pub const MARKER_VAR: &str = "WEDGE_TRIAL_ID";

/// The kind of process tree trials get on this machine (how they are isolated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeKind {
    /// A cgroup2 directory wedge may create children in.
    CgroupV2(PathBuf),
    /// A directory of the cgroup v1 `pids` hierarchy.
    CgroupV1(PathBuf),
    /// No usable cgroup: subreaper plus [`MARKER_VAR`].
    Subreaper,
}

impl TreeKind {
    /// A short name for reports: `cgroup2`, `cgroup1`, `subreaper`.
    pub fn name(&self) -> &'static str {
        match self {
            TreeKind::CgroupV2(_) => "cgroup2",
            TreeKind::CgroupV1(_) => "cgroup1-pids",
            TreeKind::Subreaper => "subreaper",
        }
    }

    /// Picks the best kind, creating wedge's own cgroup for this run. `WEDGE_ISOLATION` =
    /// `cgroup2` | `cgroup1` | `subreaper` forces one.
    pub fn detect() -> TreeKind {
        let forced = std::env::var("WEDGE_ISOLATION").ok();
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let run_name = format!("wedge-{}-{n}", std::process::id());
        let want = |n: &str| forced.as_deref().is_none_or(|f| f == n);
        if want("cgroup2")
            && let Some(parent) = cgroup_dir("cgroup2", None)
        {
            remove_stale(&parent);
            let dir = parent.join(&run_name);
            if fs::create_dir(&dir).is_ok() {
                return TreeKind::CgroupV2(dir);
            }
        }
        if want("cgroup1")
            && let Some(parent) = cgroup_dir("cgroup", Some("pids"))
        {
            remove_stale(&parent);
            let dir = parent.join(&run_name);
            if fs::create_dir(&dir).is_ok() {
                return TreeKind::CgroupV1(dir);
            }
        }
        TreeKind::Subreaper
    }

    /// Removes wedge's run cgroup (once every trial's is gone).
    pub fn cleanup(&self) {
        if let TreeKind::CgroupV2(dir) | TreeKind::CgroupV1(dir) = self {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// The entries of `parent` named `wedge-PID-...` whose wedge process PID is gone: the run
/// directories (cgroups) a killed wedge left behind. One running now keeps its own.
pub(crate) fn stale_run_dirs(parent: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    let stale = |name: &str| {
        name.strip_prefix("wedge-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    entries
        .flatten()
        .filter(|e| stale(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect()
}

/// Cleans up after wedge processes that no longer exist (e.g. killed with SIGKILL): kills
/// whatever their trials left in their run cgroups (`wedge-PID-N`) and removes the cgroups.
fn remove_stale(parent: &Path) {
    for run in stale_run_dirs(parent) {
        if run.join("cgroup.kill").exists() {
            let _ = fs::write(run.join("cgroup.kill"), "1");
        }
        for procs in ["cgroup.procs", "subject/cgroup.procs", "aux/cgroup.procs"] {
            if let Ok(trials) = fs::read_dir(&run) {
                for t in trials.flatten().filter(|t| t.path().is_dir()) {
                    for pid in read_procs(&t.path().join(procs)) {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
        }
        let end = Instant::now() + Duration::from_secs(2);
        if let Ok(trials) = fs::read_dir(&run) {
            for t in trials.flatten().filter(|t| t.path().is_dir()) {
                // Killed tasks leave their cgroup shortly after the signal.
                let _ = remove_dir_once_empty(&t.path().join("subject"), end);
                let _ = fs::remove_dir(t.path().join("aux"));
                let _ = fs::remove_dir(t.path());
            }
        }
        let _ = fs::remove_dir(&run);
    }
}

/// Where wedge's own cgroup is in the hierarchy of filesystem type `fstype` (with mount option
/// `option` for v1): mount point + the path from `/proc/self/cgroup`.
pub(crate) fn cgroup_dir(fstype: &str, option: Option<&str>) -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut r = right.split(' ');
        let fs_type = r.next()?;
        let _source = r.next()?;
        let super_opts = r.next().unwrap_or("");
        let mount_point = left.split(' ').nth(4)?;
        let root = left.split(' ').nth(3)?;
        let opt_ok = option.is_none_or(|o| super_opts.split(',').any(|x| x == o));
        (fs_type == fstype && opt_ok).then(|| (PathBuf::from(mount_point), root.to_string()))
    })?;
    let cgroups = fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        let matches = match option {
            None => controllers.is_empty(),
            Some(o) => controllers.split(',').any(|c| c == o),
        };
        matches.then(|| path.to_string())
    })?;
    // The mount may expose a sub-tree (its root); strip it from our path.
    let (mount_point, root) = mount;
    let rel = own
        .strip_prefix(&root)
        .unwrap_or(&own)
        .trim_start_matches('/');
    let dir = mount_point.join(rel);
    dir.is_dir().then_some(dir)
}

/// Which part of a trial tree a process goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Subject,
    Aux,
}

/// A process wedge started through `wedge-init` ([`crate::pidns`]): the keeper (wedge's child)
/// and, when a pid namespace could be made, the namespace's init. Both are wedge's, not the
/// subject's: they are never listed as the trial's processes, only used to find and end them.
#[derive(Debug, Clone, Copy)]
struct Keeper {
    keeper: i32,
    init: Option<i32>,
    part: Part,
}

/// One trial's process tree.
#[derive(Debug)]
pub struct TrialTree {
    kind: TreeKind,
    dir: Option<PathBuf>,
    marker: String,
    roots: std::sync::Mutex<Vec<(i32, Part)>>,
    keepers: std::sync::Mutex<Vec<Keeper>>,
    /// Cgroups outside the trial's own that its processes were seen in.
    escaped: std::sync::Mutex<BTreeSet<PathBuf>>,
    created: std::time::SystemTime,
}

impl TrialTree {
    /// Creates the tree's cgroups (if its kind has them). `marker` must be unique per trial.
    pub fn create(kind: &TreeKind, marker: &str) -> io::Result<TrialTree> {
        let dir = match kind {
            TreeKind::CgroupV2(run) | TreeKind::CgroupV1(run) => {
                let dir = run.join(marker);
                fs::create_dir(&dir)?;
                fs::create_dir(dir.join("subject"))?;
                fs::create_dir(dir.join("aux"))?;
                Some(dir)
            }
            TreeKind::Subreaper => None,
        };
        Ok(TrialTree {
            kind: kind.clone(),
            dir,
            marker: marker.to_string(),
            roots: std::sync::Mutex::new(Vec::new()),
            keepers: std::sync::Mutex::new(Vec::new()),
            escaped: std::sync::Mutex::new(BTreeSet::new()),
            created: std::time::SystemTime::now(),
        })
    }

    /// The marker value the trial's processes carry in [`MARKER_VAR`].
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// The `cgroup.procs` file a new process writes `0` to (in `pre_exec`) to join `part`.
    pub fn join_file(&self, part: Part) -> Option<CString> {
        let dir = self.dir.as_ref()?;
        let sub = match part {
            Part::Subject => "subject",
            Part::Aux => "aux",
        };
        CString::new(
            dir.join(sub)
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .ok()
    }

    /// Records a process wedge started directly in `part`.
    pub fn add_root(&self, pid: i32, part: Part) {
        self.roots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((pid, part));
    }

    /// Records the keeper of a process wedge started in `part`, and its namespace's init.
    pub fn add_keeper(&self, keeper: i32, init: Option<i32>, part: Part) {
        lock(&self.keepers).push(Keeper { keeper, init, part });
    }

    /// Every live (non-zombie) process of `part` (or of the whole tree with `None`): the members
    /// of its cgroups (nested ones included) and every descendant of its keepers and inits,
    /// wherever it moved itself; never the keepers and inits themselves.
    pub fn pids(&self, part: Option<Part>) -> Vec<i32> {
        let mut pids = match &self.dir {
            Some(dir) => {
                let parts: &[&str] = match part {
                    Some(Part::Subject) => &["subject"],
                    Some(Part::Aux) => &["aux"],
                    None => &["subject", "aux", ""],
                };
                let mut pids = Vec::new();
                for p in parts {
                    let sub = dir.join(p);
                    if p.is_empty() {
                        pids.extend(read_procs(&sub.join("cgroup.procs")));
                    } else {
                        for d in cgroup_subtree(&sub) {
                            pids.extend(read_procs(&d.join("cgroup.procs")));
                        }
                    }
                }
                pids
            }
            None => self.marked_pids(part),
        };
        let keepers: Vec<Keeper> = lock(&self.keepers)
            .iter()
            .filter(|k| part.is_none_or(|want| want == k.part))
            .copied()
            .collect();
        let ours: Vec<i32> = keepers
            .iter()
            .flat_map(|k| std::iter::once(k.keeper).chain(k.init))
            .collect();
        let tracked: BTreeSet<i32> = pids.iter().copied().collect();
        for pid in descendants(&ours) {
            if !tracked.contains(&pid) {
                self.note_escape(pid);
            }
            pids.push(pid);
        }
        pids.retain(|&pid| {
            !ours.contains(&pid)
                && crate::proc::stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
        });
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// A process of the trial outside its cgroups: remember the cgroup it went to.
    fn note_escape(&self, pid: i32) {
        let (Some(dir), Some(root)) = (&self.dir, self.kind.hierarchy_root()) else {
            return;
        };
        let v2 = matches!(self.kind, TreeKind::CgroupV2(_));
        let Some(rel) = own_cgroup(pid, v2) else {
            return;
        };
        let path = root.join(rel.trim_start_matches('/'));
        if !path.starts_with(dir) {
            lock(&self.escaped).insert(path);
        }
    }

    /// Without cgroups: the roots, their descendants, and every process carrying the marker.
    fn marked_pids(&self, part: Option<Part>) -> Vec<i32> {
        let roots: Vec<i32> = self
            .roots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, p)| part.is_none_or(|want| want == *p))
            .map(|(pid, _)| *pid)
            .collect();
        let needle = format!("{MARKER_VAR}={}", self.marker);
        let part_needle = part.map(|p| match p {
            Part::Subject => "WEDGE_TRIAL_PART=subject".to_string(),
            Part::Aux => "WEDGE_TRIAL_PART=aux".to_string(),
        });
        let all: Vec<(i32, i32)> = crate::proc::all_pids()
            .into_iter()
            .filter_map(|pid| crate::proc::stat(pid).map(|s| (pid, s.ppid)))
            .collect();
        let mut found: Vec<i32> = roots.clone();
        for &(pid, _) in &all {
            if let Ok(env) = fs::read(format!("/proc/{pid}/environ")) {
                let has = |n: &str| env.split(|&b| b == 0).any(|e| e == n.as_bytes());
                if has(&needle) && part_needle.as_deref().is_none_or(has) {
                    found.push(pid);
                }
            }
        }
        // Descendants by parent links (processes that cleared their environment).
        loop {
            let before = found.len();
            for &(pid, ppid) in &all {
                if found.contains(&ppid) && !found.contains(&pid) {
                    found.push(pid);
                }
            }
            if found.len() == before {
                break;
            }
        }
        found
    }

    /// Kills every process of the tree and waits (up to `timeout`) until none is left. Returns
    /// the processes still alive after that.
    pub fn kill_all(&self, timeout: Duration) -> Vec<i32> {
        // An init's death ends its whole namespace, escaped processes included.
        for k in lock(&self.keepers).iter() {
            if let Some(init) = k.init {
                let _ = kill(Pid::from_raw(init), Signal::SIGKILL);
            }
        }
        if let (TreeKind::CgroupV2(_), Some(dir)) = (&self.kind, &self.dir) {
            let kill_file = dir.join("cgroup.kill");
            if kill_file.exists() {
                let _ = fs::write(&kill_file, "1");
            }
        }
        let end = Instant::now() + timeout;
        loop {
            let pids = self.pids(None);
            if pids.is_empty() {
                return pids;
            }
            for &pid in &pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            if Instant::now() >= end {
                return self.pids(None);
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// Removes the tree's cgroups, those the subject made inside them too (deepest first); an
    /// error means something is still inside.
    pub fn remove(&self) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let end = Instant::now() + Duration::from_secs(2);
        loop {
            let mut all = cgroup_subtree(dir);
            // Children before their parents: a cgroup with children cannot be removed.
            all.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            let result = all.iter().try_for_each(fs::remove_dir);
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !dir.exists() {
                        return Ok(());
                    }
                }
                // A just-killed task may still be leaving the cgroup (EBUSY).
                Err(e) if Instant::now() >= end => return Err(e),
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Cgroups outside the trial's own that its processes moved to and that the trial made
    /// (created after it started): each is a leak, removed here once empty. Cgroups that existed
    /// before are only reported. Call after [`TrialTree::kill_all`].
    /// Returns `(leaks, notes)`.
    pub fn remove_escaped(&self) -> (Vec<String>, Vec<String>) {
        let escaped = std::mem::take(&mut *lock(&self.escaped));
        let (mut leaks, mut notes) = (Vec::new(), Vec::new());
        let own = self.dir.clone().unwrap_or_default();
        for path in escaped {
            // An ancestor of the trial's own cgroup (the root, wedge's) is never the trial's.
            let made_here = !own.starts_with(&path)
                && fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= self.created);
            if !made_here {
                notes.push(format!(
                    "a process moved itself to cgroup {} (outside the trial's)",
                    path.display()
                ));
                continue;
            }
            // Killed by kill_all, but a task may still be leaving it (EBUSY): as in remove().
            let removed = remove_dir_once_empty(&path, Instant::now() + Duration::from_secs(2));
            leaks.push(format!(
                "cgroup {} made outside the trial's tree{}",
                path.display(),
                match removed {
                    Ok(()) => " (removed)".to_string(),
                    Err(e) => format!(" (not removable: {e})"),
                }
            ));
        }
        (leaks, notes)
    }

    /// The cgroup directory of the trial, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

/// Removes the (childless) cgroup `dir`, retrying while a just-killed task is still leaving it
/// (`EBUSY`), until `end`.
fn remove_dir_once_empty(dir: &Path, end: Instant) -> io::Result<()> {
    loop {
        match fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < end => {
                std::thread::sleep(Duration::from_micros(200));
            }
            result => return result,
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding these leaves plain data behind: still valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TreeKind {
    /// The mount point of the hierarchy the trial cgroups live in.
    fn hierarchy_root(&self) -> Option<PathBuf> {
        let (fstype, option) = match self {
            TreeKind::CgroupV2(_) => ("cgroup2", None),
            TreeKind::CgroupV1(_) => ("cgroup", Some("pids")),
            TreeKind::Subreaper => return None,
        };
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
        mountinfo.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut r = right.split(' ');
            let fs_type = r.next()?;
            let super_opts = r.nth(1).unwrap_or("");
            let opt_ok = option.is_none_or(|o| super_opts.split(',').any(|x| x == o));
            let root = left.split(' ').nth(3)?;
            (fs_type == fstype && opt_ok && root == "/")
                .then(|| PathBuf::from(left.split(' ').nth(4).unwrap_or("/")))
        })
    }
}

/// `pid`'s cgroup path in the unified hierarchy (`v2`) or the v1 `pids` one, from
/// `/proc/PID/cgroup`.
fn own_cgroup(pid: i32, v2: bool) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        let wanted = if v2 {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == "pids")
        };
        wanted.then(|| path.to_string())
    })
}

/// `dir` and every cgroup below it.
fn cgroup_subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = fs::read_dir(&out[i]) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// Every descendant of `roots` (through every thread's `children`), however it detached
/// itself: in a pid namespace, orphans are re-parented inside it, so the walk from the keeper
/// and the init finds all of it.
fn descendants(roots: &[i32]) -> Vec<i32> {
    let mut found: Vec<i32> = Vec::new();
    let mut queue: Vec<i32> = roots.to_vec();
    while let Some(pid) = queue.pop() {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(text) = fs::read_to_string(t.path().join("children")) else {
                continue;
            };
            for child in text.split_ascii_whitespace().filter_map(|c| c.parse().ok()) {
                if !found.contains(&child) && !roots.contains(&child) {
                    found.push(child);
                    queue.push(child);
                }
            }
        }
    }
    found
}

fn read_procs(path: &Path) -> Vec<i32> {
    fs::read_to_string(path)
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}
