//! Turning a scenario's subject (and `spawn` steps) into a command line for one cell and trial,
//! and finding wedge's own binaries. A placeholder that names nothing cannot reach this point
//! (loading checks them in every cell); what can still fail here is a program that is missing.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::cell::Cell;
use crate::model::scenario::{Program, Scenario, StdinMode, interpolate, rand_bounds, splice};

/// Why a command line could not be made for this cell and trial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// Placeholders or `{AXIS...}` lists that did not fill (the scenario layer says why).
    #[error(transparent)]
    Placeholder(#[from] crate::model::scenario::PlaceholderError),
    #[error("the argv is empty once `{{AXIS...}}` lists are spliced in")]
    EmptyArgv,
    #[error("program \"{name}\" not found in {} (set WEDGE_BIN_DIR) or PATH", bin_dir.display())]
    NotFound { name: String, bin_dir: PathBuf },
}

/// The directory of wedge's binaries (`wedge-run`, `wedge-agent`, `wedge-subject`): `$WEDGE_BIN_DIR`,
/// else the directory of the running executable (its parent when that is cargo's `deps/`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEDGE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    own_dir()
}

/// The directory of wedge's own binaries: the running program's (the one above `deps/` for
/// cargo's test binaries).
pub fn own_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// `name` as a program path: a path when it contains `/`; else wedge's binary directory, then `PATH`.
pub fn resolve_program(name: &str, bin_dir: &Path) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.exists().then_some(p);
    }
    let local = bin_dir.join(name);
    if local.is_file() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The values of `{placeholders}` for one trial.
#[derive(Debug, Clone)]
pub struct Vars {
    pub cell: Cell,
    pub tmp: PathBuf,
    pub work: PathBuf,
    pub socket: PathBuf,
    pub seed: u64,
    pub trial: u32,
    pub scenario_dir: PathBuf,
    pub bin_dir: PathBuf,
    /// The argv list of each table axis for the cell (what `{AXIS...}` splices in).
    pub splices: BTreeMap<String, Vec<String>>,
    /// Draws `{rand:A-B}` values; seeded from the trial's seed.
    pub rng: RefCell<ChaCha8Rng>,
}

impl Vars {
    /// The random source of `{rand:A-B}` for a trial with this seed.
    pub fn rng_for(seed: u64) -> RefCell<ChaCha8Rng> {
        RefCell::new(ChaCha8Rng::seed_from_u64(seed ^ 0x7261_6e64_7661_7273))
    }

    pub fn get(&self, name: &str) -> Option<String> {
        if let Some((a, b)) = rand_bounds(name) {
            return Some(self.rng.borrow_mut().random_range(a..=b).to_string());
        }
        if let Some(v) = self.cell.get(name) {
            return Some(v.to_string());
        }
        let path = |p: &Path| p.display().to_string();
        Some(match name {
            "tmp" => path(&self.tmp),
            "work" => path(&self.work),
            "socket" => path(&self.socket),
            "seed" => self.seed.to_string(),
            "trial" => self.trial.to_string(),
            "scenario_dir" => path(&self.scenario_dir),
            "bin_dir" => path(&self.bin_dir),
            _ => return None,
        })
    }

    /// Interpolates `{placeholders}` (validated when the scenario was loaded).
    pub fn fill(&self, text: &str) -> Result<String, SubjectError> {
        interpolate(text, &|n| self.get(n)).map_err(SubjectError::Placeholder)
    }

    /// An argv with placeholders filled and each whole `{AXIS...}` element replaced by the
    /// cell's list of that table axis (its strings filled too): for every argv wedge starts.
    pub fn fill_argv(&self, argv: &[String]) -> Result<Vec<String>, SubjectError> {
        splice(argv, &|axis| self.splices.get(axis).cloned(), &|t| {
            interpolate(t, &|n| self.get(n))
        })
        .map_err(SubjectError::Placeholder)
    }
}

/// A resolved command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub stdin: StdinMode,
    /// The environment variable that carries `failpoint` steps to the program: `FAILPOINTS` (the
    /// fail crate's) for any command, `WEDGE_AGENT_FAILPOINTS` for wedge-agent.
    pub failpoints_var: &'static str,
}

/// The fail crate's own variable, used for every subject but wedge-agent.
pub const FAILPOINTS_VAR: &str = "FAILPOINTS";
/// The variable `wedge-agent serve` reads its failpoints from.
pub const AGENT_FAILPOINTS_VAR: &str = "WEDGE_AGENT_FAILPOINTS";

impl Launch {
    /// The command line as one string, for logs.
    pub fn display(&self) -> String {
        let mut parts = vec![self.program.display().to_string()];
        parts.extend(self.args.iter().cloned());
        parts.join(" ")
    }
}

/// The argv a `command` subject (or a `spawn` step) starts: `argv[0]` resolved, the rest its
/// arguments, after filling and splicing.
pub fn command_argv(vars: &Vars, argv: &[String]) -> Result<(PathBuf, Vec<String>), SubjectError> {
    let argv = vars.fill_argv(argv)?;
    let Some((first, rest)) = argv.split_first() else {
        return Err(SubjectError::EmptyArgv);
    };
    Ok((program(first, vars)?, rest.to_vec()))
}

/// A subject's working directory with its placeholders filled in.
pub fn fill_cwd(vars: &Vars, cwd: &Option<String>) -> Result<Option<PathBuf>, SubjectError> {
    cwd.as_ref()
        .map(|c| vars.fill(c).map(PathBuf::from))
        .transpose()
}

fn fill_env(
    vars: &Vars,
    env: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, SubjectError> {
    env.iter()
        .map(|(k, v)| Ok((k.clone(), vars.fill(v)?)))
        .collect()
}

/// An optional flag: the given value, else the cell's value of `axis`.
fn flag(vars: &Vars, given: &Option<String>, axis: &str) -> Result<Option<String>, SubjectError> {
    match given {
        Some(v) => vars.fill(v).map(Some),
        None => Ok(vars.cell.get(axis).map(str::to_string)),
    }
}

/// A program from a scenario, resolved or an error naming what is missing.
pub fn program(name: &str, vars: &Vars) -> Result<PathBuf, SubjectError> {
    resolve_program(name, &vars.bin_dir).ok_or_else(|| SubjectError::NotFound {
        name: name.to_string(),
        bin_dir: vars.bin_dir.clone(),
    })
}

/// The subject's command line in this cell.
pub fn subject_launch(scenario: &Scenario, vars: &Vars) -> Result<Launch, SubjectError> {
    let subject = &scenario.subject;
    let (program, args, failpoints_var) = match &subject.program {
        Program::Command { argv } => {
            let (program, args) = command_argv(vars, argv)?;
            (program, args, FAILPOINTS_VAR)
        }
        Program::WedgeRun { .. } => (
            program("wedge-run", vars)?,
            wedge_run_args(&subject.program, vars)?,
            FAILPOINTS_VAR,
        ),
        Program::WedgeAgent { .. } => (
            program("wedge-agent", vars)?,
            wedge_agent_args(&subject.program, vars)?,
            AGENT_FAILPOINTS_VAR,
        ),
    };
    Ok(Launch {
        program,
        args,
        env: fill_env(vars, &subject.env)?,
        cwd: fill_cwd(vars, &subject.cwd)?,
        stdin: subject.stdin,
        failpoints_var,
    })
}

/// `[--policy P] [--sandbox S] [--variant V] [--drain-ms MS] ARGS -- COMMAND...`.
fn wedge_run_args(program: &Program, vars: &Vars) -> Result<Vec<String>, SubjectError> {
    let Program::WedgeRun {
        command,
        policy,
        sandbox,
        variant,
        drain_ms,
        args,
    } = program
    else {
        return Ok(Vec::new());
    };
    let mut a = Vec::new();
    if let Some(p) = policy {
        a.push("--policy".to_string());
        a.push(vars.fill(p)?);
    }
    if let Some(s) = flag(vars, sandbox, "sandbox")? {
        a.push("--sandbox".to_string());
        a.push(s);
    }
    if let Some(v) = flag(vars, variant, "variant")? {
        a.push("--variant".to_string());
        a.push(v);
    }
    if let Some(d) = drain_ms {
        a.push("--drain-ms".to_string());
        a.push(vars.fill(d)?);
    }
    a.extend(vars.fill_argv(args)?);
    a.push("--".to_string());
    a.extend(vars.fill_argv(command)?);
    Ok(a)
}

/// `serve --socket PATH [--workers N] [--strategy S] [--builder B] ARGS`: each flag from the
/// subject's key, or else from the cell's axis of the same name.
fn wedge_agent_args(program: &Program, vars: &Vars) -> Result<Vec<String>, SubjectError> {
    let Program::WedgeAgent {
        socket,
        workers,
        strategy,
        builder,
        args,
    } = program
    else {
        return Ok(Vec::new());
    };
    let mut a = vec!["serve".to_string(), "--socket".to_string()];
    a.push(match socket {
        Some(s) => vars.fill(s)?,
        None => vars.socket.display().to_string(),
    });
    if let Some(w) = flag(vars, workers, "workers")? {
        a.push("--workers".to_string());
        a.push(w);
    }
    if let Some(s) = flag(vars, strategy, "strategy")? {
        a.push("--strategy".to_string());
        a.push(s);
    }
    if let Some(b) = flag(vars, builder, "builder")? {
        a.push("--builder".to_string());
        a.push(b);
    }
    a.extend(vars.fill_argv(args)?);
    Ok(a)
}

/// The socket path of a `wedge-agent` subject (for `{socket}`), when it sets one explicitly.
pub fn explicit_socket(scenario: &Scenario) -> Option<&String> {
    scenario.subject.explicit_socket()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wedge_run_flags_follow_axes() {
        let text = r#"
[subject]
kind = "wedge-run"
command = ["sh", "-c", "sleep 0"]
[matrix]
variant = ["fixed", "pre-fix"]
sandbox = ["none"]
"#;
        let s = Scenario::parse(Path::new("x.toml"), text).unwrap();
        let dir = std::env::temp_dir().join(format!("wedge-subject-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("wedge-run"), "").unwrap();
        let vars = Vars {
            cell: s.cells()[1].clone(),
            tmp: dir.clone(),
            work: dir.clone(),
            socket: dir.join("s"),
            seed: 1,
            trial: 0,
            scenario_dir: dir.clone(),
            bin_dir: dir.clone(),
            splices: s.splices(&s.cells()[1]),
            rng: Vars::rng_for(1),
        };
        let l = subject_launch(&s, &vars).unwrap();
        assert_eq!(l.program, dir.join("wedge-run"));
        assert_eq!(
            l.args,
            [
                "--sandbox",
                "none",
                "--variant",
                "pre-fix",
                "--",
                "sh",
                "-c",
                "sleep 0"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wedge_agent_flags_follow_axes_or_keys() {
        let text = r#"
[subject]
kind = "wedge-agent"
workers = "1"
[matrix]
strategy = ["zygote"]
builder = ["wedge", "libcontainer"]
"#;
        let s = Scenario::parse(Path::new("x.toml"), text).unwrap();
        let dir = std::env::temp_dir().join(format!("wedge-agent-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("wedge-agent"), "").unwrap();
        let cell = s.cells()[1].clone();
        let vars = Vars {
            splices: s.splices(&cell),
            cell,
            tmp: dir.clone(),
            work: dir.clone(),
            socket: dir.join("s"),
            seed: 1,
            trial: 0,
            scenario_dir: dir.clone(),
            bin_dir: dir.clone(),
            rng: Vars::rng_for(1),
        };
        let l = subject_launch(&s, &vars).unwrap();
        let socket = dir.join("s").display().to_string();
        let expected = [
            "serve",
            "--socket",
            &socket,
            "--workers",
            "1",
            "--strategy",
            "zygote",
            "--builder",
            "libcontainer",
        ];
        assert_eq!(l.args, expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn table_axes_splice_their_lists_into_argv() {
        let text = r#"
[matrix]
runtime = { sh = ["sh", "-c", "exec \"$0\" \"$@\"", "{seed}"], none = [] }
[subject]
kind = "command"
argv = ["{runtime...}", "true", "{runtime}"]
"#;
        let s = Scenario::parse(Path::new("x.toml"), text).unwrap();
        let vars_for = |cell: &Cell| Vars {
            cell: cell.clone(),
            tmp: "/t".into(),
            work: "/w".into(),
            socket: "/w/s".into(),
            seed: 7,
            trial: 0,
            scenario_dir: "/s".into(),
            bin_dir: "/nonexistent".into(),
            splices: s.splices(cell),
            rng: Vars::rng_for(7),
        };
        let cells = s.cells();
        let l = subject_launch(&s, &vars_for(&cells[0])).unwrap();
        assert!(l.program.ends_with("sh"), "{l:?}");
        assert_eq!(l.args, ["-c", "exec \"$0\" \"$@\"", "7", "true", "sh"]);
        let l = subject_launch(&s, &vars_for(&cells[1])).unwrap();
        assert!(l.program.ends_with("true"), "{l:?}");
        assert_eq!(l.args, ["none"]);
        // The reusable form: any argv, e.g. a step's.
        let argv: Vec<String> = vec!["{runtime...}".into(), "{trial}".into()];
        assert_eq!(vars_for(&cells[1]).fill_argv(&argv).unwrap(), ["0"]);
        let only: Vec<String> = vec!["{runtime...}".into()];
        let e = command_argv(&vars_for(&cells[1]), &only).unwrap_err();
        assert!(e.to_string().contains("argv is empty"), "{e}");
    }

    #[test]
    fn missing_program_is_named() {
        let vars = Vars {
            cell: Cell::default(),
            tmp: "/t".into(),
            work: "/w".into(),
            socket: "/w/s".into(),
            seed: 7,
            trial: 3,
            scenario_dir: "/s".into(),
            bin_dir: "/nonexistent".into(),
            splices: BTreeMap::new(),
            rng: Vars::rng_for(7),
        };
        let e = program("wedge-no-such-binary", &vars).unwrap_err();
        assert!(e.to_string().contains("wedge-no-such-binary"), "{e}");
        assert_eq!(vars.fill("{seed}-{trial}-{tmp}").unwrap(), "7-3-/t");
        let drawn: u64 = vars.fill("{rand:10-20}").unwrap().parse().unwrap();
        assert!((10..=20).contains(&drawn));
        let again = Vars {
            rng: Vars::rng_for(7),
            ..vars.clone()
        };
        assert_eq!(again.fill("{rand:10-20}").unwrap(), drawn.to_string());
        assert_eq!(rand_bounds("rand:5-1"), None);
    }
}
