//! The cwd critical section of the spawn path, and the spawn lock that makes it safe.
//!
//! A unix-socket path is limited to 108 bytes, and the per-exec state directory is deeper than that, so
//! the build binds (and the init process connects to) the notify socket by a *relative* name after a
//! `chdir` into the state directory, then changes back: the workaround container libraries use. The
//! working directory is process-global, so two builder threads doing this at once can bind in each
//! other's directory. The spawn lock serialises the whole section.
//!
//! This module depends only on `std`, nix and [`crate::sync`], and the section is generic over the cwd
//! ([`ProcessCwd`]) and over the bind/connect operation, so a loom model can drive this exact code with
//! a simulated process-global cwd. The agent's process-wide lock is a `static` in wedge-agent's spawn
//! module (loom types cannot be in statics); models create their own [`SpawnLock`].

use crate::sync::{Mutex, MutexGuard};
use std::io;
use std::path::Path;

/// The process-global current working directory, as the critical section uses it.
pub trait ProcessCwd {
    /// What [`ProcessCwd::restore`] needs to go back to the directory [`ProcessCwd::save`] saw.
    type Saved;
    /// Remembers the current working directory.
    fn save(&self) -> io::Result<Self::Saved>;
    /// Makes `dir` the current working directory.
    fn enter(&self, dir: &Path) -> io::Result<()>;
    /// Goes back to a saved working directory.
    fn restore(&self, saved: Self::Saved) -> io::Result<()>;
}

/// The real cwd of this process: saved as an `O_PATH` descriptor (so going back works even when the
/// saved directory was renamed or removed meanwhile), entered with `chdir`, restored with `fchdir`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThisProcess;

impl ProcessCwd for ThisProcess {
    type Saved = std::os::fd::OwnedFd;

    fn save(&self) -> io::Result<Self::Saved> {
        use nix::fcntl::{OFlag, open};
        use nix::sys::stat::Mode;
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        Ok(open(".", flags, Mode::empty())?)
    }

    fn enter(&self, dir: &Path) -> io::Result<()> {
        Ok(nix::unistd::chdir(dir)?)
    }

    fn restore(&self, saved: Self::Saved) -> io::Result<()> {
        Ok(nix::unistd::fchdir(saved)?)
    }
}

/// The lock serialising cwd critical sections of builder threads.
#[derive(Debug)]
pub struct SpawnLock {
    inner: Mutex<()>,
}

impl SpawnLock {
    /// A new, unlocked spawn lock.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(()),
        }
    }

    /// Takes the lock. The lock guards no data (`()`), so a panic in another holder leaves nothing
    /// inconsistent behind it: the facade's poison-free mutex fits.
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.inner.lock()
    }
}

impl Default for SpawnLock {
    fn default() -> Self {
        Self::new()
    }
}

/// Which step of the critical section failed.
#[derive(Debug, thiserror::Error)]
pub enum CwdError {
    #[error("saving the current directory: {0}")]
    Save(#[source] io::Error),
    #[error("entering {dir}: {source}")]
    Enter {
        dir: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Op(#[source] io::Error),
    #[error("going back to the saved directory: {0}")]
    Restore(#[source] io::Error),
}

/// The critical section: under `lock` (if any), saves the cwd, enters `dir`, runs `before_op` (a
/// failpoint in the real build, a yield point in a model), runs `op` (the bind or connect by relative
/// name), runs `after_op` (likewise) and restores the cwd, also when `op` failed.
pub fn in_dir<C, T>(
    lock: Option<&SpawnLock>,
    cwd: &C,
    dir: &Path,
    before_op: impl FnOnce(),
    op: impl FnOnce() -> io::Result<T>,
    after_op: impl FnOnce(),
) -> Result<T, CwdError>
where
    C: ProcessCwd + ?Sized,
{
    let _guard = lock.map(SpawnLock::lock);
    let saved = cwd.save().map_err(CwdError::Save)?;
    cwd.enter(dir).map_err(|source| CwdError::Enter {
        dir: dir.display().to_string(),
        source,
    })?;
    before_op();
    let result = op();
    after_op();
    let restored = cwd.restore(saved);
    let value = result.map_err(CwdError::Op)?;
    restored.map_err(CwdError::Restore)?;
    Ok(value)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::path::PathBuf;

    /// A fake process cwd recording every step, to check the order of the section's operations.
    #[derive(Default)]
    struct Recorded {
        current: RefCell<PathBuf>,
        log: RefCell<Vec<String>>,
    }

    impl ProcessCwd for Recorded {
        type Saved = PathBuf;
        fn save(&self) -> io::Result<PathBuf> {
            Ok(self.current.borrow().clone())
        }
        fn enter(&self, dir: &Path) -> io::Result<()> {
            self.log
                .borrow_mut()
                .push(format!("enter {}", dir.display()));
            *self.current.borrow_mut() = dir.to_path_buf();
            Ok(())
        }
        fn restore(&self, saved: PathBuf) -> io::Result<()> {
            self.log
                .borrow_mut()
                .push(format!("restore {}", saved.display()));
            *self.current.borrow_mut() = saved;
            Ok(())
        }
    }

    #[test]
    fn op_runs_inside_the_directory_and_the_cwd_is_restored_even_on_error() {
        let cwd = Recorded::default();
        *cwd.current.borrow_mut() = PathBuf::from("/home");
        let lock = SpawnLock::new();
        let seen = in_dir(
            Some(&lock),
            &cwd,
            Path::new("/state/1"),
            || {},
            || Ok(cwd.current.borrow().clone()),
            || {},
        )
        .unwrap();
        assert_eq!(seen, PathBuf::from("/state/1"));
        let failed = in_dir(
            None,
            &cwd,
            Path::new("/state/2"),
            || {},
            || -> io::Result<()> { Err(io::Error::from_raw_os_error(libc::EADDRINUSE)) },
            || cwd.log.borrow_mut().push("after op".into()),
        );
        assert!(matches!(failed, Err(CwdError::Op(_))));
        assert_eq!(*cwd.current.borrow(), PathBuf::from("/home"));
        assert_eq!(
            *cwd.log.borrow(),
            [
                "enter /state/1",
                "restore /home",
                "enter /state/2",
                "after op",
                "restore /home"
            ]
        );
    }
}
