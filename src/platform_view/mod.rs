//! How a run gets the platform's view it plans from: the whole platform
//! read page by page (a **full read**), or the snapshot stored by the last
//! run with what changed on the platform since (an **incremental read**,
//! one request when little changed).
//!
//! An incremental read is taken only when it is as good as a full one:
//!
//! - the store holds a snapshot for this platform and scope
//!   (`crate::state`), and its last full read is younger than
//!   `schedule.full_every` (default hourly; 0 reads in full every run);
//! - changes are asked for from the time of the last read on the
//!   platform's own clock (learnt from its answers' `Date` headers) less
//!   [`SKEW_MARGIN`], which also covers a write that committed just after
//!   the read that should have seen it;
//! - the platform's counts of customers and customer users, read in the
//!   same request, equal the stored snapshot plus the changes ([`merge`]).
//!   Deletes leave no `updatedAt`; a count that does not add up is
//!   something deleted (or created) outside what was seen, and the run
//!   reads in full. A delete and a create that cancel out in the counts
//!   cannot hide: the created record has a new id and is among the changes,
//!   so the merged count is one over.
//!
//! What a run does to the platform is not written into the store: its
//! creates and updates come back as changes at the next run (their
//! `updatedAt` is later than the read), and its deletes are taken out of
//! the stored snapshot when they succeeded ([`remember`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::apply::ApplyReport;
use crate::config::Config;
use crate::model::{PlatformCustomer, PlatformId, PlatformUser, Role, Snapshot};
use crate::plan::Operation;
use crate::platform::{Changes, PlatformClient, PlatformError};
use crate::state::{self, Identity, StateStore, StoredSnapshot};

/// How much earlier than the last read changes are asked for: room for
/// clocks that disagree (when the platform sends no `Date`) and for a write
/// that committed just after the read.
pub const SKEW_MARGIN: Duration = Duration::from_secs(300);

/// How the platform was read this run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum PlatformRead {
    /// Every page.
    #[serde(rename_all = "camelCase")]
    Full { reason: FullReason },
    /// The stored snapshot and the records changed since.
    #[serde(rename_all = "camelCase")]
    Incremental {
        since: DateTime<Utc>,
        changed_customers: usize,
        changed_users: usize,
    },
}

impl PlatformRead {
    /// `full` or `incremental`, as logs name it.
    pub fn label(&self) -> &'static str {
        match self {
            PlatformRead::Full { .. } => "full",
            PlatformRead::Incremental { .. } => "incremental",
        }
    }
}

/// Why a run read the platform in full.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "why", rename_all = "camelCase")]
pub enum FullReason {
    /// No stored snapshot for this platform and scope (first run, a new
    /// or unreadable store, or a store from another config).
    NoSnapshot,
    /// `schedule.full_every` has passed since the last full read (or is 0).
    #[serde(rename_all = "camelCase")]
    Due { last_full_read_at: DateTime<Utc> },
    /// The platform's counts did not match the snapshot plus the changes.
    #[serde(rename_all = "camelCase")]
    CountsDiffer(CountMismatch),
    /// The platform refused the incremental read's document (or its answer
    /// could not be read).
    #[serde(rename_all = "camelCase")]
    ChangesRefused { error: String },
}

impl std::fmt::Display for FullReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FullReason::NoSnapshot => write!(f, "no stored snapshot for this platform and scope"),
            FullReason::Due { last_full_read_at } => write!(
                f,
                "the last full read ({last_full_read_at}) is older than schedule.full_every"
            ),
            FullReason::CountsDiffer(m) => write!(f, "{m}"),
            FullReason::ChangesRefused { error } => {
                write!(
                    f,
                    "the platform did not answer the incremental read: {error}"
                )
            }
        }
    }
}

/// The platform counts another number of records than the stored snapshot
/// with the changes holds: something was deleted outside what was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CountMismatch {
    /// `customers` or `users`.
    pub list: &'static str,
    pub platform: u64,
    pub merged: u64,
}

impl std::fmt::Display for CountMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the platform counts {} {} where the stored snapshot with the changes holds {} (records were deleted or created outside what the changes show)",
            self.platform, self.list, self.merged
        )
    }
}

/// The platform's view for one run, and what to remember of it.
#[derive(Debug)]
pub struct PlatformView {
    pub snapshot: Snapshot,
    pub read: PlatformRead,
    /// When the read started, on the platform's clock as far as known.
    pub taken_at: DateTime<Utc>,
    /// The changed records (an incremental read), to write into the store.
    changed: Option<(Vec<PlatformCustomer>, Vec<PlatformUser>)>,
}

/// Whether a stored snapshot may be built on now, and from when changes
/// are asked for (its read time, on the platform's clock as far as it was
/// known, less [`SKEW_MARGIN`]), or why not. `now` is this machine's clock:
/// it only says whether a full read is due.
pub fn decide(
    stored: Option<&StoredSnapshot>,
    full_every: Duration,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, FullReason> {
    let Some(stored) = stored else {
        return Err(FullReason::NoSnapshot);
    };
    let margin = chrono::TimeDelta::from_std(SKEW_MARGIN).unwrap_or(chrono::TimeDelta::MAX);
    let every = chrono::TimeDelta::from_std(full_every).unwrap_or(chrono::TimeDelta::MAX);
    if full_every.is_zero() || now.signed_duration_since(stored.last_full_read_at) >= every {
        return Err(FullReason::Due {
            last_full_read_at: stored.last_full_read_at,
        });
    }
    Ok(stored.taken_at - margin)
}

/// The stored snapshot with the changes laid over it: a changed record
/// replaces the stored one with its id (keeping its place), a new one is
/// added at the end; each user's customer externalId is taken from the
/// merged customers (a customer's externalId can change without its users'
/// `updatedAt`), each user's role from the roles read now. Refused when a
/// count differs from the platform's.
pub fn merge(stored: Snapshot, changes: Changes) -> Result<Snapshot, CountMismatch> {
    let customers = overlay(stored.customers, changes.customers, |c| &c.id);
    if customers.len() as u64 != changes.customer_count {
        return Err(CountMismatch {
            list: "customers",
            platform: changes.customer_count,
            merged: customers.len() as u64,
        });
    }
    let mut users = overlay(stored.users, changes.users, |u| &u.id);
    if users.len() as u64 != changes.user_count {
        return Err(CountMismatch {
            list: "users",
            platform: changes.user_count,
            merged: users.len() as u64,
        });
    }
    let external_ids: HashMap<&PlatformId, &Option<String>> =
        customers.iter().map(|c| (&c.id, &c.external_id)).collect();
    let roles: HashMap<&PlatformId, Arc<Role>> = changes
        .roles
        .iter()
        .map(|r| (&r.id, Arc::new(r.clone())))
        .collect();
    for u in &mut users {
        if let Some(external_id) = external_ids.get(&u.customer_id) {
            if u.customer_external_id != **external_id {
                u.customer_external_id = (*external_id).clone();
            }
        }
        if let Some(role) = roles.get(&u.role.id) {
            u.role = role.clone();
        }
    }
    Ok(Snapshot {
        customers,
        users,
        roles: changes.roles,
        holdings: Default::default(),
    })
}

fn overlay<T>(mut stored: Vec<T>, changed: Vec<T>, id: impl Fn(&T) -> &PlatformId) -> Vec<T> {
    let place: HashMap<PlatformId, usize> = stored
        .iter()
        .enumerate()
        .map(|(i, r)| (id(r).clone(), i))
        .collect();
    for record in changed {
        match place.get(id(&record)) {
            Some(&i) => stored[i] = record,
            None => stored.push(record),
        }
    }
    stored
}

/// How long a remembered rate ceiling is used: a day (the platform's limit
/// may change; an older one is found again).
pub const CEILING_MEMORY: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// Starts the client's rate at the ceiling an earlier run measured on this
/// platform, when the store remembers one: a run then neither searches for
/// it nor pays the `Retry-After` pause that finding it costs.
pub fn recall_rate(config: &Config, client: &PlatformClient) {
    let identity = Identity::of(config);
    if let Some(ceiling) =
        state::snapshot::recall_ceiling(&config.state_dir, &identity, Utc::now(), CEILING_MEMORY)
    {
        tracing::debug!(
            ceiling,
            "Starting at the request-rate ceiling an earlier run measured."
        );
        client.start_at_ceiling(ceiling);
    }
}

/// Reads the platform for a run: incrementally when the store allows it
/// ([`decide`], [`merge`]), else in full. Reads the store, never writes it.
pub async fn read(config: &Config, client: &PlatformClient) -> Result<PlatformView, PlatformError> {
    let identity = Identity::of(config);
    let stored = state::snapshot::load_or_warn(&config.state_dir, &identity);
    let expected_users = stored.as_ref().map(|s| s.snapshot.users.len());
    let started = Utc::now();
    let reason = match decide(stored.as_ref(), config.full_every, started) {
        Err(reason) => reason,
        Ok(since) => match client.changes_since(since).await {
            Ok(changes) => {
                let stored = stored.map(|s| s.snapshot).unwrap_or_default();
                match incremental(stored, changes, since) {
                    Ok((snapshot, read, changed)) => {
                        return Ok(PlatformView {
                            snapshot,
                            read,
                            taken_at: client.on_platform_clock(started),
                            changed: Some(changed),
                        })
                    }
                    Err(mismatch) => FullReason::CountsDiffer(mismatch),
                }
            }
            // The platform refused or garbled the one document (an argument
            // it does not take, an answer that does not parse): the full
            // read does not depend on it.
            Err(
                e @ (PlatformError::GraphQl { .. }
                | PlatformError::Decode { .. }
                | PlatformError::Protocol { .. }
                | PlatformError::UnexpectedStatus { .. }),
            ) => {
                tracing::warn!(error = %e, "The platform did not answer the incremental read ({e}); reading it in full.");
                FullReason::ChangesRefused {
                    error: e.to_string(),
                }
            }
            Err(e) => return Err(e),
        },
    };
    tracing::info!(read = "full", reason = %reason, "Reading the whole platform: {reason}.");
    let started = Utc::now();
    let snapshot = client.snapshot_expecting(expected_users).await?;
    Ok(PlatformView {
        snapshot,
        read: PlatformRead::Full { reason },
        taken_at: client.on_platform_clock(started),
        changed: None,
    })
}

/// The changed records kept to be written into the store.
type Changed = (Vec<PlatformCustomer>, Vec<PlatformUser>);

/// The stored snapshot with `changes` merged, logged; or the counts that
/// did not add up.
fn incremental(
    stored: Snapshot,
    changes: Changes,
    since: DateTime<Utc>,
) -> Result<(Snapshot, PlatformRead, Changed), CountMismatch> {
    let changed = (changes.customers.clone(), changes.users.clone());
    let (changed_customers, changed_users) = (changed.0.len(), changed.1.len());
    let snapshot = merge(stored, changes)?;
    tracing::info!(
        read = "incremental",
        since = %since,
        changed_customers,
        changed_users,
        "Read the platform's changes since {since}: {changed_customers} customers and {changed_users} users changed."
    );
    let read = PlatformRead::Incremental {
        since,
        changed_customers,
        changed_users,
    };
    Ok((snapshot, read, changed))
}

/// Writes what the run learnt into the store: the whole snapshot after a
/// full read, the changes after an incremental one, the records the apply
/// deleted (only those it is sure of), and the rate ceiling it measured. A
/// store that cannot be written is a WARN: the next run reads in full.
pub fn remember(
    config: &Config,
    client: &PlatformClient,
    view: &PlatformView,
    report: Option<&ApplyReport>,
) {
    let deleted: Vec<PlatformId> = report
        .map(|r| {
            r.operations
                .iter()
                .filter(|o| o.outcome.succeeded())
                .filter_map(|o| match &o.operation {
                    Operation::DeleteUser { id, .. } | Operation::DeleteCustomer { id, .. } => {
                        Some(id.clone())
                    }
                    Operation::RecreateUser { old_id, .. } => Some(old_id.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let identity = Identity::of(config);
    let ceiling = client.measured_ceiling();
    let written = StateStore::open(&config.state_dir, &identity).and_then(|mut store| {
        if let Some(ceiling) = ceiling {
            store.save_ceiling(ceiling, Utc::now())?;
        }
        // One transaction for the changes and the deletes; holdings are not stored.
        let (customers, users): (&[PlatformCustomer], &[PlatformUser]) = match &view.changed {
            None => {
                store.save_snapshot(&view.snapshot, view.taken_at)?;
                (&[], &[])
            }
            Some((customers, users)) => (customers, users),
        };
        if !(customers.is_empty() && users.is_empty() && deleted.is_empty()) {
            store.apply_changes(customers, users, &deleted, view.taken_at)?;
        }
        Ok(())
    });
    if let Err(e) = written {
        tracing::warn!(
            file = %state::store_path(&config.state_dir).display(),
            error = %e,
            "The snapshot could not be stored ({e}); the next run reads the platform in full."
        );
    }
}

#[cfg(test)]
mod tests;
