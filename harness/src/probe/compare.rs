//! `wedge probe --compare`: which known kernel a probed one behaves like, each difference, and
//! what it means for the scenario library.
//!
//! Guarantee: pure. The closest known kernel is the one with the most probes of equal value
//! (ties go to the first in the known list); every probe whose value differs from it is listed
//! with what [`IMPACT`] says that value means, and which known kernels share the value.

use super::ProbeReport;

/// What a probe's value means for the scenario library: (probe, value, meaning).
pub const IMPACT: &[(&str, &str, &str)] = &[
    (
        "recv_after_users_exit",
        "blocks",
        "NOTIF_RECV keeps blocking once the sandbox is gone: the pre-fix rows of orphaned-filter-recv and sandbox-killed-mid-session, and close-doesnt-wake's pre-fix bwrap row, hang here",
    ),
    (
        "recv_after_users_exit",
        "ENOENT",
        "NOTIF_RECV returns ENOENT once the sandbox is gone: the pre-fix rows of orphaned-filter-recv and sandbox-killed-mid-session, and close-doesnt-wake's pre-fix bwrap row, exit here",
    ),
    (
        "close_wakes_recv",
        "no",
        "close(listener) does not wake a blocked receive: close-doesnt-wake's pre-fix sandbox=none row hangs here",
    ),
    (
        "close_wakes_recv",
        "yes",
        "close(listener) wakes a blocked receive: close-doesnt-wake's pre-fix sandbox=none row would exit here, so its `hang` expectation is wrong on this kernel",
    ),
    (
        "ppoll_eventfd_wake",
        "no",
        "the fixed runner's wake-up (ppoll on listener and eventfd) fails: the fixed rows of orphaned-filter-recv, close-doesnt-wake and sandbox-killed-mid-session would hang",
    ),
    (
        "pollhup_timing",
        "after-reap",
        "POLLHUP comes only after reap: a supervisor that waits for it before reaping its child waits forever (the fixed runner uses its eventfd instead)",
    ),
    (
        "pollhup_timing",
        "never",
        "no POLLHUP at all: supervisors must rely on their own wake-up, as the fixed runner does",
    ),
    (
        "second_listener",
        "EBUSY",
        "one listener per filter chain: a user-notify sandbox nested in another (wedge-run under a user-notify supervisor, WSL2 mirrored networking) cannot start",
    ),
    (
        "second_listener",
        "ok",
        "nested listeners work: user-notify sandboxes can nest here",
    ),
    (
        "signal_wakes_recv",
        "blocks",
        "a signal does not end a blocked receive: signal-based shutdown of a supervisor hangs",
    ),
    (
        "user_notif",
        "no",
        "no seccomp user notification: every wedge-run scenario fails to start its supervisor",
    ),
    (
        "notif_continue",
        "no",
        "FLAG_CONTINUE is refused: the runtime's exec policy cannot let a checked syscall proceed",
    ),
    (
        "ia32_emulation",
        "yes",
        "the i386 ABI exists: a filter that does not check seccomp_data.arch can be bypassed with int 0x80",
    ),
    (
        "x32_syscalls",
        "yes",
        "x32 syscall numbers work: a filter that does not reject __X32_SYSCALL_BIT can be bypassed",
    ),
    (
        "user_ns",
        "no",
        "no user namespaces: unprivileged bwrap rows (sandbox = \"bwrap\") cannot set up their sandbox",
    ),
    (
        "pid_ns",
        "no",
        "no pid namespaces: bwrap's --unshare-pid and wedge's pid-namespace isolation are unavailable",
    ),
    (
        "cgroup2",
        "no",
        "no cgroup2: wedge cannot give trials a cgroup each and falls back to process groups",
    ),
];

/// The library's reading of `id = value`, or a plain note when nothing depends on it.
pub fn meaning(id: &str, value: &str) -> &'static str {
    IMPACT
        .iter()
        .find(|(i, v, _)| *i == id && *v == value)
        .map(|(_, _, m)| *m)
        .unwrap_or("no scenario of the library depends on this value")
}

/// One probe whose value differs from the closest known kernel's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub id: String,
    pub here: String,
    pub there: String,
    /// Known kernels that give `here` too.
    pub as_on: Vec<String>,
    pub meaning: &'static str,
}

/// The outcome of comparing a probed kernel with the known ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// The closest known kernel.
    pub like: String,
    /// Probes with equal values, and probes both ran.
    pub equal: usize,
    pub compared: usize,
    /// Every known kernel and its count of equal values, closest first.
    pub ranking: Vec<(String, usize)>,
    pub differences: Vec<Difference>,
}

fn equal_values(a: &ProbeReport, b: &ProbeReport) -> (usize, usize) {
    let mut equal = 0;
    let mut compared = 0;
    for p in &a.probes {
        if let Some(v) = b.value(&p.id) {
            compared += 1;
            equal += usize::from(v == p.value);
        }
    }
    (equal, compared)
}

/// Compares `probed` with `known`; `None` when there is nothing to compare with.
pub fn compare(probed: &ProbeReport, known: &[ProbeReport]) -> Option<Comparison> {
    let mut ranking: Vec<(usize, usize, usize)> = known
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let (e, c) = equal_values(probed, k);
            (i, e, c)
        })
        .collect();
    // Most equal first; the known list's order breaks ties (stable sort).
    ranking.sort_by_key(|r| std::cmp::Reverse(r.1));
    let &(best, equal, compared) = ranking.first()?;
    let closest = &known[best];
    let differences = probed
        .probes
        .iter()
        .filter_map(|p| {
            let there = closest.value(&p.id)?;
            (there != p.value).then(|| Difference {
                id: p.id.clone(),
                here: p.value.clone(),
                there: there.to_string(),
                as_on: known
                    .iter()
                    .filter(|k| k.value(&p.id) == Some(p.value.as_str()))
                    .map(|k| k.kernel.clone())
                    .collect(),
                meaning: meaning(&p.id, &p.value),
            })
        })
        .collect();
    Some(Comparison {
        like: closest.kernel.clone(),
        equal,
        compared,
        ranking: ranking
            .iter()
            .map(|&(i, e, _)| (known[i].kernel.clone(), e))
            .collect(),
        differences,
    })
}

/// The comparison in words.
pub fn render(probed: &ProbeReport, c: &Comparison) -> String {
    let mut out = format!(
        "kernel {} ({}) behaves like {}: {} of {} probes equal",
        probed.kernel, probed.release, c.like, c.equal, c.compared
    );
    let others: Vec<String> = c.ranking[1..]
        .iter()
        .map(|(k, e)| format!("{k} {e}"))
        .collect();
    if !others.is_empty() {
        out.push_str(&format!(" (then {})", others.join(", ")));
    }
    out.push('\n');
    if c.differences.is_empty() {
        out.push_str(&format!(
            "no difference from {}: the scenario library's expectations for {} apply here\n",
            c.like, c.like
        ));
    }
    for d in &c.differences {
        let as_on = if d.as_on.is_empty() {
            "no known kernel".to_string()
        } else {
            d.as_on.join(", ")
        };
        out.push_str(&format!(
            "  {} = {} here, {} on {} (as on {as_on}): {}\n",
            d.id, d.here, d.there, c.like, d.meaning
        ));
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
            release: format!("{kernel}-r"),
            backend: "host".into(),
            accel: None,
            cpus: 2,
            probes: values
                .iter()
                .map(|(id, v)| ProbeResult {
                    id: id.to_string(),
                    value: v.to_string(),
                    evidence: String::new(),
                    ms: 0.0,
                })
                .collect(),
        }
    }

    fn known() -> Vec<ProbeReport> {
        vec![
            report(
                "6.1",
                &[
                    ("recv_after_users_exit", "blocks"),
                    ("pollhup_timing", "after-reap"),
                    ("notif_sync_wakeup", "no"),
                ],
            ),
            report(
                "6.12",
                &[
                    ("recv_after_users_exit", "ENOENT"),
                    ("pollhup_timing", "at-exit"),
                    ("notif_sync_wakeup", "yes"),
                ],
            ),
        ]
    }

    #[test]
    fn a_wsl_like_kernel_is_closest_to_6_1_with_its_difference_explained() {
        // WSL2's 6.6: the old receive and HUP semantics, but SYNC_WAKE_UP.
        let wsl = report(
            "wsl",
            &[
                ("recv_after_users_exit", "blocks"),
                ("pollhup_timing", "after-reap"),
                ("notif_sync_wakeup", "yes"),
            ],
        );
        let c = compare(&wsl, &known()).unwrap();
        assert_eq!((c.like.as_str(), c.equal, c.compared), ("6.1", 2, 3));
        assert_eq!(
            c.ranking,
            vec![("6.1".to_string(), 2), ("6.12".to_string(), 1)]
        );
        assert_eq!(c.differences.len(), 1);
        let d = &c.differences[0];
        assert_eq!(
            (d.id.as_str(), d.here.as_str(), d.there.as_str()),
            ("notif_sync_wakeup", "yes", "no")
        );
        assert_eq!(d.as_on, ["6.12"]);
        let text = render(&wsl, &c);
        assert!(
            text.starts_with(
                "kernel wsl (wsl-r) behaves like 6.1: 2 of 3 probes equal (then 6.12 1)"
            ),
            "{text}"
        );
        assert!(
            text.contains("notif_sync_wakeup = yes here, no on 6.1 (as on 6.12)"),
            "{text}"
        );
    }

    #[test]
    fn a_backported_fix_shows_what_it_changes_in_the_library() {
        let backport = report(
            "mine",
            &[
                ("recv_after_users_exit", "ENOENT"),
                ("pollhup_timing", "after-reap"),
                ("notif_sync_wakeup", "no"),
            ],
        );
        let c = compare(&backport, &known()).unwrap();
        assert_eq!(c.like, "6.1");
        let d = &c.differences[0];
        assert_eq!(d.id, "recv_after_users_exit");
        assert!(
            d.meaning.contains("orphaned-filter-recv") && d.meaning.contains("exit here"),
            "{}",
            d.meaning
        );
    }

    #[test]
    fn ties_go_to_the_first_known_kernel_and_nothing_known_is_none() {
        let half = report(
            "x",
            &[
                ("recv_after_users_exit", "blocks"),
                ("pollhup_timing", "at-exit"),
            ],
        );
        assert_eq!(compare(&half, &known()).unwrap().like, "6.1");
        assert_eq!(compare(&half, &[]), None);
        let same = report("y", &[("recv_after_users_exit", "ENOENT")]);
        let c = compare(&same, &known()).unwrap();
        assert!(render(&same, &c).contains("no difference from 6.12"));
    }

    #[test]
    fn every_impact_row_names_a_real_probe_and_value() {
        for (id, value, _) in IMPACT {
            assert!(
                crate::probe::check_token(id, value).is_ok(),
                "{id} = {value}"
            );
        }
        assert!(meaning("pid_ns", "yes").contains("no scenario"));
    }
}
