//! Running one trial. A trial either ends in a record (pass, fail, hang, crash or error, with
//! why) after everything it started is killed and reaped and its leftovers are checked, or,
//! when the run is cancelled, in nothing; it never leaves a process, cgroup or file behind
//! that it could remove.
//!
//! A trial reads as its phases, one module each, and each hands the next a value:
//! [`setup`] (directory, process tree, placeholder values: the `Ground`, and the log) →
//! [`run_steps`] (the planned actions, their processes started by [`launch`], each wait under the
//! watchdog of [`wait`]; then how the script ended, as the judge's `Observed`, and the
//! `[[teardown]]` steps; hands on its processes and log) →
//! [`teardown`] (kill, reap, collect output, check leaks, take the `Ground` apart) →
//! [`judge`] (a pure function of the observations) → [`assemble`] (the one place a
//! [`TrialRecord`] is assembled). [`state`] holds what the phases share read-only (the
//! `Context`) and a started process's handle, [`log`] the log they hand on; [`engine`] what all
//! trials of a run share.

mod assemble;
mod engine;
mod error;
pub mod judge;
mod launch;
mod log;
mod run_steps;
mod setup;
mod state;
mod teardown;
mod wait;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub use assemble::skipped_record;
pub use engine::{Engine, TrialSpec, cpus_wanted, host_cpus, trial_seed};
pub use judge::exit_matches;

use crate::model::record::TrialRecord;
use run_steps::Steps;
use state::Context;
use teardown::Teardown;
use wait::WaitEnd;

static TRIAL_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Runs one trial and returns its record, or `None` when the run was cancelled meanwhile.
pub fn run_trial(engine: &Engine, spec: &TrialSpec<'_>) -> Option<TrialRecord> {
    let begin = Instant::now();
    let n = TRIAL_COUNTER.fetch_add(1, Ordering::SeqCst);
    // Unique per trial: names its cgroup and directory, and marks its processes.
    let marker = format!(
        "{}-{}-t{}-{}",
        std::process::id(),
        n,
        spec.trial,
        spec.seed % 0x1_0000
    );
    let head = assemble::Head::of(spec, marker.clone());
    let (ground, log) = match setup::set_up(engine, spec, &marker) {
        Ok(set) => set,
        Err(reason) => {
            let judged = judge::Judgement::error(reason.to_string());
            let tails = (String::new(), String::new());
            let observed = judge::Observed::default();
            return Some(assemble::assemble(
                engine,
                head,
                judged,
                observed,
                tails,
                Vec::new(),
            ));
        }
    };
    let t0 = Instant::now();
    tracing::debug!(trial = %marker, "set up in {:?}", t0.duration_since(begin));
    let mut steps = Steps::new(Context::new(engine, spec, &ground), log);
    let end = std::thread::scope(|scope| {
        let init = engine.init_program.as_path();
        let perturber =
            crate::engine::chaos::start(scope, spec.chaos, spec.seed, ground.tree(), init);
        if let Some(perturber) = &perturber {
            steps.tell_start(perturber.start_signal());
        }
        let end = steps.run();
        if let Some(perturber) = perturber {
            steps.note(format!("chaos {}: perturbations applied", spec.chaos));
            for line in perturber.stop() {
                steps.note(line);
            }
        }
        end
    });
    tracing::debug!(trial = %marker, "steps done after {:?}", t0.elapsed());
    let cancelled = matches!(end, WaitEnd::Cancelled);
    let mut observed = steps.settle(end);
    tracing::debug!(trial = %marker, "verdict after {:?}", t0.elapsed());
    observed.teardown = steps.run_teardown_steps();
    let (procs, log) = steps.finish();
    let (observed, tails, log) = Teardown::new(spec, ground, procs, log).run(observed);
    tracing::debug!(trial = %marker, "cleaned up after {:?}", t0.elapsed());
    if cancelled {
        return None;
    }
    let judged = judge::judge(&spec.expectation, &observed);
    Some(assemble::assemble(
        engine,
        head,
        judged,
        observed,
        (tails.stdout, tails.stderr),
        log.into_lines(),
    ))
}
