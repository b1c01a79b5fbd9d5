//! Every scenario × cell as its own test, with a small trial count, so `cargo test` and
//! `cargo nextest run` list, filter and report them (JUnit included, through nextest).
//!
//! Scenarios: `harness/tests/scenarios/*.toml` and the repository's `scenarios/*.toml`.
//! Trials per cell: `WEDGE_TEST_TRIALS` (default 2, never more than the scenario's own count);
//! a cell gated on a rate (`min_rate`) runs the scenario's own count, since a rate needs a sample.
//! Cells this host cannot run (too many CPUs, another kernel) and cells whose subject binary is
//! not built are reported as ignored, with the reason printed before the run.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use libtest_mimic::{Arguments, Failed, Trial};
use wedge::engine::trial::Engine;
use wedge::exec::runner::{PlanOptions, execute, plan, toml_files};
use wedge::model::scenario::{Program, Scenario};

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::new)
}

fn scenario_files() -> Vec<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        manifest.join("tests/scenarios"),
        manifest.join("../scenarios"),
    ] {
        if dir.is_dir() {
            files.extend(toml_files(&dir).unwrap_or_else(|e| panic!("{e}")));
        }
    }
    files
}

/// The program a scenario's subject needs, when it cannot be found.
fn missing_program(s: &Scenario, engine: &Engine) -> Option<String> {
    let name = match &s.subject.program {
        Program::Command { argv } => argv[0].clone(),
        Program::WedgeRun { .. } => "wedge-run".to_string(),
        Program::WedgeAgent { .. } => "wedge-agent".to_string(),
    };
    if name.contains('{') {
        return None;
    }
    wedge::plan::commands::resolve_program(&name, &engine.bin_dir)
        .is_none()
        .then(|| format!("{name} is not built (cargo build --workspace --release --bins)"))
}

fn main() {
    let args = Arguments::from_args();
    let trials: u32 = std::env::var("WEDGE_TEST_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2)
        .max(1);
    let engine = self::engine();
    let mut tests = Vec::new();
    for file in scenario_files() {
        let scenario = match Scenario::load(&file) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                let msg = e.to_string();
                tests.push(Trial::test(
                    format!("{}::load", file.display()),
                    move || Err(Failed::from(msg.clone())),
                ));
                continue;
            }
        };
        let missing = missing_program(&scenario, engine);
        let options = PlanOptions {
            trials: Some(trials.min(scenario.trials)),
            ..PlanOptions::default()
        };
        // Planned as `wedge run` plans: the host probed only for a scenario that needs it.
        let cells = wedge::exec::host_facts::plan_probing(
            wedge::exec::host_facts::of_engine(engine),
            |facts| plan(facts, std::slice::from_ref(&scenario), &options),
            |cells| wedge::plan::needs_host_probes(cells),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for cell in cells {
            // A cell gated on a rate is judged on a sample of at least gate::MIN_RATE_TRIALS
            // (the planner raises it): with fewer trials asked for here, it is left to the gate
            // run of ci/test.sh, which runs every cell at its planned count, rather than run
            // serially at 20 trials in this quick pass.
            let rate_left_to_gate = cell.expectation.min_rate.is_some()
                && trials < wedge::report::gate::MIN_RATE_TRIALS
                && cell.skip.is_none();
            // A chaos row's worth is its rate over many trials, and its gate is ci/test.sh's chaos
            // step; one trial of each here would only add minutes.
            let chaos_row = cell.cell.get("chaos").is_some_and(|m| m != "off");
            let name = format!("{}::{}", scenario.name, cell.cell.id());
            let ignore_reason = cell
                .skip
                .clone()
                .or_else(|| missing.clone())
                .or_else(|| {
                    chaos_row.then(|| "a chaos row: gated by ci/test.sh's chaos step".to_string())
                })
                .or_else(|| {
                    rate_left_to_gate.then(|| {
                        format!(
                            "rate-gated: judged by `wedge run --gate` ({} trials); \
                         WEDGE_TEST_TRIALS={} runs it here",
                            cell.trials,
                            wedge::report::gate::MIN_RATE_TRIALS
                        )
                    })
                });
            if let Some(why) = &ignore_reason
                && !args.list
            {
                eprintln!("ignored {name}: {why}");
            }
            let test = Trial::test(name, move || {
                let records = execute(self::engine(), std::slice::from_ref(&cell), 1, None, true)
                    .map_err(|e| Failed::from(e.to_string()))?;
                let summary = wedge::report::stats::summarize(&records);
                match summary
                    .cells
                    .first()
                    .and_then(wedge::report::gate::check_cell)
                {
                    None => Ok(()),
                    Some(reason) => Err(Failed::from(format!(
                        "expected {}: {reason}",
                        cell.expectation.describe()
                    ))),
                }
            })
            .with_kind(file_kind(&scenario.file))
            .with_ignored_flag(ignore_reason.is_some());
            tests.push(test);
        }
    }
    let conclusion = libtest_mimic::run(&args, tests);
    engine.tree_kind.cleanup();
    conclusion.exit();
}

fn file_kind(file: &Path) -> String {
    if file.components().any(|c| c.as_os_str() == "tests") {
        "engine".to_string()
    } else {
        "suite".to_string()
    }
}
