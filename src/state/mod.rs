//! The embedded state store: one SQLite file, `state_dir/dirsync.sqlite3`,
//! holding the last platform snapshot ([`snapshot`]) and the audit history
//! of every applied operation ([`history`]).
//!
//! The store is a help, never a condition: a missing, corrupt, unreadable
//! or foreign file never stops a run. Reading the snapshot from such a file
//! gives none (logged at WARN, naming the file), and a history that cannot
//! be written is a WARN, never a failed sync. A file that is not a database
//! at all, or whose pages are corrupt, is set aside (renamed to
//! `dirsync.sqlite3.corrupt-<UTC time>`, kept for whoever wants to look)
//! and a new one started, so the history goes on.
//!
//! Durability: WAL journal, `synchronous = NORMAL` (a transaction survives
//! the process being killed; only a power loss may take the last ones), a
//! busy timeout for the rare reader beside a writer (`dirsync history`
//! beside the daemon). Every write is one transaction, so a `kill -9` at
//! any point leaves the last committed state.
//!
//! The file is created mode 0600 (SQLite gives its `-wal` and `-shm` files
//! the same): it holds names, emails and phone numbers, and never a secret.

pub mod history;
mod schema;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};

use crate::config::{Config, PlatformTarget};

pub use history::{record_run, HistoryEntry, HistoryFilter, RunMode};
pub use snapshot::StoredSnapshot;

/// The store's file name inside the state directory.
pub const STATE_FILE: &str = "dirsync.sqlite3";

/// How long a statement waits for another process's write to end.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong with the store. The message names the file and carries
/// its cause (which is therefore not also a `#[source]`).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {}: cannot {doing}: {error}", path.display())]
    Sqlite {
        path: PathBuf,
        doing: &'static str,
        error: rusqlite::Error,
    },
    #[error("state store {}: cannot {doing}: {error}", path.display())]
    Io {
        path: PathBuf,
        doing: &'static str,
        error: std::io::Error,
    },
    #[error("state store {}: schema version {found} was written by a newer dirsync (this one knows up to {known}); leaving the file alone", path.display())]
    Newer {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}

impl StateError {
    /// The file is not a database, or its pages are damaged.
    fn is_corrupt(&self) -> bool {
        matches!(
            self,
            StateError::Sqlite { error, .. }
                if matches!(
                    error.sqlite_error_code(),
                    Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
                )
        )
    }
}

/// Which config and platform a snapshot belongs to: the platform (its URL
/// without credentials, query or fragment, or the built-in emulator's state
/// file) and the policy's scope (`external_id_prefix`). Never a secret. A
/// snapshot stored for another identity is not handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Shown in history and messages.
    pub platform: String,
    pub scope: Option<String>,
}

impl Identity {
    pub fn of(config: &Config) -> Identity {
        let platform = match &config.platform.target {
            PlatformTarget::Url(url) => {
                let mut url = url.clone();
                // Cannot fail for the http(s) URLs the config accepts.
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.set_query(None);
                url.set_fragment(None);
                url.to_string()
            }
            PlatformTarget::Emulator { state, .. } => {
                let state = std::path::absolute(state).unwrap_or_else(|_| state.clone());
                format!("emulator:{}", state.display())
            }
        };
        Identity {
            platform,
            scope: config.policy.external_id_prefix.clone(),
        }
    }

    /// SHA-256 (hex) of the platform and the scope.
    pub fn digest(&self) -> String {
        let scope = self.scope.as_deref().unwrap_or("");
        crate::saved_plan::digest(
            format!(
                "dirsync-state-identity\nplatform={}\nscope={}:{}\n",
                self.platform,
                self.scope.is_some(),
                scope
            )
            .as_bytes(),
        )
    }
}

/// An open store.
pub struct StateStore {
    conn: Connection,
    path: PathBuf,
    identity: Identity,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// `state_dir/dirsync.sqlite3`.
pub fn store_path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

impl StateStore {
    /// Opens (or creates, with the state directory) the store in
    /// `state_dir` for `identity`, bringing its schema up to date. A file
    /// that is not a database or is corrupt is set aside with a WARN and a
    /// new one created; any other problem is an error.
    pub fn open(state_dir: &Path, identity: &Identity) -> Result<StateStore, StateError> {
        let path = store_path(state_dir);
        match Self::open_file(&path, identity) {
            Err(e) if e.is_corrupt() => {
                let aside = set_aside(&path)?;
                tracing::warn!(
                    file = %path.display(),
                    moved_to = %aside.display(),
                    error = %e,
                    "The state store is damaged ({e}); it was moved to {} and a new one started. The snapshot is read again in full; the history so far stays in the moved file.",
                    aside.display()
                );
                Self::open_file(&path, identity)
            }
            other => other,
        }
    }

    /// Opens an existing store to read it (`dirsync history`); None when
    /// there is no file. Never creates one, never sets one aside.
    pub fn open_existing(state_dir: &Path) -> Result<Option<StateStore>, StateError> {
        let path = store_path(state_dir);
        if !path.exists() {
            return Ok(None);
        }
        let err = |doing| {
            let path = path.clone();
            move |error| StateError::Sqlite { path, doing, error }
        };
        // Read-write where allowed (WAL needs it to read the latest
        // transactions); SQLite opens a write-protected file read-only.
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err("open the file"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(err("set the busy timeout"))?;
        let found = schema::version(&conn).map_err(err("read the schema version"))?;
        if found < schema::VERSION {
            // An older (or empty) file: brought up to date when writable.
            migrate(&mut conn, &path)?;
        } else if found > schema::VERSION {
            return Err(StateError::Newer {
                path,
                found,
                known: schema::VERSION,
            });
        }
        Ok(Some(StateStore {
            conn,
            path,
            identity: Identity {
                platform: String::new(),
                scope: None,
            },
        }))
    }

    fn open_file(path: &Path, identity: &Identity) -> Result<StateStore, StateError> {
        if let Some(dir) = path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|error| StateError::Io {
                    path: path.to_path_buf(),
                    doing: "create the state directory",
                    error,
                })?;
        }
        create_private(path)?;
        let err = |doing| {
            let path = path.to_path_buf();
            move |error| StateError::Sqlite { path, doing, error }
        };
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err("open the file"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(err("set the busy timeout"))?;
        // The first statement that reads the file: one that is not a
        // database, or whose schema is damaged, fails here.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |row| {
            row.get::<_, i64>(0)
        })
        .map_err(err("read its schema"))?;
        // Nothing is written to a file of a newer dirsync.
        let found = schema::version(&conn).map_err(err("read the schema version"))?;
        if found > schema::VERSION {
            return Err(StateError::Newer {
                path: path.to_path_buf(),
                found,
                known: schema::VERSION,
            });
        }
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(err("switch to the WAL journal"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(file = %path.display(), journal_mode = %mode, "The state store could not use the WAL journal; it goes on with {mode}.");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err("set synchronous = NORMAL"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(err("turn on foreign keys"))?;
        migrate(&mut conn, path)?;
        Ok(StateStore {
            conn,
            path: path.to_path_buf(),
            identity: identity.clone(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sqlite(&self, doing: &'static str) -> impl FnOnce(rusqlite::Error) -> StateError + '_ {
        move |error| StateError::Sqlite {
            path: self.path.clone(),
            doing,
            error,
        }
    }

    /// A `meta` value.
    fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()
            .map_err(self.sqlite("read the store's facts"))
    }
}

/// Sets `meta.key` inside a transaction.
fn set_meta(tx: &rusqlite::Transaction<'_>, key: &str, value: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])
    .map(|_| ())
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StateError> {
    schema::migrate(conn).map_err(|e| match e {
        schema::MigrateError::Sqlite(error) => StateError::Sqlite {
            path: path.to_path_buf(),
            doing: "bring its schema up to date",
            error,
        },
        schema::MigrateError::Newer { found } => StateError::Newer {
            path: path.to_path_buf(),
            found,
            known: schema::VERSION,
        },
    })
}

/// Creates `path` empty with mode 0600 when it does not exist (an empty
/// file is a new database to SQLite), so the store is never readable by
/// others, whatever the umask.
fn create_private(path: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(StateError::Io {
            path: path.to_path_buf(),
            doing: "create the file",
            error,
        }),
    }
}

/// Renames a damaged store (and its `-wal` and `-shm` files) out of the
/// way: `dirsync.sqlite3.corrupt-20261201T100000Z`.
fn set_aside(path: &Path) -> Result<PathBuf, StateError> {
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let aside = path.with_file_name(format!("{STATE_FILE}.corrupt-{stamp}"));
    std::fs::rename(path, &aside).map_err(|error| StateError::Io {
        path: path.to_path_buf(),
        doing: "move the damaged file aside",
        error,
    })?;
    for suffix in ["-wal", "-shm"] {
        let from = path.with_file_name(format!("{STATE_FILE}{suffix}"));
        if from.exists() {
            let to = aside.with_file_name(format!(
                "{}{suffix}",
                aside
                    .file_name()
                    .map_or_else(|| STATE_FILE.into(), |n| n.to_string_lossy().into_owned())
            ));
            if let Err(e) = std::fs::rename(&from, &to) {
                tracing::warn!(file = %from.display(), error = %e, "Cannot move {} aside: {e}", from.display());
            }
        }
    }
    Ok(aside)
}

/// A time as the store writes it: RFC 3339, UTC, as precise as it is.
fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A time the store wrote.
fn parse_stamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests;
