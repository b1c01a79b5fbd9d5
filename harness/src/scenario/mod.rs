//! Scenario scripts: loading and validating TOML files (errors carry file:line:col), the matrix of
//! cells, per-cell expectations and `{placeholder}` interpolation.

pub mod spec;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cell::Cell;
pub use spec::{
    ExitSpec, Outcome, SignalTarget, StdinMode, Step, Stream, SubjectSpec, Until, Which,
};
use spec::{ExpectSpec, ScenarioFile, WhenSpec};

/// A problem in a scenario file, located at `file:line:col`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct ScenarioError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// The line and column (both from 1) of byte `offset` in `source`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, col)
}

/// Tagged tables (`[subject]`, `[[steps]]`) are parsed as a whole, so the TOML parser locates
/// an unknown key at its table; find the key's own line inside that table.
fn refine_span(source: &str, span: Range<usize>, message: &str) -> Range<usize> {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return span;
    };
    let Some(key) = rest.split('`').next() else {
        return span;
    };
    // The reported span is the table (or nothing): search from its start onwards.
    let end = source.len();
    let start = span.start.min(end);
    let mut offset = start;
    for line in source[start..end].split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(after) = trimmed.strip_prefix(key)
            && after.trim_start().starts_with('=')
        {
            let at = offset + (line.len() - trimmed.len());
            return at..at + key.len();
        }
        offset += line.len();
    }
    span
}

/// A matrix axis: its name and values, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Axis {
    pub name: String,
    pub values: Vec<String>,
}

/// A comparison with the running kernel's version, e.g. `>= 6.11`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRequirement {
    op: String,
    version: (u32, u32, u32),
}

impl KernelRequirement {
    fn parse(text: &str) -> Option<KernelRequirement> {
        let text = text.trim();
        let op_len = text.find(|c: char| c.is_ascii_digit())?;
        let op = text[..op_len].trim().to_string();
        if !["<", "<=", ">", ">=", "==", "="].contains(&op.as_str()) {
            return None;
        }
        let version = crate::proc::parse_kernel_version(&text[op_len..])?;
        Some(KernelRequirement { op, version })
    }

    /// Whether kernel `release` satisfies the requirement.
    pub fn holds(&self, release: &str) -> bool {
        let Some(v) = crate::proc::parse_kernel_version(release) else {
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<String>,
    /// Gate threshold on the Wilson lower bound of the rate of trials meeting the expectation;
    /// `None`: every trial must meet it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rate: Option<f64>,
    #[serde(default)]
    pub allow_lingering: bool,
}

impl Expectation {
    /// A one-line description, e.g. `exit 0 within 2000 ms` or `hang: "supervisor thread ..."`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match self.outcome {
            Outcome::Exit => {
                parts.push(match &self.exit {
                    Some(ExitSpec::Code(c)) => format!("exit {c}"),
                    Some(ExitSpec::Word(w)) => format!("exit {w}"),
                    None => "exit".to_string(),
                });
                if let Some(ms) = self.within_ms {
                    parts.push(format!("within {ms} ms"));
                }
                if let Some(p) = &self.stdout {
                    parts.push(format!("stdout ~ /{p}/"));
                }
                if let Some(p) = &self.stderr {
                    parts.push(format!("stderr ~ /{p}/"));
                }
            }
            Outcome::Hang => {
                parts.push("hang".to_string());
                if let Some(d) = &self.diagnosis {
                    parts.push(format!("diagnosed \"{d}\""));
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

struct When {
    cell: BTreeMap<String, Vec<String>>,
    kernel: Option<KernelRequirement>,
    spec: WhenSpec,
}

/// A validated scenario.
pub struct Scenario {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub trials: u32,
    pub seed: u64,
    pub deadline: Duration,
    pub quiescence: Duration,
    pub linger: Duration,
    pub subject: SubjectSpec,
    pub axes: Vec<Axis>,
    /// The steps, with `start` made explicit, and each step's `line:col`.
    pub steps: Vec<(Step, (usize, usize))>,
    /// Each step's `only`, as axis → accepted values.
    step_only: Vec<BTreeMap<String, Vec<String>>>,
    expect: ExpectSpec,
    whens: Vec<When>,
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

/// Placeholders always available in strings, besides the matrix axes.
pub const BUILTIN_PLACEHOLDERS: &[&str] = &[
    "tmp",
    "work",
    "socket",
    "seed",
    "trial",
    "scenario_dir",
    "bin_dir",
];

/// Replaces `{name}` with `vars[name]`; `{{` and `}}` are literal braces.
pub fn interpolate(text: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) => name.push(ch),
                        None => {
                            return Err(format!("unclosed placeholder `{{{name}` in \"{text}\""));
                        }
                    }
                }
                match vars(&name) {
                    Some(v) => out.push_str(&v),
                    None => return Err(format!("unknown placeholder `{{{name}}}` in \"{text}\"")),
                }
            }
            '}' => {
                return Err(format!(
                    "stray `}}` in \"{text}\" (write `}}}}` for a literal brace)"
                ));
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// Parses a signal name (`TERM`, `SIGTERM`) or number.
pub fn parse_signal(text: &str) -> Option<nix::sys::signal::Signal> {
    use std::str::FromStr;
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok();
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name).ok()
}

fn validate_exit(spec: &ExitSpec) -> Result<(), String> {
    match spec {
        ExitSpec::Code(c) if !(0..=255).contains(c) => {
            Err(format!("exit code {c} is not in 0..=255"))
        }
        ExitSpec::Code(_) => Ok(()),
        ExitSpec::Word(w) => match w.as_str() {
            "success" | "failure" | "nonzero" | "signal" | "any" => Ok(()),
            other if parse_signal(other).is_some() => Ok(()),
            other => Err(format!(
                "unknown exit status \"{other}\" (expected a code, success, failure, nonzero, signal, any or a signal name)"
            )),
        },
    }
}

/// `{ AXIS = VALUE | [VALUES] }` checked against the axes: axis → accepted values.
fn cell_match(
    map: &BTreeMap<String, toml::Value>,
    axes: &[Axis],
    what: &str,
) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut out = BTreeMap::new();
    for (axis, value) in map {
        let Some(a) = axes.iter().find(|a| &a.name == axis) else {
            return Err(format!("`{what}`: no axis \"{axis}\" in [matrix]"));
        };
        let values: Vec<String> = match value {
            toml::Value::Array(list) => list.iter().filter_map(axis_value_string).collect(),
            v => axis_value_string(v).into_iter().collect(),
        };
        if values.is_empty() {
            return Err(format!("`{what}.{axis}`: give a value or a list of values"));
        }
        for v in &values {
            if !a.values.contains(v) {
                return Err(format!(
                    "`{what}.{axis}`: \"{v}\" is not a value of the axis"
                ));
            }
        }
        out.insert(axis.clone(), values);
    }
    Ok(out)
}

fn cell_matches(cell: &Cell, wanted: &BTreeMap<String, Vec<String>>) -> bool {
    wanted.iter().all(|(axis, values)| {
        cell.get(axis)
            .is_some_and(|v| values.iter().any(|x| x == v))
    })
}

fn axis_value_string(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

struct Loader<'a> {
    file: String,
    source: &'a str,
}

impl Loader<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ScenarioError {
        let (line, col) = line_col(self.source, span.start);
        ScenarioError {
            file: self.file.clone(),
            line,
            col,
            message: message.into(),
        }
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

    /// Parses and validates scenario text that came from `path`.
    pub fn parse(path: &Path, source: &str) -> Result<Scenario, ScenarioError> {
        let loader = Loader {
            file: path.display().to_string(),
            source,
        };
        let file: ScenarioFile = toml::from_str(source).map_err(|e| {
            let span = refine_span(source, e.span().unwrap_or(0..0), e.message());
            loader.error(span, e.message().trim().to_string())
        })?;
        let header = &file.scenario;
        let name = match &header.name {
            Some(n) => n.clone(),
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(loader.error(
                0..0,
                format!(
                    "scenario name \"{name}\" must be non-empty letters, digits, '.', '_' or '-'"
                ),
            ));
        }
        let trials = header.trials.unwrap_or(10);
        let deadline = Duration::from_millis(header.deadline_ms.unwrap_or(30_000));
        let quiescence = Duration::from_millis(header.quiescence_ms.unwrap_or(1_000));
        let linger = Duration::from_millis(header.linger_ms.unwrap_or(1_000));
        let header_span = source.find("[scenario]").map_or(0..0, |s| s..s);
        if trials == 0 {
            return Err(loader.error(header_span, "trials must be at least 1"));
        }
        if deadline.is_zero() {
            return Err(loader.error(header_span, "deadline_ms must be positive"));
        }
        if quiescence >= deadline {
            return Err(loader.error(
                header_span,
                "quiescence_ms must be shorter than deadline_ms (use 0 to turn early hang verdicts off)",
            ));
        }

        // The matrix.
        let mut axes = Vec::new();
        if let Some(matrix) = &file.matrix {
            for (axis, values) in matrix.get_ref() {
                let span = matrix.span();
                if axis.is_empty()
                    || !axis
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(loader.error(
                        span,
                        format!("axis name \"{axis}\" must be letters, digits, '_' or '-'"),
                    ));
                }
                if BUILTIN_PLACEHOLDERS.contains(&axis.as_str()) {
                    return Err(loader.error(span, format!("axis name \"{axis}\" is reserved")));
                }
                let Some(list) = values.as_array() else {
                    return Err(
                        loader.error(span, format!("axis \"{axis}\" must be an array of values"))
                    );
                };
                if list.is_empty() {
                    return Err(loader.error(span, format!("axis \"{axis}\" has no values")));
                }
                let mut seen = BTreeSet::new();
                let mut strings = Vec::new();
                for v in list {
                    let Some(s) = axis_value_string(v) else {
                        return Err(loader.error(
                            span,
                            format!(
                                "axis \"{axis}\": values must be strings, integers or booleans"
                            ),
                        ));
                    };
                    if axis == "cpus" && s.parse::<usize>().map_or(true, |n| n == 0) {
                        return Err(loader.error(
                            span,
                            format!("axis \"cpus\": \"{s}\" is not a positive integer"),
                        ));
                    }
                    if !seen.insert(s.clone()) {
                        return Err(loader.error(
                            span,
                            format!("axis \"{axis}\": value \"{s}\" appears twice"),
                        ));
                    }
                    strings.push(s);
                }
                axes.push(Axis {
                    name: axis.clone(),
                    values: strings,
                });
            }
        }
        let axis_names: BTreeSet<String> = axes.iter().map(|a| a.name.clone()).collect();

        // Steps: make `start` explicit and check each step.
        let mut steps = Vec::new();
        let mut step_only = Vec::new();
        let mut started = false;
        let mut spawned = BTreeSet::new();
        for step in &file.steps {
            let span = step.span();
            let at = line_col(source, span.start);
            let err = |m: String| loader.error(span.clone(), m);
            let needs_start = !matches!(
                step.get_ref(),
                Step::Failpoint { .. } | Step::Sleep { .. } | Step::Start { .. }
            );
            if needs_start && !started {
                steps.push((
                    Step::Start {
                        only: spec::Only::new(),
                    },
                    at,
                ));
                step_only.push(BTreeMap::new());
                started = true;
            }
            let only = cell_match(step.get_ref().only(), &axes, "only").map_err(&err)?;
            match step.get_ref() {
                Step::Start { .. } => {
                    if !only.is_empty() {
                        return Err(err(
                            "`start` runs in every cell; it cannot have `only`".into()
                        ));
                    }
                    if started {
                        return Err(err("the subject is already started".into()));
                    }
                    started = true;
                }
                Step::Failpoint {
                    name, probability, ..
                } => {
                    if started {
                        return Err(err(format!(
                            "failpoint \"{name}\" must come before the subject starts (failpoints are set through its environment)"
                        )));
                    }
                    if let Some(p) = probability
                        && !(0.0..=1.0).contains(p)
                    {
                        return Err(err(format!("probability {p} is not in [0, 1]")));
                    }
                }
                Step::Wait {
                    until,
                    process,
                    thread,
                    syscall,
                    request,
                    pattern,
                    path,
                    exit,
                    ..
                } => {
                    match until {
                        Until::Blocked => {
                            let Some(sc) = syscall else {
                                return Err(err("`until = \"blocked\"` needs `syscall`".into()));
                            };
                            let names = sc.names();
                            if names.is_empty() {
                                return Err(err("`syscall` lists no syscall".into()));
                            }
                            for name in &names {
                                if crate::proc::syscall::number(name).is_none() {
                                    return Err(err(format!("unknown syscall \"{name}\"")));
                                }
                            }
                            if let Some(req) = request {
                                if !names.contains(&"ioctl") {
                                    return Err(err(
                                        "`request` only applies to `syscall = \"ioctl\"`".into(),
                                    ));
                                }
                                if crate::proc::syscall::ioctl_request_values(req).is_none() {
                                    return Err(err(format!("unknown ioctl request \"{req}\"")));
                                }
                            }
                        }
                        Until::Process if process.is_none() => {
                            return Err(err("`until = \"process\"` needs `process`".into()));
                        }
                        Until::Output => match pattern {
                            None => return Err(err("`until = \"output\"` needs `pattern`".into())),
                            Some(p) => {
                                regex::Regex::new(p)
                                    .map_err(|e| err(format!("bad pattern: {e}")))?;
                            }
                        },
                        Until::Path if path.is_none() => {
                            return Err(err("`until = \"path\"` needs `path`".into()));
                        }
                        _ => {}
                    }
                    if thread.is_some() && *until != Until::Blocked {
                        return Err(err("`thread` only applies to `until = \"blocked\"`".into()));
                    }
                    if let Some(e) = exit {
                        if *until != Until::Exited {
                            return Err(err("`exit` only applies to `until = \"exited\"`".into()));
                        }
                        validate_exit(e).map_err(err)?;
                    }
                    if *until == Until::Exited
                        && let Some(p) = process
                        && !spawned.contains(p.as_str())
                    {
                        return Err(err(format!(
                            "`process = \"{p}\"`: no earlier `spawn` step has that name"
                        )));
                    }
                }
                Step::Signal {
                    signal,
                    to,
                    process,
                    count,
                    ..
                } => {
                    if parse_signal(signal).is_none() {
                        return Err(err(format!("unknown signal \"{signal}\"")));
                    }
                    if *to == SignalTarget::Process && process.is_none() {
                        return Err(err("`to = \"process\"` needs `process`".into()));
                    }
                    if *to != SignalTarget::Process && process.is_some() {
                        return Err(err("`process` needs `to = \"process\"`".into()));
                    }
                    if *count == Some(0) {
                        return Err(err("count must be at least 1".into()));
                    }
                }
                Step::Spawn { name, argv, .. } => {
                    if argv.is_empty() {
                        return Err(err("`argv` is empty".into()));
                    }
                    if !spawned.insert(name.clone()) {
                        return Err(err(format!(
                            "a process named \"{name}\" is already spawned"
                        )));
                    }
                }
                Step::Write { .. } | Step::CloseStdin { .. } | Step::Sleep { .. } => {}
            }
            steps.push((step.get_ref().clone(), at));
            step_only.push(only);
        }
        if !started {
            let end = line_col(source, source.len());
            steps.push((
                Step::Start {
                    only: spec::Only::new(),
                },
                end,
            ));
            step_only.push(BTreeMap::new());
        }

        // Subject.
        let subject = file.subject.get_ref().clone();
        let subject_span = file.subject.span();
        if let SubjectSpec::Command { argv, .. } = &subject
            && argv.is_empty()
        {
            return Err(loader.error(subject_span, "`argv` is empty"));
        }
        if let SubjectSpec::WedgeRun { command, .. } = &subject
            && command.is_empty()
        {
            return Err(loader.error(subject_span, "`command` is empty"));
        }

        // Expectations.
        let (expect_span, expect) = match &file.expect {
            Some(e) => (e.span(), e.get_ref().clone()),
            None => (0..0, ExpectSpec::default()),
        };
        let check_fields = |span: Range<usize>,
                            exit: &Option<ExitSpec>,
                            stdout: &Option<String>,
                            stderr: &Option<String>,
                            min_rate: &Option<f64>|
         -> Result<(), ScenarioError> {
            if let Some(e) = exit {
                validate_exit(e).map_err(|m| loader.error(span.clone(), m))?;
            }
            for p in [stdout, stderr].into_iter().flatten() {
                regex::Regex::new(p)
                    .map_err(|e| loader.error(span.clone(), format!("bad pattern: {e}")))?;
            }
            if let Some(r) = min_rate
                && !(0.0..=1.0).contains(r)
            {
                return Err(loader.error(span, format!("min_rate {r} is not in [0, 1]")));
            }
            Ok(())
        };
        check_fields(
            expect_span.clone(),
            &expect.exit,
            &expect.stdout,
            &expect.stderr,
            &expect.min_rate,
        )?;
        let mut whens = Vec::new();
        for w in &expect.when {
            let span = w.span();
            let spec = w.get_ref().clone();
            check_fields(
                span.clone(),
                &spec.exit,
                &spec.stdout,
                &spec.stderr,
                &spec.min_rate,
            )?;
            let cell = cell_match(&spec.cell, &axes, "when.cell")
                .map_err(|m| loader.error(span.clone(), m))?;
            let kernel = match &spec.kernel {
                None => None,
                Some(k) => Some(KernelRequirement::parse(k).ok_or_else(|| {
                    loader.error(
                        span.clone(),
                        format!("bad kernel requirement \"{k}\" (e.g. \">= 6.11\")"),
                    )
                })?),
            };
            whens.push(When { cell, kernel, spec });
        }

        let scenario = Scenario {
            name,
            file: path.to_path_buf(),
            description: header.description.clone(),
            trials,
            seed: header.seed.unwrap_or(0),
            deadline,
            quiescence,
            linger,
            subject,
            axes,
            steps,
            step_only,
            expect: ExpectSpec {
                when: Vec::new(),
                ..expect
            },
            whens,
        };

        // Every placeholder must resolve in every cell.
        for cell in scenario.cells() {
            let vars = |name: &str| {
                if axis_names.contains(name) {
                    cell.get(name).map(str::to_string)
                } else {
                    (BUILTIN_PLACEHOLDERS.contains(&name)
                        || crate::subject::rand_bounds(name).is_some())
                    .then(String::new)
                }
            };
            for text in scenario.subject_strings() {
                interpolate(text, &vars).map_err(|m| loader.error(subject_span.clone(), m))?;
            }
            for (step, (line, col)) in &scenario.steps {
                for text in step_strings(step) {
                    interpolate(text, &vars).map_err(|m| ScenarioError {
                        file: loader.file.clone(),
                        line: *line,
                        col: *col,
                        message: m,
                    })?;
                }
            }
        }
        let _ = expect_span;
        Ok(scenario)
    }

    fn subject_strings(&self) -> Vec<&String> {
        let mut out = Vec::new();
        match &self.subject {
            SubjectSpec::Command { argv, env, cwd, .. } => {
                out.extend(argv);
                out.extend(env.values());
                out.extend(cwd);
            }
            SubjectSpec::WedgeRun {
                command,
                policy,
                sandbox,
                variant,
                drain_ms,
                args,
                env,
                cwd,
                ..
            } => {
                out.extend(command);
                out.extend(policy);
                out.extend(sandbox);
                out.extend(variant);
                out.extend(drain_ms);
                out.extend(args);
                out.extend(env.values());
                out.extend(cwd);
            }
            SubjectSpec::WedgeAgent {
                socket,
                workers,
                strategy,
                args,
                env,
                cwd,
                ..
            } => {
                out.extend(socket);
                out.extend(workers);
                out.extend(strategy);
                out.extend(args);
                out.extend(env.values());
                out.extend(cwd);
            }
        }
        out
    }

    /// Every cell of the matrix, in file order (the first axis varies slowest).
    pub fn cells(&self) -> Vec<Cell> {
        let mut cells = vec![Cell::default()];
        for axis in &self.axes {
            let mut next = Vec::with_capacity(cells.len() * axis.values.len());
            for cell in &cells {
                for value in &axis.values {
                    let mut c = cell.clone();
                    c.push(&axis.name, value);
                    next.push(c);
                }
            }
            cells = next;
        }
        cells
    }

    /// The expectation of `cell` on a kernel with release `kernel`.
    pub fn expectation(&self, cell: &Cell, kernel: &str) -> Expectation {
        let base = &self.expect;
        let mut e = Expectation {
            outcome: base.outcome.unwrap_or_default(),
            exit: base.exit.clone(),
            within_ms: base.within_ms,
            stdout: base.stdout.clone(),
            stderr: base.stderr.clone(),
            diagnosis: base.diagnosis.clone(),
            min_rate: base.min_rate,
            allow_lingering: base.allow_lingering.unwrap_or(false),
        };
        for w in &self.whens {
            let cell_matches = w.cell.iter().all(|(axis, values)| {
                cell.get(axis)
                    .is_some_and(|v| values.iter().any(|x| x == v))
            });
            let kernel_matches = w.kernel.as_ref().is_none_or(|k| k.holds(kernel));
            if !(cell_matches && kernel_matches) {
                continue;
            }
            let s = &w.spec;
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
            if s.diagnosis.is_some() {
                e.diagnosis = s.diagnosis.clone();
            }
            if s.min_rate.is_some() {
                e.min_rate = s.min_rate;
            }
            if let Some(l) = s.allow_lingering {
                e.allow_lingering = l;
            }
        }
        e
    }

    /// Whether step `index` runs in `cell` (its `only` matches).
    pub fn step_applies(&self, index: usize, cell: &Cell) -> bool {
        self.step_only
            .get(index)
            .is_none_or(|only| cell_matches(cell, only))
    }

    /// The directory the scenario file is in.
    pub fn dir(&self) -> PathBuf {
        self.file
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// Every interpolated string of a step.
pub fn step_strings(step: &Step) -> Vec<&String> {
    let mut out = Vec::new();
    match step {
        Step::Wait {
            process,
            thread,
            pattern,
            path,
            ..
        } => {
            out.extend(process);
            out.extend(thread);
            out.extend(pattern);
            out.extend(path);
        }
        Step::Signal { process, .. } => out.extend(process),
        Step::Write { data, .. } => out.push(data),
        Step::Failpoint { name, action, .. } => {
            out.push(name);
            out.push(action);
        }
        Step::Spawn { argv, env, cwd, .. } => {
            out.extend(argv);
            out.extend(env.values());
            out.extend(cwd);
        }
        Step::Start { .. } | Step::CloseStdin { .. } | Step::Sleep { .. } => {}
    }
    out
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
        assert!(matches!(s.steps[0].0, Step::Start { .. }));
        assert!(matches!(s.steps[1].0, Step::Wait { .. }));
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
}
