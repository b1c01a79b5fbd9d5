//! `{placeholder}` interpolation. A scenario loads only if every placeholder of its subject and
//! steps resolves in every cell (to an axis value, a built-in or `{rand:A-B}`), so filling them
//! in a trial cannot fail on a name.

use std::ops::Range;

use super::error::PlaceholderError;
use super::locate::{Locator, ScenarioError};
use crate::model::cell::Cell;

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

/// `{rand:A-B}`: the bounds, when `name` is such a placeholder.
pub fn rand_bounds(name: &str) -> Option<(u64, u64)> {
    let (a, b) = name.strip_prefix("rand:")?.split_once('-')?;
    let (a, b) = (a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?);
    (a <= b).then_some((a, b))
}

/// Replaces `{name}` with `vars[name]`; `{{` and `}}` are literal braces.
pub fn interpolate(
    text: &str,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<String, PlaceholderError> {
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
                            let text = text.to_string();
                            return Err(PlaceholderError::Unclosed { name, text });
                        }
                    }
                }
                match vars(&name) {
                    Some(v) => out.push_str(&v),
                    None => {
                        let text = text.to_string();
                        return Err(PlaceholderError::Unknown { name, text });
                    }
                }
            }
            '}' => {
                return Err(PlaceholderError::Stray(text.to_string()));
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// `NAME` when `text` is exactly `{NAME...}`: an argv element that a table axis's list replaces.
pub fn splice_name(text: &str) -> Option<&str> {
    let name = text.strip_prefix('{')?.strip_suffix("...}")?;
    let plain = !name.is_empty() && !name.contains(['{', '}']);
    plain.then_some(name)
}

/// `argv` with every element that is exactly `{AXIS...}` replaced by `lists(AXIS)` and every
/// other element, and every string of a spliced list, filled by `fill`. The one splicing rule
/// for every argv (the subject's `argv`, `command` and `args`, the `argv` of `spawn` and `run` steps).
pub fn splice(
    argv: &[String],
    lists: &dyn Fn(&str) -> Option<Vec<String>>,
    fill: &dyn Fn(&str) -> Result<String, PlaceholderError>,
) -> Result<Vec<String>, PlaceholderError> {
    let mut out = Vec::with_capacity(argv.len());
    for element in argv {
        match splice_name(element) {
            Some(axis) => {
                let list = lists(axis).ok_or_else(|| PlaceholderError::NoList(axis.to_string()))?;
                for item in &list {
                    out.push(fill(item)?);
                }
            }
            None => out.push(fill(element)?),
        }
    }
    Ok(out)
}

/// The interpolated strings of one part of the file, and where that part is.
pub(crate) struct Strings<'a> {
    /// The part's table (the subject, a step, the matrix): errors point into it.
    pub span: Range<usize>,
    /// Strings with placeholders.
    pub texts: Vec<&'a String>,
    /// Argv elements: placeholders, or as a whole `{AXIS...}` to splice a table axis's list.
    pub argv: Vec<&'a String>,
}

/// Names of the table axes (whose values are argv lists), for the check.
pub(crate) type ListAxes<'a> = &'a [&'a str];

/// Checks that every placeholder of `parts` resolves in every cell, and that every `{AXIS...}`
/// is a whole argv element naming a table axis.
pub(crate) fn check(
    cells: &[Cell],
    parts: &[Strings<'_>],
    list_axes: ListAxes<'_>,
    loc: &Locator<'_>,
) -> Result<(), ScenarioError> {
    for part in parts {
        for text in &part.argv {
            if let Some(axis) = splice_name(text) {
                check_splice(axis, cells, list_axes).map_err(|e| {
                    loc.error(text_span(loc.source, &part.span, text), e.to_string())
                })?;
            }
        }
    }
    for cell in cells {
        for part in parts {
            let plain = part.argv.iter().filter(|t| splice_name(t).is_none());
            for text in part.texts.iter().chain(plain) {
                fill_checked(text, cell).map_err(|(e, exact)| match exact {
                    true => loc.error(text_span(loc.source, &part.span, text), e.to_string()),
                    false => loc.error(part.span.clone(), e.to_string()),
                })?;
            }
        }
    }
    Ok(())
}

/// `{AXIS...}` as a whole argv element: AXIS must be a table axis.
fn check_splice(
    axis: &str,
    cells: &[Cell],
    list_axes: ListAxes<'_>,
) -> Result<(), PlaceholderError> {
    if list_axes.contains(&axis) {
        return Ok(());
    }
    let is_axis = cells.first().is_some_and(|c| c.get(axis).is_some());
    if is_axis {
        Err(PlaceholderError::NotATableAxis(axis.to_string()))
    } else {
        Err(PlaceholderError::NoSuchAxis(axis.to_string()))
    }
}

/// Fills `text` in `cell` with placeholder values of the right shape; the error says whether it
/// is about a `{AXIS...}` (located at the text itself) or not (located at the part).
fn fill_checked(text: &str, cell: &Cell) -> Result<(), (PlaceholderError, bool)> {
    let spliced = std::cell::RefCell::new(None);
    let vars = |name: &str| {
        if let Some(axis) = name.strip_suffix("...") {
            spliced.borrow_mut().get_or_insert_with(|| axis.to_string());
            return Some(String::new());
        }
        if let Some(v) = cell.get(name) {
            Some(v.to_string())
        } else {
            (BUILTIN_PLACEHOLDERS.contains(&name) || rand_bounds(name).is_some()).then(String::new)
        }
    };
    interpolate(text, &vars).map_err(|m| (m, false))?;
    match spliced.into_inner() {
        None => Ok(()),
        Some(axis) => Err((
            PlaceholderError::SplicedInside {
                axis,
                text: text.to_string(),
            },
            true,
        )),
    }
}

/// Where `text` is written inside `span` (its first occurrence), else the span itself.
fn text_span(source: &str, span: &Range<usize>, text: &str) -> Range<usize> {
    let start = span.start.min(source.len());
    let end = span.end.clamp(start, source.len());
    let within = source[start..end].find(text).map(|i| start + i);
    let after = || source[start..].find(text).map(|i| start + i);
    match within.or_else(after) {
        Some(at) => at..at + text.len(),
        None => span.clone(),
    }
}
