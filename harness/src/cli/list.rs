//! `wedge list`: the scenarios, their cells and each cell's expectation, as a run would plan
//! them here.

use std::path::PathBuf;

use super::common::Failure;
use wedge::cell::CellFilter;
use wedge::runner::{PlanOptions, load_scenarios, plan};
use wedge::trial::Engine;

pub fn list(scenarios: &[PathBuf], filters: &[CellFilter]) -> Result<(), Failure> {
    let loaded = load_scenarios(scenarios)?;
    let engine = Engine::new();
    let cells = plan(
        &engine,
        &loaded,
        &PlanOptions {
            filters: filters.to_vec(),
            ..PlanOptions::default()
        },
    )?;
    let mut current = String::new();
    for c in &cells {
        if c.scenario.name != current {
            current = c.scenario.name.clone();
            println!(
                "{} ({}, {} trials, deadline {} ms, quiescence {} ms){}",
                c.scenario.name,
                c.scenario.file.display(),
                c.trials,
                c.scenario.deadline.as_millis(),
                c.scenario.quiescence.as_millis(),
                if c.scenario.description.is_empty() {
                    String::new()
                } else {
                    format!("\n  {}", c.scenario.description.trim())
                }
            );
        }
        let skip = c
            .skip
            .as_ref()
            .map_or_else(String::new, |w| format!("  [skipped here: {w}]"));
        println!(
            "  {:<40} expect {}{skip}",
            c.cell.id(),
            c.expectation.describe()
        );
    }
    Ok(())
}
