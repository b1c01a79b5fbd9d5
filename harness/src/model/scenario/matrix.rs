//! `[matrix]`: the axes a scenario varies and the cells they span, and the cell selectors
//! (`only = {...}`, `when.cell = {...}`) checked against them, so a selector can only name an
//! axis and values the matrix has.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::error::MatrixError;
use super::locate::{Locator, ScenarioError, key_span};
use super::placeholders::BUILTIN_PLACEHOLDERS;
use crate::model::cell::{Cell, ValueKind};

/// A matrix axis: its name and values, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Axis {
    pub name: String,
    pub values: Vec<String>,
    /// Each value's TOML type, parallel to `values` (a cell carries it into records).
    #[serde(default)]
    pub kinds: Vec<ValueKind>,
    /// A table axis (`runtime = { bwrap = ["bwrap", "--"], ... }`): each value's argv list,
    /// parallel to `values`, which an argv element `{AXIS...}` is replaced by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lists: Option<Vec<Vec<String>>>,
}

impl Axis {
    /// The argv list of `value`, when this is a table axis.
    pub fn list(&self, value: &str) -> Option<&[String]> {
        let i = self.values.iter().position(|v| v == value)?;
        self.lists.as_ref()?.get(i).map(Vec::as_slice)
    }
}

/// A validated selector: axis → the values it accepts (every cell when empty).
pub type CellMatch = BTreeMap<String, Vec<String>>;

/// The most cells a matrix may span. Loading expands and checks every cell, and each runs its own
/// trials, so a few short axes must not multiply into millions: a 251-byte file of eleven axes of
/// four values (4^11 cells) made loading run out of time and memory.
pub const MAX_CELLS: usize = 10_000;

/// Checks `[matrix]` and returns its axes in file order.
pub(crate) fn parse(
    matrix: Option<&toml::Spanned<toml::Table>>,
    loc: &Locator<'_>,
) -> Result<Vec<Axis>, ScenarioError> {
    let Some(matrix) = matrix else {
        return Ok(Vec::new());
    };
    let span = matrix.span();
    let axes: Vec<Axis> = matrix
        .get_ref()
        .iter()
        .map(|(axis, values)| {
            parse_axis(axis, values)
                .map_err(|e| loc.error(key_span(loc.source, span.clone(), axis), e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let within = axes.iter().try_fold(1usize, |cells, axis| {
        cells
            .checked_mul(axis.values.len())
            .filter(|&n| n <= MAX_CELLS)
    });
    if within.is_none() {
        return Err(loc.error(
            span,
            format!(
                "the matrix spans more than {MAX_CELLS} cells (the product of the axes' value counts)"
            ),
        ));
    }
    Ok(axes)
}

fn parse_axis(axis: &str, values: &toml::Value) -> Result<Axis, MatrixError> {
    if axis.is_empty()
        || !axis
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(MatrixError::BadName(axis.to_string()));
    }
    if BUILTIN_PLACEHOLDERS.contains(&axis) {
        return Err(MatrixError::Reserved(axis.to_string()));
    }
    if let Some(table) = values.as_table() {
        return table_axis(axis, table);
    }
    let Some(list) = values.as_array() else {
        return Err(MatrixError::NotAList(axis.to_string()));
    };
    if list.is_empty() {
        return Err(MatrixError::NoValues(axis.to_string()));
    }
    let mut seen = BTreeSet::new();
    let mut strings = Vec::new();
    let mut kinds = Vec::new();
    for v in list {
        let Some((s, kind)) = axis_value(v) else {
            return Err(MatrixError::BadValueType(axis.to_string()));
        };
        check_value(axis, &s)?;
        if !seen.insert(s.clone()) {
            return Err(MatrixError::Duplicate {
                axis: axis.to_string(),
                value: s,
            });
        }
        strings.push(s);
        kinds.push(kind);
    }
    Ok(Axis {
        name: axis.to_string(),
        values: strings,
        kinds,
        lists: None,
    })
}

/// What the special axes require of a value.
fn check_value(axis: &str, value: &str) -> Result<(), MatrixError> {
    if axis == "cpus" && value.parse::<usize>().map_or(true, |n| n == 0) {
        return Err(MatrixError::Cpus(value.to_string()));
    }
    if axis == "isolation" && !["pid-namespace", "cgroup"].contains(&value) {
        return Err(MatrixError::Isolation(value.to_string()));
    }
    Ok(())
}

/// A table axis: its keys are the values (strings), each with the argv list `{AXIS...}` splices.
fn table_axis(axis: &str, table: &toml::Table) -> Result<Axis, MatrixError> {
    if table.is_empty() {
        return Err(MatrixError::NoValues(axis.to_string()));
    }
    let mut values = Vec::new();
    let mut lists = Vec::new();
    for (value, list) in table {
        check_value(axis, value)?;
        let strings: Option<Vec<String>> = list.as_array().and_then(|items| {
            items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect()
        });
        let Some(strings) = strings else {
            return Err(MatrixError::NotArgv {
                axis: axis.to_string(),
                value: value.clone(),
            });
        };
        values.push(value.clone());
        lists.push(strings);
    }
    Ok(Axis {
        name: axis.to_string(),
        kinds: vec![ValueKind::String; values.len()],
        values,
        lists: Some(lists),
    })
}

/// Every cell of `axes`, in file order (the first axis varies slowest).
pub(crate) fn cells(axes: &[Axis]) -> Vec<Cell> {
    let mut cells = vec![Cell::default()];
    for axis in axes {
        let mut next = Vec::with_capacity(cells.len() * axis.values.len());
        for cell in &cells {
            for (i, value) in axis.values.iter().enumerate() {
                let mut c = cell.clone();
                let kind = axis.kinds.get(i).copied().unwrap_or_default();
                c.push_typed(&axis.name, value, kind);
                next.push(c);
            }
        }
        cells = next;
    }
    cells
}

/// `{ AXIS = VALUE | [VALUES] }` checked against the axes; `what` names the key in messages.
pub(crate) fn cell_match(
    map: &BTreeMap<String, toml::Value>,
    axes: &[Axis],
    what: &str,
) -> Result<CellMatch, MatrixError> {
    let mut out = BTreeMap::new();
    for (axis, value) in map {
        let Some(a) = axes.iter().find(|a| &a.name == axis) else {
            return Err(MatrixError::NoSuchAxis {
                what: what.to_string(),
                axis: axis.clone(),
            });
        };
        let values: Vec<String> = match value {
            toml::Value::Array(list) => list.iter().filter_map(axis_value_string).collect(),
            v => axis_value_string(v).into_iter().collect(),
        };
        if values.is_empty() {
            return Err(MatrixError::NoSelection {
                what: what.to_string(),
                axis: axis.clone(),
            });
        }
        for v in &values {
            if !a.values.contains(v) {
                return Err(MatrixError::NotAValue {
                    what: what.to_string(),
                    axis: axis.clone(),
                    value: v.clone(),
                });
            }
        }
        out.insert(axis.clone(), values);
    }
    Ok(out)
}

/// Whether `cell` is one a selector accepts.
pub(crate) fn cell_matches(cell: &Cell, wanted: &CellMatch) -> bool {
    wanted.iter().all(|(axis, values)| {
        cell.get(axis)
            .is_some_and(|v| values.iter().any(|x| x == v))
    })
}

fn axis_value_string(value: &toml::Value) -> Option<String> {
    axis_value(value).map(|(text, _)| text)
}

/// A value as a cell carries it: its text and its TOML type.
fn axis_value(value: &toml::Value) -> Option<(String, ValueKind)> {
    match value {
        toml::Value::String(s) => Some((s.clone(), ValueKind::String)),
        toml::Value::Integer(i) => Some((i.to_string(), ValueKind::Integer)),
        toml::Value::Boolean(b) => Some((b.to_string(), ValueKind::Boolean)),
        _ => None,
    }
}

/// `[scenario] opt_in`: axis values whose cells are left out of a plan unless asked for (see
/// [`Scenario::opted_out`](super::Scenario::opted_out)). Each key must be an axis and each value
/// one of its values, so a typo cannot silently opt nothing out.
pub(crate) fn parse_opt_in(
    opt_in: Option<&toml::Spanned<toml::Table>>,
    axes: &[Axis],
    loc: &Locator<'_>,
) -> Result<Vec<(String, Vec<String>)>, ScenarioError> {
    let Some(table) = opt_in else {
        return Ok(Vec::new());
    };
    let span = table.span();
    table
        .get_ref()
        .iter()
        .map(|(axis, values)| {
            // The table's own span: `key_span` finds keys at line starts, and opt_in is usually
            // an inline table.
            let at = || span.clone();
            let Some(known) = axes.iter().find(|a| &a.name == axis) else {
                return Err(loc.error(at(), format!("opt_in: no matrix axis \"{axis}\"")));
            };
            let list = match values {
                toml::Value::Array(list) => list.iter().map(axis_value_string).collect(),
                v => vec![axis_value_string(v)],
            };
            let mut chosen = Vec::new();
            for value in list {
                match value {
                    Some(v) if known.values.contains(&v) => chosen.push(v),
                    Some(v) => {
                        let message = format!("opt_in: \"{v}\" is not a value of axis \"{axis}\"");
                        return Err(loc.error(at(), message));
                    }
                    None => {
                        let message =
                            format!("opt_in.{axis}: values are strings, integers or booleans");
                        return Err(loc.error(at(), message));
                    }
                }
            }
            if chosen.len() == known.values.len() {
                let message = format!("opt_in: every value of axis \"{axis}\" would be left out");
                return Err(loc.error(at(), message));
            }
            Ok((axis.clone(), chosen))
        })
        .collect()
}

/// A `chaos` axis picks each cell's chaos mode, so its values must be modes (located at the
/// axis).
pub(crate) fn check_chaos_axis(
    matrix: Option<&toml::Spanned<toml::Table>>,
    axes: &[Axis],
    loc: &Locator<'_>,
) -> Result<(), ScenarioError> {
    let (Some(matrix), Some(axis)) = (matrix, axes.iter().find(|a| a.name == "chaos")) else {
        return Ok(());
    };
    for value in &axis.values {
        if let Err(e) = value.parse::<crate::model::chaos::Chaos>() {
            return Err(loc.error(key_span(loc.source, matrix.span(), "chaos"), e));
        }
    }
    Ok(())
}
