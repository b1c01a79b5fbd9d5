//! `[[classify]]`: why a trial was lost, in classes the scenario names. Each entry is checked at
//! load (a non-empty name used once, patterns that compile, verdicts a record can have, a `cell`
//! selector naming real axis values, at least one condition) and kept compiled.
//!
//! [`classify`] is the whole rule, pure: the first entry whose every condition holds for the
//! trial's [`Evidence`] names its class, and a trial that matches none is [`OTHER`]. Which trials
//! are lost, and where their evidence comes from, is the record's business (`model::loss`).

use std::collections::BTreeSet;

use regex::Regex;

use super::error::ClassifyError;
use super::locate::{Locator, ScenarioError};
use super::matrix::{Axis, CellMatch, cell_match, cell_matches};
use super::spec::ClassifySpec;
use crate::model::cell::Cell;

/// The class of a lost trial no entry matches.
pub const OTHER: &str = "other";

/// The name reports give a lost trial whose record carries no class (written before
/// classification): no entry may take it.
pub const UNCLASSIFIED: &str = "unclassified";

/// The verdicts a `verdict` condition may name: every verdict a run trial can have, as records
/// spell them (`skipped` cells are never trials, so never lost).
pub const VERDICTS: [&str; 5] = ["pass", "fail", "hang", "crash", "error"];

/// One validated `[[classify]]` entry.
#[derive(Debug, Clone)]
pub struct LossClass {
    pub name: String,
    stderr: Option<Regex>,
    stdout: Option<Regex>,
    diagnosis: Option<Regex>,
    /// The verdicts it applies to; empty: any.
    verdicts: Vec<String>,
    /// The cells it applies to; empty: every cell.
    cell: CellMatch,
}

/// What a lost trial shows, all a class is matched against.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    pub cell: &'a Cell,
    /// The verdict as records spell it (`fail`, `hang`, ...).
    pub verdict: &'a str,
    /// The captured stdout of the subject and of the processes the steps started.
    pub stdout: &'a str,
    /// Their captured stderr.
    pub stderr: &'a str,
    /// The hang diagnosis's text, when the verdict has a diagnosis.
    pub diagnosis: Option<&'a str>,
}

impl LossClass {
    /// Whether every condition of the entry holds for `e`.
    pub fn matches(&self, e: &Evidence<'_>) -> bool {
        let text = |re: &Option<Regex>, text: Option<&str>| {
            re.as_ref()
                .is_none_or(|re| text.is_some_and(|t| re.is_match(t)))
        };
        cell_matches(e.cell, &self.cell)
            && (self.verdicts.is_empty() || self.verdicts.iter().any(|v| v == e.verdict))
            && text(&self.stderr, Some(e.stderr))
            && text(&self.stdout, Some(e.stdout))
            && text(&self.diagnosis, e.diagnosis)
    }
}

/// The class of a lost trial showing `e`: the first entry that matches, else [`OTHER`].
pub fn classify<'a>(classes: &'a [LossClass], e: &Evidence<'_>) -> &'a str {
    classes
        .iter()
        .find(|c| c.matches(e))
        .map_or(OTHER, |c| c.name.as_str())
}

/// Checks every `[[classify]]` entry against the axes, in file order.
pub(crate) fn parse(
    specs: &[toml::Spanned<ClassifySpec>],
    axes: &[Axis],
    loc: &Locator<'_>,
) -> Result<Vec<LossClass>, ScenarioError> {
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let class = parse_one(spec, axes, loc)?;
        if !names.insert(class.name.clone()) {
            let e = ClassifyError::Duplicate(class.name);
            return Err(loc.error(spec.get_ref().name.span(), e.to_string()));
        }
        out.push(class);
    }
    Ok(out)
}

/// One entry, each problem located at its key's value (a missing condition at the entry).
fn parse_one(
    spec: &toml::Spanned<ClassifySpec>,
    axes: &[Axis],
    loc: &Locator<'_>,
) -> Result<LossClass, ScenarioError> {
    let s = spec.get_ref();
    let name = s.name.get_ref().trim().to_string();
    let at = |span: std::ops::Range<usize>, e: ClassifyError| loc.error(span, e.to_string());
    if name.is_empty() {
        return Err(at(s.name.span(), ClassifyError::EmptyName));
    }
    if name == UNCLASSIFIED {
        return Err(at(s.name.span(), ClassifyError::Reserved(name)));
    }
    if s.stderr.is_none() && s.stdout.is_none() && s.diagnosis.is_none() && s.verdict.is_none() {
        return Err(at(spec.span(), ClassifyError::NoCondition(name)));
    }
    let pattern = |key: &'static str, p: &Option<toml::Spanned<String>>| {
        p.as_ref()
            .map(|p| {
                Regex::new(p.get_ref())
                    .map_err(|source| at(p.span(), ClassifyError::Pattern { key, source }))
            })
            .transpose()
    };
    let cell = match &s.cell {
        Some(c) => cell_match(c.get_ref(), axes, "classify.cell")
            .map_err(|e| at(c.span(), ClassifyError::Cell(e)))?,
        None => CellMatch::new(),
    };
    Ok(LossClass {
        stderr: pattern("stderr", &s.stderr)?,
        stdout: pattern("stdout", &s.stdout)?,
        diagnosis: pattern("diagnosis", &s.diagnosis)?,
        verdicts: verdicts(s.verdict.as_ref(), loc)?,
        cell,
        name,
    })
}

/// The checked `verdict` list (empty when not given).
fn verdicts(
    list: Option<&toml::Spanned<Vec<toml::Spanned<String>>>>,
    loc: &Locator<'_>,
) -> Result<Vec<String>, ScenarioError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    if list.get_ref().is_empty() {
        return Err(loc.error(list.span(), ClassifyError::NoVerdict.to_string()));
    }
    list.get_ref()
        .iter()
        .map(|v| {
            let name = v.get_ref();
            if VERDICTS.contains(&name.as_str()) {
                Ok(name.clone())
            } else {
                let e = ClassifyError::UnknownVerdict(name.clone(), VERDICTS.join(", "));
                Err(loc.error(v.span(), e.to_string()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::scenario::{Scenario, ScenarioError};

    const BASE: &str = "[subject]\nkind = \"command\"\nargv = [\"true\"]\n\
                        [matrix]\nstrategy = [\"inline\", \"pool\"]\n";

    fn parse(classify: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(Path::new("t.toml"), &format!("{BASE}{classify}"))
    }

    fn cell(strategy: &str) -> Cell {
        Cell::new(vec![("strategy".to_string(), strategy.to_string())])
    }

    fn evidence<'a>(cell: &'a Cell, verdict: &'a str, stderr: &'a str) -> Evidence<'a> {
        Evidence {
            cell,
            verdict,
            stdout: "",
            stderr,
            diagnosis: None,
        }
    }

    const THREE: &str = "[[classify]]\nname = \"cwd race\"\nstderr = \"notify socket\"\n\
                         [[classify]]\nname = \"fork\"\nverdict = [\"hang\"]\n\
                         diagnosis = \"tokio-rt-worker: main thread blocked in futex\"\n\
                         [[classify]]\nname = \"slow\"\nverdict = [\"fail\"]\n\
                         cell = { strategy = \"pool\" }\n";

    #[test]
    fn the_first_match_wins_and_no_match_is_other() {
        let s = parse(THREE).unwrap();
        let classes = s.classes();
        let (inline, pool) = (cell("inline"), cell("pool"));
        let race = "WARN binding the notify socket notify.sock in /x: Address already in use";
        // Matches the first entry and the third: the first names it.
        assert_eq!(
            classify(classes, &evidence(&pool, "fail", race)),
            "cwd race"
        );
        assert_eq!(classify(classes, &evidence(&pool, "fail", "")), "slow");
        assert_eq!(classify(classes, &evidence(&inline, "fail", "")), OTHER);
        assert_eq!(classify(&[], &evidence(&inline, "fail", race)), OTHER);
    }

    #[test]
    fn every_condition_must_hold() {
        let s = parse(THREE).unwrap();
        let fork = &s.classes()[1];
        let c = cell("inline");
        let stuck = "wedge-agent[1]: main thread blocked in epoll_wait; \
                     tokio-rt-worker: main thread blocked in futex(FUTEX_WAIT_PRIVATE)";
        let hang = Evidence {
            diagnosis: Some(stuck),
            ..evidence(&c, "hang", "")
        };
        assert!(fork.matches(&hang));
        // The right diagnosis on a fail, or a hang without a diagnosis: no.
        assert!(!fork.matches(&Evidence {
            verdict: "fail",
            ..hang
        }));
        assert!(!fork.matches(&Evidence {
            diagnosis: None,
            ..hang
        }));
        assert!(!fork.matches(&Evidence {
            diagnosis: Some("wedge-agent[1]: main thread blocked in read"),
            ..hang
        }));
        // The cell filter: `slow` is for `pool` only.
        let slow = &s.classes()[2];
        assert!(slow.matches(&evidence(&cell("pool"), "fail", "")));
        assert!(!slow.matches(&evidence(&cell("inline"), "fail", "")));
        let out = parse("[[classify]]\nname = \"o\"\nstdout = \"^done$\"\n").unwrap();
        let e = Evidence {
            stdout: "x\ndone",
            ..evidence(&c, "fail", "done")
        };
        assert!(
            !out.classes()[0].matches(&e),
            "`^` and `$` are the text's ends"
        );
        assert!(out.classes()[0].matches(&Evidence {
            stdout: "done",
            ..e
        }));
    }

    #[test]
    fn bad_entries_are_located_errors() {
        for (text, line, col, needle) in [
            (
                "[[classify]]\nname = \"\"\nverdict = [\"hang\"]\n",
                7,
                8,
                "must not be empty",
            ),
            (
                "[[classify]]\nname = \"a\"\nverdict = [\"hang\"]\n\
                 [[classify]]\nname = \"a\"\nstderr = \"x\"\n",
                10,
                8,
                "class \"a\" is already defined",
            ),
            (
                "[[classify]]\nname = \"unclassified\"\nstderr = \"x\"\n",
                7,
                8,
                "reserved",
            ),
            (
                "[[classify]]\nname = \"a\"\ncell = { strategy = \"pool\" }\n",
                6,
                1,
                "needs at least one of",
            ),
            (
                "[[classify]]\nname = \"a\"\nstderr = \"(\"\n",
                8,
                10,
                "bad `stderr` pattern",
            ),
            (
                "[[classify]]\nname = \"a\"\n\ndiagnosis = \"[\"\n",
                9,
                13,
                "bad `diagnosis` pattern",
            ),
            (
                "[[classify]]\nname = \"a\"\nverdict = [\"hang\", \"timeout\"]\n",
                8,
                20,
                "unknown verdict \"timeout\" (expected one of pass, fail, hang, crash, error)",
            ),
            (
                "[[classify]]\nname = \"a\"\nverdict = []\n",
                8,
                11,
                "lists no verdict",
            ),
            (
                "[[classify]]\nname = \"a\"\nstderr = \"x\"\ncell = { strategy = \"zyg\" }\n",
                9,
                8,
                "`classify.cell.strategy`: \"zyg\" is not a value",
            ),
            (
                "[[classify]]\nname = \"a\"\nstderr = \"x\"\nstderrr = \"y\"\n",
                9,
                1,
                "unknown field `stderrr`",
            ),
            (
                "[[classify]]\nstderr = \"x\"\n",
                6,
                1,
                "missing field `name`",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.message.contains(needle), "{text}: {e}");
            assert_eq!(
                (e.file.as_str(), e.line, e.col),
                ("t.toml", line, col),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn a_scenario_without_classify_has_no_classes() {
        assert!(parse("").unwrap().classes().is_empty());
        assert_eq!(parse(THREE).unwrap().classes().len(), 3);
    }
}
