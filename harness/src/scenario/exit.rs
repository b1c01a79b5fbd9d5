//! Exit statuses and signals as scenarios name them, validated when a file loads (the trial's
//! judge matches them against what a process really did).

use super::spec::ExitSpec;

/// Parses a signal name (`TERM`, `SIGTERM`) or number.
pub fn parse_signal(text: &str) -> Option<nix::sys::signal::Signal> {
    use std::str::FromStr;
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok();
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name).ok()
}

/// Checks an exit status as written; the message says what is wrong.
pub(crate) fn validate_exit(spec: &ExitSpec) -> Result<(), String> {
    match spec {
        ExitSpec::Code(c) if !(0..=255).contains(c) => {
            Err(format!("exit code {c} is not in 0..=255"))
        }
        ExitSpec::Code(_) => Ok(()),
        ExitSpec::Word(w) => match w.as_str() {
            "success" | "failure" | "nonzero" | "signal" | "any" => Ok(()),
            other if parse_signal(other).is_some() => Ok(()),
            other => Err(format!(
                "unknown exit status \"{other}\" (expected a code, success, failure, nonzero, signal, any or a signal name)"
            )),
        },
    }
}

/// `exit 0`, `exit signal`: an exit expectation in a verdict's reason.
pub fn describe_exit_spec(spec: &ExitSpec) -> String {
    match spec {
        ExitSpec::Code(c) => format!("exit {c}"),
        ExitSpec::Word(w) => format!("exit {w}"),
    }
}
