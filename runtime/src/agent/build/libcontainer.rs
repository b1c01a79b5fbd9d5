//! The `libcontainer` builder: each exec is a tenant build by youki's `libcontainer` 0.5.7 (the
//! release boxlite #349's analysis names; in the second build of the agent, `wedge-agent-latest`,
//! the current release: `agent::second_build`) into the one container the agent created at start,
//! the way boxlite's guest agent runs a command in its box.
//!
//! Guarantee: the build is the real library's, step for step, with nothing of wedge's inside it. Its
//! `TenantContainerBuilder::build()` blocks the calling thread through a clone of an intermediate
//! process, a `waitpid`, blocking channel reads and a blocking read of the exec-notify pipe, and it
//! `chdir`s the whole process twice (`notify_socket.rs`: the listener is bound, and the start
//! notification connected, by a short relative name inside the container's state directory). So the
//! strategies (`spawn::Strategy`) meet the library's own hazards, not an imitation of them:
//!
//! - `inline`: the whole build on a runtime worker;
//! - `blocking-pool`: builds in parallel, sharing the process's cwd (the race boxlite hit);
//! - `blocking-pool-std-mutex`: the static lock is held across the whole `build()` call, because the
//!   library's `chdir`s are inside it and cannot be wrapped alone (boxlite's own fix does the same);
//! - `zygote`: the single-threaded zygote calls the library.
//!
//! What differs from the `wedge` builder, and why: the library reports no process before `build()`
//! returns, so a build stuck inside it (a child deadlocked on a lock inherited from another thread)
//! cannot be cancelled by the exec's timeout, which then only answers the client; the command joins
//! the container's pid namespace instead of getting its own, so it is not pid 1 and a kill reaches
//! it and its process group (it is a session leader), not the whole namespace; its environment is the
//! container's `PATH` plus the request's.
//!
//! # The container
//! [`Container::create`] lays out an OCI bundle under the agent's state directory: a root filesystem
//! made of one static busybox binary (Debian's `busybox-static`, the same file in the host and in a
//! wedge guest) with a link per applet, and a `config.json` that runs `sleep` as the container's
//! pid 1 in new pid, mount, ipc and uts namespaces, with the host's `/proc` bound in (so a command
//! sees its host pid, as with the `wedge` builder), a tmpfs `/dev`, `devpts` and a tmpfs `/tmp`. The
//! spec asks for no cgroup resources, so the library only adds processes to a cgroup: the agent's
//! own (on cgroup v1 and hybrid hosts an empty `cgroupsPath` means "the process's own cgroup in each
//! hierarchy"; on a unified host the agent's cgroup path is given). It creates no cgroup directory,
//! so nothing outlives the agent even when it is killed. [`Container::destroy`] kills the container's
//! init (and with it every process in its pid namespace) and removes the state.

use super::{BuildError, BuildFailure, BuildSpec, Built, ContainerRef, failed, pipe};
use crate::sys;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use wedge_core::cwd::SpawnLock;

/// The id of the agent's container.
const CONTAINER_ID: &str = "wedge-agent";
/// The `PATH` of the container's processes.
const CONTAINER_PATH: &str = "/bin:/sbin:/usr/bin:/usr/sbin";

/// Why the container could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a static busybox (install Debian's busybox-static, or pass --busybox)")]
    NotBusybox(PathBuf),
    #[error("libcontainer could not {what}: {source}")]
    Library {
        what: &'static str,
        #[source]
        source: libcontainer::error::LibcontainerError,
    },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError + '_ {
    move |source| ContainerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The agent's one container, running.
#[derive(Debug)]
pub struct Container {
    reference: ContainerRef,
    init: Pid,
}

impl Container {
    /// Lays out the bundle under `state_root` from the static `busybox`, then creates and starts the
    /// container. Call it before the process has other threads: the library clones.
    pub fn create(state_root: &Path, busybox: &Path) -> Result<Self, ContainerError> {
        own_proc()?;
        let bundle = state_root.join("bundle");
        let rootfs = bundle.join("rootfs");
        lay_out_rootfs(&rootfs, busybox)?;
        let config = bundle.join("config.json");
        std::fs::write(&config, config_json(&cgroups_path()).to_string())
            .map_err(io_at(&config))?;
        let root = state_root.join("containers");
        std::fs::create_dir_all(&root).map_err(io_at(&root))?;
        let library = |what| move |source| ContainerError::Library { what, source };
        let mut container = ContainerBuilder::new(CONTAINER_ID.into(), SyscallType::default())
            .with_root_path(&root)
            .map_err(library("use its state directory"))?
            .as_init(&bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(library("create the container"))?;
        let init = container.pid();
        container.start().map_err(library("start the container"))?;
        let init = container.pid().or(init).map(|p| Pid::from_raw(p.as_raw()));
        tracing::info!(
            "libcontainer {}: the agent's container started",
            super::super::second_build::LIBRARY_VERSION
        );
        #[cfg(feature = "failpoints")]
        super::library_hooks::watch(&root.join(CONTAINER_ID));
        let init = init.ok_or(ContainerError::Library {
            what: "report the container's init process",
            source: libcontainer::error::LibcontainerError::Other("no pid in its state".into()),
        })?;
        Ok(Self {
            reference: ContainerRef {
                root,
                id: CONTAINER_ID.into(),
                rootfs,
            },
            init,
        })
    }

    /// What a build needs to join this container.
    pub fn reference(&self) -> &ContainerRef {
        &self.reference
    }

    /// Kills the container's init (the kernel then kills every process of its pid namespace) and
    /// removes the state. Call it when no exec is being waited for any more.
    ///
    /// The init is the agent's child (a subreaper), and so is every command: the library clones them
    /// as siblings of its intermediate process. A dying pid-namespace init waits until every process
    /// of its namespace has been reaped, and a command that already exited is a zombie only its
    /// parent, this agent, can reap; so this reaps any child until the init itself is reaped.
    pub fn destroy(self) {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        let _ = kill(self.init, Signal::SIGKILL);
        loop {
            match waitpid(None, Some(WaitPidFlag::__WALL)) {
                Ok(status) if status.pid() == Some(self.init) => break,
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        let _ = std::fs::remove_dir_all(&self.reference.root);
    }
}

/// Makes `/proc` this process's pid namespace's. The library finds processes by the pids it sees
/// (`/proc/PID/ns/pid` of the container's init, to join its namespaces), so in a pid namespace
/// whose `/proc` is still the parent's (a harness trial, `unshare --pid --fork`) it would join the
/// namespaces of some other process, or fail with EINVAL. There the agent mounts a `/proc` of its
/// own, in a private mount namespace: nothing outside it sees the change. Needs a single-threaded
/// process (unshare of the mount namespace), which `create` is called in.
fn own_proc() -> Result<(), ContainerError> {
    use nix::mount::{MsFlags, mount};
    let seen = std::fs::read_link("/proc/self").ok();
    let me = std::process::id().to_string();
    if seen.as_deref() == Some(Path::new(&me)) {
        return Ok(());
    }
    let os = |what: &'static str| {
        move |e: nix::Error| ContainerError::Io {
            path: PathBuf::from("/proc"),
            source: std::io::Error::other(format!("{what}: {e}")),
        }
    };
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(os("unshare(CLONE_NEWNS)"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(os("making / private"))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), "/proc", Some("proc"), flags, None::<&str>).map_err(os("mounting /proc"))
}

/// A root filesystem of one static busybox and a link per applet.
fn lay_out_rootfs(rootfs: &Path, busybox: &Path) -> Result<(), ContainerError> {
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).map_err(io_at(&bin))?;
    let target = bin.join("busybox");
    std::fs::copy(busybox, &target).map_err(io_at(busybox))?;
    // A dynamically linked busybox would need its loader and libraries in the rootfs.
    let head = std::fs::read(&target).map_err(io_at(&target))?;
    if !matches!(sys::binfmt::elf_interpreter(&head), Ok(None)) {
        return Err(ContainerError::NotBusybox(busybox.to_path_buf()));
    }
    let listed = std::process::Command::new(&target)
        .arg("--list-full")
        .output()
        .map_err(io_at(&target))?;
    if !listed.status.success() {
        return Err(ContainerError::NotBusybox(busybox.to_path_buf()));
    }
    for applet in String::from_utf8_lossy(&listed.stdout).lines() {
        let link = rootfs.join(applet);
        if applet.is_empty() || link == target {
            continue;
        }
        if let Some(dir) = link.parent() {
            std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        }
        symlink("/bin/busybox", &link).map_err(io_at(&link))?;
    }
    for dir in ["proc", "dev", "tmp", "etc"] {
        let path = rootfs.join(dir);
        std::fs::create_dir_all(&path).map_err(io_at(&path))?;
    }
    Ok(())
}

/// The `cgroupsPath` that puts the container in the agent's own cgroups without creating any: empty
/// where libcgroups picks its v1 manager (it then uses the process's own cgroup in each hierarchy),
/// the agent's unified path where it picks v2.
fn cgroups_path() -> String {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let unified_only = own.lines().all(|line| line.starts_with("0::"));
    match libcgroups::common::get_cgroup_setup() {
        Ok(libcgroups::common::CgroupSetup::Unified) if unified_only => own
            .lines()
            .find_map(|line| line.strip_prefix("0::"))
            .unwrap_or("/")
            .to_string(),
        _ => String::new(),
    }
}

/// The container's OCI runtime spec.
fn config_json(cgroups_path: &str) -> serde_json::Value {
    let ns = |kind: &str| serde_json::json!({ "type": kind });
    serde_json::json!({
        "ociVersion": "1.0.2",
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "wedge",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["/bin/sleep", "2147483647"],
            "env": [format!("PATH={CONTAINER_PATH}")],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "mounts": [
            // The host's /proc, as the `wedge` builder's commands see it: a command's /proc/self
            // is its host pid, which the agent's tests and the harness's diagnoses work with.
            { "destination": "/proc", "type": "bind", "source": "/proc",
              "options": ["rbind", "nosuid", "nodev", "noexec"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"] }
        ],
        "linux": {
            "namespaces": [ns("pid"), ns("mount"), ns("ipc"), ns("uts")],
            "cgroupsPath": cgroups_path
        }
    })
}

/// Builds and starts `spec` as a tenant of `container`, blocking until the library returns. With a
/// `lock`, it is held across the whole call (see the module doc).
pub fn build(
    spec: &BuildSpec,
    container: &ContainerRef,
    lock: Option<&SpawnLock>,
) -> Result<Built, BuildFailure> {
    let (stdin_read, stdin_write) = pipe()?;
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    let argv: Vec<String> = std::iter::once(spec.program.clone())
        .chain(spec.args.iter().cloned())
        .collect();
    let env: HashMap<String, String> = spec.env.iter().cloned().collect();
    let serialised = lock.map(SpawnLock::lock);
    #[cfg(feature = "failpoints")]
    let _hooked = super::library_hooks::Scope::enter();
    let built = ContainerBuilder::new(container.id.clone(), SyscallType::default())
        .with_root_path(&container.root)
        .and_then(|b| {
            b.with_stdin(stdin_read)
                .with_stdout(stdout_write)
                .with_stderr(stderr_write)
                .as_tenant()
                .with_container_args(argv)
                .with_env(env)
                .with_cwd(Some(&spec.cwd))
                .with_detach(true)
                .build()
        });
    drop(serialised);
    let pid = built.map_err(|e| library_failure(&spec.program, &e))?;
    let pid = Pid::from_raw(pid.as_raw());
    // The command is the agent's child (reparented to the subreaper when the intermediate exited) and
    // nobody else reaps it, so its pid is still its own here even if it already exited.
    let pidfd = sys::pidfd_open(pid.as_raw()).map_err(|e| {
        let _ = kill(pid, Signal::SIGKILL);
        failed(format_args!("pidfd_open of the command {pid}: {e}"))
    })?;
    Ok(Built {
        pid: pid.as_raw(),
        pidfd,
        stdin: stdin_write,
        stdout: stdout_read,
        stderr: stderr_read,
    })
}

/// A library error as a build failure. The library reports a failed exec as text only, so a program
/// that is missing or not executable is recognised by the executor's wording. The message carries
/// the error's whole chain of sources: the library's own text often leaves out the cause (its
/// notify-socket `Connect` error names the socket, not the errno), and a diagnosis needs it.
fn library_failure(program: &str, error: &libcontainer::error::LibcontainerError) -> BuildFailure {
    let top = format!("libcontainer: {error}");
    // Only the library's own words say whether the program is missing: a cause further down the
    // chain (a socket's ENOENT) is not about the program.
    let lower = top.to_lowercase();
    let message = with_sources(top, error);
    let errno = if lower.contains("not found") || lower.contains("no such file") {
        Some(libc::ENOENT)
    } else if lower.contains("permission denied") || lower.contains("correct permissions") {
        Some(libc::EACCES)
    } else {
        None
    };
    match errno {
        Some(errno) => BuildError::Exec {
            program: program.to_string(),
            errno,
            message,
        }
        .into(),
        None => BuildError::Failed(message).into(),
    }
}

/// `top` followed by each source of `error` in turn, skipping a source whose text the message
/// already holds (libraries often repeat their source in their own text).
fn with_sources(mut top: String, error: &dyn std::error::Error) -> String {
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !top.contains(&text) {
            top.push_str(": ");
            top.push_str(&text);
        }
        source = s.source();
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that says what failed but leaves its cause to `source()`, as the library's do.
    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("failed to connect to notify socket: tenant-notify-1.sock")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_message_names_the_cause_the_library_left_out() {
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let cause = refused.to_string();
        let error = Outer(refused);
        let message = with_sources(format!("libcontainer: {error}"), &error);
        assert_eq!(
            message,
            format!(
                "libcontainer: failed to connect to notify socket: tenant-notify-1.sock: {cause}"
            )
        );
        // A cause the text already holds is not said twice.
        let said = with_sources(format!("libcontainer: {error}: {cause}"), &error);
        assert_eq!(said.matches(&cause).count(), 1, "{said}");
    }
}
