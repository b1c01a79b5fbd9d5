//! The guest's plan on the wire: what the host packs into a guest image (at [`PLAN_PATH`]) and
//! the guest's `/init` unpacks and runs.
//!
//! Guarantee: the plan is the host's, made once: each cell as the host planned it (its matrix
//! cell, its expectation resolved for the VM's kernel, its bounds already scaled by the VM's
//! time scale, each trial's seed). The guest only loads the scenario files for their steps and
//! re-resolves the expectations the host marked as keyed on kernel probes, with its own probes
//! (the only fact the host does not have).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::cell::Cell;
use crate::model::scenario::{Expectation, Scenario};
use crate::plan::backend::VmTarget;
use crate::plan::{PlannedCell, PlannedTrial, time_scaled};

/// Where the host puts the plan in the image.
pub const PLAN_PATH: &str = "/wedge/plan.json";
/// Where the host puts the scenario files in the image.
pub const SCENARIO_DIR: &str = "/wedge/scenarios";

/// What one boot runs: packed by the host, read by the guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestPlan {
    /// Run the probe suite before any trial and send its report as a `probes` frame.
    #[serde(default)]
    pub probe: bool,
    /// The kernel's upstream version as the host knows it (kernels.toml): what `kernel = ...`
    /// overrides compare when the guest re-resolves an expectation. Empty: the guest's release.
    #[serde(default)]
    pub kernel_version: String,
    /// Trials run at once inside the guest.
    pub jobs: usize,
    /// The factor host time bounds are scaled by here (an emulated guest is slower).
    #[serde(default = "one")]
    pub time_scale: u32,
    /// The scenario files, indexed by [`GuestCell::scenario`].
    pub scenarios: Vec<GuestScenario>,
    pub cells: Vec<GuestCell>,
}

fn one() -> u32 {
    1
}

/// A scenario file in the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestScenario {
    /// Its guest path ([`scenario_path`]).
    pub path: String,
    /// Its deadline in this guest: the host's, time-scaled.
    pub deadline_ms: u64,
}

/// One cell's trials in a boot, as the host planned them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestCell {
    pub scenario: usize,
    pub cell: Cell,
    pub cell_index: usize,
    /// As the host planned it for the guest's kernel, time bounds scaled.
    pub expectation: Expectation,
    pub trials: Vec<GuestTrial>,
    /// Pin each trial to this many CPUs (the cell's `cpus`), as on the host.
    pub cpus: Option<usize>,
    /// The scenario keys expectations on probes: the host's `expectation` is provisional, and
    /// the guest re-resolves it with its own probe values (the record carries the one used).
    #[serde(default)]
    pub resolve_with_probes: bool,
    /// How each trial perturbs its subject's scheduling, as the host planned it.
    #[serde(default)]
    pub chaos: crate::model::chaos::Chaos,
}

/// One trial of a [`GuestCell`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestTrial {
    pub trial: u32,
    pub seed: u64,
}

/// A plan packed for a boot, with the scenarios whose files the image must carry (parallel to
/// [`GuestPlan::scenarios`]).
#[derive(Debug, Clone)]
pub struct PackedPlan {
    pub plan: GuestPlan,
    pub scenarios: Vec<Arc<Scenario>>,
}

impl PackedPlan {
    /// A plan that runs no trial and asks for the probe suite.
    pub fn probe_only(target: &VmTarget) -> PackedPlan {
        PackedPlan {
            plan: GuestPlan {
                probe: true,
                kernel_version: target.kernel.version.clone(),
                jobs: 1,
                time_scale: target.time_scale,
                scenarios: Vec::new(),
                cells: Vec::new(),
            },
            scenarios: Vec::new(),
        }
    }

    /// The plan of one boot of `target` running `trials` (each naming its cell in `cells`).
    pub fn trials(target: &VmTarget, cells: &[PlannedCell], trials: &[PlannedTrial]) -> PackedPlan {
        let mut packed = PackedPlan {
            plan: GuestPlan {
                probe: false,
                kernel_version: target.kernel.version.clone(),
                jobs: target.cpus,
                time_scale: target.time_scale,
                scenarios: Vec::new(),
                cells: Vec::new(),
            },
            scenarios: Vec::new(),
        };
        // The position in `plan.cells` of each planned cell packed so far.
        let mut packed_cells: Vec<(usize, usize)> = Vec::new();
        for t in trials {
            let at = match packed_cells.iter().find(|(cell, _)| *cell == t.cell) {
                Some(&(_, at)) => at,
                None => {
                    let c = &cells[t.cell];
                    let scenario = packed.scenario(&c.scenario);
                    packed.plan.cells.push(GuestCell {
                        scenario,
                        cell: c.cell.clone(),
                        cell_index: c.cell_index,
                        expectation: c.expectation.clone(),
                        trials: Vec::new(),
                        cpus: crate::engine::trial::cpus_wanted(&c.cell),
                        resolve_with_probes: c.scenario.uses_probes(),
                        chaos: c.chaos,
                    });
                    packed_cells.push((t.cell, packed.plan.cells.len() - 1));
                    packed.plan.cells.len() - 1
                }
            };
            let (trial, seed) = (t.trial, t.seed);
            packed.plan.cells[at]
                .trials
                .push(GuestTrial { trial, seed });
        }
        packed
    }

    /// The index of `s` among the plan's scenarios, adding it if it is new.
    fn scenario(&mut self, s: &Arc<Scenario>) -> usize {
        if let Some(i) = self.scenarios.iter().position(|p| p.file == s.file) {
            return i;
        }
        let time_scale = self.plan.time_scale;
        self.plan.scenarios.push(GuestScenario {
            path: scenario_path(self.scenarios.len(), &s.file)
                .display()
                .to_string(),
            deadline_ms: u64::try_from(time_scaled(s.deadline, time_scale).as_millis())
                .unwrap_or(u64::MAX),
        });
        self.scenarios.push(Arc::clone(s));
        self.scenarios.len() - 1
    }
}

/// The guest path of the `index`-th scenario file: `SCENARIO_DIR/<index>/<file name>`.
pub fn scenario_path(index: usize, file: &Path) -> PathBuf {
    // The file name stays: a scenario's name defaults to its file's stem.
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario.toml".into());
    Path::new(SCENARIO_DIR).join(index.to_string()).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_paths_are_unique_per_index() {
        let a = scenario_path(0, Path::new("/r/scenarios/a.toml"));
        let b = scenario_path(1, Path::new("/other/a.toml"));
        assert_ne!(a, b);
        assert!(a.starts_with(SCENARIO_DIR));
        assert_eq!(a.file_stem().unwrap(), "a");
    }

    #[test]
    fn a_plan_from_before_probes_existed_still_reads() {
        let old: GuestPlan =
            serde_json::from_str(r#"{"jobs":1,"scenarios":[],"cells":[]}"#).unwrap();
        assert!(!old.probe && old.kernel_version.is_empty());
        assert_eq!(old.time_scale, 1);
    }
}
