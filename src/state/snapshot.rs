//! The last platform snapshot, stored as rows: customers, users (with their
//! role and customer) and roles, in the order the platform listed them,
//! with when it was taken and when the last full read was.
//!
//! It belongs to the [`Identity`] it was saved for: a store read for
//! another platform or scope hands out none. Every write is one
//! transaction with prepared statements: a full save of 100,000 users
//! replaces the old snapshot whole or not at all. [`StateStore::apply_changes`]
//! is what an incremental read builds on: the records that changed since,
//! and the ids that went away. A snapshot never holds `holdings` (what the
//! customers a plan may delete hold is read for each run, just before
//! planning).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::types::Type;
use rusqlite::{CachedStatement, OptionalExtension, Row, TransactionBehavior};

use super::{parse_stamp, set_meta, stamp, Identity, StateError, StateStore};
use crate::model::{PlatformCustomer, PlatformId, PlatformUser, Role, Snapshot};

/// A snapshot as the store hands it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// `holdings` is always empty.
    pub snapshot: Snapshot,
    /// When the platform was read (the last full read, or the last changes
    /// applied on top of it).
    pub taken_at: DateTime<Utc>,
    /// When the whole platform was last read ([`StateStore::save_snapshot`]).
    pub last_full_read_at: DateTime<Utc>,
}

const SNAPSHOT_IDENTITY: &str = "snapshot_identity";
const SNAPSHOT_PLATFORM: &str = "snapshot_platform";
const SNAPSHOT_TAKEN_AT: &str = "snapshot_taken_at";
const LAST_FULL_READ_AT: &str = "last_full_read_at";

const UPSERT_ROLE: &str = "INSERT INTO roles (id, name) VALUES (?1, ?2)
    ON CONFLICT (id) DO UPDATE SET name = excluded.name";
const UPSERT_CUSTOMER: &str =
    "INSERT INTO customers (id, external_id, name, description, labels, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)
    ON CONFLICT (id) DO UPDATE SET external_id = excluded.external_id, name = excluded.name,
        description = excluded.description, labels = excluded.labels,
        updated_at = excluded.updated_at";
const UPSERT_USER: &str = "INSERT INTO users (id, external_id, email, name, phone, role_id,
        role_name, customer_id, customer_external_id, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
    ON CONFLICT (id) DO UPDATE SET external_id = excluded.external_id, email = excluded.email,
        name = excluded.name, phone = excluded.phone, role_id = excluded.role_id,
        role_name = excluded.role_name, customer_id = excluded.customer_id,
        customer_external_id = excluded.customer_external_id, updated_at = excluded.updated_at";

impl StateStore {
    /// Replaces the stored snapshot with `snapshot`, read whole at
    /// `taken_at` (which also becomes `last_full_read_at`), in one
    /// transaction. `holdings` are not stored.
    pub fn save_snapshot(
        &mut self,
        snapshot: &Snapshot,
        taken_at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let digest = self.identity.digest();
        let platform = self.identity.platform.clone();
        let at = stamp(taken_at);
        let mut write = || -> rusqlite::Result<()> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch("DELETE FROM users; DELETE FROM customers; DELETE FROM roles;")?;
            {
                let mut role = tx.prepare_cached(UPSERT_ROLE)?;
                for r in &snapshot.roles {
                    role.execute((r.id.as_str(), &r.name))?;
                }
                let mut customer = tx.prepare_cached(UPSERT_CUSTOMER)?;
                for c in &snapshot.customers {
                    upsert_customer(&mut customer, c)?;
                }
                let mut user = tx.prepare_cached(UPSERT_USER)?;
                for u in &snapshot.users {
                    upsert_user(&mut user, u)?;
                }
            }
            set_meta(&tx, SNAPSHOT_IDENTITY, &digest)?;
            set_meta(&tx, SNAPSHOT_PLATFORM, &platform)?;
            set_meta(&tx, SNAPSHOT_TAKEN_AT, &at)?;
            set_meta(&tx, LAST_FULL_READ_AT, &at)?;
            tx.commit()
        };
        write().map_err(|error| StateError::Sqlite {
            path: self.path.clone(),
            doing: "save the snapshot",
            error,
        })
    }

    /// Applies what changed on the platform since the stored snapshot, read
    /// at `taken_at`, in one transaction: customers and users changed or
    /// new (by id), and ids gone (a customer's delete takes its users, as on
    /// the platform). Roles are left as they are. Returns false, changing
    /// nothing, when there is no snapshot of this identity to build on.
    pub fn apply_changes(
        &mut self,
        changed_customers: &[PlatformCustomer],
        changed_users: &[PlatformUser],
        deleted_ids: &[PlatformId],
        taken_at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let digest = self.identity.digest();
        let at = stamp(taken_at);
        let mut write = || -> rusqlite::Result<bool> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored: Option<String> = tx
                .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row([SNAPSHOT_IDENTITY], |row| row.get(0))
                .optional()?;
            if stored.as_deref() != Some(digest.as_str()) {
                return Ok(false);
            }
            {
                let mut customer = tx.prepare_cached(UPSERT_CUSTOMER)?;
                for c in changed_customers {
                    upsert_customer(&mut customer, c)?;
                }
                let mut user = tx.prepare_cached(UPSERT_USER)?;
                for u in changed_users {
                    upsert_user(&mut user, u)?;
                }
                let mut user = tx.prepare_cached("DELETE FROM users WHERE id = ?1")?;
                let mut users_of = tx.prepare_cached("DELETE FROM users WHERE customer_id = ?1")?;
                let mut customer = tx.prepare_cached("DELETE FROM customers WHERE id = ?1")?;
                for id in deleted_ids {
                    user.execute([id.as_str()])?;
                    if customer.execute([id.as_str()])? > 0 {
                        users_of.execute([id.as_str()])?;
                    }
                }
            }
            set_meta(&tx, SNAPSHOT_TAKEN_AT, &at)?;
            tx.commit()?;
            Ok(true)
        };
        write().map_err(|error| StateError::Sqlite {
            path: self.path.clone(),
            doing: "apply changes to the snapshot",
            error,
        })
    }

    /// The stored snapshot, when there is one for this identity.
    pub fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, StateError> {
        let Some(stored) = self.meta(SNAPSHOT_IDENTITY)? else {
            return Ok(None);
        };
        if stored != self.identity.digest() {
            let platform = self.meta(SNAPSHOT_PLATFORM)?.unwrap_or_default();
            tracing::info!(
                file = %self.path.display(),
                stored_for = %platform,
                "The stored snapshot was read for another platform or scope ({platform}); it is not used."
            );
            return Ok(None);
        }
        let read = || -> rusqlite::Result<StoredSnapshot> {
            // One read transaction: the tables and their times agree.
            let tx = self.conn.unchecked_transaction()?;
            let time = |key: &'static str| -> rusqlite::Result<DateTime<Utc>> {
                let text: Option<String> = tx
                    .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                    .query_row([key], |row| row.get(0))
                    .optional()?;
                text.as_deref().and_then(parse_stamp).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        Type::Text,
                        format!("{key} is not a time: {text:?}").into(),
                    )
                })
            };
            let taken_at = time(SNAPSHOT_TAKEN_AT)?;
            let last_full_read_at = time(LAST_FULL_READ_AT)?;
            let roles = tx
                .prepare("SELECT id, name FROM roles ORDER BY seq")?
                .query_map([], |row| {
                    Ok(Role {
                        id: PlatformId::from(row.get::<_, String>(0)?),
                        name: row.get(1)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<Role>>>()?;
            let customers = tx
                .prepare(
                    "SELECT id, external_id, name, description, labels, updated_at
                     FROM customers ORDER BY seq",
                )?
                .query_map([], customer_from_row)?
                .collect::<rusqlite::Result<Vec<PlatformCustomer>>>()?;
            // One shared `Role` per role, as the platform client builds them.
            let mut shared: HashMap<(String, String), Arc<Role>> = HashMap::new();
            let mut statement = tx.prepare(
                "SELECT id, external_id, email, name, phone, role_id, role_name,
                        customer_id, customer_external_id, updated_at
                 FROM users ORDER BY seq",
            )?;
            let count: i64 = tx.query_row("SELECT count(*) FROM users", [], |row| row.get(0))?;
            // A user's customer id is its customer's, shared (as the client
            // shares them within a read).
            let customer_ids: HashSet<&PlatformId> = customers.iter().map(|c| &c.id).collect();
            let mut rows = statement.query([])?;
            let mut users = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 24));
            while let Some(row) = rows.next()? {
                let role_id: String = row.get(5)?;
                let role_name: String = row.get(6)?;
                let role = shared
                    .entry((role_id, role_name))
                    .or_insert_with_key(|(id, name)| {
                        Arc::new(Role {
                            id: PlatformId::from(id.clone()),
                            name: name.clone(),
                        })
                    })
                    .clone();
                users.push(PlatformUser {
                    id: PlatformId::from(row.get::<_, String>(0)?),
                    external_id: row.get(1)?,
                    email: row.get(2)?,
                    name: row.get(3)?,
                    phone: row.get(4)?,
                    role,
                    customer_id: {
                        let id = PlatformId::from(row.get::<_, String>(7)?);
                        customer_ids.get(&id).map_or(id, |&shared| shared.clone())
                    },
                    customer_external_id: row.get(8)?,
                    updated_at: time_column(row, 9)?,
                });
            }
            Ok(StoredSnapshot {
                snapshot: Snapshot {
                    customers,
                    users,
                    roles,
                    holdings: Default::default(),
                },
                taken_at,
                last_full_read_at,
            })
        };
        read().map(Some).map_err(|error| StateError::Sqlite {
            path: self.path.clone(),
            doing: "read the snapshot",
            error,
        })
    }

    /// When the whole platform was last read for this identity.
    pub fn last_full_read_at(&self) -> Result<Option<DateTime<Utc>>, StateError> {
        if self.meta(SNAPSHOT_IDENTITY)?.as_deref() != Some(self.identity.digest().as_str()) {
            return Ok(None);
        }
        Ok(self
            .meta(LAST_FULL_READ_AT)?
            .as_deref()
            .and_then(parse_stamp))
    }
}

const RATE_CEILING: &str = "rate_ceiling";

impl StateStore {
    /// Remembers the platform's request-rate ceiling as a run measured it.
    pub fn save_ceiling(&mut self, ceiling: f64, at: DateTime<Utc>) -> Result<(), StateError> {
        let value = serde_json::json!({
            "identity": self.identity.digest(),
            "ceiling": ceiling,
            "at": stamp(at),
        })
        .to_string();
        let mut write = || -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            set_meta(&tx, RATE_CEILING, &value)?;
            tx.commit()
        };
        write().map_err(|error| StateError::Sqlite {
            path: self.path.clone(),
            doing: "save the rate ceiling",
            error,
        })
    }

    /// The ceiling an earlier run measured on this platform, and when.
    pub fn load_ceiling(&self) -> Result<Option<(f64, DateTime<Utc>)>, StateError> {
        let Some(text) = self.meta(RATE_CEILING)? else {
            return Ok(None);
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Ok(None);
        };
        if value["identity"].as_str() != Some(self.identity.digest().as_str()) {
            return Ok(None);
        }
        let ceiling = value["ceiling"].as_f64();
        let at = value["at"].as_str().and_then(parse_stamp);
        Ok(ceiling.zip(at))
    }
}

/// The ceiling remembered for `identity`, when there is one younger than
/// `max_age` (an unreadable store is none, silently: the snapshot's load
/// already warns).
pub fn recall_ceiling(
    state_dir: &Path,
    identity: &Identity,
    now: DateTime<Utc>,
    max_age: chrono::TimeDelta,
) -> Option<f64> {
    let mut store = StateStore::open_existing(state_dir).ok()??;
    store.identity = identity.clone();
    let (ceiling, at) = store.load_ceiling().ok()??;
    (now.signed_duration_since(at) <= max_age).then_some(ceiling)
}

/// The stored snapshot for `identity` in `state_dir`, or None: no store yet,
/// no snapshot for this identity, or a store that cannot be read (a WARN
/// naming the file and the cause; never an error of the run).
/// Never creates a store where there is none (a `plan` leaves no store
/// behind); a damaged one is set aside as [`StateStore::open`] does.
pub fn load_or_warn(state_dir: &Path, identity: &Identity) -> Option<StoredSnapshot> {
    if !super::store_path(state_dir).exists() {
        return None;
    }
    let loaded = StateStore::open(state_dir, identity).and_then(|store| store.load_snapshot());
    match loaded {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                file = %super::store_path(state_dir).display(),
                error = %e,
                "The stored snapshot cannot be read ({e}); the platform is read in full."
            );
            None
        }
    }
}

fn upsert_customer(
    statement: &mut CachedStatement<'_>,
    c: &PlatformCustomer,
) -> rusqlite::Result<()> {
    let labels = serde_json::to_string(&c.labels)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    statement.execute((
        c.id.as_str(),
        c.external_id.as_deref(),
        &c.name,
        &c.description,
        labels,
        c.updated_at.map(stamp),
    ))?;
    Ok(())
}

fn upsert_user(statement: &mut CachedStatement<'_>, u: &PlatformUser) -> rusqlite::Result<()> {
    statement.execute((
        u.id.as_str(),
        u.external_id.as_deref(),
        &u.email,
        &u.name,
        &u.phone,
        u.role.id.as_str(),
        &u.role.name,
        u.customer_id.as_str(),
        u.customer_external_id.as_deref(),
        u.updated_at.map(stamp),
    ))?;
    Ok(())
}

fn customer_from_row(row: &Row<'_>) -> rusqlite::Result<PlatformCustomer> {
    let labels: String = row.get(4)?;
    let labels = serde_json::from_str(&labels)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, Type::Text, Box::new(e)))?;
    Ok(PlatformCustomer {
        id: PlatformId::from(row.get::<_, String>(0)?),
        external_id: row.get(1)?,
        name: row.get(2)?,
        description: row.get(3)?,
        labels,
        updated_at: time_column(row, 5)?,
    })
}

/// An optional RFC 3339 column.
fn time_column(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let Some(text) = row.get::<_, Option<String>>(index)? else {
        return Ok(None);
    };
    parse_stamp(&text).map(Some).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            Type::Text,
            format!("not an RFC 3339 time: {text:?}").into(),
        )
    })
}
