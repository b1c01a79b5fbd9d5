//! A host program and everything it needs to run in the guest: its interpreter (`#!` or the
//! ELF loader), its shared libraries, and the symlinks on the way to each of them.
//!
//! Guarantee: every path the program's loading goes through exists in the guest as it does on
//! the host. Symlinks are kept as symlinks (Debian 12 is merged-/usr: `/bin -> usr/bin`,
//! `/lib64 -> usr/lib64`), so `/bin/sh` and `/lib64/ld-linux-x86-64.so.2`, the paths baked into
//! scripts and ELF headers, resolve in the guest too. A static binary needs only itself.
//!
//! Libraries come from `ldd` (the loader's own search: RUNPATH, ld.so.cache, default dirs),
//! run only on ELF files that name an interpreter; whether one does is read from the ELF
//! program headers here, so a static binary is never handed to `ldd`. The `#!` line and the ELF
//! headers are read by `wedge_sys::binfmt`, the reader the exec supervisor decides with too.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;
use wedge_sys::binfmt::parse_shebang;

/// One path the guest needs. `symlink` is the link's target (as stored on the host) when the
/// host path is a symlink; otherwise `source` is the regular file to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFile {
    /// Where it goes in the guest, relative to `/` (e.g. `usr/bin/dash`).
    pub guest_path: String,
    pub source: PathBuf,
    pub symlink: Option<String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ClosureError {
    #[error("{name}: not found in $PATH")]
    NotFound { name: String },
    #[error("{program}: {path}: {message}")]
    Io {
        program: String,
        path: String,
        message: String,
    },
    #[error("{program}: more than {MAX_LINKS} symlinks resolving {path}")]
    SymlinkLoop { program: String, path: String },
    #[error("{program}: ldd: {message}")]
    Ldd { program: String, message: String },
    #[error("{program}: needs {library}, which the loader cannot find")]
    MissingLibrary { program: String, library: String },
    #[error("{program}: `#!` interpreters nest more than {MAX_SCRIPT_DEPTH} deep")]
    ScriptDepth { program: String },
}

/// As the kernel's own limit on symlinks followed in one lookup.
const MAX_LINKS: usize = 40;
/// As the kernel's limit on nested `#!` interpreters.
const MAX_SCRIPT_DEPTH: usize = 4;

/// A bare name looked up in `$PATH` (the first executable regular file); a name with a `/` is
/// a path, made absolute against the current directory.
pub fn resolve_program(name: &str) -> Result<PathBuf, ClosureError> {
    let not_found = || ClosureError::NotFound {
        name: name.to_owned(),
    };
    if name.contains('/') {
        let path = std::path::absolute(name).map_err(|_| not_found())?;
        return path.is_file().then_some(path).ok_or_else(not_found);
    }
    let search = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&search)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(not_found)
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Collects the closure, keyed by guest path so shared pieces (libc, `/bin`) appear once.
struct Walk {
    program: String,
    files: BTreeMap<String, HostFile>,
}

impl Walk {
    fn io(&self, path: &Path, e: impl std::fmt::Display) -> ClosureError {
        ClosureError::Io {
            program: self.program.clone(),
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// Adds every symlink met resolving absolute `path`, and returns the real path it names.
    fn follow(&mut self, path: &Path) -> Result<PathBuf, ClosureError> {
        let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
        let mut links = 0;
        let mut resolved = PathBuf::from("/");
        while let Some(rest) = pending.pop() {
            let mut comps = rest.components();
            let Some(c) = comps.next() else { continue };
            let tail = comps.as_path().to_path_buf();
            if !tail.as_os_str().is_empty() {
                pending.push(tail);
            }
            match c {
                Component::RootDir => resolved = PathBuf::from("/"),
                Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => {
                    let candidate = resolved.join(name);
                    let meta = std::fs::symlink_metadata(&candidate)
                        .map_err(|e| self.io(&candidate, e))?;
                    if !meta.file_type().is_symlink() {
                        resolved = candidate;
                        continue;
                    }
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(ClosureError::SymlinkLoop {
                            program: self.program.clone(),
                            path: path.display().to_string(),
                        });
                    }
                    let target =
                        std::fs::read_link(&candidate).map_err(|e| self.io(&candidate, e))?;
                    self.add_link(&candidate, &target);
                    // Relative targets resolve from the link's directory, which `resolved` is.
                    pending.push(target);
                }
            }
        }
        Ok(resolved)
    }

    fn add_link(&mut self, link: &Path, target: &Path) {
        let guest_path = guest_path(link);
        let entry = HostFile {
            guest_path: guest_path.clone(),
            source: link.to_path_buf(),
            symlink: Some(target.to_string_lossy().into_owned()),
        };
        self.files.insert(guest_path, entry);
    }

    /// Adds `path` (through its symlinks) as a regular file; returns its real path.
    fn add_file(&mut self, path: &Path) -> Result<PathBuf, ClosureError> {
        let real = self.follow(path)?;
        let meta = std::fs::metadata(&real).map_err(|e| self.io(&real, e))?;
        if !meta.is_file() {
            return Err(self.io(&real, "not a regular file"));
        }
        let guest_path = guest_path(&real);
        let entry = HostFile {
            guest_path: guest_path.clone(),
            source: real.clone(),
            symlink: None,
        };
        self.files.insert(guest_path, entry);
        Ok(real)
    }

    /// `path` and what running it needs: its `#!` interpreter, or its loader and libraries.
    fn add_program(&mut self, path: &Path, depth: usize) -> Result<(), ClosureError> {
        if depth > MAX_SCRIPT_DEPTH {
            return Err(ClosureError::ScriptDepth {
                program: self.program.clone(),
            });
        }
        let real = self.add_file(path)?;
        let bytes = std::fs::read(&real).map_err(|e| self.io(&real, e))?;
        if let Some(interp) = shebang(&bytes) {
            let interp_path = PathBuf::from(&interp[0]);
            self.add_program(&interp_path, depth + 1)?;
            // `#!/usr/bin/env NAME` runs NAME from $PATH: bring it too.
            if interp_path.file_name().is_some_and(|n| n == "env")
                && let Some(name) = interp.get(1).filter(|a| !a.starts_with('-'))
            {
                let target = resolve_program(name)?;
                self.add_program(&target, depth + 1)?;
            }
            return Ok(());
        }
        self.add_libraries(&real, &bytes)
    }

    /// The loader and shared libraries of ELF file `path` (content `bytes`); none when it names
    /// no interpreter (a static binary).
    fn add_libraries(&mut self, path: &Path, bytes: &[u8]) -> Result<(), ClosureError> {
        if elf_interpreter(bytes).is_some() {
            for lib in ldd(&self.program, path)? {
                self.add_file(&lib)?;
            }
        }
        Ok(())
    }
}

/// A host path as a guest path: relative to `/`.
fn guest_path(p: &Path) -> String {
    p.to_string_lossy().trim_start_matches('/').to_owned()
}

/// The interpreter and its optional argument of a `#!` line, split as the kernel splits it. A
/// relative interpreter names no file here (the kernel finds it from the caller's cwd, unknown
/// when packing), so such a script brings only itself.
fn shebang(bytes: &[u8]) -> Option<Vec<String>> {
    let line = parse_shebang(bytes).filter(|l| l.interpreter.starts_with('/'))?;
    Some(
        std::iter::once(line.interpreter)
            .chain(line.argument)
            .collect(),
    )
}

/// The PT_INTERP path of a little-endian ELF file (32- or 64-bit), if it has one; a file whose
/// headers cannot be read names none (and is only copied, never handed to `ldd`).
fn elf_interpreter(bytes: &[u8]) -> Option<String> {
    wedge_sys::binfmt::elf_interpreter(bytes).ok().flatten()
}

/// The libraries (and loader) `ldd` says `path` loads, as the absolute paths it prints.
fn ldd(program: &str, path: &Path) -> Result<Vec<PathBuf>, ClosureError> {
    let fail = |message: String| ClosureError::Ldd {
        program: program.to_owned(),
        message,
    };
    let out = std::process::Command::new("ldd")
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!(
            "{}: {}{}",
            out.status,
            text.trim(),
            err.trim()
        )));
    }
    parse_ldd(program, &text)
}

/// Paths from `ldd` output about `program`; an error naming a library it could not find.
/// Lines without a path (the vDSO) are skipped.
fn parse_ldd(program: &str, text: &str) -> Result<Vec<PathBuf>, ClosureError> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        let (name, found) = match line.split_once(" => ") {
            Some((n, f)) => (n, f),
            None => (line, line),
        };
        if found.starts_with("not found") {
            return Err(ClosureError::MissingLibrary {
                program: program.to_owned(),
                library: name.to_owned(),
            });
        }
        let path = found.split(" (0x").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// `program` (absolute) and its closure, sorted by guest path.
pub fn program_closure(program: &Path) -> Result<Vec<HostFile>, ClosureError> {
    let mut walk = Walk {
        program: program.display().to_string(),
        files: BTreeMap::new(),
    };
    if !program.is_absolute() {
        return Err(walk.io(program, "not an absolute path"));
    }
    walk.add_program(program, 0)?;
    Ok(walk.files.into_values().collect())
}

/// The loader and shared libraries absolute `binary` loads, with the symlinks on the way to
/// each, but not `binary` itself (the image puts wedge's own binaries under paths of its own);
/// empty for a static binary.
pub fn libraries_of(binary: &Path) -> Result<Vec<HostFile>, ClosureError> {
    let mut walk = Walk {
        program: binary.display().to_string(),
        files: BTreeMap::new(),
    };
    let bytes = std::fs::read(binary).map_err(|e| walk.io(binary, e))?;
    walk.add_libraries(binary, &bytes)?;
    Ok(walk.files.into_values().collect())
}

/// The symlinks met resolving absolute `path` on the host, and the real path it names; the
/// image uses it to put files under `/bin` the way the host has it.
pub fn resolve_links(path: &Path) -> Result<(Vec<HostFile>, PathBuf), ClosureError> {
    let mut walk = Walk {
        program: path.display().to_string(),
        files: BTreeMap::new(),
    };
    let real = walk.follow(path)?;
    Ok((walk.files.into_values().collect(), real))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_path(files: &[HostFile]) -> BTreeMap<&str, &HostFile> {
        files.iter().map(|f| (f.guest_path.as_str(), f)).collect()
    }

    /// Resolves `path` inside the closure the way the guest kernel would, to a regular file.
    fn resolve_in(files: &[HostFile], path: &str) -> Option<String> {
        let map = by_path(files);
        let mut parts: Vec<String> = Vec::new();
        let mut todo: Vec<String> = path.split('/').rev().map(str::to_owned).collect();
        for _ in 0..100 {
            let Some(c) = todo.pop() else {
                let p = parts.join("/");
                return map
                    .get(p.as_str())
                    .filter(|f| f.symlink.is_none())
                    .map(|_| p);
            };
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    parts.pop();
                    continue;
                }
                _ => {}
            }
            parts.push(c);
            if let Some(target) = map
                .get(parts.join("/").as_str())
                .and_then(|f| f.symlink.clone())
            {
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
    fn sh_brings_the_loader_libc_and_the_merged_usr_links() {
        let files = program_closure(Path::new("/bin/sh")).unwrap();
        let map = by_path(&files);
        if std::fs::symlink_metadata("/bin")
            .unwrap()
            .file_type()
            .is_symlink()
        {
            assert_eq!(map["bin"].symlink.as_deref(), Some("usr/bin"));
        }
        for path in ["bin/sh", "lib64/ld-linux-x86-64.so.2"] {
            let real = resolve_in(&files, path).unwrap_or_else(|| panic!("{path} in {files:#?}"));
            let host = std::fs::canonicalize(format!("/{path}")).unwrap();
            assert_eq!(Path::new("/").join(&real), host, "{path}");
        }
        assert!(
            files
                .iter()
                .any(|f| f.guest_path.ends_with("/libc.so.6") && f.symlink.is_none())
        );
        let mut sorted = files.clone();
        sorted.sort_by(|a, b| a.guest_path.cmp(&b.guest_path));
        assert_eq!(sorted, files, "sorted by guest path");
    }

    #[test]
    fn a_static_binary_is_only_itself_and_its_path() {
        let ldconfig = Path::new("/sbin/ldconfig");
        let Ok(bytes) = std::fs::read(ldconfig) else {
            eprintln!("skipped: no /sbin/ldconfig");
            return;
        };
        if elf_interpreter(&bytes).is_some() {
            eprintln!("skipped: /sbin/ldconfig is dynamic here");
            return;
        }
        let files = program_closure(ldconfig).unwrap();
        let real = std::fs::canonicalize(ldconfig).unwrap();
        let regular: Vec<&HostFile> = files.iter().filter(|f| f.symlink.is_none()).collect();
        assert_eq!(regular.len(), 1, "{files:#?}");
        assert_eq!(regular[0].source, real);
        assert_eq!(resolve_in(&files, "sbin/ldconfig"), Some(guest_path(&real)));
    }

    #[test]
    fn the_elf_interpreter_is_read_from_the_program_headers() {
        let dash = std::fs::read(std::fs::canonicalize("/bin/sh").unwrap()).unwrap();
        assert_eq!(
            elf_interpreter(&dash).as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        for len in [0, 4, 0x20, 0x40, 0x100] {
            assert_eq!(elf_interpreter(&dash[..len]), None, "truncated at {len}");
        }
        assert_eq!(elf_interpreter(b"#!/bin/sh\n"), None);
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wedge-closure-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn scripts_bring_their_interpreter_and_env_its_program() {
        let d = scratch("script");
        let script = d.join("s");
        std::fs::write(&script, "#!/bin/sh -e\necho hi\n").unwrap();
        let files = program_closure(&script).unwrap();
        assert!(by_path(&files).contains_key(guest_path(&script).as_str()));
        assert!(resolve_in(&files, "bin/sh").is_some(), "{files:#?}");
        std::fs::write(&script, "#!/usr/bin/env sh\n").unwrap();
        let files = program_closure(&script).unwrap();
        assert!(resolve_in(&files, "usr/bin/env").is_some(), "{files:#?}");
        let sh = resolve_program("sh").unwrap();
        let dash = guest_path(&std::fs::canonicalize(sh).unwrap());
        assert!(by_path(&files).contains_key(dash.as_str()), "{files:#?}");
        // Scripts interpreting scripts: the kernel stops after a few levels, and so do we.
        for i in 0..6 {
            let next = d.join(format!("s{}", i + 1));
            std::fs::write(d.join(format!("s{i}")), format!("#!{}\n", next.display())).unwrap();
        }
        std::fs::write(d.join("s6"), "#!/bin/sh\n").unwrap();
        let e = program_closure(&d.join("s0")).unwrap_err();
        assert!(matches!(e, ClosureError::ScriptDepth { .. }), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn errors_name_the_program() {
        let e = program_closure(Path::new("/nonexistent/prog")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/prog: /nonexistent: "),
            "{e}"
        );
        let e = program_closure(Path::new("relative")).unwrap_err();
        assert!(e.to_string().contains("not an absolute path"), "{e}");
        let e = resolve_program("wedge-no-such-program").unwrap_err();
        assert_eq!(e.to_string(), "wedge-no-such-program: not found in $PATH");
        assert!(resolve_program("sh").unwrap().ends_with("sh"));
        let d = scratch("loop");
        std::os::unix::fs::symlink("b", d.join("a")).unwrap();
        std::os::unix::fs::symlink("a", d.join("b")).unwrap();
        let e = program_closure(&d.join("a")).unwrap_err();
        assert!(matches!(e, ClosureError::SymlinkLoop { .. }), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ldd_output_gives_paths_and_missing_libraries() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f)\n\t/lib64/ld-linux-x86-64.so.2 (0x7f)\n";
        assert_eq!(
            parse_ldd("p", text).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert_eq!(
            parse_ldd("p", "\tlibfoo.so.1 => not found\n"),
            Err(ClosureError::MissingLibrary {
                program: "p".into(),
                library: "libfoo.so.1".into()
            })
        );
        assert_eq!(parse_ldd("p", "\tstatically linked\n"), Ok(vec![]));
    }
}
