//! The syscall ABIs besides x86_64's own: a filter that does not check `seccomp_data.arch` can
//! be bypassed through either, so whether they exist says what such a filter is exposed to.

use super::Observed;
use super::child::{ChildEnd, errno_name, in_child, last_errno};

/// `getpid` in the i386 table.
const I386_GETPID: u32 = 20;
/// `__X32_SYSCALL_BIT`.
const X32_BIT: libc::c_long = 0x4000_0000;

pub fn ia32_emulation() -> Observed {
    // In a child: without the emulation `int 0x80` is a general protection fault (SIGSEGV).
    let end = in_child(|| {
        let ret: u32;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `int 0x80` with eax = 20 is the i386 getpid: no pointers, no memory touched;
        // the kernel returns in eax and may clobber r8-r11, declared as such.
        unsafe {
            std::arch::asm!(
                "int 0x80",
                inlateout("eax") I386_GETPID => ret,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                options(nostack)
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            ret = u32::MAX;
        }
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        if ret == pid {
            0
        } else if ret as i32 == -libc::ENOSYS {
            1
        } else {
            2
        }
    });
    match end {
        Ok(ChildEnd::Code(0)) => Observed::new("yes", "int 0x80 getpid returned the pid"),
        Ok(ChildEnd::Code(1)) => Observed::new(
            "no",
            "int 0x80 getpid returned -ENOSYS (emulation built in, turned off)",
        ),
        Ok(ChildEnd::Code(_)) => Observed::new("no", "int 0x80 getpid returned something else"),
        Ok(ChildEnd::Signal(s)) => Observed::new(
            "no",
            format!("int 0x80 killed the process with signal {s} (no i386 entry point)"),
        ),
        Err(e) => Observed::new("error", e.to_string()),
    }
}

pub fn x32_syscalls() -> Observed {
    // SAFETY: getpid through the x32 table: no arguments, nothing touched.
    let r = unsafe { libc::syscall(X32_BIT | libc::SYS_getpid) };
    let errno = last_errno();
    // SAFETY: getpid has no preconditions.
    let pid = i64::from(unsafe { libc::getpid() });
    if r == pid {
        Observed::new("yes", "getpid | __X32_SYSCALL_BIT returned the pid")
    } else {
        Observed::new(
            "no",
            format!(
                "getpid | __X32_SYSCALL_BIT returned {r} ({})",
                errno_name(errno)
            ),
        )
    }
}
