//! The resource limits a scenario may set (`[scenario] pids_max`, `memory_max`),
//! their bounds, and which of them a machine can enforce ([`Enforcement`]): plain data, so
//! scenarios and planning read them without the code that applies limits to cgroups
//! (the engine's `limits` module).
//!
//! Guarantee: a limit a scenario sets is never dropped silently: [`Enforcement::refuses`] names
//! the first set limit no controller of the machine enforces, and the cell is skipped with it.

/// `pids.max` of a trial whose scenario names none: far above what a test subject starts, far
/// below what starves a host.
pub const DEFAULT_PIDS_MAX: u64 = 4096;
/// The smallest `pids_max` a scenario may set: wedge's keeper and init count too.
pub const MIN_PIDS_MAX: u64 = 8;
/// The smallest `memory_max` a scenario may set: below it not even the keeper runs.
pub const MIN_MEMORY_MAX: u64 = 4 << 20;

/// The limits a scenario asks for (`[scenario] pids_max`, `memory_max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// `None`: [`DEFAULT_PIDS_MAX`], applied where it can be and otherwise only noted.
    pub pids_max: Option<u64>,
    /// Bytes; `None`: no memory limit.
    pub memory_max: Option<u64>,
}

/// Which limits a machine can enforce: for each controller, why not when it cannot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enforcement {
    /// Why no `pids.max` can be set here; `None`: it can.
    pub pids: Option<String>,
    /// Why no memory limit can be set here; `None`: it can.
    pub memory: Option<String>,
}

impl Enforcement {
    /// Why a cell with `limits` cannot run here, if it cannot: a limit the scenario sets that no
    /// controller enforces (the default pids bound is never a reason).
    pub fn refuses(&self, limits: &Limits) -> Option<String> {
        let wanted = [
            (limits.pids_max.is_some(), &self.pids, "pids_max"),
            (limits.memory_max.is_some(), &self.memory, "memory_max"),
        ];
        wanted.into_iter().find_map(|(set, gap, key)| match gap {
            Some(why) if set => Some(format!("{key} cannot be enforced: {why}")),
            _ => None,
        })
    }
}

/// A size that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("\"{0}\" is not a size (bytes, or a number with K, M or G)")]
    NotASize(String),
    #[error("\"{0}\" is too large")]
    TooLarge(String),
}

/// A memory size: bytes, or a number with a binary suffix `K`, `M`, `G` (e.g. `"64M"`).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| SizeError::NotASize(text.to_string()))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| SizeError::TooLarge(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size(" 8K "), Ok(8192));
        assert!(parse_size("M").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("64MB").is_err());
        assert!(
            parse_size("99999999999999G")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
    }
}
