//! Records the git commit wedge is built from (`WEDGE_COMMIT`), shown in every report header,
//! and a fingerprint of the sources its binaries are built from (`WEDGE_SOURCE_FINGERPRINT`):
//! wedge starts a separately built static keeper (`wedge-init-static`, from
//! `ci/build-static.sh --keeper`) only when that keeper was built from the same sources
//! (`engine::keeper`), because the keeper and wedge speak a private protocol.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Everything the binaries of this crate are compiled from, relative to this crate: its own
/// sources, those of the two path dependencies, and the lock file (the versions of the rest).
const SOURCES: [&str; 7] = [
    "src",
    "Cargo.toml",
    "../runtime/core/src",
    "../runtime/core/Cargo.toml",
    "../sys/src",
    "../sys/Cargo.toml",
    "../Cargo.lock",
];

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=WEDGE_COMMIT={commit}");
    // Rebuild when HEAD moves: the HEAD file, and the branch it points to.
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--git-path", &branch])
    {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!(
        "cargo:rustc-env=WEDGE_SOURCE_FINGERPRINT={:016x}",
        fingerprint()
    );
    for source in SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
}

/// FNV-1a (64 bits) over each file's path and contents, in path order: stable across builds
/// and toolchains, unlike std's hasher. Not a defence against anyone; a check that two builds
/// come from the same tree.
fn fingerprint() -> u64 {
    let mut files: Vec<PathBuf> = Vec::new();
    for source in SOURCES {
        collect(Path::new(source), &mut files);
    }
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for file in files {
        feed(file.to_string_lossy().as_bytes());
        feed(&[0]);
        feed(&std::fs::read(&file).unwrap_or_default());
        feed(&[0]);
    }
    hash
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    match std::fs::read_dir(path) {
        Ok(entries) => {
            for entry in entries.flatten() {
                collect(&entry.path(), out);
            }
        }
        Err(_) if path.is_file() => out.push(path.to_path_buf()),
        Err(_) => {}
    }
}
