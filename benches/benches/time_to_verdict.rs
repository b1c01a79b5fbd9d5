//! Time to verdict per main cell, a pass and a caught hang each: what a user waits for one
//! trial. The value is wedge's own `time_to_verdict_ms` of each trial (from the subject's start
//! to the verdict), summed over an iteration's trials, so criterion's time per iteration is the
//! mean per trial; the median and tail of single trials are printed after each bench. One trial
//! at a time, so trials do not slow each other down.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, criterion_group, criterion_main};
use wedge::engine::trial::Engine;
use wedge_benches::cells::{BenchCell, CellError, engine};
use wedge_benches::times::Times;

struct Case {
    id: &'static str,
    file: &'static str,
    filters: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        id: "trivial pass",
        file: "harness/tests/scenarios/trivial.toml",
        filters: &[],
    },
    Case {
        id: "worker-starvation zygote cpus=1 pass",
        file: "scenarios/worker-starvation.toml",
        filters: &[
            "strategy=zygote",
            "cpus=1",
            "concurrency=1",
            "builder=wedge",
            "chaos=off",
        ],
    },
    Case {
        id: "worker-starvation inline cpus=1 hang",
        file: "scenarios/worker-starvation.toml",
        filters: &[
            "strategy=inline",
            "cpus=1",
            "concurrency=1",
            "builder=wedge",
            "chaos=off",
        ],
    },
    Case {
        id: "fork-while-locked zygote workers=1 pass",
        file: "scenarios/fork-while-locked.toml",
        filters: &["strategy=zygote", "workers=1", "chaos=off"],
    },
    Case {
        id: "fork-while-locked inline workers=1 hang",
        file: "scenarios/fork-while-locked.toml",
        filters: &["strategy=inline", "workers=1", "chaos=off"],
    },
    Case {
        id: "close-doesnt-wake fixed none pass",
        file: "scenarios/close-doesnt-wake.toml",
        filters: &["variant=fixed", "sandbox=none", "kernel=host"],
    },
    Case {
        id: "close-doesnt-wake pre-fix none hang",
        file: "scenarios/close-doesnt-wake.toml",
        filters: &["variant=pre-fix", "sandbox=none", "kernel=host"],
    },
];

fn bench_case(group: &mut BenchmarkGroup<'_, WallTime>, engine: &Engine, case: &Case) {
    let mut cell = match BenchCell::new(engine, case.file, case.filters) {
        Ok(c) => c,
        Err(CellError::Skipped(why)) => {
            eprintln!("skipped: {why}");
            return;
        }
        Err(CellError::Bad(why)) => panic!("{why}"),
    };
    let mut times = Times::default();
    group.bench_function(case.id, |b| {
        b.iter_custom(|iters| {
            let records = cell.run(engine, iters, 1);
            let mut total = Duration::ZERO;
            for r in &records {
                // A hang bench whose trial passed (or the reverse) measures something else.
                assert!(r.met, "{} trial {}: {}", cell.name, r.trial, r.reason);
                let d = Duration::from_secs_f64(r.time_to_verdict_ms / 1000.0);
                times.push(d);
                total += d;
            }
            total
        })
    });
    eprintln!("{}: time to verdict {}", cell.name, times.describe());
}

fn time_to_verdict(c: &mut Criterion) {
    let engine = engine();
    let mut group = c.benchmark_group("time-to-verdict");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    for case in CASES {
        bench_case(&mut group, &engine, case);
    }
    group.finish();
}

criterion_group!(benches, time_to_verdict);
criterion_main!(benches);
