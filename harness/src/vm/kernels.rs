//! Guest kernels: the checked-in list (`kernels.toml`), fetching a listed kernel from the Debian
//! archive into the cache, and resolving `--kernel NAME|PATH` to a bootable image.
//!
//! Guarantee: a [`KernelImage`] names a file that is a bzImage, with the release it reports
//! (`uname -r` in the guest) and the upstream version expectations such as `kernel = "< 6.11"`
//! compare. A listed kernel is only ever used from the cache, which [`fetch`] fills atomically
//! (unpacked in a temp dir, renamed into place), so a half-fetched kernel is never booted.
//! Kernels live outside the repository, under [`super::image::cache_dir`]`/kernels/<name>/`
//! as `vmlinuz`, `config` and `release`.

use std::path::{Path, PathBuf};
use std::process::Command;

pub use super::error::{BzImageError, KernelError};

use serde::Deserialize;

use crate::model::scenario::line_col;

/// A kernel of the checked-in list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownKernel {
    /// What `--kernel` and the `kernel` axis call it, e.g. `6.1`.
    pub name: String,
    /// The Debian package holding it, e.g. `linux-image-6.1.0-57-cloud-amd64`.
    pub package: String,
    /// `uname -r` in the guest, the suffix of the package's `boot/vmlinuz-*`.
    pub release: String,
    /// The upstream version, e.g. `6.1.192`.
    pub version: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KernelList {
    kernel: Vec<KnownKernel>,
}

/// A kernel ready to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelImage {
    pub name: String,
    pub path: PathBuf,
    pub release: String,
    pub version: String,
    /// The build config's facts, when the kernel came with its config (fetched kernels do).
    pub config: Option<KernelConfigFacts>,
}

/// The build options wedge's scenarios depend on. `None`: the config does not mention it.
/// A module (`=m`) counts as absent: the hermetic guest loads no modules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelConfigFacts {
    /// `CONFIG_SECCOMP_FILTER` (user notification is part of it since 5.0).
    pub seccomp_user_notif: Option<bool>,
    pub user_ns: Option<bool>,
    pub pid_ns: Option<bool>,
    /// `CONFIG_CGROUPS` (cgroup2 needs nothing more).
    pub cgroup2: Option<bool>,
    /// `CONFIG_IA32_EMULATION`: the i386 syscall ABI a filter must check `arch` against.
    pub ia32: Option<bool>,
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> KernelError {
    KernelError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The kernels listed in the TOML file at `path`; problems are located at `path:line:col`.
pub fn load_list(path: &Path) -> Result<Vec<KnownKernel>, KernelError> {
    let source = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    parse_list(&source, path)
}

fn parse_list(source: &str, path: &Path) -> Result<Vec<KnownKernel>, KernelError> {
    let at = |offset: usize, message: String| {
        let (line, col) = line_col(source, offset);
        KernelError::List {
            path: path.display().to_string(),
            line,
            col,
            message,
        }
    };
    let list: KernelList = toml::from_str(source).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        at(offset, e.message().to_owned())
    })?;
    let mut seen = std::collections::BTreeSet::new();
    for k in &list.kernel {
        // A name becomes a cache directory and a CLI argument: keep it a plain word.
        let plain = !k.name.is_empty()
            && k.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !k.name.starts_with('.');
        let offset = source.find(&format!("\"{}\"", k.name)).unwrap_or(0);
        if !plain {
            let m = format!(
                "kernel name {:?} must be letters, digits, '.', '_' or '-'",
                k.name
            );
            return Err(at(offset, m));
        }
        if !seen.insert(k.name.as_str()) {
            let second = source.rfind(&format!("\"{}\"", k.name)).unwrap_or(offset);
            return Err(at(second, format!("kernel {:?} is listed twice", k.name)));
        }
        if leading_version(&k.version).as_deref() != Some(k.version.as_str()) {
            let m = format!("kernel {}: version {:?} is not x.y.z", k.name, k.version);
            return Err(at(offset, m));
        }
    }
    Ok(list.kernel)
}

/// The kernel list: `$WEDGE_KERNELS`, else the first `kernels.toml` walking up from the current
/// directory, else the source checkout's.
pub fn default_list_path() -> PathBuf {
    if let Some(p) = std::env::var_os("WEDGE_KERNELS") {
        return PathBuf::from(p);
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            let candidate = dir.join("kernels.toml");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels.toml")
}

/// The facts [`KernelConfigFacts`] keeps, from a kernel's `.config` text.
pub fn parse_config(text: &str) -> KernelConfigFacts {
    let option = |name: &str| -> Option<bool> {
        text.lines().find_map(|line| {
            let line = line.trim();
            if let Some(value) = line.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
                return Some(value == "y");
            }
            let unset = line.strip_prefix("# ")?.strip_prefix(name)?;
            (unset == " is not set").then_some(false)
        })
    };
    KernelConfigFacts {
        seccomp_user_notif: option("CONFIG_SECCOMP_FILTER"),
        user_ns: option("CONFIG_USER_NS"),
        pid_ns: option("CONFIG_PID_NS"),
        cgroup2: option("CONFIG_CGROUPS"),
        ia32: option("CONFIG_IA32_EMULATION"),
    }
}

/// The leading `x.y.z` (or `x.y`, read as `x.y.0`) of `s`.
fn leading_version(s: &str) -> Option<String> {
    let head: String = s
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let parts: Vec<&str> = head.split('.').take(3).collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let z = parts.get(2).copied().unwrap_or("0");
    Some(format!("{}.{}.{z}", parts[0], parts[1]))
}

/// The kernel version string of a bzImage's setup header: `HdrS` at 0x202 (boot protocol
/// 2.00+), the `kernel_version` pointer at 0x20E, the NUL-terminated string at 0x200 + pointer.
pub fn bzimage_version_string(bytes: &[u8]) -> Result<String, BzImageError> {
    if bytes.get(0x202..0x206) != Some(b"HdrS") {
        return Err(BzImageError::NoHeader);
    }
    let ptr = match bytes.get(0x20E..0x210) {
        Some(&[lo, hi]) => usize::from(u16::from_le_bytes([lo, hi])),
        _ => return Err(BzImageError::Short),
    };
    if ptr == 0 {
        return Err(BzImageError::NoVersionString);
    }
    let start = 0x200 + ptr;
    let rest = bytes.get(start..).ok_or(BzImageError::PastTheEnd(start))?;
    let end = rest
        .iter()
        .take(512)
        .position(|&b| b == 0)
        .ok_or(BzImageError::Unterminated(start))?;
    String::from_utf8(rest[..end].to_vec()).map_err(|_| BzImageError::NotUtf8(start))
}

/// Release and upstream version from a bzImage's version string, e.g. `6.1.0-57-cloud-amd64
/// (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2025-01-01)`.
/// Debian's release names carry ABI numbers (`6.1.0-57`), so its package version is preferred
/// when present; otherwise the release's leading `x.y.z` is the version.
fn release_and_version(version_string: &str) -> Option<(String, String)> {
    let release = version_string.split_whitespace().next()?.to_owned();
    let debian = version_string
        .split(" Debian ")
        .nth(1)
        .and_then(leading_version);
    let version = debian.or_else(|| leading_version(&release))?;
    Some((release, version))
}

fn read_bzimage(path: &Path) -> Result<(String, String), KernelError> {
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    let not_bz = |source: BzImageError| KernelError::NotBzImage {
        path: path.display().to_string(),
        source,
    };
    let s = bzimage_version_string(&bytes).map_err(not_bz)?;
    release_and_version(&s).ok_or_else(|| not_bz(BzImageError::NoVersion(s)))
}

fn kernel_dir(k: &KnownKernel, cache: &Path) -> PathBuf {
    cache.join("kernels").join(&k.name)
}

/// The fetched image of `k`, if the cache holds it for `k`'s release (a list that moved to a
/// newer package makes the old one stale).
pub fn cached(k: &KnownKernel, cache: &Path) -> Option<KernelImage> {
    let dir = kernel_dir(k, cache);
    let path = dir.join("vmlinuz");
    let release = std::fs::read_to_string(dir.join("release")).ok()?;
    if release.trim() != k.release || !path.is_file() {
        return None;
    }
    let config = std::fs::read_to_string(dir.join("config"))
        .ok()
        .map(|t| parse_config(&t));
    Some(KernelImage {
        name: k.name.clone(),
        path,
        release: k.release.clone(),
        version: k.version.clone(),
        config,
    })
}

/// A known kernel's name (it must be fetched), or the path of any bzImage.
pub fn resolve(
    name_or_path: &str,
    list: &[KnownKernel],
    cache: &Path,
) -> Result<KernelImage, KernelError> {
    if let Some(k) = list.iter().find(|k| k.name == name_or_path) {
        return cached(k, cache).ok_or_else(|| KernelError::NotFetched {
            name: k.name.clone(),
        });
    }
    let path = Path::new(name_or_path);
    if !path.exists() {
        let names: Vec<&str> = list.iter().map(|k| k.name.as_str()).collect();
        return Err(KernelError::Io {
            path: name_or_path.to_owned(),
            message: format!(
                "no such kernel: neither a known name ({}) nor a file",
                names.join(", ")
            ),
        });
    }
    let (release, version) = read_bzimage(path)?;
    Ok(KernelImage {
        name: name_or_path.to_owned(),
        path: path.to_path_buf(),
        release,
        version,
        config: None,
    })
}

/// Removes a fetch's temp dir however the fetch ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(name: &str, cmd: &mut Command) -> Result<(), KernelError> {
    let fail = |message: String| KernelError::Fetch {
        name: name.to_owned(),
        message,
    };
    let what = format!("{cmd:?}");
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| fail(format!("{what}: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!("{what}: {}: {}", out.status, err.trim())));
    }
    Ok(())
}

/// The only file in `dir` whose name starts with `prefix`; fetching kernel `name` fails without.
fn one_file(name: &str, dir: &Path, prefix: &str) -> Result<PathBuf, KernelError> {
    let fail = |message: String| KernelError::Fetch {
        name: name.to_owned(),
        message,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(fail(format!("{n} files {prefix}* in {}", dir.display()))),
    }
}

/// Downloads `k`'s package and keeps its kernel and config in the cache; a no-op when cached.
pub fn fetch(k: &KnownKernel, cache: &Path) -> Result<KernelImage, KernelError> {
    if let Some(img) = cached(k, cache) {
        return Ok(img);
    }
    let fail = |message: String| KernelError::Fetch {
        name: k.name.clone(),
        message,
    };
    let kernels = cache.join("kernels");
    let tmp = TempDir(kernels.join(format!(".fetch-{}-{}", k.name, std::process::id())));
    let _ = std::fs::remove_dir_all(&tmp.0);
    std::fs::create_dir_all(&tmp.0).map_err(|e| io_error(&tmp.0, e))?;
    run(
        &k.name,
        Command::new("apt-get")
            .args(["download", "-qq", &k.package])
            .current_dir(&tmp.0),
    )?;
    let deb = one_file(&k.name, &tmp.0, &format!("{}_", k.package))?;
    let root = tmp.0.join("root");
    run(
        &k.name,
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
    )?;
    let boot = root.join("boot");
    let vmlinuz = one_file(&k.name, &boot, "vmlinuz-")?;
    let config = one_file(&k.name, &boot, "config-")?;
    check_package(k, &vmlinuz)?;
    let stage = tmp.0.join("out");
    std::fs::create_dir(&stage).map_err(|e| io_error(&stage, e))?;
    for (from, to) in [(&vmlinuz, "vmlinuz"), (&config, "config")] {
        std::fs::rename(from, stage.join(to)).map_err(|e| io_error(from, e))?;
    }
    let release = stage.join("release");
    std::fs::write(&release, format!("{}\n", k.release)).map_err(|e| io_error(&release, e))?;
    let dir = kernel_dir(k, cache);
    let _ = std::fs::remove_dir_all(&dir); // a stale release of this name
    std::fs::rename(&stage, &dir).map_err(|e| io_error(&dir, e))?;
    cached(k, cache).ok_or_else(|| fail(format!("{} did not keep the kernel", dir.display())))
}

/// The package's kernel must be the one the list describes: same release and version.
fn check_package(k: &KnownKernel, vmlinuz: &Path) -> Result<(), KernelError> {
    let fail = |message: String| KernelError::Fetch {
        name: k.name.clone(),
        message,
    };
    let (release, version) = read_bzimage(vmlinuz).map_err(|e| fail(e.to_string()))?;
    if release != k.release || version != k.version {
        return Err(fail(format!(
            "{} holds release {release} version {version}; kernels.toml says {} {}",
            k.package, k.release, k.version
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"
[[kernel]]
name = "6.1"
package = "linux-image-6.1.0-57-cloud-amd64"
release = "6.1.0-57-cloud-amd64"
version = "6.1.192"
"#;

    fn list_error(source: &str) -> (usize, usize, String) {
        match parse_list(source, Path::new("k.toml")) {
            Err(KernelError::List {
                line, col, message, ..
            }) => (line, col, message),
            other => panic!("expected a list error, got {other:?}"),
        }
    }

    #[test]
    fn the_list_parses_and_its_errors_have_a_location() {
        let list = parse_list(LIST, Path::new("k.toml")).unwrap();
        assert_eq!(list[0].name, "6.1");
        assert_eq!(list[0].version, "6.1.192");
        let (line, _, m) = list_error(&LIST.replace("version =", "versoin ="));
        assert!(m.contains("versoin"), "{m}");
        assert!(line >= 2, "{line}");
        let (line, col, m) = list_error(&format!("{LIST}{}", LIST.replace("-57-", "-58-")));
        assert!(m.contains("listed twice"), "{m}");
        assert_eq!((line, col), (9, 8));
        let (_, _, m) = list_error(&LIST.replace("6.1.192", "6.1.192-3"));
        assert!(m.contains("not x.y.z"), "{m}");
        let (_, _, m) = list_error(&LIST.replace("\"6.1\"", "\"../x\""));
        assert!(m.contains("must be letters"), "{m}");
        let e = load_list(Path::new("/nonexistent/kernels.toml")).unwrap_err();
        assert!(
            e.to_string().starts_with("/nonexistent/kernels.toml: "),
            "{e}"
        );
    }

    #[test]
    fn config_facts_read_y_as_true_and_not_set_or_module_as_false() {
        let facts = parse_config(
            "CONFIG_SECCOMP_FILTER=y\n# CONFIG_USER_NS is not set\nCONFIG_PID_NS=m\n\
             CONFIG_CGROUPS=y\nCONFIG_IA32_EMULATION_DEFAULT_DISABLED=y\n",
        );
        assert_eq!(
            facts,
            KernelConfigFacts {
                seccomp_user_notif: Some(true),
                user_ns: Some(false),
                pid_ns: Some(false),
                cgroup2: Some(true),
                ia32: None, // a longer option with the same prefix is another option
            }
        );
    }

    /// A minimal bzImage: a setup header whose kernel_version points at `version`.
    fn bzimage(version: &str) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x20E..0x210].copy_from_slice(&0x100u16.to_le_bytes()); // string at 0x300
        b[0x300..0x300 + version.len()].copy_from_slice(version.as_bytes());
        b
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wedge-kernels-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_bzimage_path_resolves_to_its_release_and_version() {
        let d = scratch("bz");
        let wsl = d.join("bzImage");
        std::fs::write(
            &wsl,
            bzimage("5.15.153.1-microsoft-standard-WSL2 (root@x) #1 SMP"),
        )
        .unwrap();
        let img = resolve(wsl.to_str().unwrap(), &[], &d).unwrap();
        assert_eq!(img.release, "5.15.153.1-microsoft-standard-WSL2");
        assert_eq!(img.version, "5.15.153");
        assert_eq!(img.config, None);
        let deb = d.join("vmlinuz");
        let s = "6.1.0-57-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP Debian 6.1.192-3 (x)";
        std::fs::write(&deb, bzimage(s)).unwrap();
        let img = resolve(deb.to_str().unwrap(), &[], &d).unwrap();
        assert_eq!(
            (img.release.as_str(), img.version.as_str()),
            ("6.1.0-57-cloud-amd64", "6.1.192")
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_bzimages_are_clear_errors_naming_the_path() {
        let d = scratch("bad");
        let p = d.join("not-a-kernel");
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        let e = resolve(p.to_str().unwrap(), &[], &d)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not-a-kernel: not a bzImage: no \"HdrS\""),
            "{e}"
        );
        let mut b = bzimage("6.1");
        b[0x20E..0x210].copy_from_slice(&0xFFF0u16.to_le_bytes());
        assert!(
            bzimage_version_string(&b)
                .unwrap_err()
                .to_string()
                .contains("past the end")
        );
        let mut b = bzimage("x");
        b[0x300..].fill(b'x');
        assert!(
            bzimage_version_string(&b)
                .unwrap_err()
                .to_string()
                .contains("NUL")
        );
        b[0x20E..0x210].fill(0);
        assert!(
            bzimage_version_string(&b)
                .unwrap_err()
                .to_string()
                .contains("no kernel_version")
        );
        assert!(bzimage_version_string(&b[..0x205]).is_err());
        let e = resolve("nosuch", &[], &d).unwrap_err().to_string();
        assert!(e.starts_with("nosuch: no such kernel"), "{e}");
        std::fs::write(&p, bzimage("garbage")).unwrap();
        let e = resolve(p.to_str().unwrap(), &[], &d)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no version in"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_known_kernel_resolves_only_from_the_cache_for_its_release() {
        let d = scratch("cache");
        let list = parse_list(LIST, Path::new("k.toml")).unwrap();
        let e = resolve("6.1", &list, &d).unwrap_err().to_string();
        assert!(e.contains("run `wedge kernels fetch 6.1`"), "{e}");
        let dir = d.join("kernels/6.1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vmlinuz"), bzimage("6.1.0-57-cloud-amd64")).unwrap();
        std::fs::write(dir.join("release"), "6.1.0-56-cloud-amd64\n").unwrap();
        assert_eq!(
            cached(&list[0], &d),
            None,
            "a stale release is not the listed kernel"
        );
        std::fs::write(dir.join("release"), "6.1.0-57-cloud-amd64\n").unwrap();
        std::fs::write(dir.join("config"), "CONFIG_USER_NS=y\n").unwrap();
        let img = resolve("6.1", &list, &d).unwrap();
        assert_eq!(img.path, dir.join("vmlinuz"));
        assert_eq!(img.version, "6.1.192");
        assert_eq!(img.config.unwrap().user_ns, Some(true));
        assert!(
            fetch(&list[0], &d).is_ok(),
            "fetching a cached kernel downloads nothing"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The fetched Debian kernels (`wedge kernels fetch`) are what the list says they are.
    #[test]
    fn fetched_kernels_resolve_by_name_and_by_path() {
        let list = load_list(&default_list_path()).unwrap();
        let cache = super::super::image::cache_dir();
        for k in &list {
            let Some(img) = cached(k, &cache) else {
                eprintln!(
                    "skipped {}: not in {} (wedge kernels fetch)",
                    k.name,
                    cache.display()
                );
                continue;
            };
            let by_path = resolve(img.path.to_str().unwrap(), &list, &cache).unwrap();
            assert_eq!(
                (by_path.release, by_path.version),
                (k.release.clone(), k.version.clone())
            );
            let facts = img.config.expect("a fetched kernel keeps its config");
            assert_eq!(facts.seccomp_user_notif, Some(true), "{}", k.name);
            assert_eq!(facts.cgroup2, Some(true), "{}", k.name);
        }
    }
}
