//! Pass rates as a criterion measurement: each bench is one scenario cell, each iteration one
//! trial run through wedge's engine, and the value is whether it failed (see
//! `wedge_benches::failures`). `--save-baseline` / `--baseline` then flag a cell whose failure
//! rate went up. After each bench the raw count and wedge's Wilson interval are printed, since
//! criterion's bootstrap interval collapses at 0 % and 100 %.

use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, SamplingMode, criterion_group, criterion_main};
use wedge::engine::trial::Engine;
use wedge_benches::cells::{BenchCell, CellError, engine};
use wedge_benches::failures::{Failures, Tally, failures};

/// Trials at once, as `wedge run --jobs 2` on this 2-core machine.
const JOBS: usize = 2;

fn bench_cell(
    group: &mut BenchmarkGroup<'_, Failures>,
    engine: &Engine,
    id: &str,
    file: &str,
    filters: &[&str],
) {
    let mut cell = match BenchCell::new(engine, file, filters) {
        Ok(c) => c,
        Err(CellError::Skipped(why)) => {
            eprintln!("skipped: {why}");
            return;
        }
        Err(CellError::Bad(why)) => panic!("{why}"),
    };
    let mut tally = Tally::default();
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let records = cell.run(engine, iters, JOBS);
            tally.add(&records);
            failures(&records) as f64
        })
    });
    eprintln!("{}: {}", cell.name, tally.describe());
}

fn configure<'a>(c: &'a mut Criterion<Failures>, name: &str) -> BenchmarkGroup<'a, Failures> {
    let mut group = c.benchmark_group(name);
    // Every sample the same number of trials: a trial's cost does not grow with the count.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(12));
    group
}

/// N concurrent execs of `true` per strategy, at one CPU (one agent worker), concurrency 4.
fn concurrent_exec(c: &mut Criterion<Failures>) {
    let engine = engine();
    let mut group = configure(c, "pass-rate/concurrent-exec cpus=1 concurrency=4");
    for strategy in [
        "inline",
        "blocking-pool",
        "blocking-pool-async-mutex",
        "blocking-pool-std-mutex",
        "zygote",
    ] {
        let strategy_filter = format!("strategy={strategy}");
        bench_cell(
            &mut group,
            &engine,
            strategy,
            "scenarios/concurrent-exec-pass-rate.toml",
            &[&strategy_filter, "cpus=1", "concurrency=4", "builder=wedge"],
        );
    }
    group.finish();
}

/// The supervisor's drain per variant × sandbox, on the host's kernel.
fn close_doesnt_wake(c: &mut Criterion<Failures>) {
    let engine = engine();
    let mut group = configure(c, "pass-rate/close-doesnt-wake");
    for variant in ["fixed", "pre-fix"] {
        for sandbox in ["none", "bwrap"] {
            let v = format!("variant={variant}");
            let s = format!("sandbox={sandbox}");
            bench_cell(
                &mut group,
                &engine,
                &format!("{variant} {sandbox}"),
                "scenarios/close-doesnt-wake.toml",
                &[&v, &s, "kernel=host"],
            );
        }
    }
    group.finish();
}

fn failures_criterion() -> Criterion<Failures> {
    Criterion::default().with_measurement(Failures)
}

criterion_group! {
    name = pass_rate;
    config = failures_criterion();
    targets = concurrent_exec, close_doesnt_wake
}
criterion_main!(pass_rate);
