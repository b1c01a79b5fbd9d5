//! What can be wrong in a scenario before it is located in its file: each check returns one of
//! these, and the loader turns it into a [`super::ScenarioError`] at `file:line:col` (the texts
//! are the messages users and tests see, so they are part of the format).

use super::exit::ACCEPTED;

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
}
