//! The VM executor against real QEMU guests (TCG here): a guest that runs its plan, and guests
//! that fail in each way a VM can (its /init exits and the kernel panics, it never comes up, it
//! greets and then never answers). Each ends with one record per planned trial, with a verdict
//! and a reason that names what happened, and no QEMU left running.
//!
//! Needs qemu-system-x86_64, the fetched 6.1 kernel (`wedge kernels fetch 6.1`) and the
//! workspace's binaries (the guest runs them too); without them each test says so and fails unless
//! `WEDGE_ALLOW_SKIP` names `vm` (ci/test.sh provides all three).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wedge::exec::runner::{PlanOptions, PlannedCell, plan, run};
use wedge::exec::vm::{GUEST_BINARIES, VmExecutor, VmSettings};
use wedge::model::record::{TrialRecord, Verdict};
use wedge::model::scenario::Scenario;
use wedge::plan::backend::{Backend, VmHandle, VmSupport};
use wedge::vm::console::{FrameKind, encode};
use wedge::vm::support::HostVms;

/// One VM test at a time: each boots a guest that keeps a host core busy, and each checks that
/// no QEMU of this process outlived its run.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// This machine's VM support, or why the test cannot run.
fn vms() -> Option<(HostVms, VmSettings)> {
    let vms = HostVms::detect();
    let why = vms
        .unavailable()
        .or_else(|| vms.kernel("6.1").err())
        .map(|e| format!("VM tests cannot run: {e}"));
    match why {
        None => {
            let settings = vms.settings().expect("available");
            Some((vms, settings))
        }
        Some(why) => {
            let allowed = std::env::var("WEDGE_ALLOW_SKIP")
                .is_ok_and(|v| v.split(',').any(|n| n.trim() == "vm"));
            assert!(allowed, "{why} (set WEDGE_ALLOW_SKIP=vm to skip)");
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// Plans `text` (written to a file of its own: the guest image packs scenario files) as a
/// scenario whose cells all run in a 6.1 VM.
fn plan_vm(text: &str, vms: &HostVms) -> (Vec<PlannedCell>, TempDir) {
    let dir = std::env::temp_dir().join(format!("wedge-vm-scenario-{}", rand_tag()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vm-test.toml");
    std::fs::write(&file, text).unwrap();
    let s = Scenario::load(&file).unwrap();
    let engine = support::engine();
    plan(
        &wedge::exec::host_facts::of_engine(&engine),
        &[Arc::new(s)],
        &PlanOptions {
            backend: Backend::Vm,
            kernel: Some("6.1".into()),
            cpus: Some(1),
            vm: VmHandle(Arc::new(vms.clone())),
            ..PlanOptions::default()
        },
    )
    .map(|cells| (cells, TempDir(dir)))
    .unwrap()
}

/// Removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_vm(cells: &[PlannedCell], settings: VmSettings) -> Vec<TrialRecord> {
    support::watchdog(Duration::from_secs(240), {
        let cells = cells.to_vec();
        move || {
            let engine = support::engine();
            let executor = VmExecutor {
                engine: &engine,
                jobs: 1,
                settings,
            };
            run(&engine, &executor, &cells, &[]).unwrap()
        }
    })
}

const TWO_TRIALS: &str = "[scenario]\ntrials = 2\ndeadline_ms = 5000\n\
     [subject]\nkind = \"command\"\nargv = [\"sh\", \"-c\", \"echo in-guest; exit 3\"]\n\
     [expect]\nexit = 3\nstdout = \"in-guest\"\n";

/// A guest-bin dir whose `wedge` (the guest's /init) is `init_script`, beside the real others.
fn fake_init_bins(real: &Path, init_script: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wedge-vm-test-{}-{}",
        std::process::id(),
        rand_tag()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for b in &GUEST_BINARIES[1..] {
        std::fs::copy(real.join(b), dir.join(b)).unwrap();
    }
    let init = dir.join(GUEST_BINARIES[0]);
    std::fs::write(&init, init_script).unwrap();
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn rand_tag() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn no_qemu_left() {
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or("").split(' ').collect();
        let comm = stat.split('(').nth(1).and_then(|s| s.split(')').next());
        assert!(
            !(comm == Some("qemu-system-x86") && fields.get(1) == Some(&me.as_str())),
            "a QEMU of this test is still running: {stat}"
        );
    }
}

#[test]
fn a_guest_runs_its_plan_with_the_hosts_engine() {
    let _one = serial();
    let Some((vms, settings)) = vms() else { return };
    let (cells, _dir) = plan_vm(TWO_TRIALS, &vms);
    let records = run_vm(&cells, settings);
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason); // the exit it expects
        assert!(r.met, "{}: {}", r.reason, r.stdout_tail);
        assert_eq!(r.host.backend, "vm");
        assert!(r.host.kernel.starts_with("6.1."), "{}", r.host.kernel);
        assert_eq!(r.host.cpus, 1);
        assert!(r.host.accel.is_some());
        assert!(
            r.log.iter().any(|l| l.starts_with("vm: kernel 6.1")),
            "{:?}",
            r.log
        );
        assert!(
            r.file.ends_with("/vm-test.toml"),
            "the host's path: {}",
            r.file
        );
    }
    no_qemu_left();
}

#[test]
fn an_init_that_exits_is_a_kernel_panic_in_every_record() {
    let _one = serial();
    let Some((vms, mut settings)) = vms() else {
        return;
    };
    settings.guest_bins = fake_init_bins(
        &settings.guest_bins,
        "#!/bin/sh\necho init-says-bye\nexit 0\n",
    );
    let (cells, _dir) = plan_vm(TWO_TRIALS, &vms);
    let records = run_vm(&cells, settings.clone());
    std::fs::remove_dir_all(&settings.guest_bins).unwrap();
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.verdict, Verdict::Error);
        assert!(!r.met);
        assert!(r.reason.contains("panic"), "{}", r.reason);
        assert!(
            r.log.iter().any(|l| l.contains("init-says-bye")),
            "the last console lines are in the log: {:?}",
            r.log
        );
    }
    no_qemu_left();
}

#[test]
fn a_guest_that_never_comes_up_is_cut_at_its_boot_budget() {
    let _one = serial();
    let Some((vms, mut settings)) = vms() else {
        return;
    };
    settings.guest_bins = fake_init_bins(&settings.guest_bins, "#!/bin/sh\nexec sleep 1000\n");
    settings.boot_budget = Some(Duration::from_secs(8));
    let (cells, _dir) = plan_vm(TWO_TRIALS, &vms);
    let started = Instant::now();
    let records = run_vm(&cells, settings.clone());
    std::fs::remove_dir_all(&settings.guest_bins).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    for r in &records {
        assert_eq!(r.verdict, Verdict::Error);
        assert!(r.reason.contains("did not come up"), "{}", r.reason);
    }
    no_qemu_left();
}

#[test]
fn a_guest_that_greets_and_goes_silent_is_cut_at_its_silence_budget() {
    let _one = serial();
    let Some((vms, mut settings)) = vms() else {
        return;
    };
    let hello = encode(
        FrameKind::Hello,
        r#"{"kernel":"x","cpus":1,"wedge_version":"t"}"#,
    );
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' '{}'\nexec sleep 1000\n",
        hello.trim()
    );
    settings.guest_bins = fake_init_bins(&settings.guest_bins, &script);
    settings.silence_budget = Some(Duration::from_secs(3));
    let (cells, _dir) = plan_vm(TWO_TRIALS, &vms);
    let records = run_vm(&cells, settings.clone());
    std::fs::remove_dir_all(&settings.guest_bins).unwrap();
    for r in &records {
        assert_eq!(r.verdict, Verdict::Error);
        assert!(r.reason.contains("stopped talking"), "{}", r.reason);
    }
    no_qemu_left();
}

/// A deadlock in a 1-vCPU guest, caught as a hang with its diagnosis: a boot worth keeping.
const DEADLOCK: &str = "[scenario]\ntrials = 1\ndeadline_ms = 20000\nquiescence_ms = 300\n\
     [subject]\nkind = \"command\"\nargv = [\"wedge-subject\", \"deadlock\"]\n\
     [expect]\noutcome = \"hang\"\ndiagnosis = \"locker-a thread blocked in futex\"\n";

/// `--record`: a 1-vCPU boot with a hanging trial keeps its recording, every record says where,
/// and `wedge replay --exact` replays it to the same console stream, verdict and diagnosis.
#[test]
fn a_recorded_hang_replays_exactly() {
    let _one = serial();
    let Some((vms, mut settings)) = vms() else {
        return;
    };
    let results = TempDir(std::env::temp_dir().join(format!("wedge-vm-rr-{}", rand_tag())));
    settings.record = Some(results.0.join("recordings"));
    let (cells, _dir) = plan_vm(DEADLOCK, &vms);
    let records = run_vm(&cells, settings);
    let r = &records[0];
    assert_eq!((r.verdict, r.met), (Verdict::Hang, true), "{}", r.reason);
    let note = r.log.iter().find(|l| l.contains("wedge replay --exact"));
    let dir = note
        .and_then(|l| l.split("--exact ").nth(1))
        .map(|d| PathBuf::from(d.trim_end_matches('`')))
        .unwrap_or_else(|| panic!("no recording in {:?}", r.log));
    let kept: Vec<_> = std::fs::read_dir(results.0.join("recordings"))
        .unwrap()
        .collect();
    assert_eq!(kept.len(), 1, "one recording and no leftover slot");
    let out = support::watchdog(Duration::from_secs(240), move || {
        Command::new(env!("CARGO_BIN_EXE_wedge"))
            .args(["replay", "--exact"])
            .arg(&dir)
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("replay: exact"), "{stdout}");
    assert!(stdout.contains("verdict: hang"), "{stdout}");
    assert!(
        stdout.contains("locker-a thread blocked in futex"),
        "{stdout}"
    );
    assert!(stdout.contains(", same diagnosis"), "{stdout}");
    no_qemu_left();
}
