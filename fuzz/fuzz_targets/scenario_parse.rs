//! Scenario files are user input: any text must load into a scenario or give an error located
//! inside the file, never a panic; a loaded scenario must expand its cells and resolve every
//! cell's expectation without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wedge::scenario::Scenario;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Scenario::parse(std::path::Path::new("fuzz.toml"), text) {
        Ok(scenario) => {
            for cell in scenario.cells().iter().take(64) {
                let _ = scenario.expectation(cell, "6.18.0");
                let _ = scenario.expectation(cell, "6.1.0");
                for index in 0..scenario.steps.len() {
                    let _ = scenario.step_applies(index, cell);
                }
            }
        }
        Err(err) => {
            let shown = err.to_string();
            assert!(shown.starts_with("fuzz.toml"), "error without the file: {shown}");
        }
    }
});
