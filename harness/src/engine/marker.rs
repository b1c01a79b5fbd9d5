//! The environment variables that mark every process of a trial, which every descendant inherits
//! unless it clears its environment. A process carrying a running trial's marker belongs to that
//! trial: the cgroup-less trial tree finds its processes by it (`isolation.rs`), and the
//! leftover watch names the trial that made a file by it (`leftovers.rs`). Both read these
//! names from here, the lowest module of the two, so neither depends on the other for them.

/// Holds the trial's unique marker (its run directory's name) in every process of the trial.
pub const MARKER_VAR: &str = "WEDGE_TRIAL_ID";

/// Holds which part of the trial tree a process was started in: `subject` or `aux`.
pub const PART_VAR: &str = "WEDGE_TRIAL_PART";
