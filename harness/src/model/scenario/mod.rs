//! Scenario scripts. A file loads into a validated plan or into one error located at
//! `file:line:col`: every later stage (cells, trials, reports) may assume the plan is sound.
//!
//! Each section of the file has its own module, which checks its part and turns it into plan
//! types: [`header`] (name, trials, timing), [`subject`], [`matrix`] (axes, cells, selectors),
//! [`steps`] (typed [`Action`]s, resolved once), [`expect`] (per-cell [`Expectation`]s),
//! [`classify`] (the named classes of lost trials) and [`placeholders`] (`{name}` interpolation, checked in every cell). [`spec`] is the file format
//! as serde reads it; nothing outside this module executes it.

mod classify;
mod error;
mod exit;
mod expect;
mod header;
mod locate;
mod matrix;
pub mod placeholders;
pub mod spec;
mod steps;
mod subject;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::cell::Cell;
pub use classify::{Evidence, LossClass, OTHER, UNCLASSIFIED, VERDICTS, classify};
pub use error::{ClassifyError, ExitError, ExpectError, MatrixError, PlaceholderError, StepError};
pub use exit::{describe_exit_spec, parse_signal};
pub use expect::{
    Expectation, ExpectationOf, KernelRequirement, MIN_RATE_TRIALS, parse_kernel_version,
};
pub use locate::{ScenarioError, line_col};
pub use matrix::Axis;
pub use placeholders::{BUILTIN_PLACEHOLDERS, interpolate, rand_bounds, splice, splice_name};
pub use spec::{ExitSpec, Isolation, Outcome, QuiescenceOf, StdinMode, Stream, Which};
pub use steps::{Action, IoctlRequest, PlannedStep, Syscall, Target};
pub use subject::{Program, Subject};

/// A validated scenario: the plan the engine runs.
pub struct Scenario {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub trials: u32,
    pub seed: u64,
    pub deadline: Duration,
    pub quiescence: Duration,
    /// Whose quiescence calls a hang (`[scenario] quiescence_of`).
    pub quiescence_of: QuiescenceOf,
    pub linger: Duration,
    /// Where the trial's processes run (`[scenario] isolation`).
    pub isolation: Isolation,
    /// `pids_max` and `memory_max`: the trial cgroup's limits.
    pub limits: crate::model::limit_spec::Limits,
    pub subject: Subject,
    pub axes: Vec<Axis>,
    /// The steps, with `start` made explicit.
    pub steps: Vec<PlannedStep>,
    /// `[[teardown]]`: run after the subject is stopped, before the leak checks.
    pub teardown: Vec<PlannedStep>,
    expect: expect::Expectations,
    /// `[[classify]]`, in file order.
    classify: Vec<LossClass>,
    /// `[scenario] opt_in`: (axis, values) whose cells run only when asked for.
    opt_in: Vec<(String, Vec<String>)>,
    /// `[scenario] chaos`: for cells without a `chaos` axis, unless the run says otherwise.
    pub chaos: crate::model::chaos::Chaos,
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .field("file", &self.file)
            .field("axes", &self.axes)
            .finish_non_exhaustive()
    }
}

impl Scenario {
    /// Loads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let source = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.display().to_string(),
            line: 1,
            col: 1,
            message: format!("cannot read: {e}"),
        })?;
        Scenario::parse(path, &source)
    }

    /// Parses and validates scenario text that came from `path`, section by section in the
    /// order a reader checks them (so the first error reported stays the same).
    pub fn parse(path: &Path, source: &str) -> Result<Scenario, ScenarioError> {
        let loc = locate::Locator {
            file: path.display().to_string(),
            source,
        };
        let file: spec::ScenarioFile = toml::from_str(source).map_err(|e| {
            let span = locate::refine_span(source, e.span().unwrap_or(0..0), e.message());
            loc.error(span, e.message().trim().to_string())
        })?;
        let header = header::parse(&file.scenario, path, &loc)?;
        let axes = matrix::parse(file.matrix.as_ref(), &loc)?;
        let plan = steps::parse(&file.steps, &axes, &loc)?;
        let teardown = steps::parse_teardown(&file.teardown, &axes, &loc)?;
        let subject = subject::parse(&file.subject, &loc)?;
        let expect = expect::parse(file.expect.as_ref(), &axes, &loc)?;
        let classify = classify::parse(&file.classify, &axes, &loc)?;
        let opt_in = matrix::parse_opt_in(file.scenario.opt_in.as_ref(), &axes, &loc)?;
        matrix::check_chaos_axis(file.matrix.as_ref(), &axes, &loc)?;
        let mut strings = vec![placeholders::Strings {
            span: file.subject.span(),
            texts: subject.other_strings(),
            argv: subject.argv_strings(),
        }];
        strings.extend(plan.strings);
        strings.extend(teardown.strings);
        if let Some(m) = &file.matrix {
            // The strings of table axes' lists are filled too, and cannot splice themselves.
            let texts = axes.iter().flat_map(|a| a.lists.iter().flatten().flatten());
            strings.push(placeholders::Strings {
                span: m.span(),
                texts: texts.collect(),
                argv: Vec::new(),
            });
        }
        let list_axes: Vec<&str> = axes
            .iter()
            .filter(|a| a.lists.is_some())
            .map(|a| a.name.as_str())
            .collect();
        placeholders::check(&matrix::cells(&axes), &strings, &list_axes, &loc)?;
        drop(strings);
        Ok(Scenario {
            name: header.name,
            file: path.to_path_buf(),
            description: header.description,
            trials: header.trials,
            seed: header.seed,
            deadline: header.deadline,
            quiescence: header.quiescence,
            quiescence_of: header.quiescence_of,
            linger: header.linger,
            isolation: header.isolation,
            limits: header.limits,
            subject,
            axes,
            steps: plan.steps,
            teardown: teardown.steps,
            expect,
            classify,
            opt_in,
            chaos: header.chaos,
        })
    }

    /// How `cell`'s trials perturb the subject's scheduling: its `chaos` axis (checked at load),
    /// else `run` (`wedge run --chaos`), else the scenario's `chaos`.
    pub fn chaos_of(
        &self,
        cell: &Cell,
        run: Option<crate::model::chaos::Chaos>,
    ) -> crate::model::chaos::Chaos {
        cell.get("chaos")
            .and_then(|v| v.parse().ok())
            .or(run)
            .unwrap_or(self.chaos)
    }

    /// Whether `cell` has a value the scenario's `opt_in` leaves out of a plan unless asked for,
    /// and none of `filters` asks for it (names its axis).
    pub fn opted_out(&self, cell: &Cell, filters: &[crate::model::cell::CellFilter]) -> bool {
        self.opt_in.iter().any(|(axis, values)| {
            cell.get(axis)
                .is_some_and(|v| values.iter().any(|x| x == v))
                && !filters.iter().any(|f| &f.axis == axis)
        })
    }

    /// The classes of lost trials (`[[classify]]`), in file order: the first that matches names
    /// a trial's class. Empty when the scenario classifies nothing.
    pub fn classes(&self) -> &[LossClass] {
        &self.classify
    }

    /// Every cell of the matrix, in file order (the first axis varies slowest).
    pub fn cells(&self) -> Vec<Cell> {
        matrix::cells(&self.axes)
    }

    /// The expectation of `cell` on a kernel with release `kernel`, its probes unknown (no
    /// override keyed on probes applies).
    pub fn expectation(&self, cell: &Cell, kernel: &str) -> Expectation {
        self.expect.resolve(cell, kernel, None)
    }

    /// The expectation of `cell` on a kernel with release `kernel`, to resolve with the probes
    /// of the machine it runs on (`plan::resolve`).
    pub fn expectation_of<'a>(&'a self, cell: &'a Cell, kernel: &'a str) -> ExpectationOf<'a> {
        ExpectationOf::new(&self.expect, cell, kernel)
    }

    /// The expectation of `cell` on a kernel with release `kernel` whose probes gave `probes`.
    pub fn expectation_with(
        &self,
        cell: &Cell,
        kernel: &str,
        probes: Option<&crate::model::probe_ids::ProbeValues>,
    ) -> Expectation {
        self.expect.resolve(cell, kernel, probes)
    }

    /// Whether some expectation is keyed on kernel probes (so resolving it needs them).
    pub fn uses_probes(&self) -> bool {
        self.expect.uses_probes()
    }

    /// Where `cell`'s trials run their processes: its `isolation` axis, else `[scenario]
    /// isolation` (axis values are checked at load).
    pub fn isolation_of(&self, cell: &Cell) -> Isolation {
        match cell.get("isolation") {
            Some("cgroup") => Isolation::Cgroup,
            Some(_) => Isolation::PidNamespace,
            None => self.isolation,
        }
    }

    /// Whether teardown step `index` runs in `cell` (its `only` matches).
    pub fn teardown_applies(&self, index: usize, cell: &Cell) -> bool {
        self.teardown
            .get(index)
            .is_none_or(|step| matrix::cell_matches(cell, &step.only))
    }

    /// Whether step `index` runs in `cell` (its `only` matches).
    pub fn step_applies(&self, index: usize, cell: &Cell) -> bool {
        self.steps
            .get(index)
            .is_none_or(|step| matrix::cell_matches(cell, &step.only))
    }

    /// The directory the scenario file is in, absolute (`{scenario_dir}`: trials run in their
    /// own directory, where a path relative to wedge's would name nothing).
    pub fn dir(&self) -> PathBuf {
        let dir = self
            .file
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let absolute = std::path::absolute(&dir).unwrap_or(dir);
        // `a/./b` and `a/../b` as the reader expects them, without resolving symlinks.
        let mut clean = PathBuf::new();
        for part in absolute.components() {
            match part {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    clean.pop();
                }
                other => clean.push(other),
            }
        }
        clean
    }

    /// The argv list of each table axis for `cell` (axis → the list `{AXIS...}` splices).
    pub fn splices(&self, cell: &Cell) -> BTreeMap<String, Vec<String>> {
        self.axes
            .iter()
            .filter_map(|a| {
                let list = a.list(cell.get(&a.name)?)?;
                Some((a.name.clone(), list.to_vec()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(Path::new("t.toml"), text)
    }

    const GOOD: &str = r#"
[scenario]
trials = 3
deadline_ms = 2000
quiescence_ms = 200

[subject]
kind = "command"
argv = ["wedge-subject", "{mode}"]

[matrix]
mode = ["exit", "deadlock"]
cpus = [1, 2]

[[steps]]
do = "wait"
until = "output"
pattern = "ready"

[expect]
exit = 0

[[expect.when]]
cell = { mode = "deadlock" }
outcome = "hang"
diagnosis = "blocked in futex"
"#;

    #[test]
    fn expands_cells_and_expectations() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.name, "t");
        let cells: Vec<String> = s.cells().iter().map(Cell::id).collect();
        assert_eq!(
            cells,
            [
                "mode=exit,cpus=1",
                "mode=exit,cpus=2",
                "mode=deadlock,cpus=1",
                "mode=deadlock,cpus=2"
            ]
        );
        let e = s.expectation(&s.cells()[2], "6.18.0");
        assert_eq!(e.outcome, Outcome::Hang);
        assert_eq!(e.diagnosis.as_deref(), Some("blocked in futex"));
        assert_eq!(
            s.expectation(&s.cells()[0], "6.18.0").outcome,
            Outcome::Exit
        );
        assert_eq!(s.steps[0].action, Action::Start);
        assert!(matches!(s.steps[1].action, Action::WaitOutput { .. }));
    }

    #[test]
    fn steps_become_resolved_actions() {
        let text = "[subject]\nkind = \"command\"\nargv = [\"true\"]\n\
                    [[steps]]\ndo = \"wait\"\nuntil = \"blocked\"\nsyscall = [\"futex\", \"ioctl\"]\n\
                    request = \"SECCOMP_IOCTL_NOTIF_RECV\"\nprocess = \"p\"\ntimeout_ms = 5\n\
                    [[steps]]\ndo = \"signal\"\nsignal = \"TERM\"\nto = \"group\"\n";
        let s = parse(text).unwrap();
        assert_eq!(s.steps.len(), 3, "the implicit start comes first");
        assert_eq!(s.steps[0].action, Action::Start);
        let Action::WaitBlocked {
            process,
            syscalls,
            ioctl_request,
            timeout,
            ..
        } = &s.steps[1].action
        else {
            panic!("{:?}", s.steps[1].action);
        };
        assert_eq!(process.as_deref(), Some("p"));
        let nrs: Vec<u64> = syscalls.iter().map(|s| s.nr).collect();
        assert_eq!(nrs, [202, 16]);
        let request = ioctl_request.as_ref().unwrap();
        assert!(request.values.contains(&0xc050_2100), "{request:?}");
        assert_eq!(*timeout, Some(Duration::from_millis(5)));
        assert_eq!(
            s.steps[2].action,
            Action::Signal {
                signal: nix::sys::signal::Signal::SIGTERM,
                target: Target::Group,
                count: 1,
                interval_ms: 0,
                jitter_ms: None,
            }
        );
        assert_eq!(s.steps[1].at, (4, 1));
    }

    #[test]
    fn unknown_key_has_position() {
        let text = "[subject]\nkind = \"command\"\nargv = [\"true\"]\nargz = 1\n";
        let e = parse(text).unwrap_err();
        assert_eq!((e.line, e.col), (4, 1), "{e}");
        assert!(e.message.contains("argz"), "{e}");
        assert!(e.to_string().starts_with("t.toml:4:1: "), "{e}");
    }

    #[test]
    fn bad_step_is_located() {
        let text = "[subject]\nkind = \"command\"\nargv = [\"true\"]\n\n[[steps]]\ndo = \"signal\"\nsignal = \"NOPE\"\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("unknown signal"), "{e}");
    }

    #[test]
    fn unknown_placeholder_is_an_error() {
        let text = "[subject]\nkind = \"command\"\nargv = [\"echo\", \"{nope}\"]\n";
        let e = parse(text).unwrap_err();
        assert!(e.message.contains("unknown placeholder `{nope}`"), "{e}");
        assert_eq!(e.line, 1);
    }

    #[test]
    fn failpoint_after_start_is_rejected() {
        let text = "[subject]\nkind = \"command\"\nargv = [\"true\"]\n[[steps]]\ndo = \"close-stdin\"\n[[steps]]\ndo = \"failpoint\"\nname = \"x\"\naction = \"return\"\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, 6, "{e}");
    }

    #[test]
    fn steps_can_be_limited_to_cells() {
        let text = "[subject]\nkind = \"command\"\nargv = [\"true\"]\n[matrix]\nv = [\"a\", \"b\"]\n\
                    [[steps]]\ndo = \"close-stdin\"\nonly = { v = \"b\" }\n";
        let s = parse(text).unwrap();
        let cells = s.cells();
        assert!(
            s.step_applies(0, &cells[0]),
            "the implicit start runs everywhere"
        );
        assert!(!s.step_applies(1, &cells[0]));
        assert!(s.step_applies(1, &cells[1]));
        let bad = text.replace("v = \"b\" }", "w = \"b\" }");
        let e = parse(&bad).unwrap_err();
        assert!(e.message.contains("no axis \"w\""), "{e}");
        assert_eq!(e.line, 6);
    }

    /// Found while fuzzing `scenario`: eleven axes of four values, 251 bytes, expanded into
    /// 4^11 cells at load time (a timeout and gigabytes). A matrix of at most `MAX_CELLS` loads.
    #[test]
    fn a_matrix_past_the_cell_limit_is_refused_at_load() {
        let file = |axes: usize, values: &str| {
            let axes: Vec<String> = (0..axes).map(|i| format!("a{i} = [{values}]")).collect();
            format!(
                "[subject]\nkind = \"command\"\nargv = [\"true\"]\n[matrix]\n{}\n",
                axes.join("\n")
            )
        };
        let e = parse(&file(11, "1, 2, 3, 4")).unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("more than 10000 cells"), "{e}");
        // 10^4 cells exactly: at the limit, so it loads.
        let s = parse(&file(4, "0, 1, 2, 3, 4, 5, 6, 7, 8, 9")).unwrap();
        assert_eq!(s.cells().len(), matrix::MAX_CELLS);
        // A product that overflows usize is refused, not wrapped.
        let values: Vec<String> = (0..200).map(|v| v.to_string()).collect();
        assert!(parse(&file(9, &values.join(", "))).is_err());
    }

    #[test]
    fn limits_are_read_and_their_errors_located() {
        let base = "[subject]\nkind = \"command\"\nargv = [\"true\"]\n";
        let s = parse(&format!(
            "[scenario]\npids_max = 64\nmemory_max = \"64M\"\n{base}"
        ))
        .unwrap();
        assert_eq!(s.limits.pids_max, Some(64));
        assert_eq!(s.limits.memory_max, Some(64 << 20));
        let s = parse(&format!("[scenario]\nmemory_max = 8388608\n{base}")).unwrap();
        assert_eq!(s.limits.memory_max, Some(8 << 20));
        assert_eq!(
            parse(base).unwrap().limits,
            crate::model::limit_spec::Limits::default()
        );
        for (text, line, needle) in [
            (
                "[scenario]\ntrials = 1\nmemory_max = \"64 MB\"\n",
                3,
                "not a size",
            ),
            ("[scenario]\nmemory_max = \"1K\"\n", 2, "at least 4M"),
            ("[scenario]\nmemory_max = -5\n", 2, "negative"),
            ("[scenario]\nmemory_max = [1]\n", 2, "number of bytes"),
            ("[scenario]\n\npids_max = 2\n", 3, "at least 8"),
        ] {
            let e = parse(&format!("{text}{base}")).unwrap_err();
            assert!(e.message.contains(needle), "{text}: {e}");
            assert_eq!(e.line, line, "{text}: {e}");
        }
    }

    #[test]
    fn opt_in_values_leave_cells_out_unless_a_filter_names_their_axis() {
        let text = "[scenario]\nopt_in = { v = [\"b\"] }\n[subject]\nkind = \"command\"\n\
                    argv = [\"true\"]\n[matrix]\nv = [\"a\", \"b\"]\nw = [1, 2]\n";
        let s = parse(text).unwrap();
        let cells = s.cells();
        let out: Vec<bool> = cells.iter().map(|c| s.opted_out(c, &[])).collect();
        assert_eq!(out, [false, false, true, true]);
        let on_v: crate::model::cell::CellFilter = "v=a".parse().unwrap();
        let on_w: crate::model::cell::CellFilter = "w=1".parse().unwrap();
        assert!(!s.opted_out(&cells[2], std::slice::from_ref(&on_v)));
        assert!(s.opted_out(&cells[2], &[on_w]));
        for (opt_in, needle) in [
            ("{ x = [\"b\"] }", "no matrix axis \"x\""),
            ("{ v = [\"c\"] }", "\"c\" is not a value of axis \"v\""),
            ("{ v = [\"a\", \"b\"] }", "every value of axis \"v\""),
            ("{ v = [1.5] }", "strings, integers or booleans"),
        ] {
            let bad = text.replace("{ v = [\"b\"] }", opt_in);
            let e = parse(&bad).unwrap_err();
            assert!(e.message.contains(needle), "{opt_in}: {e}");
            assert_eq!(e.line, 2, "{opt_in}: {e}");
        }
    }

    #[test]
    fn expectations_keyed_on_probes_apply_only_with_those_values() {
        let text = "[subject]\nkind = \"command\"\nargv = [\"true\"]\n[matrix]\nv = [\"a\", \"b\"]\n\
                    [[expect.when]]\ncell = { v = \"b\" }\n\
                    probe = { recv_after_users_exit = \"blocks\" }\noutcome = \"hang\"\n";
        let s = parse(text).unwrap();
        assert!(s.uses_probes());
        let b = &s.cells()[1];
        let probes = |v: &str| {
            let mut p = crate::model::probe_ids::ProbeValues::new();
            p.insert("recv_after_users_exit".into(), v.into());
            p
        };
        let hang = s.expectation_with(b, "6.18.0", Some(&probes("blocks")));
        assert_eq!(hang.outcome, spec::Outcome::Hang);
        let exit = s.expectation_with(b, "6.1.0", Some(&probes("ENOENT")));
        assert_eq!(exit.outcome, spec::Outcome::Exit);
        // Not probed: the override does not apply, whatever the kernel version.
        assert_eq!(s.expectation(b, "6.1.0").outcome, spec::Outcome::Exit);
        assert_eq!(
            s.expectation_with(&s.cells()[0], "6.1.0", Some(&probes("blocks")))
                .outcome,
            spec::Outcome::Exit
        );
        // Unknown ids and values a probe never gives are located errors.
        let e = parse(&text.replace("recv_after_users_exit", "recv_after_exit")).unwrap_err();
        assert!(
            e.message.contains("unknown probe \"recv_after_exit\""),
            "{e}"
        );
        assert_eq!(e.line, 6, "{e}");
        let e = parse(&text.replace("\"blocks\"", "\"hangs\"")).unwrap_err();
        assert!(e.message.contains("never gives \"hangs\""), "{e}");
        assert!(
            !parse(&text.replace("probe = { recv_after_users_exit = \"blocks\" }\n", ""))
                .unwrap()
                .uses_probes()
        );
    }

    #[test]
    fn exit_lists_and_diagnosis_regexes_load_and_bad_ones_are_located() {
        let base =
            "[subject]\nkind = \"command\"\nargv = [\"true\"]\n[matrix]\nv = [\"a\", \"b\"]\n";
        let s = parse(&format!(
            "{base}[expect]\nexit = [0, \"failure\"]\ndiagnosis_regex = \"2 × \\\\w+ threads\"\n\
             [[expect.when]]\ncell = {{ v = \"b\" }}\ndiagnosis_regex = \"^x\\\\[\"\n"
        ))
        .unwrap();
        let a = s.expectation(&s.cells()[0], "6.18.0");
        assert_eq!(
            a.exit,
            Some(ExitSpec::OneOf(vec![
                ExitSpec::Code(0),
                ExitSpec::Word("failure".into())
            ]))
        );
        assert_eq!(a.diagnosis_regex.as_deref(), Some("2 × \\w+ threads"));
        let b = s.expectation(&s.cells()[1], "6.18.0");
        assert_eq!(b.diagnosis_regex.as_deref(), Some("^x\\["));
        for (text, line, col, needle) in [
            (
                "[expect]\nexit = [0, 130, \"nope\"]\n",
                7,
                17,
                "unknown exit status \"nope\"",
            ),
            ("[expect]\nexit = 300\n", 7, 8, "not in 0..=255"),
            (
                "[[expect.when]]\ncell = { v = \"a\" }\nexit = 1.5\n",
                8,
                8,
                "an exit code",
            ),
            (
                "[expect]\ndiagnosis_regex = \"(\"\n",
                7,
                19,
                "bad `diagnosis_regex`",
            ),
            (
                "[[expect.when]]\ncell = { v = \"a\" }\n\ndiagnosis_regex = \"[\"\n",
                9,
                19,
                "bad `diagnosis_regex`",
            ),
            (
                "[[steps]]\ndo = \"wait\"\nuntil = \"exited\"\nexit = [0, []]\n",
                9,
                1,
                "cannot hold another list",
            ),
        ] {
            let e = parse(&format!("{base}{text}")).unwrap_err();
            assert!(e.message.contains(needle), "{text}: {e}");
            assert!(!e.message.contains("untagged"), "{text}: {e}");
            assert_eq!((e.line, e.col), (line, col), "{text}: {e}");
        }
    }

    const SPLICED: &str = r#"[matrix]
runtime = { bwrap = ["bwrap", "--ro-bind", "/", "/", "--"], nsjail = ["nsjail", "-Q", "--chroot", "{tmp}", "--"], none = [] }
cpus = [1, 2]
[subject]
kind = "command"
argv = ["{runtime...}", "sh", "-c", "echo {runtime} {cpus}"]
[[steps]]
do = "spawn"
name = "client"
argv = ["{runtime...}", "true"]
only = { runtime = ["bwrap", "none"] }
[[expect.when]]
cell = { runtime = "nsjail" }
exit = "failure"
"#;

    #[test]
    fn table_axes_are_cells_by_key_with_argv_lists() {
        let s = parse(SPLICED).unwrap();
        let ids: Vec<String> = s.cells().iter().map(Cell::id).collect();
        assert_eq!(
            ids,
            [
                "runtime=bwrap,cpus=1",
                "runtime=bwrap,cpus=2",
                "runtime=nsjail,cpus=1",
                "runtime=nsjail,cpus=2",
                "runtime=none,cpus=1",
                "runtime=none,cpus=2"
            ]
        );
        let nsjail = &s.cells()[2];
        let splices = s.splices(nsjail);
        assert_eq!(
            splices["runtime"],
            ["nsjail", "-Q", "--chroot", "{tmp}", "--"]
        );
        assert_eq!(splices.len(), 1, "only table axes splice");
        assert_eq!(
            s.expectation(nsjail, "6.18.0").exit,
            Some(ExitSpec::Word("failure".into()))
        );
        assert!(!s.step_applies(1, nsjail) && s.step_applies(1, &s.cells()[4]));
        let fill = |t: &str| Ok(t.replace("{tmp}", "/T"));
        let argv: Vec<String> = ["{runtime...}", "x", "{runtime}..."]
            .map(String::from)
            .into();
        let lists = |axis: &str| s.splices(nsjail).get(axis).cloned();
        assert_eq!(
            splice(&argv, &lists, &fill).unwrap(),
            ["nsjail", "-Q", "--chroot", "/T", "--", "x", "{runtime}..."]
        );
        assert!(splice(&argv, &|_| None, &fill).is_err());
        assert_eq!(splice_name("{runtime...}"), Some("runtime"));
        for not in [
            "{runtime}",
            "x{runtime...}",
            "{...}",
            "{a{b...}",
            "{runtime...}x",
        ] {
            assert_eq!(splice_name(not), None, "{not}");
        }
    }

    #[test]
    fn bad_splices_are_located_errors() {
        let cases = [
            // Not a whole argv element.
            (
                SPLICED.replace("\"{runtime...}\", \"true\"", "\"x{runtime...}\", \"true\""),
                10,
                10,
                "as a whole element",
            ),
            // Outside an argv.
            (
                SPLICED.replace(
                    "exit = \"failure\"",
                    "exit = 1\n[[steps]]\ndo = \"write\"\ndata = \"{runtime...}\"",
                ),
                17,
                9,
                "as a whole element",
            ),
            // A plain axis.
            (
                SPLICED.replace("\"{runtime...}\", \"sh\"", "\"{cpus...}\", \"sh\""),
                6,
                10,
                "axis \"cpus\" is not a table of lists",
            ),
            // No such axis.
            (
                SPLICED.replace("\"{runtime...}\", \"true\"", "\"{rt...}\", \"true\""),
                10,
                10,
                "no axis \"rt\"",
            ),
            // A list that splices itself.
            (
                SPLICED.replace("none = []", "none = [\"{runtime...}\"]"),
                2,
                124,
                "as a whole element",
            ),
            // A list that is not a list of strings.
            (
                SPLICED.replace("none = []", "none = \"x\""),
                2,
                1,
                "value \"none\" must be a list of strings",
            ),
            (
                SPLICED.replace("none = []", "none = [1]"),
                2,
                1,
                "value \"none\" must be a list of strings",
            ),
            (
                SPLICED.replace("\"echo {runtime} {cpus}\"", "\"{nope}\""),
                4,
                1,
                "unknown placeholder `{nope}`",
            ),
        ];
        for (text, line, col, needle) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.message.contains(needle), "{text}\n{e}");
            assert_eq!((e.line, e.col), (line, col), "{text}\n{e}");
        }
        let teardown = format!(
            "{SPLICED}[[teardown]]\ndo = \"run\"\nargv = [\"{{runtime...}}\", \"cleanup\"]\n"
        );
        assert!(parse(&teardown).is_ok(), "a run step's argv splices");
        let e =
            parse(&teardown.replace("\"{runtime...}\", \"cleanup\"", "\"{cpus...}\"")).unwrap_err();
        assert!(e.message.contains("not a table of lists"), "{e}");
        assert_eq!(e.line, 17, "{e}");
        let plain = "[subject]\nkind = \"command\"\nargv = [\"{x...}\"]\n";
        let e = parse(plain).unwrap_err();
        assert!(e.message.contains("no axis \"x\""), "{e}");
        assert_eq!((e.line, e.col), (3, 10), "{e}");
        let wedge_run = "[matrix]\nr = { a = [\"--drain-ms\", \"5\"] }\n[subject]\nkind = \"wedge-run\"\n\
                         command = [\"true\"]\nargs = [\"{r...}\"]\npolicy = \"{r...}\"\n";
        let e = parse(wedge_run).unwrap_err();
        assert!(e.message.contains("as a whole element"), "{e}");
        assert!(parse(&wedge_run.replace("policy = \"{r...}\"\n", "")).is_ok());
    }

    #[test]
    fn the_scenario_dir_is_absolute_even_for_a_relative_file() {
        let text = "[subject]\nkind = \"command\"\nargv = [\"true\"]\n";
        let cwd = std::env::current_dir().unwrap();
        for (file, dir) in [
            ("dir/x.toml", cwd.join("dir")),
            ("./dir/../other/x.toml", cwd.join("other")),
            ("x.toml", cwd.clone()),
            ("/abs/x.toml", PathBuf::from("/abs")),
        ] {
            let s = Scenario::parse(Path::new(file), text).unwrap();
            assert_eq!(s.dir(), dir, "{file}");
            assert!(s.dir().is_absolute(), "{file}");
            assert_eq!(
                s.file,
                Path::new(file),
                "the file stays as given (reports, replay)"
            );
        }
    }

    #[test]
    fn kernel_requirements() {
        let k = KernelRequirement::parse(">= 6.11").unwrap();
        assert!(k.holds("6.18.44-fc"));
        assert!(k.holds("6.11.0"));
        assert!(!k.holds("6.1.0-26-cloud-amd64"));
        assert!(KernelRequirement::parse("~6").is_none());
    }

    #[test]
    fn interpolation() {
        let vars = |n: &str| (n == "a").then(|| "X".to_string());
        assert_eq!(interpolate("{a}-{{b}}", &vars).unwrap(), "X-{b}");
        assert!(interpolate("{b}", &vars).is_err());
        assert!(interpolate("{a", &vars).is_err());
        assert!(interpolate("a}", &vars).is_err());
    }

    #[test]
    fn signals_parse() {
        assert_eq!(
            parse_signal("TERM"),
            Some(nix::sys::signal::Signal::SIGTERM)
        );
        assert_eq!(
            parse_signal("sigkill"),
            Some(nix::sys::signal::Signal::SIGKILL)
        );
        assert_eq!(parse_signal("2"), Some(nix::sys::signal::Signal::SIGINT));
        assert_eq!(parse_signal("BOGUS"), None);
    }

    #[test]
    fn teardown_steps_and_isolation_are_read_and_checked() {
        let base = "[subject]\nkind = \"command\"\nargv = [\"true\"]\n";
        let ok = format!(
            "[scenario]\nisolation = \"cgroup\"\n{base}[[teardown]]\ndo = \"run\"\nargv = [\"runc\", \"delete\", \"-f\", \"c{{trial}}\"]\ntimeout_ms = 500\nexit = \"any\"\n"
        );
        let s = parse(&ok).unwrap();
        assert_eq!(s.isolation, Isolation::Cgroup);
        match &s.teardown[0].action {
            Action::Run {
                name,
                timeout,
                exit,
                ..
            } => {
                assert_eq!(name, "runc");
                assert_eq!(*timeout, Duration::from_millis(500));
                assert_eq!(*exit, ExitSpec::Word("any".into()));
            }
            other => panic!("{other:?}"),
        }
        let e = parse(&format!("{base}[[teardown]]\ndo = \"close-stdin\"\n")).unwrap_err();
        assert_eq!((e.line, e.col), (4, 1), "{e}");
        assert!(e.message.contains("a teardown step must be `run`"), "{e}");
        let e = parse(&format!("{base}[[steps]]\ndo = \"run\"\nargv = []\n")).unwrap_err();
        assert!(e.message.contains("`argv` is empty"), "{e}");
        let e = parse(&format!("{base}[matrix]\nisolation = [\"vm\"]\n")).unwrap_err();
        assert!(
            e.message
                .contains("expected \"pid-namespace\" or \"cgroup\""),
            "{e}"
        );
        let e = parse(&format!("[scenario]\nisolation = \"none\"\n{base}")).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }
}
