//! Purpose-built test subjects for wedge's own tests: each mode behaves in one well-defined way.
//!
//! ```text
//! wedge-subject exit [CODE]        print "hello", exit with CODE (default 0)
//! wedge-subject deadlock           two threads (locker-a, locker-b) deadlock on two mutexes
//! wedge-subject pipe-read          block in read(2) on a pipe nobody writes
//! wedge-subject daemon [--stay|--exit]
//!                                  ignore SIGTERM, double-fork a setsid daemon (wedge-daemon), then
//!                                  pause (--stay, the default) or exit 0 leaving the daemon behind
//! wedge-subject busy               spin on the CPU forever
//! wedge-subject sleep MS           sleep MS milliseconds, then exit 0
//! wedge-subject echo-stdin         copy stdin to stdout until end of file, then exit 0
//! wedge-subject signals            count SIGINTs; on SIGTERM print "TERM after N INT", exit 0
//! wedge-subject seccomp-recv       a thread named "supervisor" blocks in
//!                                  ioctl(SECCOMP_IOCTL_NOTIF_RECV) on a listener whose filter
//!                                  user (the main thread) is alive and paused: the shape of a
//!                                  pre-fix wedge-run hang
//! wedge-subject tty-read           on a terminal (as its foreground job) read one line and print
//!                                  "got: LINE"; exit 4 when stdin is not a terminal
//! ```

use std::io::{BufRead, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

fn usage() -> ! {
    eprintln!(
        "usage: wedge-subject exit [CODE] | deadlock | pipe-read | daemon [--stay|--exit] | busy | sleep MS | echo-stdin | signals | tty-read | seccomp-recv"
    );
    std::process::exit(2);
}

fn deadlock() -> ! {
    let a = Arc::new(Mutex::new(0u32));
    let b = Arc::new(Mutex::new(0u32));
    let barrier = Arc::new(Barrier::new(2));
    let spawn =
        |name: &str, first: Arc<Mutex<u32>>, second: Arc<Mutex<u32>>, barrier: Arc<Barrier>| {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || {
                    let mut g1 = first.lock().unwrap_or_else(|e| e.into_inner());
                    // Both threads hold their first lock before either asks for its second: a
                    // deadlock every time, no timing involved.
                    barrier.wait();
                    let mut g2 = second.lock().unwrap_or_else(|e| e.into_inner());
                    *g1 += 1;
                    *g2 += 1;
                })
                .unwrap_or_else(|e| {
                    eprintln!("spawn: {e}");
                    std::process::exit(1)
                })
        };
    let t1 = spawn(
        "locker-a",
        Arc::clone(&a),
        Arc::clone(&b),
        Arc::clone(&barrier),
    );
    let t2 = spawn("locker-b", b, a, barrier);
    say("locking");
    let _ = t1.join();
    let _ = t2.join();
    say("impossible: no deadlock");
    std::process::exit(3);
}

fn pipe_read() -> ! {
    let (reader, writer) = match nix::unistd::pipe() {
        Ok((r, w)) => (std::fs::File::from(r), w),
        Err(e) => {
            eprintln!("pipe: {e}");
            std::process::exit(1);
        }
    };
    say("reading");
    let mut buf = [0u8; 16];
    let n = (&reader).read(&mut buf);
    drop(writer);
    say(&format!("impossible: read returned {n:?}"));
    std::process::exit(3);
}

fn daemon(exit_after: bool) -> ! {
    // SAFETY: installing SIG_IGN for SIGTERM has no handler code to be unsafe.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    // SAFETY: fork in a single-threaded process; the children only make async-signal-safe calls
    // (setsid, fork, prctl, write, pause, _exit).
    match unsafe { libc::fork() } {
        -1 => std::process::exit(1),
        0 => {
            // SAFETY: see above.
            unsafe {
                libc::setsid();
                match libc::fork() {
                    -1 => libc::_exit(1),
                    0 => {
                        libc::prctl(libc::PR_SET_NAME, c"wedge-daemon".as_ptr());
                        let msg = b"daemon started\n";
                        libc::write(1, msg.as_ptr().cast(), msg.len());
                        loop {
                            libc::pause();
                        }
                    }
                    _ => libc::_exit(0),
                }
            }
        }
        child => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe {
                libc::waitpid(child, &mut status, 0);
            }
        }
    }
    say("daemonized");
    if exit_after {
        std::process::exit(0);
    }
    loop {
        // SAFETY: pause has no arguments.
        unsafe {
            libc::pause();
        }
    }
}

static INTS: AtomicUsize = AtomicUsize::new(0);
static TERMED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_int(_: libc::c_int) {
    INTS.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn on_term(_: libc::c_int) {
    TERMED.store(true, Ordering::SeqCst);
}

fn signals() -> ! {
    // SAFETY: the handlers only touch atomics; the masks are plain local sigset_t values.
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGINT);
        libc::sigaddset(&mut block, libc::SIGTERM);
        libc::sigprocmask(libc::SIG_BLOCK, &block, std::ptr::null_mut());
        libc::signal(libc::SIGINT, on_int as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
    }
    say("ready");
    let mut seen = 0;
    loop {
        let n = INTS.load(Ordering::SeqCst);
        if n != seen {
            seen = n;
            say(&format!("INT {n}"));
        }
        if TERMED.load(Ordering::SeqCst) {
            say(&format!("TERM after {n} INT"));
            std::process::exit(0);
        }
        // SAFETY: an empty mask for the duration of the wait; signals blocked otherwise, so none
        // is lost between the checks above and the wait.
        unsafe {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigsuspend(&empty);
        }
    }
}

fn seccomp_recv() -> ! {
    // Trap getppid (110) to the listener, allow everything else.
    let filter = [
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        }, // ld [nr]
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: 110,
        }, // jeq getppid
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x7fc0_0000,
        }, // ret USER_NOTIF
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        }, // ret ALLOW
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl and seccomp with a valid, live filter program.
    let listener = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::syscall(
            libc::SYS_seccomp,
            1,
            1 << 3,
            &prog as *const libc::sock_fprog,
        ) as i32
    };
    if listener < 0 {
        eprintln!("seccomp: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    let supervisor = std::thread::Builder::new()
        .name("supervisor".to_string())
        .spawn(move || {
            let mut notif = [0u64; 10]; // struct seccomp_notif, 80 bytes, zeroed
            // SAFETY: the buffer is 80 bytes, the size NOTIF_RECV (0xc0502100) encodes.
            let rc = unsafe { libc::ioctl(listener, 0xc050_2100, notif.as_mut_ptr()) };
            say(&format!("impossible: NOTIF_RECV returned {rc}"));
        });
    if supervisor.is_err() {
        std::process::exit(1);
    }
    say("supervising");
    loop {
        // SAFETY: pause has no arguments.
        unsafe {
            libc::pause();
        }
    }
}

fn tty_read() -> ! {
    // SAFETY: isatty, tcgetpgrp and getpgrp only take integers.
    let (tty, foreground) =
        unsafe { (libc::isatty(0) == 1, libc::tcgetpgrp(0) == libc::getpgrp()) };
    if !tty {
        say("stdin is not a terminal");
        std::process::exit(4);
    }
    say(if foreground {
        "foreground"
    } else {
        "background"
    });
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    say(&format!("got: {}", line.trim_end()));
    std::process::exit(0);
}

fn busy() -> ! {
    say("spinning");
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("exit") => {
            let code = args
                .get(1)
                .map_or(Ok(0), |c| c.parse::<i32>())
                .unwrap_or_else(|_| usage());
            say("hello");
            std::process::exit(code);
        }
        Some("deadlock") => deadlock(),
        Some("pipe-read") => pipe_read(),
        Some("daemon") => match args.get(1).map(String::as_str) {
            None | Some("--stay") => daemon(false),
            Some("--exit") => daemon(true),
            _ => usage(),
        },
        Some("busy") => busy(),
        Some("signals") => signals(),
        Some("tty-read") => tty_read(),
        Some("seccomp-recv") => seccomp_recv(),
        Some("sleep") => {
            let ms = args
                .get(1)
                .and_then(|m| m.parse::<u64>().ok())
                .unwrap_or_else(|| usage());
            say("sleeping");
            std::thread::sleep(Duration::from_millis(ms));
            say("awake");
        }
        Some("echo-stdin") => {
            let mut input = String::new();
            let _ = std::io::stdin().read_to_string(&mut input);
            print!("{input}");
        }
        _ => usage(),
    }
}
