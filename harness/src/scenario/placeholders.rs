//! `{placeholder}` interpolation. A scenario loads only if every placeholder of its subject and
//! steps resolves in every cell (to an axis value, a built-in or `{rand:A-B}`), so filling them
//! in a trial cannot fail on a name.

use std::ops::Range;

use super::locate::{Locator, ScenarioError};
use crate::cell::Cell;

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

/// The interpolated strings of one part of the file, and where that part is.
pub(crate) enum Strings<'a> {
    /// The subject's strings, located at its table.
    Subject(Range<usize>, Vec<&'a String>),
    /// A step's strings, located at its `line:col`.
    Step((usize, usize), Vec<&'a String>),
}

/// Checks that every placeholder of `parts` resolves in every cell.
pub(crate) fn check(
    cells: &[Cell],
    parts: &[Strings<'_>],
    loc: &Locator<'_>,
) -> Result<(), ScenarioError> {
    for cell in cells {
        let vars = |name: &str| {
            if let Some(v) = cell.get(name) {
                Some(v.to_string())
            } else {
                (BUILTIN_PLACEHOLDERS.contains(&name) || rand_bounds(name).is_some())
                    .then(String::new)
            }
        };
        let fill_all = |texts: &[&String]| {
            texts
                .iter()
                .try_for_each(|text| interpolate(text, &vars).map(drop))
        };
        for part in parts {
            match part {
                Strings::Subject(span, texts) => {
                    fill_all(texts).map_err(|m| loc.error(span.clone(), m))?;
                }
                Strings::Step(at, texts) => fill_all(texts).map_err(|m| loc.at(*at, m))?,
            }
        }
    }
    Ok(())
}
