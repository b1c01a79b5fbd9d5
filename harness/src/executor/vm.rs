//! The VM executor: every trial whose cell needs another kernel or more CPUs runs inside a QEMU
//! micro-VM, one boot per (kernel, vCPUs) group, with the same engine the host uses; the
//! guest streams each record back over its console as it finishes.
//!
//! Guarantees:
//! - Every planned trial ends with exactly one record: the guest's, or, when the guest cannot
//!   deliver it (the image cannot be built, QEMU fails, the kernel panics, the guest stops
//!   talking or misses a budget), an `error` record that says what happened and quotes the
//!   guest's last console lines.
//! - Kernel splats seen on the console are named in the records of trials that ended after
//!   them, even when those trials passed.
//! - At most `jobs` VMs run at once (a TCG VM keeps one host core busy); QEMU is always killed
//!   and reaped ([`crate::vm::qemu::Vm`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Executor, TrialSink};
use crate::backend::{Target, VmTarget};
use crate::plan::{PlannedCell, PlannedTrial};
use crate::record::{TrialRecord, Verdict, VmRun};
use crate::trial::{Engine, skipped_record};
use crate::vm::console::{self, Decoder, Frame, FrameKind, Item};
use crate::vm::guest::{GuestCell, GuestPlan, PLAN_PATH, scenario_path};
use crate::vm::image::{ImageSpec, build_image};
use crate::vm::qemu::{Accel, ConsoleRead, QemuEnd, Vm, VmConfig};

/// How this machine boots guests.
#[derive(Debug, Clone)]
pub struct VmSettings {
    pub qemu: PathBuf,
    pub accel: Accel,
    /// The static wedge binaries (see `ci/build-static.sh`).
    pub guest_bins: PathBuf,
    /// Where images are cached.
    pub cache: PathBuf,
    pub memory_mb: u32,
    /// Overrides of the budgets (`WEDGE_VM_BOOT_BUDGET_MS`, `WEDGE_VM_SILENCE_BUDGET_MS`): how
    /// long a guest may take to greet, and to send its next frame.
    pub boot_budget: Option<Duration>,
    pub silence_budget: Option<Duration>,
}

/// The wedge binaries every guest holds; the first becomes `/init`.
pub const GUEST_BINARIES: [&str; 5] = [
    "wedge",
    "wedge-init",
    "wedge-subject",
    "wedge-run",
    "wedge-agent",
];

/// Programs every guest holds when the host has them: what shell-level scenarios reach for.
const BASE_PROGRAMS: &[&str] = &[
    "sh", "true", "false", "sleep", "cat", "echo", "env", "kill", "ls", "mkdir", "rm", "printf",
    "bwrap", "timeout", "id", "grep", "head", "tail", "wc", "ln", "chmod", "touch", "nproc",
];

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
        let queue: Mutex<VecDeque<Group>> = Mutex::new(
            groups
                .into_iter()
                .map(|(target, trials)| Group { target, trials })
                .collect(),
        );
        let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
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

/// What came back from one boot.
#[derive(Debug, Default)]
pub struct Boot {
    /// From QEMU's start to the guest's greeting.
    hello_ms: Option<f64>,
    guest_kernel: Option<String>,
    pub(crate) done: bool,
    fatal: Option<String>,
    /// Splats seen so far, in order.
    splats: Vec<String>,
    /// The last console lines, for diagnoses.
    last_lines: VecDeque<String>,
    /// Why the boot ended early, if it did.
    pub(crate) cut: Option<String>,
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
            framed |= take(item, started, self, on_frame);
        }
        framed
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

    /// The last console lines, as log lines of a record.
    pub(crate) fn tail(&self) -> Vec<String> {
        if self.last_lines.is_empty() {
            return vec!["vm console: (the guest printed nothing)".to_string()];
        }
        self.last_lines
            .iter()
            .map(|l| format!("vm console: {l}"))
            .collect()
    }
}

impl VmExecutor<'_> {
    fn run_group(&self, cells: &[PlannedCell], group: &Group, sink: &dyn TrialSink) {
        let mut pending: HashMap<(String, usize, u32), PlannedTrial> = group
            .trials
            .iter()
            .map(|t| {
                let c = &cells[t.cell];
                ((c.scenario.name.clone(), c.cell_index, t.trial), *t)
            })
            .collect();
        let mut boot = Boot::default();
        match self.image_for(cells, group) {
            Err(e) => boot.cut = Some(format!("cannot build the guest image: {e}")),
            Ok(initrd) => self.boot_and_watch(cells, group, initrd, &mut pending, &mut boot, sink),
        }
        let why = unfinished_reason(&boot, &group.target, self.settings.accel);
        let mut left: Vec<PlannedTrial> = pending.into_values().collect();
        left.sort_by_key(|t| (t.cell, t.trial));
        for t in left {
            let mut r = self.error_record(cells, &t, &why);
            r.log
                .extend(boot.splats.iter().map(|s| format!("vm: kernel splat: {s}")));
            r.log.extend(boot.tail());
            r.vm = Some(boot.vm_run(&group.target, self.settings.accel));
            sink.finished(&t, r);
        }
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
        r
    }

    /// Packs the group's plan, scenarios and programs into an image; its path.
    fn image_for(&self, cells: &[PlannedCell], group: &Group) -> Result<PathBuf, String> {
        let plan = guest_plan(cells, group);
        let mut files = Vec::new();
        for (guest, host) in &plan.1 {
            let text = std::fs::read(host).map_err(|e| format!("{}: {e}", host.display()))?;
            files.push((guest.clone(), text));
        }
        guest_image(&self.settings, &plan.0, files)
    }

    fn boot_and_watch(
        &self,
        cells: &[PlannedCell],
        group: &Group,
        initrd: PathBuf,
        pending: &mut HashMap<(String, usize, u32), PlannedTrial>,
        boot: &mut Boot,
        sink: &dyn TrialSink,
    ) {
        let budgets =
            Budgets::for_group(cells, group, self.settings.accel).overridden(&self.settings);
        let mut on_frame = |frame: &Frame, boot: &Boot| {
            if frame.kind == FrameKind::Record {
                self.deliver(&frame.payload, cells, group, pending, boot, sink);
            }
        };
        let cancel = &self.engine.cancel;
        boot_and_watch(
            &self.settings,
            cancel,
            &group.target,
            initrd,
            &budgets,
            boot,
            &mut on_frame,
        );
    }

    /// A record from the guest, handed on as the host's own would be.
    fn deliver(
        &self,
        payload: &str,
        cells: &[PlannedCell],
        group: &Group,
        pending: &mut HashMap<(String, usize, u32), PlannedTrial>,
        boot: &Boot,
        sink: &dyn TrialSink,
    ) {
        let Ok(record) = serde_json::from_str::<TrialRecord>(payload) else {
            return; // an intact frame of an unreadable record: its trial stays pending.
        };
        let key = (record.scenario.clone(), record.cell_index, record.trial);
        let Some(t) = pending.remove(&key) else {
            return;
        };
        let file = &cells[t.cell].scenario.file;
        let record = delivered(record, file, boot, &group.target, self.settings.accel);
        sink.finished(&t, record);
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
    record.log.push(format!(
        "vm: kernel {} ({}), {} vCPUs, {}, guest up after {:.0} ms, time bounds ×{}",
        target.kernel.name,
        boot.guest_kernel.as_deref().unwrap_or("?"),
        target.cpus,
        accel.name(),
        boot.hello_ms.unwrap_or(0.0),
        target.time_scale
    ));
    for s in &boot.splats {
        record
            .log
            .push(format!("vm: kernel splat during this boot: {s}"));
    }
    record.vm = Some(boot.vm_run(target, accel));
    record
}

/// Boots `target` from `initrd` and reads its console until the guest is done, dies, misses a
/// budget or the run is cancelled; `on_frame` gets every frame but the greeting, kernel
/// messages and the end, which go into `boot`.
pub(crate) fn boot_and_watch(
    settings: &VmSettings,
    cancel: &AtomicBool,
    target: &VmTarget,
    initrd: PathBuf,
    budgets: &Budgets,
    boot: &mut Boot,
    on_frame: &mut dyn FnMut(&Frame, &Boot),
) {
    let config = VmConfig {
        qemu: settings.qemu.clone(),
        kernel: target.kernel.image.clone(),
        initrd,
        cpus: target.cpus,
        memory_mb: settings.memory_mb,
        accel: settings.accel,
        extra_args: Vec::new(),
    };
    let mut vm = match Vm::boot(&config) {
        Ok(vm) => vm,
        Err(e) => {
            boot.cut = Some(format!("cannot start {}: {e}", config.qemu.display()));
            return;
        }
    };
    watch(&mut vm, budgets, cancel, boot, on_frame);
    let (end, stderr) = vm.wait(Instant::now() + Duration::from_secs(10));
    check_end(boot, end, &stderr);
}

/// Reads the console until the guest is done, dies, or misses a budget.
fn watch(
    vm: &mut Vm,
    budgets: &Budgets,
    cancel: &AtomicBool,
    boot: &mut Boot,
    on_frame: &mut dyn FnMut(&Frame, &Boot),
) {
    let mut decoder = Decoder::new();
    let mut deadline = vm.started + budgets.boot;
    while !boot.done && boot.fatal.is_none() {
        if cancel.load(Ordering::SeqCst) {
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
        if boot.take_all(decoder.feed(&bytes), vm.started, on_frame) {
            deadline = Instant::now() + budgets.silence;
        }
    }
    if let Some(Item::Line(l)) = decoder.finish() {
        boot.line(l);
    }
}

/// Handles one console item; true when it was a frame (the guest is alive).
fn take(
    item: Item,
    started: Instant,
    boot: &mut Boot,
    on_frame: &mut dyn FnMut(&Frame, &Boot),
) -> bool {
    let frame = match item {
        Item::Line(line) => {
            boot.line(line);
            return false;
        }
        Item::Frame(f) => f,
    };
    match frame.kind {
        FrameKind::Hello => {
            boot.hello_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
            boot.guest_kernel = serde_json::from_str::<console::Hello>(&frame.payload)
                .ok()
                .map(|h| h.kernel);
        }
        FrameKind::Kmsg => {
            if let Ok(m) = serde_json::from_str::<console::Kmsg>(&frame.payload) {
                boot.line(format!("kernel: {}", m.text));
            }
        }
        FrameKind::Done => boot.done = true,
        FrameKind::Fatal => boot.fatal = Some(frame.payload),
        FrameKind::Record | FrameKind::Probes => on_frame(&frame, boot),
    }
    true
}

/// Packs `plan`, the scenario `files` (guest path, text) and the programs they name (with the
/// base programs) into an image, cached; its path.
pub(crate) fn guest_image(
    settings: &VmSettings,
    plan: &GuestPlan,
    scenario_files: Vec<(String, Vec<u8>)>,
) -> Result<PathBuf, String> {
    let mut files = vec![(
        PLAN_PATH.to_string(),
        serde_json::to_vec(plan).map_err(|e| e.to_string())?,
    )];
    let mut programs: Vec<String> = BASE_PROGRAMS
        .iter()
        .filter(|p| crate::vm::closure::resolve_program(p).is_ok())
        .map(|p| p.to_string())
        .collect();
    for (guest, text) in scenario_files {
        for p in programs_named(&String::from_utf8_lossy(&text)) {
            if !programs.contains(&p) {
                programs.push(p);
            }
        }
        files.push((guest, text));
    }
    let bins = &settings.guest_bins;
    let spec = ImageSpec {
        init: bins.join(GUEST_BINARIES[0]),
        binaries: GUEST_BINARIES.iter().map(|b| bins.join(b)).collect(),
        programs,
        files,
    };
    build_image(&spec, &settings.cache)
        .map(|image| image.path)
        .map_err(|e| e.to_string())
}

/// The guest's plan for `group`, and each scenario's (guest path, host path).
fn guest_plan(cells: &[PlannedCell], group: &Group) -> (GuestPlan, Vec<(String, PathBuf)>) {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut by_cell: BTreeMap<usize, GuestCell> = BTreeMap::new();
    for t in &group.trials {
        let c = &cells[t.cell];
        let host_file = c.scenario.file.clone();
        let index = match files.iter().position(|(_, h)| *h == host_file) {
            Some(i) => i,
            None => {
                let guest = scenario_path(files.len(), &host_file);
                files.push((guest.display().to_string(), host_file));
                files.len() - 1
            }
        };
        by_cell
            .entry(t.cell)
            .or_insert_with(|| GuestCell {
                scenario: index,
                cell_index: c.cell_index,
                expectation: c.expectation.clone(),
                trials: Vec::new(),
                cpus: crate::trial::cpus_wanted(&c.cell),
                resolve_with_probes: c.scenario.uses_probes(),
            })
            .trials
            .push((t.trial, t.seed));
    }
    let plan = GuestPlan {
        probe: false,
        kernel_version: group.target.kernel.version.clone(),
        jobs: group.target.cpus,
        time_scale: group.target.time_scale,
        scenarios: files.iter().map(|(g, _)| g.clone()).collect(),
        cells: by_cell.into_values().collect(),
    };
    (plan, files)
}

/// Programs a scenario's text names as `argv[0]` or `command[0]`, or as the first element of a
/// table axis's argv lists (`runtime = { bwrap = ["bwrap", ...] }`, spliced by `{runtime...}`)
/// (placeholders and wedge's own binaries left out: those are always in the guest).
pub fn programs_named(scenario_text: &str) -> Vec<String> {
    let Ok(value) = scenario_text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let lists = value
        .get("matrix")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(toml::Value::as_table)
        .flat_map(|axis| axis.values());
    for list in lists {
        add_first(list, &mut out);
    }
    collect_programs(&toml::Value::Table(value), &mut out);
    out
}

/// The first string of `list`, when it names a program the guest needs and is not listed yet.
fn add_first(list: &toml::Value, out: &mut Vec<String>) {
    if let Some(first) = list
        .as_array()
        .and_then(|a| a.first())
        .and_then(|f| f.as_str())
        && !first.contains('{')
        && !GUEST_BINARIES.contains(&first)
        && !out.iter().any(|o| o == first)
    {
        out.push(first.to_string());
    }
}

fn collect_programs(v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                if k == "argv" || k == "command" {
                    add_first(v, out);
                }
                collect_programs(v, out);
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|v| collect_programs(v, out)),
        _ => {}
    }
}

/// How long a guest may take: to greet after QEMU starts, and between two frames after that.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Budgets {
    pub(crate) boot: Duration,
    pub(crate) silence: Duration,
}

impl Budgets {
    fn for_group(cells: &[PlannedCell], group: &Group, accel: Accel) -> Budgets {
        let slow = accel.slowdown();
        let longest = group
            .trials
            .iter()
            .map(|t| cells[t.cell].scenario.deadline)
            .max()
            .unwrap_or_default()
            * group.target.time_scale;
        // A record comes at least once per trial: a deadline, its teardown, and slack for a
        // guest that runs `slow` times slower than the host.
        Budgets {
            boot: Duration::from_secs(20 * u64::from(slow)),
            silence: 2 * longest + Duration::from_secs(15 * u64::from(slow)),
        }
    }

    /// These budgets with the settings' overrides (`WEDGE_VM_*_BUDGET_MS`) applied.
    pub(crate) fn overridden(mut self, settings: &VmSettings) -> Budgets {
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
pub(crate) fn unfinished_reason(boot: &Boot, target: &VmTarget, accel: Accel) -> String {
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

    #[test]
    fn programs_are_found_in_argv_and_command_anywhere() {
        let text = r#"
[subject]
kind = "command"
command = ["sh", "-c", "echo hi"]
[[steps]]
do = "spawn"
argv = ["wedge-agent", "exec"]
[[steps]]
do = "spawn"
argv = ["/usr/bin/stress-ng", "--cpu", "1"]
[[steps]]
do = "spawn"
argv = ["{bin_dir}/x"]
"#;
        assert_eq!(programs_named(text), ["sh", "/usr/bin/stress-ng"]);
        assert!(programs_named("not toml [").is_empty());
    }

    #[test]
    fn programs_are_found_first_in_table_axes_lists() {
        let text = r#"
[matrix]
runtime = { bwrap = ["bwrap", "--"], nsjail = ["nsjail", "-Mo", "--"], none = [], own = ["{bin_dir}/x"] }
cpus = [1, 2]
[subject]
kind = "command"
argv = ["{runtime...}", "sh", "-c", "echo hi"]
"#;
        assert_eq!(programs_named(text), ["bwrap", "nsjail"]);
    }

    fn boot_with(lines: &[&str]) -> Boot {
        let mut b = Boot::default();
        for l in lines {
            b.line(l.to_string());
        }
        b
    }

    fn target() -> VmTarget {
        VmTarget {
            kernel: crate::backend::BootKernel {
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
