//! One boot of a guest, watched to its end: start QEMU, read the console, take the guest's
//! greeting, kernel messages and end into a [`Boot`], hand every other frame on, and stop the
//! guest when it misses a budget or the run is cancelled.
//!
//! Guarantees:
//! - The boot always ends: a guest that never greets is cut at its boot budget, one that stops
//!   sending frames at its silence budget, and QEMU is killed and reaped ([`super::qemu::Vm`]).
//! - A boot that ends without the guest's `done` has a reason ([`Boot::cut`], or
//!   [`unfinished_reason`]) that names what happened, and the last console lines to quote.
//! - Kernel splats seen on the console or in forwarded kernel messages are kept in order, so the
//!   records delivered after them can carry them.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::console::{self, Decoder, Frame, FrameKind, Item};
use super::qemu::{Accel, ConsoleRead, Icount, QemuEnd, Vm, VmConfig};
use super::support::VmSettings;
use crate::model::record::VmRun;
use crate::plan::backend::VmTarget;
use crate::plan::time_scaled;

/// What came back from one boot.
#[derive(Debug, Default)]
pub struct Boot {
    /// From QEMU's start to the guest's greeting.
    hello_ms: Option<f64>,
    guest_kernel: Option<String>,
    /// The guest said `done`.
    pub done: bool,
    fatal: Option<String>,
    /// Splats seen so far, in order.
    splats: Vec<String>,
    /// The last console lines, for diagnoses.
    last_lines: VecDeque<String>,
    /// Why the boot ended early, if it did.
    pub cut: Option<String>,
    /// Every console byte, in order, when the boot keeps them ([`BootConfig::capture`]).
    pub console: Option<Vec<u8>>,
    /// The kernel command line the guest booted with.
    pub append: String,
    /// The guest's uptime when it said `done`.
    pub guest_uptime_ms: Option<u64>,
}

/// Enough for a panic's whole trace and what came before it.
const KEEP_LINES: usize = 80;

impl Boot {
    fn line(&mut self, line: String) {
        if let Some(kind) = console::splat(&line) {
            self.splats.push(format!("{kind}: {line}"));
        }
        if self.last_lines.len() == KEEP_LINES {
            self.last_lines.pop_front();
        }
        self.last_lines.push_back(line);
    }

    /// Takes console `items` from a guest whose QEMU started at `started`; true when one was a
    /// frame (the guest is alive). `on_frame` gets every frame but the greeting, kernel messages
    /// and the end, which go into the boot.
    pub fn take_all(
        &mut self,
        items: Vec<Item>,
        started: Instant,
        on_frame: &mut dyn FnMut(&Frame, &Boot),
    ) -> bool {
        let mut framed = false;
        for item in items {
            framed |= self.take(item, started, on_frame);
        }
        framed
    }

    /// Takes one console item; true when it was a frame.
    fn take(
        &mut self,
        item: Item,
        started: Instant,
        on_frame: &mut dyn FnMut(&Frame, &Boot),
    ) -> bool {
        let frame = match item {
            Item::Line(line) => {
                self.line(line);
                return false;
            }
            Item::Frame(f) => f,
        };
        match frame.kind {
            FrameKind::Hello => {
                self.hello_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                self.guest_kernel = serde_json::from_str::<console::Hello>(&frame.payload)
                    .ok()
                    .map(|h| h.kernel);
            }
            FrameKind::Kmsg => {
                if let Ok(m) = serde_json::from_str::<console::Kmsg>(&frame.payload) {
                    self.line(format!("kernel: {}", m.text));
                }
            }
            FrameKind::Done => {
                self.done = true;
                self.guest_uptime_ms = serde_json::from_str::<console::Done>(&frame.payload)
                    .ok()
                    .and_then(|d| d.uptime_ms);
            }
            FrameKind::Fatal => self.fatal = Some(frame.payload),
            FrameKind::Record | FrameKind::Probes => on_frame(&frame, self),
        }
        true
    }

    /// The boot's facts for a record of `target` run under `accel`.
    pub fn vm_run(&self, target: &VmTarget, accel: Accel) -> VmRun {
        VmRun {
            kernel: target.kernel.name.clone(),
            release: self.guest_kernel.clone(),
            cpus: target.cpus,
            accel: accel.name().to_string(),
            hello_ms: self.hello_ms,
            time_scale: target.time_scale,
            splats: self.splats.clone(),
        }
    }

    /// The log line that says how a delivered record's guest ran.
    pub fn summary_line(&self, target: &VmTarget, accel: Accel) -> String {
        format!(
            "vm: kernel {} ({}), {} vCPUs, {}, guest up after {:.0} ms, time bounds ×{}",
            target.kernel.name,
            self.guest_kernel.as_deref().unwrap_or("?"),
            target.cpus,
            accel.name(),
            self.hello_ms.unwrap_or(0.0),
            target.time_scale
        )
    }

    /// The splats seen so far, in order.
    pub fn splats(&self) -> &[String] {
        &self.splats
    }

    /// The last console lines, as log lines of a record.
    pub fn tail(&self) -> Vec<String> {
        if self.last_lines.is_empty() {
            return vec!["vm console: (the guest printed nothing)".to_string()];
        }
        self.last_lines
            .iter()
            .map(|l| format!("vm console: {l}"))
            .collect()
    }
}

/// How long a guest may take: to greet after QEMU starts, and between two frames after that.
#[derive(Debug, Clone, PartialEq)]
pub struct Budgets {
    pub boot: Duration,
    pub silence: Duration,
}

impl Budgets {
    /// The budgets of a boot whose longest scenario deadline (a host time) is `longest`.
    pub fn for_trials(longest: Duration, target: &VmTarget, accel: Accel) -> Budgets {
        let slow = accel.slowdown();
        // A record comes at least once per trial: a deadline, its teardown, and slack for a
        // guest that runs `slow` times slower than the host.
        Budgets {
            boot: Duration::from_secs(20 * u64::from(slow)),
            silence: 2 * time_scaled(longest, target.time_scale)
                + Duration::from_secs(15 * u64::from(slow)),
        }
    }

    /// These budgets with the settings' overrides (`WEDGE_VM_*_BUDGET_MS`) applied.
    pub fn overridden(mut self, settings: &VmSettings) -> Budgets {
        self.boot = settings.boot_budget.unwrap_or(self.boot);
        self.silence = settings.silence_budget.unwrap_or(self.silence);
        self
    }

    fn missed(&self, greeted: bool) -> String {
        if greeted {
            format!(
                "the guest stopped talking: no frame for {:.0} s (its budget between records)",
                self.silence.as_secs_f64()
            )
        } else {
            format!(
                "the guest did not come up: no greeting within its boot budget of {:.0} s",
                self.boot.as_secs_f64()
            )
        }
    }
}

/// One boot to make: which VM, from which image, within which budgets.
pub struct BootConfig<'a> {
    pub settings: &'a VmSettings,
    pub target: &'a VmTarget,
    pub initrd: PathBuf,
    pub budgets: Budgets,
    /// Set when the run is interrupted: the guest is killed.
    pub cancel: &'a AtomicBool,
    /// Instruction counting, for a recording or its replay.
    pub icount: Option<Icount>,
    /// The recorded kernel command line, for a replay.
    pub fixed_append: Option<String>,
    /// Keep every console byte in [`Boot::console`].
    pub capture: bool,
}

/// Boots `config.target` and reads its console until the guest is done, dies, misses a budget
/// or the run is cancelled; `on_frame` gets every frame but the greeting, kernel messages and
/// the end, which go into `boot`.
pub fn boot_and_watch(
    config: &BootConfig<'_>,
    boot: &mut Boot,
    on_frame: &mut dyn FnMut(&Frame, &Boot),
) {
    let settings = config.settings;
    let vm_config = VmConfig {
        qemu: settings.qemu.clone(),
        kernel: config.target.kernel.image.clone(),
        initrd: config.initrd.clone(),
        cpus: config.target.cpus,
        memory_mb: settings.memory_mb,
        accel: settings.accel,
        extra_args: Vec::new(),
        icount: config.icount.clone(),
        fixed_append: config.fixed_append.clone(),
    };
    boot.append = vm_config.append();
    if config.capture {
        boot.console = Some(Vec::new());
    }
    let mut vm = match Vm::boot(&vm_config) {
        Ok(vm) => vm,
        Err(e) => {
            boot.cut = Some(format!("cannot start {}: {e}", vm_config.qemu.display()));
            return;
        }
    };
    watch(&mut vm, config, boot, on_frame);
    let (end, stderr) = vm.wait(Instant::now() + Duration::from_secs(10));
    check_end(boot, end, &stderr);
}

/// Reads the console until the guest is done, dies, or misses a budget.
fn watch(
    vm: &mut Vm,
    config: &BootConfig<'_>,
    boot: &mut Boot,
    on_frame: &mut dyn FnMut(&Frame, &Boot),
) {
    let budgets = &config.budgets;
    let mut decoder = Decoder::new();
    let mut deadline = vm.started + budgets.boot;
    while !boot.done && boot.fatal.is_none() {
        if config.cancel.load(Ordering::SeqCst) {
            vm.kill();
            boot.cut = Some("the run was interrupted".into());
            return;
        }
        let bytes = match vm.read(deadline.min(Instant::now() + Duration::from_millis(500))) {
            ConsoleRead::Bytes(b) => b,
            ConsoleRead::Silent if Instant::now() < deadline => continue,
            ConsoleRead::Silent => {
                vm.kill();
                boot.cut = Some(budgets.missed(boot.hello_ms.is_some()));
                return;
            }
            ConsoleRead::Closed => break,
        };
        if let Some(console) = boot.console.as_mut() {
            console.extend_from_slice(&bytes);
        }
        if boot.take_all(decoder.feed(&bytes), vm.started, on_frame) {
            deadline = Instant::now() + budgets.silence;
        }
    }
    if let Some(Item::Line(l)) = decoder.finish() {
        boot.line(l);
    }
}

/// Checks QEMU's end against the stream; a disagreement becomes the reason for what is missing.
fn check_end(boot: &mut Boot, end: QemuEnd, stderr: &str) {
    let agrees = match end {
        QemuEnd::DebugExit(0) => boot.done,
        QemuEnd::DebugExit(1) => boot.fatal.is_some(),
        _ => false,
    };
    if agrees || boot.cut.is_some() {
        return;
    }
    let stderr = stderr.trim();
    let what = match end {
        QemuEnd::PoweredOff if boot.splats.iter().any(|s| s.starts_with("panic")) => {
            "the guest kernel panicked".to_string()
        }
        QemuEnd::PoweredOff => "the guest reset or powered off before it finished".to_string(),
        QemuEnd::DebugExit(c) => format!("the guest ended with debug-exit code {c}"),
        QemuEnd::Failed(code, signal) => format!(
            "QEMU failed (exit {code:?}, signal {signal:?}){}",
            if stderr.is_empty() {
                String::new()
            } else {
                format!(": {stderr}")
            }
        ),
    };
    boot.cut = Some(what);
}

/// Why the trials still pending after a boot got no record.
pub fn unfinished_reason(boot: &Boot, target: &VmTarget, accel: Accel) -> String {
    let head = if let Some(f) = &boot.fatal {
        format!("the guest could not run its plan: {f}")
    } else if let Some(cut) = &boot.cut {
        cut.clone()
    } else if boot.done {
        "the guest finished without sending this trial's record (a frame lost on the console)"
            .to_string()
    } else {
        "the guest's console closed before it finished".to_string()
    };
    format!(
        "vm (kernel {}, {} vCPUs, {}): {head} (the guest's last console lines are in the log)",
        target.kernel.name,
        target.cpus,
        accel.name(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot_with(lines: &[&str]) -> Boot {
        let mut b = Boot::default();
        for l in lines {
            b.line(l.to_string());
        }
        b
    }

    fn target() -> VmTarget {
        VmTarget {
            kernel: crate::plan::backend::BootKernel {
                name: "6.1".into(),
                image: "/k".into(),
                release: "6.1.0-57-cloud-amd64".into(),
                version: "6.1.192".into(),
            },
            cpus: 2,
            time_scale: 4,
        }
    }

    #[test]
    fn a_guest_that_panics_is_named_with_its_last_words() {
        let mut b = boot_with(&[
            "Run /init as init process",
            "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
        ]);
        check_end(&mut b, QemuEnd::PoweredOff, "");
        let why = unfinished_reason(&b, &target(), Accel::Tcg);
        assert!(why.contains("the guest kernel panicked"), "{why}");
        assert!(
            b.tail()
                .iter()
                .any(|l| l.contains("Attempted to kill init"))
        );
        assert!(why.contains("kernel 6.1, 2 vCPUs, tcg"), "{why}");
    }

    #[test]
    fn exit_status_must_agree_with_the_stream() {
        let mut done = Boot {
            done: true,
            ..Boot::default()
        };
        check_end(&mut done, QemuEnd::DebugExit(0), "");
        assert_eq!(done.cut, None);
        // `done` on the console, but QEMU says the guest failed: something is wrong.
        let mut b = Boot {
            done: true,
            ..Boot::default()
        };
        check_end(
            &mut b,
            QemuEnd::Failed(Some(1), None),
            "qemu: could not load kernel",
        );
        assert!(b.cut.unwrap().contains("could not load kernel"));
        // A clean debug exit without `done`: frames were lost.
        let mut lost = Boot::default();
        check_end(&mut lost, QemuEnd::DebugExit(0), "");
        assert!(lost.cut.unwrap().contains("debug-exit code 0"));
    }

    #[test]
    fn a_silent_guest_is_cut_at_its_budget_with_a_reason() {
        let b = Budgets {
            boot: Duration::from_secs(80),
            silence: Duration::from_secs(30),
        };
        assert!(b.missed(false).contains("did not come up"));
        assert!(b.missed(true).contains("stopped talking"));
        let boot = Boot {
            cut: Some(b.missed(false)),
            ..Boot::default()
        };
        let why = unfinished_reason(&boot, &target(), Accel::Tcg);
        assert!(why.contains("boot budget of 80 s"), "{why}");
        assert_eq!(boot.tail(), ["vm console: (the guest printed nothing)"]);
    }

    #[test]
    fn splats_are_collected_and_the_tail_is_bounded() {
        let mut b = Boot::default();
        for i in 0..100 {
            b.line(format!("line {i}"));
        }
        b.line("WARNING: CPU: 1 PID: 7 at kernel/foo.c:12".into());
        assert_eq!(b.last_lines.len(), KEEP_LINES);
        assert_eq!(b.splats.len(), 1);
        assert!(b.splats[0].starts_with("WARNING"));
    }
}
