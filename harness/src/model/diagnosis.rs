//! What a hang verdict says about the tree, as stored in `trials.jsonl`: per process and thread,
//! what each was doing, the wait-for graph and the class of the hang.
//!
//! The guarantee: plain serialisable data and the pure text built from it ([`summarize`],
//! [`ThreadDiag::phrase`]); nothing here reads `/proc` or a clock, so a record (`record.rs`)
//! and a report can use these types without the monitor that fills them in (`diagnose.rs`).

use serde::{Deserialize, Serialize};

use super::waitfor::WaitGraph;

/// What kind of hang a verdict is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HangClass {
    /// A cycle of waits (the wait-for graph's).
    Deadlock,
    /// Waits on something that will not come, without a cycle.
    Blocked,
    /// CPU used, no progress.
    Spinning,
    /// Woke, used little CPU, made no observable progress.
    Stalled,
}

impl HangClass {
    /// The name a scenario and a record use, e.g. `deadlock`.
    pub fn as_str(self) -> &'static str {
        match self {
            HangClass::Deadlock => "deadlock",
            HangClass::Blocked => "blocked",
            HangClass::Spinning => "spinning",
            HangClass::Stalled => "stalled",
        }
    }
}

/// Why a trial is a hang, per process and thread.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Diagnosis {
    /// What ended the wait: `quiescent for N ms` or `deadline of N ms passed`.
    pub reason: String,
    /// One line, e.g. `wedge-run[12]: supervisor thread blocked in ioctl(SECCOMP_IOCTL_NOTIF_RECV), ...`.
    pub summary: String,
    pub processes: Vec<ProcessDiag>,
    /// Who waits for whom at the verdict, and the cycle or chain (`waitfor`); its line ends
    /// `summary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits: Option<WaitGraph>,
    /// `deadlock` (a cycle), `blocked`, `spinning` or `stalled` (see `awake`); `None` in
    /// records older than the classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<HangClass>,
    /// At a deadline verdict: what kept the tree from being quiescent (`never quiescent: ...
    /// woke every 1.0 s (...)`, `spinning: ... used 98 % of a CPU ...`); the first three end
    /// `summary`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub awake: Vec<String>,
}

/// One process of a diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessDiag {
    pub pid: i32,
    pub ppid: i32,
    pub name: String,
    pub cmdline: Vec<String>,
    pub state: String,
    pub threads: Vec<ThreadDiag>,
}

/// One thread of a diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadDiag {
    pub tid: i32,
    pub name: String,
    pub main: bool,
    pub state: String,
    /// e.g. `ioctl(SECCOMP_IOCTL_NOTIF_RECV)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// e.g. `ioctl(fd 5, SECCOMP_IOCTL_NOTIF_RECV)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wchan: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_stack: Vec<String>,
    /// How long wedge has seen the thread in this state.
    pub for_ms: u64,
    /// When its own timeout or a timer it waits on wakes it, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wakes_in_ms: Option<u64>,
    /// The timer that wakes it (`timerfd fd 3 fires in 700 ms`), or one among what it waits on
    /// that cannot (`timerfd fd 3 is disarmed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake: Option<String>,
    #[serde(default)]
    pub running: bool,
}

impl ThreadDiag {
    /// e.g. `supervisor thread blocked in ioctl(SECCOMP_IOCTL_NOTIF_RECV)`.
    pub fn phrase(&self) -> String {
        format!("{} {}", self.who(), self.doing())
    }

    /// `main thread` or `NAME thread`.
    pub fn who(&self) -> String {
        if self.main {
            "main thread".to_string()
        } else {
            format!("{} thread", self.name)
        }
    }

    /// What it is doing, e.g. `blocked in read (timerfd fd 3 is disarmed)`.
    pub fn doing(&self) -> String {
        if self.running {
            return "running".to_string();
        }
        match (&self.call, self.state.as_str()) {
            (_, "stopped" | "traced" | "zombie" | "dead") => self.state.clone(),
            (Some(call), _) => match (self.wakes_in_ms, &self.wake) {
                (Some(_), Some(wake)) => format!("sleeping in {call} ({wake})"),
                (Some(ms), None) => format!("sleeping in {call} (times out in {ms} ms)"),
                (None, Some(wake)) => format!("blocked in {call} ({wake})"),
                (None, None) => format!("blocked in {call}"),
            },
            (None, state) => format!("{state} outside a syscall"),
        }
    }
}

/// One line per process: `name[pid]: phrase, phrase`, with identical threads grouped as
/// `N × name threads ...`; processes joined by `; `.
pub fn summarize(processes: &[ProcessDiag]) -> String {
    let mut out = Vec::new();
    for p in processes {
        let mut groups: Vec<(String, String, usize)> = Vec::new();
        for t in &p.threads {
            let who = if t.main {
                "main".to_string()
            } else {
                t.name.clone()
            };
            let doing = t.doing();
            match groups.iter_mut().find(|(w, d, _)| *w == who && *d == doing) {
                Some(g) => g.2 += 1,
                None => groups.push((who, doing, 1)),
            }
        }
        let phrases: Vec<String> = groups
            .into_iter()
            .map(|(who, doing, n)| {
                if n == 1 {
                    format!("{who} thread {doing}")
                } else {
                    format!("{n} × {who} threads {doing}")
                }
            })
            .collect();
        if phrases.is_empty() {
            out.push(format!("{}[{}]: {}", p.name, p.pid, p.state));
        } else {
            out.push(format!("{}[{}]: {}", p.name, p.pid, phrases.join(", ")));
        }
    }
    if out.is_empty() {
        "no process left".to_string()
    } else {
        out.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(name: &str, main: bool, call: Option<&str>, state: &str) -> ThreadDiag {
        ThreadDiag {
            tid: 1,
            name: name.to_string(),
            main,
            state: state.to_string(),
            call: call.map(str::to_string),
            detail: None,
            wchan: None,
            kernel_stack: Vec::new(),
            for_ms: 0,
            wakes_in_ms: None,
            wake: None,
            running: false,
        }
    }

    #[test]
    fn summary_names_the_supervisor() {
        let p = ProcessDiag {
            pid: 12,
            ppid: 1,
            name: "wedge-run".to_string(),
            cmdline: vec![],
            state: "sleeping".to_string(),
            threads: vec![
                thread("wedge-run", true, Some("wait4"), "sleeping"),
                thread(
                    "supervisor",
                    false,
                    Some("ioctl(SECCOMP_IOCTL_NOTIF_RECV)"),
                    "sleeping",
                ),
                thread(
                    "worker",
                    false,
                    Some("futex(FUTEX_WAIT_PRIVATE)"),
                    "sleeping",
                ),
                thread(
                    "worker",
                    false,
                    Some("futex(FUTEX_WAIT_PRIVATE)"),
                    "sleeping",
                ),
            ],
        };
        assert_eq!(
            summarize(&[p]),
            "wedge-run[12]: main thread blocked in wait4, supervisor thread blocked in \
             ioctl(SECCOMP_IOCTL_NOTIF_RECV), 2 × worker threads blocked in futex(FUTEX_WAIT_PRIVATE)"
        );
        assert_eq!(summarize(&[]), "no process left");
    }

    #[test]
    fn a_timer_that_cannot_fire_is_named_beside_the_wait() {
        let mut t = thread("w", true, Some("read"), "sleeping");
        t.wake = Some("timerfd fd 3 is disarmed".into());
        assert_eq!(
            t.phrase(),
            "main thread blocked in read (timerfd fd 3 is disarmed)"
        );
        t.wakes_in_ms = Some(700);
        t.wake = Some("timerfd fd 3 fires in 700 ms".into());
        assert_eq!(
            t.phrase(),
            "main thread sleeping in read (timerfd fd 3 fires in 700 ms)"
        );
    }
}
