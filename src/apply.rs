//! Applying a plan: customers first, then users, then user deletes, then
//! customer deletes; bounded concurrency within each phase; one outcome per
//! operation. Payload errors are recorded and the run goes on; an
//! authentication failure or a high failure rate stops it.
//!
//! Creates are idempotent: a create answered "already exists" (a lost
//! response that was retried, or a run killed half-way) re-reads the record
//! by externalId and takes it when the externalId matches.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::stream::{self, StreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::model::{NewCustomer, NewCustomerUser, PlatformId, Snapshot};
use crate::plan::{Operation, Phase, Plan, UserCreate};
use crate::platform::{PlatformClient, PlatformError, StopReason};

/// What happened to one operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Outcome {
    Applied,
    /// The platform already had the result (found by externalId, or already gone).
    AlreadyDone {
        detail: String,
    },
    Failed {
        error: String,
    },
    Skipped {
        reason: String,
    },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::AlreadyDone { .. } => "alreadyDone",
            Outcome::Failed { .. } => "failed",
            Outcome::Skipped { .. } => "skipped",
        }
    }

    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Applied | Outcome::AlreadyDone { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationReport {
    pub operation: Operation,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The result of an apply: an outcome per operation, in plan order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    pub operations: Vec<OperationReport>,
    /// Set when the run stopped early, with why.
    pub stopped: Option<String>,
}

impl ApplyReport {
    pub fn failed(&self) -> usize {
        self.operations
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed { .. } | Outcome::Skipped { .. }))
            .count()
    }

    /// Whether the run stopped because the platform refused the credentials.
    pub fn stopped_by_auth(&self) -> bool {
        self.stopped
            .as_deref()
            .is_some_and(|s| s.starts_with(AUTH_STOPPED))
    }
}

/// How an apply runs.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Operations in flight at once (the client's own cap still applies).
    pub concurrency: usize,
    /// Once cancelled (a shutdown), operations not yet started are skipped
    /// with the reason [`SHUTTING_DOWN`]; those in flight finish.
    pub cancel: CancellationToken,
}

/// The start of `ApplyReport::stopped` after an authentication failure.
const AUTH_STOPPED: &str = "authentication failed";
/// Why operations are skipped after a shutdown began.
pub const SHUTTING_DOWN: &str = "shutting down";

/// `ApplyReport::stopped` once the client stopped for `reason` (an
/// authentication failure is recorded with the error that caused it).
fn stop_text(reason: StopReason) -> String {
    match reason {
        StopReason::ShuttingDown => SHUTTING_DOWN.to_owned(),
        StopReason::AuthFailed => format!("{AUTH_STOPPED}: {reason}"),
        StopReason::Deadline(_) => reason.to_string(),
    }
}

/// Stop the run when more than this share of at least `FAILURE_MIN_OPS`
/// finished operations failed: something is wrong beyond single records.
const FAILURE_SHARE: f64 = 0.4;
const FAILURE_MIN_OPS: usize = 20;

/// Something an apply reports as it goes (a progress bar, or log lines).
pub trait Progress: Sync {
    /// Called once, before the first operation.
    fn started(&self, _operations: usize) {}
    fn finished(&self, report: &OperationReport);
}

/// Progress that says nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn finished(&self, _: &OperationReport) {}
}

struct Run<'a> {
    client: &'a PlatformClient,
    /// Customer externalId -> platform id, filled as customers are created.
    customer_ids: Mutex<BTreeMap<String, PlatformId>>,
    /// Customers whose create or adoption failed: their users are skipped.
    failed_customers: Mutex<std::collections::BTreeSet<String>>,
    finished: Mutex<(usize, usize)>,
    stop: Mutex<Option<String>>,
    cancel: CancellationToken,
}

impl Run<'_> {
    fn stopped(&self) -> Option<String> {
        self.stop.lock().ok().and_then(|s| s.clone())
    }

    fn record(&self, outcome: &Outcome, error: Option<&PlatformError>) {
        if let Some(e) = error.filter(|e| e.is_auth()) {
            if let Ok(mut stop) = self.stop.lock() {
                stop.get_or_insert_with(|| format!("{AUTH_STOPPED}: {e}"));
            }
        }
        if let Ok(mut f) = self.finished.lock() {
            f.0 += 1;
            if matches!(outcome, Outcome::Failed { .. }) {
                f.1 += 1;
            }
            let (done, failed) = *f;
            if done >= FAILURE_MIN_OPS && failed as f64 > FAILURE_SHARE * done as f64 {
                if let Ok(mut stop) = self.stop.lock() {
                    stop.get_or_insert_with(|| {
                        format!("{failed} of {done} operations failed (more than 40%)")
                    });
                }
            }
        }
    }

    fn customer_id(&self, external_id: &str) -> Option<PlatformId> {
        self.customer_ids.lock().ok()?.get(external_id).cloned()
    }

    fn stop_with(&self, why: impl FnOnce() -> String) {
        if let Ok(mut stop) = self.stop.lock() {
            stop.get_or_insert_with(why);
        }
    }

    /// Why an operation not started is skipped once the client stopped.
    fn skip_reason(&self, reason: StopReason) -> String {
        match reason {
            StopReason::ShuttingDown => SHUTTING_DOWN.to_owned(),
            StopReason::AuthFailed => format!(
                "the run stopped: {}",
                self.stopped()
                    .unwrap_or_else(|| format!("{AUTH_STOPPED}: {reason}"))
            ),
            StopReason::Deadline(_) => format!("the run stopped: {reason}"),
        }
    }

    async fn run(&self, op: &Operation) -> (Outcome, Option<PlatformError>) {
        if self.cancel.is_cancelled() {
            self.stop_with(|| SHUTTING_DOWN.to_owned());
            return (
                Outcome::Skipped {
                    reason: SHUTTING_DOWN.to_owned(),
                },
                None,
            );
        }
        if let Some(reason) = self.client.stopped() {
            self.stop_with(|| stop_text(reason));
            return (
                Outcome::Skipped {
                    reason: self.skip_reason(reason),
                },
                None,
            );
        }
        if let Some(why) = self.stopped() {
            return (
                Outcome::Skipped {
                    reason: format!("the run stopped: {why}"),
                },
                None,
            );
        }
        let (outcome, error) = self.send(op).await;
        match error.as_ref().map(|e| (e, e.stop_reason())) {
            // Not sent: the client stopped while the operation waited its
            // turn (rate limit, concurrency cap, a 429 pause).
            Some((PlatformError::Stopped { reason, .. }, _)) => {
                let reason = *reason;
                if reason != StopReason::AuthFailed {
                    self.stop_with(|| stop_text(reason));
                }
                (
                    Outcome::Skipped {
                        reason: self.skip_reason(reason),
                    },
                    error,
                )
            }
            // Sent, and abandoned at the deadline: it failed (the next run
            // sees whether it was applied).
            Some((_, Some(reason))) => {
                self.stop_with(|| stop_text(reason));
                (outcome, error)
            }
            _ => (outcome, error),
        }
    }

    /// Sends what `op` needs and says how it went.
    async fn send(&self, op: &Operation) -> (Outcome, Option<PlatformError>) {
        let result = match op {
            Operation::CreateCustomer(c) => self.create_customer(c).await,
            Operation::UpdateCustomer { id, patch, .. }
            | Operation::AdoptCustomer { id, patch, .. } => {
                let result = self.client.update_customer(id, patch).await;
                if let (Operation::AdoptCustomer { external_id, .. }, Err(_)) = (op, &result) {
                    self.customer_failed(external_id);
                }
                result.map(|_| Outcome::Applied)
            }
            Operation::CreateUser(u) => return self.create_user(u).await,
            Operation::UpdateUser { id, patch, .. } | Operation::AdoptUser { id, patch, .. } => {
                self.client
                    .update_user(id, patch)
                    .await
                    .map(|_| Outcome::Applied)
            }
            Operation::RecreateUser { old_id, create, .. } => {
                match self.delete_user(old_id).await {
                    Ok(_) => {
                        return match self.create_user(create).await {
                            // Half done is no skip: the old user is gone.
                            (_, Some(e)) if matches!(e, PlatformError::Stopped { .. }) => {
                                if let Some(reason) = e.stop_reason() {
                                    self.stop_with(|| stop_text(reason));
                                }
                                (
                                    Outcome::Failed {
                                        error: format!(
                                            "the old user was deleted, the new one not created: {e}"
                                        ),
                                    },
                                    None,
                                )
                            }
                            done => done,
                        };
                    }
                    Err(e) => Err(e),
                }
            }
            Operation::DeleteUser { id, .. } => self.delete_user(id).await,
            Operation::DeleteCustomer { id, .. } => match self.client.delete_customer(id).await {
                Err(e) if is_unknown_id(&e) => Ok(Outcome::AlreadyDone {
                    detail: "the customer was already gone".to_owned(),
                }),
                other => other.map(|_| Outcome::Applied),
            },
        };
        match result {
            Ok(outcome) => (outcome, None),
            Err(e) => (
                Outcome::Failed {
                    error: e.to_string(),
                },
                Some(e),
            ),
        }
    }

    fn customer_failed(&self, external_id: &str) {
        if let Ok(mut f) = self.failed_customers.lock() {
            f.insert(external_id.to_owned());
        }
    }

    async fn create_customer(
        &self,
        c: &crate::plan::CustomerCreate,
    ) -> Result<Outcome, PlatformError> {
        let new = NewCustomer {
            name: c.name.clone(),
            description: c.description.clone(),
            external_id: Some(c.external_id.clone()),
            labels: c.labels.clone(),
        };
        let outcome = match self.client.create_customer(&new).await {
            Ok(created) => Ok((created.id, Outcome::Applied)),
            Err(e) if e.field_errors().is_some() => {
                // "Already exists": a lost response, or a run killed half-way.
                match self.client.find_customer(&c.external_id).await {
                    Ok(Some(found))
                        if found.external_id.as_deref() == Some(c.external_id.as_str()) =>
                    {
                        Ok((
                            found.id,
                            Outcome::AlreadyDone {
                                detail: "found by externalId after the create was refused"
                                    .to_owned(),
                            },
                        ))
                    }
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok((id, outcome)) => {
                if let Ok(mut ids) = self.customer_ids.lock() {
                    ids.insert(c.external_id.clone(), id);
                }
                Ok(outcome)
            }
            Err(e) => {
                self.customer_failed(&c.external_id);
                Err(e)
            }
        }
    }

    async fn create_user(&self, u: &UserCreate) -> (Outcome, Option<PlatformError>) {
        let blocked = self
            .failed_customers
            .lock()
            .map(|f| f.contains(&u.customer_external_id))
            .unwrap_or(false);
        let customer_id = match self.customer_id(&u.customer_external_id) {
            Some(id) if !blocked => id,
            _ => {
                return (
                    Outcome::Skipped {
                        reason: format!(
                            "its customer {} was not created or adopted",
                            u.customer_external_id
                        ),
                    },
                    None,
                )
            }
        };
        let new = NewCustomerUser {
            customer_id,
            email: u.email.clone(),
            role_id: u.role_id.clone(),
            name: u.name.clone(),
            phone: u.phone.clone(),
            external_id: Some(u.external_id.clone()),
        };
        let result = match self.client.create_customer_user(&new).await {
            Ok(_) => Ok(Outcome::Applied),
            Err(e) if e.field_errors().is_some() => {
                match self.client.find_customer_user(&u.external_id).await {
                    Ok(Some(found))
                        if found.external_id.as_deref() == Some(u.external_id.as_str()) =>
                    {
                        Ok(Outcome::AlreadyDone {
                            detail: "found by externalId after the create was refused".to_owned(),
                        })
                    }
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(o) => (o, None),
            Err(e) => (
                Outcome::Failed {
                    error: e.to_string(),
                },
                Some(e),
            ),
        }
    }

    async fn delete_user(&self, id: &PlatformId) -> Result<Outcome, PlatformError> {
        match self.client.delete_user(id).await {
            Ok(()) => Ok(Outcome::Applied),
            Err(e) if is_unknown_id(&e) => Ok(Outcome::AlreadyDone {
                detail: "the user was already gone".to_owned(),
            }),
            Err(e) => Err(e),
        }
    }
}

/// A delete answered "not found" (in either of the platform's forms): it is
/// already gone, for example because an earlier attempt's answer was lost.
fn is_unknown_id(e: &PlatformError) -> bool {
    e.is_not_found()
}

/// Applies `plan` (already checked by the guards) against the platform.
pub async fn apply(
    plan: &Plan,
    snapshot: &Snapshot,
    client: &PlatformClient,
    options: &ApplyOptions,
    progress: &dyn Progress,
) -> ApplyReport {
    let customer_ids: BTreeMap<String, PlatformId> = snapshot
        .customers
        .iter()
        .filter_map(|c| Some((c.external_id.clone()?, c.id.clone())))
        .collect();
    let mut run = Run {
        client,
        customer_ids: Mutex::new(customer_ids),
        failed_customers: Mutex::new(Default::default()),
        finished: Mutex::new((0, 0)),
        stop: Mutex::new(None),
        cancel: options.cancel.clone(),
    };
    // Adopted customers are reachable by their new externalId at once.
    if let Ok(ids) = run.customer_ids.get_mut() {
        for op in &plan.operations {
            if let Operation::AdoptCustomer {
                id, external_id, ..
            } = op
            {
                ids.insert(external_id.clone(), id.clone());
            }
        }
    }
    progress.started(plan.operations.len());
    if !plan.operations.is_empty() {
        client.begin_writes();
    }
    let mut reports: Vec<OperationReport> = Vec::with_capacity(plan.operations.len());
    for phase in [
        Phase::Customers,
        Phase::Users,
        Phase::DeleteUsers,
        Phase::DeleteCustomers,
    ] {
        let ops: Vec<&Operation> = plan
            .operations
            .iter()
            .filter(|op| op.phase() == phase)
            .collect();
        let run = &run;
        // The futures are built first (they start only when polled, at most
        // `concurrency` at a time): a stream holding the closure instead
        // trips rustc's "FnOnce is not general enough" when the apply runs
        // in a spawned task (the daemon).
        let pending: Vec<_> = ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| async move {
                let (outcome, error) = run.run(op).await;
                run.record(&outcome, error.as_ref());
                let report = OperationReport {
                    operation: op.clone(),
                    outcome,
                };
                match &report.outcome {
                    Outcome::Failed { error } => tracing::warn!(
                        action = report.operation.action(),
                        kind = report.operation.kind(),
                        external_id = report.operation.external_id(),
                        error = %error,
                        "Operation failed."
                    ),
                    outcome => tracing::debug!(
                        action = report.operation.action(),
                        kind = report.operation.kind(),
                        external_id = report.operation.external_id(),
                        outcome = outcome.label(),
                        "Operation finished."
                    ),
                }
                progress.finished(&report);
                (i, report)
            })
            .collect();
        let mut done: Vec<(usize, OperationReport)> = stream::iter(pending)
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
        done.sort_by_key(|(i, _)| *i);
        reports.extend(done.into_iter().map(|(_, r)| r));
    }
    ApplyReport {
        operations: reports,
        stopped: run.stop.into_inner().ok().flatten(),
    }
}
