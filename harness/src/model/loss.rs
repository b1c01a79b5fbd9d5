//! Why a trial was lost: a record's evidence matched against its scenario's `[[classify]]`
//! classes. A pure function of the record, so the class written when the trial ran is the one
//! anyone can recompute from its line of `trials.jsonl`.
//!
//! The evidence is what the record keeps: the tails of the subject's output and of every process
//! the steps started (each stream's last 4 KiB, joined by newlines, subject first), the verdict,
//! the cell, and the text of the hang diagnosis ([`diagnosis_text`]).

use crate::model::diagnosis::Diagnosis;
use crate::model::record::TrialRecord;
use crate::model::scenario::{Evidence, LossClass, classify};

/// The class of `record` among `classes`: `None` when the trial passed or was skipped, or when
/// the scenario defines no class; else the first class whose conditions hold, or `other`.
pub fn of(classes: &[LossClass], record: &TrialRecord) -> Option<String> {
    if classes.is_empty() || !record.lost() {
        return None;
    }
    let joined = |own: &str, spawned: Vec<&str>| {
        std::iter::once(own)
            .chain(spawned)
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let stdout = joined(
        &record.stdout_tail,
        record
            .spawned
            .iter()
            .map(|s| s.stdout_tail.as_str())
            .collect(),
    );
    let stderr = joined(
        &record.stderr_tail,
        record
            .spawned
            .iter()
            .map(|s| s.stderr_tail.as_str())
            .collect(),
    );
    let diagnosis = record.diagnosis.as_ref().map(diagnosis_text);
    let evidence = Evidence {
        cell: &record.cell,
        verdict: record.verdict.as_str(),
        stdout: &stdout,
        stderr: &stderr,
        diagnosis: diagnosis.as_deref(),
    };
    Some(classify(classes, &evidence).to_string())
}

/// The text a `diagnosis` pattern sees, one fact a line: what ended the wait, the summary (with
/// its wait-for line), then per thread `NAME[PID] PHRASE` (e.g. `youki:[1:INTER][812] main
/// thread blocked in futex(FUTEX_WAIT_PRIVATE)`), its syscall's detail, its wchan and each
/// kernel stack frame, each line prefixed the same way.
pub fn diagnosis_text(d: &Diagnosis) -> String {
    let mut lines = vec![d.reason.clone(), d.summary.clone()];
    for p in &d.processes {
        for t in &p.threads {
            let who = format!("{}[{}] {}", p.name, p.pid, t.who());
            lines.push(format!("{}[{}] {}", p.name, p.pid, t.phrase()));
            if let Some(detail) = &t.detail {
                lines.push(format!("{who}: {detail}"));
            }
            if let Some(wchan) = &t.wchan {
                lines.push(format!("{who}: wchan {wchan}"));
            }
            lines.extend(t.kernel_stack.iter().map(|f| format!("{who}: {f}")));
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::cell::Cell;
    use crate::model::diagnosis::{ProcessDiag, ThreadDiag};
    use crate::model::record::{Spawned, Verdict};
    use crate::model::scenario::{Scenario, VERDICTS};

    const SCENARIO: &str = "[subject]\nkind = \"command\"\nargv = [\"true\"]\n\
        [matrix]\nstrategy = [\"inline\", \"pool\"]\n\
        [expect]\noutcome = \"any\"\n\
        [[expect.when]]\ncell = { strategy = \"pool\" }\noutcome = \"exit\"\nexit = 0\n\
        [[classify]]\nname = \"cwd race\"\nstderr = \"notify socket\"\n\
        [[classify]]\nname = \"fork-while-locked\"\nverdict = [\"hang\"]\n\
        diagnosis = '(?m)^(tokio-rt-worker|youki:\\[[12]:(INTER|INIT)\\])\\[\\d+\\] main thread blocked in futex'\n\
        [[classify]]\nname = \"timed out\"\nverdict = [\"fail\"]\nstderr = \"\\\\(timed out\\\\)\"\n";

    fn scenario() -> Scenario {
        Scenario::parse(Path::new("t.toml"), SCENARIO).unwrap()
    }

    fn record(s: &Scenario, strategy: &str, verdict: Verdict, met: bool) -> TrialRecord {
        let cell = Cell::new(vec![("strategy".to_string(), strategy.to_string())]);
        TrialRecord::sample(s, cell, verdict, met)
    }

    fn thread(name: &str, main: bool, call: &str) -> ThreadDiag {
        ThreadDiag {
            tid: 7,
            name: name.into(),
            main,
            state: "sleeping".into(),
            call: Some(call.into()),
            detail: Some(format!("{call} at 0x10")),
            wchan: Some("futex_wait_queue".into()),
            kernel_stack: vec!["futex_wait+0x1/0x2".into()],
            for_ms: 1,
            wakes_in_ms: None,
            wake: None,
            running: false,
        }
    }

    fn hang_of(name: &str) -> Diagnosis {
        let processes = vec![
            ProcessDiag {
                pid: 5,
                ppid: 1,
                name: "wedge-agent".into(),
                cmdline: vec![],
                state: "sleeping".into(),
                threads: vec![thread("tokio-rt-worker", false, "read")],
            },
            ProcessDiag {
                pid: 9,
                ppid: 5,
                name: name.into(),
                cmdline: vec![],
                state: "sleeping".into(),
                threads: vec![thread(name, true, "futex(FUTEX_WAIT_PRIVATE)")],
            },
        ];
        Diagnosis {
            reason: "quiescent for 2000 ms".into(),
            summary: crate::model::diagnosis::summarize(&processes),
            processes,
            ..Diagnosis::default()
        }
    }

    #[test]
    fn passing_and_skipped_trials_get_no_class() {
        let s = scenario();
        // A measured cell passes on a pass verdict; an `exit` cell when it met the expectation.
        assert_eq!(
            of(s.classes(), &record(&s, "inline", Verdict::Pass, true)),
            None
        );
        assert_eq!(
            of(s.classes(), &record(&s, "pool", Verdict::Pass, true)),
            None
        );
        let skipped = record(&s, "pool", Verdict::Skipped, false);
        assert_eq!(of(s.classes(), &skipped), None);
        // Met (a measured cell meets `any` on a fail) but not passed: lost.
        let fail = record(&s, "inline", Verdict::Fail, true);
        assert_eq!(of(s.classes(), &fail).as_deref(), Some("other"));
        assert_eq!(
            of(&[], &fail),
            None,
            "a scenario without classes classifies nothing"
        );
    }

    #[test]
    fn the_evidence_is_every_tail_and_the_diagnosis_text() {
        let s = scenario();
        let mut r = record(&s, "pool", Verdict::Fail, false);
        r.spawned.push(Spawned {
            name: "execs".into(),
            exit: None,
            stdout_tail: String::new(),
            stderr_tail: "wedge-agent: exec 2/4: id 2 did not run in 10004 ms (timed out)".into(),
        });
        assert_eq!(of(s.classes(), &r).as_deref(), Some("timed out"));
        r.stderr_tail = "WARN connecting to the notify socket notify.sock: ENOENT".into();
        assert_eq!(
            of(s.classes(), &r).as_deref(),
            Some("cwd race"),
            "first match"
        );
        let mut h = record(&s, "inline", Verdict::Hang, true);
        for (child, class) in [
            ("tokio-rt-worker", "fork-while-locked"),
            ("youki:[1:INTER]", "fork-while-locked"),
            ("youki:[2:INIT]", "fork-while-locked"),
            ("sh", "other"),
        ] {
            h.diagnosis = Some(hang_of(child));
            assert_eq!(of(s.classes(), &h).as_deref(), Some(class), "{child}");
        }
        let text = diagnosis_text(&hang_of("youki:[2:INIT]"));
        for line in [
            "quiescent for 2000 ms",
            "wedge-agent[5] tokio-rt-worker thread blocked in read",
            "youki:[2:INIT][9] main thread blocked in futex(FUTEX_WAIT_PRIVATE)",
            "youki:[2:INIT][9] main thread: futex(FUTEX_WAIT_PRIVATE) at 0x10",
            "youki:[2:INIT][9] main thread: wchan futex_wait_queue",
            "youki:[2:INIT][9] main thread: futex_wait+0x1/0x2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }

    #[test]
    fn verdict_names_are_the_records() {
        for v in [
            Verdict::Pass,
            Verdict::Fail,
            Verdict::Hang,
            Verdict::Crash,
            Verdict::Error,
        ] {
            assert!(VERDICTS.contains(&v.as_str()), "{v:?}");
        }
        assert!(!VERDICTS.contains(&Verdict::Skipped.as_str()));
    }

    /// The classes of the agent scenarios, on evidence as the runtime prints it and wedge
    /// diagnoses it (taken from real trials of this version: the lines and the diagnoses below
    /// are copied from their records, pids aside).
    #[test]
    fn the_agent_scenarios_classify_real_evidence() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let warn = "\u{1b}[33m WARN\u{1b}[0m wedge_runtime::agent::service: the command never ran: \
                    binding the notify socket notify.sock in /tmp/t/exec-2/sss: Address already in \
                    use (os error 98) id=2";
        let lc_connect = "\u{1b}[33m WARN\u{1b}[0m wedge_runtime::agent::service: the command never \
                          ran: libcontainer: failed to connect to notify socket: \
                          tenant-notify-37957089.sock";
        // libcontainer 0.7.0's text for an init that died before it was ready.
        let init_lost = "\u{1b}[33m WARN\u{1b}[0m wedge_runtime::agent::service: the command never \
                         ran: libcontainer: failed to create container: failed to receive. \
                         \"waiting for init ready\". BrokenChannel id=2";
        let stalled = "wedge-agent: exec 1/1: id 1 did not run in 1500 ms (timed out) (the command \
                       never ran: the timeout fired during the build)";
        let lost = "wedge-agent: exec 3/4: id 4 did not run in 10012 ms (timed out) (the command \
                    never ran: the timeout fired during the build)";
        let agent = |worker: &str| ProcessDiag {
            pid: 16281,
            ppid: 1,
            name: "wedge-agent".into(),
            cmdline: vec![],
            state: "sleeping".into(),
            threads: vec![
                thread("wedge-agent", true, "futex(FUTEX_WAIT_BITSET_PRIVATE)"),
                thread("tokio-rt-worker", false, worker),
            ],
        };
        let child = ProcessDiag {
            pid: 16307,
            ppid: 16281,
            name: "tokio-rt-worker".into(),
            cmdline: vec![],
            state: "sleeping".into(),
            threads: vec![thread(
                "tokio-rt-worker",
                true,
                "futex(FUTEX_WAIT_BITSET_PRIVATE)",
            )],
        };
        let hang = |processes: Vec<ProcessDiag>| Diagnosis {
            reason: "quiescent for 1000 ms".into(),
            summary: crate::model::diagnosis::summarize(&processes),
            processes,
            ..Diagnosis::default()
        };
        for file in ["concurrent-exec-pass-rate", "worker-starvation", "cwd-race"] {
            let s = Scenario::load(&dir.join(format!("{file}.toml"))).unwrap();
            let strategy = if file == "cwd-race" {
                "blocking-pool"
            } else {
                "inline"
            };
            let cell = s
                .cells()
                .into_iter()
                .find(|c| c.get("strategy") == Some(strategy))
                .unwrap();
            let mut r = record(&s, "x", Verdict::Fail, false);
            r.expectation = s.expectation(&cell, "6.18.0");
            r.cell = cell;
            r.met = false;
            let class = |r: &TrialRecord| of(s.classes(), r).unwrap();
            r.stderr_tail = warn.into();
            assert_eq!(class(&r), "cwd race", "{file}");
            r.stderr_tail = format!("{lc_connect}: No such file or directory (os error 2) id=14");
            assert_eq!(
                class(&r),
                "cwd race",
                "{file}: libcontainer's connect, ENOENT"
            );
            r.stderr_tail = format!("{lc_connect}: Connection refused (os error 111) id=14");
            assert_eq!(
                class(&r),
                "other",
                "{file}: a refused connect found the socket"
            );
            r.stderr_tail = init_lost.into();
            assert_eq!(class(&r), "libcontainer init lost", "{file}");
            r.stderr_tail = format!("{init_lost}\n{warn}");
            assert_eq!(class(&r), "cwd race", "{file}: the race comes first");
            r.stderr_tail.clear();
            r.spawned = vec![Spawned {
                name: "execs".into(),
                exit: None,
                stdout_tail: String::new(),
                stderr_tail: format!("{stalled}\n{lost}\n"),
            }];
            assert_eq!(class(&r), "fork-while-locked (timed out)", "{file}");
            r.spawned[0].stderr_tail = format!("{stalled}\n");
            assert_eq!(class(&r), "other", "{file}: the stalled exec's own timeout");
            r.spawned.clear();
            r.verdict = Verdict::Hang;
            r.diagnosis = Some(hang(vec![agent("recvfrom"), child.clone()]));
            assert_eq!(class(&r), "fork-while-locked", "{file}");
            r.diagnosis = Some(hang(vec![agent("read")]));
            let want = if file == "cwd-race" {
                "other"
            } else {
                "starvation"
            };
            assert_eq!(class(&r), want, "{file}");
            r.diagnosis = Some(hang(vec![agent("epoll_wait")]));
            assert_eq!(
                class(&r),
                "other",
                "{file}: an idle worker is no starvation"
            );
        }
    }
}
