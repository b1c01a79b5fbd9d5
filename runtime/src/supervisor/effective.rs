//! The effective command: what a trapped exec will really run, decided before the policy sees it.
//!
//! Guarantee: [`resolve`] either returns the chain of programs an exec runs, or an [`Unresolved`]
//! that the supervisor answers with a failure (fail closed), never a guess. The chain is built the
//! way the kernel and the known launchers build it:
//! - the executed path is resolved as the target sees it: relative to its cwd (or an `execveat`
//!   directory), every symlink followed inside its root, at most [`MAX_SYMLINKS`] of them;
//! - a file starting with `#!` is replaced by its interpreter, with the argv the kernel builds
//!   (interpreter, optional single argument, script path, then the original argv\[1..\]), at most
//!   [`BINPRM_MAX_RECURSION`] deep;
//! - an ELF loader (the `PT_INTERP` of the target's `/bin/sh`, a file named in the policy's
//!   `launchers`, or any ELF without `PT_INTERP` whose `DT_SONAME` is a loader's) is replaced by the program it is asked to run (`ld.so [--argv0 X] ... PROG
//!   ARGS`), and so is `env [-i] [-u N] [VAR=x] PROG ARGS`;
//! - anything else that is not ELF is refused with `ENOEXEC`, as the kernel refuses it (so no
//!   `binfmt_misc` handler is ever reached unchecked).
//!
//! The resolver never touches the filesystem itself: a [`TargetFs`] answers "readlink" and "read
//! the file's head", so the logic is property-tested without a kernel. [`RootDir`] is the real
//! one, reading from one descriptor of the target's root, opened from `/proc/PID/root` for one
//! decision; [`ProcRoot`] gives the same answers walking `/proc/PID/root` for every lookup.
//! [`HeadCache`] keeps the heads `RootDir` read, by file identity, across decisions.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat, readlinkat};
use nix::sys::stat::Mode;
use wedge_sys::binfmt::{ElfError, elf_interpreter, elf_layout, is_loader_soname};

use super::policy::{Invocation, basename};

// The `#!` and ELF readers are shared with the harness (which packs a program's interpreter and
// loader into a VM image); they read only the head this module hands them.
pub use wedge_sys::binfmt::{BINPRM_BUF_SIZE, Shebang, parse_shebang};

/// The kernel's limit on symlinks followed in one path walk (`MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;
/// How many `#!` interpreters may nest (the kernel's `BINPRM_MAX_RECURSION`).
pub const BINPRM_MAX_RECURSION: usize = 4;
/// The most programs one chain may hold (scripts, launchers and the program itself).
pub const MAX_LAYERS: usize = 8;
/// How much of a file is read to classify it: enough for an ELF header, its program headers and
/// its `PT_INTERP` string in every common layout.
pub const HEAD: usize = 4096;
/// The most of a dynamic section read to find a `DT_SONAME`: 256 64-bit entries (glibc's loader
/// has 21; a static-pie program a few dozen).
pub const DYNAMIC_MAX: usize = 4096;
/// The most of a `DT_SONAME` read: the longest loader name is about 30 bytes.
pub const SONAME_MAX: usize = 64;

/// The filesystem as one target sees it. Paths are absolute in the target's root.
pub trait TargetFs {
    /// The contents of the symlink at `path` (whose parent directories are symlink-free);
    /// `Ok(None)` when it exists and is not a symlink.
    fn readlink(&self, path: &str) -> Result<Option<String>, Errno>;
    /// Up to `max` bytes from the start of the regular file at `path` (symlink-free); `EACCES`
    /// when it is not a regular file.
    fn read_head(&self, path: &str, max: usize) -> Result<Vec<u8>, Errno>;
    /// Up to `max` bytes from `offset` of the regular file at `path` (fewer at its end). The
    /// default reads the head up to there, which suits only small in-memory files (tests).
    fn read_at(&self, path: &str, offset: u64, max: usize) -> Result<Vec<u8>, Errno> {
        let start = usize::try_from(offset).map_err(|_| Errno::EFBIG)?;
        let end = start.checked_add(max).ok_or(Errno::EFBIG)?;
        let head = self.read_head(path, end)?;
        Ok(head.get(start..).unwrap_or_default().to_vec())
    }
    /// The target's working directory.
    fn cwd(&self) -> Result<String, Errno>;
    /// The directory open on the target's descriptor `fd` (for `execveat`).
    fn fd_dir(&self, fd: i32) -> Result<String, Errno>;
}

/// What was asked: `execve(path, argv)`, or `execveat(dirfd, path, argv)` with a real `dirfd`.
#[derive(Debug, Clone, Copy)]
pub struct Exec<'a> {
    pub path: &'a str,
    pub argv: &'a [String],
    pub dirfd: Option<i32>,
}

/// How a program in the chain came to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `#!` script: the kernel runs its interpreter instead.
    Script,
    /// An ELF loader or a listed launcher: it runs the next program without an exec.
    Loader,
    /// `env`: it will exec the next program (which the supervisor then decides again).
    Env,
    /// The program that really runs.
    Program,
    /// A program `env` will look up on its `PATH`: known by name only until its own exec.
    Named,
}

/// One program of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub kind: Kind,
    /// Its file in the target's root, every symlink resolved (for [`Kind::Named`]: its name).
    pub path: String,
    /// The argv it receives, argv\[0\] first.
    pub argv: Vec<String>,
    /// The other names it went by (the path asked for, symlinks followed, argv\[0\]), as basenames.
    pub aliases: Vec<String>,
}

/// The chain an exec runs, outermost first; the last layer is what really runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub layers: Vec<Layer>,
}

impl Effective {
    /// The chain as the policy reads it.
    pub fn invocations(&self) -> Vec<Invocation<'_>> {
        self.layers
            .iter()
            .map(|layer| Invocation {
                program: basename(&layer.path),
                aliases: &layer.aliases,
                args: layer.argv.get(1..).unwrap_or(&[]),
            })
            .collect()
    }

    /// The program that really runs.
    pub fn program(&self) -> &Layer {
        self.layers.last().expect("a chain has at least one layer")
    }

    /// The chain of one program, as the request names it: what the policy matched before the
    /// effective command existed (and what the `effective-command` mutation goes back to).
    pub fn as_requested(exec: Exec<'_>) -> Effective {
        Effective {
            layers: vec![Layer {
                kind: Kind::Program,
                path: exec.path.to_owned(),
                argv: exec.argv.to_vec(),
                aliases: Vec::new(),
            }],
        }
    }
}

/// Why the effective command could not be determined. Each is answered with [`Unresolved::errno`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    #[error("{path}: {errno}")]
    Missing { path: String, errno: Errno },
    #[error("{path}: more than {MAX_SYMLINKS} symlinks")]
    SymlinkLoop { path: String },
    #[error("{path}: cannot be read to decide what it runs: {errno}")]
    Unreadable { path: String, errno: Errno },
    #[error("{path}: neither ELF nor a #! script (binfmt_misc handlers are not allowed)")]
    NotExecutable { path: String },
    #[error("{path}: unreadable ELF headers: {why}")]
    BadElf {
        path: String,
        #[source]
        why: ElfError,
    },
    #[error("{path}: the #! line names no interpreter the kernel would run")]
    BadInterpreter { path: String },
    #[error("{path}: cannot tell which program it runs: {why}")]
    Launcher { path: String, why: String },
    #[error("more than {BINPRM_MAX_RECURSION} nested #! interpreters")]
    TooManyInterpreters,
    #[error("more than {MAX_LAYERS} programs in one chain")]
    TooDeep,
    #[error("the target's working directory is unknown: {0}")]
    NoCwd(Errno),
}

impl Unresolved {
    /// The errno the exec fails with: the kernel's own where it would fail anyway (so a `PATH`
    /// search goes on past a missing file), `EPERM` where only the supervisor refuses.
    pub fn errno(&self) -> Errno {
        match self {
            Unresolved::Missing { errno, .. } => *errno,
            Unresolved::SymlinkLoop { .. } | Unresolved::TooManyInterpreters => Errno::ELOOP,
            Unresolved::NotExecutable { .. } | Unresolved::BadInterpreter { .. } => Errno::ENOEXEC,
            _ => Errno::EPERM,
        }
    }

    /// Whether the kernel itself would have failed this exec (nothing was refused by policy).
    pub fn is_kernels_own(&self) -> bool {
        matches!(self, Unresolved::Missing { .. })
    }
}

/// Resolves `exec` into the chain it runs. `launchers` as in
/// [`DEFAULT_LAUNCHERS`](super::policy::DEFAULT_LAUNCHERS).
pub fn resolve<F: TargetFs>(
    fs: &F,
    exec: Exec<'_>,
    launchers: &[String],
) -> Result<Effective, Unresolved> {
    let mut resolver = Resolver {
        fs,
        launchers,
        loaders: None,
    };
    let base = match (exec.dirfd, exec.path.starts_with('/')) {
        (Some(fd), false) => Base::Fd(fd),
        _ => Base::Cwd,
    };
    // The path the kernel hands a script's interpreter.
    let script_name = match base {
        Base::Fd(fd) => format!("/dev/fd/{fd}/{}", exec.path),
        Base::Cwd => exec.path.to_owned(),
    };
    let mut layers = Vec::new();
    let mut next = Pending {
        path: exec.path.to_owned(),
        script_name,
        base,
        argv: exec.argv.to_vec(),
        argv0_alias: true,
    };
    let mut scripts = 0;
    loop {
        if layers.len() == MAX_LAYERS {
            return Err(Unresolved::TooDeep);
        }
        let (layer, then) = resolver.layer(next)?;
        if layer.kind == Kind::Script {
            scripts += 1;
            if scripts > BINPRM_MAX_RECURSION {
                return Err(Unresolved::TooManyInterpreters);
            }
        }
        layers.push(layer);
        match then {
            Then::Done => return Ok(Effective { layers }),
            Then::Named(last) => {
                layers.push(last);
                return Ok(Effective { layers });
            }
            Then::Resolve(pending) => next = pending,
        }
    }
}

/// Where a relative path starts.
#[derive(Debug, Clone, Copy)]
enum Base {
    Cwd,
    Fd(i32),
}

/// The next program to resolve.
struct Pending {
    path: String,
    /// The name a script is run under (the kernel's `bprm->filename`).
    script_name: String,
    base: Base,
    argv: Vec<String>,
    /// Whether argv\[0\] names this program (it does for what the caller executes; for what a
    /// script's kernel-built argv starts with it is the interpreter itself).
    argv0_alias: bool,
}

struct Resolver<'f, F> {
    fs: &'f F,
    launchers: &'f [String],
    /// The resolved paths of the known loaders, found on first need.
    loaders: Option<Vec<String>>,
}

impl<F: TargetFs> Resolver<'_, F> {
    /// Resolves one program; returns its layer and what follows it.
    fn layer(&mut self, next: Pending) -> Result<(Layer, Then), Unresolved> {
        let (path, aliases) = self.real_path(&next.path, next.base)?;
        let aliases = layer_aliases(&next, &path, aliases);
        let head = self
            .fs
            .read_head(&path, HEAD)
            .map_err(|errno| file_error(&path, errno))?;
        let layer = |kind| Layer {
            kind,
            path: path.clone(),
            argv: next.argv.clone(),
            aliases: aliases.clone(),
        };
        if head.starts_with(b"#!") {
            let line = parse_shebang(&head)
                .ok_or_else(|| Unresolved::BadInterpreter { path: path.clone() })?;
            let script = layer(Kind::Script);
            return Ok((script, Then::Resolve(interpreted(line, next))));
        }
        if !head.starts_with(b"\x7fELF") {
            return Err(Unresolved::NotExecutable { path });
        }
        let interp = elf_interpreter(&head).map_err(|why| Unresolved::BadElf {
            path: path.clone(),
            why,
        })?;
        let blame = |why| launcher_error(&path, why);
        match self.launcher_kind(&path, &head, interp.is_some())? {
            Some(Kind::Env) => {
                let then = env_program(&next.argv).map_err(blame)?;
                Ok((layer(Kind::Env), then.map_or(Then::Done, named)))
            }
            Some(_) => {
                let then = loader_program(&next.argv).map_err(blame)?;
                Ok((layer(Kind::Loader), then.map_or(Then::Done, Then::Resolve)))
            }
            None => Ok((layer(Kind::Program), Then::Done)),
        }
    }

    /// Whether the ELF file at `path` (with or without a `PT_INTERP`) is a launcher, and which.
    fn launcher_kind(
        &mut self,
        path: &str,
        head: &[u8],
        has_interp: bool,
    ) -> Result<Option<Kind>, Unresolved> {
        let name = basename(path);
        if self.launchers.iter().any(|l| !l.contains('/') && l == name) {
            return Ok(Some(if name == "env" {
                Kind::Env
            } else {
                Kind::Loader
            }));
        }
        // A dynamic program is run by its loader; only a file without PT_INTERP can be one.
        if has_interp {
            return Ok(None);
        }
        // The known loaders by path first: no read beyond the head for the common case.
        if self.loaders()?.iter().any(|l| l == path) {
            return Ok(Some(Kind::Loader));
        }
        Ok(self.is_loader_file(path, head)?.then_some(Kind::Loader))
    }

    /// Whether the ELF file at `path` (head `head`, no `PT_INTERP`) is a dynamic loader by what it
    /// is, not where it lies: a shared object whose own dynamic section gives it a loader's
    /// `DT_SONAME` ([`is_loader_soname`]), found as `ld.so` finds it (program headers, then
    /// `PT_DYNAMIC`, then `DT_STRTAB` through the `PT_LOAD` that maps it). A copy, a hard link or
    /// a copy with bytes appended keeps those bytes, so each is caught under any name and on any
    /// filesystem; a static-pie program or an ordinary library has another `SONAME` or none.
    /// Reads at most [`DYNAMIC_MAX`] + [`SONAME_MAX`] bytes past the head, and only for files
    /// without `PT_INTERP` (static programs and libraries), never for an ordinary dynamic one.
    fn is_loader_file(&self, path: &str, head: &[u8]) -> Result<bool, Unresolved> {
        let bad = |why| Unresolved::BadElf {
            path: path.to_owned(),
            why,
        };
        let layout = elf_layout(head).map_err(bad)?;
        // ld.so relocates itself through its dynamic section: without one it is no loader.
        let Some(dynamic) = layout.dynamic.filter(|_| layout.shared_object) else {
            return Ok(false);
        };
        let size = usize::try_from(dynamic.filesz).map_or(DYNAMIC_MAX, |s| s.min(DYNAMIC_MAX));
        let entries = self
            .fs
            .read_at(path, dynamic.offset, size)
            .map_err(|errno| file_error(path, errno))?;
        let Some(at) = layout
            .soname_ref(&entries)
            .and_then(|(strtab, soname)| strtab.checked_add(soname))
            .and_then(|vaddr| layout.file_offset(vaddr))
        else {
            return Ok(false);
        };
        let name = self
            .fs
            .read_at(path, at, SONAME_MAX)
            .map_err(|errno| file_error(path, errno))?;
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        Ok(is_loader_soname(name))
    }

    /// The known loaders: the `PT_INTERP` of the target's `/bin/sh` and the listed paths, each
    /// resolved in the target's root. One that does not exist there is simply not a loader.
    fn loaders(&mut self) -> Result<&[String], Unresolved> {
        if self.loaders.is_none() {
            let mut found = Vec::new();
            let mut wanted: Vec<String> = self
                .launchers
                .iter()
                .filter(|l| l.contains('/'))
                .cloned()
                .collect();
            if let Some(interp) = self.interpreter_of("/bin/sh")? {
                wanted.push(interp);
            }
            for path in wanted {
                match self.real_path(&path, Base::Cwd) {
                    Ok((real, _)) => found.push(real),
                    Err(Unresolved::Missing { .. }) => {}
                    Err(err) => return Err(err),
                }
            }
            self.loaders = Some(found);
        }
        Ok(self.loaders.as_deref().unwrap_or_default())
    }

    /// The `PT_INTERP` of `path`, `None` when it has none or does not exist.
    fn interpreter_of(&self, path: &str) -> Result<Option<String>, Unresolved> {
        let real = match self.real_path(path, Base::Cwd) {
            Ok((real, _)) => real,
            Err(Unresolved::Missing { .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        match self.fs.read_head(&real, HEAD) {
            Ok(head) => Ok(elf_interpreter(&head).ok().flatten()),
            Err(errno) => Err(file_error(&real, errno)),
        }
    }

    /// `path` with every symlink resolved in the target's root, and the names of the symlinks
    /// followed.
    fn real_path(&self, path: &str, base: Base) -> Result<(String, Vec<String>), Unresolved> {
        if path.is_empty() {
            return Err(file_error(path, Errno::ENOENT));
        }
        let mut resolved: Vec<String> = Vec::new();
        if !path.starts_with('/') {
            let start = match base {
                Base::Cwd => self.fs.cwd(),
                Base::Fd(fd) => self.fs.fd_dir(fd),
            }
            .map_err(Unresolved::NoCwd)?;
            if !start.starts_with('/') {
                return Err(Unresolved::NoCwd(Errno::ENOENT));
            }
            resolved.extend(components(&start).map(str::to_owned));
        }
        // Components still to walk, the next one last.
        let mut todo: Vec<String> = components(path).rev().map(str::to_owned).collect();
        let mut aliases = Vec::new();
        let mut hops = 0;
        while let Some(part) = todo.pop() {
            match part.as_str() {
                "." => continue,
                ".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            let candidate = join(&resolved, &part);
            match self.fs.readlink(&candidate) {
                Ok(None) => resolved.push(part),
                Ok(Some(target)) => {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(Unresolved::SymlinkLoop { path: path.into() });
                    }
                    if target.is_empty() {
                        return Err(file_error(&candidate, Errno::ENOENT));
                    }
                    if target.starts_with('/') {
                        resolved.clear();
                    }
                    // Only the file's own names count, not those of directories on the way.
                    if todo.is_empty() {
                        aliases.push(part);
                    }
                    todo.extend(components(&target).rev().map(str::to_owned));
                }
                Err(errno) => return Err(file_error(&candidate, errno)),
            }
        }
        Ok((join_all(&resolved), aliases))
    }
}

/// The other names of a program: the path asked for, the final symlinks followed, argv[0];
/// without its real name and without repeats.
fn layer_aliases(next: &Pending, real: &str, symlinks: Vec<String>) -> Vec<String> {
    let mut names = vec![basename(&next.path).to_owned()];
    names.extend(symlinks);
    if next.argv0_alias
        && let Some(argv0) = next.argv.first()
    {
        names.push(basename(argv0).to_owned());
    }
    let real = basename(real);
    let mut out: Vec<String> = Vec::new();
    for name in names {
        if !name.is_empty() && name != real && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// The interpreter of a script as the kernel runs it: interpreter, optional argument, the
/// script's name, then the script's own argv[1..]. A relative interpreter is found from the cwd.
fn interpreted(line: Shebang, script: Pending) -> Pending {
    let mut argv = vec![line.interpreter.clone()];
    argv.extend(line.argument);
    argv.push(script.script_name);
    argv.extend(script.argv.into_iter().skip(1));
    Pending {
        script_name: line.interpreter.clone(),
        path: line.interpreter,
        base: Base::Cwd,
        argv,
        argv0_alias: false,
    }
}

/// What follows a layer.
enum Then {
    Done,
    Resolve(Pending),
    /// The program `env` will look up and exec: known by name; its exec is decided on its own.
    Named(Layer),
}

fn named(argv: Vec<String>) -> Then {
    let name = argv.first().cloned().unwrap_or_default();
    Then::Named(Layer {
        kind: Kind::Named,
        aliases: Vec::new(),
        path: name,
        argv,
    })
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|p| !p.is_empty())
}

fn join(parents: &[String], last: &str) -> String {
    let mut out = join_all(parents);
    if !out.ends_with('/') {
        out.push('/');
    }
    out.push_str(last);
    out
}

fn join_all(parts: &[String]) -> String {
    if parts.is_empty() {
        return "/".to_owned();
    }
    parts.iter().fold(String::new(), |mut out, p| {
        out.push('/');
        out.push_str(p);
        out
    })
}

/// A file error the kernel would report as such (so it answers with the same errno), or one the
/// supervisor cannot get past.
fn file_error(path: &str, errno: Errno) -> Unresolved {
    match errno {
        Errno::ENOENT | Errno::ENOTDIR | Errno::EACCES | Errno::ENAMETOOLONG => {
            Unresolved::Missing {
                path: path.to_owned(),
                errno,
            }
        }
        Errno::ELOOP => Unresolved::SymlinkLoop {
            path: path.to_owned(),
        },
        _ => Unresolved::Unreadable {
            path: path.to_owned(),
            errno,
        },
    }
}

fn launcher_error(path: &str, why: String) -> Unresolved {
    Unresolved::Launcher {
        path: path.to_owned(),
        why,
    }
}

/// The program a loader's argv asks it to run: glibc `ld.so [OPTIONS] PROG ARGS` (and musl's
/// `--library-path`/`--preload`/`--argv0`). `Ok(None)` when it runs none (`--list`, `--help`,
/// no program). A program without a `/` is searched on library paths, which the supervisor cannot
/// follow, so it is an error, as is any option not known here.
fn loader_program(argv: &[String]) -> Result<Option<Pending>, String> {
    const WITH_VALUE: [&str; 7] = [
        "--library-path",
        "--inhibit-rpath",
        "--audit",
        "--preload",
        "--argv0",
        "--glibc-hwcaps-prefix",
        "--glibc-hwcaps-mask",
    ];
    const NO_PROGRAM: [&str; 6] = [
        "--list",
        "--verify",
        "--help",
        "--version",
        "--list-tunables",
        "--list-diagnostics",
    ];
    let mut argv0 = None;
    let mut i = 1;
    while let Some(arg) = argv.get(i) {
        if !arg.starts_with("--") {
            break;
        }
        let (option, inline) = match arg.split_once('=') {
            Some((option, value)) => (option, Some(value.to_owned())),
            None => (arg.as_str(), None),
        };
        if NO_PROGRAM.contains(&option) {
            return Ok(None);
        }
        if option == "--inhibit-cache" {
            i += 1;
            continue;
        }
        if !WITH_VALUE.contains(&option) {
            return Err(format!("unknown loader option {arg:?}"));
        }
        let value = match inline {
            Some(value) => value,
            None => {
                i += 1;
                argv.get(i)
                    .cloned()
                    .ok_or(format!("{option} needs a value"))?
            }
        };
        if option == "--argv0" {
            argv0 = Some(value);
        }
        i += 1;
    }
    let Some(program) = argv.get(i) else {
        return Ok(None);
    };
    if !program.contains('/') {
        return Err(format!(
            "program {program:?} has no '/' (searched on library paths)"
        ));
    }
    let mut run = vec![argv0.unwrap_or_else(|| program.clone())];
    run.extend(argv[i + 1..].iter().cloned());
    Ok(Some(Pending {
        path: program.clone(),
        script_name: program.clone(),
        base: Base::Cwd,
        argv: run,
        argv0_alias: true,
    }))
}

/// The command `env [OPTIONS] [NAME=VALUE...] PROG ARGS` runs (GNU coreutils' options, short ones
/// clustered or not). `Ok(None)` when it runs none (it prints the environment). `-S` (split a
/// string) and any option not known here are errors.
fn env_program(argv: &[String]) -> Result<Option<Vec<String>>, String> {
    let mut i = 1;
    let mut options = true;
    while let Some(arg) = argv.get(i) {
        if options && arg == "--" {
            options = false;
        } else if options && arg.starts_with("--") {
            let (option, inline) = match arg.split_once('=') {
                Some((o, v)) => (o, Some(v)),
                None => (arg.as_str(), None),
            };
            match option {
                "--ignore-environment" | "--null" | "--debug" => {}
                "--unset" | "--chdir" if inline.is_none() => i += 1,
                "--unset" | "--chdir" => {}
                _ => return Err(format!("unknown env option {arg:?}")),
            }
        } else if options && arg.starts_with('-') && arg.len() > 1 {
            i += env_short_cluster(&arg[1..])?;
        } else if options && arg == "-" {
            // The same as -i.
        } else if arg.contains('=') {
            // An assignment (which also ends the options).
            options = false;
        } else {
            return Ok(Some(argv[i..].to_vec()));
        }
        i += 1;
    }
    Ok(None)
}

/// One cluster of env's short options; returns how many following arguments it takes as values.
fn env_short_cluster(cluster: &str) -> Result<usize, String> {
    for (at, flag) in cluster.char_indices() {
        match flag {
            'i' | '0' | 'v' => {}
            // A value: the rest of the cluster, or the next argument.
            'u' | 'C' => return Ok(usize::from(at + 1 == cluster.len())),
            _ => return Err(format!("unknown env option -{flag}")),
        }
    }
    Ok(0)
}

/// [`TargetFs`] for a live target, through `/proc/PID/root`, `/proc/PID/cwd` and `/proc/PID/fd`:
/// every lookup walks `/proc/PID/root` again. The supervisor uses [`RootDir`].
/// The resolver only asks about symlink-free parents, so the kernel never follows a symlink here
/// relative to the supervisor's own root.
#[derive(Debug, Clone, Copy)]
pub struct ProcRoot {
    pub pid: u32,
}

impl ProcRoot {
    fn in_root(&self, path: &str) -> String {
        format!("/proc/{}/root{path}", self.pid)
    }
}

impl TargetFs for ProcRoot {
    fn readlink(&self, path: &str) -> Result<Option<String>, Errno> {
        readlink_in(AT_FDCWD, self.in_root(path).as_str())
    }

    fn read_head(&self, path: &str, max: usize) -> Result<Vec<u8>, Errno> {
        read_head_in(AT_FDCWD, self.in_root(path).as_str(), max)
    }

    fn read_at(&self, path: &str, offset: u64, max: usize) -> Result<Vec<u8>, Errno> {
        read_at_in(AT_FDCWD, self.in_root(path).as_str(), offset, max)
    }

    fn cwd(&self) -> Result<String, Errno> {
        proc_link(&format!("/proc/{}/cwd", self.pid))
    }

    fn fd_dir(&self, fd: i32) -> Result<String, Errno> {
        proc_link(&format!("/proc/{}/fd/{fd}", self.pid))
    }
}

/// [`TargetFs`] for a live target, every lookup made from one descriptor of its root directory:
/// `/proc/PID/root` is opened once, on the first lookup, and each `readlink` and open after it
/// walks only the path inside the root, where [`ProcRoot`] walks `/proc`, the pid's directory and
/// the `root` magic link again each time (a pid lookup and a ptrace access check).
///
/// Its answers are [`ProcRoot`]'s, errors included (a failed open of the root is the error of
/// every lookup, as it is of each walk through it), except where it is closer to what the kernel
/// sees: all lookups of one decision start from the same root, even if another process sharing the
/// target's filesystem information (`CLONE_FS`) changes it meanwhile; and a path is not made longer
/// by the `/proc/PID/root` prefix when checked against `PATH_MAX`. As with [`ProcRoot`], the
/// resolver only asks about symlink-free parents, so no symlink is followed here relative to the
/// supervisor's own root; `cwd` and `fd_dir` read the `/proc/PID` links as [`ProcRoot`] does.
#[derive(Debug)]
pub struct RootDir<'c> {
    pid: u32,
    root: std::cell::OnceCell<Result<OwnedFd, Errno>>,
    heads: Option<&'c HeadCache>,
}

impl<'c> RootDir<'c> {
    /// The root of process `pid`, not opened yet.
    pub fn new(pid: u32) -> Self {
        RootDir {
            pid,
            root: std::cell::OnceCell::new(),
            heads: None,
        }
    }

    /// The same, taking file heads from `heads` when the file is one read before.
    pub fn with_heads(pid: u32, heads: &'c HeadCache) -> Self {
        RootDir {
            heads: Some(heads),
            ..RootDir::new(pid)
        }
    }

    /// The root's descriptor and `path` (absolute in it) relative to it, `.` for the root itself.
    fn at<'p>(&self, path: &'p str) -> Result<(BorrowedFd<'_>, &'p str), Errno> {
        let root = self.root.get_or_init(|| {
            let root = format!("/proc/{}/root", self.pid);
            openat(
                AT_FDCWD,
                root.as_str(),
                OFlag::O_PATH | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
        });
        let root = root.as_ref().map_err(|errno| *errno)?;
        let relative = path.trim_start_matches('/');
        Ok((
            root.as_fd(),
            if relative.is_empty() { "." } else { relative },
        ))
    }
}

impl TargetFs for RootDir<'_> {
    fn readlink(&self, path: &str) -> Result<Option<String>, Errno> {
        let (root, path) = self.at(path)?;
        readlink_in(root, path)
    }

    fn read_head(&self, path: &str, max: usize) -> Result<Vec<u8>, Errno> {
        let (root, path) = self.at(path)?;
        match self.heads {
            Some(heads) => heads.read_head_in(root, path, max),
            None => read_head_in(root, path, max),
        }
    }

    fn read_at(&self, path: &str, offset: u64, max: usize) -> Result<Vec<u8>, Errno> {
        let (root, path) = self.at(path)?;
        read_at_in(root, path, offset, max)
    }

    fn cwd(&self) -> Result<String, Errno> {
        ProcRoot { pid: self.pid }.cwd()
    }

    fn fd_dir(&self, fd: i32) -> Result<String, Errno> {
        ProcRoot { pid: self.pid }.fd_dir(fd)
    }
}

/// The target of the symlink at `path` from `dir`; `None` when it is no symlink.
fn readlink_in(dir: BorrowedFd<'_>, path: &str) -> Result<Option<String>, Errno> {
    match readlinkat(dir, path) {
        Ok(target) => Ok(Some(target.to_string_lossy().into_owned())),
        Err(Errno::EINVAL) => Ok(None),
        Err(errno) => Err(errno),
    }
}

fn read_head_in(dir: BorrowedFd<'_>, path: &str, max: usize) -> Result<Vec<u8>, Errno> {
    let (fd, _) = open_path(dir, path)?;
    read_head_of(&fd, max)
}

/// Up to `max` bytes from the start of the regular file `fd` (an `O_PATH` descriptor) refers to.
fn read_head_of(fd: &OwnedFd, max: usize) -> Result<Vec<u8>, Errno> {
    use std::io::Read;
    let file = reopen_for_reading(fd)?;
    let mut head = Vec::with_capacity(max.min(HEAD));
    file.take(max as u64)
        .read_to_end(&mut head)
        .map_err(|e| io_errno(&e))?;
    Ok(head)
}

/// The heads of executables read before, by the identity of the file: a decision that meets a
/// file again (a shell loop running `/bin/true`, a build running the same compiler) opens it
/// `O_PATH` and looks at its status as always, and skips reopening it for reading, the read and
/// the close (3 of a decision's 17 system calls: `reports/bench.md`, "Exec overhead").
///
/// Guarantee: a head is answered from the cache only for the same device, inode, size and status
/// change time (`ctime`), and only if that `ctime` was already in the past, on the kernel's
/// coarse clock, when the head was read. Every write and every metadata change sets `ctime` to
/// the current time, which user space cannot set, so a file changed after the read has another
/// key, even a change in the same clock tick as the read. Limits: a stale head can be served for
/// a file written through a shared writable mapping (the kernel updates `ctime` at the first
/// write fault after the page was written back, not at every store), on a filesystem whose
/// `ctime` does not follow its content (some FUSE and network filesystems), and after the system
/// clock is set back past the file's `ctime` (root only). Each is a way to change a file between
/// the check and the exec, which a process that can write the file has anyway (the kernel reads
/// it again after the answer: `runtime/README.md`, "Time of check to time of use"); the cache
/// makes that race easier to win, not possible where it was not.
#[derive(Debug, Default)]
pub struct HeadCache {
    heads: std::cell::RefCell<std::collections::HashMap<FileKey, Head>>,
}

/// Whether a file status change time (seconds, nanoseconds) is already in the past on the
/// kernel's coarse clock, the clock file times are set from: from then on, any change to the file
/// sets a later one. What [`HeadCache`] asks before it keeps a head.
pub fn ctime_is_past(ctime: (i64, i64)) -> bool {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME_COARSE)
        .is_ok_and(|now| ctime < (now.tv_sec(), now.tv_nsec()))
}

/// The most heads kept; when full the cache starts over (a supervisor's programs are few).
const HEADS_KEPT: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: i64,
    ctime: (i64, i64),
}

#[derive(Debug)]
struct Head {
    /// How many bytes were asked for; `bytes` is shorter only at the end of the file.
    asked: usize,
    bytes: Vec<u8>,
}

impl HeadCache {
    fn read_head_in(&self, dir: BorrowedFd<'_>, path: &str, max: usize) -> Result<Vec<u8>, Errno> {
        let (fd, stat) = open_path(dir, path)?;
        let key = FileKey {
            dev: stat.st_dev,
            ino: stat.st_ino,
            size: stat.st_size,
            ctime: (stat.st_ctime, stat.st_ctime_nsec),
        };
        if let Some(head) = self.heads.borrow().get(&key)
            && (head.asked >= max || head.bytes.len() < head.asked)
        {
            return Ok(head.bytes[..head.bytes.len().min(max)].to_vec());
        }
        // Before the read: a change after this moment moves `ctime` past the one in the key.
        let settled = ctime_is_past(key.ctime);
        let bytes = read_head_of(&fd, max)?;
        if settled {
            let mut heads = self.heads.borrow_mut();
            if heads.len() >= HEADS_KEPT {
                heads.clear();
            }
            let head = Head {
                asked: max,
                bytes: bytes.clone(),
            };
            heads.insert(key, head);
        }
        Ok(bytes)
    }

    /// How many heads are kept.
    pub fn len(&self) -> usize {
        self.heads.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn read_at_in(dir: BorrowedFd<'_>, path: &str, offset: u64, max: usize) -> Result<Vec<u8>, Errno> {
    use std::os::unix::fs::FileExt;
    let file = open_regular(dir, path)?;
    let mut buf = vec![0u8; max];
    let mut filled = 0;
    // pread may return less than asked before the end of the file; 0 is the end.
    while filled < max {
        let at = offset.checked_add(filled as u64).ok_or(Errno::EFBIG)?;
        match file.read_at(&mut buf[filled..], at) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_errno(&e)),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// The regular file at `path` from `dir`, open for reading.
fn open_regular(dir: BorrowedFd<'_>, path: &str) -> Result<std::fs::File, Errno> {
    let (fd, _) = open_path(dir, path)?;
    reopen_for_reading(&fd)
}

/// The regular file at `path` from `dir` as an `O_PATH` descriptor, with its status.
fn open_path(dir: BorrowedFd<'_>, path: &str) -> Result<(OwnedFd, libc::stat), Errno> {
    // O_PATH first: opening a FIFO or a device to read it could block the supervisor or have
    // side effects; only a regular file is opened for reading.
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(dir, path, flags, Mode::empty())?;
    let stat = nix::sys::stat::fstat(&fd)?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Errno::EACCES);
    }
    Ok((fd, stat))
}

/// The file an `O_PATH` descriptor refers to, opened for reading (through `/proc/self/fd`).
fn reopen_for_reading(fd: &OwnedFd) -> Result<std::fs::File, Errno> {
    std::fs::File::open(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| io_errno(&e))
}

fn proc_link(link: &str) -> Result<String, Errno> {
    std::fs::read_link(link)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| io_errno(&e))
}

fn io_errno(err: &std::io::Error) -> Errno {
    Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO))
}
