//! `[expect]` and `[[expect.when]]`: what each cell should do. Overrides are checked at load
//! (patterns compile, rates are rates, `when.cell` names real axis values, kernel comparisons
//! parse, `when.probe` names real probes and values they can give) and applied per cell, in file
//! order, the last match winning.
//!
//! An override keyed on probes applies only when the probe values of the machine the trial runs
//! on are known and equal: with no probe values (not probed yet), it does not apply.
//!
//! `hang_class` is checked against its own table: it is a load error unless that table's
//! outcome (an override's own, else the base's) is `hang`, so a class can never be asked of
//! an exit it would silently not apply to.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::error::ExpectError;
use super::exit::{describe_exit_spec, validate_exit};
use super::locate::{Locator, ScenarioError};
use super::matrix::{Axis, CellMatch, cell_match, cell_matches};
use super::spec::{ExitSpec, ExpectSpec, Outcome, WhenSpec};
use crate::model::cell::Cell;
use crate::model::diagnosis::HangClass;
use crate::model::probe_ids::ProbeValues;

/// The fewest trials a rate gate (`min_rate`) runs: with fewer, the interval is so wide that a
/// regression losing half the trials still clears any useful threshold. The planner raises a
/// rate-gated cell to this count, and the gate fails a cell that has fewer.
pub const MIN_RATE_TRIALS: u32 = 20;

/// The expectation of one cell, with every override applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expectation {
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// A pattern stderr must not match: how a fix that hides its own failure (a drain that
    /// expired, a forced stop) still fails its row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_forbid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<String>,
    /// A regex the hang diagnosis's summary must match (besides containing `diagnosis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis_regex: Option<String>,
    /// The class the hang diagnosis must record (`deadlock`, `blocked`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hang_class: Option<HangClass>,
    /// Gate threshold on the Wilson lower bound of the rate of trials meeting the expectation;
    /// `None`: every trial must meet it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rate: Option<f64>,
    #[serde(default)]
    pub allow_lingering: bool,
    /// Processes allowed to outlive the subject (a comm, or a glob over the command line).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_leftover_processes: Vec<String>,
    /// Paths allowed to be left (globs, placeholders filled per trial).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_leftover_paths: Vec<String>,
}

impl Expectation {
    /// A one-line description, e.g. `exit 0 within 2000 ms` or `hang: "supervisor thread ..."`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match self.outcome {
            Outcome::Exit => {
                parts.push(
                    self.exit
                        .as_ref()
                        .map_or_else(|| "exit".to_string(), describe_exit_spec),
                );
                if let Some(ms) = self.within_ms {
                    parts.push(format!("within {ms} ms"));
                }
                if let Some(p) = &self.stdout {
                    parts.push(format!("stdout ~ /{p}/"));
                }
                if let Some(p) = &self.stderr {
                    parts.push(format!("stderr ~ /{p}/"));
                }
                if let Some(p) = &self.stderr_forbid {
                    parts.push(format!("stderr !~ /{p}/"));
                }
            }
            Outcome::Hang => {
                parts.push("hang".to_string());
                if let Some(d) = &self.diagnosis {
                    parts.push(format!("diagnosed \"{d}\""));
                }
                if let Some(r) = &self.diagnosis_regex {
                    parts.push(format!("diagnosis ~ /{r}/"));
                }
                if let Some(c) = self.hang_class {
                    parts.push(format!("class {}", c.as_str()));
                }
            }
            Outcome::Any => parts.push("any (measured only)".to_string()),
        }
        if let Some(r) = self.min_rate {
            parts.push(format!("rate ≥ {:.1}%", r * 100.0));
        }
        parts.join(", ")
    }
}

/// A comparison with the running kernel's version, e.g. `>= 6.11`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRequirement {
    op: String,
    version: (u32, u32, u32),
}

impl KernelRequirement {
    /// Parses `OP VERSION` with OP one of `< <= > >= == =`.
    pub fn parse(text: &str) -> Option<KernelRequirement> {
        let text = text.trim();
        let op_len = text.find(|c: char| c.is_ascii_digit())?;
        let op = text[..op_len].trim().to_string();
        if !["<", "<=", ">", ">=", "==", "="].contains(&op.as_str()) {
            return None;
        }
        let version = parse_kernel_version(&text[op_len..])?;
        Some(KernelRequirement { op, version })
    }

    /// Whether kernel `release` satisfies the requirement.
    pub fn holds(&self, release: &str) -> bool {
        let Some(v) = parse_kernel_version(release) else {
            return false;
        };
        match self.op.as_str() {
            "<" => v < self.version,
            "<=" => v <= self.version,
            ">" => v > self.version,
            ">=" => v >= self.version,
            _ => v == self.version,
        }
    }
}

/// Parses the leading `major.minor[.patch]` of a kernel release.
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32, u32)> {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// A validated override.
#[derive(Debug, Clone)]
struct When {
    cell: CellMatch,
    kernel: Option<KernelRequirement>,
    /// (probe id, value): every one must hold.
    probes: Vec<(String, String)>,
    /// `diagnosis_regex`, checked.
    diagnosis_regex: Option<String>,
    /// `hang_class`, checked.
    hang_class: Option<HangClass>,
    spec: WhenSpec,
}

/// The validated `[expect]` table: the base expectation and its overrides.
#[derive(Debug, Clone)]
pub(crate) struct Expectations {
    base: ExpectSpec,
    /// The base `diagnosis_regex`, checked.
    base_regex: Option<String>,
    /// The base `hang_class`, checked.
    base_class: Option<HangClass>,
    whens: Vec<When>,
}

/// Checks the fields an expectation and an override share.
fn check_fields(
    exit: &Option<ExitSpec>,
    patterns: [&Option<String>; 3],
    min_rate: &Option<f64>,
) -> Result<(), ExpectError> {
    if let Some(e) = exit {
        validate_exit(e)?;
    }
    for p in patterns.into_iter().flatten() {
        regex::Regex::new(p).map_err(ExpectError::Pattern)?;
    }
    if let Some(r) = min_rate
        && !(0.0..=1.0).contains(r)
    {
        return Err(ExpectError::MinRate(*r));
    }
    Ok(())
}

/// Compiles `diagnosis_regex`, a bad one located at its value.
fn check_diagnosis_regex(
    regex: &Option<toml::Spanned<String>>,
    loc: &Locator<'_>,
) -> Result<Option<String>, ScenarioError> {
    let Some(r) = regex else {
        return Ok(None);
    };
    regex::Regex::new(r.get_ref())
        .map_err(|e| loc.error(r.span(), format!("bad `diagnosis_regex`: {e}")))?;
    Ok(Some(r.get_ref().clone()))
}

/// Checks that `hang_class`, when given, sits in a table whose outcome is `hang`, reported at
/// its value.
fn check_hang_class(
    class: &Option<toml::Spanned<HangClass>>,
    outcome: Outcome,
    loc: &Locator<'_>,
) -> Result<Option<HangClass>, ScenarioError> {
    let Some(c) = class else {
        return Ok(None);
    };
    if outcome != Outcome::Hang {
        let e = ExpectError::OnlyFor {
            field: "hang_class",
            applies_to: "outcome = \"hang\"",
        };
        return Err(loc.error(c.span(), e.to_string()));
    }
    Ok(Some(*c.get_ref()))
}

/// Checks `[expect]` and its overrides against the axes.
pub(crate) fn parse(
    expect: Option<&toml::Spanned<ExpectSpec>>,
    axes: &[Axis],
    loc: &Locator<'_>,
) -> Result<Expectations, ScenarioError> {
    let (span, base): (Range<usize>, ExpectSpec) = match expect {
        Some(e) => (e.span(), e.get_ref().clone()),
        None => (0..0, ExpectSpec::default()),
    };
    let patterns = [&base.stdout, &base.stderr, &base.stderr_forbid];
    check_fields(&base.exit, patterns, &base.min_rate)
        .map_err(|e| loc.error(span.clone(), e.to_string()))?;
    check_globs(
        base.allow_leftover_processes.as_ref(),
        base.allow_leftover_paths.as_ref(),
    )
    .map_err(|e| loc.error(span, e.to_string()))?;
    let base_regex = check_diagnosis_regex(&base.diagnosis_regex, loc)?;
    let base_outcome = base.outcome.unwrap_or_default();
    let base_class = check_hang_class(&base.hang_class, base_outcome, loc)?;
    let mut whens = Vec::new();
    for w in &base.when {
        let at = |m: String| loc.error(w.span(), m);
        let spec = w.get_ref().clone();
        let patterns = [&spec.stdout, &spec.stderr, &spec.stderr_forbid];
        check_fields(&spec.exit, patterns, &spec.min_rate).map_err(|e| at(e.to_string()))?;
        check_globs(
            spec.allow_leftover_processes.as_ref(),
            spec.allow_leftover_paths.as_ref(),
        )
        .map_err(|e| at(e.to_string()))?;
        let diagnosis_regex = check_diagnosis_regex(&spec.diagnosis_regex, loc)?;
        let outcome = spec.outcome.unwrap_or(base_outcome);
        let hang_class = check_hang_class(&spec.hang_class, outcome, loc)?;
        let cell = cell_match(&spec.cell, axes, "when.cell").map_err(|e| at(e.to_string()))?;
        let kernel =
            match &spec.kernel {
                None => None,
                Some(k) => Some(KernelRequirement::parse(k).ok_or_else(|| {
                    at(format!("bad kernel requirement \"{k}\" (e.g. \">= 6.11\")"))
                })?),
            };
        let mut probes = Vec::new();
        for (id, value) in &spec.probe {
            crate::model::probe_ids::check_token(id, value)
                .map_err(|m| at(format!("when.probe: {m}")))?;
            probes.push((id.clone(), value.clone()));
        }
        whens.push(When {
            cell,
            kernel,
            probes,
            diagnosis_regex,
            hang_class,
            spec,
        });
    }
    Ok(Expectations {
        base: ExpectSpec {
            when: Vec::new(),
            ..base
        },
        base_regex,
        base_class,
        whens,
    })
}

impl Expectations {
    /// Whether any override is keyed on probes.
    pub fn uses_probes(&self) -> bool {
        self.whens.iter().any(|w| !w.probes.is_empty())
    }

    /// The expectation of `cell` on a kernel with release `kernel` whose probes gave `probes`
    /// (`None`: not probed, so no override keyed on probes applies).
    pub fn resolve(&self, cell: &Cell, kernel: &str, probes: Option<&ProbeValues>) -> Expectation {
        let base = &self.base;
        let mut e = Expectation {
            outcome: base.outcome.unwrap_or_default(),
            exit: base.exit.clone(),
            within_ms: base.within_ms,
            stdout: base.stdout.clone(),
            stderr: base.stderr.clone(),
            stderr_forbid: base.stderr_forbid.clone(),
            diagnosis: base.diagnosis.clone(),
            diagnosis_regex: self.base_regex.clone(),
            hang_class: self.base_class,
            min_rate: base.min_rate,
            allow_lingering: base.allow_lingering.unwrap_or(false),
            allow_leftover_processes: base.allow_leftover_processes.clone().unwrap_or_default(),
            allow_leftover_paths: base.allow_leftover_paths.clone().unwrap_or_default(),
        };
        let probes_hold = |w: &When| {
            w.probes
                .iter()
                .all(|(id, v)| probes.is_some_and(|p| p.get(id).is_some_and(|got| got == v)))
        };
        let applies = |w: &&When| {
            cell_matches(cell, &w.cell)
                && w.kernel.as_ref().is_none_or(|k| k.holds(kernel))
                && probes_hold(w)
        };
        for w in self.whens.iter().filter(applies) {
            apply(&mut e, &w.spec);
            if w.diagnosis_regex.is_some() {
                e.diagnosis_regex = w.diagnosis_regex.clone();
            }
            if w.hang_class.is_some() {
                e.hang_class = w.hang_class;
            }
        }
        e
    }
}

/// One cell's expectation on one kernel, before the probes of the machine it runs on are known:
/// what `plan::resolve` resolves.
#[derive(Debug, Clone, Copy)]
pub struct ExpectationOf<'a> {
    expect: &'a Expectations,
    cell: &'a Cell,
    kernel: &'a str,
}

impl<'a> ExpectationOf<'a> {
    pub(crate) fn new(expect: &'a Expectations, cell: &'a Cell, kernel: &'a str) -> Self {
        ExpectationOf {
            expect,
            cell,
            kernel,
        }
    }

    /// The expectation where the probes gave `probes` (`None`: not probed), time bounds as
    /// written.
    pub fn with(&self, probes: Option<&ProbeValues>) -> Expectation {
        self.expect.resolve(self.cell, self.kernel, probes)
    }
}

/// Overrides the fields `when` sets.
fn apply(e: &mut Expectation, s: &WhenSpec) {
    if let Some(o) = s.outcome {
        e.outcome = o;
    }
    if s.exit.is_some() {
        e.exit = s.exit.clone();
    }
    if s.within_ms.is_some() {
        e.within_ms = s.within_ms;
    }
    if s.stdout.is_some() {
        e.stdout = s.stdout.clone();
    }
    if s.stderr.is_some() {
        e.stderr = s.stderr.clone();
    }
    if s.stderr_forbid.is_some() {
        e.stderr_forbid = s.stderr_forbid.clone();
    }
    if s.diagnosis.is_some() {
        e.diagnosis = s.diagnosis.clone();
    }
    if s.min_rate.is_some() {
        e.min_rate = s.min_rate;
    }
    if let Some(l) = s.allow_lingering {
        e.allow_lingering = l;
    }
    if let Some(p) = &s.allow_leftover_processes {
        e.allow_leftover_processes = p.clone();
    }
    if let Some(p) = &s.allow_leftover_paths {
        e.allow_leftover_paths = p.clone();
    }
}

/// Checks the globs of `allow_leftover_processes` and `allow_leftover_paths`.
pub(crate) fn check_globs(
    processes: Option<&Vec<String>>,
    paths: Option<&Vec<String>>,
) -> Result<(), ExpectError> {
    for (key, list) in [
        ("allow_leftover_processes", processes),
        ("allow_leftover_paths", paths),
    ] {
        for g in list.into_iter().flatten() {
            glob::Pattern::new(g).map_err(|source| ExpectError::Glob {
                key,
                glob: g.clone(),
                source,
            })?;
            if key == "allow_leftover_paths" && !g.starts_with('/') && !g.starts_with('{') {
                return Err(ExpectError::RelativePath {
                    key,
                    glob: g.clone(),
                });
            }
        }
    }
    Ok(())
}

impl Expectation {
    /// Whether a process left running (its comm and command line) is allowed to be.
    pub fn allows_process(&self, comm: &str, cmdline: &str) -> bool {
        self.allow_leftover_processes
            .iter()
            .any(|g| glob::Pattern::new(g).is_ok_and(|p| p.matches(comm) || p.matches(cmdline)))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::model::diagnosis::HangClass;
    use crate::model::scenario::{Scenario, ScenarioError};

    const BASE: &str =
        "[subject]\nkind = \"command\"\nargv = [\"true\"]\n[matrix]\nv = [\"a\", \"b\"]\n";

    fn parse(expect: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(Path::new("t.toml"), &format!("{BASE}{expect}"))
    }

    #[test]
    fn hang_class_loads_and_an_override_replaces_it() {
        let s = parse(
            "[expect]\noutcome = \"hang\"\nhang_class = \"deadlock\"\n\
             [[expect.when]]\ncell = { v = \"b\" }\nhang_class = \"blocked\"\n",
        )
        .unwrap();
        let cells = s.cells();
        let a = s.expectation(&cells[0], "6.18.0");
        assert_eq!(a.hang_class, Some(HangClass::Deadlock));
        assert_eq!(a.describe(), "hang, class deadlock");
        let b = s.expectation(&cells[1], "6.18.0");
        assert_eq!(b.hang_class, Some(HangClass::Blocked));
        // An override that makes a cell a hang may ask for the class of that hang.
        let s = parse(
            "[[expect.when]]\ncell = { v = \"b\" }\noutcome = \"hang\"\nhang_class = \"spinning\"\n",
        )
        .unwrap();
        assert_eq!(s.expectation(&s.cells()[0], "6.18.0").hang_class, None);
        let b = s.expectation(&s.cells()[1], "6.18.0");
        assert_eq!(b.hang_class, Some(HangClass::Spinning));
    }

    #[test]
    fn hang_class_outside_a_hang_is_an_error_at_its_value() {
        for (text, line, col) in [
            ("[expect]\nhang_class = \"deadlock\"\n", 7, 14),
            (
                "[expect]\noutcome = \"any\"\n\nhang_class = \"stalled\"\n",
                9,
                14,
            ),
            (
                "[expect]\noutcome = \"hang\"\n[[expect.when]]\ncell = { v = \"a\" }\n\
                 outcome = \"exit\"\nhang_class = \"blocked\"\n",
                11,
                14,
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(
                e.message, "`hang_class` only applies to `outcome = \"hang\"`",
                "{text}: {e}"
            );
            assert_eq!(
                (e.file.as_str(), e.line, e.col),
                ("t.toml", line, col),
                "{text}: {e}"
            );
        }
        let e = parse("[expect]\noutcome = \"hang\"\nhang_class = \"livelock\"\n").unwrap_err();
        assert!(e.message.contains("livelock"), "{e}");
    }
}
