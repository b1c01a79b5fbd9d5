//! A cell of a scenario's matrix: one value per axis, in axis order; `--cell` filters; shards.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One value per axis, in the scenario's axis order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cell(Vec<(String, String)>);

impl Cell {
    /// Builds a cell from `(axis, value)` pairs in order.
    pub fn new(pairs: Vec<(String, String)>) -> Cell {
        Cell(pairs)
    }

    pub fn push(&mut self, axis: &str, value: &str) {
        self.0.push((axis.to_string(), value.to_string()));
    }

    /// The value of `axis`, if the cell has that axis.
    pub fn get(&self, axis: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(a, _)| a == axis)
            .map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// `axis=value,axis=value` (or `-` for a scenario without a matrix).
    pub fn id(&self) -> String {
        if self.0.is_empty() {
            return "-".to_string();
        }
        self.0
            .iter()
            .map(|(a, v)| format!("{a}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The cell without `axis` (used to group rows of a table whose columns are that axis).
    pub fn without(&self, axis: &str) -> Cell {
        Cell(self.0.iter().filter(|(a, _)| a != axis).cloned().collect())
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
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (a, v) in &self.0 {
            map.serialize_entry(a, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Cell {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Cell, D::Error> {
        struct CellVisitor;
        impl<'de> Visitor<'de> for CellVisitor {
            type Value = Cell;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of axis to value")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Cell, M::Error> {
                let mut pairs = Vec::new();
                while let Some((a, v)) = map.next_entry::<String, String>()? {
                    pairs.push((a, v));
                }
                Ok(Cell(pairs))
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

impl std::str::FromStr for CellFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<CellFilter, String> {
        match s.split_once('=') {
            Some((a, v)) if !a.is_empty() && !v.is_empty() => Ok(CellFilter {
                axis: a.trim().to_string(),
                value: v.trim().to_string(),
            }),
            _ => Err(format!("\"{s}\" is not AXIS=VALUE")),
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
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("\"{s}\" is not I/N"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("\"{i}\" is not a number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("\"{n}\" is not a number"))?;
        if count == 0 || index == 0 || index > count {
            return Err(format!("shard {s}: need 1 <= I <= N"));
        }
        Ok(Shard { index, count })
    }
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
