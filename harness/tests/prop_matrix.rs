//! Property tests of the scenario matrix expansion and of per-cell expectations: scenario TOML text
//! with random axes (strings, integers, booleans) and random `[[expect.when]]` overrides, loaded
//! through `Scenario::parse`, checked against an independent reference written from
//! `scenarios/README.md`:
//! - the cells are exactly the combinations of the axis values, each once, so their number is the
//!   product of the axis lengths, in file order with the first axis varying slowest;
//! - the same text gives the same cells, in the same order, and the same expectations;
//! - a cell's expectation is `[expect]` with every matching `[[expect.when]]` applied in file order
//!   (a `when` matches when each axis it names has one of the listed values and, with `kernel`, the
//!   running kernel satisfies the comparison); the later override wins on each key it sets;
//! - a table axis (`runtime = { bwrap = [...], ... }`) makes one cell per key, and each cell
//!   splices that key's list where an argv says `{runtime...}`;
//! - a cell writes each value with its TOML type in JSON and reads back as the same cell.

use std::collections::BTreeSet;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use wedge::model::cell::Cell;
use wedge::model::scenario::{ExitSpec, Expectation, Outcome, Scenario, splice};

/// An axis value as written in the TOML file.
#[derive(Debug, Clone)]
enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl Value {
    /// The value as the cell carries it.
    fn text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
        }
    }

    fn toml(&self) -> String {
        match self {
            Value::Str(s) => toml_string(s),
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
        }
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An `exit` value as TOML: a code, a word, or a list of them.
fn exit_toml(exit: &ExitSpec) -> String {
    match exit {
        ExitSpec::Code(c) => c.to_string(),
        ExitSpec::Word(w) => toml_string(w),
        ExitSpec::OneOf(list) => {
            let items: Vec<String> = list.iter().map(exit_toml).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

#[derive(Debug, Clone)]
struct Axis {
    name: String,
    values: Vec<Value>,
    /// A table axis: each value (written as a key) with its argv list.
    lists: Option<Vec<Vec<String>>>,
}

impl Axis {
    /// The axis as a `[matrix]` line.
    fn toml(&self) -> String {
        let Some(lists) = &self.lists else {
            let values: Vec<String> = self.values.iter().map(Value::toml).collect();
            return format!("{} = [{}]", self.name, values.join(", "));
        };
        let entries: Vec<String> = self
            .values
            .iter()
            .zip(lists)
            .map(|(v, list)| {
                let items: Vec<String> = list.iter().map(|i| toml_string(i)).collect();
                format!("{} = [{}]", toml_string(&v.text()), items.join(", "))
            })
            .collect();
        format!("{} = {{ {} }}", self.name, entries.join(", "))
    }
}

/// The keys `[expect]` and `[[expect.when]]` share.
#[derive(Debug, Clone, Default)]
struct Fields {
    outcome: Option<Outcome>,
    exit: Option<ExitSpec>,
    within_ms: Option<u64>,
    stdout: Option<String>,
    stderr: Option<String>,
    diagnosis: Option<String>,
    diagnosis_regex: Option<String>,
    /// As written (a TOML float).
    min_rate: Option<String>,
    allow_lingering: Option<bool>,
}

impl Fields {
    fn toml(&self) -> String {
        let mut out = String::new();
        if let Some(o) = self.outcome {
            let word = match o {
                Outcome::Exit => "exit",
                Outcome::Hang => "hang",
                Outcome::Any => "any",
            };
            out += &format!("outcome = \"{word}\"\n");
        }
        if let Some(exit) = &self.exit {
            out += &format!("exit = {}\n", exit_toml(exit));
        }
        if let Some(ms) = self.within_ms {
            out += &format!("within_ms = {ms}\n");
        }
        for (key, value) in [
            ("stdout", &self.stdout),
            ("stderr", &self.stderr),
            ("diagnosis", &self.diagnosis),
            ("diagnosis_regex", &self.diagnosis_regex),
        ] {
            if let Some(v) = value {
                out += &format!("{key} = {}\n", toml_string(v));
            }
        }
        if let Some(r) = &self.min_rate {
            out += &format!("min_rate = {r}\n");
        }
        if let Some(l) = self.allow_lingering {
            out += &format!("allow_lingering = {l}\n");
        }
        out
    }

    /// This override applied on top of `e` (only the keys it sets).
    fn apply(&self, e: &mut Expectation) {
        if let Some(o) = self.outcome {
            e.outcome = o;
        }
        if let Some(x) = &self.exit {
            e.exit = Some(x.clone());
        }
        if let Some(ms) = self.within_ms {
            e.within_ms = Some(ms);
        }
        if let Some(p) = &self.stdout {
            e.stdout = Some(p.clone());
        }
        if let Some(p) = &self.stderr {
            e.stderr = Some(p.clone());
        }
        if let Some(d) = &self.diagnosis {
            e.diagnosis = Some(d.clone());
        }
        if let Some(r) = &self.diagnosis_regex {
            e.diagnosis_regex = Some(r.clone());
        }
        if let Some(r) = &self.min_rate {
            e.min_rate = Some(r.parse().unwrap());
        }
        if let Some(l) = self.allow_lingering {
            e.allow_lingering = l;
        }
    }
}

/// A `[[expect.when]]`: per named axis (by index), the accepted value indices; an optional kernel
/// comparison; the keys it overrides.
#[derive(Debug, Clone)]
struct When {
    cell: Vec<(usize, Vec<usize>)>,
    kernel: Option<(&'static str, (u32, u32, u32))>,
    fields: Fields,
}

#[derive(Debug, Clone)]
struct Case {
    axes: Vec<Axis>,
    expect: Fields,
    whens: Vec<When>,
}

/// Kernel releases the expectations are resolved for, with their versions.
const KERNELS: &[(&str, (u32, u32, u32))] = &[
    ("5.15.0-91-generic", (5, 15, 0)),
    ("6.1.0-26-cloud-amd64", (6, 1, 0)),
    ("6.11.0", (6, 11, 0)),
    ("6.18.44-fc", (6, 18, 44)),
];

fn kernel_holds(op: &str, wanted: (u32, u32, u32), running: (u32, u32, u32)) -> bool {
    match op {
        "<" => running < wanted,
        "<=" => running <= wanted,
        ">" => running > wanted,
        ">=" => running >= wanted,
        "==" => running == wanted,
        other => panic!("the generator made operator {other}"),
    }
}

impl Case {
    fn toml(&self) -> String {
        let mut out = String::from(
            "[scenario]\ntrials = 1\n\n[subject]\nkind = \"command\"\nargv = [\"true\"]\n\n[matrix]\n",
        );
        for axis in &self.axes {
            out += &axis.toml();
            out.push('\n');
        }
        out += "\n[expect]\n";
        out += &self.expect.toml();
        for when in &self.whens {
            out += "\n[[expect.when]]\n";
            let entries: Vec<String> = when
                .cell
                .iter()
                .map(|(axis, values)| {
                    let axis = &self.axes[*axis];
                    let listed: Vec<String> =
                        values.iter().map(|v| axis.values[*v].toml()).collect();
                    // One value is written bare, as the README's examples do; more as a list.
                    if listed.len() == 1 {
                        format!("{} = {}", axis.name, listed[0])
                    } else {
                        format!("{} = [{}]", axis.name, listed.join(", "))
                    }
                })
                .collect();
            out += &format!("cell = {{ {} }}\n", entries.join(", "));
            if let Some((op, (a, b, c))) = when.kernel {
                out += &format!("kernel = \"{op} {a}.{b}.{c}\"\n");
            }
            out += &when.fields.toml();
        }
        out
    }

    /// Every combination of the axis values, the first axis varying slowest, as value indices.
    fn combinations(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new()];
        for axis in &self.axes {
            out = out
                .into_iter()
                .flat_map(|prefix| {
                    (0..axis.values.len()).map(move |v| {
                        let mut c = prefix.clone();
                        c.push(v);
                        c
                    })
                })
                .collect();
        }
        out
    }

    /// The cell of a combination of value indices.
    fn cell(&self, combination: &[usize]) -> Vec<(String, String)> {
        self.axes
            .iter()
            .zip(combination)
            .map(|(axis, v)| (axis.name.clone(), axis.values[*v].text()))
            .collect()
    }

    /// The README's rule: `[expect]` (defaults `outcome = "exit"`, `allow_lingering = false`), then
    /// every matching `[[expect.when]]`, in order.
    fn expectation(&self, combination: &[usize], kernel: (u32, u32, u32)) -> Expectation {
        let mut e = Expectation {
            outcome: Outcome::Exit,
            exit: None,
            within_ms: None,
            stdout: None,
            stderr: None,
            stderr_forbid: None,
            diagnosis: None,
            diagnosis_regex: None,
            hang_class: None,
            min_rate: None,
            allow_lingering: false,
            allow_leftover_processes: Vec::new(),
            allow_leftover_paths: Vec::new(),
        };
        self.expect.apply(&mut e);
        for when in &self.whens {
            let cell_matches = when
                .cell
                .iter()
                .all(|(axis, values)| values.contains(&combination[*axis]));
            let kernel_matches = when
                .kernel
                .is_none_or(|(op, wanted)| kernel_holds(op, wanted, kernel));
            if cell_matches && kernel_matches {
                when.fields.apply(&mut e);
            }
        }
        e
    }
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-zA-Z0-9 ._:/é\"\\\\-]{0,6}".prop_map(Value::Str),
        (-50i64..50).prop_map(Value::Int),
        any::<bool>().prop_map(Value::Bool),
    ]
}

/// 1 to 4 axes of 1 to 4 distinct values. Names are unique (an index suffix) but their prefixes are
/// random, so file order differs from alphabetical order; no name is reserved or `cpus`. About a
/// quarter are table axes (each value a key with an argv list).
fn axes() -> impl Strategy<Value = Vec<Axis>> {
    let list = prop::collection::vec("[a-z0-9 ./=-]{0,5}", 0..=3);
    prop::collection::vec(
        (
            "[a-z][a-z_-]{0,4}",
            prop::collection::vec((value(), list), 1..=4),
            prop::bool::weighted(0.25),
        ),
        1..=4,
    )
    .prop_map(|axes| {
        axes.into_iter()
            .enumerate()
            .map(|(i, (prefix, values, table))| {
                // Values must be distinct as the cell sees them (`1` and `"1"` are the same).
                let mut seen = BTreeSet::new();
                let (values, lists): (Vec<Value>, Vec<Vec<String>>) = values
                    .into_iter()
                    .filter(|(v, _)| seen.insert(v.text()))
                    .unzip();
                Axis {
                    name: format!("{prefix}{i}"),
                    values,
                    lists: table.then_some(lists),
                }
            })
            .collect()
    })
}

fn fields() -> impl Strategy<Value = Fields> {
    let outcome = prop::option::of(prop_oneof![
        Just(Outcome::Exit),
        Just(Outcome::Hang),
        Just(Outcome::Any),
    ]);
    let single = || {
        prop_oneof![
            (0i32..=255).prop_map(ExitSpec::Code),
            prop::sample::select(vec![
                "success", "failure", "nonzero", "signal", "any", "KILL", "SIGTERM"
            ])
            .prop_map(|w| ExitSpec::Word(w.to_string())),
        ]
    };
    let exit = prop::option::of(prop_oneof![
        3 => single(),
        1 => prop::collection::vec(single(), 1..=3).prop_map(ExitSpec::OneOf),
    ]);
    let pattern = || prop::option::of("[a-z0-9 ]{0,8}");
    (
        outcome,
        exit,
        prop::option::of(0u64..100_000),
        pattern(),
        pattern(),
        (
            prop::option::of("[a-zA-Z() ]{0,12}"),
            prop::option::of(
                prop::sample::select(vec![
                    "futex",
                    r"^wedge-run\[\d+\]: ",
                    r"2 × \w+ threads blocked in",
                    "(read|recvfrom)$",
                ])
                .prop_map(str::to_string),
            ),
        ),
        prop::option::of((0u32..=100).prop_map(|r| format!("{}.{:02}", r / 100, r % 100))),
        prop::option::of(any::<bool>()),
    )
        .prop_map(
            |(
                outcome,
                exit,
                within_ms,
                stdout,
                stderr,
                (diagnosis, diagnosis_regex),
                min_rate,
                allow_lingering,
            )| {
                Fields {
                    outcome,
                    exit,
                    within_ms,
                    stdout,
                    stderr,
                    diagnosis,
                    diagnosis_regex,
                    min_rate,
                    allow_lingering,
                }
            },
        )
}

/// A `when` over `axes`: each axis named with probability 1/2, with 1 to all of its values.
fn when(axes: &[Axis]) -> impl Strategy<Value = When> + use<> {
    let lengths: Vec<usize> = axes.iter().map(|a| a.values.len()).collect();
    let cell = lengths
        .into_iter()
        .map(|n| prop::option::of(prop::sample::subsequence((0..n).collect::<Vec<_>>(), 1..=n)))
        .collect::<Vec<_>>()
        .prop_map(|per_axis| {
            per_axis
                .into_iter()
                .enumerate()
                .filter_map(|(axis, values)| values.map(|v| (axis, v)))
                .collect::<Vec<_>>()
        });
    let kernel = prop::option::of((
        prop::sample::select(vec!["<", "<=", ">", ">=", "=="]),
        prop::sample::select(vec![
            (5, 15, 0),
            (6, 1, 0),
            (6, 11, 0),
            (6, 18, 44),
            (7, 0, 0),
        ]),
    ));
    (cell, kernel, fields()).prop_map(|(cell, kernel, fields)| When {
        cell,
        kernel,
        fields,
    })
}

fn case() -> impl Strategy<Value = Case> {
    axes().prop_flat_map(|axes| {
        let whens = prop::collection::vec(when(&axes), 0..=4);
        (Just(axes), fields(), whens).prop_map(|(axes, expect, whens)| Case {
            axes,
            expect,
            whens,
        })
    })
}

fn parse(text: &str) -> Scenario {
    match Scenario::parse(Path::new("prop-matrix.toml"), text) {
        Ok(s) => s,
        Err(e) => panic!("the generated scenario does not load: {e}\n{text}"),
    }
}

fn pairs(cells: &[Cell]) -> Vec<Vec<(String, String)>> {
    cells.iter().map(|c| c.pairs().to_vec()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/prop_matrix.txt",
        ))),
        ..ProptestConfig::default()
    })]

    /// The cells are every combination of the axis values exactly once, in file order.
    #[test]
    fn cells_are_the_product_of_the_axes(case in case()) {
        let text = case.toml();
        let scenario = parse(&text);
        let cells = pairs(&scenario.cells());

        let product: usize = case.axes.iter().map(|a| a.values.len()).product();
        prop_assert_eq!(cells.len(), product, "{}", text);
        let distinct: BTreeSet<_> = cells.iter().collect();
        prop_assert_eq!(distinct.len(), product, "a combination appears twice:\n{}", text);
        for cell in &cells {
            let names: Vec<&str> = cell.iter().map(|(a, _)| a.as_str()).collect();
            let axes: Vec<&str> = case.axes.iter().map(|a| a.name.as_str()).collect();
            prop_assert_eq!(names, axes, "a cell's axes are the matrix's, in file order");
        }
        let expected: Vec<_> = case.combinations().iter().map(|c| case.cell(c)).collect();
        prop_assert_eq!(&cells, &expected, "{}", text);
        // The loaded axes are the file's, values as the cells carry them.
        let loaded: Vec<(String, Vec<String>)> = scenario
            .axes
            .iter()
            .map(|a| (a.name.clone(), a.values.clone()))
            .collect();
        let written: Vec<(String, Vec<String>)> = case
            .axes
            .iter()
            .map(|a| (a.name.clone(), a.values.iter().map(Value::text).collect()))
            .collect();
        prop_assert_eq!(loaded, written);
    }

    /// A cell keeps each value's TOML type in JSON (an integer stays a number, a boolean a
    /// boolean) and reads back as the same cell.
    #[test]
    fn cells_keep_their_value_types_in_json(case in case()) {
        let text = case.toml();
        let scenario = parse(&text);
        for (cell, combination) in scenario.cells().iter().zip(case.combinations()) {
            let json = serde_json::to_value(cell).unwrap();
            for (axis, v) in case.axes.iter().zip(&combination) {
                let expected = match &axis.values[*v] {
                    // A table axis's values are its keys: strings.
                    value if axis.lists.is_some() => serde_json::json!(value.text()),
                    Value::Str(s) => serde_json::json!(s),
                    Value::Int(i) => serde_json::json!(i),
                    Value::Bool(b) => serde_json::json!(b),
                };
                prop_assert_eq!(&json[axis.name.as_str()], &expected, "{}", text);
            }
            // Through text, as trials.jsonl holds it (a `Value` map would sort the axes).
            let line = serde_json::to_string(cell).unwrap();
            let back: Cell = serde_json::from_str(&line).unwrap();
            prop_assert_eq!(&back, cell);
            prop_assert_eq!(serde_json::to_string(&back).unwrap(), line);
        }
    }

    /// Every cell splices, for each table axis, the list of its value, and nothing for the
    /// other axes; `{AXIS...}` in an argv is replaced by exactly that list.
    #[test]
    fn table_axes_splice_the_cells_list(case in case()) {
        let text = case.toml();
        let scenario = parse(&text);
        for (cell, combination) in scenario.cells().iter().zip(case.combinations()) {
            let splices = scenario.splices(cell);
            let tables: Vec<(&Axis, &Vec<Vec<String>>, usize)> = case
                .axes
                .iter()
                .zip(&combination)
                .filter_map(|(a, v)| a.lists.as_ref().map(|l| (a, l, *v)))
                .collect();
            prop_assert_eq!(splices.len(), tables.len(), "{}", text);
            for (axis, lists, v) in tables {
                prop_assert_eq!(&splices[&axis.name], &lists[v], "{}", text);
                let argv = vec![format!("{{{}...}}", axis.name), "tail".to_string()];
                let spliced = splice(
                    &argv,
                    &|name| splices.get(name).cloned(),
                    &|t| Ok(t.to_string()),
                )
                .unwrap();
                let mut expected = lists[v].clone();
                expected.push("tail".to_string());
                prop_assert_eq!(spliced, expected);
            }
        }
    }

    /// The same text gives the same cells in the same order and the same expectations.
    #[test]
    fn expansion_is_deterministic(case in case()) {
        let text = case.toml();
        let (first, second) = (parse(&text), parse(&text));
        let cells = first.cells();
        prop_assert_eq!(pairs(&cells), pairs(&second.cells()));
        prop_assert_eq!(pairs(&cells), pairs(&first.cells()));
        for cell in &cells {
            for (release, _) in KERNELS {
                prop_assert_eq!(
                    first.expectation(cell, release),
                    second.expectation(cell, release),
                    "cell {}", cell
                );
            }
        }
    }

    /// Each cell's expectation is `[expect]` with every matching override applied in order.
    #[test]
    fn expectations_follow_the_override_rules(case in case()) {
        let text = case.toml();
        let scenario = parse(&text);
        let cells = scenario.cells();
        let combinations = case.combinations();
        prop_assert_eq!(cells.len(), combinations.len());
        for (cell, combination) in cells.iter().zip(&combinations) {
            for (release, version) in KERNELS {
                prop_assert_eq!(
                    scenario.expectation(cell, release),
                    case.expectation(combination, *version),
                    "cell {} on {}:\n{}", cell, release, text
                );
            }
        }
    }
}
