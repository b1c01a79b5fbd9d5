//! A cell of a scenario's matrix: one value per axis, in axis order; `--cell` filters; shards;
//! each trial's seed and the CPUs a cell asks for. Layer: model (plain data, no I/O).

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The TOML type a matrix value was written with: records and summaries keep it (`"cpus": 2`,
/// not `"cpus": "2"`), while matching (`--cell cpus=2`, `only`, `when.cell`) compares the text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValueKind {
    #[default]
    String,
    Integer,
    Boolean,
}

/// One value per axis, in the scenario's axis order, each as text with its TOML type. Two cells
/// are equal when their texts are (a record written before types were kept, `"cpus": "2"`, is
/// the same cell as `"cpus": 2`).
#[derive(Debug, Clone, Default)]
pub struct Cell {
    pairs: Vec<(String, String)>,
    /// Parallel to `pairs`.
    kinds: Vec<ValueKind>,
}

impl PartialEq for Cell {
    fn eq(&self, other: &Cell) -> bool {
        self.pairs == other.pairs
    }
}

impl Eq for Cell {}

impl std::hash::Hash for Cell {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.pairs.hash(state);
    }
}

impl PartialOrd for Cell {
    fn partial_cmp(&self, other: &Cell) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cell {
    fn cmp(&self, other: &Cell) -> std::cmp::Ordering {
        self.pairs.cmp(&other.pairs)
    }
}

impl Cell {
    /// Builds a cell from `(axis, value)` pairs in order, every value a string.
    pub fn new(pairs: Vec<(String, String)>) -> Cell {
        let kinds = vec![ValueKind::String; pairs.len()];
        Cell { pairs, kinds }
    }

    pub fn push(&mut self, axis: &str, value: &str) {
        self.push_typed(axis, value, ValueKind::String);
    }

    /// Adds `axis = value`, written in the scenario as a `kind`.
    pub fn push_typed(&mut self, axis: &str, value: &str, kind: ValueKind) {
        self.pairs.push((axis.to_string(), value.to_string()));
        self.kinds.push(kind);
    }

    /// The TOML type of `axis`'s value, if the cell has that axis.
    pub fn kind(&self, axis: &str) -> Option<ValueKind> {
        let i = self.pairs.iter().position(|(a, _)| a == axis)?;
        Some(self.kinds.get(i).copied().unwrap_or_default())
    }

    /// The value of `axis`, if the cell has that axis.
    pub fn get(&self, axis: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(a, _)| a == axis)
            .map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// `axis=value,axis=value` (or `-` for a scenario without a matrix).
    pub fn id(&self) -> String {
        if self.pairs.is_empty() {
            return "-".to_string();
        }
        self.pairs
            .iter()
            .map(|(a, v)| format!("{a}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The cell without `axis` (used to group rows of a table whose columns are that axis).
    pub fn without(&self, axis: &str) -> Cell {
        let mut out = Cell::default();
        for (i, (a, v)) in self.pairs.iter().enumerate() {
            if a != axis {
                out.push_typed(a, v, self.kinds.get(i).copied().unwrap_or_default());
            }
        }
        out
    }

    /// Whether the cell matches every filter: for each axis named in the filters, one of the values
    /// given for it. A filter on an axis the cell lacks does not match.
    pub fn matches(&self, filters: &[CellFilter]) -> bool {
        let mut axes: Vec<&str> = filters.iter().map(|f| f.axis.as_str()).collect();
        axes.dedup();
        axes.iter().all(|axis| {
            filters
                .iter()
                .filter(|f| f.axis == *axis)
                .any(|f| self.get(axis) == Some(f.value.as_str()))
        })
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id())
    }
}

impl Serialize for Cell {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.pairs.len()))?;
        for (i, (a, v)) in self.pairs.iter().enumerate() {
            let kind = self.kinds.get(i).copied().unwrap_or_default();
            match (kind, v.parse::<i64>(), v.parse::<bool>()) {
                (ValueKind::Integer, Ok(n), _) => map.serialize_entry(a, &n)?,
                (ValueKind::Boolean, _, Ok(b)) => map.serialize_entry(a, &b)?,
                _ => map.serialize_entry(a, v)?,
            }
        }
        map.end()
    }
}

/// A value as a record holds it: a string (every record before types were kept), an integer
/// or a boolean.
#[derive(Deserialize)]
#[serde(untagged)]
enum RecordedValue {
    Text(String),
    Integer(i64),
    Boolean(bool),
}

impl<'de> Deserialize<'de> for Cell {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Cell, D::Error> {
        struct CellVisitor;
        impl<'de> Visitor<'de> for CellVisitor {
            type Value = Cell;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of axis to value (a string, integer or boolean)")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Cell, M::Error> {
                let mut cell = Cell::default();
                while let Some((a, v)) = map.next_entry::<String, RecordedValue>()? {
                    match v {
                        RecordedValue::Text(s) => cell.push_typed(&a, &s, ValueKind::String),
                        RecordedValue::Integer(n) => {
                            cell.push_typed(&a, &n.to_string(), ValueKind::Integer);
                        }
                        RecordedValue::Boolean(b) => {
                            cell.push_typed(&a, &b.to_string(), ValueKind::Boolean);
                        }
                    }
                }
                Ok(cell)
            }
        }
        deserializer.deserialize_map(CellVisitor)
    }
}

/// `--cell AXIS=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellFilter {
    pub axis: String,
    pub value: String,
}

/// A `--cell` or `--shard` value that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CellArgError {
    #[error("\"{0}\" is not AXIS=VALUE")]
    NotAFilter(String),
    #[error("\"{0}\" is not I/N")]
    NotAShard(String),
    #[error("\"{0}\" is not a number")]
    NotANumber(String),
    #[error("shard {0}: need 1 <= I <= N")]
    OutOfRange(String),
}

impl std::str::FromStr for CellFilter {
    type Err = CellArgError;
    fn from_str(s: &str) -> Result<CellFilter, CellArgError> {
        match s.split_once('=') {
            Some((a, v)) if !a.is_empty() && !v.is_empty() => Ok(CellFilter {
                axis: a.trim().to_string(),
                value: v.trim().to_string(),
            }),
            _ => Err(CellArgError::NotAFilter(s.to_string())),
        }
    }
}

/// `--shard I/N`: the I-th (from 1) of N deterministic slices of the cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Whether the cell at position `position` (in the suite's cell order) belongs to this shard.
    pub fn contains(&self, position: usize) -> bool {
        position % self.count == self.index - 1
    }
}

impl std::str::FromStr for Shard {
    type Err = CellArgError;
    fn from_str(s: &str) -> Result<Shard, CellArgError> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| CellArgError::NotAShard(s.to_string()))?;
        let number = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| CellArgError::NotANumber(t.to_string()))
        };
        let (index, count) = (number(i)?, number(n)?);
        if count == 0 || index == 0 || index > count {
            return Err(CellArgError::OutOfRange(s.to_string()));
        }
        Ok(Shard { index, count })
    }
}

/// The seed of trial `trial` of `cell` in `scenario` with base seed `base`.
pub fn trial_seed(base: u64, scenario: &str, cell: &Cell, trial: u32) -> u64 {
    use std::hash::Hasher as _;
    // FNV-1a over the identity (scenario, NUL, cell id), mixed with splitmix64. `write` is plain
    // FNV-1a over the bytes; `Hash::hash` would add a length or terminator of its own.
    let mut fnv = fnv::FnvHasher::default();
    fnv.write(scenario.as_bytes());
    fnv.write(&[0]);
    fnv.write(cell.id().as_bytes());
    let h = fnv.finish();
    let mut z = base ^ h ^ (u64::from(trial)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Pins for a cell: `Some(k)` CPUs when the cell has a `cpus` axis.
pub fn cpus_wanted(cell: &Cell) -> Option<usize> {
    cell.get("cpus").and_then(|c| c.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(pairs: &[(&str, &str)]) -> Cell {
        Cell::new(
            pairs
                .iter()
                .map(|(a, v)| (a.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn ids_and_filters() {
        let c = cell(&[("variant", "fixed"), ("cpus", "2")]);
        assert_eq!(c.id(), "variant=fixed,cpus=2");
        assert_eq!(Cell::default().id(), "-");
        let f = |s: &str| s.parse::<CellFilter>().unwrap();
        assert!(c.matches(&[f("variant=fixed")]));
        assert!(c.matches(&[f("variant=pre-fix"), f("variant=fixed"), f("cpus=2")]));
        assert!(!c.matches(&[f("variant=fixed"), f("cpus=1")]));
        assert!(!c.matches(&[f("strategy=inline")]));
        assert!("novalue".parse::<CellFilter>().is_err());
        assert_eq!(c.without("cpus").id(), "variant=fixed");
    }

    #[test]
    fn json_keeps_axis_order() {
        let c = cell(&[("zeta", "1"), ("alpha", "2")]);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"zeta":"1","alpha":"2"}"#);
        assert_eq!(serde_json::from_str::<Cell>(&json).unwrap(), c);
    }

    #[test]
    fn json_keeps_value_types_and_reads_old_string_records() {
        let mut c = Cell::default();
        c.push_typed("strategy", "zygote", ValueKind::String);
        c.push_typed("cpus", "2", ValueKind::Integer);
        c.push_typed("pty", "true", ValueKind::Boolean);
        c.push_typed("label", "2", ValueKind::String);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            json,
            r#"{"strategy":"zygote","cpus":2,"pty":true,"label":"2"}"#
        );
        let back: Cell = serde_json::from_str(&json).unwrap();
        assert_eq!(back.kind("cpus"), Some(ValueKind::Integer));
        assert_eq!(back.kind("pty"), Some(ValueKind::Boolean));
        assert_eq!(back.kind("label"), Some(ValueKind::String));
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        // A record from before: every value a string. The same cell, and `--cell` matches.
        let old: Cell =
            serde_json::from_str(r#"{"strategy":"zygote","cpus":"2","pty":"true","label":"2"}"#)
                .unwrap();
        assert_eq!(old, c);
        assert_eq!(old.kind("cpus"), Some(ValueKind::String));
        let f = |s: &str| s.parse::<CellFilter>().unwrap();
        assert!(back.matches(&[f("cpus=2"), f("pty=true")]));
        assert!(old.matches(&[f("cpus=2")]));
        assert_eq!(c.without("strategy").kind("cpus"), Some(ValueKind::Integer));
        assert!(serde_json::from_str::<Cell>(r#"{"cpus":1.5}"#).is_err());
    }

    #[test]
    fn shards_partition() {
        let shards: Vec<Shard> = (1..=3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        for pos in 0..20 {
            assert_eq!(shards.iter().filter(|s| s.contains(pos)).count(), 1);
        }
        assert!("0/3".parse::<Shard>().is_err());
        assert!("4/3".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }
}
