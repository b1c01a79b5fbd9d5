//! `wedge list` only plans, and planning changes nothing (issue 21): listing the library's
//! scenarios and the test scenarios creates, removes and changes no cgroup and starts no
//! process.
//!
//! How it is observed, soundly on a machine other tests share:
//! - Processes: the listing runs under a seccomp filter that kills it (SIGSYS) on any call that
//!   makes a process (`fork`, `vfork`, a `clone` without `CLONE_THREAD`); threads stay allowed.
//!   `clone3`, whose flags a filter cannot read, fails with `ENOSYS`, so libc falls back to
//!   `clone` and the filter sees every new task's flags.
//! - Cgroups: the listing runs in a fresh cgroup of its own in every mounted hierarchy (what
//!   wedge calls its own cgroup, where a run makes its run cgroup and cleans up stale ones), each
//!   holding a stale-looking `wedge-PID-0` directory of a pid that cannot exist. Its cgroup
//!   directories are compared before and after, and an inotify watch on each sees a directory
//!   made and removed again in between. Other processes on the machine (other tests make trial
//!   cgroups next to ours) cannot disturb either observation.
#![cfg(target_arch = "x86_64")]

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// Syscall numbers with this bit are x32's: killed, so none slips past the number checks.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Where `seccomp_data` holds the syscall number, the architecture and the first argument (its
/// low half on little-endian x86_64).
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0: u32 = 16;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The filter: every call that makes a process kills the caller; everything else runs.
fn no_new_processes() -> Vec<libc::sock_filter> {
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let jge = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
    let jset = libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    let kill = libc::SECCOMP_RET_KILL_PROCESS;
    let allow = libc::SECCOMP_RET_ALLOW;
    let nr = |n: libc::c_long| n as u32;
    vec![
        stmt(ld, ARCH),
        jump(jeq, AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, kill),
        stmt(ld, NR),
        jump(jge, X32_SYSCALL_BIT, 0, 1),
        stmt(ret, kill),
        jump(jeq, nr(libc::SYS_clone3), 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        jump(jeq, nr(libc::SYS_fork), 0, 1),
        stmt(ret, kill),
        jump(jeq, nr(libc::SYS_vfork), 0, 1),
        stmt(ret, kill),
        jump(jeq, nr(libc::SYS_clone), 1, 0),
        stmt(ret, allow),
        stmt(ld, ARG0),
        jump(jset, libc::CLONE_THREAD as u32, 0, 1),
        stmt(ret, allow),
        stmt(ret, kill),
    ]
}

/// A fresh cgroup of this test in one hierarchy, with a stale-looking run directory in it;
/// removed (both) when dropped.
struct TestCgroup {
    dir: PathBuf,
    stale: PathBuf,
    watch: Watch,
}

impl TestCgroup {
    /// Made under this process's own cgroup of `h`; `None` where this process may not.
    fn new(h: &wedge::engine::cgroupfs::Hierarchy, tag: &str) -> Option<TestCgroup> {
        let dir = h.own.join(tag);
        std::fs::create_dir(&dir).ok()?;
        // A v1 cpuset cgroup takes no process before it has CPUs and memory nodes.
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = std::fs::read_to_string(h.own.join(f)) {
                let _ = std::fs::write(dir.join(f), v.trim());
            }
        }
        // No process has pid_max: wedge would take this for a run a killed wedge left.
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap();
        let stale = dir.join(format!("wedge-{}-0", pid_max.trim()));
        std::fs::create_dir(&stale).unwrap();
        let watch = Watch::new(&dir);
        Some(TestCgroup { dir, stale, watch })
    }

    /// Every cgroup directory from this one down.
    fn tree(&self) -> BTreeSet<PathBuf> {
        wedge::engine::cgroupfs::subtree(&self.dir)
            .into_iter()
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Deepest first, with whatever a failing listing left in it.
        let end = std::time::Instant::now() + wedge::engine::cgroupfs::REMOVE_BOUND;
        let _ = wedge::engine::cgroupfs::remove_tree(&self.dir, end);
    }
}

/// An inotify watch for entries made or removed in one directory.
struct Watch(libc::c_int);

impl Watch {
    fn new(dir: &Path) -> Watch {
        // SAFETY: plain syscalls on a descriptor this watch owns, and a NUL-terminated path.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(
                fd >= 0,
                "inotify_init1: {}",
                std::io::Error::last_os_error()
            );
            let path = CString::new(dir.as_os_str().as_bytes()).unwrap();
            let mask = libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO;
            let w = libc::inotify_add_watch(fd, path.as_ptr(), mask);
            assert!(
                w >= 0,
                "inotify_add_watch {}: {}",
                dir.display(),
                std::io::Error::last_os_error()
            );
            Watch(fd)
        }
    }

    /// Whether anything was made or removed since the watch began (or was last asked).
    fn saw_changes(&self) -> bool {
        let mut buf = [0u8; 4096];
        // SAFETY: a read into a buffer of the length given.
        let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        n > 0
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // SAFETY: the descriptor is this watch's own.
        unsafe {
            libc::close(self.0);
        }
    }
}

/// Runs `wedge list DIR` under the filter, in `cgroups` (their `cgroup.procs` files).
fn list_confined(dir: &Path, cgroups: &[TestCgroup]) -> Output {
    let joins: Vec<CString> = cgroups
        .iter()
        .map(|c| CString::new(c.dir.join("cgroup.procs").as_os_str().as_bytes()).unwrap())
        .collect();
    let filter = no_new_processes();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wedge"));
    cmd.arg("list")
        .arg(dir)
        .env_remove("WEDGE_ISOLATION")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec the child only makes syscalls (open, write, close, prctl,
    // seccomp) on memory prepared before the fork; nothing allocates or takes a lock.
    unsafe {
        cmd.pre_exec(move || {
            for procs in &joins {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            let set = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            );
            if set != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("wedge list could not be started")
}

/// The scenario directories to list: the library's and the tests' (each subdirectory too).
fn scenario_dirs() -> Vec<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tests = manifest.join("tests/scenarios");
    let mut dirs = vec![manifest.join("../scenarios"), tests.clone()];
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(&tests)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    dirs.extend(subdirs);
    dirs
}

#[test]
fn listing_creates_no_cgroup_and_starts_no_process() {
    let tag = format!("list-purity-{}", std::process::id());
    let cgroups: Vec<TestCgroup> = wedge::engine::cgroupfs::hierarchies()
        .iter()
        .filter_map(|h| TestCgroup::new(h, &tag))
        .collect();
    if cgroups.is_empty() {
        eprintln!("no cgroup hierarchy this test may write in: only processes are checked");
    }
    for dir in scenario_dirs() {
        let before: Vec<BTreeSet<PathBuf>> = cgroups.iter().map(TestCgroup::tree).collect();
        let out = list_confined(&dir, &cgroups);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(
            out.status.signal(),
            Some(libc::SIGSYS),
            "wedge list {} started a process (killed by the filter); stdout:\n{stdout}",
            dir.display()
        );
        assert!(
            out.status.success(),
            "wedge list {}: {stderr}",
            dir.display()
        );
        assert!(
            !stdout.trim().is_empty(),
            "wedge list {} listed nothing",
            dir.display()
        );
        for (c, before) in cgroups.iter().zip(&before) {
            assert_eq!(
                &c.tree(),
                before,
                "wedge list {} changed the cgroups",
                dir.display()
            );
            assert!(
                c.stale.is_dir(),
                "wedge list {} removed {}",
                dir.display(),
                c.stale.display()
            );
            assert!(
                !c.watch.saw_changes(),
                "wedge list {} made or removed a cgroup in {}",
                dir.display(),
                c.dir.display()
            );
        }
    }
}
