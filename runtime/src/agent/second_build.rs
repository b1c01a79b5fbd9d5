//! `serve --builder libcontainer-latest`: the same agent built a second time against the current
//! libcontainer release (`runtime/libcontainer-latest`, binary `wedge-agent-latest`), because the
//! pinned 0.5.7 and the current release cannot link into one binary (their dependency trees pin
//! conflicting exact versions, and one lock file holds one tree).
//!
//! Guarantee: a scenario asks for either release with the same program, `wedge-agent`, and gets
//! the same process: the first build `exec`s the second in place (same pid, same descriptors, same
//! arguments), before it has a thread, a file or a socket of its own, so the harness watching the
//! agent sees one process whichever release builds. A missing second build is an error naming the
//! script that makes it, never a silent fall-back to the pinned release.

use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// The second build's program name, looked for beside the running executable.
pub const PROGRAM: &str = "wedge-agent-latest";

/// The libcontainer release this build's `libcontainer` builder uses.
pub const LIBRARY_VERSION: &str = if IS_SECOND_BUILD { "0.7.0" } else { "0.5.7" };

/// Whether this binary is the second build (set by `runtime/build.rs` from the package name).
pub const IS_SECOND_BUILD: bool = cfg!(wedge_second_build);

/// What the process is called, whichever build runs it: the kernel names a process after the
/// file it executes, so the second build would be `wedge-agent-lat` (15 bytes) in `/proc`, in
/// diagnoses and in every scenario's pattern that names the agent.
const PROCESS_NAME: &std::ffi::CStr = c"wedge-agent";

/// In the second build, takes the first build's process name back (call before any thread
/// exists: threads and children inherit it).
pub fn keep_process_name() {
    if IS_SECOND_BUILD {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, PROCESS_NAME.as_ptr()) };
    }
}

/// Replaces this process with [`PROGRAM`] beside it, with the same arguments; returns only on
/// failure.
pub fn exec_second_build() -> Result<()> {
    let me = std::env::current_exe().context("finding this executable")?;
    let dir = me.parent().map(PathBuf::from).unwrap_or_default();
    let program = dir.join(PROGRAM);
    if !program.is_file() {
        bail!(
            "--builder libcontainer-latest needs {}, the agent built against libcontainer's current \
             release: build it with ci/build-libcontainer-latest.sh",
            program.display()
        );
    }
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| PROGRAM.into());
    let error = std::process::Command::new(&program)
        .arg0(argv0)
        .args(args)
        .exec();
    Err(error).with_context(|| format!("executing {}", program.display()))
}
