//! Judging a trial: a pure function from what was observed to a verdict, whether the trial met
//! its cell's expectation, and why. It reads no clock and no kernel state, so every rule below
//! is unit-tested on made-up observations.
//!
//! The rules, in order: a step that failed or a hang stands; else the subject's exit is checked
//! against the output patterns, then a signal nobody sent is a crash, then the exit status and
//! `within_ms`; processes left running after a pass and any leak turn the verdict into a fail.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use crate::engine::monitor::Diagnosis;
use crate::model::record::{ExitInfo, Verdict};
use crate::model::scenario::{ExitSpec, Expectation, Outcome, describe_exit_spec, parse_signal};

/// How the script ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum StepsEnd {
    /// Every step ran and the subject exited.
    #[default]
    Completed,
    /// A step failed (or the subject ended before a wait's condition).
    Failed(String),
    /// wedge could not do its part (e.g. start the subject).
    Error(String),
    /// The watchdog caught a hang.
    Hang(Diagnosis),
}

/// What a trial observed, all the judge needs.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub end: StepsEnd,
    pub subject_started: bool,
    pub exit: Option<ExitInfo>,
    /// Signals steps sent to the subject.
    pub sent_to_subject: BTreeSet<i32>,
    pub time_to_verdict_ms: f64,
    pub lingering: Vec<String>,
    pub leaks: Vec<String>,
    /// The subject's whole output, for the `stdout` / `stderr` expectations.
    pub stdout: String,
    pub stderr: String,
    /// Processes the kernel's OOM killer ended at the trial's memory limit.
    pub oom_kills: u64,
    /// `[[teardown]]` steps that failed or overran, with why.
    pub teardown: Vec<String>,
    /// The processes the steps started, as they ended.
    pub spawned: Vec<crate::model::record::Spawned>,
}

/// The judge's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub met: bool,
    pub reason: String,
    pub diagnosis: Option<Diagnosis>,
}

impl Judgement {
    /// A trial wedge could not run.
    pub fn error(reason: String) -> Judgement {
        Judgement {
            verdict: Verdict::Error,
            met: false,
            reason,
            diagnosis: None,
        }
    }
}

/// The verdict of a trial that observed `o`, against expectation `e`.
pub fn judge(e: &Expectation, o: &Observed) -> Judgement {
    // `Error` with no reason yet: the script completed and the exit decides.
    let (mut verdict, mut reason, diagnosis) = match &o.end {
        StepsEnd::Completed => (Verdict::Error, String::new(), None),
        StepsEnd::Failed(r) => (Verdict::Fail, r.clone(), None),
        StepsEnd::Error(r) => (Verdict::Error, r.clone(), None),
        StepsEnd::Hang(d) => (
            Verdict::Hang,
            format!("{}: {}", d.reason, d.summary),
            Some(d.clone()),
        ),
    };
    if !o.subject_started && reason.is_empty() {
        reason = "the subject never started".to_string();
    }
    if verdict == Verdict::Error
        && let Some(exit) = o.exit
    {
        (verdict, reason) = judge_exit(e, o, exit);
    }
    if !o.lingering.is_empty() && !e.allow_lingering && verdict == Verdict::Pass {
        verdict = Verdict::Fail;
        reason = format!(
            "left processes running after it exited: {}",
            o.lingering.join(", ")
        );
    }
    if !o.leaks.is_empty() && verdict != Verdict::Error {
        reason = format!(
            "leaked {} (verdict was {}: {reason})",
            o.leaks.join(", "),
            verdict.as_str(),
        );
        verdict = Verdict::Fail;
    }
    if !o.teardown.is_empty() && verdict != Verdict::Error {
        reason = format!(
            "teardown failed: {} (verdict was {}: {reason})",
            o.teardown.join("; "),
            verdict.as_str(),
        );
        verdict = Verdict::Fail;
    }
    let met = match e.outcome {
        Outcome::Exit => verdict == Verdict::Pass,
        Outcome::Hang => verdict == Verdict::Hang && diagnosis_meets(e, diagnosis.as_ref()),
        Outcome::Any => verdict != Verdict::Error && o.leaks.is_empty() && o.teardown.is_empty(),
    };
    if e.outcome == Outcome::Hang && verdict == Verdict::Hang && !met {
        reason = match class_mismatch(e, diagnosis.as_ref()) {
            Some(why) => format!("{reason} — {why}"),
            None => format!("{reason} — expected a diagnosis {}", wanted_diagnosis(e)),
        };
    }
    Judgement {
        verdict,
        met,
        reason,
        diagnosis,
    }
}

/// Whether a hang's diagnosis is the one `e` asks for: its summary contains `diagnosis`,
/// matches `diagnosis_regex` and its class is `hang_class` (each when given).
fn diagnosis_meets(e: &Expectation, diagnosis: Option<&Diagnosis>) -> bool {
    let summary = diagnosis.map(|d| d.summary.as_str());
    let contains = e
        .diagnosis
        .as_ref()
        .is_none_or(|want| summary.is_some_and(|s| s.contains(want.as_str())));
    // The pattern compiled when the scenario loaded.
    let matches = e.diagnosis_regex.as_ref().is_none_or(|p| {
        regex::Regex::new(p).is_ok_and(|re| summary.is_some_and(|s| re.is_match(s)))
    });
    contains && matches && class_mismatch(e, diagnosis).is_none()
}

/// Why a hang's class is not the `hang_class` asked for, naming both; `None` when it is, or
/// none was asked for. A diagnosis that records no class (a record older than the classes)
/// cannot show it is the one asked for, so it misses too.
fn class_mismatch(e: &Expectation, diagnosis: Option<&Diagnosis>) -> Option<String> {
    let want = e.hang_class?;
    match diagnosis.and_then(|d| d.class) {
        Some(got) if got == want => None,
        Some(got) => Some(format!(
            "expected a hang of class {}, diagnosed {}",
            want.as_str(),
            got.as_str()
        )),
        None => Some(format!(
            "expected a hang of class {}, the diagnosis records no class",
            want.as_str()
        )),
    }
}

/// `containing "X"`, `matching /R/`, or both: what a hang expectation asks of the diagnosis.
fn wanted_diagnosis(e: &Expectation) -> String {
    let mut parts = Vec::new();
    if let Some(d) = &e.diagnosis {
        parts.push(format!("containing \"{d}\""));
    }
    if let Some(r) = &e.diagnosis_regex {
        parts.push(format!("matching /{r}/"));
    }
    if parts.is_empty() {
        // `met` is only false for a hang when a diagnosis was asked for.
        parts.push("of any kind".to_string());
    }
    parts.join(" and ")
}

/// The subject exited and no step failed: its output, signal, status and timing decide.
fn judge_exit(e: &Expectation, o: &Observed, exit: ExitInfo) -> (Verdict, String) {
    if e.outcome != Outcome::Hang {
        // The last pattern that misses names the failure.
        let missed = [
            (&e.stdout, &o.stdout, "stdout"),
            (&e.stderr, &o.stderr, "stderr"),
        ]
        .into_iter()
        .filter_map(|(pattern, text, label)| {
            let p = pattern.as_ref()?;
            let re = regex::Regex::new(p).ok()?;
            (!re.is_match(text)).then(|| format!("{label} does not match /{p}/"))
        })
        .next_back();
        if let Some(reason) = missed {
            return (Verdict::Fail, reason);
        }
        if let Some(p) = &e.stderr_forbid
            && let Ok(re) = regex::Regex::new(p)
            && let Some(m) = re.find(&o.stderr)
        {
            let line = o.stderr[m.start()..].lines().next().unwrap_or_default();
            return (Verdict::Fail, format!("stderr matches /{p}/: {line}"));
        }
    }
    let expected_signal = e
        .exit
        .as_ref()
        .is_some_and(|spec| exit.signal.is_some() && exit_matches(spec, exit));
    if let Some(sig) = exit.signal
        && !o.sent_to_subject.contains(&sig)
        && !expected_signal
    {
        let oom = match o.oom_kills {
            0 => String::new(),
            n => format!(" (the OOM killer ended {n} process(es) at the trial's memory limit)"),
        };
        return (
            Verdict::Crash,
            format!("the subject was {exit}, which nobody sent it{oom}"),
        );
    }
    if let Some(spec) = &e.exit
        && e.outcome != Outcome::Hang
        && !exit_matches(spec, exit)
    {
        return (
            Verdict::Fail,
            format!("ended with {exit}, expected {}", describe_exit_spec(spec)),
        );
    }
    if let Some(ms) = e.within_ms
        && o.time_to_verdict_ms > ms as f64
    {
        return (
            Verdict::Fail,
            format!(
                "ended after {:.0} ms, expected within {ms} ms",
                o.time_to_verdict_ms
            ),
        );
    }
    (Verdict::Pass, format!("ended with {exit}"))
}

/// How a process ended, as recorded.
pub fn exit_info(status: ExitStatus) -> ExitInfo {
    ExitInfo {
        code: status.code(),
        signal: status.signal(),
    }
}

/// Whether an exit matches an exit expectation.
pub fn exit_matches(spec: &ExitSpec, exit: ExitInfo) -> bool {
    match spec {
        ExitSpec::Code(c) => exit.code == Some(*c),
        ExitSpec::Word(w) => match w.as_str() {
            "any" => true,
            "success" => exit.code == Some(0),
            // Did not succeed: a non-zero code, or killed by a signal.
            "failure" => exit.code.is_some_and(|c| c != 0) || exit.signal.is_some(),
            "nonzero" => exit.code.is_some_and(|c| c != 0),
            "signal" => exit.signal.is_some(),
            name => parse_signal(name).is_some_and(|s| exit.signal == Some(s as i32)),
        },
        ExitSpec::OneOf(list) => list.iter().any(|one| exit_matches(one, exit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(outcome: Outcome) -> Expectation {
        Expectation {
            outcome,
            exit: None,
            within_ms: None,
            stdout: None,
            stderr: None,
            stderr_forbid: None,
            diagnosis: None,
            diagnosis_regex: None,
            hang_class: None,
            min_rate: None,
            allow_lingering: false,
            allow_leftover_processes: Vec::new(),
            allow_leftover_paths: Vec::new(),
        }
    }

    fn exited(code: Option<i32>, signal: Option<i32>) -> Observed {
        Observed {
            subject_started: true,
            exit: Some(ExitInfo { code, signal }),
            time_to_verdict_ms: 10.0,
            ..Observed::default()
        }
    }

    fn diagnosis(summary: &str) -> Diagnosis {
        Diagnosis {
            reason: "quiescent for 100 ms".into(),
            summary: summary.into(),
            ..Diagnosis::default()
        }
    }

    #[test]
    fn an_exit_that_meets_the_expectation_passes() {
        let mut e = expect(Outcome::Exit);
        e.exit = Some(ExitSpec::Code(0));
        let j = judge(&e, &exited(Some(0), None));
        assert_eq!((j.verdict, j.met), (Verdict::Pass, true));
        assert_eq!(j.reason, "ended with exit 0");
        let j = judge(&e, &exited(Some(3), None));
        assert_eq!((j.verdict, j.met), (Verdict::Fail, false));
        assert_eq!(j.reason, "ended with exit 3, expected exit 0");
    }

    #[test]
    fn a_signal_nobody_sent_is_a_crash_unless_expected() {
        let e = expect(Outcome::Exit);
        let j = judge(&e, &exited(None, Some(11)));
        assert_eq!(j.verdict, Verdict::Crash, "{}", j.reason);
        let mut sent = exited(None, Some(15));
        sent.sent_to_subject.insert(15);
        assert_eq!(judge(&e, &sent).verdict, Verdict::Pass);
        let mut e = expect(Outcome::Exit);
        e.exit = Some(ExitSpec::Word("SEGV".into()));
        assert_eq!(judge(&e, &exited(None, Some(11))).verdict, Verdict::Pass);
    }

    #[test]
    fn a_forbidden_stderr_line_fails_an_exit_that_met_everything_else() {
        let mut e = expect(Outcome::Exit);
        e.stderr_forbid = Some("^wedge-run: DRAIN EXPIRED".into());
        let mut o = exited(Some(0), None);
        o.stderr = "starting\n".into();
        assert_eq!(judge(&e, &o).verdict, Verdict::Pass);
        o.stderr = "wedge-run: DRAIN EXPIRED: the supervisor did not stop\nbye\n".into();
        let j = judge(&e, &o);
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(
            j.reason,
            "stderr matches /^wedge-run: DRAIN EXPIRED/: wedge-run: DRAIN EXPIRED: the supervisor did not stop"
        );
    }

    #[test]
    fn output_patterns_and_timing_are_checked() {
        let mut e = expect(Outcome::Exit);
        e.stdout = Some("^ok$".into());
        e.stderr = Some("warn".into());
        let mut o = exited(Some(0), None);
        o.stdout = "no".into();
        let j = judge(&e, &o);
        assert_eq!(j.verdict, Verdict::Fail);
        // The last pattern that misses names the failure.
        assert_eq!(j.reason, "stderr does not match /warn/");
        let mut e = expect(Outcome::Exit);
        e.within_ms = Some(5);
        let j = judge(&e, &exited(Some(0), None));
        assert_eq!(j.reason, "ended after 10 ms, expected within 5 ms");
    }

    #[test]
    fn hangs_meet_a_hang_expectation_only_with_the_diagnosis() {
        let mut e = expect(Outcome::Hang);
        e.diagnosis = Some("NOTIF_RECV".into());
        let mut o = Observed {
            subject_started: true,
            end: StepsEnd::Hang(diagnosis("supervisor blocked in ioctl(NOTIF_RECV)")),
            ..Observed::default()
        };
        let j = judge(&e, &o);
        assert_eq!((j.verdict, j.met), (Verdict::Hang, true));
        assert!(j.diagnosis.is_some());
        o.end = StepsEnd::Hang(diagnosis("blocked in futex"));
        let j = judge(&e, &o);
        assert!(!j.met);
        assert!(
            j.reason
                .ends_with("expected a diagnosis containing \"NOTIF_RECV\"")
        );
        assert!(!judge(&expect(Outcome::Exit), &o).met);
    }

    #[test]
    fn failure_means_did_not_succeed_and_nonzero_means_a_code() {
        let word = |w: &str| ExitSpec::Word(w.into());
        let code = |c| ExitInfo {
            code: Some(c),
            signal: None,
        };
        let killed = |s| ExitInfo {
            code: None,
            signal: Some(s),
        };
        assert!(exit_matches(&word("failure"), code(1)));
        assert!(exit_matches(&word("failure"), killed(9)));
        assert!(!exit_matches(&word("failure"), code(0)));
        assert!(exit_matches(&word("nonzero"), code(2)));
        assert!(!exit_matches(&word("nonzero"), killed(9)));
        // A signal nobody sent is no crash when the expectation is "failure".
        let mut e = expect(Outcome::Exit);
        e.exit = Some(word("failure"));
        let j = judge(&e, &exited(None, Some(11)));
        assert_eq!((j.verdict, j.met), (Verdict::Pass, true), "{}", j.reason);
        e.exit = Some(word("nonzero"));
        assert_eq!(judge(&e, &exited(None, Some(11))).verdict, Verdict::Crash);
    }

    #[test]
    fn a_list_of_exits_accepts_any_of_them() {
        let mut e = expect(Outcome::Exit);
        e.exit = Some(ExitSpec::OneOf(vec![
            ExitSpec::Code(0),
            ExitSpec::Code(130),
            ExitSpec::Word("TERM".into()),
        ]));
        assert_eq!(judge(&e, &exited(Some(130), None)).verdict, Verdict::Pass);
        assert_eq!(judge(&e, &exited(None, Some(15))).verdict, Verdict::Pass);
        let j = judge(&e, &exited(Some(1), None));
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(
            j.reason,
            "ended with exit 1, expected exit 0 or 130 or TERM"
        );
    }

    #[test]
    fn a_diagnosis_regex_must_match_the_summary() {
        let mut e = expect(Outcome::Hang);
        e.diagnosis_regex = Some(r"abba\[\d+\]: 2 × abba threads blocked in futex".into());
        let hang = |summary: &str| Observed {
            subject_started: true,
            end: StepsEnd::Hang(diagnosis(summary)),
            ..Observed::default()
        };
        let o = hang("abba[41]: 2 × abba threads blocked in futex(FUTEX_WAIT_PRIVATE)");
        assert!(judge(&e, &o).met);
        let j = judge(
            &e,
            &hang("abba[41]: main thread blocked in futex(FUTEX_WAIT)"),
        );
        assert!(!j.met);
        assert!(
            j.reason.ends_with(
                r"expected a diagnosis matching /abba\[\d+\]: 2 × abba threads blocked in futex/"
            ),
            "{}",
            j.reason
        );
        // Both keys: both must hold.
        e.diagnosis = Some("main thread".into());
        let j = judge(&e, &o);
        assert!(!j.met);
        assert!(
            j.reason.contains("containing \"main thread\" and matching"),
            "{}",
            j.reason
        );
    }

    #[test]
    fn a_hang_class_must_be_the_diagnosed_one() {
        use crate::model::diagnosis::HangClass;
        let mut e = expect(Outcome::Hang);
        e.hang_class = Some(HangClass::Deadlock);
        let hang = |class: Option<HangClass>| Observed {
            subject_started: true,
            end: StepsEnd::Hang(Diagnosis {
                class,
                ..diagnosis("abba[41]: 2 × abba threads blocked in futex(FUTEX_WAIT_PRIVATE)")
            }),
            ..Observed::default()
        };
        let j = judge(&e, &hang(Some(HangClass::Deadlock)));
        assert_eq!((j.verdict, j.met), (Verdict::Hang, true));
        let j = judge(&e, &hang(Some(HangClass::Blocked)));
        assert_eq!((j.verdict, j.met), (Verdict::Hang, false));
        assert!(
            j.reason
                .ends_with(" — expected a hang of class deadlock, diagnosed blocked"),
            "{}",
            j.reason
        );
        let j = judge(&e, &hang(None));
        assert!(!j.met);
        assert!(
            j.reason
                .ends_with(" — expected a hang of class deadlock, the diagnosis records no class"),
            "{}",
            j.reason
        );
        // Without `hang_class`, any class (or none) meets a hang expectation.
        e.hang_class = None;
        assert!(judge(&e, &hang(Some(HangClass::Spinning))).met);
        assert!(judge(&e, &hang(None)).met);
    }

    #[test]
    fn leaks_and_lingering_fail_a_pass() {
        let e = expect(Outcome::Exit);
        let mut o = exited(Some(0), None);
        o.lingering = vec!["sleep[7]".into()];
        let j = judge(&e, &o);
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.reason.contains("sleep[7]"), "{}", j.reason);
        let mut allowed = e.clone();
        allowed.allow_lingering = true;
        assert_eq!(judge(&allowed, &o).verdict, Verdict::Pass);
        let mut o = exited(Some(0), None);
        o.leaks = vec!["mount /x".into()];
        let j = judge(&e, &o);
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(
            j.reason,
            "leaked mount /x (verdict was pass: ended with exit 0)"
        );
        assert!(!judge(&expect(Outcome::Any), &o).met);
    }

    #[test]
    fn failures_and_errors_stand() {
        let e = expect(Outcome::Any);
        let o = Observed {
            end: StepsEnd::Failed("step 2: timed out".into()),
            subject_started: true,
            ..Observed::default()
        };
        let j = judge(&e, &o);
        assert_eq!((j.verdict, j.met), (Verdict::Fail, true));
        let o = Observed {
            end: StepsEnd::Error("starting x: not found".into()),
            ..Observed::default()
        };
        let j = judge(&e, &o);
        assert_eq!((j.verdict, j.met), (Verdict::Error, false));
        assert_eq!(j.reason, "starting x: not found");
        let j = judge(&e, &Observed::default());
        assert_eq!(j.reason, "the subject never started");
    }
}
