//! Starting a trial's keeper (`wedge-init`) with `posix_spawn`, never `fork`.
//!
//! The guarantee: the keeper starts with exactly the descriptors asked for on the numbers asked
//! for (everything else wedge has open is close-on-exec), the environment of wedge plus the
//! variables given, the working directory given, an empty signal mask and `SIGPIPE` at its
//! default; [`Keeper`] then waits for it and kills it like `std::process::Child`.
//!
//! Why not `Command` with a `pre_exec` closure, as before: that forks wedge, a large
//! many-threaded process, once per process a trial starts. The fork copies its page tables, runs
//! glibc's fork handlers, and every page either side writes afterwards is copied back on a
//! write fault; a profile of trivial trials put that at about a fifth of wedge's own CPU.
//! glibc's `posix_spawn` starts the child with `clone(CLONE_VM | CLONE_VFORK)` on a stack of its
//! own, so none of that happens. What the closure did in the child (joining the trial's
//! cgroups, a process group or a session with the terminal, the parent-death signal, the CPUs)
//! the keeper now does to itself before anything else ([`crate::engine::pidns::Setup`]).
//!
//! Hand-written on `libc`: std's `Command` spawns this way only for descriptors 0–2, and nix's
//! wrapper has no working-directory action.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

/// What to start.
pub struct Request<'a> {
    pub program: &'a Path,
    /// The arguments after `argv[0]` (which is the program's path).
    pub args: Vec<OsString>,
    /// Variables set on top of wedge's own environment (replacing any of the same name).
    pub env: Vec<(OsString, OsString)>,
    pub cwd: &'a Path,
    /// Each descriptor of wedge's and the number it gets in the child (not close-on-exec there).
    pub fds: Vec<(BorrowedFd<'a>, RawFd)>,
}

/// A started keeper: wedge's child until it is waited for.
#[derive(Debug)]
pub struct Keeper {
    pid: i32,
    status: Option<ExitStatus>,
}

/// Starts `req`; the keeper's pid is known once this returns (its exec has succeeded).
pub fn spawn(req: &Request<'_>) -> io::Result<Keeper> {
    let path = c_string(req.program.as_os_str())?;
    let mut argv = vec![path.clone()];
    for a in &req.args {
        argv.push(c_string(a)?);
    }
    let envp = environment(&req.env)?;
    let cwd = c_string(req.cwd.as_os_str())?;
    // Every source above every target, so that no dup2 overwrites a source still to be copied
    // (the copies made here are close-on-exec, and closed when this returns).
    let top = req.fds.iter().map(|&(_, to)| to).max().unwrap_or(-1);
    let mut lifted: Vec<OwnedFd> = Vec::new();
    let mut moves: Vec<(RawFd, RawFd)> = Vec::new();
    for &(fd, to) in &req.fds {
        if fd.as_raw_fd() <= top {
            lifted.push(fd.try_clone_to_owned_above(top + 1)?);
            moves.push((lifted.last().expect("just pushed").as_raw_fd(), to));
        } else {
            moves.push((fd.as_raw_fd(), to));
        }
    }
    let actions = Actions::new(&moves, &cwd)?;
    let attr = Attr::new()?;
    let argv_ptrs = pointers(&argv);
    let envp_ptrs = pointers(&envp);
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is to memory alive for the call: NUL-terminated strings in
    // NULL-terminated arrays, and initialised action and attribute objects.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            &actions.0,
            &attr.0,
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(Keeper { pid, status: None })
}

impl Keeper {
    /// A keeper started for wedge by someone else (the keeper server): wedge's own child.
    pub(crate) fn adopted(pid: i32) -> Keeper {
        Keeper { pid, status: None }
    }

    pub fn id(&self) -> i32 {
        self.pid
    }

    /// Its exit status, if it has ended (reaping it).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.wait_with(libc::WNOHANG)
    }

    /// Waits until it has ended (reaping it).
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.wait_with(0)? {
                return Ok(status);
            }
        }
    }

    /// SIGKILL, unless it was already waited for (its pid may be another process's by then).
    pub fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // SAFETY: a signal to our own child, which is not reaped (its pid is still its own).
        if unsafe { libc::kill(self.pid, libc::SIGKILL) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait_with(&mut self, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let mut raw = 0;
        loop {
            // SAFETY: waitpid on our own child with a pointer to a local.
            let got = unsafe { libc::waitpid(self.pid, &mut raw, flags) };
            if got == self.pid {
                let status = ExitStatus::from_raw(raw);
                self.status = Some(status);
                return Ok(Some(status));
            }
            if got == 0 {
                return Ok(None);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// A copy of a descriptor numbered at least `min`, close-on-exec.
pub(crate) trait CloneAbove {
    fn try_clone_to_owned_above(&self, min: RawFd) -> io::Result<OwnedFd>;
}

impl CloneAbove for BorrowedFd<'_> {
    fn try_clone_to_owned_above(&self, min: RawFd) -> io::Result<OwnedFd> {
        // SAFETY: fcntl on a descriptor borrowed for the call.
        let fd = unsafe { libc::fcntl(self.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn c_string(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} holds a NUL byte", s.to_string_lossy()),
        )
    })
}

/// wedge's environment with `set` on top, as `NAME=VALUE` strings.
fn environment(set: &[(OsString, OsString)]) -> io::Result<Vec<CString>> {
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !set.iter().any(|(s, _)| s == k))
        .collect();
    vars.extend(set.iter().cloned());
    vars.into_iter()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            c_string(&kv)
        })
        .collect()
}

/// The NULL-terminated array of pointers into `strings` (which must outlive it).
fn pointers(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

/// `posix_spawn_file_actions_t`: the descriptor moves, then the working directory.
struct Actions(libc::posix_spawn_file_actions_t);

impl Actions {
    fn new(moves: &[(RawFd, RawFd)], cwd: &CString) -> io::Result<Actions> {
        // SAFETY: an all-zero value is only storage; init makes it an action list, and only
        // an initialised list is wrapped (and so ever destroyed).
        let mut raw = unsafe { std::mem::zeroed() };
        // SAFETY: init on storage we own.
        check(unsafe { libc::posix_spawn_file_actions_init(&mut raw) })?;
        let mut a = Actions(raw);
        for &(from, to) in moves {
            // SAFETY: an initialised action list; the descriptors are plain numbers here.
            check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut a.0, from, to) })?;
        }
        // SAFETY: an initialised action list and a NUL-terminated path (glibc copies it).
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut a.0, cwd.as_ptr()) })?;
        Ok(a)
    }
}

impl Drop for Actions {
    fn drop(&mut self) {
        // SAFETY: only an initialised list is ever wrapped.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// `posix_spawnattr_t`: an empty signal mask and `SIGPIPE` at its default in the child (wedge,
/// like every Rust program, ignores it), as `std::process::Command` does.
struct Attr(libc::posix_spawnattr_t);

impl Attr {
    fn new() -> io::Result<Attr> {
        // SAFETY: an all-zero value is only storage; init makes it an attribute object, and
        // only an initialised one is wrapped (and so ever destroyed).
        let mut raw = unsafe { std::mem::zeroed() };
        // SAFETY: init on storage we own.
        check(unsafe { libc::posix_spawnattr_init(&mut raw) })?;
        let mut a = Attr(raw);
        // SAFETY: sigset_t storage initialised by sigemptyset before any use.
        let (mut empty, mut pipe): (libc::sigset_t, libc::sigset_t) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        // SAFETY: the sets are local; the attribute object is initialised.
        unsafe {
            libc::sigemptyset(&mut empty);
            libc::sigemptyset(&mut pipe);
            libc::sigaddset(&mut pipe, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigmask(&mut a.0, &empty))?;
            check(libc::posix_spawnattr_setsigdefault(&mut a.0, &pipe))?;
            let flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
            check(libc::posix_spawnattr_setflags(
                &mut a.0,
                flags as libc::c_short,
            ))?;
        }
        Ok(a)
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: only an initialised object is ever wrapped.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// `posix_spawn*` functions return the error number itself.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
    }

    #[test]
    fn the_child_gets_its_descriptors_environment_and_directory() {
        use std::os::fd::AsFd;
        let (out_r, out_w) = pipe();
        let (extra_r, extra_w) = pipe();
        let dir = std::env::temp_dir();
        let req = Request {
            program: Path::new("/bin/sh"),
            args: vec![
                "-c".into(),
                // fd 4 is open in the child, fd 5 (nothing asked for) is not.
                r#"echo "$WEDGE_SPAWN_TEST $(pwd)" >&4; echo 5 >&5 || echo closed"#.into(),
            ],
            env: vec![("WEDGE_SPAWN_TEST".into(), "set".into())],
            cwd: &dir,
            fds: vec![(out_w.as_fd(), 1), (extra_w.as_fd(), 4)],
        };
        let mut k = spawn(&req).unwrap();
        drop(req);
        drop((out_w, extra_w));
        let status = k.wait().unwrap();
        assert!(status.success(), "{status:?}");
        let mut got = String::new();
        std::fs::File::from(extra_r)
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(
            got,
            format!("set {}\n", dir.canonicalize().unwrap().display())
        );
        got.clear();
        std::fs::File::from(out_r).read_to_string(&mut got).unwrap();
        assert_eq!(got, "closed\n");
        // Waited for: kill does not signal whatever has its pid now.
        k.kill().unwrap();
        assert_eq!(k.try_wait().unwrap(), Some(status));
    }

    #[test]
    fn descriptors_that_are_each_others_targets_both_arrive() {
        use std::os::fd::AsFd;
        // Put two pipe ends on 900 and 901 (numbers nothing else in this process reaches),
        // then ask for 900 → 901 and 901 → 900.
        let (a_r, a_w) = pipe();
        let (b_r, b_w) = pipe();
        let on = |fd: &OwnedFd, n: RawFd| {
            // SAFETY: dup3 onto numbers this test owns, close-on-exec.
            let got = unsafe { libc::dup3(fd.as_raw_fd(), n, libc::O_CLOEXEC) };
            assert_eq!(got, n);
            // SAFETY: the new descriptor is this test's.
            unsafe { OwnedFd::from_raw_fd(n) }
        };
        let (a900, b901) = (on(&a_w, 900), on(&b_w, 901));
        drop((a_w, b_w));
        let req = Request {
            // bash: dash reads only one digit after `>&`.
            program: Path::new("/bin/bash"),
            args: vec!["-c".into(), "echo a >&901; echo b >&900".into()],
            env: Vec::new(),
            cwd: Path::new("/"),
            fds: vec![(a900.as_fd(), 901), (b901.as_fd(), 900)],
        };
        let mut k = spawn(&req).unwrap();
        drop(req);
        drop((a900, b901));
        assert!(k.wait().unwrap().success());
        let read = |r: OwnedFd| {
            let mut s = String::new();
            std::fs::File::from(r).read_to_string(&mut s).unwrap();
            s
        };
        assert_eq!(
            (read(a_r), read(b_r)),
            ("a\n".to_string(), "b\n".to_string())
        );
    }

    #[test]
    fn a_missing_program_or_directory_is_an_error() {
        let missing = Request {
            program: Path::new("/nonexistent/wedge-init"),
            args: Vec::new(),
            env: Vec::new(),
            cwd: Path::new("/"),
            fds: Vec::new(),
        };
        let e = spawn(&missing).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
        let no_dir = Request {
            program: Path::new("/bin/true"),
            cwd: Path::new("/nonexistent-dir"),
            ..missing
        };
        let e = spawn(&no_dir).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    }
}
