//! A kept recording ([`super::recording`]) booted again under QEMU's replay, and compared with
//! what was recorded: the console stream byte for byte, and each trial's verdict, reason and
//! diagnosis.
//!
//! Guarantees:
//! - Nothing is replayed before the recording is verified (its files unchanged, the same QEMU
//!   build); a mismatch is an error that says which.
//! - The replay always ends: the guest's own end, or a budget of three times the recorded wall
//!   time plus a minute (a replay that diverged can stall where the log no longer matches).
//! - The comparison is pure: [`compare`] takes the recorded and the replayed observations.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::boot::{Boot, BootConfig, Budgets, boot_and_watch};
use super::console::{Frame, FrameKind};
use super::error::RecordingError;
use super::qemu::{Accel, Icount, qemu_version};
use super::recording::{Manifest, RecordedTrial, Recording, sha256, stream};
use super::support::VmSettings;
use crate::model::record::TrialRecord;
use crate::plan::backend::{BootKernel, VmTarget};

/// What the replayed boot showed.
#[derive(Debug)]
pub struct Replayed {
    /// Every console byte.
    pub console: Vec<u8>,
    /// The guest's records, in the order it sent them.
    pub records: Vec<TrialRecord>,
    /// Why the boot ended without the guest's end, if it did.
    pub cut: Option<String>,
    pub wall_ms: f64,
    /// The guest's last console lines.
    pub tail: Vec<String>,
}

/// Replays `recording` with the QEMU at `qemu`.
pub fn replay(
    recording: &Recording,
    qemu: PathBuf,
    cancel: &AtomicBool,
) -> Result<Replayed, RecordingError> {
    let version = qemu_version(&qemu).map_err(|e| RecordingError::io(&qemu, e))?;
    recording.verify(&version)?;
    let m = &recording.manifest;
    let settings = VmSettings {
        qemu,
        accel: Accel::Tcg,
        guest_bins: PathBuf::new(),
        cache: PathBuf::new(),
        memory_mb: m.memory_mb,
        boot_budget: None,
        silence_budget: None,
        record: None,
    };
    let target = VmTarget {
        kernel: BootKernel {
            name: m.kernel.clone(),
            image: recording.kernel(),
            release: String::new(),
            version: String::new(),
        },
        cpus: m.cpus,
        time_scale: m.time_scale,
    };
    let budget = Duration::from_secs_f64(3.0 * m.wall_ms / 1000.0) + Duration::from_secs(60);
    let config = BootConfig {
        settings: &settings,
        target: &target,
        initrd: recording.initrd(),
        budgets: Budgets {
            boot: budget,
            silence: budget,
        },
        cancel,
        icount: Some(Icount::Replay(recording.log())),
        fixed_append: Some(m.append.clone()),
        capture: true,
    };
    let mut records = Vec::new();
    let mut on_frame = |frame: &Frame, _: &Boot| {
        if frame.kind == FrameKind::Record
            && let Ok(r) = serde_json::from_str::<TrialRecord>(&frame.payload)
        {
            records.push(r);
        }
    };
    let started = Instant::now();
    let mut boot = Boot::default();
    boot_and_watch(&config, &mut boot, &mut on_frame);
    Ok(Replayed {
        console: boot.console.take().unwrap_or_default(),
        records,
        cut: boot.cut.clone(),
        wall_ms: started.elapsed().as_secs_f64() * 1000.0,
        tail: boot.tail(),
    })
}

/// How a replay compares with its recording.
#[derive(Debug, PartialEq)]
pub struct Comparison {
    /// The console stream up to the guest's end is the recorded one, byte for byte.
    pub same_stream: bool,
    /// Where the streams first differ (a byte offset), when they do.
    pub first_difference: Option<usize>,
    /// Each recorded trial and what the replay reported for it (none: not reported).
    pub trials: Vec<(RecordedTrial, Option<RecordedTrial>)>,
}

impl Comparison {
    /// Identical stream, and every trial reported again with the same outcome.
    pub fn exact(&self) -> bool {
        self.same_stream && self.trials.iter().all(|(a, b)| b.as_ref() == Some(a))
    }
}

/// Compares the replay with the recording's `manifest` and its recorded console bytes.
pub fn compare(manifest: &Manifest, recorded_console: &[u8], replayed: &Replayed) -> Comparison {
    let again = stream(&replayed.console);
    let same_stream =
        again.len() as u64 == manifest.console_bytes && sha256(again) == manifest.console_sha256;
    let before = stream(recorded_console);
    let first_difference = (!same_stream).then(|| {
        before
            .iter()
            .zip(again)
            .position(|(a, b)| a != b)
            .unwrap_or(before.len().min(again.len()))
    });
    let trials = manifest
        .trials
        .iter()
        .map(|t| {
            let found = replayed
                .records
                .iter()
                .map(RecordedTrial::of)
                .find(|r| (&r.scenario, &r.cell, r.trial) == (&t.scenario, &t.cell, t.trial));
            (t.clone(), found)
        })
        .collect();
    Comparison {
        same_stream,
        first_difference,
        trials,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::Verdict;

    fn manifest(console: &[u8], trials: Vec<RecordedTrial>) -> Manifest {
        let s = stream(console);
        Manifest {
            console_bytes: s.len() as u64,
            console_sha256: sha256(s),
            trials,
            ..Manifest::default()
        }
    }

    fn replayed(console: &[u8], records: Vec<TrialRecord>) -> Replayed {
        Replayed {
            console: console.to_vec(),
            records,
            cut: None,
            wall_ms: 1.0,
            tail: Vec::new(),
        }
    }

    fn record(verdict: Verdict) -> TrialRecord {
        let s = crate::model::scenario::Scenario::parse(
            std::path::Path::new("s.toml"),
            "[subject]\nkind = \"command\"\nargv = [\"true\"]\n",
        )
        .unwrap();
        let cell = crate::model::cell::Cell::new(vec![("variant".into(), "pre-fix".into())]);
        TrialRecord::sample(&s, cell, verdict, false)
    }

    #[test]
    fn the_same_stream_and_outcomes_are_exact_and_what_follows_the_end_is_ignored() {
        let console = b"boot\n@@wedge done 1 2 {}\n";
        let r = record(Verdict::Hang);
        let m = manifest(console, vec![RecordedTrial::of(&r)]);
        let mut later = console.to_vec();
        later.extend_from_slice(b"reboot: Power down\n");
        let c = compare(&m, console, &replayed(&later, vec![r.clone()]));
        assert!(c.exact(), "{c:?}");
        assert_eq!(c.first_difference, None);
    }

    #[test]
    fn a_different_byte_or_outcome_is_found() {
        let console = b"boot\n@@wedge done 1 2 {}\n";
        let r = record(Verdict::Hang);
        let m = manifest(console, vec![RecordedTrial::of(&r)]);
        let c = compare(
            &m,
            console,
            &replayed(b"boat\n@@wedge done 1 2 {}\n", vec![r]),
        );
        assert!(!c.exact());
        assert_eq!(c.first_difference, Some(2));
        // Same bytes (say, a torn record frame), but the trial's outcome differs.
        let c = compare(&m, console, &replayed(console, vec![record(Verdict::Pass)]));
        assert!(c.same_stream && !c.exact());
        // A replay that stops early differs where it stops.
        let c = compare(&m, console, &replayed(b"boot\n", vec![]));
        assert_eq!((c.first_difference, c.trials[0].1.clone()), (Some(5), None));
    }
}
