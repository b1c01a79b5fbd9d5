//! wedge-agent's failpoints inside youki's libcontainer, by interposing `chdir` (builds with both the
//! `failpoints` and the `libcontainer` features only).
//!
//! The library's cwd critical sections (`notify_socket.rs`: save the cwd, `chdir` into the
//! container's state directory, bind or connect by relative name, `chdir` back) have no hook of
//! their own, and wedge must not change the library. This file defines the `chdir` symbol of the
//! agent's executable, which the linker prefers to libc's, so the library's own `chdir` calls come
//! here; each is passed to the kernel unchanged (`syscall(SYS_chdir)`, as glibc does), and only
//! while a thread runs a build ([`Scope`]) are failpoints hit around it:
//!
//! | failpoint | when |
//! |---|---|
//! | `agent::cwd::before-enter` | before the `chdir` into the container's state directory (the cwd is already saved) |
//! | `agent::cwd::before-bind` | after it, before the bind or connect by relative name |
//! | `agent::cwd::after-bind` | before any other `chdir` of the builder (the one back) |
//! | `agent::cwd::restored` | after that one |
//!
//! `agent::build::stall`, evaluated when the build starts, makes the build's child processes (the
//! library's intermediate and init, which inherit this thread's state) stop forever in `pause()` at
//! their first `chdir`, before the command is executed: a stuck child, as with the `wedge` builder.
//!
//! Without a configured failpoint the cost is a thread-local read per `chdir`.

use super::super::failpoints;
use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int};
use std::path::Path;
use std::sync::OnceLock;

/// The container's state directory, as the library passes it to `chdir`.
static CONTAINER_DIR: OnceLock<Vec<u8>> = OnceLock::new();

thread_local! {
    /// While this thread runs a build: the process running it ([`whoami`]), and whether the build's
    /// children must stall.
    static BUILD: Cell<Option<((i32, u64), bool)>> = const { Cell::new(None) };
}

/// This process, as its pid and its pid namespace: the library's children inherit [`BUILD`], and
/// a tenant's init may have the builder's pid number in the container's namespace (pid 2 of a
/// fresh namespace is common on both sides), so the pid alone cannot tell them apart.
fn whoami() -> (i32, u64) {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    let found = unsafe { libc::stat(c"/proc/self/ns/pid".as_ptr(), &mut st) } == 0;
    (pid, if found { st.st_ino } else { 0 })
}

/// Says which directory is the container's state directory (canonical, as the library builds it).
pub fn watch(container_dir: &Path) {
    let canonical = container_dir
        .canonicalize()
        .unwrap_or_else(|_| container_dir.to_path_buf());
    let _ = CONTAINER_DIR.set(canonical.into_os_string().into_encoded_bytes());
}

/// Marks this thread as running a build until dropped.
pub struct Scope;

impl Scope {
    /// Evaluates `agent::build::stall` for this build and marks the thread.
    pub fn enter() -> Self {
        let stall = failpoints::fires(failpoints::STALL_BUILD);
        BUILD.set(Some((whoami(), stall)));
        Scope
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        BUILD.set(None);
    }
}

/// Who calls `chdir`.
#[derive(PartialEq)]
enum Caller {
    /// Not a build (or a child of one that is not told to stall).
    Other,
    /// The thread running a build.
    Builder,
    /// A child process of a build told to stall.
    StalledChild,
}

fn caller() -> Caller {
    match BUILD.try_with(Cell::get).ok().flatten() {
        None => Caller::Other,
        Some((builder, _)) if builder == whoami() => Caller::Builder,
        Some((_, true)) => Caller::StalledChild,
        Some((_, false)) => Caller::Other,
    }
}

/// `chdir(2)`, with the failpoints above around the library's calls.
///
/// # Safety
/// As libc's `chdir`: `path` is a NUL-terminated string (or null, which the kernel refuses).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chdir(path: *const c_char) -> c_int {
    let caller = caller();
    if caller == Caller::StalledChild {
        loop {
            // SAFETY: pause has no preconditions; the process waits here until it is killed.
            unsafe { libc::pause() };
        }
    }
    let entering = caller == Caller::Builder
        && !path.is_null()
        && CONTAINER_DIR.get().is_some_and(|dir| {
            // SAFETY: a non-null `path` is a NUL-terminated string (the caller's contract).
            unsafe { CStr::from_ptr(path) }.to_bytes() == dir.as_slice()
        });
    if caller == Caller::Builder {
        failpoints::hit(if entering {
            failpoints::CWD_BEFORE_ENTER
        } else {
            failpoints::CWD_AFTER_BIND
        });
    }
    // SAFETY: the system call takes the caller's pointer as libc's wrapper would.
    let result = unsafe { libc::syscall(libc::SYS_chdir, path) } as c_int;
    if caller == Caller::Builder {
        failpoints::hit(if entering {
            failpoints::CWD_BEFORE_BIND
        } else {
            failpoints::CWD_RESTORED
        });
    }
    result
}
