//! The reference reports: every probe on the kernels wedge knows (the host and the VM
//! backend's kernels), from real runs, committed as `reports/kernels.json` and rendered as
//! `reports/kernels.md`.
//!
//! Guarantees:
//! - The committed JSON is compiled into wedge ([`KNOWN_JSON`]), so `wedge probe --compare`
//!   needs no checkout; `wedge probe --report reports/` regenerates both files.
//! - The rendering is a pure function of the reports: the behaviour table ([`behaviour_table`])
//!   holds values only (no times), so it changes exactly when a kernel's behaviour does; a
//!   snapshot test over it makes such a change a reviewed diff.
//! - Each report is checked against what `docs/kernel-facts.md` records ([`FACTS`]):
//!   the rendering says where they agree and where the probe disagrees (the probe wins).

use serde::{Deserialize, Serialize};

use super::{PROBES, ProbeReport};

/// `reports/kernels.json` as committed when this wedge was built.
pub const KNOWN_JSON: &str = include_str!("../../../reports/kernels.json");

/// The command that regenerates the reports.
pub const REGENERATE: &str = "cargo build --release --workspace --all-features --bins \
&& ./target/release/wedge probe --report reports/";

/// The committed reference reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownReports {
    /// How they were made.
    pub command: String,
    /// The wedge that made them.
    pub wedge_version: String,
    pub kernels: Vec<ProbeReport>,
}

/// Known reports that do not read as reports.
#[derive(Debug, thiserror::Error)]
#[error("reports/kernels.json: {0}")]
pub struct KnownReportsError(#[source] serde_json::Error);

impl KnownReports {
    pub fn parse(text: &str) -> Result<KnownReports, KnownReportsError> {
        serde_json::from_str(text).map_err(KnownReportsError)
    }

    /// The reports compiled into this wedge.
    pub fn builtin() -> Result<KnownReports, KnownReportsError> {
        KnownReports::parse(KNOWN_JSON)
    }

    /// The known report of the kernel named `name` (`host`, `6.1`, ...).
    pub fn kernel(&self, name: &str) -> Option<&ProbeReport> {
        self.kernels.iter().find(|k| k.kernel == name)
    }
}

/// What `docs/kernel-facts.md` says a probe gives on a kernel: (probe, kernel, value, the fact).
pub const FACTS: &[(&str, &str, &str, &str)] = &[
    (
        "user_notif",
        "*",
        "yes",
        "actions_avail lists user_notif on the host, 6.1 and 6.12",
    ),
    (
        "close_wakes_recv",
        "*",
        "no",
        "close(listener) does not wake a blocked NOTIF_RECV (6.1, 6.12, 6.18)",
    ),
    (
        "signal_wakes_recv",
        "*",
        "EINTR",
        "a signal without SA_RESTART ends the receive with EINTR",
    ),
    (
        "ppoll_eventfd_wake",
        "*",
        "yes",
        "ppoll on [listener, eventfd] wakes on an eventfd write",
    ),
    (
        "recv_after_users_exit",
        "6.1",
        "blocks",
        "< 6.11: NOTIF_RECV keeps blocking (from the kernel history)",
    ),
    (
        "recv_after_users_exit",
        "6.12",
        "ENOENT",
        ">= 6.11: NOTIF_RECV returns ENOENT",
    ),
    (
        "recv_after_users_exit",
        "host",
        "ENOENT",
        ">= 6.11: NOTIF_RECV returns ENOENT",
    ),
    (
        "pollhup_timing",
        "6.1",
        "after-reap",
        "< 6.11: POLLHUP only after the zombie is reaped",
    ),
    (
        "pollhup_timing",
        "6.12",
        "at-exit",
        ">= 6.11: POLLHUP at task exit",
    ),
    (
        "pollhup_timing",
        "host",
        "at-exit",
        ">= 6.11: POLLHUP at task exit",
    ),
    (
        "second_listener",
        "*",
        "EBUSY",
        "a second NEW_LISTENER in one chain gives EBUSY",
    ),
    (
        "notif_continue",
        "*",
        "yes",
        "FLAG_CONTINUE lets the syscall run (all three are >= 5.5)",
    ),
    ("notif_addfd", "*", "yes", "NOTIF_ADDFD since 5.9"),
    ("addfd_send", "*", "yes", "ADDFD_FLAG_SEND since 5.14"),
    (
        "wait_killable_recv",
        "*",
        "yes",
        "WAIT_KILLABLE_RECV since 5.19",
    ),
    ("notif_fifo", "*", "yes", "FIFO delivery since 5.19"),
    ("notif_sync_wakeup", "6.1", "no", "SYNC_WAKE_UP since 6.6"),
    ("notif_sync_wakeup", "6.12", "yes", "SYNC_WAKE_UP since 6.6"),
    ("notif_sync_wakeup", "host", "yes", "SYNC_WAKE_UP since 6.6"),
];

/// How one report stands against [`FACTS`]: (probe, expected, got, the fact) for each fact that
/// applies to it, and whether they agree.
pub fn check_facts(
    r: &ProbeReport,
) -> Vec<(&'static str, &'static str, String, &'static str, bool)> {
    FACTS
        .iter()
        .filter(|(_, k, _, _)| *k == "*" || *k == r.kernel)
        .map(|&(id, _, want, fact)| {
            let got = r.value(id).unwrap_or("(not run)").to_string();
            let agrees = got == want;
            (id, want, got, fact, agrees)
        })
        .collect()
}

/// The behaviour table: one row per probe, one column per kernel, values only.
pub fn behaviour_table(k: &KnownReports) -> String {
    let mut out = String::from("| probe |");
    for r in &k.kernels {
        out.push_str(&format!(" {} |", r.kernel));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(k.kernels.len()));
    out.push('\n');
    for p in PROBES {
        let values: Vec<&str> = k
            .kernels
            .iter()
            .map(|r| r.value(p.id).unwrap_or("—"))
            .collect();
        let differs = values.windows(2).any(|w| w[0] != w[1]);
        let id = if differs {
            format!("**{}**", p.id)
        } else {
            p.id.to_string()
        };
        out.push_str(&format!("| {id} |"));
        for v in values {
            out.push_str(&format!(" {v} |"));
        }
        out.push('\n');
    }
    out
}

/// `reports/kernels.md`.
pub fn render_markdown(k: &KnownReports) -> String {
    let mut out = String::from("# Kernel behaviour probes\n\n");
    out.push_str(
        "What `wedge probe` observed on each kernel wedge knows: the host and the VM backend's \
         kernels (`kernels.toml`). Probes test behaviour, never version numbers. Generated, do \
         not edit: regenerate with\n\n",
    );
    out.push_str(&format!("```sh\n{}\n```\n\n", k.command));
    out.push_str(&format!("by wedge {}.\n\n", k.wedge_version));
    out.push_str("| kernel | release | backend | CPUs |\n|---|---|---|---|\n");
    for r in &k.kernels {
        let backend = match &r.accel {
            Some(a) => format!("{} ({a})", r.backend),
            None => r.backend.clone(),
        };
        out.push_str(&format!(
            "| {} | {} | {backend} | {} |\n",
            r.kernel, r.release, r.cpus
        ));
    }
    out.push_str("\n## Behaviour (bold: the kernels differ)\n\n");
    out.push_str(&behaviour_table(k));
    out.push_str("\n## Against kernel-facts.md\n\n");
    out.push_str(&facts_section(k));
    out.push_str("\n## What each probe observes\n\n| probe | observes |\n|---|---|\n");
    for p in PROBES {
        out.push_str(&format!("| {} | {} |\n", p.id, p.observes));
    }
    for r in &k.kernels {
        out.push_str(&format!(
            "\n## Evidence: {} ({})\n\n| probe | value | evidence | ms |\n|---|---|---|---|\n",
            r.kernel, r.release
        ));
        for p in &r.probes {
            out.push_str(&format!(
                "| {} | {} | {} | {:.0} |\n",
                p.id,
                p.value,
                p.evidence.replace('|', "\\|"),
                p.ms
            ));
        }
    }
    out
}

fn facts_section(k: &KnownReports) -> String {
    let mut agree = 0;
    let mut rows = String::new();
    for r in &k.kernels {
        for (id, want, got, fact, ok) in check_facts(r) {
            if ok {
                agree += 1;
            } else {
                rows.push_str(&format!(
                    "| {} | {id} | {want} | {got} | {fact} |\n",
                    r.kernel
                ));
            }
        }
    }
    let mut out = format!("{agree} observations agree with kernel-facts.md");
    if rows.is_empty() {
        out.push_str("; none disagrees.\n");
    } else {
        out.push_str(
            "; these disagree (the probe wins):\n\n| kernel | probe | facts say | probe says | fact |\n|---|---|---|---|---|\n",
        );
        out.push_str(&rows);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProbeResult;

    fn report(kernel: &str, values: &[(&str, &str)]) -> ProbeReport {
        ProbeReport {
            kernel: kernel.into(),
            release: format!("{kernel}.0-test"),
            backend: "vm".into(),
            accel: Some("tcg".into()),
            cpus: 2,
            probes: values
                .iter()
                .map(|(id, v)| ProbeResult {
                    id: id.to_string(),
                    value: v.to_string(),
                    evidence: format!("saw {v}"),
                    ms: 1.0,
                })
                .collect(),
        }
    }

    #[test]
    fn rows_that_differ_are_bold_and_times_stay_out_of_the_table() {
        let k = KnownReports {
            command: REGENERATE.into(),
            wedge_version: "test".into(),
            kernels: vec![
                report(
                    "6.1",
                    &[("recv_after_users_exit", "blocks"), ("pid_ns", "yes")],
                ),
                report(
                    "6.12",
                    &[("recv_after_users_exit", "ENOENT"), ("pid_ns", "yes")],
                ),
            ],
        };
        let t = behaviour_table(&k);
        assert!(
            t.contains("| **recv_after_users_exit** | blocks | ENOENT |"),
            "{t}"
        );
        assert!(t.contains("| pid_ns | yes | yes |"), "{t}");
        assert!(t.contains("| user_notif | — | — |"), "{t}");
        assert!(!t.contains("1.0") && !t.contains("saw"), "{t}");
    }

    #[test]
    fn facts_are_checked_per_kernel() {
        let r = report(
            "6.1",
            &[
                ("recv_after_users_exit", "ENOENT"),
                ("second_listener", "EBUSY"),
            ],
        );
        let checks = check_facts(&r);
        let recv = checks
            .iter()
            .find(|c| c.0 == "recv_after_users_exit")
            .unwrap();
        assert_eq!(
            (recv.1, recv.2.as_str(), recv.4),
            ("blocks", "ENOENT", false)
        );
        assert!(checks.iter().any(|c| c.0 == "second_listener" && c.4));
        // The 6.12 fact does not apply to 6.1.
        assert_eq!(
            checks
                .iter()
                .filter(|c| c.0 == "recv_after_users_exit")
                .count(),
            1
        );
        let k = KnownReports {
            command: REGENERATE.into(),
            wedge_version: "t".into(),
            kernels: vec![r],
        };
        let md = render_markdown(&k);
        assert!(
            md.contains("| 6.1 | recv_after_users_exit | blocks | ENOENT |"),
            "{md}"
        );
    }

    /// The committed reports: every probe on every known kernel, the behaviour table as
    /// snapshotted (a kernel that changes behaviour is a reviewed diff), and kernels.md as
    /// rendered from kernels.json.
    #[test]
    fn the_committed_reports_render_as_committed() {
        let k = KnownReports::builtin().unwrap();
        let names: Vec<&str> = k.kernels.iter().map(|r| r.kernel.as_str()).collect();
        assert_eq!(names, ["host", "6.1", "6.12"]);
        for r in &k.kernels {
            for p in PROBES {
                let v = r
                    .value(p.id)
                    .unwrap_or_else(|| panic!("{} lacks {}", r.kernel, p.id));
                assert!(
                    crate::probe::check_token(p.id, v).is_ok(),
                    "{} {}={v}",
                    r.kernel,
                    p.id
                );
            }
        }
        insta::assert_snapshot!("kernels_behaviour", behaviour_table(&k));
        assert!(
            render_markdown(&k) == include_str!("../../../reports/kernels.md"),
            "reports/kernels.md is stale: regenerate it with {REGENERATE}"
        );
    }

    #[test]
    fn bad_json_is_an_error_that_names_the_file() {
        let e = KnownReports::parse("{").unwrap_err().to_string();
        assert!(e.starts_with("reports/kernels.json"), "{e}");
    }
}
