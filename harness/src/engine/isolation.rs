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
use wedge_core::sync::Mutex;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::engine::cgroupfs;
use crate::engine::marker::{MARKER_VAR, PART_VAR};

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
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let run_name = format!("wedge-{}-{n}", std::process::id());
        for (kind, parent) in run_parents() {
            remove_stale(&parent);
            let dir = parent.join(&run_name);
            if fs::create_dir(&dir).is_ok() {
                return kind(dir);
            }
        }
        TreeKind::Subreaper
    }

    /// The kind [`TreeKind::detect`] would pick, found without creating or removing anything
    /// (for planning that must change nothing): a kind's directory counts as usable when wedge
    /// may write in it. The cgroup kinds hold the *parent* a run cgroup would be made in.
    pub fn survey() -> TreeKind {
        run_parents()
            .into_iter()
            .find(|(_, parent)| may_write(parent))
            .map_or(TreeKind::Subreaper, |(kind, parent)| kind(parent))
    }

    /// Removes wedge's run cgroup (once every trial's is gone).
    pub fn cleanup(&self) {
        if let TreeKind::CgroupV2(dir) | TreeKind::CgroupV1(dir) = self {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// A directory a run cgroup may be made in, with the kind of tree a cgroup there makes.
type RunParent = (fn(PathBuf) -> TreeKind, PathBuf);

/// Where a run cgroup may be made, best first, as `WEDGE_ISOLATION` allows: wedge's cgroup2
/// directory, then its directory in the v1 `pids` hierarchy; each with the kind it makes.
fn run_parents() -> Vec<RunParent> {
    let forced = std::env::var("WEDGE_ISOLATION").ok();
    let want = |n: &str| forced.as_deref().is_none_or(|f| f == n);
    let mut parents: Vec<RunParent> = Vec::new();
    if want("cgroup2")
        && let Some(parent) = cgroup_dir("cgroup2", None)
    {
        parents.push((TreeKind::CgroupV2, parent));
    }
    if want("cgroup1")
        && let Some(parent) = cgroup_dir("cgroup", Some("pids"))
    {
        parents.push((TreeKind::CgroupV1, parent));
    }
    parents
}

/// Whether this process may create entries in `dir` (its effective ids, as mkdir checks).
pub(crate) fn may_write(dir: &Path) -> bool {
    nix::unistd::faccessat(
        nix::fcntl::AT_FDCWD,
        dir,
        nix::unistd::AccessFlags::W_OK,
        nix::fcntl::AtFlags::AT_EACCESS,
    )
    .is_ok()
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
                    for pid in cgroupfs::read_procs(&t.path().join(procs)) {
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

impl Part {
    /// `subject` or `aux`, as `WEDGE_TRIAL_PART` names it.
    pub fn name(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Aux => "aux",
        }
    }

    /// The other part.
    pub fn other(self) -> Part {
        match self {
            Part::Subject => Part::Aux,
            Part::Aux => Part::Subject,
        }
    }
}

/// A process wedge started through `wedge-init` ([`crate::engine::pidns`]): the keeper (wedge's child)
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
    roots: Mutex<Vec<(i32, Part)>>,
    keepers: Mutex<Vec<Keeper>>,
    /// Cgroups (in any hierarchy) outside the trial's own that its processes were seen in.
    escaped: Mutex<BTreeSet<PathBuf>>,
    /// The trial's own cgroups besides `dir` (the v1 directories of its limits).
    own_dirs: Mutex<Vec<PathBuf>>,
    /// The cgroups directly below each hierarchy's root and wedge's own cgroup there when the
    /// trial began (where runtimes make theirs): one made since that holds none of the trial's
    /// processes is still the trial's when no other trial ran meanwhile.
    top_before: BTreeSet<PathBuf>,
    /// When the trial's processes' cgroups were last read, and the pids read then.
    sampled: Mutex<(Option<Instant>, BTreeSet<i32>)>,
    created: std::time::SystemTime,
}

/// How often every process of a trial has its cgroups read (new processes are read at once):
/// a runtime moves a process it made into the cgroups it made within milliseconds, and the
/// process then stays there while it runs.
const CGROUP_SAMPLE_EVERY: Duration = Duration::from_millis(20);

impl TrialTree {
    /// Creates the tree's cgroups (if its kind has them). `marker` must be unique per trial.
    pub fn create(kind: &TreeKind, marker: &str) -> io::Result<TrialTree> {
        let dir = match kind {
            TreeKind::CgroupV2(run) | TreeKind::CgroupV1(run) => {
                let dir = run.join(marker);
                fs::create_dir(&dir)?;
                fs::create_dir(dir.join("subject"))?;
                // `aux` is made when its first process is started (`join_file`): most trials
                // start none, and a cgroup's mkdir and rmdir are among a trial's dearest calls.
                Some(dir)
            }
            TreeKind::Subreaper => None,
        };
        Ok(TrialTree {
            kind: kind.clone(),
            dir,
            marker: marker.to_string(),
            roots: Mutex::new(Vec::new()),
            keepers: Mutex::new(Vec::new()),
            escaped: Mutex::new(BTreeSet::new()),
            own_dirs: Mutex::new(Vec::new()),
            top_before: top_cgroups(),
            sampled: Mutex::new((None, BTreeSet::new())),
            created: coarse_now(),
        })
    }

    /// The marker value the trial's processes carry in [`MARKER_VAR`].
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// The `cgroup.procs` file a new process writes `0` to (in `pre_exec`) to join `part`,
    /// making `aux`'s cgroup the first time (a failure shows as the process's failed join).
    pub fn join_file(&self, part: Part) -> Option<CString> {
        let dir = self.dir.as_ref()?;
        let sub = match part {
            Part::Subject => "subject",
            Part::Aux => "aux",
        };
        if part == Part::Aux {
            let _ = fs::create_dir(dir.join(sub));
        }
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
        self.roots.lock().push((pid, part));
    }

    /// Records the keeper of a process wedge started in `part`, and its namespace's init.
    pub fn add_keeper(&self, keeper: i32, init: Option<i32>, part: Part) {
        self.keepers.lock().push(Keeper { keeper, init, part });
    }

    /// The trial's cgroups besides its own directory (the v1 directories of its limits): what
    /// its processes are seen in there is no escape, and what they nest there is the trial's.
    pub fn add_own_dirs(&self, dirs: &[PathBuf]) {
        self.own_dirs.lock().extend(dirs.iter().cloned());
    }

    /// Every live (non-zombie) process of `part` (or of the whole tree with `None`): the members
    /// of its cgroups (nested ones included) and every descendant of its keepers and inits,
    /// wherever it moved itself; never the keepers and inits themselves. A descendant of an init
    /// (the trial's namespace is shared by both parts) that sits in the other part's cgroup
    /// belongs to that part.
    pub fn pids(&self, part: Option<Part>) -> Vec<i32> {
        let mut pids = match &self.dir {
            Some(dir) => Self::cgroup_pids(dir, part),
            None => self.marked_pids(part),
        };
        // What the trial's processes made elsewhere and moved into is the trial's too (which part
        // moved there is not recorded: the subject's, since it is what a trial is about).
        if part != Some(Part::Aux) {
            for root in self.made_elsewhere().0 {
                pids.extend(cgroupfs::members(&root));
            }
        }
        let keepers: Vec<Keeper> = self
            .keepers
            .lock()
            .iter()
            .filter(|k| part.is_none_or(|want| want == k.part))
            .copied()
            .collect();
        let ours: Vec<i32> = keepers
            .iter()
            .flat_map(|k| std::iter::once(k.keeper).chain(k.init))
            .collect();
        let other: BTreeSet<i32> = match (&self.dir, part) {
            (Some(dir), Some(p)) => Self::cgroup_pids(dir, Some(p.other()))
                .into_iter()
                .collect(),
            _ => BTreeSet::new(),
        };
        let all_ours: Vec<i32> = self.wedges_own();
        // Without a namespace, what a keeper's subject orphaned goes to wedge once the keeper
        // has ended with its subject: wedge's own children that carry this trial's marker.
        if keepers.iter().any(|k| k.init.is_none()) {
            pids.extend(self.adopted(part));
        }
        pids.extend(
            descendants(&ours)
                .into_iter()
                .filter(|pid| !other.contains(pid) && !all_ours.contains(pid)),
        );
        pids.retain(|&pid| {
            !all_ours.contains(&pid)
                && crate::engine::proc::stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
        });
        pids.sort_unstable();
        pids.dedup();
        self.sample_cgroups(&pids, false);
        crate::engine::leftovers::seen(&self.marker, &pids);
        pids
    }

    /// The members of the trial's cgroup subtree for `part` (the trial directory itself for
    /// the whole tree).
    fn cgroup_pids(dir: &Path, part: Option<Part>) -> Vec<i32> {
        let parts: &[&str] = match part {
            Some(Part::Subject) => &["subject"],
            Some(Part::Aux) => &["aux"],
            None => &["subject", "aux", ""],
        };
        // cgroup2 tells in one read whether a subtree holds any live task (v1 cannot: then
        // every part is walked); the trial directory's answer covers both parts.
        let empty = |d: &Path| cgroupfs::populated(d) == Some(false);
        if part.is_none() && empty(dir) {
            return Vec::new();
        }
        let mut pids = Vec::new();
        for p in parts {
            let sub = dir.join(p);
            if p.is_empty() {
                pids.extend(cgroupfs::read_procs(&sub.join("cgroup.procs")));
            } else if !empty(&sub) {
                pids.extend(cgroupfs::members(&sub));
            }
        }
        pids
    }

    /// The trial's own cgroups: its directory and the v1 directories of its limits.
    fn own_cgroups(&self) -> Vec<PathBuf> {
        self.dir
            .iter()
            .cloned()
            .chain(self.own_dirs.lock().iter().cloned())
            .collect()
    }

    /// Every keeper and init of the trial: wedge's, never the trial's processes.
    fn wedges_own(&self) -> Vec<i32> {
        self.keepers
            .lock()
            .iter()
            .flat_map(|k| std::iter::once(k.keeper).chain(k.init))
            .collect()
    }

    /// Reads where `pids` are in every cgroup hierarchy (all of them every
    /// [`CGROUP_SAMPLE_EVERY`], or with `all`; new ones always) and remembers each cgroup
    /// outside the trial's own.
    pub fn sample_cgroups(&self, pids: &[i32], all: bool) {
        let now = Instant::now();
        let to_read: Vec<i32> = {
            let mut sampled = self.sampled.lock();
            let due = all || sampled.0.is_none_or(|t| now >= t + CGROUP_SAMPLE_EVERY);
            let read: Vec<i32> = pids
                .iter()
                .copied()
                .filter(|p| due || !sampled.1.contains(p))
                .collect();
            if due {
                sampled.0 = Some(now);
            }
            sampled.1.extend(read.iter().copied());
            read
        };
        let own = self.own_cgroups();
        for pid in to_read {
            for (h, path) in cgroupfs::cgroups_of(pid, cgroupfs::hierarchies()) {
                let inside_own = own.iter().any(|o| path.starts_with(o));
                // Where wedge started it (its own cgroup there) or above: not a move.
                let at_start = h.own.starts_with(&path);
                // Inside another trial's cgroups (a runtime that copies the cgroup paths it runs
                // in from one hierarchy into another, as systemd-nspawn does, can put a process
                // there): never this trial's to remove.
                let wedges = [&h.mount, &h.own].iter().any(|base| {
                    path.strip_prefix(base)
                        .ok()
                        .and_then(|rest| rest.components().next())
                        .is_some_and(|c| c.as_os_str().to_string_lossy().starts_with("wedge-"))
                });
                if !inside_own && !at_start && !wedges {
                    self.escaped.lock().insert(path);
                }
            }
        }
    }

    /// The children wedge adopted (it is a subreaper) that carry this trial's marker (and, with
    /// `part`, that part's), with their descendants.
    fn adopted(&self, part: Option<Part>) -> Vec<i32> {
        let own = std::process::id() as i32;
        let roots: Vec<i32> = crate::engine::proc::children(own)
            .into_iter()
            .filter(|&pid| self.carries_marker(pid, part))
            .collect();
        let mut all = descendants(&roots);
        all.extend(roots);
        all
    }

    /// Whether `pid`'s environment holds this trial's marker (and `part`'s, if given).
    fn carries_marker(&self, pid: i32, part: Option<Part>) -> bool {
        let Some(env) = crate::engine::proc::environ(pid) else {
            return false;
        };
        let has = |n: &str| env.split(|&b| b == 0).any(|e| e == n.as_bytes());
        has(&format!("{MARKER_VAR}={}", self.marker))
            && part.is_none_or(|p| has(&format!("{PART_VAR}={}", p.name())))
    }

    /// Without cgroups: the roots, their descendants, and every process carrying the marker.
    fn marked_pids(&self, part: Option<Part>) -> Vec<i32> {
        let roots: Vec<i32> = self
            .roots
            .lock()
            .iter()
            .filter(|(_, p)| part.is_none_or(|want| want == *p))
            .map(|(pid, _)| *pid)
            .collect();
        let needle = format!("{MARKER_VAR}={}", self.marker);
        let part_needle = part.map(|p| format!("{PART_VAR}={}", p.name()));
        let all: Vec<(i32, i32)> = crate::engine::proc::all_pids()
            .into_iter()
            .filter_map(|pid| crate::engine::proc::stat(pid).map(|s| (pid, s.ppid)))
            .collect();
        let mut found: Vec<i32> = roots.clone();
        for &(pid, _) in &all {
            if let Some(env) = crate::engine::proc::environ(pid) {
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
        for k in self.keepers.lock().iter() {
            if let Some(init) = k.init {
                let _ = kill(Pid::from_raw(init), Signal::SIGKILL);
            }
        }
        // A last look at where the processes are, then every cgroup the trial owns at once.
        let before = self.pids(None);
        self.sample_cgroups(&before, true);
        if let (TreeKind::CgroupV2(_), Some(dir)) = (&self.kind, &self.dir) {
            let kill_file = dir.join("cgroup.kill");
            if kill_file.exists() {
                let _ = fs::write(&kill_file, "1");
            }
        }
        for root in self.made_elsewhere().0 {
            cgroupfs::kill_members(&root);
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
        match &self.dir {
            Some(dir) => cgroupfs::remove_tree(dir, Instant::now() + cgroupfs::REMOVE_BOUND),
            None => Ok(()),
        }
    }

    /// The cgroups outside the trial's own that its processes were seen in, as two lists: the
    /// topmost cgroups the trial made for them (in any hierarchy), and those that existed
    /// before it (which are never the trial's to remove).
    fn made_elsewhere(&self) -> (BTreeSet<PathBuf>, Vec<PathBuf>) {
        let escaped: Vec<PathBuf> = self.escaped.lock().iter().cloned().collect();
        let own = self.own_cgroups();
        let mut made = BTreeSet::new();
        let mut before = Vec::new();
        for path in escaped {
            match made_root(&path, &own, self.created) {
                Some(root) => {
                    made.insert(root);
                }
                None => before.push(path),
            }
        }
        (made, before)
    }

    /// Cgroups outside the trial's own that its processes moved to and that the trial made:
    /// each (the topmost one the trial made, with everything below it) is a leak, emptied and
    /// removed here. Cgroups that existed before are only reported. With `alone` (no other
    /// trial of this wedge ran meanwhile), every cgroup made since the trial began directly
    /// below a hierarchy's root or wedge's own cgroup that never held a trial process (a
    /// runtime killed between its mkdir and its move) is noted, never blamed nor removed:
    /// any other process on the machine (another wedge, a container engine, systemd) may have
    /// made it. Call after [`TrialTree::kill_all`]. Returns `(leaks, notes)`.
    pub fn remove_escaped(&self, alone: bool) -> (Vec<(PathBuf, String)>, Vec<String>) {
        let (made, before) = self.made_elsewhere();
        self.escaped.lock().clear();
        let mut leaks = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        if alone {
            let own = self.dir.clone();
            let appeared: Vec<PathBuf> = top_cgroups()
                .into_iter()
                .filter(|d| {
                    !self.top_before.contains(d)
                        && own.as_ref().is_none_or(|o| !o.starts_with(d))
                        && !made.iter().any(|m| d.starts_with(m) || m.starts_with(d))
                })
                .collect();
            notes.extend(appeared.iter().map(|d| {
                format!(
                    "cgroup {} appeared while the trial ran, but no process of it was seen there: not blamed on it, not removed",
                    d.display()
                )
            }));
        }
        notes.extend(before.iter().map(|path| {
            format!(
                "a process moved itself to cgroup {} (outside the trial's)",
                path.display()
            )
        }));
        for root in made {
            if !root.exists() {
                continue;
            }
            cgroupfs::kill_members(&root);
            // Killed, but a task may still be leaving it (EBUSY): as in remove().
            let removed = cgroupfs::remove_tree(&root, Instant::now() + cgroupfs::REMOVE_BOUND);
            let message = format!(
                "cgroup {} made outside the trial's tree{}",
                root.display(),
                match removed {
                    Ok(()) => " (removed)".to_string(),
                    Err(e) => format!(" (not removable: {e})"),
                }
            );
            leaks.push((root, message));
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

/// The topmost cgroup above (or at) `path` that was made after `created`, below its hierarchy's
/// root and never one of the trial's own cgroups or their ancestors: the cgroup the trial made
/// that holds `path`. `None` when `path` existed before the trial.
///
/// A cgroup directory's modification time is its creation time (making a child does not change
/// a parent's), stamped with the kernel's coarse clock, which is why `created` is read from that
/// clock too ([`coarse_now`]): a cgroup made after it is never older.
fn made_root(path: &Path, own: &[PathBuf], created: std::time::SystemTime) -> Option<PathBuf> {
    let mount = cgroupfs::hierarchies()
        .iter()
        .map(|h| h.mount.as_path())
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.components().count())?;
    let made = |p: &Path| {
        fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= created)
    };
    path.ancestors()
        .take_while(|a| *a != mount && a.starts_with(mount))
        .filter(|a| !own.iter().any(|o| o.starts_with(a)))
        .filter(|a| made(a))
        .last()
        .map(Path::to_path_buf)
}

/// The cgroups directly below each hierarchy's root and below wedge's own cgroup there, but
/// wedge's own run directories (`wedge-PID-N`, every trial's cgroups are inside them).
fn top_cgroups() -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for h in cgroupfs::hierarchies() {
        // wedge's own cgroup is often the root: list it once.
        let parents: &[&PathBuf] = if h.own == h.mount {
            &[&h.mount]
        } else {
            &[&h.mount, &h.own]
        };
        for parent in parents {
            let Ok(entries) = fs::read_dir(parent) else {
                continue;
            };
            out.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter(|e| !e.file_name().to_string_lossy().starts_with("wedge-"))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

/// The wall clock as the kernel's coarse clock reads it (what cgroupfs stamps directories with).
fn coarse_now() -> std::time::SystemTime {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into memory we own.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0;
    if !ok {
        return std::time::SystemTime::now();
    }
    std::time::UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Every descendant of `roots` (through every thread's `children`), however it detached
/// itself: in a pid namespace, orphans are re-parented inside it, so the walk from the keeper
/// and the init finds all of it.
fn descendants(roots: &[i32]) -> Vec<i32> {
    let mut found: Vec<i32> = Vec::new();
    let mut queue: Vec<i32> = roots.to_vec();
    while let Some(pid) = queue.pop() {
        for child in crate::engine::proc::children(pid) {
            if !found.contains(&child) && !roots.contains(&child) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}
