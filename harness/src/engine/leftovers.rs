//! Files and directories a trial's processes leave in the machine's shared scratch places
//! (`/tmp`, `/var/tmp`, `/run`, `/dev/shm`), not only in the trial's own temp dir: `/run/runc/ID`,
//! `/tmp/crun.*`, a `codex-…` directory in `/tmp`. Each is found, attributed to the trial that
//! made it even when trials run side by side (`--jobs`), and never confused with what was there
//! before or what another trial made.
//!
//! How: one fanotify watcher per wedge process (`FAN_REPORT_DFID_NAME`, a mark on each
//! filesystem holding those places) hears every file and directory created or moved in there,
//! with the pid of the process that did it. The creator's environment names its trial
//! (`WEDGE_TRIAL_ID`, which every trial process inherits). At teardown a trial takes the paths
//! attributed to it that still exist: those are its leftovers, removed. Paths of processes
//! that are not any trial's are ignored.
//!
//! A creator that exited before the watcher read it is still known when the engine saw it among
//! the trial's processes in the last seconds (it lists them every few milliseconds while a
//! trial waits). The limit: one that lived shorter than that (a `mkdir -p`, a `mktemp`) cannot
//! be asked. Its path is claimed by a trial only when it is a directory holding
//! a path attributed to that trial (`mkdir -p /run/x/y` then a file in it from the runtime
//! itself); otherwise it is noted in the log of every trial that was running then, never blamed
//! on one and never removed. A timing rule ("the only trial running") would blame a trial for
//! whatever any other process on the machine left meanwhile.
//!
//! Where fanotify cannot watch (not root, a kernel or filesystem without directory-entry events,
//! e.g. a tmpfs before file handles came to it), nothing is attributed and the run's log says so
//! once; the trial's own temp dir is still checked by the trial.
//!
//! Hand-written on `libc`: nix's fanotify wrapper does not read the directory-handle and name
//! records this mode reports.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wedge_core::sync::{Condvar, Mutex};

/// The shared places watched.
pub const ROOTS: [&str; 4] = ["/tmp", "/var/tmp", "/run", "/dev/shm"];

/// A path created while trials ran, and whose it is.
#[derive(Debug, Clone)]
struct Created {
    path: PathBuf,
    /// The trial it is attributed to: its creator's, or the one trial running then.
    marker: Option<String>,
    /// The trials running when it was made (who may have made it, when its creator had exited
    /// before it could be read and several ran).
    candidates: BTreeSet<String>,
}

/// What a trial left in the shared places ([`Watcher::take`]).
#[derive(Debug, Default)]
pub struct Left {
    /// The paths it made (topmost first; what it made inside them is left out).
    pub made: Vec<PathBuf>,
    /// Paths made while it and other trials ran whose creator exited before it could be read:
    /// perhaps its own, perhaps another's, so neither blamed on it nor removed.
    pub uncertain: Vec<PathBuf>,
}

/// The watcher of one wedge process.
pub struct Watcher {
    created: Mutex<Vec<Created>>,
    /// The highest sync mark the watcher has read (see [`Watcher::sync`]).
    synced: Mutex<u64>,
    seen_sync: Condvar,
}

/// The name prefix of the files [`Watcher::sync`] makes.
const SYNC_PREFIX: &str = ".wedge-leftovers-sync-";

/// The trials running now in this process (their markers).
static RUNNING: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// The trial processes the engine has seen lately (pid → marker, when last seen): how a creator
/// that is gone by the time its event is read is still known, if it lived long enough to be
/// seen (the engine lists every trial's processes every few milliseconds while it waits).
static SEEN: Mutex<Option<HashMap<i32, (String, std::time::Instant)>>> = Mutex::new(None);

/// How long a pid seen in a trial stays attributed to it after it was last seen.
const SEEN_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Notes that `pids` are processes of the trial `marker` (called as the engine lists them).
pub fn seen(marker: &str, pids: &[i32]) {
    let now = std::time::Instant::now();
    let mut seen = SEEN.lock();
    let map = seen.get_or_insert_with(HashMap::new);
    if map.len() > 100_000 {
        map.retain(|_, (_, at)| now.duration_since(*at) < SEEN_FOR);
    }
    for &pid in pids {
        match map.get_mut(&pid) {
            Some((m, at)) if m == marker => *at = now,
            _ => {
                map.insert(pid, (marker.to_string(), now));
            }
        }
    }
}

/// The trial `pid` was seen in lately, if any.
fn seen_in(pid: i32) -> Option<String> {
    let seen = SEEN.lock();
    let (marker, at) = seen.as_ref()?.get(&pid)?;
    (at.elapsed() < SEEN_FOR).then(|| marker.clone())
}

/// Marks a trial as running (call before its first process starts).
pub fn trial_began(marker: &str) {
    RUNNING.lock().insert(marker.to_string());
}

/// Marks a trial as ended.
pub fn trial_ended(marker: &str) {
    RUNNING.lock().remove(marker);
}

/// Why the leftover watch cannot run on this machine.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("fanotify_init: {0}")]
    Init(#[source] std::io::Error),
    #[error("fanotify cannot watch {roots}: {source}")]
    Unwatchable {
        roots: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the watcher thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The process's watcher, started on first use; `Err` with the reason when fanotify cannot
/// watch here.
pub fn watcher() -> Result<&'static Watcher, &'static WatchError> {
    static WATCHER: OnceLock<Result<&'static Watcher, WatchError>> = OnceLock::new();
    WATCHER
        .get_or_init(|| {
            let watch = Watch::open()?;
            let w: &'static Watcher = Box::leak(Box::new(Watcher {
                created: Mutex::new(Vec::new()),
                synced: Mutex::new(0),
                seen_sync: Condvar::new(),
            }));
            std::thread::Builder::new()
                .name("wedge-leftovers".into())
                .spawn(move || watch.run(w))
                .map_err(WatchError::Thread)?;
            Ok(w)
        })
        .as_ref()
        .map(|w| *w)
}

impl Watcher {
    /// Takes what the trial `marker` left: the paths attributed to it that still exist, and the
    /// directories made while it ran (its creator unknown) that hold one of them, which can
    /// only be its own too.
    pub fn take(&self, marker: &str) -> Left {
        let mut created = self.created.lock();
        let running = RUNNING.lock().clone();
        let (mut mine, mut unknown) = (Vec::new(), Vec::new());
        created.retain(|c| match &c.marker {
            Some(m) if m == marker => {
                mine.push(c.path.clone());
                false
            }
            None if c.candidates.contains(marker) => {
                unknown.push(c.path.clone());
                // Kept for the other candidates still running.
                c.candidates
                    .iter()
                    .any(|t| t != marker && running.contains(t))
            }
            // Another trial's, kept until it takes them (or forgotten once it is gone).
            Some(m) => running.contains(m),
            None => c.candidates.iter().any(|t| running.contains(t)),
        });
        let claimed: Vec<PathBuf> = unknown
            .iter()
            .filter(|u| mine.iter().any(|m| m.starts_with(u)))
            .cloned()
            .collect();
        created.retain(|c| !claimed.contains(&c.path));
        mine.extend(claimed);
        let made = topmost(mine);
        let uncertain = topmost(unknown)
            .into_iter()
            .filter(|u| !made.iter().any(|m| u.starts_with(m) || m.starts_with(u)))
            .collect();
        Left { made, uncertain }
    }

    /// Returns once every event queued before the call has been read: it creates a file of its
    /// own in a watched place and waits (bounded) until the watcher has read that file's event,
    /// which the kernel queued after all earlier ones. `false` if that did not happen in time.
    pub fn sync(&self) -> bool {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = Path::new(ROOTS[0]).join(format!("{SYNC_PREFIX}{}-{n}", std::process::id()));
        if fs::File::create(&path).is_err() {
            return false;
        }
        let _ = fs::remove_file(&path);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut synced = self.synced.lock();
        while *synced < n {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            synced = self.seen_sync.wait_timeout(synced, left).0;
        }
        true
    }

    fn synced_to(&self, n: u64) {
        let mut synced = self.synced.lock();
        *synced = (*synced).max(n);
        self.seen_sync.notify_all();
    }

    fn record(&self, path: PathBuf, marker: Option<String>, candidates: BTreeSet<String>) {
        self.created.lock().push(Created {
            path,
            marker,
            candidates,
        });
    }
}

/// The paths of `paths` that still exist and are not inside another of them.
fn topmost(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.sort();
    paths.dedup();
    let mut top: Vec<PathBuf> = Vec::new();
    for p in paths {
        if top.iter().any(|t| p.starts_with(t)) || fs::symlink_metadata(&p).is_err() {
            continue;
        }
        top.push(p);
    }
    top
}

/// Removes a leftover the trial made: a file, or a directory with everything in it.
pub fn remove(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The fanotify group and what resolving its events needs.
struct Watch {
    fd: OwnedFd,
    /// An open directory on each watched filesystem, by the filesystem's id (what events carry).
    mounts: Vec<([i32; 2], OwnedFd)>,
    /// Directory handles already resolved: to their path when inside a watched place.
    dirs: HashMap<Vec<u8>, Option<PathBuf>>,
}

impl Watch {
    fn open() -> Result<Watch, WatchError> {
        // SAFETY: fanotify_init with constant flags; the result is checked.
        let raw = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF
                    | libc::FAN_REPORT_DFID_NAME
                    | libc::FAN_UNLIMITED_QUEUE
                    | libc::FAN_CLOEXEC,
                (libc::O_RDONLY | libc::O_CLOEXEC) as libc::c_uint,
            )
        };
        if raw < 0 {
            return Err(WatchError::Init(std::io::Error::last_os_error()));
        }
        // SAFETY: fanotify_init returned a new descriptor this function owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut mounts: Vec<([i32; 2], OwnedFd)> = Vec::new();
        let mut watched = 0;
        for root in ROOTS {
            let Ok(dir) = fs::File::open(root) else {
                continue;
            };
            let Some(fsid) = fsid_of(&dir) else { continue };
            if mounts.iter().any(|(id, _)| *id == fsid) {
                watched += 1;
                continue;
            }
            let path = CString::new(root).expect("no NUL in a root");
            // SAFETY: a mark on the filesystem of a path we name; the result is checked.
            let marked = unsafe {
                libc::fanotify_mark(
                    fd.as_raw_fd(),
                    libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                    libc::FAN_CREATE | libc::FAN_MOVED_TO | libc::FAN_ONDIR,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                )
            } == 0;
            if marked {
                mounts.push((fsid, OwnedFd::from(dir)));
                watched += 1;
            }
        }
        if watched == 0 {
            return Err(WatchError::Unwatchable {
                roots: ROOTS.join(", "),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Watch {
            fd,
            mounts,
            dirs: HashMap::new(),
        })
    }

    /// Reads events for the life of the process.
    fn run(mut self, w: &'static Watcher) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match nix::unistd::read(&self.fd, &mut buf) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            };
            let mut at = 0;
            while let Some(event) = parse_event(&buf[at..n]) {
                at += event.len;
                if let Some((fsid, handle, name)) = event.dir_name {
                    self.handle(w, event.pid, fsid, handle, name);
                }
            }
        }
    }

    fn handle(&mut self, w: &Watcher, pid: i32, fsid: [i32; 2], handle: &[u8], name: &[u8]) {
        if pid == std::process::id() as i32 {
            // wedge's own, and among them the sync marks.
            let own = format!("{SYNC_PREFIX}{}-", std::process::id());
            if let Some(n) = name
                .strip_prefix(own.as_bytes())
                .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
            {
                w.synced_to(n);
            }
            return;
        }
        if name.is_empty() || name == b"." {
            return;
        }
        let Some(dir) = self.resolve(fsid, handle) else {
            return;
        };
        let path = dir.join(OsStr::from_bytes(name));
        // The trials' own directories (and all in them) are theirs to check.
        let in_trial_dir = ROOTS.iter().any(|r| {
            path.strip_prefix(r)
                .ok()
                .and_then(|rest| rest.components().next())
                .is_some_and(|first| {
                    first
                        .as_os_str()
                        .to_string_lossy()
                        .starts_with("wedge-trial-")
                })
        });
        if in_trial_dir {
            return;
        }
        if let Some((marker, candidates)) = attribute(pid) {
            w.record(path, marker, candidates);
        }
    }

    /// The path of a directory handle, when it is inside a watched place (cached).
    fn resolve(&mut self, fsid: [i32; 2], handle: &[u8]) -> Option<PathBuf> {
        let mut key = handle.to_vec();
        key.extend(fsid.iter().flat_map(|x| x.to_ne_bytes()));
        if let Some(known) = self.dirs.get(&key) {
            return known.clone();
        }
        let (_, mount) = self.mounts.iter().find(|(id, _)| *id == fsid)?;
        let path = open_handle(mount, handle).filter(|p| ROOTS.iter().any(|r| p.starts_with(r)));
        // A directory can be removed and its inode reused: cache only what is inside.
        if path.is_some() {
            self.dirs.insert(key, path.clone());
        }
        path
    }
}

/// The trial of the process `pid` (its `WEDGE_TRIAL_ID`) and the trials running now; `None`
/// when it is no trial's. A creator that is gone (or a zombie, whose environment reads empty)
/// is nobody's for sure: the path is kept with the running trials as candidates, for
/// [`Watcher::take`] to claim when it holds a path of theirs.
fn attribute(pid: i32) -> Option<(Option<String>, BTreeSet<String>)> {
    let running = RUNNING.lock().clone();
    if running.is_empty() {
        return None;
    }
    // The environment first (whole or empty, never cut short: `proc::environ`), then whether
    // the process still lives: a process that exits between the two reads an empty
    // environment, and only the later look tells that apart from a live process that is no
    // trial's.
    let env = crate::engine::proc::environ(pid);
    let alive = crate::engine::proc::stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X');
    match creator(env.as_deref(), alive, &running) {
        Creator::Trial(marker) => Some((Some(marker), running)),
        Creator::NoTrial => None,
        Creator::Gone => {
            let known = seen_in(pid).filter(|m| running.contains(m));
            Some((known, running))
        }
    }
}

/// Who made a path, as far as its creator's environment tells.
#[derive(Debug, PartialEq, Eq)]
enum Creator {
    /// A process of the running trial with this marker.
    Trial(String),
    /// A live process of no running trial.
    NoTrial,
    /// Exited (or exiting) before it could be read.
    Gone,
}

/// Decides from the creator's environment as read and whether it was alive *after* the read.
/// A marker found is the creator's (the read saw its memory). No marker counts only when the
/// process outlived the read: an exiting process reads empty, or cut short.
fn creator(env: Option<&[u8]>, alive_after: bool, running: &BTreeSet<String>) -> Creator {
    let Some(env) = env else {
        return Creator::Gone;
    };
    let needle = format!("{}=", crate::engine::marker::MARKER_VAR);
    let marker = env
        .split(|&b| b == 0)
        .find_map(|e| e.strip_prefix(needle.as_bytes()))
        .map(|m| String::from_utf8_lossy(m).into_owned());
    match marker {
        Some(m) if running.contains(&m) => Creator::Trial(m),
        _ if alive_after && !env.is_empty() => Creator::NoTrial,
        _ => Creator::Gone,
    }
}

/// One event as read: its length and, for a directory-entry event, the directory's filesystem
/// id and handle, and the entry's name.
struct Event<'a> {
    len: usize,
    pid: i32,
    dir_name: Option<([i32; 2], &'a [u8], &'a [u8])>,
}

/// Parses the event at the start of `buf` (`None` at its end or on a malformed record).
fn parse_event(buf: &[u8]) -> Option<Event<'_>> {
    const META: usize = std::mem::size_of::<libc::fanotify_event_metadata>();
    if buf.len() < META {
        return None;
    }
    let u32_at = |i: usize| u32::from_ne_bytes(buf[i..i + 4].try_into().unwrap());
    let event_len = u32_at(0) as usize;
    let meta_len = u16::from_ne_bytes([buf[6], buf[7]]) as usize;
    if event_len < META || event_len > buf.len() || meta_len > event_len {
        return None;
    }
    let pid = u32_at(20) as i32;
    let mut dir_name = None;
    let mut at = meta_len;
    // Info records: type (u8), pad (u8), len (u16), then the record.
    while at + 4 <= event_len {
        let kind = buf[at];
        let len = u16::from_ne_bytes([buf[at + 2], buf[at + 3]]) as usize;
        if len < 4 || at + len > event_len {
            break;
        }
        if kind == libc::FAN_EVENT_INFO_TYPE_DFID_NAME {
            dir_name = parse_dfid_name(&buf[at + 4..at + len]);
        }
        at += len;
    }
    Some(Event {
        len: event_len,
        pid,
        dir_name,
    })
}

/// A `DFID_NAME` record after its header: fsid (2 × i32), `file_handle` (bytes, type, handle),
/// then the entry's name, NUL-terminated.
fn parse_dfid_name(rec: &[u8]) -> Option<([i32; 2], &[u8], &[u8])> {
    let i32_at = |i: usize| Some(i32::from_ne_bytes(rec.get(i..i + 4)?.try_into().ok()?));
    let fsid = [i32_at(0)?, i32_at(4)?];
    let bytes = u32::from_ne_bytes(rec.get(8..12)?.try_into().ok()?) as usize;
    // The whole file_handle (header and bytes), as open_by_handle_at takes it.
    let handle = rec.get(8..16 + bytes)?;
    let rest = rec.get(16 + bytes..)?;
    let name = &rest[..rest.iter().position(|&b| b == 0)?];
    Some((fsid, handle, name))
}

/// Opens a directory by its `file_handle` bytes and reads its path back.
fn open_handle(mount: &OwnedFd, handle: &[u8]) -> Option<PathBuf> {
    // An aligned copy: the kernel reads a struct file_handle from it.
    let mut words = vec![0u64; handle.len().div_ceil(8)];
    // SAFETY: `words` holds at least handle.len() bytes; the regions do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(handle.as_ptr(), words.as_mut_ptr().cast(), handle.len())
    };
    // SAFETY: a complete file_handle in memory we own; the result is checked.
    let raw = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            words.as_mut_ptr().cast(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return None;
    }
    // SAFETY: a new descriptor this function owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
}

/// The filesystem id of an open file (as fanotify reports it).
fn fsid_of(file: &fs::File) -> Option<[i32; 2]> {
    let st = nix::sys::statfs::fstatfs(file).ok()?;
    let id: libc::fsid_t = st.filesystem_id();
    // SAFETY: fsid_t is two i32s.
    Some(unsafe { std::mem::transmute::<libc::fsid_t, [i32; 2]>(id) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fsid: [i32; 2], handle: &[u8], name: &str) -> Vec<u8> {
        let mut rec = Vec::new();
        rec.extend(fsid[0].to_ne_bytes());
        rec.extend(fsid[1].to_ne_bytes());
        rec.extend((handle.len() as u32).to_ne_bytes());
        rec.extend(1i32.to_ne_bytes());
        rec.extend(handle);
        rec.extend(name.as_bytes());
        rec.push(0);
        while rec.len() % 4 != 0 {
            rec.push(0);
        }
        rec
    }

    #[test]
    fn a_creator_is_judged_by_what_its_environment_held_while_it_lived() {
        let var = crate::engine::marker::MARKER_VAR;
        let running: BTreeSet<String> = ["t1".to_string(), "t2".to_string()].into();
        let env = format!("PATH=/bin\0{var}=t2\0HOME=/\0");
        let env = Some(env.as_bytes());
        assert_eq!(creator(env, true, &running), Creator::Trial("t2".into()));
        // Its memory was read before it went: the marker stands.
        assert_eq!(creator(env, false, &running), Creator::Trial("t2".into()));
        // No marker, and gone by the time it was looked at: perhaps cut short, not trusted.
        assert_eq!(
            creator(Some(b"PATH=/bin\0"), false, &running),
            Creator::Gone
        );
        // Exiting while read: an empty environment is never "no trial's".
        assert_eq!(creator(Some(b""), true, &running), Creator::Gone);
        assert_eq!(creator(None, true, &running), Creator::Gone);
        let other = format!("{var}=t9\0");
        assert_eq!(
            creator(Some(other.as_bytes()), true, &running),
            Creator::NoTrial
        );
        assert_eq!(
            creator(Some(b"PATH=/bin\0"), true, &running),
            Creator::NoTrial
        );
    }

    #[test]
    fn reads_a_directory_entry_event() {
        let rec = record([7, 9], &[1, 2, 3, 4, 5, 6, 7, 8], "crun.abc");
        let info_len = 4 + rec.len();
        let meta = std::mem::size_of::<libc::fanotify_event_metadata>();
        let mut buf = vec![0u8; meta];
        buf[0..4].copy_from_slice(&((meta + info_len) as u32).to_ne_bytes());
        buf[4] = 3;
        buf[6..8].copy_from_slice(&(meta as u16).to_ne_bytes());
        buf[20..24].copy_from_slice(&4242i32.to_ne_bytes());
        buf.extend([libc::FAN_EVENT_INFO_TYPE_DFID_NAME, 0]);
        buf.extend((info_len as u16).to_ne_bytes());
        buf.extend(&rec);
        let e = parse_event(&buf).unwrap();
        assert_eq!(e.len, buf.len());
        assert_eq!(e.pid, 4242);
        let (fsid, handle, name) = e.dir_name.unwrap();
        assert_eq!(fsid, [7, 9]);
        assert_eq!(handle.len(), 8 + 8);
        assert_eq!(name, b"crun.abc");
        // Cut anywhere, it is never read past its end.
        for cut in 0..buf.len() {
            if let Some(e) = parse_event(&buf[..cut]) {
                assert!(e.len <= cut);
            }
        }
    }
}
