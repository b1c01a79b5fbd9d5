//! The vocabulary of kernel probes as scenarios and reports use it: every probe's
//! id, what it observes and the values it can give ([`PROBES`], [`check_token`]), and the
//! result types a probe run produces ([`ProbeResult`], [`ProbeReport`], [`ProbeValues`]). Plain
//! data: running probes is the `probe` module's.
//!
//! Guarantee: the ids are exactly [`PROBES`]; a value is one of its probe's [`Tokens`], so
//! expectations keyed on probes (scenario files' `when.probe`) are checked at load.

use serde::{Deserialize, Serialize};

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub id: String,
    /// A short token: `yes`/`no`, an errno name, `at-exit`/`after-reap`/`never`, `blocks`.
    pub value: String,
    /// What was observed: errno, time, revents.
    pub evidence: String,
    /// How long the probe took, its process's start and end included.
    pub ms: f64,
}

/// Every probe of one machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// As the user named it: `host`, a kernels.toml name, or a bzImage path.
    pub kernel: String,
    /// `uname -r` where the probes ran.
    pub release: String,
    /// `host` or `vm`.
    pub backend: String,
    /// `kvm` or `tcg` in a VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    pub cpus: usize,
    pub probes: Vec<ProbeResult>,
}

impl ProbeReport {
    /// The value probe `id` gave, if it ran.
    pub fn value(&self, id: &str) -> Option<&str> {
        self.probes
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.value.as_str())
    }

    /// Probe id to value, for resolving expectations.
    pub fn values(&self) -> ProbeValues {
        self.probes
            .iter()
            .map(|p| (p.id.clone(), p.value.clone()))
            .collect()
    }
}

/// Probe id to value: what expectations keyed on probes are resolved against.
pub type ProbeValues = std::collections::BTreeMap<String, String>;

/// The values a probe can give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    /// Exactly these.
    Fixed(&'static [&'static str]),
    /// These, or any errno name (`EINVAL`, ...): the call failed some other way.
    Errno(&'static [&'static str]),
}

/// Values any probe can give: it outlived its deadline, or its process died without a result.
pub const ALWAYS: [&str; 2] = ["blocks", "error"];

const YES_NO: Tokens = Tokens::Fixed(&["yes", "no"]);

/// One probe: its id, what it observes, and its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeDef {
    pub id: &'static str,
    pub observes: &'static str,
    pub tokens: Tokens,
}

/// Every probe, in report order.
pub const PROBES: &[ProbeDef] = &[
    def(
        "user_notif",
        "user_notif in actions_avail and a listener can be created",
        YES_NO,
    ),
    def(
        "close_wakes_recv",
        "close(listener) from another thread wakes a blocked NOTIF_RECV",
        YES_NO,
    ),
    def(
        "signal_wakes_recv",
        "a signal without SA_RESTART ends a blocked NOTIF_RECV",
        Tokens::Errno(&[]),
    ),
    def(
        "recv_after_users_exit",
        "NOTIF_RECV once every filter user has exited and been reaped",
        Tokens::Errno(&[]),
    ),
    def(
        "pollhup_timing",
        "when POLLHUP shows on the listener after its last user exits",
        Tokens::Fixed(&["at-exit", "after-reap", "never"]),
    ),
    def(
        "ppoll_eventfd_wake",
        "ppoll on [listener, eventfd] wakes on the eventfd write",
        YES_NO,
    ),
    def(
        "second_listener",
        "a second NEW_LISTENER in the same filter chain",
        Tokens::Errno(&["ok"]),
    ),
    def(
        "notif_continue",
        "SECCOMP_USER_NOTIF_FLAG_CONTINUE lets the syscall run",
        YES_NO,
    ),
    def(
        "notif_addfd",
        "SECCOMP_IOCTL_NOTIF_ADDFD installs an fd in the target",
        YES_NO,
    ),
    def(
        "addfd_send",
        "SECCOMP_ADDFD_FLAG_SEND adds the fd and answers at once",
        YES_NO,
    ),
    def(
        "wait_killable_recv",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV is accepted",
        YES_NO,
    ),
    def(
        "notif_sync_wakeup",
        "NOTIF_SET_FLAGS accepts SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP",
        YES_NO,
    ),
    def(
        "notif_fifo",
        "notifications are received in arrival order",
        YES_NO,
    ),
    def(
        "ia32_emulation",
        "the i386 syscall ABI (int 0x80) works",
        YES_NO,
    ),
    def(
        "x32_syscalls",
        "x32 syscall numbers (__X32_SYSCALL_BIT) work",
        YES_NO,
    ),
    def(
        "pidfd",
        "pidfd_open works and a child's pidfd polls readable at its exit",
        YES_NO,
    ),
    def(
        "clone3_into_cgroup",
        "clone3 with CLONE_INTO_CGROUP starts a child in a cgroup",
        YES_NO,
    ),
    def(
        "cgroup2",
        "a cgroup2 hierarchy is mounted (or mountable)",
        YES_NO,
    ),
    def("user_ns", "unshare(CLONE_NEWUSER) works", YES_NO),
    def(
        "pid_ns",
        "unshare(CLONE_NEWPID): the next child is pid 1",
        YES_NO,
    ),
];

const fn def(id: &'static str, observes: &'static str, tokens: Tokens) -> ProbeDef {
    ProbeDef {
        id,
        observes,
        tokens,
    }
}

/// The probe named `id`.
pub fn probe_def(id: &str) -> Option<&'static ProbeDef> {
    PROBES.iter().find(|p| p.id == id)
}

/// A value no probe of that id gives, or an id no probe has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unknown probe \"{id}\" (known: {known})")]
    UnknownProbe { id: String, known: String },
    #[error("probe {id} never gives \"{value}\" (it gives {allowed})")]
    NeverGives {
        id: String,
        value: String,
        allowed: String,
    },
}

/// Whether `value` is a value probe `id` can give; the reason when it is not.
pub fn check_token(id: &str, value: &str) -> Result<(), TokenError> {
    let Some(p) = probe_def(id) else {
        let ids: Vec<&str> = PROBES.iter().map(|p| p.id).collect();
        return Err(TokenError::UnknownProbe {
            id: id.to_string(),
            known: ids.join(", "),
        });
    };
    let (listed, errno) = match p.tokens {
        Tokens::Fixed(t) => (t, false),
        Tokens::Errno(t) => (t, true),
    };
    let is_errno = value.len() > 1
        && value.starts_with('E')
        && value[1..]
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if listed.contains(&value) || ALWAYS.contains(&value) || (errno && is_errno) {
        return Ok(());
    }
    let mut allowed: Vec<&str> = listed.iter().chain(ALWAYS.iter()).copied().collect();
    if errno {
        allowed.push("an errno name such as ENOENT");
    }
    Err(TokenError::NeverGives {
        id: id.to_string(),
        value: value.to_string(),
        allowed: allowed.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_issues_and_unique() {
        let ids: Vec<&str> = PROBES.iter().map(|p| p.id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        assert_eq!(ids.len(), 20);
        for id in [
            "recv_after_users_exit",
            "x32_syscalls",
            "pid_ns",
            "addfd_send",
        ] {
            assert!(probe_def(id).is_some(), "{id}");
        }
    }

    #[test]
    fn tokens_are_checked_per_probe() {
        assert!(check_token("recv_after_users_exit", "blocks").is_ok());
        assert!(check_token("recv_after_users_exit", "ENOENT").is_ok());
        assert!(check_token("pollhup_timing", "after-reap").is_ok());
        assert!(check_token("second_listener", "ok").is_ok());
        let e = check_token("pollhup_timing", "ENOENT")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at-exit, after-reap, never"), "{e}");
        assert!(check_token("user_notif", "maybe").is_err());
        assert!(check_token("user_notif", "Enoent").is_err());
        assert!(check_token("recv_after_users_exit", "E").is_err());
        let e = check_token("recv_after_exit", "blocks")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown probe") && e.contains("recv_after_users_exit"),
            "{e}"
        );
    }
}
