//! The server's side: `wedge-init --serve PARENT`, and each keeper it forks.
//!
//! The server is single-threaded and does nothing but read orders, so a fork of it is safe (no
//! lock can be held by another thread) and cheap (a small process, already past its loader and
//! its C library's start-up). Each keeper it forks is made wedge's child by `CLONE_PARENT`
//! ([`wedge_sys::fork_as_sibling`]), so wedge waits for it, signals it and is its parent for
//! its parent-death signal exactly as when it spawned the keeper itself. The keeper then puts
//! its descriptors and working directory in place, says [`Answer::Ready`] (or the errno of the
//! step that failed, and exits 127), closes everything else it inherited, and runs
//! [`crate::engine::pidns::keeper_main`] as a freshly exec'd keeper would.

use std::ffi::OsString;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::OnceLock;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, send};

use super::wire::{Answer, MAX_FDS, MAX_MESSAGE, Order};
use crate::engine::spawn::CloneAbove;

/// `wedge-init --serve PARENT`.
pub const FLAG: &str = "--serve";

/// The descriptor on which the server talks to wedge.
pub const SOCKET_FD: RawFd = 3;

/// The server's whole life. Never returns; exits 0 once wedge closes its end.
pub fn serve_main(args: &[String]) -> ! {
    let parent: Option<i32> = args.first().and_then(|p| p.parse().ok());
    // SAFETY: prctl with integer arguments.
    let armed = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == 0;
    if !armed || parent != Some(nix::unistd::getppid().as_raw()) {
        std::process::exit(125);
    }
    let program = std::env::args_os().next().unwrap_or_default();
    show_command_line(&[program, FLAG.into(), args[0].clone().into()]);
    // Whatever else wedge had open without close-on-exec when it started the server (what it
    // inherited itself, or a descriptor another thread was opening) is not the server's to
    // keep open, nor its keepers'.
    if wedge_sys::close_fds_except(&[SOCKET_FD]).is_err() {
        std::process::exit(1);
    }
    // SAFETY: wedge hands the socket over on SOCKET_FD, and nothing else here owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(SOCKET_FD) };
    let hello = Answer::Hello {
        pid: std::process::id() as i32,
        fingerprint: crate::engine::keeper::FINGERPRINT.to_string(),
    };
    if reply(&sock, &hello).is_err() {
        std::process::exit(1);
    }
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        match receive(&sock, &mut buf) {
            Ok(None) => std::process::exit(0),
            Ok(Some((order, fds))) => serve_one(&sock, order, fds),
            Err(Received::Bad(errno)) => {
                let _ = reply(&sock, &Answer::Refused { errno });
            }
            Err(Received::Gone) => std::process::exit(1),
        }
    }
}

/// Forks the keeper `order` asks for; in the child, becomes it.
fn serve_one(sock: &OwnedFd, order: Order, fds: Vec<OwnedFd>) {
    // SAFETY: this process has one thread (it starts none), so no lock is held by another.
    match unsafe { wedge_sys::fork_as_sibling() } {
        Ok(wedge_sys::Cloned::Child) => become_keeper(sock, order, fds),
        Ok(wedge_sys::Cloned::Parent(_)) => {}
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            let _ = reply(sock, &Answer::Refused { errno });
        }
    }
}

enum Received {
    /// The message was not an order this server can take: refused with this errno.
    Bad(i32),
    /// The socket failed.
    Gone,
}

/// The next order and its descriptors; `None` at end of file.
fn receive(sock: &OwnedFd, buf: &mut [u8]) -> Result<Option<(Order, Vec<OwnedFd>)>, Received> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (len, flags, fds) = loop {
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for c in msg.cmsgs().map_err(|_| Received::Bad(libc::EMSGSIZE))? {
                    if let ControlMessageOwned::ScmRights(got) = c {
                        // SAFETY: descriptors the kernel just installed for this process.
                        fds.extend(
                            got.into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                break (msg.bytes, msg.flags, fds);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return Err(Received::Gone),
        }
    };
    if len == 0 && fds.is_empty() {
        return Ok(None);
    }
    if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
        return Err(Received::Bad(libc::EMSGSIZE));
    }
    let order = Order::decode(&buf[..len]).map_err(|_| Received::Bad(libc::EINVAL))?;
    if order.targets.len() != fds.len() || order.args.is_empty() {
        return Err(Received::Bad(libc::EINVAL));
    }
    Ok(Some((order, fds)))
}

fn reply(sock: &OwnedFd, answer: &Answer) -> nix::Result<usize> {
    send(sock.as_raw_fd(), &answer.encode(), MsgFlags::MSG_NOSIGNAL)
}

/// In the forked child: puts the order's descriptors and directory in place, answers, and runs
/// the keeper. Never returns.
fn become_keeper(sock: &OwnedFd, order: Order, fds: Vec<OwnedFd>) -> ! {
    let pid = std::process::id() as i32;
    let top = order.targets.iter().copied().max().unwrap_or(-1);
    // The socket first: it may sit on a target number (the server's is on 3, a keeper's report
    // too), and every answer must go to wedge, never to a descriptor that took its number.
    let sock = lift(sock, top).unwrap_or_else(|e| fail(sock, pid, &e));
    if let Err(e) = place(&order.targets, fds).and_then(|()| std::env::set_current_dir(&order.cwd))
    {
        fail(&sock, pid, &e)
    }
    for (k, v) in &order.env {
        // SAFETY: this process has one thread; nothing reads the environment concurrently.
        unsafe { std::env::set_var(k, v) };
    }
    show_command_line(&order.args);
    let args: Option<Vec<String>> = order
        .args
        .into_iter()
        .map(|a| a.into_string().ok())
        .collect();
    let Some(args) = args else {
        fail(&sock, pid, &std::io::Error::from_raw_os_error(libc::EINVAL))
    };
    let _ = reply(&sock, &Answer::Ready { pid, errno: 0 });
    // The server's socket and every other descriptor it had go; the order's stay.
    drop(sock);
    if let Err(e) = wedge_sys::close_fds_except(&order.targets) {
        eprintln!("wedge-init: closing the server's descriptors: {e}");
        std::process::exit(127);
    }
    crate::engine::pidns::keeper_main(args)
}

/// Answers that the keeper's start failed at `e`, and exits 127 (wedge reaps it).
fn fail(sock: &OwnedFd, pid: i32, e: &std::io::Error) -> ! {
    let errno = e.raw_os_error().unwrap_or(libc::EIO);
    let _ = reply(sock, &Answer::Ready { pid, errno });
    // SAFETY: _exit ends this process without running anything of the server's.
    unsafe { libc::_exit(127) }
}

/// Moves each descriptor to its target number (clearing close-on-exec there), first lifting
/// every one above the highest target, so that no `dup2` overwrites one still to be moved.
fn place(targets: &[RawFd], fds: Vec<OwnedFd>) -> std::io::Result<()> {
    let top = targets.iter().copied().max().unwrap_or(-1);
    let lifted: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| lift(fd, top))
        .collect::<Result<_, _>>()?;
    drop(fds);
    for (fd, &target) in lifted.iter().zip(targets) {
        // SAFETY: dup2 onto a number this process has given up (nothing else refers to it).
        if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A close-on-exec copy of `fd` numbered above `top`.
fn lift(fd: &OwnedFd, top: RawFd) -> std::io::Result<OwnedFd> {
    fd.as_fd().try_clone_to_owned_above(top + 1)
}

/// Makes `/proc/PID/cmdline` show `args` instead of the server's own command line, as an
/// exec'd keeper's would (diagnoses and leftover rules read it). With `CAP_SYS_RESOURCE` the
/// kernel is pointed at a copy of `args`, exactly. Without it, the text is written over the
/// server's own argument area, which wedge pads to [`TITLE_ROOM`] bytes, as `setproctitle`
/// does: the arguments then read as one string joined by spaces, cut at the room there is.
pub fn show_command_line(args: &[OsString]) {
    // Found out once, by the server for its own command line; its keepers inherit the answer
    // (and the argument area's addresses, which a fork keeps).
    let mut done = false;
    let how = TITLE.get_or_init(|| {
        done = point_at_copy(args);
        match (done, argument_area()) {
            (true, _) => Title::Copy,
            (false, Some((start, end))) => Title::Area { start, end },
            (false, None) => Title::Neither,
        }
    });
    match *how {
        Title::Copy if !done => {
            point_at_copy(args);
        }
        Title::Area { start, end } => write_over_arguments(start, end, args),
        _ => {}
    }
}

/// How this process shows a command line of its choosing.
enum Title {
    /// The kernel points at a copy (`PR_SET_MM`).
    Copy,
    /// Written over the argument area at these addresses.
    Area { start: usize, end: usize },
    /// Neither works: the server's command line stays.
    Neither,
}

static TITLE: OnceLock<Title> = OnceLock::new();

/// The room wedge gives the server's argument area (a last argument of spaces).
pub const TITLE_ROOM: usize = 4096;

fn point_at_copy(args: &[OsString]) -> bool {
    let mut text = Vec::new();
    for a in args {
        text.extend_from_slice(a.as_bytes());
        text.push(0);
    }
    let start = text.as_ptr() as libc::c_ulong;
    let end = start + text.len() as libc::c_ulong;
    let set = |what: libc::c_int, at: libc::c_ulong| {
        // SAFETY: prctl(PR_SET_MM) with an address inside memory this process keeps mapped.
        unsafe { libc::prctl(libc::PR_SET_MM, what, at, 0, 0) == 0 }
    };
    // The kernel keeps start <= end at each step: which to move first depends on where the
    // new text lies against the old one.
    let done = (set(libc::PR_SET_MM_ARG_START, start) && set(libc::PR_SET_MM_ARG_END, end))
        || (set(libc::PR_SET_MM_ARG_END, end) && set(libc::PR_SET_MM_ARG_START, start));
    if done {
        // Never freed: the kernel reads the command line from here for the process's life.
        std::mem::forget(text);
    }
    done
}

fn write_over_arguments(start: usize, end: usize, args: &[OsString]) {
    let room = end.saturating_sub(start);
    if room < 2 {
        return;
    }
    let mut title: Vec<u8> = args.join(std::ffi::OsStr::new(" ")).into_vec();
    title.truncate(room - 2);
    // SAFETY: [start, end) is this process's own argument area (on its stack, mapped for its
    // life), which nothing reads once `main` has copied the arguments out.
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, room) };
    area.fill(b' ');
    area[..title.len()].copy_from_slice(&title);
    // A NUL after the text and a last byte that is not one: the kernel then shows the text up
    // to its NUL (the `setproctitle` case of /proc/PID/cmdline).
    area[title.len()] = 0;
}

/// The addresses of this process's argument area (`/proc/self/stat` fields 48 and 49).
fn argument_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_ascii_whitespace().skip(48 - 3);
    let start = fields.next()?.parse().ok()?;
    let end = fields.next()?.parse().ok()?;
    Some((start, end))
}
