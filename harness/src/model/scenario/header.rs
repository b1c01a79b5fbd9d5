//! `[scenario]`: the scenario's name, trial count, seed and timing, with their defaults
//! applied and their bounds checked (a deadline, a quiescence window shorter than it).

use std::path::Path;
use std::time::Duration;

use super::locate::{Locator, ScenarioError};
use super::spec::{Isolation, QuiescenceOf, ScenarioHeader};
use crate::model::limit_spec::{Limits, MIN_MEMORY_MAX, MIN_PIDS_MAX, parse_size};

/// The validated header.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub name: String,
    pub description: String,
    pub trials: u32,
    pub seed: u64,
    pub deadline: Duration,
    pub quiescence: Duration,
    pub quiescence_of: QuiescenceOf,
    pub linger: Duration,
    pub limits: Limits,
    pub isolation: Isolation,
    pub chaos: crate::model::chaos::Chaos,
}

/// Applies the defaults of `[scenario]` (the name defaults to the file's stem) and checks it.
pub(crate) fn parse(
    header: &ScenarioHeader,
    path: &Path,
    loc: &Locator<'_>,
) -> Result<Header, ScenarioError> {
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
        return Err(loc.error(
            0..0,
            format!("scenario name \"{name}\" must be non-empty letters, digits, '.', '_' or '-'"),
        ));
    }
    let trials = header.trials.unwrap_or(10);
    let deadline = Duration::from_millis(header.deadline_ms.unwrap_or(30_000));
    let quiescence = Duration::from_millis(header.quiescence_ms.unwrap_or(1_000));
    let linger = Duration::from_millis(header.linger_ms.unwrap_or(1_000));
    // serde does not locate a table it defaulted; point at the header when there is one.
    let span = loc.source.find("[scenario]").map_or(0..0, |s| s..s);
    if trials == 0 {
        return Err(loc.error(span, "trials must be at least 1"));
    }
    if deadline.is_zero() {
        return Err(loc.error(span, "deadline_ms must be positive"));
    }
    if quiescence >= deadline {
        return Err(loc.error(
            span,
            "quiescence_ms must be shorter than deadline_ms (use 0 to turn early hang verdicts off)",
        ));
    }
    let limits = limits(header, loc)?;
    let chaos = match &header.chaos {
        None => Default::default(),
        Some(mode) => mode.parse().map_err(|e: String| {
            let at = loc
                .source
                .find("\nchaos")
                .map_or(span.clone(), |s| s + 1..s + 1);
            loc.error(at, e)
        })?,
    };
    Ok(Header {
        chaos,
        limits,
        name,
        description: header.description.clone(),
        trials,
        seed: header.seed.unwrap_or(0),
        deadline,
        quiescence,
        quiescence_of: header.quiescence_of.unwrap_or_default(),
        linger,
        isolation: header.isolation.unwrap_or_default(),
    })
}

/// `pids_max` and `memory_max`, checked against their floors; an error points at its key.
fn limits(header: &ScenarioHeader, loc: &Locator<'_>) -> Result<Limits, ScenarioError> {
    let at = |key: &str| {
        let s = loc
            .source
            .find(&format!("{key} "))
            .or_else(|| loc.source.find(key));
        s.map_or(0..0, |s| s..s + key.len())
    };
    if let Some(n) = header.pids_max
        && n < MIN_PIDS_MAX
    {
        return Err(loc.error(
            at("pids_max"),
            format!("pids_max must be at least {MIN_PIDS_MAX} (wedge's keeper and init count too)"),
        ));
    }
    let memory_max = match &header.memory_max {
        None => None,
        Some(toml::Value::Integer(n)) => Some(
            u64::try_from(*n)
                .map_err(|_| loc.error(at("memory_max"), "memory_max must not be negative"))?,
        ),
        Some(toml::Value::String(s)) => Some(
            parse_size(s).map_err(|e| loc.error(at("memory_max"), format!("memory_max: {e}")))?,
        ),
        Some(_) => {
            return Err(loc.error(
                at("memory_max"),
                "memory_max must be a number of bytes or a string such as \"64M\"",
            ));
        }
    };
    if let Some(m) = memory_max
        && m < MIN_MEMORY_MAX
    {
        return Err(loc.error(
            at("memory_max"),
            format!("memory_max must be at least {}M", MIN_MEMORY_MAX >> 20),
        ));
    }
    Ok(Limits {
        pids_max: header.pids_max,
        memory_max,
    })
}
