//! Helpers shared by wedge's benchmarks: finding the release binaries, running scenario cells
//! through wedge's engine ([`cells`]), and counting failed trials as a criterion measurement
//! ([`failures`]), and the arms of the exec-floor comparison ([`floor`]).

pub mod cells;
pub mod failures;
pub mod floor;
pub mod times;

use std::path::PathBuf;

/// Finds a binary of this workspace built in release mode: `$WEDGE_BIN_DIR/NAME`, else
/// `target/release/NAME` beside this crate. Panics with the command that builds it.
pub fn release_binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("WEDGE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("release")
        });
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: build it first with `cargo build --release --workspace --bins` (or set WEDGE_BIN_DIR)",
        path.display()
    );
    path
}
