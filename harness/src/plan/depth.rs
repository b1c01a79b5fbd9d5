//! How much of the matrix a run covers: the whole of it (`--full`), or the default *quick* plan,
//! which covers every scenario on the host and every kernel and vCPU count of each scenario at
//! least once, in minutes on a machine without hardware virtualisation.
//!
//! The quick plan differs from the full one in three ways, each general (nothing here names a
//! scenario or an axis other than the two column axes):
//! 1. Cells with an axis value the scenario marks `opt_in` are left out unless a `--cell` filter
//!    names that axis ([`Scenario::opted_out`](crate::model::scenario::Scenario::opted_out)):
//!    an expensive variant (a real container library's builds) a run asks for by name.
//! 2. VM cells: of each scenario's cells in one VM group (kernel × vCPUs, one boot), one cell
//!    per distinct expectation runs, the first in matrix order, so a variant expected to hang on
//!    one kernel and to pass on another is still checked on both. Rate-gated cells (20 trials
//!    at least) run only when a group has nothing else. A filter on `kernel` or `cpus` asks for
//!    those groups in full.
//! 3. Trial counts of VM cells are divided by the guest's time scale (an emulated guest is that
//!    many times slower; under KVM it is 1, so nothing changes), at least one, and at least
//!    [`MIN_RATE_TRIALS`](crate::model::scenario::MIN_RATE_TRIALS) for a rate-gated cell. An
//!    explicit `--trials` is used as given.
//!
//! Host cells keep their scenario's trial counts: they are the fast part of the run.

use std::collections::HashSet;

use super::backend::Target;
use super::cell::PlannedCell;
use crate::model::cell::CellFilter;
use crate::model::scenario::MIN_RATE_TRIALS;

/// The axes that choose a cell's VM (kernel and vCPUs, as `plan::wants` reads them).
const VM_AXES: [&str; 2] = ["kernel", "cpus"];

/// How much of the matrix a plan covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Depth {
    /// Every cell, every trial (`wedge run --full`; the default for library callers).
    #[default]
    Full,
    /// The quick plan of the module doc (`wedge run` without `--full`).
    Quick,
}

/// The cells of `planned` (every cell of the matrix the filters and opt-ins let through, in plan
/// order) that a quick plan keeps, with their trial counts adjusted; `explicit_trials`: the run
/// set `--trials`.
pub fn quick(
    planned: Vec<PlannedCell>,
    filters: &[CellFilter],
    explicit_trials: bool,
) -> Vec<PlannedCell> {
    let groups_named = filters.iter().any(|f| VM_AXES.contains(&f.axis.as_str()));
    let chosen = representatives(&planned);
    planned
        .into_iter()
        .enumerate()
        .filter_map(|(i, mut cell)| {
            let Target::Vm(vm) = &cell.target else {
                return Some(cell);
            };
            if !groups_named && !chosen.contains(&i) {
                return None;
            }
            if !explicit_trials {
                let scale = vm.time_scale.max(1);
                let floor = if cell.expectation.min_rate.is_some() {
                    MIN_RATE_TRIALS
                } else {
                    1
                };
                cell.trials = cell.trials.div_ceil(scale).max(floor);
            }
            Some(cell)
        })
        .collect()
}

/// The positions of the cells each (scenario, VM group) keeps: the first cell of each distinct
/// expectation that is not a rate, or the first cell when every one is rate-gated. Skipped cells
/// are kept as they are (they cost nothing and say why).
fn representatives(planned: &[PlannedCell]) -> HashSet<usize> {
    type Group = (String, String, Option<usize>);
    let mut groups: Vec<(Group, Vec<usize>)> = Vec::new();
    let mut kept = HashSet::new();
    for (i, cell) in planned.iter().enumerate() {
        let Target::Vm(vm) = &cell.target else {
            continue;
        };
        if cell.skip.is_some() {
            kept.insert(i);
            continue;
        }
        let key = (
            cell.scenario.name.clone(),
            vm.kernel.release.clone(),
            cell.cpus,
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    for (_, members) in groups {
        let mut seen = HashSet::new();
        let deterministic: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| planned[i].expectation.min_rate.is_none())
            .filter(|&i| seen.insert(planned[i].expectation.describe()))
            .collect();
        if deterministic.is_empty() {
            kept.insert(members[0]);
        }
        kept.extend(deterministic);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::Host;
    use crate::model::scenario::Scenario;
    use crate::plan::backend::{BootKernel, VmError, VmHandle, VmSupport};
    use crate::plan::{HostFacts, PlanOptions, plan};
    use std::sync::Arc;

    /// Two kernels, a guest four times slower than the host.
    struct Tcg;
    impl VmSupport for Tcg {
        fn unavailable(&self) -> Option<VmError> {
            None
        }
        fn kernel(&self, name: &str) -> Result<BootKernel, VmError> {
            Ok(BootKernel {
                name: name.into(),
                image: format!("/cache/{name}").into(),
                release: format!("{name}.0-test"),
                version: format!("{name}.0"),
            })
        }
        fn default_kernel(&self) -> Result<BootKernel, VmError> {
            self.kernel("6.1")
        }
        fn time_scale(&self) -> u32 {
            4
        }
    }

    /// A 2-CPU host on 6.18, no limits or probes known.
    fn two_cpu_host() -> HostFacts {
        HostFacts {
            host: Host {
                kernel: "6.18.0".into(),
                cpus: 2,
                isolation: "cgroup2".into(),
                backend: "host".into(),
                accel: None,
            },
            limits: Default::default(),
            probes: None,
        }
    }

    /// kernel × variant × cpus, with a rate-gated variant and an opt-in one.
    const SCENARIO: &str = "[scenario]\ntrials = 10\nopt_in = { variant = [\"costly\"] }\n\
        [subject]\nkind = \"command\"\nargv = [\"true\"]\n\
        [matrix]\nkernel = [\"host\", \"6.1\"]\nvariant = [\"fixed\", \"pre-fix\", \"rated\", \"costly\"]\n\
        cpus = [1, 4]\n[expect]\nexit = 0\n\
        [[expect.when]]\ncell = { variant = \"pre-fix\" }\noutcome = \"hang\"\n\
        [[expect.when]]\ncell = { variant = \"rated\" }\nmin_rate = 0.5\n";

    fn planned(depth: Depth, filters: &[&str], trials: Option<u32>) -> Vec<(String, u32)> {
        let s = Arc::new(Scenario::parse(std::path::Path::new("d.toml"), SCENARIO).unwrap());
        let facts = two_cpu_host();
        let options = PlanOptions {
            filters: filters.iter().map(|f| f.parse().unwrap()).collect(),
            trials,
            vm: VmHandle(Arc::new(Tcg)),
            depth,
            ..PlanOptions::default()
        };
        let cells = plan(&facts, &[s], &options).unwrap();
        cells.iter().map(|c| (c.cell.id(), c.trials)).collect()
    }

    #[test]
    fn a_second_build_only_the_host_has_is_skipped_in_guests() {
        let text = "[subject]\nkind = \"wedge-agent\"\n\
            [matrix]\nbuilder = [\"wedge\", \"libcontainer-latest\"]\ncpus = [1, 4]\n\
            [expect]\nexit = 0\n";
        let s = Arc::new(Scenario::parse(std::path::Path::new("a.toml"), text).unwrap());
        let facts = two_cpu_host();
        let options = PlanOptions {
            vm: VmHandle(Arc::new(Tcg)),
            depth: Depth::Full,
            ..PlanOptions::default()
        };
        let cells = plan(&facts, &[s], &options).unwrap();
        let skip = |id: &str| {
            let cell = cells.iter().find(|c| c.cell.id() == id).unwrap();
            cell.skip.clone()
        };
        assert_eq!(skip("builder=wedge,cpus=4"), None);
        assert_eq!(skip("builder=libcontainer-latest,cpus=1"), None);
        let why = skip("builder=libcontainer-latest,cpus=4").unwrap();
        assert!(why.contains("wedge-agent-latest"), "{why}");
    }

    #[test]
    fn the_full_plan_is_every_cell_with_every_trial() {
        let cells = planned(Depth::Full, &[], None);
        assert_eq!(cells.len(), 16);
        assert!(cells.iter().all(|(_, t)| *t >= 10));
    }

    #[test]
    fn the_quick_plan_keeps_the_host_and_one_cell_per_expectation_and_vm_group() {
        let cells = planned(Depth::Quick, &[], None);
        let ids: Vec<&str> = cells.iter().map(|(id, _)| id.as_str()).collect();
        // The host: every cell but the opt-in ones, with their trials.
        for variant in ["fixed", "pre-fix", "rated"] {
            let id = format!("kernel=host,variant={variant},cpus=1");
            assert!(cells.contains(&(id.clone(), if variant == "rated" { 20 } else { 10 })));
        }
        assert!(!ids.iter().any(|id| id.contains("costly")), "{ids:?}");
        // Two VM groups: 6.1 × 1, and 6.1 × 4, which `kernel=host,cpus=4` boots too (a host
        // without 4 CPUs runs it on the default kernel), so its first cells stand for both.
        // Each keeps `fixed` and `pre-fix` (two expectations), never `rated`; trials 10 / 4,
        // rounded up.
        for group in [
            "kernel=6.1,variant={v},cpus=1",
            "kernel=host,variant={v},cpus=4",
        ] {
            for v in ["fixed", "pre-fix"] {
                assert!(
                    cells.contains(&(group.replace("{v}", v), 3)),
                    "{group} {v}: {cells:?}"
                );
            }
            assert!(
                !ids.contains(&group.replace("{v}", "rated").as_str()),
                "{ids:?}"
            );
        }
        assert_eq!(cells.len(), 3 + 4, "{cells:?}");
    }

    #[test]
    fn filters_and_explicit_trials_ask_for_more() {
        // Naming the opt-in axis plans its values.
        let cells = planned(
            Depth::Quick,
            &["variant=costly", "kernel=host", "cpus=1"],
            None,
        );
        assert_eq!(
            cells,
            vec![("kernel=host,variant=costly,cpus=1".to_string(), 10)]
        );
        // Naming a column axis plans those VM groups in full; --trials is used as given.
        let cells = planned(Depth::Quick, &["kernel=6.1", "cpus=4"], Some(5));
        let ids: Vec<&str> = cells.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "kernel=6.1,variant=fixed,cpus=4",
                "kernel=6.1,variant=pre-fix,cpus=4",
                "kernel=6.1,variant=rated,cpus=4"
            ]
        );
        assert_eq!(cells[0].1, 5);
        assert_eq!(cells[2].1, 20, "a rate still needs its trials");
    }
}
