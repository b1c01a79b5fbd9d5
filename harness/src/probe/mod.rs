//! Kernel behaviour probes: small, bounded experiments on the kernel behaviours sandbox runtimes
//! depend on (seccomp user notification, the syscall ABIs a filter must defend, process
//! handling), each a named row with a short value and the evidence behind it.
//!
//! Guarantees:
//! - A probe tests behaviour, never a version number: stable kernels backport, WSL2 and cloud
//!   kernels patch, so only what the kernel does counts.
//! - Every probe runs in its own process (`wedge probe --run-one ID`, re-executed by
//!   [`run::run_suite`]) under a deadline: a probe that hangs is killed with its whole process group,
//!   reaped, and reported as `blocks` with the bound as evidence; one that dies says how. A probe
//!   can neither hang nor crash wedge, nor leave a seccomp filter on it.
//! - The ids are exactly [`PROBES`]; a value is one of its probe's [`Tokens`], so expectations
//!   keyed on probes (scenario files' `when.probe`) are checked at load.
//!
//! The probe bodies live in [`seccomp`], [`abi`] and [`process`]; [`compare`] tells which known
//! kernel a probed one behaves like and what that means for the scenario library; [`known`]
//! holds the committed reference reports (`reports/kernels.json`) and renders `kernels.md`.

pub mod abi;
pub mod child;
pub mod compare;
pub mod error;
pub mod known;
pub mod listener;
pub mod process;
pub mod run;
pub mod seccomp;

pub use crate::model::probe_ids::{
    ALWAYS, PROBES, ProbeDef, ProbeReport, ProbeResult, ProbeValues, TokenError, Tokens,
    check_token, probe_def,
};

use error::ResultLineError;

/// A probe's observation, before the runner stamps its id and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub value: String,
    pub evidence: String,
}

impl Observed {
    pub fn new(value: impl Into<String>, evidence: impl Into<String>) -> Observed {
        Observed {
            value: value.into(),
            evidence: evidence.into(),
        }
    }

    /// `yes` when `ok`, else `no`.
    pub fn yes_no(ok: bool, evidence: impl Into<String>) -> Observed {
        Observed::new(if ok { "yes" } else { "no" }, evidence)
    }
}

/// Parses the one line a `--run-one` process prints; the id must be the one asked for.
pub fn parse_result_line(id: &str, stdout: &str) -> Result<ProbeResult, ResultLineError> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or(ResultLineError::NoResult)?;
    let r: ProbeResult = serde_json::from_str(line).map_err(ResultLineError::Unreadable)?;
    if r.id != id {
        return Err(ResultLineError::OtherProbe {
            asked: id.to_string(),
            got: r.id,
        });
    }
    check_token(id, &r.value)?;
    Ok(r)
}

/// The human table: `id | value | evidence`.
pub fn render_table(report: &ProbeReport) -> String {
    let mut out = format!(
        "kernel {} ({}), {}{}, {} CPUs\n",
        report.kernel,
        report.release,
        report.backend,
        report
            .accel
            .as_deref()
            .map(|a| format!(" ({a})"))
            .unwrap_or_default(),
        report.cpus
    );
    let w_id = report
        .probes
        .iter()
        .map(|p| p.id.len())
        .max()
        .unwrap_or(2)
        .max(2);
    let w_val = report
        .probes
        .iter()
        .map(|p| p.value.len())
        .max()
        .unwrap_or(5)
        .max(5);
    out.push_str(&format!("{:w_id$}  {:w_val$}  evidence\n", "id", "value"));
    for p in &report.probes {
        out.push_str(&format!(
            "{:w_id$}  {:w_val$}  {}\n",
            p.id, p.value, p.evidence
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_line_must_be_the_probe_asked_for_with_a_known_value() {
        let line = r#"{"id":"pid_ns","value":"yes","evidence":"child is pid 1","ms":3.5}"#;
        let r = parse_result_line("pid_ns", &format!("noise\n{line}\n")).unwrap();
        assert_eq!((r.value.as_str(), r.ms), ("yes", 3.5));
        assert!(
            parse_result_line("user_ns", line)
                .unwrap_err()
                .to_string()
                .contains("got a result for pid_ns")
        );
        assert!(
            parse_result_line("pid_ns", "")
                .unwrap_err()
                .to_string()
                .contains("no result")
        );
        let bad = line.replace("\"yes\"", "\"sure\"");
        assert!(parse_result_line("pid_ns", &bad).is_err());
        assert!(parse_result_line("pid_ns", "{not json").is_err());
    }

    #[test]
    fn the_table_has_one_row_per_probe() {
        let report = ProbeReport {
            kernel: "6.1".into(),
            release: "6.1.0-57-cloud-amd64".into(),
            backend: "vm".into(),
            accel: Some("tcg".into()),
            cpus: 2,
            probes: vec![
                ProbeResult {
                    id: "recv_after_users_exit".into(),
                    value: "blocks".into(),
                    evidence: "still blocked after 1000 ms".into(),
                    ms: 1003.0,
                },
                ProbeResult {
                    id: "pid_ns".into(),
                    value: "yes".into(),
                    evidence: "child is pid 1".into(),
                    ms: 2.0,
                },
            ],
        };
        let t = render_table(&report);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "kernel 6.1 (6.1.0-57-cloud-amd64), vm (tcg), 2 CPUs"
        );
        assert!(lines[1].starts_with("id  ") && lines[1].ends_with("evidence"));
        assert_eq!(
            lines[2],
            "recv_after_users_exit  blocks  still blocked after 1000 ms"
        );
        assert_eq!(lines[3], "pid_ns                 yes     child is pid 1");
        assert_eq!(report.value("pid_ns"), Some("yes"));
        assert_eq!(report.values()["recv_after_users_exit"], "blocks");
    }
}
