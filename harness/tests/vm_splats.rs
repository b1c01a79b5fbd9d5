//! A kernel splat during a *passing* VM trial reaches the summary and the report: a recorded
//! guest console (greeting, a forwarded kernel warning, the trial's record, the end) goes through
//! the host's console handling and record delivery, as a boot's stream does, with no QEMU.

use std::path::Path;
use std::time::Instant;

use wedge::exec::vm::delivered;
use wedge::model::record::{TrialRecord, Verdict};
use wedge::model::scenario::Scenario;
use wedge::plan::backend::{BootKernel, VmTarget};
use wedge::vm::boot::Boot;
use wedge::vm::console::{Decoder, FrameKind, encode};
use wedge::vm::qemu::Accel;

const WARNING: &str = "WARNING: CPU: 0 PID: 42 at kernel/sched/core.c:123 splat_here+0x1/0x2";

/// The record a guest sends for a passing trial, as JSON (what the guest's serde writes).
fn guest_record() -> String {
    let s = Scenario::parse(
        Path::new("splat.toml"),
        "[subject]\nkind = \"command\"\nargv = [\"true\"]\n",
    )
    .unwrap();
    let expectation = s.expectation(&s.cells()[0], "6.1.192");
    serde_json::json!({
        "scenario": "splat", "file": "/wedge/scenarios/0/splat.toml", "cell": {},
        "cell_index": 0, "trial": 0, "seed": 7, "verdict": "pass", "met": true,
        "reason": "ended with exit 0", "expectation": expectation,
        "time_to_verdict_ms": 12.0, "started_at": "2026-01-01T00:00:00.000Z",
        "host": {"kernel": "6.1.0-57-cloud-amd64", "cpus": 1, "isolation": "cgroup2",
                 "backend": "vm"},
        "wedge_version": "0.1.0"
    })
    .to_string()
}

/// The console of a boot whose kernel warned before the trial's record went out.
fn console() -> String {
    let hello = r#"{"kernel":"6.1.0-57-cloud-amd64","cpus":1,"wedge_version":"0.1.0"}"#;
    let kmsg = serde_json::json!({ "level": 4, "text": WARNING }).to_string();
    [
        "Run /init as init process\n".to_string(),
        encode(FrameKind::Hello, hello),
        encode(FrameKind::Kmsg, &kmsg),
        encode(FrameKind::Record, &guest_record()),
        encode(FrameKind::Done, r#"{"trials":1}"#),
    ]
    .concat()
}

fn target() -> VmTarget {
    VmTarget {
        kernel: BootKernel {
            name: "6.1".into(),
            image: "/k".into(),
            release: "6.1.0-57-cloud-amd64".into(),
            version: "6.1.192".into(),
        },
        cpus: 1,
        time_scale: 1,
    }
}

#[test]
fn a_splat_during_a_passing_vm_trial_reaches_the_summary() {
    let mut boot = Boot::default();
    let mut records: Vec<TrialRecord> = Vec::new();
    let mut decoder = Decoder::new();
    let items = decoder.feed(console().as_bytes());
    let host_file = Path::new("/repo/scenarios/splat.toml");
    boot.take_all(items, Instant::now(), &mut |frame, boot| {
        if frame.kind == FrameKind::Record {
            let r: TrialRecord = serde_json::from_str(&frame.payload).unwrap();
            records.push(delivered(r, host_file, boot, &target(), Accel::Tcg));
        }
    });
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].verdict, Verdict::Pass);
    assert_eq!(records[0].file, "/repo/scenarios/splat.toml");
    let summary = wedge::report::stats::summarize(&records);
    let splats = &summary.cells[0].kernel_splats;
    assert_eq!(splats.len(), 1, "{splats:?}");
    assert!(splats[0].contains(WARNING), "{splats:?}");
    let md = wedge::report::markdown::render(&summary);
    assert!(md.contains("⚠ kernel splat in its VM"), "{md}");
    assert!(md.contains(WARNING), "{md}");
}
