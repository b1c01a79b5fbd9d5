//! wedge as a guest's `/init`: set up the minimal system a trial needs, run the plan the host
//! packed into the image with **the same engine** the host uses (same isolation, watchdog and
//! diagnosis), stream each finished trial's record over the console, and power off.
//!
//! Guarantees:
//! - Every record the guest finishes is sent, framed ([`crate::vm::console`]), before the next
//!   one; the `done` frame is sent only after all of them, and the debug-exit code agrees with
//!   it (0 after `done`, 1 after `fatal`).
//! - The guest never returns from `/init` (the kernel would panic): every path ends in a
//!   power-off, and if even that fails, in an exit the host sees as a dead guest.
//! - Kernel messages of warning level and worse are forwarded as frames, so splats reach the
//!   host between whole frames instead of tearing them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use wedge_core::sync::Mutex;

use serde::Serialize;

use crate::engine::trial::Engine;
use crate::exec::TrialSink;
use crate::exec::host::{HostCell, run_here};
use crate::model::record::TrialRecord;
use crate::model::scenario::{Expectation, Scenario};
use crate::plan::{PlannedTrial, resolve};
use crate::probe::run::{SuiteOptions, run_suite};
use crate::probe::{ProbeReport, ProbeValues};
use crate::vm::console::{self, FrameKind};
use crate::vm::error::GuestError;
use crate::vm::wire::{GuestPlan, PLAN_PATH};

/// Whether this process is a wedge guest's init: pid 1 with a plan in its root.
pub fn is_guest() -> bool {
    std::process::id() == 1 && Path::new(PLAN_PATH).exists()
}

/// Runs the guest and powers off; never returns.
pub fn main() -> ! {
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            send(
                FrameKind::Fatal,
                &serde_json::json!({ "error": e.to_string() }).to_string(),
            );
            1
        }
    };
    power_off(code)
}

fn run() -> Result<(), GuestError> {
    leave_rootfs()?;
    mount_system()?;
    forward_kernel_log();
    let text = std::fs::read_to_string(PLAN_PATH).map_err(GuestError::PlanRead)?;
    let plan: GuestPlan = serde_json::from_str(&text).map_err(GuestError::PlanParse)?;
    let mut engine = Engine::new();
    // `/init` is a copy of wedge at the root; its siblings live in /bin.
    engine.bin_dir = PathBuf::from("/bin");
    engine.init_program = PathBuf::from("/bin").join(crate::engine::pidns::INIT_PROGRAM);
    engine.host.backend = "vm".to_string();
    engine.host.accel = accel_from_cmdline();
    let hello = console::Hello {
        kernel: engine.host.kernel.clone(),
        cpus: engine.host.cpus,
        wedge_version: crate::VERSION.to_string(),
    };
    send(FrameKind::Hello, &to_json(&hello));
    let probes = probe_if_asked(&plan, &engine);
    let version = if plan.kernel_version.is_empty() {
        engine.host.kernel.clone()
    } else {
        plan.kernel_version.clone()
    };
    let unpacked = Unpacked::new(&plan, &version, probes.as_ref())?;
    let sink = Streamer {
        sent: Mutex::new(0),
    };
    let cells = unpacked.cells(&plan);
    run_here(
        &engine,
        plan.jobs.max(1),
        &cells,
        unpacked.trials(&plan),
        &sink,
    );
    let trials = *sink.sent.lock();
    engine.cancel.store(true, Ordering::SeqCst);
    let uptime_ms = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next()?.parse::<f64>().ok())
        .map(|s| (s * 1000.0) as u64);
    send(
        FrameKind::Done,
        &to_json(&console::Done { trials, uptime_ms }),
    );
    Ok(())
}

/// Runs the probe suite when the plan asks for its report or a cell's expectation needs it
/// (sending the report in the first case); the values.
fn probe_if_asked(plan: &GuestPlan, engine: &Engine) -> Option<ProbeValues> {
    if !plan.probe && !plan.cells.iter().any(|c| c.resolve_with_probes) {
        return None;
    }
    let accel = engine.host.accel.clone();
    // The probes' bounds scale as the scenarios' deadlines do in this guest.
    let options = SuiteOptions {
        wedge: PathBuf::from("/bin/wedge"),
        ..SuiteOptions::this_program(plan.time_scale)
    };
    let report = ProbeReport {
        kernel: engine.host.kernel.clone(),
        release: engine.host.kernel.clone(),
        backend: "vm".into(),
        accel,
        cpus: engine.host.cpus,
        probes: run_suite(&options),
    };
    if plan.probe {
        send(FrameKind::Probes, &to_json(&report));
    }
    Some(report.values())
}

/// The host's plan as this guest runs it: each scenario loaded from the image (for its steps)
/// with the deadline the host scaled, and each cell's expectation: the host's, or, for a cell
/// the host marked as keyed on probes, resolved with this guest's `probes` (the one thing the
/// host could not know) and scaled as the host scales bounds.
struct Unpacked {
    scenarios: Vec<Scenario>,
    /// Parallel to the plan's cells.
    expectations: Vec<Expectation>,
}

impl Unpacked {
    fn new(
        plan: &GuestPlan,
        version: &str,
        probes: Option<&ProbeValues>,
    ) -> Result<Unpacked, GuestError> {
        let mut scenarios = Vec::new();
        for f in &plan.scenarios {
            let mut s = Scenario::load(Path::new(&f.path))?;
            s.deadline = std::time::Duration::from_millis(f.deadline_ms);
            scenarios.push(s);
        }
        let mut expectations = Vec::new();
        for (i, gc) in plan.cells.iter().enumerate() {
            let s = scenarios.get(gc.scenario).ok_or(GuestError::NoScenario {
                cell: i,
                scenario: gc.scenario,
            })?;
            expectations.push(if gc.resolve_with_probes {
                // The host's own resolution, with the probes it could not know.
                resolve(
                    &s.expectation_of(&gc.cell, version),
                    plan.time_scale,
                    probes,
                )
            } else {
                gc.expectation.clone()
            });
        }
        Ok(Unpacked {
            scenarios,
            expectations,
        })
    }

    /// The plan's cells as the host engine runs them.
    fn cells<'a>(&'a self, plan: &'a GuestPlan) -> Vec<HostCell<'a>> {
        let cells = plan.cells.iter().zip(&self.expectations);
        cells
            .map(|(gc, expectation)| HostCell {
                scenario: &self.scenarios[gc.scenario],
                cell: &gc.cell,
                cell_index: gc.cell_index,
                expectation,
                cpus: gc.cpus,
                chaos: gc.chaos,
            })
            .collect()
    }

    /// Every trial of the plan, each naming its cell's position.
    fn trials(&self, plan: &GuestPlan) -> Vec<PlannedTrial> {
        let cells = plan.cells.iter().enumerate();
        cells
            .flat_map(|(i, gc)| {
                gc.trials.iter().map(move |t| PlannedTrial {
                    cell: i,
                    trial: t.trial,
                    seed: t.seed,
                })
            })
            .collect()
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Sends each record as it finishes.
struct Streamer {
    sent: Mutex<u64>,
}

impl TrialSink for Streamer {
    fn finished(&self, _trial: &PlannedTrial, record: TrialRecord) {
        send(FrameKind::Record, &to_json(&record));
        *self.sent.lock() += 1;
    }
}

/// One frame, written whole with one `write` at a time (frames never interleave each other).
fn send(kind: FrameKind, payload: &str) {
    static CONSOLE: Mutex<()> = Mutex::new(());
    let frame = console::encode(kind, payload);
    let _one_at_a_time = CONSOLE.lock();
    let mut rest = frame.as_bytes();
    while !rest.is_empty() {
        match nix::unistd::write(std::io::stdout(), rest) {
            Ok(n) => rest = &rest[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Moves the guest's files from the initramfs to a tmpfs and makes that the root, as
/// `switch_root` does. `pivot_root` cannot leave the initial rootfs (EINVAL), and bubblewrap and
/// every container runtime pivot into their sandbox's root; on a tmpfs mounted over `/` they can.
fn leave_rootfs() -> Result<(), GuestError> {
    use nix::mount::{MsFlags, mount};
    let new = Path::new("/newroot");
    std::fs::create_dir_all(new).map_err(GuestError::io("mkdir /newroot"))?;
    mount(
        Some("tmpfs"),
        new,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(GuestError::sys("mount tmpfs on /newroot"))?;
    copy_tree(Path::new("/"), new)?;
    std::env::set_current_dir(new).map_err(GuestError::io("chdir /newroot"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(GuestError::sys("move /newroot to /"))?;
    nix::unistd::chroot(".").map_err(GuestError::sys("chroot"))?;
    std::env::set_current_dir("/").map_err(GuestError::io("chdir /"))
}

/// Copies the tree at `from` into `to` (files with their modes, directories, symlinks; not device
/// nodes), leaving out `to` itself.
fn copy_tree(from: &Path, to: &Path) -> Result<(), GuestError> {
    let entries = std::fs::read_dir(from).map_err(GuestError::io(from.display()))?;
    for entry in entries.flatten() {
        let src = entry.path();
        if src == Path::new("/newroot") {
            continue;
        }
        let dst = to.join(entry.file_name());
        let meta = entry.metadata().map_err(GuestError::io(src.display()))?;
        let copied = if meta.is_symlink() {
            std::fs::read_link(&src).and_then(|t| std::os::unix::fs::symlink(t, &dst))
        } else if meta.is_dir() {
            std::fs::create_dir(&dst)
                .and_then(|()| std::fs::set_permissions(&dst, meta.permissions()))
        } else if meta.is_file() {
            std::fs::copy(&src, &dst).map(|_| ())
        } else {
            // Device nodes (the kernel's /dev/console): devtmpfs brings them back.
            Ok(())
        };
        let what = format!("copy {} to {}", src.display(), dst.display());
        copied.map_err(GuestError::io(what))?;
        if meta.is_dir() {
            copy_tree(&src, &dst)?;
        }
    }
    Ok(())
}
/// proc, sys, devtmpfs, devpts, cgroup2 and tmpfs, where a trial expects them.
fn mount_system() -> Result<(), GuestError> {
    use nix::mount::{MsFlags, mount};
    let none: Option<&str> = None;
    let mounts: [(&str, &str, &str, Option<&str>); 7] = [
        ("proc", "/proc", "proc", None),
        ("sysfs", "/sys", "sysfs", None),
        ("devtmpfs", "/dev", "devtmpfs", None),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            Some("ptmxmode=0666,newinstance"),
        ),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", None),
        ("tmpfs", "/tmp", "tmpfs", Some("mode=1777")),
        ("tmpfs", "/run", "tmpfs", Some("mode=0755")),
    ];
    for (source, target, fstype, data) in mounts {
        std::fs::create_dir_all(target).map_err(GuestError::io(format!("mkdir {target}")))?;
        match mount(Some(source), target, Some(fstype), MsFlags::empty(), data) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => return Err(GuestError::sys(format!("mount {fstype} on {target}"))(e)),
        }
    }
    let _ = std::fs::create_dir_all("/dev/shm");
    let _ = mount(
        Some("tmpfs"),
        "/dev/shm",
        Some("tmpfs"),
        MsFlags::empty(),
        none,
    );
    if !Path::new("/dev/ptmx").exists() {
        let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    }
    // Trials get every controller the kernel has, as on a host with a delegated subtree.
    if let Ok(controllers) = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers") {
        let enable: Vec<String> = controllers
            .split_whitespace()
            .map(|c| format!("+{c}"))
            .collect();
        let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", enable.join(" "));
    }
    // SAFETY: setting environment variables before any other thread exists.
    unsafe {
        std::env::set_var("PATH", "/bin:/usr/bin:/sbin:/usr/sbin");
        std::env::set_var("HOME", "/root");
        std::env::set_var("TMPDIR", "/tmp");
    }
    Ok(())
}

/// `wedge.accel=` from the kernel command line: the host says how it ran the guest.
fn accel_from_cmdline() -> Option<String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("wedge.accel="))
        .map(str::to_string)
}

/// Keeps the kernel off the console (but for emergencies) and forwards its warnings and worse
/// as frames, from a thread of their own.
fn forward_kernel_log() {
    // SAFETY: klogctl(SYSLOG_ACTION_CONSOLE_LEVEL, NULL, 2) only sets a kernel variable.
    unsafe {
        libc::klogctl(8, std::ptr::null_mut(), 2);
    }
    let Ok(mut kmsg) = std::fs::File::open("/dev/kmsg") else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 8192];
        loop {
            match kmsg.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if let Some(m) = parse_kmsg(&String::from_utf8_lossy(&buf[..n]))
                        && m.level <= 4
                    {
                        send(FrameKind::Kmsg, &to_json(&m));
                    }
                }
                // EPIPE: the ring overwrote what we had not read yet; go on from there.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                Err(_) => return,
            }
        }
    });
}

/// One `/dev/kmsg` record: `PRIO,SEQ,USEC,FLAGS;TEXT` then continuation lines.
pub fn parse_kmsg(record: &str) -> Option<console::Kmsg> {
    let (head, text) = record.split_once(';')?;
    let prio: u32 = head.split(',').next()?.parse().ok()?;
    let text = text.lines().next().unwrap_or("").to_string();
    Some(console::Kmsg {
        level: (prio & 7) as u8,
        text,
    })
}

/// Flushes, then ends the VM with `code` through the debug-exit port (falling back to a plain
/// power-off, and failing that, to an exit the host sees as a dead guest).
fn power_off(code: u8) -> ! {
    // The last frames may still sit in the serial driver's buffer: the debug-exit would end the
    // VM before the UART sent them (seen: a clean exit whose `done` never arrived).
    let _ = nix::sys::termios::tcdrain(std::io::stdout());
    nix::unistd::sync();
    #[cfg(target_arch = "x86_64")]
    // SAFETY: pid 1 of a wedge guest, where the host attached isa-debug-exit at this port; ioperm
    // grants this process the port, and the write ends the VM.
    unsafe {
        let port = crate::vm::qemu::DEBUG_EXIT_PORT;
        if libc::ioperm(u64::from(port), 4, 1) == 0 {
            let value = u32::from(code);
            std::arch::asm!("out dx, eax", in("dx") port, in("eax") value);
        }
    }
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    std::process::exit(i32::from(code) + 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::wire::{GuestCell, GuestScenario, GuestTrial};

    #[test]
    fn kmsg_records_give_level_and_first_line() {
        let m =
            parse_kmsg("4,812,5512234,-;WARNING: CPU: 0 PID: 1 at foo\n SUBSYSTEM=x\n").unwrap();
        assert_eq!(m.level, 4);
        assert_eq!(m.text, "WARNING: CPU: 0 PID: 1 at foo");
        // Facility bits above the level are dropped.
        assert_eq!(parse_kmsg("14,1,2,-;hi").unwrap().level, 6);
        assert_eq!(parse_kmsg("garbage"), None);
        assert_eq!(parse_kmsg("x,1;text"), None);
    }

    #[test]
    fn the_guest_re_resolves_probe_keyed_expectations_with_its_own_probes() {
        let dir = std::env::temp_dir().join(format!("wedge-guest-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keyed.toml");
        std::fs::write(
            &file,
            "[subject]\nkind = \"command\"\nargv = [\"true\"]\n[[expect.when]]\n\
             probe = { recv_after_users_exit = \"blocks\" }\noutcome = \"hang\"\n\
             [[expect.when]]\nwithin_ms = 100\n",
        )
        .unwrap();
        let s = Scenario::load(&file).unwrap();
        let provisional = s.expectation(&s.cells()[0], "6.1.192");
        let cell = |resolve_with_probes| GuestCell {
            scenario: 0,
            cell: s.cells()[0].clone(),
            cell_index: 0,
            expectation: provisional.clone(),
            trials: vec![GuestTrial { trial: 0, seed: 7 }],
            cpus: None,
            resolve_with_probes,
            chaos: Default::default(),
        };
        let plan = GuestPlan {
            probe: false,
            kernel_version: "6.1.192".into(),
            time_scale: 3,
            jobs: 1,
            scenarios: vec![GuestScenario {
                path: file.display().to_string(),
                deadline_ms: 30_000,
            }],
            cells: vec![cell(true), cell(false)],
        };
        let mut blocks = ProbeValues::new();
        blocks.insert("recv_after_users_exit".into(), "blocks".into());
        let unpacked = Unpacked::new(&plan, "6.1.192", Some(&blocks)).unwrap();
        let (cells, trials) = (unpacked.cells(&plan), unpacked.trials(&plan));
        assert_eq!(
            cells[0].expectation.outcome,
            crate::model::scenario::Outcome::Hang
        );
        // Re-resolved bounds are scaled as the host scales a VM cell's.
        assert_eq!(cells[0].expectation.within_ms, Some(300));
        // Not asked to re-resolve: the host's expectation stands.
        assert_eq!(*cells[1].expectation, provisional);
        assert_eq!(trials.len(), 2);
        // The deadline is the host's, scaled by the host: the guest does not scale it again.
        assert_eq!(cells[0].scenario.deadline.as_millis(), 30_000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
