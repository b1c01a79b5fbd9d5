//! What can be wrong in a scenario before it is located in its file: each check returns one of
//! these, and the loader turns it into a `ScenarioError` at `file:line:col` (the texts
//! are the messages users and tests see, so they are part of the format).

/// What an `exit` key accepts, for error messages.
pub const ACCEPTED: &str = "an exit code 0..=255, \"success\", \"failure\" (a non-zero code \
     or a signal), \"nonzero\", \"signal\", \"any\", a signal name such as \"KILL\", or a list \
     of these such as [0, 130]";

/// An `exit` value that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExitError {
    #[error("exit code {0} is not in 0..=255 (expected {ACCEPTED})")]
    CodeRange(i64),
    #[error("unknown exit status \"{0}\" (expected {ACCEPTED})")]
    UnknownWord(String),
    #[error("an empty list of exits accepts nothing (expected {ACCEPTED})")]
    EmptyList,
    #[error("a list of exits cannot hold another list (expected {ACCEPTED})")]
    NestedList,
}

/// A placeholder (`{name}`, `{AXIS...}`) that cannot be filled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceholderError {
    #[error("unclosed placeholder `{{{name}` in \"{text}\"")]
    Unclosed { name: String, text: String },
    #[error("unknown placeholder `{{{name}}}` in \"{text}\"")]
    Unknown { name: String, text: String },
    #[error("stray `}}` in \"{0}\" (write `}}}}` for a literal brace)")]
    Stray(String),
    #[error("`{{{0}...}}`: axis \"{0}\" is not a table of argv lists")]
    NoList(String),
    #[error(
        "`{{{0}...}}` splices a list, but axis \"{0}\" is not a table of lists; \
         write `{0} = {{ VALUE = [\"ARG\", ...], ... }}` in [matrix]"
    )]
    NotATableAxis(String),
    #[error(
        "`{{{0}...}}`: no axis \"{0}\" in [matrix] (a table axis, \
         `{0} = {{ VALUE = [\"ARG\", ...] }}`, can be spliced into an argv)"
    )]
    NoSuchAxis(String),
    #[error(
        "`{{{axis}...}}` in \"{text}\": a list can only be spliced as a whole element \
         of `argv`, `command`, `args` or a `spawn` or `run` step's `argv`"
    )]
    SplicedInside { axis: String, text: String },
}

/// A field of `[expect]` or of an override that is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ExpectError {
    #[error(transparent)]
    Exit(#[from] ExitError),
    #[error("bad pattern: {0}")]
    Pattern(#[source] regex::Error),
    #[error("min_rate {0} is not in [0, 1]")]
    MinRate(f64),
    #[error("{key}: bad glob \"{glob}\": {source}")]
    Glob {
        key: &'static str,
        glob: String,
        #[source]
        source: glob::PatternError,
    },
    #[error(
        "{key}: \"{glob}\" must be an absolute path (or start with a placeholder such as {{tmp}})"
    )]
    RelativePath { key: &'static str, glob: String },
    /// A key given in a table where it means nothing.
    #[error("`{field}` only applies to `{applies_to}`")]
    OnlyFor {
        field: &'static str,
        applies_to: &'static str,
    },
}

/// An axis of `[matrix]`, or a selector of its cells (`only`, `when.cell`), that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatrixError {
    #[error("axis name \"{0}\" must be letters, digits, '_' or '-'")]
    BadName(String),
    #[error("axis name \"{0}\" is reserved")]
    Reserved(String),
    #[error(
        "axis \"{0}\" must be an array of values, or a table of argv lists \
         (`{0} = {{ VALUE = [\"ARG\", ...], ... }}`)"
    )]
    NotAList(String),
    #[error("axis \"{0}\" has no values")]
    NoValues(String),
    #[error("axis \"{0}\": values must be strings, integers or booleans")]
    BadValueType(String),
    #[error("axis \"{axis}\": value \"{value}\" appears twice")]
    Duplicate { axis: String, value: String },
    #[error("axis \"cpus\": \"{0}\" is not a positive integer")]
    Cpus(String),
    #[error(
        "axis \"isolation\": \"{0}\" is not an isolation (expected \"pid-namespace\" or \"cgroup\")"
    )]
    Isolation(String),
    #[error(
        "axis \"{axis}\": value \"{value}\" must be a list of strings (the argv \
         `{{{axis}...}}` splices), e.g. {value} = [\"{value}\", \"--\"]"
    )]
    NotArgv { axis: String, value: String },
    #[error("`{what}`: no axis \"{axis}\" in [matrix]")]
    NoSuchAxis { what: String, axis: String },
    #[error("`{what}.{axis}`: give a value or a list of values")]
    NoSelection { what: String, axis: String },
    #[error("`{what}.{axis}`: \"{value}\" is not a value of the axis")]
    NotAValue {
        what: String,
        axis: String,
        value: String,
    },
}

/// A step of `[[steps]]` or `[[teardown]]` that is not valid.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Exit(#[from] ExitError),
    #[error(transparent)]
    Only(#[from] MatrixError),
    #[error("`start` runs in every cell; it cannot have `only`")]
    StartWithOnly,
    #[error("the subject is already started")]
    AlreadyStarted,
    #[error(
        "failpoint \"{0}\" must come before the subject starts (failpoints are set through its environment)"
    )]
    LateFailpoint(String),
    #[error("probability {0} is not in [0, 1]")]
    Probability(f64),
    #[error("`argv` is empty")]
    EmptyArgv,
    #[error("a process named \"{0}\" is already spawned")]
    SpawnedTwice(String),
    #[error("timeout_ms must be positive")]
    ZeroTimeout,
    #[error(
        "a teardown step must be `run`, `sleep` or `signal` with `to = \"process\"` (the subject is stopped by then)"
    )]
    NotForTeardown,
    #[error("unknown signal \"{0}\"")]
    UnknownSignal(String),
    #[error("`to = \"process\"` needs `process`")]
    UnnamedProcess,
    #[error("`process` needs `to = \"process\"`")]
    ProcessWithoutTarget,
    #[error("count must be at least 1")]
    ZeroCount,
    /// `until = "<until>"` without the field it needs.
    #[error("`until = \"{until}\"` needs `{field}`")]
    Needs {
        until: &'static str,
        field: &'static str,
    },
    #[error("bad pattern: {0}")]
    Pattern(#[source] regex::Error),
    /// A field given where it means nothing.
    #[error("`{field}` only applies to `{applies_to}`")]
    OnlyFor {
        field: &'static str,
        applies_to: &'static str,
    },
    #[error("`process = \"{0}\"`: no earlier `spawn` step has that name")]
    NotSpawned(String),
    #[error("`syscall` lists no syscall")]
    NoSyscall,
    #[error("unknown syscall \"{0}\"")]
    UnknownSyscall(String),
    #[error("unknown ioctl request \"{0}\"")]
    UnknownIoctl(String),
}

/// A `[[classify]]` entry that is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("a class's `name` must not be empty")]
    EmptyName,
    #[error("class \"{0}\" is already defined earlier in the file (names must be unique)")]
    Duplicate(String),
    #[error(
        "class name \"{0}\" is reserved (reports use it for lost trials recorded before \
         classification)"
    )]
    Reserved(String),
    #[error("class \"{0}\" needs at least one of `stderr`, `stdout`, `diagnosis` or `verdict`")]
    NoCondition(String),
    #[error("bad `{key}` pattern: {source}")]
    Pattern {
        key: &'static str,
        #[source]
        source: regex::Error,
    },
    #[error("`verdict` lists no verdict")]
    NoVerdict,
    #[error("unknown verdict \"{0}\" (expected one of {1})")]
    UnknownVerdict(String, String),
    #[error(transparent)]
    Cell(#[from] MatrixError),
}
