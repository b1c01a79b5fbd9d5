//! Recordings of 1-vCPU guest boots under QEMU's record/replay, kept when a trial in them failed
//! or hung, so that `wedge replay --exact` can run the same boot again, instruction for
//! instruction.
//!
//! Guarantees:
//! - A kept recording is a directory that holds everything a replay needs and nothing that names
//!   this machine: the replay log, the kernel and the initramfs the guest booted (hard links into
//!   the cache when it can, copies otherwise), the exact kernel command line, and a manifest
//!   ([`Manifest`]) with their SHA-256s, the QEMU build that recorded it, the console stream and
//!   the verdict and diagnosis of every trial the guest reported.
//! - A recording is complete or absent: it is written under a dot-name and renamed into place
//!   last, and one that is not kept is removed.
//! - [`Manifest::verify`] refuses a recording whose files changed or a QEMU build other than the
//!   recording's (a replay log is only meaningful to the build that wrote it), with the reason.
//!
//! What makes the replay exact is QEMU's own record/replay (`-icount shift=auto,rr=record`): it
//! logs every non-deterministic input of the machine (clocks, interrupts, the serial port's
//! input, random numbers the guest draws), and it refuses more than one vCPU. The guest's whole
//! input otherwise is the kernel, the initramfs (which holds the plan, seeds included) and the
//! command line, all kept here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::RecordingError;
use crate::model::record::{TrialRecord, Verdict};

/// The manifest's file name in a recording.
pub const MANIFEST: &str = "recording.json";
/// QEMU's replay log.
pub const LOG: &str = "replay.rr";
/// The raw console bytes as recorded.
pub const CONSOLE: &str = "console.log";
const KERNEL: &str = "kernel";
const INITRD: &str = "initrd.cpio";
/// The manifest layout this wedge writes and reads.
const FORMAT: u32 = 1;

/// What a recording is of, and what its boot showed. (`Default` for a manifest being filled in:
/// [`Slot::keep`] sets the format, sizes and hashes.)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// `qemu-system-x86_64 --version`'s first line at recording time.
    pub qemu_version: String,
    /// The kernel as the run named it (a `kernels.toml` name or a path).
    pub kernel: String,
    pub kernel_sha256: String,
    pub initrd_sha256: String,
    pub cpus: usize,
    pub memory_mb: u32,
    /// The guest's whole kernel command line.
    pub append: String,
    /// The factor the guest's time bounds were scaled by.
    pub time_scale: u32,
    /// The console stream up to the guest's end ([`stream`]): its length and SHA-256.
    pub console_bytes: u64,
    pub console_sha256: String,
    /// Wall time of the recorded boot, and the guest's own uptime at its end (virtual time).
    pub wall_ms: f64,
    #[serde(default)]
    pub guest_uptime_ms: Option<f64>,
    /// The replay log's size.
    pub log_bytes: u64,
    /// Every trial the guest reported, in the order it did.
    pub trials: Vec<RecordedTrial>,
}

/// One trial's outcome as the guest reported it: what a replay must reproduce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedTrial {
    pub scenario: String,
    pub cell: String,
    pub trial: u32,
    pub seed: u64,
    pub verdict: Verdict,
    pub reason: String,
    /// The diagnosis as JSON (none for a trial that did not hang).
    #[serde(default)]
    pub diagnosis: Option<serde_json::Value>,
}

impl RecordedTrial {
    /// The outcome of the guest's `record`, before the host adds anything to it.
    pub fn of(record: &TrialRecord) -> RecordedTrial {
        RecordedTrial {
            scenario: record.scenario.clone(),
            cell: record.cell.id(),
            trial: record.trial,
            seed: record.seed,
            verdict: record.verdict,
            reason: record.reason.clone(),
            diagnosis: record
                .diagnosis
                .as_ref()
                .and_then(|d| serde_json::to_value(d).ok()),
        }
    }
}

/// Whether a boot whose guest reported `trials` (and left `undelivered` trials without a
/// record) is worth keeping: a trial failed, hung, crashed or could not run.
pub fn worth_keeping(trials: &[RecordedTrial], undelivered: usize) -> bool {
    undelivered > 0
        || trials
            .iter()
            .any(|t| !matches!(t.verdict, Verdict::Pass | Verdict::Skipped))
}

/// The part of a console stream a replay must reproduce: everything up to the end of the
/// guest's `done` frame (what follows it is QEMU winding down, read or not depending on when
/// the host stopped reading), or all of it when there is none.
pub fn stream(console: &[u8]) -> &[u8] {
    let marker = b"@@wedge done ";
    let Some(at) = console.windows(marker.len()).position(|w| w == marker) else {
        return console;
    };
    match console[at..].iter().position(|&b| b == b'\n') {
        Some(nl) => &console[..at + nl + 1],
        None => console,
    }
}

pub use crate::vm::image::sha256;

fn sha256_file(path: &Path) -> Result<String, RecordingError> {
    let bytes = std::fs::read(path).map_err(|e| RecordingError::io(path, e))?;
    Ok(sha256(&bytes))
}

/// A recording in the making: a dot-named directory under the recordings directory.
#[derive(Debug)]
pub struct Slot {
    dir: PathBuf,
}

impl Slot {
    /// A fresh slot under `recordings` (created if needed), unique to this process and `tag`.
    pub fn open(recordings: &Path, tag: &str) -> Result<Slot, RecordingError> {
        let dir = recordings.join(format!(".recording-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| RecordingError::io(&dir, e))?;
        Ok(Slot { dir })
    }

    /// Where QEMU writes the replay log.
    pub fn log(&self) -> PathBuf {
        self.dir.join(LOG)
    }

    /// Completes the recording of a boot of `kernel` and `initrd` that showed `console`, and
    /// moves it to `recordings/<name>` (made unique with a suffix); its final path.
    pub fn keep(
        self,
        mut manifest: Manifest,
        (kernel, initrd): (&Path, &Path),
        console: &[u8],
        name: &str,
    ) -> Result<PathBuf, RecordingError> {
        let log = self.log();
        manifest.format = FORMAT;
        manifest.log_bytes = std::fs::metadata(&log)
            .map_err(|e| RecordingError::io(&log, e))?
            .len();
        let stream = stream(console);
        (manifest.console_bytes, manifest.console_sha256) = (stream.len() as u64, sha256(stream));
        manifest.kernel_sha256 = sha256_file(kernel)?;
        manifest.initrd_sha256 = sha256_file(initrd)?;
        link_or_copy(kernel, &self.dir.join(KERNEL))?;
        link_or_copy(initrd, &self.dir.join(INITRD))?;
        write(&self.dir.join(CONSOLE), console)?;
        let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
        write(&self.dir.join(MANIFEST), &json)?;
        let parent = self
            .dir
            .parent()
            .expect("a slot has a parent")
            .to_path_buf();
        let mut target = parent.join(name);
        for n in 2.. {
            if !target.exists() {
                break;
            }
            target = parent.join(format!("{name}-{n}"));
        }
        // Once renamed, the slot's own path is gone and its drop removes nothing.
        std::fs::rename(&self.dir, &target).map_err(|e| RecordingError::io(&target, e))?;
        Ok(target)
    }
}

impl Drop for Slot {
    /// A recording not kept is removed.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), RecordingError> {
    std::fs::write(path, bytes).map_err(|e| RecordingError::io(path, e))
}

/// A hard link when `from` and `to` share a file system (the cache's files are never rewritten
/// in place, only replaced), else a copy.
fn link_or_copy(from: &Path, to: &Path) -> Result<(), RecordingError> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| RecordingError::io(to, e))
}

/// A kept recording, read back.
#[derive(Debug, Clone)]
pub struct Recording {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Recording {
    /// Reads the recording in `dir`.
    pub fn load(dir: &Path) -> Result<Recording, RecordingError> {
        let path = dir.join(MANIFEST);
        let bytes = std::fs::read(&path).map_err(|e| RecordingError::io(&path, e))?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|source| RecordingError::Manifest { path, source })?;
        if manifest.format != FORMAT {
            return Err(RecordingError::Format {
                dir: dir.to_path_buf(),
                found: manifest.format,
                known: FORMAT,
            });
        }
        Ok(Recording {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    pub fn kernel(&self) -> PathBuf {
        self.dir.join(KERNEL)
    }

    pub fn initrd(&self) -> PathBuf {
        self.dir.join(INITRD)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join(LOG)
    }

    /// The console bytes as recorded.
    pub fn console(&self) -> Result<Vec<u8>, RecordingError> {
        let path = self.dir.join(CONSOLE);
        std::fs::read(&path).map_err(|e| RecordingError::io(&path, e))
    }

    /// Checks that the kernel and initramfs are the recorded ones and that `qemu_version` is the
    /// build that recorded it.
    pub fn verify(&self, qemu_version: &str) -> Result<(), RecordingError> {
        let m = &self.manifest;
        for (path, want) in [
            (self.kernel(), &m.kernel_sha256),
            (self.initrd(), &m.initrd_sha256),
        ] {
            let got = sha256_file(&path)?;
            if &got != want {
                return Err(RecordingError::Altered {
                    path,
                    recorded: want.clone(),
                    found: got,
                });
            }
        }
        std::fs::metadata(self.log()).map_err(|e| RecordingError::io(&self.log(), e))?;
        if qemu_version != m.qemu_version {
            return Err(RecordingError::OtherQemu {
                recorded: m.qemu_version.clone(),
                here: qemu_version.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(verdict: Verdict) -> RecordedTrial {
        RecordedTrial {
            scenario: "s".into(),
            cell: "variant=pre-fix".into(),
            trial: 0,
            seed: 1,
            verdict,
            reason: "r".into(),
            diagnosis: None,
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            qemu_version: "QEMU emulator version 7.2.22".into(),
            kernel: "6.1".into(),
            cpus: 1,
            trials: vec![trial(Verdict::Hang)],
            ..Manifest::default()
        }
    }

    #[test]
    fn only_boots_with_a_failing_hanging_or_lost_trial_are_kept() {
        assert!(!worth_keeping(&[trial(Verdict::Pass)], 0));
        assert!(!worth_keeping(&[], 0));
        for v in [Verdict::Fail, Verdict::Hang, Verdict::Crash, Verdict::Error] {
            assert!(worth_keeping(&[trial(Verdict::Pass), trial(v)], 0), "{v:?}");
        }
        assert!(worth_keeping(&[trial(Verdict::Pass)], 1));
    }

    #[test]
    fn the_compared_stream_ends_with_the_done_frame() {
        let c = b"boot\n@@wedge done 12 ab {}\nreboot: Power down\n";
        assert_eq!(stream(c), b"boot\n@@wedge done 12 ab {}\n");
        assert_eq!(stream(b"boot\nno end"), b"boot\nno end");
        assert_eq!(stream(b"x @@wedge done 1"), b"x @@wedge done 1");
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wedge-rec-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_kept_recording_reads_back_and_refuses_changes_and_other_qemus() {
        let base = temp("keep");
        let (kernel, initrd) = (base.join("vmlinuz"), base.join("image.cpio"));
        std::fs::write(&kernel, b"kernel bytes").unwrap();
        std::fs::write(&initrd, b"initrd bytes").unwrap();
        let recordings = base.join("recordings");
        let slot = Slot::open(&recordings, "g0").unwrap();
        std::fs::write(slot.log(), b"rr log").unwrap();
        let console = b"hello\n@@wedge done 1 2 {}\ntail\n";
        let kept = slot
            .keep(manifest(), (&kernel, &initrd), console, "6.1-1")
            .unwrap();
        assert_eq!(kept, recordings.join("6.1-1"));
        // Only the kept directory is left: no slot under its dot-name.
        let names: Vec<_> = std::fs::read_dir(&recordings).unwrap().collect();
        assert_eq!(names.len(), 1);
        let r = Recording::load(&kept).unwrap();
        assert_eq!(r.manifest.format, FORMAT);
        assert_eq!(r.manifest.log_bytes, 6);
        assert_eq!(r.manifest.console_bytes, stream(console).len() as u64);
        assert_eq!(r.manifest.kernel_sha256, sha256(b"kernel bytes"));
        assert_eq!(r.console().unwrap(), console);
        r.verify("QEMU emulator version 7.2.22").unwrap();
        let other = r.verify("QEMU emulator version 9.2.0").unwrap_err();
        assert!(other.to_string().contains("9.2.0"), "{other}");
        // A second recording of the same name gets a suffix.
        let slot = Slot::open(&recordings, "g1").unwrap();
        std::fs::write(slot.log(), b"x").unwrap();
        let second = slot.keep(manifest(), (&kernel, &initrd), b"", "6.1-1");
        assert_eq!(second.unwrap(), recordings.join("6.1-1-2"));
        // A changed initramfs is refused, naming the file.
        std::fs::remove_file(r.initrd()).unwrap();
        std::fs::write(r.initrd(), b"other bytes").unwrap();
        let altered = r.verify("QEMU emulator version 7.2.22").unwrap_err();
        assert!(
            matches!(altered, RecordingError::Altered { .. }),
            "{altered}"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_slot_not_kept_leaves_nothing() {
        let base = temp("drop");
        let slot = Slot::open(&base, "g").unwrap();
        std::fs::write(slot.log(), b"rr").unwrap();
        drop(slot);
        assert_eq!(std::fs::read_dir(&base).unwrap().count(), 0);
        std::fs::remove_dir_all(&base).unwrap();
        let missing = Recording::load(&base).unwrap_err();
        assert!(missing.to_string().contains(MANIFEST), "{missing}");
    }
}
