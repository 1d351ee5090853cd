//! The state directory's lock: one `dirsync.lock` file held with `flock`
//! by the daemon for its whole life and by `dirsync sync` for one run, so
//! two reconciles never mutate the platform at once. The kernel releases the
//! lock when the process ends, however it ends: there are no stale locks.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "dirsync.lock";

/// The message carries its cause (not also a `#[source]`, which `main`
/// would print a second time).
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot create the state directory {}: {error}", path.display())]
    CreateDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot open the lock file {}: {error}", path.display())]
    Open {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("locked: {} is held by another dirsync{}: the daemon (dirsync run) or another sync is running with this state directory; nothing was sent", path.display(), holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { path: PathBuf, holder: Option<u32> },
    #[error("cannot lock {}: {error}", path.display())]
    Lock {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Held while the value lives.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
    dir: PathBuf,
}

impl StateLock {
    /// Takes the lock in `state_dir` (created, mode 0700, when missing), or
    /// fails at once with [`LockError::Locked`] when another process holds it.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|error| LockError::CreateDir {
                path: state_dir.to_path_buf(),
                error,
            })?;
        let path = state_dir.join(LOCK_FILE);
        let open_err = |error| LockError::Open {
            path: path.clone(),
            error,
        };
        // Read-write to note our pid; read-only is enough for flock when the
        // file belongs to someone else (a sync run as root beside a
        // DynamicUser daemon, for instance).
        let (mut file, writable) = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => (f, true),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                (File::open(&path).map_err(open_err)?, false)
            }
            Err(e) => return Err(open_err(e)),
        };
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut text = String::new();
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockError::Locked { path, holder });
            }
            Err(e) => {
                return Err(LockError::Lock {
                    path,
                    error: e.into(),
                })
            }
        }
        if writable {
            // Who holds it, for the message another process shows.
            let noted = file
                .set_len(0)
                .and_then(|_| file.rewind())
                .and_then(|_| writeln!(file, "{}", std::process::id()));
            if let Err(e) = noted {
                tracing::debug!(path = %path.display(), error = %e, "Cannot write the pid into the lock file.");
            }
        }
        Ok(StateLock {
            _file: file,
            path,
            dir: state_dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state directory it locks.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state/nested");
        let first = StateLock::acquire(&state).unwrap();
        assert_eq!(first.path(), state.join(LOCK_FILE));
        let err = StateLock::acquire(&state).unwrap_err();
        match &err {
            LockError::Locked { holder, .. } => assert_eq!(*holder, Some(std::process::id())),
            other => panic!("expected Locked, got {other:?}"),
        }
        let shown = err.to_string();
        assert!(shown.starts_with("locked: "), "{shown}");
        assert!(shown.contains("nothing was sent"), "{shown}");
        drop(first);
        let again = StateLock::acquire(&state).unwrap();
        assert_eq!(again.dir(), state);
    }

    #[test]
    fn the_state_directory_and_lock_file_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s");
        let lock = StateLock::acquire(&state).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(lock.path()), 0o600);
    }
}
