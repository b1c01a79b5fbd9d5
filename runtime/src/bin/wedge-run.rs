//! `wedge-run`: run a command under a seccomp exec supervisor.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use wedge_runtime::supervisor::policy::Policy;
use wedge_runtime::supervisor::sandbox::{self, EXIT_RUNNER_ERROR, SandboxKind};
use wedge_runtime::supervisor::session::{self, DEFAULT_DRAIN, RunConfig, Variant};

/// Run CMD in a sandbox where every exec is decided by a seccomp user-notification supervisor.
///
/// Exit status: CMD's exit code; 128+N if it died of signal N; 125 when wedge-run itself fails
/// (including a bad policy file); 126/127 when CMD cannot be executed or is not found (or its
/// exec is denied by the policy: 126).
#[derive(Debug, Parser)]
#[command(name = "wedge-run", version)]
struct Args {
    /// Policy file (TOML): allow = ["git status"], deny = ["git push"]. Without one every exec is
    /// allowed (and logged).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,

    /// Where CMD runs.
    #[arg(long, value_enum, default_value = "bwrap")]
    sandbox: SandboxKind,

    /// The supervisor's shutdown path. `pre-fix` is kept to be caught: it can hang forever.
    #[arg(long, value_enum, default_value = "fixed")]
    variant: Variant,

    /// How long the fixed runner waits for the supervisor after the sandbox exits.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_DRAIN.as_millis() as u64)]
    drain_ms: u64,

    /// The command and its arguments.
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

fn main() -> ExitCode {
    wedge_runtime::mutation::check_env();
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == sandbox::SHIM_ARG) {
        sandbox::run_shim(&argv[2..]);
    }
    let args = match Args::try_parse_from(&argv) {
        Ok(args) => args,
        Err(err) => {
            let code = if err.use_stderr() {
                EXIT_RUNNER_ERROR
            } else {
                0
            };
            let _ = err.print();
            return ExitCode::from(code as u8);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();

    let policy = match &args.policy {
        Some(path) => match Policy::load(path) {
            Ok(policy) => policy,
            Err(err) => {
                eprintln!("wedge-run: bad policy: {err}");
                return ExitCode::from(EXIT_RUNNER_ERROR as u8);
            }
        },
        None => Policy::default(),
    };
    let code = session::run(RunConfig {
        policy,
        sandbox: args.sandbox,
        variant: args.variant,
        drain: std::time::Duration::from_millis(args.drain_ms),
        command: args.command,
    });
    ExitCode::from(code.clamp(0, 255) as u8)
}
