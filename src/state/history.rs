//! The audit history: every operation that `sync`, `apply` (a saved plan)
//! and the daemon's runs tried, with its outcome, recorded when the run
//! ends, one transaction per run. `dirsync history` reads it back to answer
//! "who changed this user, and when".
//!
//! Each run gets a run id (a UUID v4) and its mode (`sync`, `apply`, `run`);
//! each operation its action, kind, externalId, email (a user) or name (a
//! customer), the customer it sits in, its platform id (unknown for a
//! create: the platform gives the id only in its answer), the outcome with
//! its error, reason or detail, a delete's or recreate's reason, and for
//! updates and adoptions the fields changed, before and after. The time of
//! an operation is the end of its run's apply: the apply reports no time
//! per operation. Runs that sent nothing (a plan, a blocked or declined
//! sync, nothing to do) record nothing.
//!
//! Recording never fails a run: a store that cannot be written is a WARN
//! naming the file. A run killed before it ends records nothing; the
//! platform, and the next run's plan, show where it stopped.

use std::path::Path;

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};
use rusqlite::types::Type;
use rusqlite::TransactionBehavior;
use serde::Serialize;

use super::{Identity, StateError, StateStore};
use crate::apply::{OperationReport, Outcome};
use crate::config::Config;
use crate::plan::{FieldChange, Operation};
use crate::run::Reconcile;

/// Which command applied the operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    /// `dirsync sync`.
    Sync,
    /// `dirsync apply` (a saved plan).
    Apply,
    /// A scheduled run of the daemon (`dirsync run`).
    Run,
}

impl RunMode {
    pub fn name(self) -> &'static str {
        match self {
            RunMode::Sync => "sync",
            RunMode::Apply => "apply",
            RunMode::Run => "run",
        }
    }
}

/// One recorded operation, as `dirsync history` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// When its run recorded it (UTC).
    pub at: DateTime<Utc>,
    /// `sync`, `apply` or `run`.
    pub mode: String,
    pub run_id: String,
    /// `create`, `update`, `adopt`, `recreate` or `delete`.
    pub action: String,
    /// `customer` or `user`.
    pub kind: String,
    pub external_id: String,
    /// A user's email.
    pub email: Option<String>,
    /// A customer's name, where the operation names it.
    pub name: Option<String>,
    /// The customer a user sits in, where the operation names it.
    pub customer_external_id: Option<String>,
    /// The record's platform id (None for a create).
    pub platform_id: Option<String>,
    /// `outcome` (`applied`, `alreadyDone`, `failed`, `skipped`) with its
    /// `detail`, `error` or `reason`, as the sync report has them.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Why a record was deleted or recreated.
    pub why: Option<String>,
    /// For updates and adoptions: each field, before and after.
    pub changes: Vec<FieldChange>,
}

impl HistoryEntry {
    /// One line: `2026-12-01T10:00:00Z  sync   run 3f2a9c1b…  update user
    /// E1002 <c@acme.example> in customer acme: applied; phone: "1" -> "2"`.
    pub fn text_line(&self) -> String {
        let short: String = self.run_id.chars().take(8).collect();
        let mut line = format!(
            "{}  {:<5}  run {short}…  {} {} {}",
            self.at.to_rfc3339_opts(SecondsFormat::Secs, true),
            self.mode,
            self.action,
            self.kind,
            self.external_id
        );
        if let Some(email) = &self.email {
            line.push_str(&format!(" <{email}>"));
        }
        if let Some(name) = &self.name {
            line.push_str(&format!(" {name:?}"));
        }
        if let Some(customer) = &self.customer_external_id {
            line.push_str(&format!(" in customer {customer}"));
        }
        if let Some(why) = &self.why {
            line.push_str(&format!(" ({why})"));
        }
        line.push_str(": ");
        line.push_str(self.outcome.label());
        match &self.outcome {
            Outcome::Applied => {}
            Outcome::AlreadyDone { detail } => line.push_str(&format!(" ({detail})")),
            Outcome::Failed { error } => line.push_str(&format!(": {error}")),
            Outcome::Skipped { reason } => line.push_str(&format!(": {reason}")),
        }
        if !self.changes.is_empty() {
            let changes: Vec<String> = self
                .changes
                .iter()
                .map(|c| format!("{}: {:?} -> {:?}", c.field, c.before, c.after))
                .collect();
            line.push_str("; ");
            line.push_str(&changes.join(", "));
        }
        line
    }
}

/// Which recorded operations to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    /// Only this externalId (exact; a customer's or a user's).
    pub external_id: Option<String>,
    /// Only operations recorded at or after this time.
    pub since: Option<DateTime<Utc>>,
}

/// `--since`: an RFC 3339 time (`2026-12-01T10:00:00Z`), a date
/// (`2026-12-01`, midnight UTC), or a span back from now (`24h`, `7d`).
pub fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    parse_since_at(text, Utc::now())
}

fn parse_since_at(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(midnight) = day.and_hms_opt(0, 0, 0) {
            return Ok(Utc.from_utc_datetime(&midnight));
        }
    }
    let span = |digits: &str, unit: i64| {
        digits
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .and_then(|n| n.checked_mul(unit))
            .and_then(chrono::TimeDelta::try_seconds)
            .and_then(|d| now.checked_sub_signed(d))
    };
    let back = if let Some(h) = t.strip_suffix('h') {
        span(h, 3600)
    } else if let Some(d) = t.strip_suffix('d') {
        span(d, 86_400)
    } else {
        None
    };
    back.ok_or_else(|| {
        format!(
            "wants an RFC 3339 time (2026-12-01T10:00:00Z), a date (2026-12-01, UTC) or a span back from now (24h, 7d), not {text:?}"
        )
    })
}

/// What one run recorded about itself.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub run_id: String,
    pub mode: RunMode,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub platform: String,
    /// Why the run stopped early, if it did.
    pub stopped: Option<String>,
}

/// Records the operations `reconcile` applied (or tried) in the store in
/// `config.state_dir`, one transaction, under a new run id, which it
/// returns. Nothing is recorded when nothing was sent. Never fails the run:
/// a store that cannot be written is logged at WARN, naming the file.
pub fn record_run(config: &Config, mode: RunMode, reconcile: &Reconcile) -> Option<String> {
    let report = reconcile.report.as_ref()?;
    if report.operations.is_empty() {
        return None;
    }
    let finished_at = Utc::now();
    let took =
        chrono::TimeDelta::try_milliseconds(reconcile.duration_ms as i64).unwrap_or_default();
    let identity = Identity::of(config);
    let run = RunRecord {
        run_id: uuid::Uuid::new_v4().to_string(),
        mode,
        started_at: finished_at - took,
        finished_at,
        platform: identity.platform.clone(),
        stopped: report.stopped.clone(),
    };
    let result = StateStore::open(&config.state_dir, &identity)
        .and_then(|mut store| store.record_operations(&run, &report.operations));
    match result {
        Ok(()) => {
            tracing::debug!(
                run_id = %run.run_id,
                operations = report.operations.len(),
                file = %super::store_path(&config.state_dir).display(),
                "Recorded the run's operations in the history."
            );
            Some(run.run_id)
        }
        Err(e) => {
            tracing::warn!(
                file = %super::store_path(&config.state_dir).display(),
                error = %e,
                "The run's operations could not be recorded in the history ({e}); the sync itself is not affected."
            );
            None
        }
    }
}

/// The recorded operations in `state_dir` that `filter` lets through,
/// oldest first; None when there is no store yet.
pub fn read_history(
    state_dir: &Path,
    filter: &HistoryFilter,
) -> Result<Option<Vec<HistoryEntry>>, StateError> {
    match StateStore::open_existing(state_dir)? {
        Some(store) => store.history(filter).map(Some),
        None => Ok(None),
    }
}

impl StateStore {
    /// Records one run and its operations, in one transaction.
    pub fn record_operations(
        &mut self,
        run: &RunRecord,
        operations: &[OperationReport],
    ) -> Result<(), StateError> {
        let mut write = || -> rusqlite::Result<()> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO runs (run_id, mode, started_at, finished_at, platform, dirsync_version, stopped)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                (
                    &run.run_id,
                    run.mode.name(),
                    run.started_at.timestamp_millis(),
                    run.finished_at.timestamp_millis(),
                    &run.platform,
                    env!("CARGO_PKG_VERSION"),
                    run.stopped.as_deref(),
                ),
            )?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO operations (run_id, at, action, kind, external_id, email, name,
                        customer_external_id, platform_id, outcome, detail, why, changes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )?;
                let at = run.finished_at.timestamp_millis();
                for report in operations {
                    let op = &report.operation;
                    let what = Described::of(op);
                    let detail = match &report.outcome {
                        Outcome::Applied => None,
                        Outcome::AlreadyDone { detail } => Some(detail.as_str()),
                        Outcome::Failed { error } => Some(error.as_str()),
                        Outcome::Skipped { reason } => Some(reason.as_str()),
                    };
                    let changes = match what.changes {
                        Some(c) if !c.is_empty() => {
                            Some(serde_json::to_string(c).map_err(|e| {
                                rusqlite::Error::ToSqlConversionFailure(Box::new(e))
                            })?)
                        }
                        _ => None,
                    };
                    insert.execute(rusqlite::params![
                        &run.run_id,
                        at,
                        op.action(),
                        op.kind(),
                        op.external_id(),
                        what.email,
                        what.name,
                        what.customer,
                        what.id,
                        report.outcome.label(),
                        detail,
                        what.why,
                        changes,
                    ])?;
                }
            }
            tx.commit()
        };
        write().map_err(|error| StateError::Sqlite {
            path: self.path.clone(),
            doing: "record the run's operations",
            error,
        })
    }

    /// The recorded operations `filter` lets through, oldest first.
    pub fn history(&self, filter: &HistoryFilter) -> Result<Vec<HistoryEntry>, StateError> {
        let mut sql = String::from(
            "SELECT o.at, r.mode, o.run_id, o.action, o.kind, o.external_id, o.email, o.name,
                    o.customer_external_id, o.platform_id, o.outcome, o.detail, o.why, o.changes
             FROM operations o JOIN runs r ON r.run_id = o.run_id WHERE 1",
        );
        let mut params: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(id) = &filter.external_id {
            params.push(id.clone().into());
            sql.push_str(&format!(" AND o.external_id = ?{}", params.len()));
        }
        if let Some(since) = filter.since {
            params.push(since.timestamp_millis().into());
            sql.push_str(&format!(" AND o.at >= ?{}", params.len()));
        }
        sql.push_str(" ORDER BY o.at, o.seq");
        let read = || -> rusqlite::Result<Vec<HistoryEntry>> {
            let mut statement = self.conn.prepare(&sql)?;
            let rows = statement.query_map(rusqlite::params_from_iter(params), |row| {
                let at_ms: i64 = row.get(0)?;
                let at = DateTime::<Utc>::from_timestamp_millis(at_ms)
                    .ok_or_else(|| rusqlite::Error::IntegralValueOutOfRange(0, at_ms))?;
                let label: String = row.get(10)?;
                let detail: Option<String> = row.get(11)?;
                let detail = detail.unwrap_or_default();
                let outcome = match label.as_str() {
                    "applied" => Outcome::Applied,
                    "alreadyDone" => Outcome::AlreadyDone { detail },
                    "failed" => Outcome::Failed { error: detail },
                    "skipped" => Outcome::Skipped { reason: detail },
                    other => {
                        return Err(rusqlite::Error::FromSqlConversionFailure(
                            10,
                            Type::Text,
                            format!("not an outcome: {other:?}").into(),
                        ))
                    }
                };
                let changes: Option<String> = row.get(13)?;
                let changes = match changes {
                    Some(json) => serde_json::from_str(&json).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(13, Type::Text, Box::new(e))
                    })?,
                    None => Vec::new(),
                };
                Ok(HistoryEntry {
                    at,
                    mode: row.get(1)?,
                    run_id: row.get(2)?,
                    action: row.get(3)?,
                    kind: row.get(4)?,
                    external_id: row.get(5)?,
                    email: row.get(6)?,
                    name: row.get(7)?,
                    customer_external_id: row.get(8)?,
                    platform_id: row.get(9)?,
                    outcome,
                    why: row.get(12)?,
                    changes,
                })
            })?;
            rows.collect()
        };
        read().map_err(|error| StateError::Sqlite {
            path: self.path.clone(),
            doing: "read the history",
            error,
        })
    }
}

/// What the history keeps of an operation besides its action, kind and
/// externalId.
struct Described<'a> {
    email: Option<&'a str>,
    name: Option<&'a str>,
    customer: Option<&'a str>,
    id: Option<&'a str>,
    why: Option<String>,
    changes: Option<&'a [FieldChange]>,
}

impl<'a> Described<'a> {
    fn of(op: &'a Operation) -> Described<'a> {
        let none = Described {
            email: None,
            name: None,
            customer: None,
            id: None,
            why: None,
            changes: None,
        };
        match op {
            Operation::CreateCustomer(c) => Described {
                name: Some(&c.name),
                ..none
            },
            Operation::UpdateCustomer { id, changes, .. } => Described {
                name: changes
                    .iter()
                    .find(|c| c.field == "name")
                    .map(|c| c.after.as_str()),
                id: Some(id.as_str()),
                changes: Some(changes),
                ..none
            },
            Operation::AdoptCustomer {
                id, name, changes, ..
            } => Described {
                name: Some(name),
                id: Some(id.as_str()),
                changes: Some(changes),
                ..none
            },
            Operation::DeleteCustomer {
                id,
                name,
                users,
                instances,
                why,
                ..
            } => Described {
                name: Some(name),
                id: Some(id.as_str()),
                why: Some(format!(
                    "{}; with {users} users and {instances} instances",
                    why.describe()
                )),
                ..none
            },
            Operation::CreateUser(u) => Described {
                email: Some(&u.email),
                customer: Some(&u.customer_external_id),
                ..none
            },
            Operation::RecreateUser {
                old_id,
                reason,
                create,
            } => Described {
                email: Some(&create.email),
                customer: Some(&create.customer_external_id),
                id: Some(old_id.as_str()),
                why: Some(reason.clone()),
                ..none
            },
            Operation::UpdateUser {
                id,
                email,
                customer_external_id,
                changes,
                ..
            }
            | Operation::AdoptUser {
                id,
                email,
                customer_external_id,
                changes,
                ..
            } => Described {
                email: Some(email),
                customer: customer_external_id.as_deref(),
                id: Some(id.as_str()),
                changes: Some(changes),
                ..none
            },
            Operation::DeleteUser {
                id,
                email,
                customer_external_id,
                why,
                ..
            } => Described {
                email: Some(email),
                customer: customer_external_id.as_deref(),
                id: Some(id.as_str()),
                why: Some(why.describe().to_owned()),
                ..none
            },
        }
    }
}
