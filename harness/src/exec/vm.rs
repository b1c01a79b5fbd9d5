//! The VM executor: every trial whose cell needs another kernel or more CPUs runs inside a QEMU
//! micro-VM, one boot per (kernel, vCPUs) group, with the same engine the host uses; the
//! guest streams each record back over its console as it finishes. This file only groups
//! trials into boots and delivers their records: the plan the guest gets is packed by
//! [`crate::vm::wire`], its image built by [`crate::vm::guest_image`], and the boot watched by
//! [`crate::vm::boot`].
//!
//! Guarantees:
//! - Every planned trial ends with exactly one record: the guest's, or, when the guest cannot
//!   deliver it (the image cannot be built, QEMU fails, the kernel panics, the guest stops
//!   talking or misses a budget), an `error` record that says what happened and quotes the
//!   guest's last console lines.
//! - Every record carries its boot's facts ([`VmRun`](crate::model::record::VmRun)), kernel splats
//!   seen on the console up to it included, even when its trial passed.
//! - At most `jobs` VMs run at once (a TCG VM keeps one host core busy); QEMU is always killed
//!   and reaped ([`crate::vm::qemu::Vm`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::Ordering;
use wedge_core::sync::Mutex;

use super::{Executor, TrialSink};
use crate::engine::trial::{Engine, skipped_record};
use crate::model::record::{TrialRecord, Verdict};
use crate::plan::backend::{Target, VmTarget};
use crate::plan::{PlannedCell, PlannedTrial};
use crate::vm::boot::{Boot, BootConfig, Budgets, boot_and_watch, unfinished_reason};
use crate::vm::console::{Frame, FrameKind};
use crate::vm::guest_image::guest_image;
use crate::vm::qemu::{Accel, Icount, qemu_version};
use crate::vm::recording::{Manifest, RecordedTrial, Slot, worth_keeping};
pub use crate::vm::support::{GUEST_BINARIES, VmSettings};
use crate::vm::wire::PackedPlan;

/// Runs VM cells, `jobs` VMs at a time.
pub struct VmExecutor<'a> {
    pub engine: &'a Engine,
    pub jobs: usize,
    pub settings: VmSettings,
}

/// One boot: its VM and the trials it runs (each naming its cell in the plan).
struct Group {
    target: VmTarget,
    trials: Vec<PlannedTrial>,
}

impl Executor for VmExecutor<'_> {
    fn run(&self, cells: &[PlannedCell], trials: Vec<PlannedTrial>, sink: &dyn TrialSink) {
        let mut groups: BTreeMap<VmTarget, Vec<PlannedTrial>> = BTreeMap::new();
        for t in trials {
            if let Target::Vm(target) = &cells[t.cell].target {
                groups.entry(target.clone()).or_default().push(t);
            }
        }
        let mut groups: Vec<Group> = groups
            .into_iter()
            .map(|(target, trials)| Group { target, trials })
            .collect();
        // Longest first, so the short boots fill in beside it instead of the run ending on one
        // long boot alone: an emulated guest's boot and every trial in it slow with its vCPU
        // count (TCG shares the host's cores), so more vCPUs first, then more trials.
        groups.sort_by_key(|g| std::cmp::Reverse((g.target.cpus, g.trials.len())));
        let queue: Mutex<VecDeque<Group>> = Mutex::new(groups.into());
        let next = || queue.lock().pop_front();
        std::thread::scope(|scope| {
            for _ in 0..self.jobs.max(1) {
                // Each VM's thread boots it and lives until it is reaped (PDEATHSIG is per
                // thread).
                scope.spawn(|| {
                    while let Some(group) = next() {
                        if self.engine.cancel.load(Ordering::SeqCst) {
                            return;
                        }
                        self.run_group(cells, &group, sink);
                    }
                });
            }
        });
    }
}

impl VmExecutor<'_> {
    /// Boots `group`'s VM, delivers each record the guest sends, and an error record for
    /// every trial it did not.
    fn run_group(&self, cells: &[PlannedCell], group: &Group, sink: &dyn TrialSink) {
        let pending = group
            .trials
            .iter()
            .map(|t| {
                let c = &cells[t.cell];
                ((c.scenario.name.clone(), c.cell_index, t.trial), *t)
            })
            .collect();
        let mut recorder = Recorder::for_group(&self.settings, group);
        let mut delivery = Delivery {
            executor: self,
            cells,
            group,
            pending,
            sink,
            held: recorder.slot.as_ref().map(|_| Vec::new()),
        };
        let mut boot = Boot::default();
        let packed = PackedPlan::trials(&group.target, cells, &group.trials);
        match guest_image(&self.settings, &packed) {
            Err(e) => boot.cut = Some(format!("cannot build the guest image: {e}")),
            Ok(initrd) => {
                let longest = group.trials.iter().map(|t| cells[t.cell].scenario.deadline);
                let accel = self.settings.accel;
                let budgets =
                    Budgets::for_trials(longest.max().unwrap_or_default(), &group.target, accel)
                        .overridden(&self.settings);
                let config = BootConfig {
                    settings: &self.settings,
                    target: &group.target,
                    initrd: initrd.clone(),
                    budgets,
                    cancel: &self.engine.cancel,
                    icount: recorder.icount.clone(),
                    fixed_append: None,
                    capture: recorder.slot.is_some(),
                };
                let mut on_frame = |frame: &Frame, boot: &Boot| {
                    if frame.kind == FrameKind::Record {
                        delivery.deliver(&frame.payload, boot);
                    }
                };
                let started = std::time::Instant::now();
                boot_and_watch(&config, &mut boot, &mut on_frame);
                recorder.wall_ms = started.elapsed().as_secs_f64() * 1000.0;
                recorder.initrd = Some(initrd);
            }
        }
        let note = recorder.finish(&self.settings, group, &boot, &delivery);
        delivery.release(note.clone());
        delivery.undelivered(&boot, note);
    }

    /// The record of a trial the guest did not deliver.
    fn error_record(&self, cells: &[PlannedCell], t: &PlannedTrial, why: &str) -> TrialRecord {
        let c = &cells[t.cell];
        let mut r = skipped_record(
            self.engine,
            &c.scenario,
            &c.cell,
            c.cell_index,
            c.expectation.clone(),
            why.to_string(),
        );
        (r.verdict, r.met, r.trial, r.seed) = (Verdict::Error, false, t.trial, t.seed);
        r.host.backend = "vm".into();
        r.host.accel = Some(self.settings.accel.name().into());
        // A trial the VM could not run is lost too; its class is the scenario's to say.
        r.loss = crate::model::loss::of(c.scenario.classes(), &r);
        r
    }
}

/// One boot's trials on their way to the sink.
struct Delivery<'a> {
    executor: &'a VmExecutor<'a>,
    cells: &'a [PlannedCell],
    group: &'a Group,
    /// The trials not delivered yet, by (scenario, cell index, trial).
    pending: HashMap<(String, usize, u32), PlannedTrial>,
    sink: &'a dyn TrialSink,
    /// A recorded boot's records, held until it is known whether the recording is kept (their
    /// log then says where it is).
    held: Option<Vec<(PlannedTrial, TrialRecord)>>,
}

impl Delivery<'_> {
    /// A record from the guest, handed on as the host's own would be.
    fn deliver(&mut self, payload: &str, boot: &Boot) {
        let Ok(record) = serde_json::from_str::<TrialRecord>(payload) else {
            return; // an intact frame of an unreadable record: its trial stays pending.
        };
        let key = (record.scenario.clone(), record.cell_index, record.trial);
        let Some(t) = self.pending.remove(&key) else {
            return;
        };
        let file = &self.cells[t.cell].scenario.file;
        let accel = self.executor.settings.accel;
        let record = delivered(record, file, boot, &self.group.target, accel);
        match self.held.as_mut() {
            Some(held) => held.push((t, record)),
            None => self.sink.finished(&t, record),
        }
    }

    /// Hands the held records on, each with `note` in its log.
    fn release(&mut self, note: Option<String>) {
        for (t, mut record) in self.held.take().unwrap_or_default() {
            record.log.extend(note.clone());
            self.sink.finished(&t, record);
        }
    }

    /// An error record for each trial still pending after the boot, with `note` (a recorded
    /// boot's: where its recording is) in its log.
    fn undelivered(self, boot: &Boot, note: Option<String>) {
        let (target, accel) = (&self.group.target, self.executor.settings.accel);
        let why = unfinished_reason(boot, target, accel);
        let mut left: Vec<PlannedTrial> = self.pending.into_values().collect();
        left.sort_by_key(|t| (t.cell, t.trial));
        for t in left {
            let mut r = self.executor.error_record(self.cells, &t, &why);
            let splats = boot.splats().iter();
            r.log
                .extend(splats.map(|s| format!("vm: kernel splat: {s}")));
            r.log.extend(boot.tail());
            r.log.extend(note.clone());
            r.vm = Some(boot.vm_run(target, accel));
            self.sink.finished(&t, r);
        }
    }
}

/// `--record` for one boot: QEMU's record/replay for a 1-vCPU TCG guest, seeded virtual time
/// for more vCPUs (QEMU cannot record those), nothing under KVM (no instruction counting).
struct Recorder {
    /// The recording's name: `<kernel>-<boot seed>`.
    name: String,
    slot: Option<Slot>,
    icount: Option<Icount>,
    wall_ms: f64,
    initrd: Option<std::path::PathBuf>,
}

impl Recorder {
    fn for_group(settings: &VmSettings, group: &Group) -> Recorder {
        let seed = group_seed(&group.trials);
        let kernel = group.target.kernel.name.replace('/', "_");
        let mut r = Recorder {
            name: format!("{kernel}-{seed:016x}"),
            slot: None,
            icount: None,
            wall_ms: 0.0,
            initrd: None,
        };
        let Some(dir) = settings.record.as_ref() else {
            return r;
        };
        if settings.accel != Accel::Tcg {
            return r;
        }
        if group.target.cpus > 1 {
            r.icount = Some(Icount::VirtualTime { seed });
            return r;
        }
        match Slot::open(dir, &r.name) {
            Ok(slot) => {
                r.icount = Some(Icount::Record(slot.log()));
                r.slot = Some(slot);
            }
            Err(e) => crate::errln!("wedge: cannot record this boot: {e}"),
        }
        r
    }

    /// Keeps the recording when a trial failed, hung or got no record; the line each record of
    /// the boot then carries.
    fn finish(
        self,
        settings: &VmSettings,
        group: &Group,
        boot: &Boot,
        delivery: &Delivery<'_>,
    ) -> Option<String> {
        let (slot, initrd) = (self.slot?, self.initrd?);
        let held = delivery.held.as_deref().unwrap_or_default();
        let trials: Vec<RecordedTrial> = held.iter().map(|(_, r)| RecordedTrial::of(r)).collect();
        if !worth_keeping(&trials, delivery.pending.len()) {
            return Some("vm: recorded (QEMU record/replay); not kept: every trial passed".into());
        }
        let manifest = Manifest {
            qemu_version: qemu_version(&settings.qemu).unwrap_or_default(),
            kernel: group.target.kernel.name.clone(),
            cpus: group.target.cpus,
            memory_mb: settings.memory_mb,
            append: boot.append.clone(),
            time_scale: group.target.time_scale,
            wall_ms: self.wall_ms,
            guest_uptime_ms: boot.guest_uptime_ms.map(|ms| ms as f64),
            trials,
            ..Manifest::default()
        };
        let console = boot.console.as_deref().unwrap_or_default();
        let kernel = group.target.kernel.image.as_path();
        Some(
            match slot.keep(manifest, (kernel, &initrd), console, &self.name) {
                Ok(dir) => format!(
                    "vm: recorded (QEMU record/replay); replay exactly with `wedge replay --exact {}`",
                    dir.display()
                ),
                Err(e) => format!("vm: recorded, but the recording could not be kept: {e}"),
            },
        )
    }
}

/// One seed for a boot: its trial's seed when it runs one (as `wedge replay` does), else a fold
/// of its trials' seeds.
fn group_seed(trials: &[PlannedTrial]) -> u64 {
    match trials {
        [one] => one.seed,
        many => many.iter().fold(0, |a, t| a.rotate_left(7) ^ t.seed),
    }
}

/// A record the guest sent for a trial of `target`, as the host hands it on: the host's path of
/// its scenario `file`, how the guest ran, and what the boot showed up to it (kernel splats
/// included, whatever the verdict).
pub fn delivered(
    mut record: TrialRecord,
    file: &Path,
    boot: &Boot,
    target: &VmTarget,
    accel: Accel,
) -> TrialRecord {
    record.file = file.display().to_string();
    record.host.accel = Some(accel.name().into());
    record.log.push(boot.summary_line(target, accel));
    for s in boot.splats() {
        record
            .log
            .push(format!("vm: kernel splat during this boot: {s}"));
    }
    record.vm = Some(boot.vm_run(target, accel));
    record
}
