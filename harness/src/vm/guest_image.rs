//! The image of one boot: the wedge binaries (without debug info, [`super::strip`]), the packed plan ([`super::wire`]), the
//! scenario files it names, and the host programs those scenarios run, built and cached by
//! [`super::image`].
//!
//! Guarantee: every program a scenario names as the first word of a command line (its subject,
//! a `spawn` or `run` step of `[[steps]]` or `[[teardown]]`, a table axis's argv list) is in
//! the image with its closure, found from the typed scenario; so are the base programs
//! shell-level scenarios reach for, when the host has them.

use std::path::PathBuf;

use super::error::GuestImageError;
use super::image::{ImageSpec, build_image};
use super::strip::without_debug_info;
use super::support::{GUEST_BINARIES, VmSettings};
use super::wire::{PLAN_PATH, PackedPlan};
use crate::model::scenario::{Action, Program, Scenario};

/// Programs every guest holds when the host has them: what shell-level scenarios reach for.
const BASE_PROGRAMS: &[&str] = &[
    "sh", "true", "false", "sleep", "cat", "echo", "env", "kill", "ls", "mkdir", "rm", "printf",
    "bwrap", "timeout", "id", "grep", "head", "tail", "wc", "ln", "chmod", "touch", "nproc",
    // The root filesystem of `wedge-agent serve --builder libcontainer`'s container.
    "busybox",
];

/// Packs `packed` (its plan and scenario files) and the programs they name (with the base
/// programs) into an image, cached; its path.
pub fn guest_image(settings: &VmSettings, packed: &PackedPlan) -> Result<PathBuf, GuestImageError> {
    let plan = serde_json::to_vec(&packed.plan).map_err(GuestImageError::Plan)?;
    let mut files = vec![(PLAN_PATH.to_string(), plan)];
    let mut programs: Vec<String> = BASE_PROGRAMS
        .iter()
        .filter(|p| super::closure::resolve_program(p).is_ok())
        .map(|p| p.to_string())
        .collect();
    for (s, wire) in packed.scenarios.iter().zip(&packed.plan.scenarios) {
        for p in programs_named(s) {
            if !programs.contains(&p) {
                programs.push(p);
            }
        }
        let text = std::fs::read(&s.file).map_err(|source| GuestImageError::Scenario {
            path: s.file.clone(),
            source,
        })?;
        files.push((wire.path.clone(), text));
    }
    let binaries = GUEST_BINARIES
        .iter()
        .map(|b| without_debug_info(&settings.guest_bins.join(b), &settings.cache))
        .collect::<Result<Vec<_>, _>>()?;
    let spec = ImageSpec {
        init: binaries[0].clone(),
        binaries,
        programs,
        files,
    };
    Ok(build_image(&spec, &settings.cache)?.path)
}

/// Programs `s` names as the first word of a command line: the first element of each table
/// axis's argv lists (`runtime = { bwrap = ["bwrap", ...] }`, spliced by `{runtime...}`), the
/// subject's `argv` or `command`, and the `argv` of `spawn` and `run` steps and teardown
/// (placeholders and wedge's own binaries left out: those are always in the guest).
pub fn programs_named(s: &Scenario) -> Vec<String> {
    let axes = s.axes.iter().flat_map(|a| a.lists.iter().flatten());
    let subject = match &s.subject.program {
        Program::Command { argv } => Some(argv),
        Program::WedgeRun { command, .. } => Some(command),
        // The subject is wedge-agent itself, always in the guest.
        Program::WedgeAgent { .. } => None,
    };
    let steps = s
        .steps
        .iter()
        .chain(&s.teardown)
        .filter_map(|step| match &step.action {
            Action::Spawn { argv, .. } | Action::Run { argv, .. } => Some(argv),
            _ => None,
        });
    let mut out: Vec<String> = Vec::new();
    for argv in axes.chain(subject).chain(steps) {
        if let Some(first) = argv.first()
            && !first.contains('{')
            && !GUEST_BINARIES.contains(&first.as_str())
            && !out.contains(first)
        {
            out.push(first.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn programs(text: &str) -> Vec<String> {
        programs_named(&Scenario::parse(Path::new("p.toml"), text).unwrap())
    }

    #[test]
    fn programs_are_found_in_the_subject_and_steps() {
        let text = r#"
[subject]
kind = "command"
argv = ["sh", "-c", "echo hi"]
[[steps]]
do = "spawn"
name = "agent"
argv = ["wedge-agent", "exec"]
[[steps]]
do = "spawn"
name = "stress"
argv = ["/usr/bin/stress-ng", "--cpu", "1"]
[[steps]]
do = "spawn"
name = "own"
argv = ["{bin_dir}/x"]
[[teardown]]
do = "run"
argv = ["rmdir", "/tmp/x"]
"#;
        assert_eq!(programs(text), ["sh", "/usr/bin/stress-ng", "rmdir"]);
    }

    #[test]
    fn programs_are_found_first_in_table_axes_lists() {
        let text = r#"
[matrix]
runtime = { bwrap = ["bwrap", "--"], nsjail = ["nsjail", "-Mo", "--"], none = [], own = ["{bin_dir}/x"] }
cpus = [1, 2]
[subject]
kind = "command"
argv = ["{runtime...}", "sh", "-c", "echo hi"]
"#;
        assert_eq!(programs(text), ["bwrap", "nsjail"]);
    }

    #[test]
    fn a_wedge_run_subject_names_its_command() {
        let text = "[subject]\nkind = \"wedge-run\"\ncommand = [\"cat\", \"-\"]\n";
        assert_eq!(programs(text), ["cat"]);
    }
}
