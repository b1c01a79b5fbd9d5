//! `[subject]`: what each trial starts, validated (a command line is never empty) and reduced
//! to one shape: the program and its flags, plus the environment, directory and stdin every
//! kind of subject has.

use std::collections::BTreeMap;

use super::locate::{Locator, ScenarioError};
use super::spec::{StdinMode, SubjectSpec};

/// A validated subject. Strings may hold `{placeholders}`, filled per trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub program: Program,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub stdin: StdinMode,
}

/// Which program the subject is, with the options of that kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// Any program: `argv[0]` (never empty) is looked up in wedge's binary directory, then `PATH`.
    Command { argv: Vec<String> },
    /// `wedge-run [--policy FILE] [--sandbox S] [--variant V] [--drain-ms MS] ARGS -- COMMAND...`
    /// (`command` never empty).
    WedgeRun {
        command: Vec<String>,
        policy: Option<String>,
        sandbox: Option<String>,
        variant: Option<String>,
        drain_ms: Option<String>,
        args: Vec<String>,
    },
    /// `wedge-agent serve --socket PATH [--workers N] [--strategy S] [--builder B] ARGS`.
    WedgeAgent {
        socket: Option<String>,
        workers: Option<String>,
        strategy: Option<String>,
        builder: Option<String>,
        args: Vec<String>,
    },
}

impl Subject {
    /// Every interpolated string, in file order.
    pub fn strings(&self) -> Vec<&String> {
        let mut out = self.argv_strings();
        out.extend(self.other_strings());
        out
    }

    /// The argv elements (`argv`, `command`, `args`): placeholders, or a whole `{AXIS...}`
    /// that a table axis's list replaces.
    pub fn argv_strings(&self) -> Vec<&String> {
        match &self.program {
            Program::Command { argv } => argv.iter().collect(),
            Program::WedgeRun { command, args, .. } => command.iter().chain(args).collect(),
            Program::WedgeAgent { args, .. } => args.iter().collect(),
        }
    }

    /// Every other interpolated string: flags, environment values, the directory.
    pub fn other_strings(&self) -> Vec<&String> {
        let mut out = Vec::new();
        match &self.program {
            Program::Command { .. } => {}
            Program::WedgeRun {
                policy,
                sandbox,
                variant,
                drain_ms,
                ..
            } => out.extend([policy, sandbox, variant, drain_ms].into_iter().flatten()),
            Program::WedgeAgent {
                socket,
                workers,
                strategy,
                builder,
                ..
            } => out.extend([socket, workers, strategy, builder].into_iter().flatten()),
        }
        out.extend(self.env.values());
        out.extend(&self.cwd);
        out
    }

    /// The socket path of a `wedge-agent` subject (for `{socket}`), when it sets one explicitly.
    pub fn explicit_socket(&self) -> Option<&String> {
        match &self.program {
            Program::WedgeAgent { socket, .. } => socket.as_ref(),
            _ => None,
        }
    }
}

/// Checks `[subject]` and reduces it to a [`Subject`].
pub(crate) fn parse(
    spec: &toml::Spanned<SubjectSpec>,
    loc: &Locator<'_>,
) -> Result<Subject, ScenarioError> {
    let (program, env, cwd, stdin) = match spec.get_ref().clone() {
        SubjectSpec::Command {
            argv,
            env,
            cwd,
            stdin,
        } => {
            if argv.is_empty() {
                return Err(loc.error(spec.span(), "`argv` is empty"));
            }
            (Program::Command { argv }, env, cwd, stdin)
        }
        SubjectSpec::WedgeRun {
            command,
            policy,
            sandbox,
            variant,
            drain_ms,
            args,
            env,
            cwd,
            stdin,
        } => {
            if command.is_empty() {
                return Err(loc.error(spec.span(), "`command` is empty"));
            }
            let program = Program::WedgeRun {
                command,
                policy,
                sandbox,
                variant,
                drain_ms,
                args,
            };
            (program, env, cwd, stdin)
        }
        SubjectSpec::WedgeAgent {
            socket,
            workers,
            strategy,
            builder,
            args,
            env,
            cwd,
            stdin,
        } => {
            let program = Program::WedgeAgent {
                socket,
                workers,
                strategy,
                builder,
                args,
            };
            (program, env, cwd, stdin)
        }
    };
    Ok(Subject {
        program,
        env,
        cwd,
        stdin,
    })
}
