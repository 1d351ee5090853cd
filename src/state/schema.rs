//! The store's tables, and the migrations that bring a file of an older
//! dirsync up to date. The file's schema version is SQLite's own
//! `PRAGMA user_version` (0 for a new, empty file); each migration runs in
//! its own transaction together with the version it sets, so a migration
//! cut short by a kill leaves the file at the version before it.

use rusqlite::{Connection, TransactionBehavior};

/// One SQL script per schema version: `MIGRATIONS[i]` takes a file from
/// version `i` to `i + 1`. Append only: a released script never changes.
const MIGRATIONS: &[&str] = &[
    // 1: the snapshot (customers, users, roles, and what it was taken for)
    // and the audit history (runs and their operations).
    r#"
    -- Key/value facts about the stored snapshot: `snapshot_identity` (the
    -- digest of the config and platform it was read for), `snapshot_platform`,
    -- `snapshot_taken_at`, `last_full_read_at` (RFC 3339).
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE roles (
        seq  INTEGER PRIMARY KEY,
        id   TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL
    );

    -- `seq` keeps the order the platform listed the records in.
    CREATE TABLE customers (
        seq         INTEGER PRIMARY KEY,
        id          TEXT NOT NULL UNIQUE,
        external_id TEXT,
        name        TEXT NOT NULL,
        description TEXT NOT NULL,
        labels      TEXT NOT NULL,  -- a JSON array of strings
        updated_at  TEXT            -- RFC 3339
    );
    CREATE INDEX customers_by_external_id ON customers (external_id);

    CREATE TABLE users (
        seq                  INTEGER PRIMARY KEY,
        id                   TEXT NOT NULL UNIQUE,
        external_id          TEXT,
        email                TEXT NOT NULL,
        name                 TEXT NOT NULL,
        phone                TEXT NOT NULL,
        role_id              TEXT NOT NULL,
        role_name            TEXT NOT NULL,
        customer_id          TEXT NOT NULL,
        customer_external_id TEXT,
        updated_at           TEXT
    );
    CREATE INDEX users_by_external_id ON users (external_id);
    CREATE INDEX users_by_customer ON users (customer_id);

    -- One row per run that applied at least one operation.
    CREATE TABLE runs (
        run_id          TEXT PRIMARY KEY,
        mode            TEXT NOT NULL,     -- sync | apply | run
        started_at      INTEGER NOT NULL,  -- Unix milliseconds, UTC
        finished_at     INTEGER NOT NULL,
        platform        TEXT NOT NULL,     -- the platform URL (no credentials) or the emulator
        dirsync_version TEXT NOT NULL,
        stopped         TEXT               -- why the run stopped early, if it did
    ) WITHOUT ROWID;

    CREATE TABLE operations (
        seq                  INTEGER PRIMARY KEY,
        run_id               TEXT NOT NULL REFERENCES runs (run_id),
        at                   INTEGER NOT NULL,  -- Unix milliseconds, UTC
        action               TEXT NOT NULL,     -- create | update | adopt | recreate | delete
        kind                 TEXT NOT NULL,     -- customer | user
        external_id          TEXT NOT NULL,
        email                TEXT,
        name                 TEXT,
        customer_external_id TEXT,
        platform_id          TEXT,              -- unknown for a create
        outcome              TEXT NOT NULL,     -- applied | alreadyDone | failed | skipped
        detail               TEXT,              -- the error, the reason skipped, what was already done
        why                  TEXT,              -- a delete's or a recreate's reason
        changes              TEXT               -- JSON [{field, before, after}], for updates and adoptions
    );
    CREATE INDEX operations_by_external_id ON operations (external_id);
    CREATE INDEX operations_by_at ON operations (at);
    "#,
];

/// The schema version this dirsync writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// What [`migrate`] found wrong.
#[derive(Debug)]
pub enum MigrateError {
    Sqlite(rusqlite::Error),
    /// The file was written by a newer dirsync.
    Newer {
        found: i64,
    },
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sqlite(e)
    }
}

/// The file's schema version.
pub fn version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Brings the file to [`VERSION`], one migration (and transaction) at a time.
pub fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    let found = version(conn)?;
    if found > VERSION {
        return Err(MigrateError::Newer { found });
    }
    for (from, script) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        // IMMEDIATE: two processes opening a new file at once do not both
        // migrate; the second waits (busy timeout), then sees the new version.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if version(&tx)? > from as i64 {
            continue;
        }
        tx.execute_batch(script)?;
        tx.pragma_update(None, "user_version", from as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
