//! The seccomp filter a sandboxed command runs under: `execve` and `execveat` go to the
//! supervisor as user notifications, every other x86_64 syscall is allowed, any other
//! architecture (i386 through `int 0x80`, say) kills the process, and so does any x32 syscall
//! number. With `deny_tracing` (the policy's default), `ptrace` and `process_vm_writev` fail with
//! `EPERM`: they are the direct ways for one sandboxed process to rewrite another's argv while the
//! supervisor decides on it. The cost: no debugger, `strace` or `gdb` works inside the sandbox.
//!
//! libseccomp builds and loads the main filter (with `SECCOMP_FILTER_FLAG_NEW_LISTENER`). It
//! checks `seccomp_data.arch`, but libseccomp 2.5's x86_64 filter lets numbers with the x32 bit
//! (`0x40000000`) fall through to the default action, so an x32 `execve` (520 | 0x40000000)
//! would be allowed on a kernel built with the x32 ABI. libseccomp cannot express a range on
//! the syscall number, so a second, six-instruction filter ([`X32_GUARD`]) kills any such
//! number. The kernel runs every installed filter and takes the most restrictive answer.

use std::os::fd::OwnedFd;

use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};

use crate::mutation::{Mutation, active};

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const OFFSET_NR: u32 = 0; // offsetof(struct seccomp_data, nr)
const OFFSET_ARCH: u32 = 4; // offsetof(struct seccomp_data, arch)

const fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Kills the process on any syscall number with the x32 bit set, or on a non-x86_64 arch.
pub const X32_GUARD: [libc::sock_filter; 6] = [
    stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, OFFSET_ARCH),
    jump(
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        AUDIT_ARCH_X86_64,
        0,
        3,
    ),
    stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, OFFSET_NR),
    jump(
        libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
        X32_SYSCALL_BIT,
        1,
        0,
    ),
    stmt(libc::BPF_RET | libc::BPF_K, SECCOMP_RET_ALLOW),
    stmt(libc::BPF_RET | libc::BPF_K, SECCOMP_RET_KILL_PROCESS),
];

/// The syscalls `deny_tracing` fails. (Writing `/proc/PID/mem` is not one of them: see
/// runtime/README.md, "What the policy does not stop".)
pub const TRACING: [&str; 2] = ["ptrace", "process_vm_writev"];

/// Installs both filters on the calling thread (and so on everything it later executes) and
/// returns the listener. Sets `no_new_privs` first, as an unprivileged filter requires.
///
/// Call it single-threaded, right before exec: the filter is not synchronised to other threads.
pub fn install_exec_filter(deny_tracing: bool) -> Result<OwnedFd, FilterError> {
    let mut ctx = ScmpFilterContext::new(ScmpAction::Allow).map_err(FilterError::Build)?;
    // libseccomp's x86_64 filter also sends x32 numbers to the bad-arch action, so each of the
    // two mutations lifts it and then removes its own half of the guard below.
    let badarch = if active(Mutation::ArchCheck) || active(Mutation::X32Check) {
        ScmpAction::Allow
    } else {
        ScmpAction::KillProcess
    };
    ctx.set_act_badarch(badarch).map_err(FilterError::Build)?;
    ctx.set_ctl_nnp(true).map_err(FilterError::Build)?;
    for name in ["execve", "execveat"] {
        let syscall = ScmpSyscall::from_name(name).map_err(FilterError::Build)?;
        ctx.add_rule(ScmpAction::Notify, syscall)
            .map_err(FilterError::Build)?;
    }
    if deny_tracing {
        for name in TRACING {
            let syscall = ScmpSyscall::from_name(name).map_err(FilterError::Build)?;
            ctx.add_rule(ScmpAction::Errno(libc::EPERM), syscall)
                .map_err(FilterError::Build)?;
        }
    }
    ctx.load().map_err(FilterError::Load)?;
    let raw = ctx.get_notify_fd().map_err(FilterError::Load)?;
    // Take our own close-on-exec copy: what libseccomp does with its descriptor on release is
    // its business, and the listener must never reach the sandboxed command.
    // SAFETY: `raw` is the listener libseccomp just received from the kernel.
    let listener = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) }
        .try_clone_to_owned()
        .map_err(FilterError::Listener)?;
    drop(ctx);
    install_x32_guard()?;
    Ok(listener)
}

fn install_x32_guard() -> Result<(), FilterError> {
    let mut guard = X32_GUARD;
    if active(Mutation::ArchCheck) {
        guard[1].jf = 2; // a foreign arch jumps to ALLOW instead of KILL
    }
    if active(Mutation::X32Check) {
        guard[3].jt = 0; // an x32 number falls through to ALLOW
    }
    let program = libc::sock_fprog {
        len: guard.len() as u16,
        filter: guard.as_ptr() as *mut _,
    };
    // SAFETY: `program` points at a valid BPF program that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &program,
        )
    };
    if rc != 0 {
        return Err(FilterError::X32Guard(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("building the seccomp filter: {0}")]
    Build(libseccomp::error::SeccompError),
    #[error("loading the seccomp filter: {0}")]
    Load(libseccomp::error::SeccompError),
    #[error("taking the seccomp listener: {0}")]
    Listener(std::io::Error),
    #[error("loading the x32 guard filter: {0}")]
    X32Guard(std::io::Error),
}
