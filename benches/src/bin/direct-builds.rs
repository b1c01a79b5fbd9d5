//! The anchor of the agent's throughput bench (`benches/benches/agent_exec.rs`): a plain
//! program doing the container builds `wedge-agent` does, without the service. It builds COUNT
//! copies of `/bin/true` one after another with the agent's own build code (as the zygote does:
//! one build at a time), reads each command's output to its end and reaps it, ROUNDS times, and
//! prints the nanoseconds that took. Single-threaded, so no lock can be held when it clones.
//!
//! ```text
//! direct-builds COUNT ROUNDS STATE_ROOT     (as root)
//! ```
//!
//! Exit status: 0 when every command exited 0, 1 when a build or a command failed, 2 on bad
//! arguments.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use nix::sys::wait::WaitStatus;
use wedge_runtime::agent::build::{self, BuildSpec, Builder, Built};
use wedge_runtime::agent::spawn::cleanup;
use wedge_runtime::sys;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [count, rounds, root] => count
            .parse::<u64>()
            .ok()
            .zip(rounds.parse::<u64>().ok())
            .map(|(c, r)| (c, r, PathBuf::from(root))),
        _ => None,
    };
    let Some((count, rounds, root)) = parsed else {
        eprintln!("usage: direct-builds COUNT ROUNDS STATE_ROOT");
        return ExitCode::from(2);
    };
    // The intermediates exit once they have cloned the init processes, which are reparented
    // here, as they are to the agent: this program reaps them.
    if let Err(e) = sys::become_child_subreaper() {
        eprintln!("direct-builds: PR_SET_CHILD_SUBREAPER: {e}");
        return ExitCode::from(1);
    }
    let start = Instant::now();
    for round in 0..rounds {
        if let Err(e) = one_round(count, round, &root) {
            eprintln!("direct-builds: round {round}: {e}");
            return ExitCode::from(1);
        }
    }
    println!("{}", start.elapsed().as_nanos());
    ExitCode::SUCCESS
}

/// COUNT builds, then each command's output to its end and its exit.
fn one_round(count: u64, round: u64, root: &std::path::Path) -> Result<(), String> {
    let cancelled = AtomicBool::new(false);
    let mut built = Vec::new();
    for i in 0..count {
        let spec = BuildSpec {
            exec_id: round * count + i + 1,
            state_root: root.to_path_buf(),
            program: "/bin/true".into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: "/".into(),
            builder: Builder::Wedge,
        };
        match build::build(&spec, None, &cancelled, &mut |_| {}) {
            Ok(b) => built.push(b),
            Err(failure) => {
                cleanup::discard_failure(&failure);
                return Err(format!("build {}: {}", i + 1, failure.error));
            }
        }
    }
    for b in built {
        finish(b)?;
    }
    Ok(())
}

/// Closes the command's stdin, reads its stdout and stderr to their ends and reaps it.
fn finish(b: Built) -> Result<(), String> {
    let Built {
        pid,
        pidfd,
        stdin,
        stdout,
        stderr,
    } = b;
    drop(stdin);
    let mut sink = Vec::new();
    for fd in [stdout, stderr] {
        std::fs::File::from(fd)
            .read_to_end(&mut sink)
            .map_err(|e| format!("reading the output of {pid}: {e}"))?;
    }
    match cleanup::reap(&pidfd) {
        Ok(WaitStatus::Exited(_, 0)) => Ok(()),
        Ok(other) => Err(format!("command {pid} ended {other:?}")),
        Err(e) => Err(format!("reaping {pid}: {e}")),
    }
}
