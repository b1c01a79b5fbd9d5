//! Every cgroup hierarchy the host mounts, read as files: cgroup2 and each cgroup v1 hierarchy,
//! named ones (`name=systemd`) included. A trial's processes may create cgroups in any of them
//! (runc makes one per v1 controller, systemd-nspawn a `name=systemd` tree); the trial's tree
//! (`isolation.rs`, which this module must not depend on) uses these helpers to find where its processes went, to empty what
//! they made and to remove it deepest first.
//!
//! Hand-written rather than `procfs`' cgroup readers: besides `/proc/PID/cgroup` lines this
//! needs the mount table joined to them (which hierarchy a line names, where it is mounted) and
//! removal with the kernel's `EBUSY` window, which no crate covers.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where its root is mounted.
    pub mount: PathBuf,
    /// `None` for cgroup2; for v1, the controllers and `name=` of the mount (as
    /// `/proc/PID/cgroup` names them in its second field).
    pub controllers: Option<Vec<String>>,
    /// wedge's own cgroup in it: where every process wedge starts begins.
    pub own: PathBuf,
}

impl Hierarchy {
    /// `cgroup2`, or the v1 controllers joined with commas (`cpu,cpuacct`, `name=systemd`).
    pub fn name(&self) -> String {
        match &self.controllers {
            None => "cgroup2".to_string(),
            Some(c) => c.join(","),
        }
    }

    /// Whether a `/proc/PID/cgroup` line's second field names this hierarchy.
    fn matches(&self, field: &str) -> bool {
        match &self.controllers {
            None => field.is_empty(),
            Some(c) => {
                let mut named: Vec<&str> = field.split(',').collect();
                let mut mine: Vec<&str> = c.iter().map(String::as_str).collect();
                named.sort_unstable();
                mine.sort_unstable();
                named == mine
            }
        }
    }
}

/// The hierarchies mounted with their whole tree visible (a mount of a sub-tree is skipped: its
/// root's mount shows the same cgroups), read once per process.
pub fn hierarchies() -> &'static [Hierarchy] {
    static ALL: OnceLock<Vec<Hierarchy>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        parse_hierarchies(&mountinfo, &own)
    })
}

/// [`hierarchies`] from the text of `/proc/self/mountinfo` and `/proc/self/cgroup`.
pub fn parse_hierarchies(mountinfo: &str, own_cgroups: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split(' ');
        let (Some(fstype), Some(_source)) = (r.next(), r.next()) else {
            continue;
        };
        let options = r.next().unwrap_or("");
        let mut l = left.split(' ');
        let (Some(root), Some(mount)) = (l.nth(3), l.next()) else {
            continue;
        };
        if root != "/" {
            continue;
        }
        let controllers = match fstype {
            "cgroup2" => None,
            "cgroup" => Some(v1_controllers(options)),
            _ => continue,
        };
        let mut h = Hierarchy {
            mount: PathBuf::from(mount),
            controllers,
            own: PathBuf::from(mount),
        };
        if out.iter().any(|o| o.controllers == h.controllers) {
            continue;
        }
        if let Some(path) = path_in(own_cgroups, &h) {
            let below = path.trim_start_matches('/');
            // At the root, `own` is the mount itself, spelled the same (no trailing `/`), so a
            // walk over both visits it once.
            if !below.is_empty() {
                h.own = h.mount.join(below);
            }
        }
        out.push(h);
    }
    out
}

/// The controllers (and `name=`) among a v1 mount's super options.
fn v1_controllers(options: &str) -> Vec<String> {
    const NOT_CONTROLLERS: [&str; 6] = [
        "rw",
        "ro",
        "xattr",
        "noprefix",
        "clone_children",
        "cpuset_v2_mode",
    ];
    options
        .split(',')
        .filter(|o| !NOT_CONTROLLERS.contains(o) && !o.starts_with("release_agent="))
        .map(str::to_string)
        .collect()
}

/// The path a `/proc/PID/cgroup` text gives for hierarchy `h`.
fn path_in(text: &str, h: &Hierarchy) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let field = parts.next()?;
        let path = parts.next()?;
        h.matches(field).then(|| path.to_string())
    })
}

/// The cgroup directory (absolute) of `pid` in each hierarchy of `all`; empty once the process
/// is gone.
pub fn cgroups_of(pid: i32, all: &[Hierarchy]) -> Vec<(&Hierarchy, PathBuf)> {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return Vec::new();
    };
    all.iter()
        .filter_map(|h| {
            let path = path_in(&text, h)?;
            Some((h, h.mount.join(path.trim_start_matches('/'))))
        })
        .collect()
}

/// `dir` and every cgroup below it, parents before children.
pub fn subtree(dir: &Path) -> Vec<PathBuf> {
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

/// The pids listed in a `cgroup.procs` file.
pub fn read_procs(path: &Path) -> Vec<i32> {
    crate::engine::proc::read_small(path)
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether any live task is in cgroup2 directory `dir` or below it: its `cgroup.events`
/// `populated` field, which the kernel keeps for the whole subtree (a task leaves it as it
/// exits, before it is a zombie). `None` where there is no such file (cgroup v1, or `dir` is
/// gone): ask [`members`] then. One read instead of a walk of the subtree.
pub fn populated(dir: &Path) -> Option<bool> {
    let events = crate::engine::proc::read_small(dir.join("cgroup.events"))?;
    events
        .lines()
        .find_map(|l| l.strip_prefix("populated "))
        .map(|v| v.trim() != "0")
}

/// Every process in `dir` or below it.
pub fn members(dir: &Path) -> Vec<i32> {
    subtree(dir)
        .iter()
        .flat_map(|d| read_procs(&d.join("cgroup.procs")))
        .collect()
}

/// SIGKILLs every process in `dir` and below (`cgroup.kill` where the kernel has it); returns
/// the pids it signalled.
pub fn kill_members(dir: &Path) -> Vec<i32> {
    let kill_file = dir.join("cgroup.kill");
    if kill_file.exists() {
        let _ = fs::write(&kill_file, "1");
    }
    let pids = members(dir);
    for &pid in &pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    pids
}

/// How long removing a cgroup may wait for its just-killed tasks to leave it. They leave within
/// milliseconds on an idle machine, but under load (two builds on two cores) a dying task has
/// been seen to take over two seconds; this is a net, never a wait when nothing is busy.
pub const REMOVE_BOUND: Duration = Duration::from_secs(10);

/// Removes `dir` and every cgroup below it, children first, retrying until `end` while a
/// just-killed task is still leaving one (`EBUSY`). Already gone is success.
pub fn remove_tree(dir: &Path, end: Instant) -> io::Result<()> {
    loop {
        let mut all = subtree(dir);
        // Children before their parents: a cgroup with children cannot be removed.
        all.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        match all.iter().try_for_each(|d| match fs::remove_dir(d) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= end => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_micros(200)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
33 30 0:29 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
34 30 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
36 30 0:27 /sub /mnt/cpu-sub rw - cgroup cgroup rw,cpu
";
    const OWN: &str = "\
9:name=systemd:/
8:pids:/wedge
7:cpu,cpuacct:/a/b
1:cpu:/
0::/ci
";

    #[test]
    fn reads_every_hierarchy_with_wedges_own_cgroup() {
        let all = parse_hierarchies(MOUNTINFO, OWN);
        let names: Vec<String> = all.iter().map(Hierarchy::name).collect();
        assert_eq!(
            names,
            ["cpu", "pids", "name=systemd", "cgroup2", "cpu,cpuacct"]
        );
        assert_eq!(all[1].own, Path::new("/sys/fs/cgroup/pids/wedge"));
        assert_eq!(all[2].own, Path::new("/sys/fs/cgroup/systemd"));
        // At the root, the very same spelling as the mount (no trailing separator).
        assert_eq!(all[2].own.as_os_str(), all[2].mount.as_os_str());
        assert_eq!(all[3].own, Path::new("/sys/fs/cgroup/unified/ci"));
        assert_eq!(all[4].own, Path::new("/sys/fs/cgroup/cpu,cpuacct/a/b"));
    }

    #[test]
    fn a_line_names_only_its_own_hierarchy() {
        let all = parse_hierarchies(MOUNTINFO, OWN);
        // "cpu" alone is not the "cpu,cpuacct" line, and that line is not "cpu".
        assert_eq!(path_in("7:cpu,cpuacct:/x\n", &all[0]), None);
        assert_eq!(path_in("1:cpu:/y\n", &all[0]).as_deref(), Some("/y"));
        assert_eq!(path_in("0::/z\n", &all[2]), None);
        assert_eq!(path_in("0::/z\n", &all[3]).as_deref(), Some("/z"));
        assert_eq!(path_in("1:cpu:/y\n", &all[4]), None);
        assert_eq!(
            path_in("7:cpuacct,cpu:/x\n", &all[4]).as_deref(),
            Some("/x")
        );
    }
}
