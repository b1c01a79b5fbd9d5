//! Booting one QEMU micro-VM and watching it, as a subject that can hang too.
//!
//! Guarantees:
//! - QEMU is always killed and reaped: on every return path of [`Vm::wait`], on drop, and when
//!   wedge itself dies (PDEATHSIG from the thread that booted it, which outlives the VM).
//! - Every read of the console has a deadline; a guest that stops talking is ended at its
//!   budget, never waited on forever.
//! - Acceleration is hardware KVM only when the host really has it (`kvm_intel` / `kvm_amd`
//!   loaded and `/dev/kvm` usable); a `/dev/kvm` without them (a software PVM, as on this kind of
//!   machine) means TCG, with the settings that were reliable here (see
//!   `docs/kernel-facts.md`): `microvm`, one TCG thread, an explicit TSC frequency.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// How guest code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// `WEDGE_ACCEL=kvm|tcg` if set, else KVM when the host has a hardware KVM module loaded
    /// and `/dev/kvm` opens, else TCG.
    pub fn detect() -> Accel {
        match std::env::var("WEDGE_ACCEL").as_deref() {
            Ok("kvm") => return Accel::Kvm,
            Ok("tcg") => return Accel::Tcg,
            _ => {}
        }
        let hardware = ["/sys/module/kvm_intel", "/sys/module/kvm_amd"]
            .iter()
            .any(|m| Path::new(m).exists());
        let usable = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if hardware && usable {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    /// How much slower than the host a guest runs, for budgets.
    pub fn slowdown(self) -> u32 {
        match self {
            Accel::Kvm => 1,
            Accel::Tcg => 4,
        }
    }
}

/// The QEMU binary: `$WEDGE_QEMU`, else `qemu-system-x86_64` on PATH.
pub fn find_qemu() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WEDGE_QEMU") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("qemu-system-x86_64"))
        .find(|p| p.is_file())
}

/// The host's TSC frequency in kHz, which a TCG `microvm` guest must be told (without it the
/// guest sometimes hangs calibrating the TSC).
fn tsc_khz() -> Option<u64> {
    if let Ok(s) = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz")
        && let Ok(k) = s.trim().parse()
    {
        return Some(k);
    }
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64)
}

/// One VM to boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cpus: usize,
    pub memory_mb: u32,
    pub accel: Accel,
    /// Extra kernel command-line words (the guest reads `wedge.*` ones).
    pub extra_args: Vec<String>,
    /// Instruction counting: a recording, its replay, or seeded virtual time.
    pub icount: Option<Icount>,
    /// The whole kernel command line, as recorded: a replay must not recompute it (the TSC
    /// frequency it names is the recording host's).
    pub fixed_append: Option<String>,
}

/// QEMU's instruction counting (`-icount`), which makes guest time a function of the
/// instructions run. Only [`Icount::Record`] and [`Icount::Replay`] make a run exact: QEMU's
/// record/replay logs every non-deterministic input (clocks, interrupts, serial input, guest
/// random numbers) and refuses more than one vCPU. [`Icount::VirtualTime`] is what can be had
/// with more: time from instruction counts, the RTC on the virtual clock, guest random numbers
/// from a seed; the order in which one TCG thread runs the vCPUs still follows the host's timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Icount {
    Record(PathBuf),
    Replay(PathBuf),
    VirtualTime { seed: u64 },
}

impl Icount {
    fn args(&self) -> Vec<String> {
        let rr = |mode: &str, file: &Path| {
            let file = file.display().to_string().replace(',', ",,");
            vec![
                "-icount".to_string(),
                format!("shift=auto,rr={mode},rrfile={file}"),
            ]
        };
        match self {
            Icount::Record(file) => rr("record", file),
            Icount::Replay(file) => rr("replay", file),
            // sleep=off: an idle guest's clock jumps to its next timer instead of following the
            // host's real time, which would bring the host's timing back in.
            Icount::VirtualTime { seed } => vec![
                "-icount".into(),
                "shift=auto,sleep=off".into(),
                "-rtc".into(),
                "clock=vm".into(),
                "-seed".into(),
                seed.to_string(),
            ],
        }
    }
}

/// QEMU's `--version` line (`QEMU emulator version 7.2.22 (Debian ...)`): a recording replays
/// only in the same build.
pub fn qemu_version(qemu: &Path) -> std::io::Result<String> {
    let out = Command::new(qemu).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().next() {
        Some(line) if out.status.success() => Ok(line.trim().to_string()),
        _ => Err(std::io::Error::other(format!(
            "{} --version failed ({})",
            qemu.display(),
            out.status
        ))),
    }
}

/// The I/O port of `isa-debug-exit`: a guest's write of `v` there ends QEMU with `(v << 1) | 1`.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

impl VmConfig {
    /// The kernel command line.
    pub fn append(&self) -> String {
        if let Some(fixed) = &self.fixed_append {
            return fixed.clone();
        }
        // loglevel=4: errors and worse reach the console during boot (a panic, a failed
        // mount); the guest forwards the rest of the kernel log itself, framed.
        let mut words = vec![
            "console=ttyS0".to_string(),
            "loglevel=4".to_string(),
            "panic=-1".to_string(),
            "oops=panic".to_string(),
            "rdinit=/init".to_string(),
        ];
        if self.accel == Accel::Tcg
            && let Some(khz) = tsc_khz()
        {
            words.push(format!("tsc_early_khz={khz}"));
            words.push("tsc=reliable".to_string());
        }
        // Under instruction counting with more than one vCPU the kernel's delay-loop calibration
        // fails ("calibrate_delay_direct() failed") and bringing up the secondary CPUs stalls
        // for minutes; a preset loops-per-jiffy skips the calibration (the value assumes
        // HZ=250, the Debian kernels'; it only scales udelay, which TCG does not honour anyway).
        if let (Some(Icount::VirtualTime { .. }), Some(khz)) = (&self.icount, tsc_khz()) {
            words.push(format!("lpj={}", khz * 1000 / 250));
        }
        words.push(format!("wedge.accel={}", self.accel.name()));
        words.extend(self.extra_args.iter().cloned());
        words.join(" ")
    }

    /// The QEMU command line.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.qemu);
        c.args(["-M", "microvm", "-no-reboot", "-nographic", "-nodefaults"]);
        c.args(["-display", "none", "-serial", "stdio"]);
        match self.accel {
            Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host"]),
            // One TCG thread: multi-threaded TCG with 4+ vCPUs sometimes oopses the guest.
            Accel::Tcg => c.args(["-accel", "tcg,thread=single", "-cpu", "max"]),
        };
        c.arg("-smp").arg(self.cpus.to_string());
        c.arg("-m").arg(format!("{}M", self.memory_mb));
        c.arg("-kernel").arg(&self.kernel);
        c.arg("-initrd").arg(&self.initrd);
        c.arg("-append").arg(self.append());
        c.args([
            "-device",
            &format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04"),
        ]);
        if let Some(icount) = &self.icount {
            c.args(icount.args());
        }
        c
    }
}

/// What a guest's run ended with, as QEMU reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuEnd {
    /// The guest wrote `code` to the debug-exit port.
    DebugExit(u8),
    /// The guest powered off or rebooted (with `-no-reboot`, a panic with `panic=-1` ends here).
    PoweredOff,
    /// QEMU failed or was killed by a signal (by wedge at a budget, or by someone else).
    Failed(Option<i32>, Option<i32>),
}

impl QemuEnd {
    pub fn from_status(status: ExitStatus) -> QemuEnd {
        match (status.code(), status.signal()) {
            (Some(0), _) => QemuEnd::PoweredOff,
            (Some(c), _) if c & 1 == 1 => QemuEnd::DebugExit((c >> 1) as u8),
            (code, signal) => QemuEnd::Failed(code, signal),
        }
    }
}

/// A running VM: its console bytes arrive on a channel, read by a thread of their own.
pub struct Vm {
    child: Option<Child>,
    console: Receiver<Vec<u8>>,
    stderr: Receiver<Vec<u8>>,
    pub started: Instant,
}

/// One read of the console.
pub enum ConsoleRead {
    Bytes(Vec<u8>),
    /// Nothing arrived before the deadline.
    Silent,
    /// The console closed: QEMU is gone or going.
    Closed,
}

impl Vm {
    /// Boots `config`. QEMU gets PDEATHSIG (SIGKILL), set from this thread: the caller must
    /// keep this thread alive until the VM is waited for, as the VM executor's boot threads do.
    pub fn boot(config: &VmConfig) -> std::io::Result<Vm> {
        let mut cmd = config.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec and only calls prctl and
        // setpgid, which are async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                    || libc::setpgid(0, 0) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let console = pump(child.stdout.take().expect("piped"));
        let stderr = pump(child.stderr.take().expect("piped"));
        Ok(Vm {
            child: Some(child),
            console,
            stderr,
            started: Instant::now(),
        })
    }

    /// The next console bytes, waiting at most until `deadline`.
    pub fn read(&mut self, deadline: Instant) -> ConsoleRead {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.console.recv_timeout(wait) {
            Ok(bytes) => ConsoleRead::Bytes(bytes),
            Err(RecvTimeoutError::Timeout) => ConsoleRead::Silent,
            Err(RecvTimeoutError::Disconnected) => ConsoleRead::Closed,
        }
    }

    /// Waits for QEMU to end by itself until `deadline`, then kills it; always reaps it.
    /// Returns how it ended and what it wrote on stderr.
    pub fn wait(&mut self, deadline: Instant) -> (QemuEnd, String) {
        let Some(mut child) = self.child.take() else {
            return (QemuEnd::Failed(None, None), String::new());
        };
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    // The console closing is the observable sign QEMU is ending; until then,
                    // wait on it rather than polling blindly.
                    let _ = self.console.recv_timeout(Duration::from_millis(50));
                }
                _ => {
                    kill(&mut child);
                    break child.wait().unwrap_or_else(|_| ExitStatus::from_raw(9));
                }
            }
        };
        let err: Vec<u8> = self.stderr.try_iter().flatten().collect();
        (
            QemuEnd::from_status(status),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    /// Ends the VM now.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill(child);
        }
    }
}

fn kill(child: &mut Child) {
    // QEMU leads its own process group: kill all of it.
    let pid = child.id() as i32;
    // SAFETY: plain syscall with a pid we own and have not reaped yet.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let _ = child.kill();
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
            let _ = child.wait();
        }
    }
}

/// Reads `from` on a thread of its own, handing chunks over a channel until EOF.
fn pump(mut from: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(accel: Accel) -> VmConfig {
        VmConfig {
            qemu: "qemu-system-x86_64".into(),
            kernel: "/k/vmlinuz".into(),
            initrd: "/i.cpio".into(),
            cpus: 4,
            memory_mb: 512,
            accel,
            extra_args: vec!["wedge.group=3".into()],
            icount: None,
            fixed_append: None,
        }
    }

    fn args(c: &Command) -> String {
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        args.join(" ")
    }

    #[test]
    fn record_replay_and_virtual_time_add_their_icount_settings() {
        let mut c = config(Accel::Tcg);
        assert!(!args(&c.command()).contains("-icount"));
        c.icount = Some(Icount::Record("/r/a,b.rr".into()));
        assert!(args(&c.command()).ends_with("-icount shift=auto,rr=record,rrfile=/r/a,,b.rr"));
        c.icount = Some(Icount::Replay("/r/x.rr".into()));
        assert!(args(&c.command()).ends_with("-icount shift=auto,rr=replay,rrfile=/r/x.rr"));
        c.icount = Some(Icount::VirtualTime { seed: 7 });
        if tsc_khz().is_some() {
            assert!(c.append().contains(" lpj="), "{}", c.append());
        }
        assert!(args(&c.command()).ends_with("-icount shift=auto,sleep=off -rtc clock=vm -seed 7"));
        // A replay boots with the recorded command line, whatever this host's TSC is.
        c.fixed_append = Some("console=ttyS0 wedge.accel=tcg tsc_early_khz=1".into());
        assert_eq!(c.append(), "console=ttyS0 wedge.accel=tcg tsc_early_khz=1");
        assert!(
            args(&c.command()).contains("-append console=ttyS0 wedge.accel=tcg tsc_early_khz=1")
        );
    }

    #[test]
    fn the_command_line_has_the_reliable_tcg_settings() {
        let c = config(Accel::Tcg).command();
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        for want in [
            "-M microvm",
            "-accel tcg,thread=single -cpu max",
            "-smp 4",
            "-m 512M",
            "-kernel /k/vmlinuz",
            "-initrd /i.cpio",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-no-reboot",
        ] {
            assert!(joined.contains(want), "{want} missing in {joined}");
        }
        let append = config(Accel::Tcg).append();
        assert!(append.contains("console=ttyS0") && append.contains("panic=-1"));
        assert!(append.contains("wedge.accel=tcg") && append.ends_with("wedge.group=3"));
        let kvm = config(Accel::Kvm).command();
        let kvm: Vec<String> = kvm
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(kvm.join(" ").contains("-accel kvm -cpu host"));
        assert!(!config(Accel::Kvm).append().contains("tsc_early_khz"));
    }

    #[test]
    fn exit_statuses_tell_debug_exit_from_power_off_and_failure() {
        let st = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(QemuEnd::from_status(st(1)), QemuEnd::DebugExit(0));
        assert_eq!(QemuEnd::from_status(st(3)), QemuEnd::DebugExit(1));
        assert_eq!(QemuEnd::from_status(st(0)), QemuEnd::PoweredOff);
        assert_eq!(QemuEnd::from_status(st(2)), QemuEnd::Failed(Some(2), None));
        assert_eq!(
            QemuEnd::from_status(ExitStatus::from_raw(9)),
            QemuEnd::Failed(None, Some(9))
        );
    }
}
