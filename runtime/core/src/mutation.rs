//! Curated mutations: each one reverts one fix of the runtime, so `ci/mutants.sh` can check that
//! the gate fails when that fix is taken away.
//!
//! Guarantee: without the cargo feature `mutations`, [`active`] is a `const fn` returning `false`,
//! so every mutation check folds away and the shipped code is unchanged. With the feature,
//! `WEDGE_MUTATION` (one kebab-case name, or a comma-separated list) is read once; a name that is
//! not a [`Mutation`] makes the process exit with status 125 and a message listing the valid
//! names, so a typo can never pass for "this mutation was caught".

/// One reverted fix. The doc comment of each says what the mutated code does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// `ShutdownCoordinator::begin` sets the flag but never raises the wake eventfd.
    EventfdWake,
    /// Every `begin` acts (returns `true`, raises the wake again), not only the first.
    BeginIdempotence,
    /// The session's drain waits without a deadline, and the supervisor's drain loop has no limit.
    BoundedDrain,
    /// The session closes the listener under the running supervisor, before the join.
    ListenerHandback,
    /// Repeated SIGINT/SIGTERM/SIGHUP are only forwarded, never escalate to SIGKILL.
    SignalEscalation,
    /// The sandbox is started in a process group of its own, not the caller's.
    CallerPgrp,
    /// The sandbox is spawned (so PDEATHSIG is set) from a short-lived thread.
    PdeathsigThread,
    /// The filters let syscalls of foreign architectures (i386 `int 0x80`) through (x32 numbers
    /// are still killed).
    ArchCheck,
    /// Neither filter kills x32 syscall numbers (foreign architectures are still killed).
    X32Check,
    /// `CONTINUE` is answered without checking that the target has one thread.
    SingleThread,
    /// No `SECCOMP_IOCTL_NOTIF_ID_VALID` re-check after reading the target's memory.
    IdValidRecheck,
    /// The exec policy matches the requested path and argv, not the effective command (so a
    /// symlink, a `#!` line or the loader gets a denied program through).
    EffectiveCommand,
    /// The blocking-pool strategies run the build inline on the async worker.
    SpawnBlocking,
    /// The `blocking-pool-std-mutex` strategy takes no spawn lock.
    StdSpawnLock,
    /// The `zygote` strategy builds in-process (on the blocking pool, with the spawn lock).
    Zygote,
}

impl Mutation {
    /// Every mutation, in the order of `reports/mutants.md`.
    pub const ALL: [Mutation; 15] = [
        Mutation::EventfdWake,
        Mutation::BeginIdempotence,
        Mutation::BoundedDrain,
        Mutation::ListenerHandback,
        Mutation::SignalEscalation,
        Mutation::CallerPgrp,
        Mutation::PdeathsigThread,
        Mutation::ArchCheck,
        Mutation::X32Check,
        Mutation::SingleThread,
        Mutation::IdValidRecheck,
        Mutation::EffectiveCommand,
        Mutation::SpawnBlocking,
        Mutation::StdSpawnLock,
        Mutation::Zygote,
    ];

    /// The name `WEDGE_MUTATION` uses.
    pub const fn name(self) -> &'static str {
        match self {
            Mutation::EventfdWake => "eventfd-wake",
            Mutation::BeginIdempotence => "begin-idempotence",
            Mutation::BoundedDrain => "bounded-drain",
            Mutation::ListenerHandback => "listener-handback",
            Mutation::SignalEscalation => "signal-escalation",
            Mutation::CallerPgrp => "caller-pgrp",
            Mutation::PdeathsigThread => "pdeathsig-thread",
            Mutation::ArchCheck => "arch-check",
            Mutation::X32Check => "x32-check",
            Mutation::SingleThread => "single-thread",
            Mutation::IdValidRecheck => "id-valid-recheck",
            Mutation::EffectiveCommand => "effective-command",
            Mutation::SpawnBlocking => "spawn-blocking",
            Mutation::StdSpawnLock => "std-spawn-lock",
            Mutation::Zygote => "zygote",
        }
    }

    /// The mutation called `name`.
    pub fn from_name(name: &str) -> Option<Mutation> {
        Mutation::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// The environment variable that selects mutations at run time.
pub const ENV: &str = "WEDGE_MUTATION";

/// Parses a `WEDGE_MUTATION` value: names separated by commas (blanks around them ignored).
/// Returns the first unknown name as the error.
pub fn parse(value: &str) -> Result<Vec<Mutation>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| Mutation::from_name(name).ok_or_else(|| name.to_owned()))
        .collect()
}

/// The message for an unknown name.
pub fn unknown_message(name: &str) -> String {
    let valid: Vec<&str> = Mutation::ALL.iter().map(|m| m.name()).collect();
    format!(
        "{ENV}: unknown mutation {name:?}; valid names: {}",
        valid.join(", ")
    )
}

/// Whether `m` is selected. Without the `mutations` feature: always `false`, at compile time.
#[cfg(not(feature = "mutations"))]
pub const fn active(_m: Mutation) -> bool {
    false
}

/// Whether `m` is selected by `WEDGE_MUTATION` (read once; exits 125 on an unknown name).
#[cfg(feature = "mutations")]
pub fn active(m: Mutation) -> bool {
    selected().contains(&m)
}

#[cfg(feature = "mutations")]
fn selected() -> &'static [Mutation] {
    static SELECTED: std::sync::OnceLock<Vec<Mutation>> = std::sync::OnceLock::new();
    SELECTED.get_or_init(|| {
        let value = std::env::var(ENV).unwrap_or_default();
        match parse(&value) {
            Ok(selected) => selected,
            Err(name) => {
                eprintln!("{}", unknown_message(&name));
                std::process::exit(125)
            }
        }
    })
}

/// Checks `WEDGE_MUTATION` at program start, so a bad name fails even when no mutated site is
/// reached, and reads it before any `fork` (a child then only loads the cached answer). Exits 125
/// on an unknown name, or, in a build without the feature, when the variable is set at all: the
/// mutation would silently not happen.
pub fn check_env() {
    #[cfg(feature = "mutations")]
    {
        selected();
    }
    #[cfg(not(feature = "mutations"))]
    if std::env::var_os(ENV).is_some_and(|v| !v.is_empty()) {
        eprintln!("{ENV} is set, but this program was built without the `mutations` cargo feature");
        std::process::exit(125)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for m in Mutation::ALL {
            assert_eq!(Mutation::from_name(m.name()), Some(m));
        }
        let mut names: Vec<_> = Mutation::ALL.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Mutation::ALL.len());
    }

    #[test]
    fn lists_parse_and_unknown_names_are_reported() {
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(
            parse("zygote, x32-check"),
            Ok(vec![Mutation::Zygote, Mutation::X32Check])
        );
        assert_eq!(parse("zygote,nope"), Err("nope".to_owned()));
        let message = unknown_message("nope");
        assert!(message.contains("\"nope\"") && message.contains("eventfd-wake"));
    }
}
