//! Located errors: every problem in a scenario file is reported as `file:line:col: message`
//! (the CLI exits 2 on it), pointing at the table or key that is wrong.

use std::ops::Range;

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
/// Likewise a bad `exit` of a step (its value is read through the step's tag, which loses the
/// value's own position): found by its message, when the error points at a table header.
pub(crate) fn refine_span(source: &str, span: Range<usize>, message: &str) -> Range<usize> {
    let key = match message.strip_prefix("unknown field `") {
        Some(rest) => rest.split('`').next(),
        None if message.contains(super::error::ACCEPTED) && at_header(source, &span) => {
            Some("exit")
        }
        None => None,
    };
    let Some(key) = key else {
        return span;
    };
    key_span(source, span, key)
}

/// Where `key = ...` is written in the table that starts at `span` (searching from its start
/// onwards), else `span`.
pub(crate) fn key_span(source: &str, span: Range<usize>, key: &str) -> Range<usize> {
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

/// Whether `span` starts a table header (`[subject]`, `[[steps]]`) rather than a value.
fn at_header(source: &str, span: &Range<usize>) -> bool {
    let start = span.start.min(source.len());
    let line_start = source[..start].rfind('\n').map_or(0, |nl| nl + 1);
    source[line_start..start].trim().is_empty() && source[start..].starts_with('[')
}

/// Turns messages about parts of one file into located errors.
pub(crate) struct Locator<'a> {
    pub file: String,
    pub source: &'a str,
}

impl Locator<'_> {
    /// An error at byte `span.start` of the file.
    pub fn error(&self, span: Range<usize>, message: impl Into<String>) -> ScenarioError {
        self.at(line_col(self.source, span.start), message)
    }

    /// An error at a known `(line, col)`.
    pub fn at(&self, (line, col): (usize, usize), message: impl Into<String>) -> ScenarioError {
        ScenarioError {
            file: self.file.clone(),
            line,
            col,
            message: message.into(),
        }
    }
}
