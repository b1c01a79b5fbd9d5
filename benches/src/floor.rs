//! The arms of the exec-floor comparison (issue 25), shared by the criterion bench
//! (`benches/supervisor_exec.rs`, group `exec`) and the paired report (`exec_floor_pairs`), so
//! that both run exactly the same command lines: a shell loop of execs of `/bin/true`, bare, under
//! the hand-written floor supervisor (with and without reading the exec's arguments), under
//! `wedge-run`, under bubblewrap alone with the flags `wedge-run --sandbox bwrap` uses, and under
//! the floor supervisor inside that same bubblewrap (the floor of `wedge-run --sandbox bwrap`).

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// One way of running the exec loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// `sh -c LOOP`, nothing around it.
    Plain,
    /// Under `floor_supervisor`: the notification round trip only.
    Floor,
    /// Under `floor_supervisor --read`: the round trip plus reading path and argv.
    FloorRead,
    /// Under `wedge-run --sandbox none`.
    WedgeRunNone,
    /// Under `bwrap` with `wedge-run`'s flags, no supervisor.
    BwrapAlone,
    /// Under `wedge-run --sandbox bwrap`.
    WedgeRunBwrap,
    /// Under `floor_supervisor --read`, itself inside `bwrap` with `wedge-run`'s flags: the least
    /// a supervisor that decides on path and argv costs in that sandbox.
    FloorReadBwrap,
}

impl Arm {
    pub const ALL: [Arm; 7] = [
        Arm::Plain,
        Arm::Floor,
        Arm::FloorRead,
        Arm::WedgeRunNone,
        Arm::BwrapAlone,
        Arm::FloorReadBwrap,
        Arm::WedgeRunBwrap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Arm::Plain => "plain",
            Arm::Floor => "floor",
            Arm::FloorRead => "floor+read",
            Arm::WedgeRunNone => "wedge-run --sandbox none",
            Arm::BwrapAlone => "bwrap alone",
            Arm::WedgeRunBwrap => "wedge-run --sandbox bwrap",
            Arm::FloorReadBwrap => "floor+read in bwrap",
        }
    }

    /// Whether the arm needs bubblewrap to run.
    pub fn needs_bwrap(self) -> bool {
        matches!(
            self,
            Arm::BwrapAlone | Arm::WedgeRunBwrap | Arm::FloorReadBwrap
        )
    }

    /// The command that runs `script` in this arm, output discarded.
    pub fn command(self, bins: &Bins, script: &str) -> Command {
        let shell = ["sh", "-c", script];
        let mut c = match self {
            Arm::Plain => Command::new("sh"),
            Arm::Floor | Arm::FloorRead => {
                let mut c = Command::new(&bins.floor_supervisor);
                if self == Arm::FloorRead {
                    c.arg("--read");
                }
                c.arg("--");
                c
            }
            Arm::WedgeRunNone | Arm::WedgeRunBwrap => {
                let sandbox = if self == Arm::WedgeRunNone {
                    "none"
                } else {
                    "bwrap"
                };
                let mut c = Command::new(&bins.wedge_run);
                c.args(["--sandbox", sandbox, "--"]).env("RUST_LOG", "warn");
                c
            }
            Arm::BwrapAlone => bwrap(),
            Arm::FloorReadBwrap => {
                let mut c = bwrap();
                c.arg(&bins.floor_supervisor).args(["--read", "--"]);
                c
            }
        };
        let skip = usize::from(self == Arm::Plain);
        c.args(&shell[skip..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }
}

/// The binaries the arms run.
#[derive(Debug, Clone)]
pub struct Bins {
    pub floor_supervisor: PathBuf,
    pub wedge_run: PathBuf,
}

/// A shell loop that executes `/bin/true` `execs` times.
pub fn exec_loop(execs: u64) -> String {
    format!("i=0; while [ $i -lt {execs} ]; do /bin/true; i=$((i+1)); done")
}

/// `bwrap` exactly as `wedge-run --sandbox bwrap` starts its shim (the same function), ending
/// in `--`: the comparison prices the supervisor and not a different sandbox.
pub fn bwrap() -> Command {
    wedge_runtime::supervisor::sandbox::bwrap_command()
}

/// `Ok` when bubblewrap can start a sandbox here; else why not (not installed, no user or pid
/// namespaces for it, ...).
pub fn bwrap_usable() -> Result<(), String> {
    let out = bwrap()
        .arg("/bin/true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot start bwrap: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "bwrap failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
