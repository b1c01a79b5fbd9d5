//! Snapshot tests of every renderer (summary.md, summary.json, junit.xml, index.html) over a fixed
//! set of records, and the stats/gate they show. Timings in the records are fixed values.

use wedge::engine::monitor::{Diagnosis, ProcessDiag, ThreadDiag};
use wedge::model::cell::Cell;
use wedge::model::record::{ExitInfo, Host, TrialRecord, Verdict};
use wedge::model::scenario::{ExitSpec, Expectation, Outcome};

fn cell(pairs: &[(&str, &str)]) -> Cell {
    Cell::new(
        pairs
            .iter()
            .map(|(a, v)| (a.to_string(), v.to_string()))
            .collect(),
    )
}

fn expect_exit() -> Expectation {
    Expectation {
        outcome: Outcome::Exit,
        exit: Some(ExitSpec::Code(0)),
        within_ms: Some(5000),
        stdout: None,
        stderr: None,
        stderr_forbid: None,
        diagnosis: None,
        diagnosis_regex: None,
        hang_class: None,
        min_rate: None,
        allow_lingering: false,
        allow_leftover_processes: Vec::new(),
        allow_leftover_paths: Vec::new(),
    }
}

fn expect_hang() -> Expectation {
    Expectation {
        outcome: Outcome::Hang,
        exit: None,
        within_ms: None,
        stdout: None,
        stderr: None,
        stderr_forbid: None,
        diagnosis: Some("supervisor thread blocked in ioctl(SECCOMP_IOCTL_NOTIF_RECV)".into()),
        diagnosis_regex: None,
        hang_class: None,
        min_rate: None,
        allow_lingering: false,
        allow_leftover_processes: Vec::new(),
        allow_leftover_paths: Vec::new(),
    }
}

fn diagnosis(pid: i32) -> Diagnosis {
    let threads = vec![
        ThreadDiag {
            tid: pid,
            name: "wedge-run".into(),
            main: true,
            state: "sleeping".into(),
            call: Some("wait4".into()),
            detail: Some("wait4(pid -1)".into()),
            wchan: Some("do_wait".into()),
            kernel_stack: vec![],
            for_ms: 1000,
            wakes_in_ms: None,
            wake: None,
            running: false,
        },
        ThreadDiag {
            tid: pid + 1,
            name: "supervisor".into(),
            main: false,
            state: "sleeping".into(),
            call: Some("ioctl(SECCOMP_IOCTL_NOTIF_RECV)".into()),
            detail: Some("ioctl(fd 5, SECCOMP_IOCTL_NOTIF_RECV)".into()),
            wchan: Some("recv_wait_event".into()),
            kernel_stack: vec!["recv_wait_event+0xda/0xf0".into()],
            for_ms: 1000,
            wakes_in_ms: None,
            wake: None,
            running: false,
        },
    ];
    let processes = vec![ProcessDiag {
        pid,
        ppid: 1,
        name: "wedge-run".into(),
        cmdline: vec!["wedge-run".into(), "--variant".into(), "pre-fix".into()],
        state: "sleeping".into(),
        threads,
    }];
    Diagnosis {
        reason: "quiescent for 1000 ms".into(),
        summary: wedge::engine::monitor::summarize(&processes),
        processes,
        ..Diagnosis::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn record(
    scenario: &str,
    c: Cell,
    cell_index: usize,
    trial: u32,
    verdict: Verdict,
    met: bool,
    expectation: Expectation,
    ms: f64,
) -> TrialRecord {
    TrialRecord {
        scenario: scenario.into(),
        file: format!("scenarios/{scenario}.toml"),
        cell: c,
        cell_index,
        trial,
        seed: 1000 + u64::from(trial),
        trial_id: format!("1-{trial}"),
        verdict,
        met,
        loss: None,
        reason: match verdict {
            Verdict::Pass => "ended with exit 0".into(),
            Verdict::Fail => "ended with exit 1, expected exit 0".into(),
            Verdict::Hang => "quiescent for 1000 ms".into(),
            Verdict::Skipped => {
                "cell asks for 4 CPUs but this host has 2; the VM backend runs such cells".into()
            }
            _ => "other".into(),
        },
        expectation,
        exit: match verdict {
            Verdict::Pass => Some(ExitInfo {
                code: Some(0),
                signal: None,
            }),
            Verdict::Fail => Some(ExitInfo {
                code: Some(1),
                signal: None,
            }),
            _ => None,
        },
        time_to_verdict_ms: ms,
        started_at: "2026-01-01T00:00:00.000Z".into(),
        diagnosis: (verdict == Verdict::Hang).then(|| diagnosis(100 + trial as i32)),
        leaks: vec![],
        lingering: vec![],
        cpus: None,
        log: vec![],
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        spawned: Vec::new(),
        host: Host {
            kernel: "6.18.44".into(),
            cpus: 2,
            isolation: "cgroup2".into(),
            backend: "host".into(),
            accel: None,
        },
        wedge_version: "0.1.0".into(),
        shard: None,
        vm: None,
    }
}

fn records() -> Vec<TrialRecord> {
    let mut out = Vec::new();
    let mut index = 0;
    for variant in ["fixed", "pre-fix"] {
        for cpus in ["1", "2", "4"] {
            let c = cell(&[("variant", variant), ("cpus", cpus)]);
            if cpus == "4" {
                let e = if variant == "fixed" {
                    expect_exit()
                } else {
                    expect_hang()
                };
                out.push(record(
                    "close-doesnt-wake",
                    c,
                    index,
                    0,
                    Verdict::Skipped,
                    false,
                    e,
                    0.0,
                ));
            } else {
                for t in 0..10 {
                    let ms = 20.0 + f64::from(t) * 3.5;
                    out.push(if variant == "fixed" {
                        record(
                            "close-doesnt-wake",
                            c.clone(),
                            index,
                            t,
                            Verdict::Pass,
                            true,
                            expect_exit(),
                            ms,
                        )
                    } else {
                        record(
                            "close-doesnt-wake",
                            c.clone(),
                            index,
                            t,
                            Verdict::Hang,
                            true,
                            expect_hang(),
                            1000.0 + ms,
                        )
                    });
                }
            }
            index += 1;
        }
    }
    // A strategy comparison where one strategy fails half its trials.
    for (i, strategy) in ["inline", "zygote"].into_iter().enumerate() {
        let c = cell(&[("strategy", strategy)]);
        for t in 0..20 {
            let fail = strategy == "inline" && t % 2 == 0;
            let (v, met) = if fail {
                (Verdict::Fail, false)
            } else {
                (Verdict::Pass, true)
            };
            let mut e = expect_exit();
            e.min_rate = Some(0.8);
            out.push(record(
                "exec-pass-rate",
                c.clone(),
                i,
                t,
                v,
                met,
                e,
                50.0 + f64::from(t),
            ));
        }
    }
    out
}

#[test]
fn summary_markdown() {
    let s = wedge::report::stats::summarize(&records());
    insta::assert_snapshot!("summary_md", wedge::report::markdown::render(&s));
}

#[test]
fn summary_json() {
    let s = wedge::report::stats::summarize(&records());
    insta::assert_snapshot!("summary_json", serde_json::to_string_pretty(&s).unwrap());
}

#[test]
fn junit_xml() {
    let s = wedge::report::stats::summarize(&records());
    insta::assert_snapshot!("junit_xml", wedge::report::junit::render(&s).unwrap());
}

#[test]
fn index_html() {
    let s = wedge::report::stats::summarize(&records());
    insta::assert_snapshot!("index_html", wedge::report::html::render(&s));
}

#[test]
fn stats_and_gate_of_the_fixture() {
    let s = wedge::report::stats::summarize(&records());
    assert_eq!(s.trials, 80);
    let pre_fix = s
        .cells
        .iter()
        .find(|c| c.cell_id == "variant=pre-fix,cpus=1")
        .unwrap();
    assert_eq!((pre_fix.trials, pre_fix.hangs, pre_fix.met), (10, 10, 10));
    assert_eq!(pre_fix.rate_word(), "caught");
    assert_eq!(
        pre_fix.top_diagnosis.as_ref().unwrap().1,
        10,
        "pids are normalized before grouping"
    );
    let skipped = s
        .cells
        .iter()
        .find(|c| c.cell_id == "variant=fixed,cpus=4")
        .unwrap();
    assert!(skipped.skipped.is_some());
    let failures = wedge::report::gate::evaluate(&s);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].cell, "strategy=inline");
    assert!(
        failures[0].reason.contains("below the threshold 80.0%"),
        "{}",
        failures[0].reason
    );
    let cmp = s.comparisons.iter().find(|c| c.axis == "strategy").unwrap();
    assert!(cmp.significant, "{cmp:?}");
    let same_cpus = s
        .comparisons
        .iter()
        .find(|c| c.a == "variant=fixed,cpus=1" && c.b == "variant=fixed,cpus=2")
        .unwrap();
    assert!(!same_cpus.significant);
}

#[test]
fn trials_jsonl_round_trips_and_survives_a_torn_line() {
    let dir = std::env::temp_dir().join(format!("wedge-reports-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("trials.jsonl");
    let rs = records();
    {
        let mut w = wedge::model::record::JsonlWriter::open(&path).unwrap();
        for r in &rs {
            w.append(r).unwrap();
        }
    }
    // A crash mid-write leaves a partial last line.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"scenario\": \"torn");
    std::fs::write(&path, &text).unwrap();
    let back = wedge::model::record::read_jsonl(&path).unwrap();
    assert_eq!(back, rs);
    // A bad line in the middle is an error with its line number.
    let lines: Vec<&str> = text.lines().collect();
    let mut broken = lines[..3].join("\n");
    broken.push_str("\nnot json\n");
    broken.push_str(&lines[3..lines.len() - 1].join("\n"));
    std::fs::write(&path, broken).unwrap();
    let err = wedge::model::record::read_jsonl(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("trials.jsonl:4:"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_skipped_cell_fails_the_gate_unless_skips_are_allowed() {
    use wedge::report::gate::{GatePolicy, gate};
    let records = records();
    let s = wedge::report::stats::summarize(&records);
    let strict = gate(&s, &records, GatePolicy::default());
    let skipped: Vec<_> = strict
        .iter()
        .filter(|f| f.reason.starts_with("skipped"))
        .collect();
    assert_eq!(skipped.len(), 2, "both cpus=4 cells: {strict:?}");
    assert!(skipped[0].reason.contains("--allow-skipped"));
    let lenient = gate(
        &s,
        &records,
        GatePolicy {
            allow_skipped: true,
        },
    );
    assert_eq!(
        lenient,
        wedge::report::gate::evaluate(&s),
        "only the real miss is left"
    );
}

#[test]
fn a_rate_gate_needs_twenty_trials() {
    let few: Vec<TrialRecord> = records()
        .into_iter()
        .filter(|r| r.scenario == "exec-pass-rate" && r.trial < 19)
        .collect();
    let s = wedge::report::stats::summarize(&few);
    let zygote = s
        .cells
        .iter()
        .find(|c| c.cell_id == "strategy=zygote")
        .unwrap();
    let why = wedge::report::gate::check_cell(zygote).expect("19 trials cannot gate a rate");
    assert!(
        why.contains("19 trials cannot gate a rate (at least 20)"),
        "{why}"
    );
    let all = records();
    let s = wedge::report::stats::summarize(&all);
    let zygote = s
        .cells
        .iter()
        .find(|c| c.cell_id == "strategy=zygote")
        .unwrap();
    assert_eq!(
        wedge::report::gate::check_cell(zygote),
        None,
        "20/20 passes"
    );
}

#[test]
fn merged_shards_must_all_be_there() {
    use wedge::model::record::ShardMark;
    let mut records = records();
    // Two shards of an 8-cell plan: cells alternate between them.
    for r in &mut records {
        r.shard = Some(ShardMark {
            index: 1 + r.cell_index % 2,
            count: 2,
            plan_cells: 8,
        });
    }
    assert_eq!(wedge::report::gate::missing_shards(&records), vec![]);
    let only_first: Vec<TrialRecord> = records
        .iter()
        .filter(|r| r.shard.unwrap().index == 1)
        .cloned()
        .collect();
    let missing = wedge::report::gate::missing_shards(&only_first);
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(
        missing[0].reason.contains("shard 2/2 missing"),
        "{missing:?}"
    );
    let mut short = records.clone();
    for r in &mut short {
        r.shard = r.shard.map(|s| ShardMark { plan_cells: 9, ..s });
    }
    let missing = wedge::report::gate::missing_shards(&short);
    assert!(
        missing[0].reason.contains("hold 8 of the plan's 9 cells"),
        "{missing:?}"
    );
}

#[test]
fn a_measured_only_cell_shows_its_rate_and_its_hangs_not_a_tick() {
    let c = cell(&[("strategy", "inline")]);
    let mut any = expect_exit();
    any.outcome = wedge::model::scenario::Outcome::Any;
    let records: Vec<TrialRecord> = (0..4)
        .map(|t| {
            let v = if t == 0 { Verdict::Hang } else { Verdict::Pass };
            record("measured", c.clone(), 0, t, v, true, any.clone(), 10.0)
        })
        .collect();
    let s = wedge::report::stats::summarize(&records);
    let text = wedge::report::format::cell_text(&s.cells[0]);
    assert!(!text.contains('✅'), "{text}");
    assert!(text.contains("measured: passed 3/4"), "{text}");
    assert!(text.contains("1 hung"), "{text}");
}

#[test]
fn kernel_splats_from_a_vm_are_reported_even_when_every_trial_passed() {
    let mut rs = records();
    let splat = "WARNING: WARNING: CPU: 1 PID: 77 at kernel/sched/core.c:123";
    for r in rs.iter_mut().filter(|r| r.met) {
        r.vm = Some(wedge::model::record::VmRun {
            splats: vec![splat.to_string()],
            ..Default::default()
        });
    }
    let s = wedge::report::stats::summarize(&rs);
    let with: Vec<_> = s
        .cells
        .iter()
        .filter(|c| !c.kernel_splats.is_empty())
        .collect();
    assert!(!with.is_empty());
    assert!(
        with.iter().all(|c| c.kernel_splats == [splat]),
        "distinct, once"
    );
    let md = wedge::report::markdown::render(&s);
    assert!(
        md.contains(&format!("⚠ kernel splat in its VM: {splat}")),
        "{md}"
    );
}

/// The committed reports were written when every matrix value was a string (`"cpus": "1"`):
/// they still read, their cells are the cells a typed matrix makes, and re-rendering them keeps
/// writing what they hold.
#[test]
fn committed_summaries_with_string_values_still_read() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../reports/vcpu/summary.json");
    let text = std::fs::read_to_string(path).unwrap();
    let s: wedge::report::stats::Summary = serde_json::from_str(&text).unwrap();
    let cell = &s.cells[0].cell;
    assert_eq!(cell.get("cpus"), Some("1"), "{cell}");
    let filter: wedge::model::cell::CellFilter = "cpus=1".parse().unwrap();
    assert!(cell.matches(&[filter]));
    let mut typed = Cell::default();
    for (axis, value) in cell.pairs() {
        let kind = if value.parse::<i64>().is_ok() {
            wedge::model::cell::ValueKind::Integer
        } else {
            wedge::model::cell::ValueKind::String
        };
        typed.push_typed(axis, value, kind);
    }
    assert_eq!(&typed, cell, "a typed cell is the same cell");
    let json = serde_json::to_value(&typed).unwrap();
    assert_eq!(json["cpus"], serde_json::json!(1), "{json}");
    let again = serde_json::to_value(cell).unwrap();
    assert_eq!(again["cpus"], serde_json::json!("1"), "{again}");
}

/// A measured cell (`outcome = "any"`) whose lost trials carry classes, as the engine writes
/// them for a scenario with `[[classify]]`: pass, pass, then hang/fork, fail/cwd race twice,
/// fail/other; and a gated cell with one lost trial.
fn classified(seed: u64) -> Vec<TrialRecord> {
    let mut any = expect_exit();
    any.outcome = wedge::model::scenario::Outcome::Any;
    let losses = [
        (Verdict::Pass, None),
        (Verdict::Pass, None),
        (Verdict::Hang, Some("fork-while-locked")),
        (Verdict::Fail, Some("cwd race")),
        (Verdict::Fail, Some("cwd race")),
        (Verdict::Fail, Some("other")),
    ];
    let mut out: Vec<TrialRecord> = losses
        .iter()
        .enumerate()
        .map(|(t, (v, loss))| {
            let c = cell(&[("strategy", "inline")]);
            // Measured: `met` holds for a fail too; the rate counts passes.
            let mut r = record("pass-rate", c, 0, t as u32, *v, true, any.clone(), 10.0);
            r.seed = seed + t as u64;
            r.loss = loss.map(str::to_string);
            r
        })
        .collect();
    for t in 0..3 {
        let c = cell(&[("strategy", "zygote")]);
        let lost = t == 0;
        let v = if lost { Verdict::Fail } else { Verdict::Pass };
        let mut r = record("pass-rate", c, 1, t, v, !lost, expect_exit(), 10.0);
        r.loss = lost.then(|| "starvation".to_string());
        out.push(r);
    }
    out
}

#[test]
fn lost_trials_are_counted_by_class_and_merged_results_sum_them() {
    use std::collections::BTreeMap;
    let counts = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    };
    let s = wedge::report::stats::summarize(&classified(1));
    assert_eq!(
        s.cells[0].losses,
        counts(&[("cwd race", 2), ("fork-while-locked", 1), ("other", 1)])
    );
    assert_eq!(s.cells[1].losses, counts(&[("starvation", 1)]));
    let md = wedge::report::markdown::render(&s);
    let table = "Lost trials by class:\n\n\
                 | cell | lost | cwd race | fork-while-locked | starvation | other |\n\
                 |---|---|---|---|---|---|\n\
                 | strategy=inline | 4 | 2 | 1 | 0 | 1 |\n\
                 | strategy=zygote | 1 | 0 | 0 | 1 | 0 |\n";
    assert!(md.contains(table), "{md}");
    // After the pass-rate table, before the per-cell one.
    let at = md.find("Lost trials by class").unwrap();
    assert!(md.find("measured: passed 2/6").unwrap() < at, "{md}");
    assert!(at < md.find("| cell | expectation |").unwrap(), "{md}");
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["cells"][0]["losses"]["cwd race"], 2, "{json}");
    assert_eq!(json["cells"][1]["losses"]["starvation"], 1, "{json}");

    // `wedge report A B --out C`: the records of both result directories, summed. A lost
    // record written before classes counts as unclassified beside them.
    let dir = std::env::temp_dir().join(format!("wedge-losses-{}", std::process::id()));
    let mut all = Vec::new();
    for (i, seed) in [1, 100].into_iter().enumerate() {
        let path = dir.join(format!("r{i}/trials.jsonl"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut w = wedge::model::record::JsonlWriter::open(&path).unwrap();
        for r in classified(seed) {
            w.append(&r).unwrap();
        }
        all.extend(wedge::model::record::read_jsonl(&path).unwrap());
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let mut old = classified(7).remove(3);
    old.loss = None;
    all.push(old);
    let merged = wedge::report::stats::summarize(&all);
    assert_eq!(
        merged.cells[0].losses,
        counts(&[
            ("cwd race", 4),
            ("fork-while-locked", 2),
            ("other", 2),
            ("unclassified", 1)
        ])
    );
    let md = wedge::report::markdown::render(&merged);
    assert!(
        md.contains("| strategy=inline | 9 | 4 | 2 | 0 | 2 | 1 |"),
        "{md}"
    );
    assert!(md.contains("| starvation | other | unclassified |"), "{md}");

    // Records without classes (a scenario with no [[classify]]) add nothing.
    let plain = wedge::report::stats::summarize(&records());
    assert!(plain.cells.iter().all(|c| c.losses.is_empty()));
    assert!(!wedge::report::markdown::render(&plain).contains("Lost trials"));
    assert!(!serde_json::to_string(&plain).unwrap().contains("losses"));
}

#[test]
fn records_without_a_loss_field_still_read() {
    let mut r = classified(1).remove(3);
    let mut line = serde_json::to_value(&r).unwrap();
    line.as_object_mut().unwrap().remove("loss");
    let back: TrialRecord = serde_json::from_value(line).unwrap();
    r.loss = None;
    assert_eq!(back, r);
}
