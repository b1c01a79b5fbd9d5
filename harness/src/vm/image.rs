//! The guest image: everything a VM's `/init` needs, packed as one initramfs and cached by the
//! hash of its bytes.
//!
//! Guarantee: the same [`ImageSpec`] over the same host files gives the same bytes, hence the
//! same hash and one cache file (`<cache>/initramfs/<sha256>.cpio`), which is reused; a cache
//! file is only ever complete (written to a temp file in the same directory, then renamed), so
//! concurrent builders and interrupted runs never leave a torn image under a real name.
//!
//! The image holds `/init` (the wedge binary), the wedge binaries under `/bin` with the shared
//! libraries they link (none for a static build), host programs with their closure
//! ([`super::closure`]), the given extra files, the empty directories the guest mounts on, and
//! the `/etc/passwd` and `/etc/group` that tools such as bwrap look root up in.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::closure::{
    ClosureError, HostFile, libraries_of, program_closure, resolve_links, resolve_program,
};
use super::initramfs::{Archive, Entry, NameError};

/// What goes into a guest image.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// Becomes `/init` (the wedge binary); mode 0755.
    pub init: PathBuf,
    /// wedge-* binaries, put in `/bin` under their file names (with their libraries).
    pub binaries: Vec<PathBuf>,
    /// Host programs by name (looked up in `$PATH`) or absolute path, with their closure.
    pub programs: Vec<String>,
    /// Extra files (scenario TOMLs, a plan) at the given guest paths, mode 0644.
    pub files: Vec<(String, Vec<u8>)>,
}

/// A built image in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    pub path: PathBuf,
    /// SHA-256 of the bytes, lower-case hex.
    pub hash: String,
    pub bytes: u64,
}

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error(transparent)]
    Closure(#[from] ClosureError),
    #[error("the initramfs cannot hold {0}")]
    Name(#[from] NameError),
    #[error("guest file {path}: {link} is a symlink in the image; give the path it points to")]
    ThroughSymlink { path: String, link: String },
    #[error("binary {path} has no file name")]
    NoFileName { path: String },
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> ImageError {
    ImageError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// wedge's cache outside the repository: `$XDG_CACHE_HOME/wedge`, else `~/.cache/wedge`
/// (relative to the current directory when neither is set). Kernels and images live under it.
pub fn cache_dir() -> PathBuf {
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty());
    let base = match (xdg, std::env::var_os("HOME")) {
        (Some(x), _) => PathBuf::from(x),
        (None, Some(home)) => PathBuf::from(home).join(".cache"),
        (None, None) => PathBuf::from(".cache"),
    };
    base.join("wedge")
}

const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n";
const GROUP: &[u8] = b"root:x:0:\n";

/// The directories the guest's `/init` mounts on or expects, with their usual modes.
const DIRS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("run", 0o755),
    ("sys", 0o555),
    ("sys/fs/cgroup", 0o755),
    ("tmp", 0o1777),
];

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|e| io_error(path, e))
}

/// A host file or symlink of a closure into the archive, with the host file's mode.
fn add_host_file(archive: &mut Archive, f: &HostFile) -> Result<(), ImageError> {
    match &f.symlink {
        Some(target) => archive.add_symlink(&f.guest_path, target)?,
        None => {
            let meta = std::fs::metadata(&f.source).map_err(|e| io_error(&f.source, e))?;
            let data = read(&f.source)?;
            archive.add_file(&f.guest_path, meta.permissions().mode(), data)?;
        }
    }
    Ok(())
}

/// What a binary put in the image under a path of its own needs to run: its loader and
/// shared libraries at their host paths (nothing for a static binary).
fn add_libraries_of(archive: &mut Archive, binary: &Path) -> Result<(), ImageError> {
    for f in libraries_of(binary)? {
        add_host_file(archive, &f)?;
    }
    Ok(())
}

/// The first ancestor of `path` that is a symlink in `archive`: a file there would replace the
/// link with a directory and break every path through it.
fn symlink_ancestor(archive: &Archive, path: &str) -> Option<String> {
    let mut prefix = String::new();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        if matches!(archive.get(&prefix), Some(Entry::Symlink { .. })) {
            return Some(prefix);
        }
    }
    None
}

/// The archive `spec` describes.
pub fn assemble(spec: &ImageSpec) -> Result<Archive, ImageError> {
    let mut archive = Archive::new();
    for (dir, mode) in DIRS {
        archive.add_dir(dir, *mode)?;
    }
    archive.add_file("etc/passwd", 0o644, PASSWD.to_vec())?;
    archive.add_file("etc/group", 0o644, GROUP.to_vec())?;
    archive.add_file("init", 0o755, read(&spec.init)?)?;
    add_libraries_of(&mut archive, &spec.init)?;
    // `/bin` as the host has it (merged-/usr: a link to usr/bin), so the binaries and the
    // programs' closures agree on where it is.
    let (links, bin) = resolve_links(Path::new("/bin"))?;
    for l in &links {
        add_host_file(&mut archive, l)?;
    }
    for b in &spec.binaries {
        let name = b.file_name().ok_or_else(|| ImageError::NoFileName {
            path: b.display().to_string(),
        })?;
        let guest = bin.join(name);
        archive.add_file(&guest.to_string_lossy(), 0o755, read(b)?)?;
        add_libraries_of(&mut archive, b)?;
    }
    for p in &spec.programs {
        for f in program_closure(&resolve_program(p)?)? {
            add_host_file(&mut archive, &f)?;
        }
    }
    for (path, data) in &spec.files {
        if let Some(link) = symlink_ancestor(&archive, path) {
            return Err(ImageError::ThroughSymlink {
                path: path.clone(),
                link,
            });
        }
        archive.add_file(path, 0o644, data.clone())?;
    }
    Ok(archive)
}

/// SHA-256 of `bytes`, lower-case hex (the image cache's names, the recordings' manifests).
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Builds the image `spec` describes, or reuses the cached one with the same hash.
pub fn build_image(spec: &ImageSpec, cache_dir: &Path) -> Result<GuestImage, ImageError> {
    let bytes = assemble(spec)?.write_newc();
    let hash = sha256(&bytes);
    let dir = cache_dir.join("initramfs");
    let path = dir.join(format!("{hash}.cpio"));
    let image = GuestImage {
        path: path.clone(),
        hash: hash.clone(),
        bytes: bytes.len() as u64,
    };
    // The name is the content's hash, so a file of the right size there is this image.
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == image.bytes) {
        touch(&path);
        return Ok(image);
    }
    std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    let tmp = temp_name(&dir, &hash);
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(&path, e));
    }
    keep_newest(&dir, IMAGES_KEPT);
    Ok(image)
}

/// A name in `dir` for a file being written, unique to this call: this process's id and a
/// counter, so threads of one process writing the same entry at once (two VM groups packing
/// the same binary) never share a temporary file. Starts with `.`, which pruning leaves alone.
pub(crate) fn temp_name(dir: &Path, stem: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!(".{stem}.{}.{n}.tmp", std::process::id()))
}

/// How many images the cache keeps, the most recently used; older ones go when a new one is
/// written (each is tens of MB, and every rebuild of wedge or change of plan makes new ones).
/// A recording keeps its own link to the image it booted (`vm::recording`).
const IMAGES_KEPT: usize = 24;

/// Marks `path` (a file or a directory) as used now: its modification time, which
/// [`keep_newest`] goes by.
pub(crate) fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Removes all but the `keep` most recently modified entries of `dir`, files or directories;
/// names starting with `.` (writes in progress) are left alone. Best effort: an entry another
/// process removed first, or that cannot be removed, is skipped.
pub(crate) fn keep_newest(dir: &Path, keep: usize) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = read
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (_, p) in entries.into_iter().skip(keep) {
        let _ = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::super::initramfs::read_newc;
    use super::*;
    use std::collections::BTreeMap;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let d = std::env::temp_dir().join(format!("wedge-image-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Scratch(d)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn spec(s: &Scratch) -> ImageSpec {
        let init = s.0.join("wedge");
        std::fs::write(&init, b"init binary").unwrap();
        let run = s.0.join("wedge-run");
        std::fs::write(&run, b"run binary").unwrap();
        ImageSpec {
            init,
            binaries: vec![run],
            programs: vec!["sh".into()],
            files: vec![("scenarios/a.toml".into(), b"[subject]\n".to_vec())],
        }
    }

    fn cached_files(cache: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(cache.join("initramfs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_same_spec_is_one_cached_file_and_a_change_is_another() {
        let s = Scratch::new("cache");
        let cache = s.0.join("cache");
        let spec = spec(&s);
        let a = build_image(&spec, &cache).unwrap();
        let b = build_image(&spec, &cache).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.hash.len(), 64);
        assert_eq!(
            cached_files(&cache),
            [format!("{}.cpio", a.hash)],
            "no temp file left"
        );
        assert_eq!(std::fs::read(&a.path).unwrap().len() as u64, a.bytes);
        std::fs::write(&spec.binaries[0], b"run binary, rebuilt").unwrap();
        let c = build_image(&spec, &cache).unwrap();
        assert_ne!(c.hash, a.hash);
        assert_eq!(cached_files(&cache).len(), 2);
        let got = sha256(&std::fs::read(&c.path).unwrap());
        assert_eq!(got, c.hash, "the name is the content's hash");
    }

    /// Follows symlinks inside the archive's entries to the regular file `path` names.
    fn lookup<'a>(entries: &'a BTreeMap<String, Entry>, path: &str) -> Option<&'a Entry> {
        let mut parts: Vec<String> = Vec::new();
        let mut todo: Vec<String> = path.split('/').rev().map(str::to_owned).collect();
        for _ in 0..100 {
            let Some(c) = todo.pop() else {
                return entries.get(&parts.join("/"));
            };
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    parts.pop();
                    continue;
                }
                _ => parts.push(c),
            }
            if let Some(Entry::Symlink { target }) = entries.get(&parts.join("/")) {
                parts.pop();
                if target.starts_with('/') {
                    parts.clear();
                }
                todo.extend(target.split('/').rev().map(str::to_owned));
            }
        }
        None
    }

    #[test]
    fn the_image_holds_init_binaries_programs_and_the_mount_points() {
        let s = Scratch::new("content");
        let img = build_image(&spec(&s), &s.0.join("cache")).unwrap();
        let entries: BTreeMap<String, Entry> = read_newc(&std::fs::read(&img.path).unwrap())
            .unwrap()
            .into_iter()
            .collect();
        let file = |p: &str| match lookup(&entries, p) {
            Some(Entry::File { mode, data }) => (*mode, data.clone()),
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(file("init"), (0o755, b"init binary".to_vec()));
        assert_eq!(file("bin/wedge-run"), (0o755, b"run binary".to_vec()));
        assert_eq!(file("scenarios/a.toml").1, b"[subject]\n");
        assert!(file("etc/passwd").1.starts_with(b"root:x:0:0:"));
        assert!(file("etc/group").1.starts_with(b"root:x:0:"));
        let dash = std::fs::read(std::fs::canonicalize("/bin/sh").unwrap()).unwrap();
        assert_eq!(file("bin/sh").1, dash);
        let ld = std::fs::read("/lib64/ld-linux-x86-64.so.2").unwrap();
        assert_eq!(file("lib64/ld-linux-x86-64.so.2").1, ld);
        for (dir, mode) in DIRS {
            assert_eq!(
                entries.get(*dir),
                Some(&Entry::Dir { mode: *mode }),
                "{dir}"
            );
        }
    }

    #[test]
    fn a_dynamic_binary_brings_its_loader_and_libraries_but_not_its_host_path() {
        let s = Scratch::new("dynamic");
        // A dynamically linked program standing in for a wedge binary of the host's build.
        let run = s.0.join("wedge-run");
        std::fs::copy(std::fs::canonicalize("/bin/true").unwrap(), &run).unwrap();
        let init = s.0.join("wedge");
        std::fs::write(&init, b"init binary").unwrap();
        let spec = ImageSpec {
            init,
            binaries: vec![run.clone()],
            programs: vec![],
            files: vec![],
        };
        let entries: BTreeMap<String, Entry> = read_newc(&assemble(&spec).unwrap().write_newc())
            .unwrap()
            .into_iter()
            .collect();
        let file = |p: &str| match lookup(&entries, p) {
            Some(Entry::File { data, .. }) => data.clone(),
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(file("bin/wedge-run"), std::fs::read(&run).unwrap());
        let ld = std::fs::read("/lib64/ld-linux-x86-64.so.2").unwrap();
        assert_eq!(file("lib64/ld-linux-x86-64.so.2"), ld);
        let libc = std::fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        let libc_guest = libc.to_string_lossy().trim_start_matches('/').to_string();
        assert_eq!(file(&libc_guest), std::fs::read(&libc).unwrap());
        let own = run.to_string_lossy().trim_start_matches('/').to_string();
        assert!(
            !entries.contains_key(&own),
            "the binary's host path is not in the image"
        );
    }

    #[test]
    fn bad_specs_are_errors_naming_what_is_wrong() {
        let s = Scratch::new("bad");
        let cache = s.0.join("cache");
        let mut bad = spec(&s);
        bad.programs = vec!["wedge-no-such-program".into()];
        let e = build_image(&bad, &cache).unwrap_err().to_string();
        assert!(e.contains("wedge-no-such-program: not found"), "{e}");
        let mut bad = spec(&s);
        bad.init = s.0.join("missing-init");
        let e = build_image(&bad, &cache).unwrap_err().to_string();
        assert!(e.contains("missing-init"), "{e}");
        if std::fs::symlink_metadata("/bin")
            .unwrap()
            .file_type()
            .is_symlink()
        {
            let mut bad = spec(&s);
            bad.files = vec![("bin/x".into(), vec![])];
            let e = build_image(&bad, &cache).unwrap_err();
            assert!(matches!(e, ImageError::ThroughSymlink { .. }), "{e}");
        }
        assert!(
            !cache.join("initramfs").exists(),
            "nothing is cached for a bad spec"
        );
    }

    #[test]
    fn the_cache_keeps_the_most_recently_used_entries() {
        let s = Scratch::new("prune");
        let day = std::time::Duration::from_secs(86_400);
        let now = std::time::SystemTime::now();
        for (i, name) in ["old", "older", "new", ".in-progress"].iter().enumerate() {
            let p = s.0.join(name);
            std::fs::write(&p, b"x").unwrap();
            let age = match *name {
                "new" => 0,
                "old" => 2,
                _ => 3 + i as u32,
            };
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(now - day * age).unwrap();
        }
        std::fs::create_dir(s.0.join("dir")).unwrap();
        let dir = std::fs::File::open(s.0.join("dir")).unwrap();
        dir.set_modified(now - day).unwrap();
        // The oldest file, used again, becomes the newest.
        touch(&s.0.join("older"));
        keep_newest(&s.0, 2);
        let mut left: Vec<String> = std::fs::read_dir(&s.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".in-progress", "new", "older"]);
    }

    #[test]
    fn the_cache_follows_xdg_cache_home() {
        // Read-only check of the rule on this process's environment: no env mutation, which
        // would race other tests.
        let want = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x).join("wedge"),
            None => PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/wedge"),
        };
        assert_eq!(cache_dir(), want);
    }
}
