//! `wedge-exec-probe`: performs the unusual execs and syscalls an exec supervisor must stop,
//! so that tests (and users checking their own supervisor) can try them for real.
//!
//! Modes:
//! - `threaded-exec PATH [ARGS...]`: start a second thread, then execve from the first.
//! - `execveat-empty-path PATH`: open PATH and execveat(fd, "", AT_EMPTY_PATH).
//! - `int80-execve PATH`: execve through the i386 ABI (`int 0x80`) from this 64-bit process.
//! - `x32-getpid`: call getpid with the x32 syscall bit set.
//! - `ptrace-traceme`: call `ptrace(PTRACE_TRACEME)`.
//! - `process-vm-writev`: write one byte of our own memory through `process_vm_writev`.
//! - `shared-argv-race DIR PATH BEFORE AFTER`: execve PATH with argv `[PATH, BEFORE]`, argv[1]
//!   living in a `MAP_SHARED` page; a forked helper waits for `DIR/read` (the supervisor's
//!   instrumentation creates it once it has read the request), overwrites argv[1] with AFTER, and
//!   creates `DIR/go`. Demonstrates the read-to-CONTINUE race between two sandboxed processes.
//!
//! Exit status: 0 if the call was refused with an error (the probe prints it), 3 if it
//! unexpectedly returned success, 2 on a usage error. If the exec succeeds the process becomes
//! PATH; if the filter kills the process its status says so (SIGSYS).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

fn cstr(s: &std::ffi::OsStr) -> CString {
    CString::new(s.as_bytes()).expect("argument without NUL")
}

fn refused(what: &str, rc: i64) -> ! {
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        println!(
            "{what} refused: {err} (errno {})",
            err.raw_os_error().unwrap_or(0)
        );
        std::process::exit(0)
    }
    println!("{what} returned {rc}");
    std::process::exit(3)
}

fn main() {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let mode = args.first().and_then(|m| m.to_str()).unwrap_or("");
    match (mode, &args[1..]) {
        ("threaded-exec", [path, rest @ ..]) => threaded_exec(path, rest),
        ("execveat-empty-path", [path]) => {
            let file = std::fs::File::open(path).expect("open PATH");
            let argv = [cstr(path)];
            let argv_ptrs = [argv[0].as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null::<libc::c_char>()];
            let empty = c"";
            // SAFETY: all pointers are valid, NUL-terminated and outlive the call.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_execveat,
                    std::os::fd::AsRawFd::as_raw_fd(&file),
                    empty.as_ptr(),
                    argv_ptrs.as_ptr(),
                    envp.as_ptr(),
                    libc::AT_EMPTY_PATH,
                )
            };
            refused("execveat(AT_EMPTY_PATH)", rc)
        }
        ("int80-execve", [path]) => {
            let path = cstr(path);
            let rc: i32;
            // SAFETY: i386 execve(path, NULL, NULL). A 64-bit pointer is truncated to 32 bits, so
            // without a filter this fails with EFAULT; with one that checks the arch, the
            // process is killed before the kernel looks at the arguments.
            unsafe {
                std::arch::asm!(
                    "xchg {arg:r}, rbx",
                    "int 0x80",
                    "xchg {arg:r}, rbx",
                    arg = inout(reg) path.as_ptr() as u64 & 0xffff_ffff => _,
                    inlateout("eax") 11 => rc,
                    in("ecx") 0,
                    in("edx") 0,
                );
            }
            if rc < 0 {
                println!("int 0x80 execve refused: errno {}", -rc);
                std::process::exit(0)
            }
            println!("int 0x80 execve returned {rc}");
            std::process::exit(3)
        }
        ("x32-getpid", []) => {
            // SAFETY: a syscall with no arguments.
            let rc = unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) };
            refused("x32 getpid", rc)
        }
        ("ptrace-traceme", []) => {
            // SAFETY: PTRACE_TRACEME takes no pointers.
            let rc = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
            refused("ptrace(PTRACE_TRACEME)", rc)
        }
        ("process-vm-writev", []) => refused("process_vm_writev", write_own_byte()),
        ("shared-argv-race", [dir, path, before, after]) => {
            shared_argv_race(dir, path, before, after)
        }
        _ => {
            eprintln!(
                "usage: wedge-exec-probe threaded-exec PATH [ARGS...] | execveat-empty-path PATH | \
                 int80-execve PATH | x32-getpid | ptrace-traceme | process-vm-writev | \
                 shared-argv-race DIR PATH BEFORE AFTER"
            );
            std::process::exit(2)
        }
    }
}

/// process_vm_writev of one byte into this process's own memory: the return value.
fn write_own_byte() -> i64 {
    let mut target = [0u8; 1];
    let source = [1u8; 1];
    let local = libc::iovec {
        iov_base: source.as_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    let remote = libc::iovec {
        iov_base: target.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: both iovecs point at live one-byte buffers of this process.
    let rc = unsafe { libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) };
    rc as i64
}

fn shared_argv_race(
    dir: &std::ffi::OsStr,
    path: &std::ffi::OsStr,
    before: &std::ffi::OsStr,
    after: &std::ffi::OsStr,
) -> ! {
    let len = before.len().max(after.len()) + 1;
    // SAFETY: a fresh anonymous shared mapping, never unmapped (the process execs or exits).
    let shared = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(shared, libc::MAP_FAILED, "mmap");
    let shared = shared.cast::<u8>();
    let put = |text: &std::ffi::OsStr| {
        // SAFETY: `text` plus its NUL fits the `len` bytes mapped above.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_bytes().as_ptr(), shared, text.len());
            *shared.add(text.len()) = 0;
        }
    };
    put(before);
    let dir = std::path::PathBuf::from(dir);
    // SAFETY: single-threaded here; the child only polls the filesystem, writes and exits.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !dir.join("read").exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            put(after);
            std::fs::write(dir.join("go"), b"").expect("DIR/go");
            std::process::exit(0)
        }
        nix::unistd::ForkResult::Parent { .. } => {
            let path = cstr(path);
            let argv = [path.as_ptr(), shared.cast_const().cast(), std::ptr::null()];
            let envp = [std::ptr::null::<libc::c_char>()];
            // SAFETY: NUL-terminated strings and NULL-terminated arrays that outlive the call.
            unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            println!("execve failed: {}", std::io::Error::last_os_error());
            std::process::exit(1)
        }
    }
}

fn threaded_exec(path: &std::ffi::OsStr, rest: &[std::ffi::OsString]) -> ! {
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        started_tx.send(()).unwrap();
        loop {
            std::thread::park();
        }
    });
    started_rx.recv().unwrap();
    let path = cstr(path);
    let mut argv: Vec<CString> = vec![path.clone()];
    argv.extend(rest.iter().map(|a| cstr(a)));
    let err = nix::unistd::execv(&path, &argv).unwrap_err();
    println!("threaded execve refused: {err} (errno {})", err as i32);
    std::process::exit(0)
}
