//! Which keeper program (`wedge-init`, see [`crate::engine::pidns`]) trials start.
//!
//! The keeper was exec'd for every process a trial starts, so its own start-up was part of every
//! trial. Linked dynamically, that start-up maps and relocates four shared libraries; a
//! static-pie build skips it: trivial trials took 9–14 % less wall time with one
//! (`reports/bench.md`, "Trials per second: the tree's bookkeeping, and a static keeper").
//! Since the keeper server ([`crate::engine::spawn_server`]) forks the keepers, the program is
//! exec'd once an engine (and for each keeper only when the server is off or cannot serve), so
//! the static build now saves little (`reports/bench.md`, "keepers forked by a resident
//! server").
//! Cargo cannot link one binary of a package statically in an ordinary build (`crt-static` is a
//! target-wide setting, which proc macros cannot take), so the static keeper is a second build
//! (`ci/build-static.sh --keeper`, which installs it beside wedge as `wedge-init-static`), and
//! it may be stale. The keeper and wedge speak a
//! private protocol (arguments, the report line), so wedge starts the static keeper only when it
//! reports the fingerprint of the very sources wedge was built from (`--fingerprint`, computed
//! by the build script); otherwise the ordinary `wedge-init` beside it.
//!
//! `WEDGE_INIT=PATH` names the keeper outright, unchecked.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::engine::pidns::INIT_PROGRAM;

/// The fingerprint of the sources this build comes from (hex; `harness/build.rs`).
pub const FINGERPRINT: &str = env!("WEDGE_SOURCE_FINGERPRINT");

/// `wedge-init --fingerprint` prints [`FINGERPRINT`] and exits.
pub const FINGERPRINT_FLAG: &str = "--fingerprint";

/// The static keeper's file name, beside wedge's other binaries.
pub const STATIC_PROGRAM: &str = "wedge-init-static";

/// The keeper to start, for wedge's binaries in `dir`: `$WEDGE_INIT`, else the static keeper if
/// it is of this build, else `dir/wedge-init`.
pub fn program(dir: &Path) -> PathBuf {
    let chosen = choose(dir, std::env::var_os("WEDGE_INIT"), FINGERPRINT);
    tracing::debug!("keeper: {}", chosen.display());
    chosen
}

/// [`program`] with the override given, against fingerprint `own`.
fn choose(dir: &Path, named: Option<OsString>, own: &str) -> PathBuf {
    if let Some(path) = named.filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let candidate = dir.join(STATIC_PROGRAM);
    if fingerprint_of(&candidate).as_deref() == Some(own) {
        candidate
    } else {
        dir.join(INIT_PROGRAM)
    }
}

/// What `program --fingerprint` prints, if it runs and succeeds.
fn fingerprint_of(program: &Path) -> Option<String> {
    if !program.is_file() {
        return None;
    }
    let out = Command::new(program)
        .arg(FINGERPRINT_FLAG)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory whose `wedge-init-static` is `echo`, so it "prints" `--fingerprint`. (A
    /// script written by the test could not be run reliably: a fork elsewhere in the test
    /// process may hold it open for writing at that moment, `ETXTBSY`.)
    fn dir_with_echo(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wedge-keeper-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("/bin/echo", dir.join(STATIC_PROGRAM)).unwrap();
        dir
    }

    #[test]
    fn the_static_keeper_is_used_only_when_it_is_of_this_build() {
        let dir = dir_with_echo("choose");
        assert_eq!(
            choose(&dir, None, FINGERPRINT_FLAG),
            dir.join(STATIC_PROGRAM)
        );
        assert_eq!(choose(&dir, None, FINGERPRINT), dir.join(INIT_PROGRAM));
        let none = std::env::temp_dir().join("wedge-keeper-test-none-here");
        assert_eq!(
            choose(&none, None, FINGERPRINT_FLAG),
            none.join(INIT_PROGRAM)
        );
        // Named outright: taken as it is, whatever it would say.
        assert_eq!(
            choose(&dir, Some("/some/keeper".into()), FINGERPRINT),
            Path::new("/some/keeper")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_fingerprint_is_sixteen_hex_digits() {
        assert_eq!(FINGERPRINT.len(), 16);
        assert!(FINGERPRINT.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
