//! Scenario files are user input. Any text loads into a scenario or gives an error located inside
//! the file, never a panic. A scenario that loads keeps the loader's promise to the engine: in
//! every cell of its matrix, every placeholder of the subject and of every step fills in (the
//! trial never fails on a name), an argv to run is never empty (the engine takes `argv[0]`), an
//! output pattern compiles or errors, and every cell resolves its expectation.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use wedge::model::cell::Cell;
use wedge::model::scenario::{Action, Program, Scenario, Target};
use wedge::plan::commands::Vars;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Scenario::parse(Path::new("fuzz.toml"), text) {
        Ok(scenario) => check_every_cell(&scenario),
        Err(err) => {
            let shown = err.to_string();
            assert!(
                shown.starts_with("fuzz.toml:"),
                "error without the file: {shown}"
            );
            assert!(err.line >= 1 && err.col >= 1, "unlocated error: {shown}");
        }
    }
});

fn check_every_cell(scenario: &Scenario) {
    let cells = scenario.cells();
    assert!(!cells.is_empty(), "a matrix always has at least one cell");
    for cell in &cells {
        let _ = scenario.expectation(cell, "6.18.0");
        let _ = scenario.expectation(cell, "6.1.0");
        let vars = vars_for(scenario, cell);
        let fill = |text: &String| {
            // A whole-element `{AXIS...}` is spliced, not filled: its axis must give a list.
            if let Some(axis) = text
                .strip_prefix('{')
                .and_then(|t| t.strip_suffix("...}"))
                .filter(|_| !text.starts_with("{{"))
            {
                assert!(
                    vars.splices.contains_key(axis),
                    "cell {cell}: {text} loaded but its axis gives no list"
                );
                return text.clone();
            }
            vars.fill(text)
                .unwrap_or_else(|e| panic!("cell {cell}: a loaded scenario failed to fill: {e}"))
        };
        let subject: Vec<String> = scenario.subject.strings().into_iter().map(fill).collect();
        if let Program::Command { argv } = &scenario.subject.program {
            assert!(
                !argv.is_empty() && !subject.is_empty(),
                "a subject with no argv loaded"
            );
        }
        for (index, step) in scenario.teardown.iter().enumerate() {
            let _ = scenario.teardown_applies(index, cell);
            for text in action_strings(&step.action) {
                fill(text);
            }
        }
        for (index, step) in scenario.steps.iter().enumerate() {
            let _ = scenario.step_applies(index, cell);
            for text in action_strings(&step.action) {
                fill(text);
            }
            match &step.action {
                Action::Spawn { argv, .. } | Action::Run { argv, .. } => {
                    assert!(!argv.is_empty(), "a spawn or run with no argv")
                }
                Action::WaitOutput { pattern, .. } => drop(regex::Regex::new(&fill(pattern))),
                _ => {}
            }
        }
    }
}

/// The values a trial gives the built-ins; what they are does not matter, only that they exist.
fn vars_for(scenario: &Scenario, cell: &Cell) -> Vars {
    let dir = PathBuf::from("/fuzz");
    Vars {
        cell: cell.clone(),
        tmp: dir.join("tmp"),
        work: dir.join("work"),
        socket: dir.join("agent.sock"),
        seed: scenario.seed,
        trial: 0,
        scenario_dir: dir.clone(),
        bin_dir: dir,
        rng: Vars::rng_for(scenario.seed),
        splices: scenario.splices(cell),
    }
}

/// Every string of an action the trial fills in (harness/src/engine/trial/run_steps.rs), written out here so
/// that a new action with strings the loader does not check shows up as a compile error.
fn action_strings(action: &Action) -> Vec<&String> {
    let mut out = Vec::new();
    match action {
        Action::Start | Action::CloseStdin | Action::Sleep { .. } => {}
        Action::Failpoint { name, action, .. } => out.extend([name, action]),
        Action::Write { data } => out.push(data),
        Action::Spawn { argv, env, cwd, .. } | Action::Run { argv, env, cwd, .. } => {
            out.extend(argv);
            out.extend(env.values());
            out.extend(cwd);
        }
        Action::WaitBlocked {
            process, thread, ..
        } => out.extend(process.iter().chain(thread)),
        Action::WaitProcess { process, .. } => out.push(process),
        Action::WaitOutput { pattern, .. } => out.push(pattern),
        Action::WaitExit { process, .. } => out.extend(process),
        Action::WaitPath { path, .. } => out.push(path),
        Action::Signal { target, .. } => {
            if let Target::Process { name, .. } = target {
                out.push(name);
            }
        }
    }
    out
}
