//! `wedge replay --exact RECORDING`: boot a kept recording again under QEMU's replay, show its
//! console stream and each trial's outcome, and say whether they are the recorded ones, byte for
//! byte (exit 3 when not; 2 when the recording cannot be replayed here at all).

use std::path::Path;

use super::common::{Failure, install_interrupt};
use super::show_record::print_record;
use wedge::engine::trial::Engine;
use wedge::vm::console::{Decoder, Item};
use wedge::vm::error::RecordingError;
use wedge::vm::recording::Recording;
use wedge::vm::replay::{Comparison, compare, replay};

pub fn replay_exact(dir: &Path) -> Result<(), Failure> {
    let recording = Recording::load(dir).map_err(input)?;
    let m = &recording.manifest;
    wedge::outln!(
        "recording {}: kernel {} (sha256 {}), initramfs sha256 {}, {} vCPU, {}",
        dir.display(),
        m.kernel,
        short(&m.kernel_sha256),
        short(&m.initrd_sha256),
        m.cpus,
        m.qemu_version
    );
    wedge::outln!(
        "recorded: {:.1} s wall, {} trials, replay log {} bytes, console {} bytes",
        m.wall_ms / 1000.0,
        m.trials.len(),
        m.log_bytes,
        m.console_bytes
    );
    let qemu = wedge::vm::qemu::find_qemu()
        .ok_or(RecordingError::NoQemu)
        .map_err(input)?;
    let engine = Engine::new();
    install_interrupt(&engine);
    let replayed = replay(&recording, qemu, &engine.cancel).map_err(input)?;
    if engine.cancel.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Failure::Interrupted);
    }
    show_console(&replayed.console);
    for r in &replayed.records {
        wedge::outln!();
        print_record(r);
    }
    if let Some(cut) = &replayed.cut {
        wedge::outln!("\nthe replayed boot ended early: {cut}");
    }
    let recorded_console = recording.console().map_err(input)?;
    let comparison = compare(m, &recorded_console, &replayed);
    wedge::outln!("\nreplayed in {:.1} s wall", replayed.wall_ms / 1000.0);
    verdict(&comparison, &recorded_console, &replayed.console)
}

fn input(e: RecordingError) -> Failure {
    Failure::Input(e.to_string())
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(16)]
}

/// The console lines that are not frames (the kernel's and the guest's own output).
fn show_console(console: &[u8]) {
    let mut decoder = Decoder::new();
    let mut items = decoder.feed(console);
    items.extend(decoder.finish());
    wedge::outln!("console (replayed), frames left out:");
    for item in items {
        if let Item::Line(l) = item {
            wedge::outln!("  {l}");
        }
    }
}

/// Says whether the replay is exact, and where it is not.
fn verdict(c: &Comparison, recorded: &[u8], replayed: &[u8]) -> Result<(), Failure> {
    for (want, got) in &c.trials {
        let what = format!(
            "{} {} trial {} (seed {})",
            want.scenario, want.cell, want.trial, want.seed
        );
        match got {
            Some(got) if got == want => wedge::outln!(
                "same: {what}: {} ({}){}",
                want.verdict.as_str(),
                want.reason,
                if want.diagnosis.is_some() {
                    ", same diagnosis"
                } else {
                    ""
                }
            ),
            Some(got) => wedge::outln!(
                "DIFFERENT: {what}: recorded {} ({}), replayed {} ({}){}",
                want.verdict.as_str(),
                want.reason,
                got.verdict.as_str(),
                got.reason,
                if got.diagnosis != want.diagnosis {
                    "; the diagnoses differ"
                } else {
                    ""
                }
            ),
            None => wedge::outln!("MISSING: {what}: the replay did not report it"),
        }
    }
    if let Some(at) = c.first_difference {
        let around = |b: &[u8]| {
            let from = at.saturating_sub(40).min(b.len());
            String::from_utf8_lossy(&b[from..(at + 40).min(b.len())]).into_owned()
        };
        wedge::outln!(
            "the console streams first differ at byte {at}:\n  recorded: {:?}\n  replayed: {:?}",
            around(recorded),
            around(replayed)
        );
    }
    if c.exact() {
        wedge::outln!(
            "replay: exact — the console stream and every trial's verdict, reason and diagnosis \
             are the recorded ones, byte for byte"
        );
        Ok(())
    } else {
        wedge::outln!("replay: DIVERGED from the recording");
        Err(Failure::Diverged)
    }
}
