//! The wedge binaries as a guest gets them: without debug info, so the image stays small.
//!
//! Guarantee: [`without_debug_info`] gives a copy of a binary with the same code, data, symbols
//! and file name, minus its `.debug_*` sections, kept in the cache under the SHA-256 of the
//! original's bytes; the same binary is stripped once, and a cache entry is only ever complete
//! (written under a temporary name, then renamed). The cache keeps the most recently used.
//!
//! Why: the host's release build carries line tables (`debug = "line-tables-only"`, for
//! profiles), about three quarters of each file; five of them would make every image some
//! 150 MB, which a TCG guest must copy into its memory at each boot. A build already without
//! debug info (`ci/build-static.sh`) comes out the same size.
//!
//! Hand-written around binutils' `objcopy --strip-debug` (on every machine with gcc, which the
//! Rust toolchain needs to link) rather than an ELF rewriting crate: dropping sections
//! correctly means rewriting the section and program header tables, which objcopy has done for
//! decades.

use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

use super::image::{keep_newest, temp_name, touch};

/// How many stripped binaries the cache keeps, the most recently used: the five guest binaries
/// of the last few builds.
const STRIPPED_KEPT: usize = 20;

#[derive(Debug, Error)]
pub enum StripError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error(
        "objcopy (binutils) is needed to strip the guest's binaries of their debug info: \
         apt-get install binutils, or set WEDGE_GUEST_BIN_DIR to a build without it \
         (ci/build-static.sh)"
    )]
    NoObjcopy,
    #[error("objcopy --strip-debug {path} failed: {stderr}")]
    Objcopy { path: String, stderr: String },
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> StripError {
    StripError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// `binary` without its debug info: `<cache>/stripped/<sha256>/<file name>`, made on first use;
/// a file that is not ELF (a script) is its own answer.
pub fn without_debug_info(binary: &Path, cache: &Path) -> Result<PathBuf, StripError> {
    let bytes = std::fs::read(binary).map_err(|e| io_error(binary, e))?;
    if !bytes.starts_with(b"\x7fELF") {
        return Ok(binary.to_path_buf()); // a script has no debug info to lose
    }
    let name = binary
        .file_name()
        .ok_or_else(|| io_error(binary, "no file name"))?;
    let dir = cache.join("stripped").join(super::image::sha256(&bytes));
    let out = dir.join(name);
    if out.is_file() {
        touch(&dir);
        return Ok(out);
    }
    std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    let tmp = temp_name(&dir, &name.to_string_lossy());
    let result = objcopy(binary, &tmp)
        .and_then(|()| std::fs::rename(&tmp, &out).map_err(|e| io_error(&out, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_dir(&dir);
    }
    result?;
    keep_newest(&cache.join("stripped"), STRIPPED_KEPT);
    Ok(out)
}

/// `objcopy --strip-debug from to`.
fn objcopy(from: &Path, to: &Path) -> Result<(), StripError> {
    let output = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(from)
        .arg(to)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StripError::NoObjcopy,
            _ => io_error(from, e),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(StripError::Objcopy {
            path: from.display().to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch cache removed on drop.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn section_names(path: &Path) -> String {
        let out = Command::new("objdump")
            .arg("-h")
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn a_binary_loses_its_debug_sections_keeps_its_name_and_is_stripped_once() {
        let scratch =
            Scratch(std::env::temp_dir().join(format!("wedge-strip-test-{}", std::process::id())));
        // This test's own binary: built with line tables, like the guest's binaries.
        let me = std::env::current_exe().unwrap();
        assert!(section_names(&me).contains(".debug_line"));
        let out = without_debug_info(&me, &scratch.0).unwrap();
        assert_eq!(out.file_name(), me.file_name());
        let names = section_names(&out);
        // (`.debug_gdb_scripts` is loaded with the program, not debug info: it stays.)
        for debug in [".debug_line", ".debug_info", ".debug_str"] {
            assert!(!names.contains(debug), "{debug} in {names}");
        }
        assert!(names.contains(".text"), "{names}");
        assert!(std::fs::metadata(&out).unwrap().len() < std::fs::metadata(&me).unwrap().len());
        // Cached: the same path, and not written again.
        let modified = std::fs::metadata(&out).unwrap().modified().unwrap();
        assert_eq!(without_debug_info(&me, &scratch.0).unwrap(), out);
        assert_eq!(
            std::fs::metadata(&out).unwrap().modified().unwrap(),
            modified
        );
    }

    #[test]
    fn threads_stripping_the_same_binary_at_once_all_get_it() {
        let scratch = Scratch(
            std::env::temp_dir().join(format!("wedge-strip-threads-{}", std::process::id())),
        );
        let me = std::env::current_exe().unwrap();
        // Two VM groups of one run pack the same binaries at the same moment.
        let outs: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| without_debug_info(&me, &scratch.0)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let first = outs[0].as_ref().unwrap().clone();
        for out in &outs {
            assert_eq!(out.as_ref().unwrap(), &first);
        }
        assert!(first.is_file());
    }

    #[test]
    fn a_script_is_itself_and_a_torn_elf_is_an_error_naming_it() {
        let scratch =
            Scratch(std::env::temp_dir().join(format!("wedge-strip-bad-{}", std::process::id())));
        std::fs::create_dir_all(&scratch.0).unwrap();
        let script = scratch.0.join("script");
        std::fs::write(&script, b"#!/bin/sh\nexit 0\n").unwrap();
        assert_eq!(
            without_debug_info(&script, &scratch.0.join("cache")).unwrap(),
            script
        );
        let bad = scratch.0.join("torn-elf");
        std::fs::write(&bad, b"\x7fELF, and then nothing an ELF file has").unwrap();
        match without_debug_info(&bad, &scratch.0.join("cache")) {
            Err(StripError::Objcopy { path, .. }) => assert!(path.ends_with("torn-elf")),
            other => panic!("{other:?}"),
        }
        // Nothing half-written is left under the cache.
        let left: Vec<_> = walk(&scratch.0.join("cache"));
        assert!(left.iter().all(|p| p.is_dir()), "{left:?}");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
        out
    }
}
