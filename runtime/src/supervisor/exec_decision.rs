//! Deciding one trapped `execve`/`execveat`: read what the target asked to execute out of its
//! memory, work out the effective command ([`super::effective`]: what will really run), check the
//! request is still the one the kernel reported, apply the policy to the effective command, answer.
//!
//! Every failure denies (fail closed): with `EPERM`, or with the kernel's own errno where the
//! kernel would fail the exec anyway (a missing file, a format it cannot run). The syscall is let
//! through with `SECCOMP_USER_NOTIF_FLAG_CONTINUE` only when the target has exactly one thread:
//! with more, another thread could rewrite the path or argv between our read and the kernel's.
//! `CONTINUE` cannot close that race for other *processes* sharing the memory or the files (the
//! kernel's documentation says it is no security boundary): see "What the policy does not stop"
//! in runtime/README.md.

use std::cell::RefCell;
use std::io::IoSliceMut;

use nix::errno::Errno;
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

use super::effective::{self, Effective, Exec, HeadCache, RootDir, Unresolved};
use super::notify::{Listener, Notification, Response};
use super::policy::{Policy, Ruling};
use crate::mutation::{Mutation, active};

/// Limits on what is read from a target, so a hostile one cannot make the supervisor allocate
/// without bound.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Longest path, including the NUL (the kernel's `PATH_MAX`).
    pub max_path: usize,
    /// Most argv entries read.
    pub max_args: usize,
    /// Longest single argument, including the NUL (the kernel's `MAX_ARG_STRLEN`).
    pub max_arg_len: usize,
    /// Most bytes of argv strings in all.
    pub max_total: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_path: 4096,
            max_args: 4096,
            max_arg_len: 128 * 1024,
            max_total: 1024 * 1024,
        }
    }
}

/// What the target asked to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub path: String,
    pub argv: Vec<String>,
}

/// Why an exec was denied without consulting the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("syscall {0} is not an exec")]
    NotExec(i32),
    #[error("execveat with AT_EMPTY_PATH (executing a descriptor) is not allowed")]
    EmptyPath,
    #[error("the target has {0} threads; exec is allowed only from a single-threaded process")]
    Multithreaded(usize),
    #[error("cannot read the target's thread count: {0}")]
    ThreadCount(String),
    #[error("cannot read the target's memory: {0}")]
    Unreadable(Errno),
    #[error("{0} is longer than the supervisor reads")]
    TooLong(&'static str),
    #[error("the notification is no longer valid (the target died or was replaced)")]
    Stale,
    #[error("cannot tell what it runs: {0}")]
    Unresolved(Unresolved),
}

impl Refusal {
    /// The errno the exec fails with.
    pub fn errno(&self) -> Errno {
        match self {
            Refusal::Unresolved(unresolved) => unresolved.errno(),
            _ => Errno::EPERM,
        }
    }
}

/// The outcome of one decision, for the log and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        request: ExecRequest,
        effective: Effective,
        ruling: Ruling,
    },
    Deny {
        request: ExecRequest,
        effective: Effective,
        ruling: Ruling,
    },
    Refuse {
        request: Option<ExecRequest>,
        refusal: Refusal,
    },
}

impl Decision {
    pub fn response(&self) -> Response {
        match self {
            Decision::Allow { .. } => Response::Continue,
            Decision::Deny { .. } => Response::Fail(Errno::EPERM),
            Decision::Refuse { refusal, .. } => Response::Fail(refusal.errno()),
        }
    }
}

/// Decides one notification, answers it on `listener` and logs the decision. An allowed exec is
/// logged after the answer (the target does not wait for the line); any other before it, so that
/// the reason comes first on a shared stderr, ahead of what the target prints about its failed
/// exec. `heads` keeps the file heads read for earlier decisions of this supervisor.
pub fn handle(
    listener: &Listener<'_>,
    notification: &Notification,
    policy: &Policy,
    limits: &ReadLimits,
    heads: &HeadCache,
) -> Decision {
    let decision = decide(listener, notification, policy, limits, heads);
    let allowed = matches!(decision, Decision::Allow { .. });
    if !allowed {
        log(notification, &decision);
    }
    let answered = listener.respond(notification.id, decision.response());
    if allowed {
        log(notification, &decision);
    }
    match answered {
        Ok(()) => {}
        // The target died while we decided; there is nobody left to answer.
        Err(Errno::ENOENT) => {
            tracing::debug!(pid = notification.pid, "target gone before the answer")
        }
        Err(err) => {
            tracing::warn!(pid = notification.pid, %err, "could not answer the notification")
        }
    }
    decision
}

/// One line per decision: the request as read, and the effective command next to it (its real
/// program and the argv that program gets).
fn log(notification: &Notification, decision: &Decision) {
    let pid = notification.pid;
    match decision {
        Decision::Allow {
            request,
            effective,
            ruling,
        } => tracing::info!(
            pid, path = %request.path, argv = ?request.argv,
            effective = %effective.program().path, effective_argv = ?effective.program().argv,
            rule = ruling.rule(), "exec allowed"
        ),
        Decision::Deny {
            request,
            effective,
            ruling,
        } => tracing::warn!(
            pid, path = %request.path, argv = ?request.argv,
            effective = %effective.program().path, effective_argv = ?effective.program().argv,
            rule = ruling.rule(), "exec denied"
        ),
        Decision::Refuse { request, refusal } => {
            let path = request.as_ref().map_or("?", |r| r.path.as_str());
            let argv = request.as_ref().map(|r| &r.argv);
            if matches!(refusal, Refusal::Unresolved(u) if u.is_kernels_own()) {
                // A missing file in a PATH search, say: the kernel would fail it the same way.
                tracing::info!(pid, path, ?argv, effective = "?", rule = %refusal, "exec failed");
            } else {
                tracing::warn!(pid, path, ?argv, effective = "?", rule = %refusal, "exec denied");
            }
        }
    }
}

fn decide(
    listener: &Listener<'_>,
    n: &Notification,
    policy: &Policy,
    limits: &ReadLimits,
    heads: &HeadCache,
) -> Decision {
    let refuse = |refusal, request| Decision::Refuse { request, refusal };
    let (path_ptr, argv_ptr) = match i64::from(n.syscall) {
        libc::SYS_execve => (n.args[0], n.args[1]),
        libc::SYS_execveat => {
            if n.args[4] & libc::AT_EMPTY_PATH as u64 != 0 {
                return refuse(Refusal::EmptyPath, None);
            }
            (n.args[1], n.args[2])
        }
        _ => return refuse(Refusal::NotExec(n.syscall), None),
    };
    // No id-valid check yet: a target already gone fails the reads below, and the check after
    // them is the one that counts (it covers everything read).
    match thread_count(n.pid) {
        Ok(1) => {}
        Ok(_) if active(Mutation::SingleThread) => {}
        Ok(threads) => return refuse(Refusal::Multithreaded(threads), None),
        Err(_) if !listener.id_valid(n.id) => return refuse(Refusal::Stale, None),
        Err(err) => return refuse(Refusal::ThreadCount(err), None),
    }
    let request = match read_request(Pid::from_raw(n.pid as i32), path_ptr, argv_ptr, limits) {
        Ok(request) => request,
        Err(refusal) => return refuse(refusal, None),
    };
    kill_after_read(n.pid, &request.path);
    let exec = Exec {
        path: &request.path,
        argv: &request.argv,
        dirfd: exec_dirfd(n),
    };
    let effective = if active(Mutation::EffectiveCommand) {
        Effective::as_requested(exec)
    } else {
        match effective::resolve(&RootDir::with_heads(n.pid, heads), exec, policy.launchers()) {
            Ok(effective) => effective,
            // A target that died while we looked at its /proc entries is stale, not unresolved.
            Err(_) if !active(Mutation::IdValidRecheck) && !listener.id_valid(n.id) => {
                return refuse(Refusal::Stale, Some(request));
            }
            Err(unresolved) => return refuse(Refusal::Unresolved(unresolved), Some(request)),
        }
    };
    hold_after_read(&request.path);
    // What we read is only meaningful if the notification still stands: the pid could have died
    // and been reused while we read its memory and its /proc entries.
    if !active(Mutation::IdValidRecheck) && !listener.id_valid(n.id) {
        return refuse(Refusal::Stale, Some(request));
    }
    let ruling = policy.decide_chain(&effective.invocations());
    if ruling.is_allowed() {
        Decision::Allow {
            request,
            effective,
            ruling,
        }
    } else {
        Decision::Deny {
            request,
            effective,
            ruling,
        }
    }
}

/// The directory an `execveat` resolves a relative path from, unless it is the cwd.
fn exec_dirfd(n: &Notification) -> Option<i32> {
    let dirfd = n.args[0] as i32;
    (i64::from(n.syscall) == libc::SYS_execveat && dirfd != libc::AT_FDCWD).then_some(dirfd)
}

/// Test instrumentation, compiled only into the `mutations` build: with
/// `WEDGE_RUN_HOLD_AFTER_READ=PATH:DIR`, the decision on an exec of PATH creates `DIR/read` once
/// the request has been read and resolved, then waits (at most 10 s) for `DIR/go` before it
/// answers. A test uses it to change the target's argv deterministically inside the window between
/// the read and CONTINUE, and so to show that race as the documented limit it is.
#[cfg(feature = "mutations")]
fn hold_after_read(path: &str) {
    let Some(value) = instrumentation_var(&HOLD_AFTER_READ, "WEDGE_RUN_HOLD_AFTER_READ") else {
        return;
    };
    let Some((held, dir)) = value.split_once(':') else {
        return;
    };
    if held != path {
        return;
    }
    let dir = std::path::Path::new(dir);
    if std::fs::write(dir.join("read"), b"").is_err() {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !dir.join("go").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[cfg(not(feature = "mutations"))]
fn hold_after_read(_path: &str) {}

#[cfg(feature = "mutations")]
static HOLD_AFTER_READ: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
#[cfg(feature = "mutations")]
static KILL_AFTER_READ: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// An instrumentation variable, read once: the `mutations` build is the one CI benchmarks, and
/// an environment lookup on every decision would be a cost the release build does not have.
#[cfg(feature = "mutations")]
fn instrumentation_var(
    cell: &'static std::sync::OnceLock<Option<String>>,
    name: &str,
) -> Option<&'static str> {
    cell.get_or_init(|| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
        .as_deref()
}

/// Test instrumentation, compiled only into the `mutations` build: with
/// `WEDGE_RUN_KILL_AFTER_READ=PATH`, a target exec'ing PATH is SIGKILLed after its request was read
/// and before the re-check, and waited for until it has exited, so a test can show that the stale
/// notification is refused (and so catch the `id-valid-recheck` mutation).
#[cfg(feature = "mutations")]
fn kill_after_read(pid: u32, path: &str) {
    if instrumentation_var(&KILL_AFTER_READ, "WEDGE_RUN_KILL_AFTER_READ").is_none_or(|p| p != path)
    {
        return;
    }
    let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        // Gone or a zombie: its notification has been withdrawn.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) if !stat.rsplit(')').next().unwrap_or("").starts_with(" Z") => {}
            _ => return,
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[cfg(not(feature = "mutations"))]
fn kill_after_read(_pid: u32, _path: &str) {}

/// The target's threads, from one `stat` of `/proc/PID/task`: procfs gives that directory
/// 2 links plus one per thread. Reading `Threads:` from `/proc/PID/status` gives the same
/// number, but the kernel formats the whole file for it, in several reads: it was the largest
/// part of a decision's syscalls (reports/bench.md).
fn thread_count(pid: u32) -> Result<usize, String> {
    let task = nix::sys::stat::stat(format!("/proc/{pid}/task").as_str())
        .map_err(|e| format!("/proc/{pid}/task: {e}"))?;
    let links = task.st_nlink as usize;
    links
        .checked_sub(2)
        .filter(|&threads| threads > 0)
        .ok_or_else(|| format!("/proc/{pid}/task has {links} links, not 2 + threads"))
}

/// Where the decoder reads a target's memory from: the target itself (`process_vm_readv`) in the
/// supervisor, a fake image in tests and in the `target_memory` fuzz target, so that both run the
/// very decoding and limits below.
pub trait MemorySource {
    /// Reads up to `buf.len()` bytes at `addr`, like `process_vm_readv` with one iovec: `Ok(n)`
    /// with `n < buf.len()` when the read ran into an unmapped page, an error when nothing at
    /// `addr` could be read.
    fn read_at(&self, addr: u64, buf: &mut [u8]) -> Result<usize, Errno>;

    /// Reads the spans `(addr, len)` one after the other into `buf` (at least as long as all of
    /// them), like `process_vm_readv` with one remote iovec per span: it stops at the first byte
    /// that cannot be read and returns how many bytes it read, an error only when it read none.
    /// The default makes one [`read_at`](Self::read_at) per span; the live target, one call.
    fn read_spans(&self, spans: &[(u64, usize)], buf: &mut [u8]) -> Result<usize, Errno> {
        read_spans_one_by_one(self, spans, buf)
    }
}

/// [`MemorySource::read_spans`] as separate reads, with the semantics of one vectored read.
fn read_spans_one_by_one<M: MemorySource + ?Sized>(
    memory: &M,
    spans: &[(u64, usize)],
    buf: &mut [u8],
) -> Result<usize, Errno> {
    let mut done = 0;
    for &(addr, len) in spans.iter().filter(|&&(_, len)| len > 0) {
        let got = match memory.read_at(addr, &mut buf[done..done + len]) {
            Ok(got) => got.min(len),
            Err(errno) if done == 0 => return Err(errno),
            Err(_) => return Ok(done),
        };
        done += got;
        if got < len {
            break;
        }
    }
    Ok(done)
}

/// Reads the path and argv of an exec out of the target's memory.
pub fn read_request(
    pid: Pid,
    path_ptr: u64,
    argv_ptr: u64,
    limits: &ReadLimits,
) -> Result<ExecRequest, Refusal> {
    read_request_from(&Target(pid), path_ptr, argv_ptr, limits)
}

/// [`read_request`] over any [`MemorySource`]: what the supervisor decodes, given the memory.
pub fn read_request_from<M: MemorySource + ?Sized>(
    memory: &M,
    path_ptr: u64,
    argv_ptr: u64,
    limits: &ReadLimits,
) -> Result<ExecRequest, Refusal> {
    // The path and the first batch of argv pointers in one read: a syscall saved per exec.
    let memory = &Ahead::new(memory);
    let first_pointers = (argv_ptr != 0).then(|| (argv_ptr, pointer_batch(argv_ptr) * 8));
    memory.prefetch(
        [(path_ptr, first_read(path_ptr, limits.max_path))]
            .into_iter()
            .chain(first_pointers),
    );
    let path =
        read_c_string(memory, path_ptr, limits.max_path).map_err(|e| e.or_too_long("the path"))?;
    let mut argv = Vec::new();
    let mut total = 0usize;
    if argv_ptr != 0 {
        let mut pointers = Pointers::new(memory, argv_ptr);
        loop {
            let ptr = pointers.next_pointer()?;
            if ptr == 0 {
                break;
            }
            if argv.len() == limits.max_args {
                return Err(Refusal::TooLong("argv"));
            }
            let budget = limits.max_arg_len.min(limits.max_total - total);
            let arg = read_c_string(memory, ptr, budget).map_err(|e| e.or_too_long("argv"))?;
            // The bytes read, not the decoded text: a lossy decoding is up to three times longer.
            total += arg.len() + 1;
            argv.push(String::from_utf8_lossy(&arg).into_owned());
        }
    }
    Ok(ExecRequest {
        path: String::from_utf8_lossy(&path).into_owned(),
        argv,
    })
}

enum ReadError {
    Fault(Errno),
    TooLong,
}

impl ReadError {
    fn or_too_long(self, what: &'static str) -> Refusal {
        match self {
            ReadError::Fault(errno) => Refusal::Unreadable(errno),
            ReadError::TooLong => Refusal::TooLong(what),
        }
    }
}

impl From<ReadError> for Refusal {
    fn from(err: ReadError) -> Refusal {
        err.or_too_long("a value")
    }
}

/// A live target's memory.
struct Target(Pid);

impl MemorySource for Target {
    fn read_at(&self, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let remote = [RemoteIoVec {
            base: addr as usize,
            len: buf.len(),
        }];
        process_vm_readv(self.0, &mut [IoSliceMut::new(buf)], &remote)
    }

    fn read_spans(&self, spans: &[(u64, usize)], buf: &mut [u8]) -> Result<usize, Errno> {
        let remote: Vec<RemoteIoVec> = spans
            .iter()
            .map(|&(addr, len)| RemoteIoVec {
                base: addr as usize,
                len,
            })
            .collect();
        let total = spans.iter().map(|&(_, len)| len).sum();
        // One local buffer: the kernel fills it span after span and stops at the first fault.
        process_vm_readv(self.0, &mut [IoSliceMut::new(&mut buf[..total])], &remote)
    }
}

/// A [`MemorySource`] that reads ahead: the decoder names the spans it is about to read
/// ([`Ahead::prefetch`]), they are read in one [`MemorySource::read_spans`], and a later
/// `read_at` at the start of one of them is answered from what was read when that holds all of
/// it. Anything else (a span cut short by a fault, the rest of a long string) is read as before.
/// The target is stopped in its exec, so the bytes are the ones a direct read would get and the
/// decoding, its limits and its errors are unchanged; what changes is the number of calls: the
/// path and the argv array in one, the strings of each batch of argv pointers in another, instead
/// of one per string (reports/bench.md, "Exec overhead").
struct Ahead<'m, M: ?Sized> {
    memory: &'m M,
    read: RefCell<ReadAhead>,
}

/// What an [`Ahead`] read: each span's address, where its bytes start in `bytes`, how many.
#[derive(Default)]
struct ReadAhead {
    spans: Vec<(u64, usize, usize)>,
    bytes: Vec<u8>,
}

impl<'m, M: MemorySource + ?Sized> Ahead<'m, M> {
    fn new(memory: &'m M) -> Self {
        Ahead {
            memory,
            read: RefCell::new(ReadAhead::default()),
        }
    }

    /// Reads `spans` now, in one call, replacing what was read ahead before; a span read ahead
    /// before in full is kept and not read again (an argv string at the path's address: shells
    /// pass the one string as both). A failure only means the later reads are made one by one,
    /// and meet it themselves.
    fn prefetch(&self, spans: impl IntoIterator<Item = (u64, usize)>) {
        let spans: Vec<(u64, usize)> = spans.into_iter().filter(|&(_, len)| len > 0).collect();
        let mut ahead = self.read.borrow_mut();
        let before = std::mem::take(&mut *ahead);
        let held = |addr: u64, len: usize| {
            before
                .spans
                .iter()
                .find(|&&(at, _, have)| at == addr && have >= len)
                .map(|&(_, start, _)| &before.bytes[start..start + len])
        };
        let (mut kept, mut wanted) = (Vec::new(), Vec::new());
        for (addr, len) in spans {
            match held(addr, len) {
                Some(bytes) => kept.push((addr, bytes)),
                None => wanted.push((addr, len)),
            }
        }
        let total = wanted.iter().map(|&(_, len)| len).sum();
        ahead.bytes.resize(total, 0);
        // Nothing left to read: no call at all.
        let mut got = if wanted.is_empty() {
            0
        } else {
            self.memory
                .read_spans(&wanted, &mut ahead.bytes)
                .unwrap_or(0)
        };
        let mut start = 0;
        for (addr, len) in wanted {
            let have = got.min(len);
            ahead.spans.push((addr, start, have));
            got -= have;
            start += len;
        }
        for (addr, bytes) in kept {
            let start = ahead.bytes.len();
            ahead.spans.push((addr, start, bytes.len()));
            ahead.bytes.extend_from_slice(bytes);
        }
    }
}

impl<M: MemorySource + ?Sized> MemorySource for Ahead<'_, M> {
    fn read_at(&self, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let ahead = self.read.borrow();
        let hit = ahead
            .spans
            .iter()
            .find(|&&(at, _, have)| at == addr && have >= buf.len());
        if let Some(&(_, start, _)) = hit {
            buf.copy_from_slice(&ahead.bytes[start..start + buf.len()]);
            return Ok(buf.len());
        }
        drop(ahead);
        self.memory.read_at(addr, buf)
    }
}

const PAGE: u64 = 4096;
/// Bytes read first for a string: most arguments are shorter.
const FIRST_READ: usize = 256;

/// How many bytes the first read of a string of at most `max` bytes at `addr` asks for.
fn first_read(addr: u64, max: usize) -> usize {
    ((PAGE - addr % PAGE) as usize).min(max).min(FIRST_READ)
}

/// How many pointers one read of an argv array at `addr` asks for: up to the page's end (at
/// least one, which then straddles it), at most a batch.
fn pointer_batch(addr: u64) -> usize {
    (((PAGE - addr % PAGE) / 8) as usize).clamp(1, 64)
}

/// One read that makes progress: reading nothing is a fault too, or a caller would loop.
fn read<M: MemorySource + ?Sized>(
    memory: &M,
    addr: u64,
    buf: &mut [u8],
) -> Result<usize, ReadError> {
    match memory.read_at(addr, buf).map_err(ReadError::Fault)? {
        0 => Err(ReadError::Fault(Errno::EFAULT)),
        n => Ok(n.min(buf.len())),
    }
}

/// An argv pointer array being read, a batch (up to a page boundary) per read; the strings of a
/// batch are read ahead together as soon as it is in.
struct Pointers<'a, 'm, M: ?Sized> {
    memory: &'a Ahead<'m, M>,
    next: u64,
    batch: [u64; 64],
    have: usize,
    used: usize,
}

impl<'a, 'm, M: MemorySource + ?Sized> Pointers<'a, 'm, M> {
    /// The NULL-terminated pointer array at `addr`.
    fn new(memory: &'a Ahead<'m, M>, addr: u64) -> Self {
        Pointers {
            memory,
            next: addr,
            batch: [0; 64],
            have: 0,
            used: 0,
        }
    }

    fn next_pointer(&mut self) -> Result<u64, ReadError> {
        if self.used == self.have {
            let want = pointer_batch(self.next);
            let mut bytes = [0u8; 64 * 8];
            let mut got = 0;
            // A pointer straddling a page boundary needs two reads.
            while got < 8 {
                got += read(
                    self.memory,
                    self.next + got as u64,
                    &mut bytes[got..want.max(1) * 8],
                )?;
            }
            self.have = got / 8;
            for (slot, raw) in self
                .batch
                .iter_mut()
                .zip(bytes[..self.have * 8].chunks_exact(8))
            {
                *slot = u64::from_ne_bytes(raw.try_into().expect("8 bytes"));
            }
            self.used = 0;
            self.next = self
                .next
                .checked_add(self.have as u64 * 8)
                .ok_or(ReadError::Fault(Errno::EFAULT))?;
            // Each string's first read, up to the array's end: any budget left asks for no more.
            let strings = self.batch[..self.have].iter().take_while(|&&p| p != 0);
            self.memory
                .prefetch(strings.map(|&p| (p, first_read(p, usize::MAX))));
        }
        self.used += 1;
        Ok(self.batch[self.used - 1])
    }
}

/// Reads a NUL-terminated string of at most `max` bytes including the NUL (its bytes without
/// the NUL), never across a page boundary in one call, so that a string ending just before an
/// unmapped page is still read. The first read is short, because most arguments are.
fn read_c_string<M: MemorySource + ?Sized>(
    memory: &M,
    addr: u64,
    max: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    let mut addr = addr;
    let mut chunk = [0u8; PAGE as usize];
    let mut step = FIRST_READ;
    while out.len() < max {
        let to_page_end = (PAGE - addr % PAGE) as usize;
        let want = to_page_end.min(max - out.len()).min(step);
        step = PAGE as usize;
        let got = read(memory, addr, &mut chunk[..want])?;
        if let Some(nul) = chunk[..got].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..nul]);
            return Ok(out);
        }
        out.extend_from_slice(&chunk[..got]);
        addr = addr
            .checked_add(got as u64)
            .ok_or(ReadError::Fault(Errno::EFAULT))?;
    }
    Err(ReadError::TooLong)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    fn self_pid() -> Pid {
        Pid::this()
    }

    /// `Threads:` of /proc/PID/status, the count `thread_count` replaced.
    fn status_threads(pid: u32) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find_map(|l| l.strip_prefix("Threads:"));
        line.unwrap().trim().parse().unwrap()
    }

    #[test]
    fn the_thread_count_from_task_links_agrees_with_status() {
        use std::io::BufRead;
        // A child whose thread count is known and still (this test process has the harness's
        // threads coming and going): python's main thread and three sleepers, then a line.
        let script = "import threading, time\n\
            [threading.Thread(target=time.sleep, args=(30,), daemon=True).start() for _ in range(3)]\n\
            print('ready', flush=True)\n\
            time.sleep(30)";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        assert_eq!(thread_count(child.id()), Ok(4));
        assert_eq!(status_threads(child.id()), 4);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            thread_count(child.id()).is_err(),
            "a reaped pid has no task directory"
        );

        let mut one = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert_eq!(thread_count(one.id()), Ok(1));
        one.kill().unwrap();
        one.wait().unwrap();
    }

    #[test]
    fn reads_path_and_argv_from_a_process() {
        let path = CString::new("/usr/bin/git").unwrap();
        let args: Vec<CString> = ["git", "push", "origin"]
            .iter()
            .map(|s| CString::new(*s).unwrap())
            .collect();
        let mut ptrs: Vec<u64> = args.iter().map(|a| a.as_ptr() as u64).collect();
        ptrs.push(0);
        let req = read_request(
            self_pid(),
            path.as_ptr() as u64,
            ptrs.as_ptr() as u64,
            &ReadLimits::default(),
        )
        .unwrap();
        assert_eq!(req.path, "/usr/bin/git");
        assert_eq!(req.argv, ["git", "push", "origin"]);
    }

    #[test]
    fn null_argv_is_empty() {
        let path = CString::new("/bin/true").unwrap();
        let req =
            read_request(self_pid(), path.as_ptr() as u64, 0, &ReadLimits::default()).unwrap();
        assert!(req.argv.is_empty());
    }

    #[test]
    fn limits_are_enforced() {
        let long = CString::new("x".repeat(5000)).unwrap();
        let err =
            read_request(self_pid(), long.as_ptr() as u64, 0, &ReadLimits::default()).unwrap_err();
        assert_eq!(err, Refusal::TooLong("the path"));

        let path = CString::new("/bin/true").unwrap();
        let arg = CString::new("a").unwrap();
        let mut ptrs = vec![arg.as_ptr() as u64; 5];
        ptrs.push(0);
        // Five arguments: one more than max_args allows, or more bytes than max_total.
        let too_many = ReadLimits {
            max_args: 4,
            ..ReadLimits::default()
        };
        let too_long = ReadLimits {
            max_total: 7,
            ..ReadLimits::default()
        };
        for limits in [too_many, too_long] {
            let err = read_request(
                self_pid(),
                path.as_ptr() as u64,
                ptrs.as_ptr() as u64,
                &limits,
            )
            .unwrap_err();
            assert_eq!(err, Refusal::TooLong("argv"), "{limits:?}");
        }
    }

    /// Two fresh read-write pages.
    unsafe fn map_two_pages() -> *mut u8 {
        // SAFETY: an anonymous private mapping; the caller unmaps it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * PAGE as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        base as *mut u8
    }

    #[test]
    fn a_string_that_ends_right_before_an_unmapped_page_is_read() {
        // Map two pages, unmap the second, put "abc\0" at the very end of the first.
        unsafe {
            let base = map_two_pages();
            libc::munmap(base.add(PAGE as usize) as *mut libc::c_void, PAGE as usize);
            let s = base.add(PAGE as usize - 4);
            std::ptr::copy_nonoverlapping(c"abc".as_ptr().cast::<u8>(), s, 4);
            let got = read_c_string(&Target(self_pid()), s as u64, 4096).ok();
            let unterminated = base.add(PAGE as usize - 2);
            *unterminated.add(1) = b'z';
            let fault = read_c_string(&Target(self_pid()), unterminated as u64, 4096);
            libc::munmap(base as *mut libc::c_void, PAGE as usize);
            assert_eq!(got.as_deref(), Some(&b"abc"[..]));
            assert!(matches!(fault, Err(ReadError::Fault(_))));
        }
    }

    #[test]
    fn an_unaligned_argv_array_across_a_page_boundary_is_read() {
        let args: Vec<CString> = ["a", "bb", "ccc"]
            .iter()
            .map(|s| CString::new(*s).unwrap())
            .collect();
        let path = CString::new("/bin/x").unwrap();
        unsafe {
            let base = map_two_pages();
            // Four 8-byte slots starting 13 bytes before the page boundary.
            let array = base.add(PAGE as usize - 13);
            let pointers = [
                args[0].as_ptr() as u64,
                args[1].as_ptr() as u64,
                args[2].as_ptr() as u64,
                0,
            ];
            for (i, p) in pointers.iter().enumerate() {
                std::ptr::copy_nonoverlapping(p.to_ne_bytes().as_ptr(), array.add(8 * i), 8);
            }
            let req = read_request(
                self_pid(),
                path.as_ptr() as u64,
                array as u64,
                &ReadLimits::default(),
            );
            libc::munmap(base as *mut libc::c_void, 2 * PAGE as usize);
            assert_eq!(req.unwrap().argv, ["a", "bb", "ccc"]);
        }
    }

    /// A target's address space as `process_vm_readv` sees it: whole pages, mapped or not.
    #[derive(Default)]
    struct Image {
        pages: std::collections::BTreeMap<u64, Vec<u8>>,
    }

    impl Image {
        /// Writes `bytes` at `addr`, mapping the pages it touches.
        fn write(&mut self, addr: u64, bytes: &[u8]) {
            for (i, &b) in bytes.iter().enumerate() {
                let at = addr + i as u64;
                let page = self.pages.entry(at / PAGE).or_insert_with(|| vec![0; 4096]);
                page[(at % PAGE) as usize] = b;
            }
        }
    }

    impl MemorySource for Image {
        fn read_at(&self, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
            let mut n = 0;
            while n < buf.len() {
                let at = addr + n as u64;
                let Some(page) = self.pages.get(&(at / PAGE)) else {
                    break;
                };
                let offset = (at % PAGE) as usize;
                let take = (buf.len() - n).min(page.len() - offset);
                buf[n..n + take].copy_from_slice(&page[offset..offset + take]);
                n += take;
            }
            if n == 0 { Err(Errno::EFAULT) } else { Ok(n) }
        }
    }

    #[test]
    fn a_fake_image_decodes_at_page_edges() {
        let mut image = Image::default();
        // The path ends at the last byte of page 1; page 2 is unmapped.
        image.write(2 * PAGE - 4, b"/x\0\0");
        image.write(5 * PAGE, b"one\0two\0");
        // The argv array straddles the boundary of pages 3 and 4, its second slot split 3 + 5.
        let array = 4 * PAGE - 11;
        for (i, ptr) in [5 * PAGE, 5 * PAGE + 4, 0].iter().enumerate() {
            image.write(array + 8 * i as u64, &ptr.to_ne_bytes());
        }
        let limits = ReadLimits::default();
        let req = read_request_from(&image, 2 * PAGE - 4, array, &limits).unwrap();
        assert_eq!(req.path, "/x");
        assert_eq!(req.argv, ["one", "two"]);
        // An unterminated string running into the hole, and a pointer into it, are faults.
        image.write(2 * PAGE - 4, b"/xyz");
        let err = read_request_from(&image, 2 * PAGE - 4, 0, &limits).unwrap_err();
        assert_eq!(err, Refusal::Unreadable(Errno::EFAULT));
        let err = read_request_from(&image, 5 * PAGE, 2 * PAGE, &limits).unwrap_err();
        assert_eq!(err, Refusal::Unreadable(Errno::EFAULT));
    }

    /// Found by the `target_memory` fuzz target: the total was counted in bytes of the lossily
    /// decoded text, up to three times the bytes read for arguments that are not UTF-8, so
    /// `max_total - total` went below zero (a panic with overflow checks; without them a wrapped,
    /// huge budget that let a target make the supervisor read and hold `max_args` full-length
    /// arguments, half a gigabyte).
    #[test]
    fn the_total_limit_counts_bytes_read_even_when_they_are_not_utf8() {
        let limits = ReadLimits::default();
        let mut image = Image::default();
        let mut arg = vec![0xff; limits.max_arg_len - 1];
        arg.push(0);
        image.write(PAGE, &arg);
        // max_total / max_arg_len full-length arguments fit exactly; one more does not.
        let fit = limits.max_total / limits.max_arg_len;
        let array = 64 * PAGE;
        image.write(array, &[PAGE.to_ne_bytes(); 9].concat());
        image.write(array + 8 * fit as u64, &0u64.to_ne_bytes());
        let path = 128 * PAGE;
        image.write(path, b"/x\0");
        let req = read_request_from(&image, path, array, &limits).unwrap();
        assert_eq!(req.argv.len(), fit);
        assert_eq!(req.argv[0], "\u{fffd}".repeat(limits.max_arg_len - 1));
        image.write(array + 8 * fit as u64, &PAGE.to_ne_bytes());
        match read_request_from(&image, path, array, &limits) {
            Err(err) => assert_eq!(err, Refusal::TooLong("argv")),
            Ok(req) => panic!("{} arguments read past max_total", req.argv.len()),
        }
    }

    /// An [`Image`] that counts the calls made to it, a vectored read counting as one.
    struct Counting<'a> {
        image: &'a Image,
        calls: std::cell::Cell<usize>,
    }

    impl MemorySource for Counting<'_> {
        fn read_at(&self, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
            self.calls.set(self.calls.get() + 1);
            self.image.read_at(addr, buf)
        }

        fn read_spans(&self, spans: &[(u64, usize)], buf: &mut [u8]) -> Result<usize, Errno> {
            self.calls.set(self.calls.get() + 1);
            read_spans_one_by_one(self.image, spans, buf)
        }
    }

    #[test]
    fn the_path_and_argv_are_read_in_two_calls_and_a_hole_still_faults() {
        let mut image = Image::default();
        image.write(PAGE, b"/bin/true\0");
        image.write(3 * PAGE, b"a\0bb\0ccc\0");
        let strings = [3 * PAGE, 3 * PAGE + 2, 3 * PAGE + 5, 0];
        let limits = ReadLimits::default();
        // The array inside one page: the path and the array in one call, the strings in another.
        // Its first slot at the end of a page: that slot is a batch of its own, so two more.
        for (array, calls) in [(6 * PAGE, 2), (5 * PAGE - 8, 4)] {
            for (i, ptr) in strings.iter().enumerate() {
                image.write(array + 8 * i as u64, &ptr.to_ne_bytes());
            }
            let counting = Counting {
                image: &image,
                calls: Default::default(),
            };
            let req = read_request_from(&counting, PAGE, array, &limits).unwrap();
            assert_eq!(req.path, "/bin/true");
            assert_eq!(req.argv, ["a", "bb", "ccc"]);
            assert_eq!(counting.calls.get(), calls, "array at {array:#x}");
        }
        // A pointer into a hole cuts the strings' read short; the reads one by one meet the hole.
        image.write(6 * PAGE + 8, &(9 * PAGE).to_ne_bytes());
        let err = read_request_from(&image, PAGE, 6 * PAGE, &limits).unwrap_err();
        assert_eq!(err, Refusal::Unreadable(Errno::EFAULT));
    }

    #[test]
    fn an_argv_string_at_the_paths_address_is_not_read_again() {
        // A shell runs `/bin/true` with argv[0] the very string it passes as the path.
        let mut image = Image::default();
        image.write(PAGE, b"/bin/true\0");
        image.write(3 * PAGE, b"x\0");
        let array = 6 * PAGE;
        for (i, ptr) in [PAGE, 0].iter().enumerate() {
            image.write(array + 8 * i as u64, &ptr.to_ne_bytes());
        }
        let counting = Counting {
            image: &image,
            calls: Default::default(),
        };
        let req = read_request_from(&counting, PAGE, array, &ReadLimits::default()).unwrap();
        assert_eq!(
            (req.path.as_str(), &req.argv[..]),
            ("/bin/true", &["/bin/true".to_string()][..])
        );
        assert_eq!(
            counting.calls.get(),
            1,
            "the path and the array, nothing more"
        );
        // A second argument elsewhere: read in a call of its own, the first still from before.
        image.write(array + 8, &(3 * PAGE).to_ne_bytes());
        image.write(array + 16, &0u64.to_ne_bytes());
        let counting = Counting {
            image: &image,
            calls: Default::default(),
        };
        let req = read_request_from(&counting, PAGE, array, &ReadLimits::default()).unwrap();
        assert_eq!(req.argv, ["/bin/true", "x"]);
        assert_eq!(counting.calls.get(), 2);
    }

    #[test]
    fn unmapped_pointer_is_a_fault() {
        let err = read_request(self_pid(), 8, 0, &ReadLimits::default()).unwrap_err();
        assert!(matches!(err, Refusal::Unreadable(_)), "{err:?}");
    }
}
