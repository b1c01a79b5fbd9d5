//! The `wedge` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};
use wedge::cell::{CellFilter, Shard};
use wedge::record::{JsonlWriter, TrialRecord, read_jsonl};
use wedge::runner::{InputError, PlanOptions, default_jobs, execute, load_scenarios, plan};
use wedge::trial::Engine;

/// wedge: run scenario scripts against a sandbox runtime many times, decide pass / fail / hang /
/// crash for every trial, diagnose hangs, and gate on pass rates.
///
/// Exit codes: 0 ok, 1 gate failed (or a replayed trial missed its expectation), 2 bad input,
/// 130 interrupted (finished trials are kept).
#[derive(Parser, Debug)]
#[command(name = "wedge", version = wedge::VERSION, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run scenarios (default: every *.toml in the repository's scenarios/ directory, or
    /// $WEDGE_SCENARIOS) and write trials.jsonl, summary.json, summary.md, junit.xml, index.html.
    Run {
        /// Scenario files or directories of them.
        scenarios: Vec<PathBuf>,
        /// Trials per cell (overrides each scenario's `trials`).
        #[arg(long)]
        trials: Option<u32>,
        /// Run only cells with AXIS=VALUE (repeat; values of one axis are alternatives).
        #[arg(long = "cell", value_name = "AXIS=VALUE")]
        cells: Vec<CellFilter>,
        /// Trials run in parallel (default: the host's CPU count; pinned trials never share CPUs).
        #[arg(long)]
        jobs: Option<usize>,
        /// Results directory (default: wedge-results/<UTC time>). Must not hold results yet.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Exit 1 when a cell misses its expectation.
        #[arg(long)]
        gate: bool,
        /// Run only the I-th of N deterministic slices of the cells (1-based), e.g. 2/4.
        #[arg(long, value_name = "I/N")]
        shard: Option<Shard>,
        /// Base seed (overrides each scenario's `seed`).
        #[arg(long)]
        seed: Option<u64>,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List scenarios, their cells and each cell's expectation.
    List {
        /// Scenario files or directories (default: the default suite).
        scenarios: Vec<PathBuf>,
        /// Only cells with AXIS=VALUE.
        #[arg(long = "cell", value_name = "AXIS=VALUE")]
        cells: Vec<CellFilter>,
    },
    /// Re-run one trial exactly as recorded: same scenario, cell and seed.
    Replay {
        /// The scenario file.
        scenario: PathBuf,
        /// The cell (every axis of it), AXIS=VALUE each.
        #[arg(long = "cell", value_name = "AXIS=VALUE")]
        cells: Vec<CellFilter>,
        /// The trial's seed (from trials.jsonl or a report).
        #[arg(long)]
        seed: u64,
        /// Also append the record to DIR/trials.jsonl.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Re-render the reports from trials.jsonl; several directories are merged into --out.
    Report {
        /// Results directories.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where to write the merged trials.jsonl and reports (required with several DIRs).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Exit 1 when any cell of a results directory misses its expectation, printing those cells.
    Gate {
        /// A results directory.
        results_dir: PathBuf,
    },
}

enum Failure {
    Input(String),
    Gate,
    Interrupted,
    Io(String),
}

impl From<InputError> for Failure {
    fn from(e: InputError) -> Failure {
        Failure::Input(e.to_string())
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            scenarios,
            trials,
            cells,
            jobs,
            out,
            gate,
            shard,
            seed,
            quiet,
        } => run(
            &scenarios, trials, cells, jobs, out, gate, shard, seed, quiet,
        ),
        Command::List { scenarios, cells } => list(&scenarios, &cells),
        Command::Replay {
            scenario,
            cells,
            seed,
            out,
        } => replay(&scenario, &cells, seed, out),
        Command::Report { dirs, out } => report(&dirs, out),
        Command::Gate { results_dir } => gate_dir(&results_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Gate) => ExitCode::from(1),
        Err(Failure::Input(m)) => {
            eprintln!("wedge: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Io(m)) => {
            eprintln!("wedge: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Interrupted) => {
            eprintln!("wedge: interrupted; finished trials are kept");
            ExitCode::from(130)
        }
    }
}

fn install_interrupt(engine: &Engine) {
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal ends wedge at once; the first asks it to stop after writing reports.
        let _ =
            signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&engine.cancel));
        let _ = signal_hook::flag::register(sig, Arc::clone(&engine.cancel));
    }
}

fn default_out() -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    PathBuf::from("wedge-results").join(stamp.replace(':', "-"))
}

#[allow(clippy::too_many_arguments)]
fn run(
    scenarios: &[PathBuf],
    trials: Option<u32>,
    filters: Vec<CellFilter>,
    jobs: Option<usize>,
    out: Option<PathBuf>,
    gate: bool,
    shard: Option<Shard>,
    seed: Option<u64>,
    quiet: bool,
) -> Result<(), Failure> {
    if trials == Some(0) {
        return Err(Failure::Input("--trials must be at least 1".into()));
    }
    if jobs == Some(0) {
        return Err(Failure::Input("--jobs must be at least 1".into()));
    }
    let loaded = load_scenarios(scenarios)?;
    let engine = Engine::new();
    let cells = plan(
        &engine,
        &loaded,
        &PlanOptions {
            filters,
            shard,
            trials,
            seed,
        },
    )?;
    let out = out.unwrap_or_else(default_out);
    let jsonl = out.join("trials.jsonl");
    if jsonl.metadata().is_ok_and(|m| m.len() > 0) {
        return Err(Failure::Input(format!(
            "{} already holds results; choose another --out (or merge with `wedge report`)",
            out.display()
        )));
    }
    std::fs::create_dir_all(&out).map_err(|e| Failure::Input(format!("{}: {e}", out.display())))?;
    let writer = JsonlWriter::open(&jsonl)
        .map_err(|e| Failure::Input(format!("{}: {e}", jsonl.display())))?;
    let writer = Mutex::new(writer);
    install_interrupt(&engine);
    let jobs = jobs.unwrap_or_else(|| default_jobs(&engine));
    if !quiet {
        eprintln!(
            "wedge: {} cells of {} scenarios, {} jobs, isolation {}, results in {}",
            cells.len(),
            loaded.len(),
            jobs,
            engine.host.isolation,
            out.display()
        );
    }
    let records = execute(&engine, &cells, jobs, Some(&writer), quiet)
        .map_err(|e| Failure::Io(format!("writing {}: {e}", jsonl.display())))?;
    let interrupted = engine.cancel.load(std::sync::atomic::Ordering::SeqCst);
    let summary = wedge::stats::summarize(&records);
    wedge::report::write_all(&out, &summary)
        .map_err(|e| Failure::Io(format!("writing reports in {}: {e}", out.display())))?;
    let failures = wedge::gate::evaluate(&summary);
    if !quiet {
        eprintln!(
            "wedge: wrote {}/summary.md (and summary.json, junit.xml, index.html)",
            out.display()
        );
    }
    print_gate(&failures);
    if interrupted {
        return Err(Failure::Interrupted);
    }
    if gate && !failures.is_empty() {
        return Err(Failure::Gate);
    }
    Ok(())
}

fn print_gate(failures: &[wedge::gate::GateFailure]) {
    if failures.is_empty() {
        println!("gate: pass — every cell meets its expectation");
    } else {
        println!(
            "gate: FAIL — {} cells miss their expectation:",
            failures.len()
        );
        for f in failures {
            println!("  {} {}: {}", f.scenario, f.cell, f.reason);
        }
    }
}

fn list(scenarios: &[PathBuf], filters: &[CellFilter]) -> Result<(), Failure> {
    let loaded = load_scenarios(scenarios)?;
    let engine = Engine::new();
    let cells = plan(
        &engine,
        &loaded,
        &PlanOptions {
            filters: filters.to_vec(),
            ..PlanOptions::default()
        },
    )?;
    let mut current = String::new();
    for c in &cells {
        if c.scenario.name != current {
            current = c.scenario.name.clone();
            println!(
                "{} ({}, {} trials, deadline {} ms, quiescence {} ms){}",
                c.scenario.name,
                c.scenario.file.display(),
                c.trials,
                c.scenario.deadline.as_millis(),
                c.scenario.quiescence.as_millis(),
                if c.scenario.description.is_empty() {
                    String::new()
                } else {
                    format!("\n  {}", c.scenario.description.trim())
                }
            );
        }
        let skip = c
            .skip
            .as_ref()
            .map_or_else(String::new, |w| format!("  [skipped here: {w}]"));
        println!(
            "  {:<40} expect {}{skip}",
            c.cell.id(),
            c.expectation.describe()
        );
    }
    Ok(())
}

fn replay(
    scenario: &Path,
    filters: &[CellFilter],
    seed: u64,
    out: Option<PathBuf>,
) -> Result<(), Failure> {
    let loaded = load_scenarios(&[scenario.to_path_buf()])?;
    let s = &loaded[0];
    let engine = Engine::new();
    let matching: Vec<_> = s
        .cells()
        .into_iter()
        .enumerate()
        .filter(|(_, c)| c.matches(filters))
        .collect();
    let (cell_index, cell) = match matching.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(Failure::Input(format!(
                "no cell of {} matches the --cell filters",
                s.name
            )));
        }
        many => {
            let ids: Vec<String> = many.iter().map(|(_, c)| c.id()).collect();
            return Err(Failure::Input(format!(
                "the --cell filters match {} cells; name one of: {}",
                many.len(),
                ids.join("  ")
            )));
        }
    };
    if let Some(why) = wedge::trial::host_cannot_run(&engine, &cell) {
        return Err(Failure::Input(why));
    }
    let expectation = s.expectation(&cell, &engine.host.kernel);
    let cpus = wedge::trial::cpus_wanted(&cell)
        .map(|k| wedge::trial::host_cpus().into_iter().take(k).collect());
    install_interrupt(&engine);
    let spec = wedge::trial::TrialSpec {
        scenario: s,
        cell,
        cell_index,
        trial: 0,
        seed,
        expectation,
        cpus,
    };
    let Some(record) = wedge::trial::run_trial(&engine, &spec) else {
        return Err(Failure::Interrupted);
    };
    print_record(&record);
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Failure::Input(format!("{}: {e}", dir.display())))?;
        JsonlWriter::open(&dir.join("trials.jsonl"))
            .and_then(|mut w| w.append(&record))
            .map_err(|e| Failure::Io(e.to_string()))?;
    }
    if record.met {
        Ok(())
    } else {
        Err(Failure::Gate)
    }
}

fn print_record(r: &TrialRecord) {
    println!("{} {} seed {}", r.scenario, r.cell.id(), r.seed);
    println!("verdict: {} ({})", r.verdict.as_str(), r.reason);
    println!(
        "expectation: {} — {}",
        r.expectation.describe(),
        if r.met { "met" } else { "MISSED" }
    );
    println!("time to verdict: {:.1} ms", r.time_to_verdict_ms);
    if let Some(d) = &r.diagnosis {
        println!("diagnosis ({}):", d.reason);
        for p in &d.processes {
            println!(
                "  {}[{}] ppid {} {} — {}",
                p.name,
                p.pid,
                p.ppid,
                p.state,
                p.cmdline.join(" ")
            );
            for t in &p.threads {
                println!(
                    "    {}[{}] {}{}{} (for {} ms)",
                    t.name,
                    t.tid,
                    t.phrase(),
                    t.detail
                        .as_ref()
                        .map_or_else(String::new, |d| format!(" — {d}")),
                    t.wchan
                        .as_ref()
                        .map_or_else(String::new, |w| format!(", wchan {w}")),
                    t.for_ms
                );
                for frame in t.kernel_stack.iter().take(8) {
                    println!("        {frame}");
                }
            }
        }
    }
    for l in &r.leaks {
        println!("leak: {l}");
    }
    for l in &r.lingering {
        println!("lingering: {l}");
    }
    if !r.log.is_empty() {
        println!("log:");
        for l in &r.log {
            println!("  {l}");
        }
    }
    if !r.stdout_tail.is_empty() {
        println!("stdout:\n{}", r.stdout_tail);
    }
    if !r.stderr_tail.is_empty() {
        println!("stderr:\n{}", r.stderr_tail);
    }
}

fn read_dirs(dirs: &[PathBuf]) -> Result<Vec<TrialRecord>, Failure> {
    let mut all = Vec::new();
    for d in dirs {
        let path = d.join("trials.jsonl");
        if !path.is_file() {
            return Err(Failure::Input(format!("{}: no trials.jsonl", d.display())));
        }
        all.extend(read_jsonl(&path).map_err(Failure::Input)?);
    }
    Ok(all)
}

fn report(dirs: &[PathBuf], out: Option<PathBuf>) -> Result<(), Failure> {
    let records = read_dirs(dirs)?;
    let target = match (&out, dirs) {
        (Some(o), _) => o.clone(),
        (None, [one]) => one.clone(),
        (None, _) => {
            return Err(Failure::Input(
                "several results directories need --out DIR for the merged report".into(),
            ));
        }
    };
    std::fs::create_dir_all(&target)
        .map_err(|e| Failure::Input(format!("{}: {e}", target.display())))?;
    let merged = out.is_some() && !dirs.iter().any(|d| same_dir(d, &target));
    if merged {
        let jsonl = target.join("trials.jsonl");
        if jsonl.metadata().is_ok_and(|m| m.len() > 0) {
            return Err(Failure::Input(format!(
                "{} already holds results",
                target.display()
            )));
        }
        let mut w = JsonlWriter::open(&jsonl).map_err(|e| Failure::Io(e.to_string()))?;
        for r in &records {
            w.append(r).map_err(|e| Failure::Io(e.to_string()))?;
        }
    } else if out.is_some() && dirs.len() > 1 {
        return Err(Failure::Input(
            "--out must be a new directory when merging".into(),
        ));
    }
    let summary = wedge::stats::summarize(&records);
    wedge::report::write_all(&target, &summary).map_err(|e| Failure::Io(e.to_string()))?;
    println!(
        "wrote {} (from {} trials)",
        target.join("summary.md").display(),
        records.len()
    );
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn gate_dir(dir: &Path) -> Result<(), Failure> {
    let records = read_dirs(&[dir.to_path_buf()])?;
    if records.is_empty() {
        return Err(Failure::Input(format!(
            "{}: trials.jsonl holds no trials, nothing to gate on",
            dir.display()
        )));
    }
    let summary = wedge::stats::summarize(&records);
    let failures = wedge::gate::evaluate(&summary);
    print_gate(&failures);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failure::Gate)
    }
}
