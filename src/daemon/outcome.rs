//! What one scheduled run came to, in the terms the daemon's logs, status
//! line and metrics use.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::apply::Outcome;
use crate::guard::BlockReason;
use crate::plan::{Operation, Scope};
use crate::report;
use crate::run::{Reconcile, RunError};

/// How a run ended. `Ok` is what `dirsync sync` would exit 0 for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RunResult {
    /// Applied (or nothing to do), nothing failed.
    Ok,
    /// Some operations failed or were skipped, or conflicts need a decision.
    Partial,
    /// A safety limit blocked the plan: nothing was sent.
    Blocked,
    /// The run could not finish: a source, platform or config error.
    Failed,
    /// Stopped by a shutdown between operations.
    Interrupted,
}

impl RunResult {
    pub const ALL: [RunResult; 5] = [
        RunResult::Ok,
        RunResult::Partial,
        RunResult::Blocked,
        RunResult::Failed,
        RunResult::Interrupted,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RunResult::Ok => "ok",
            RunResult::Partial => "partial",
            RunResult::Blocked => "blocked",
            RunResult::Failed => "failed",
            RunResult::Interrupted => "interrupted",
        }
    }
}

/// The `reason` label of a blocked run: which safety limit held the plan.
pub fn block_label(reason: &BlockReason) -> &'static str {
    match reason {
        BlockReason::EmptySource => "empty_source",
        BlockReason::Shrink { .. } => "shrink",
        BlockReason::UserDeleteBudget { .. } => "user_delete_budget",
        BlockReason::CustomerDeleteBudget { .. } => "customer_delete_budget",
        BlockReason::DeletesWithheld { .. } => "deletes_withheld",
    }
}

/// Every [`block_label`], so that each series exists (at 0) from the start.
pub const BLOCK_LABELS: [&str; 5] = [
    "empty_source",
    "shrink",
    "user_delete_budget",
    "customer_delete_budget",
    "deletes_withheld",
];

/// One safety limit that blocked a run: its label and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub label: &'static str,
    pub text: String,
}

/// The sizes a plan saw, and what the platform holds after the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    /// Customers and users the source gave.
    pub source_customers: usize,
    pub source_users: usize,
    /// Managed customers and users on the platform after the run: what the
    /// run read, plus what it created or adopted, less what it deleted.
    pub managed_customers: usize,
    pub managed_users: usize,
    /// Records the source or the mapping refused.
    pub refused: usize,
}

/// Operation outcomes by kind, action and outcome.
pub type OutcomeCounts = BTreeMap<(&'static str, &'static str, &'static str), u64>;

/// The counts of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Planned operations by action (`create`, `update`, `adopt`, `recreate`, `delete`).
    pub actions: BTreeMap<&'static str, usize>,
    /// After an apply: outcomes by kind, action and outcome.
    pub outcomes: OutcomeCounts,
    /// Operations that failed or were skipped.
    pub failed: usize,
    pub drift: usize,
    pub conflicts: usize,
    pub requests: u64,
    pub throttled: u64,
    /// None when the run made no plan (it failed or was stopped before).
    pub sizes: Option<Sizes>,
}

/// One run's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    pub result: RunResult,
    pub counts: RunCounts,
    /// Why the run failed or stopped early (never a secret: errors are built
    /// from operation names, statuses and the platform's messages).
    pub error: Option<String>,
    /// The platform refused the credentials: stop mutating until a reload
    /// or the back-off passes.
    pub auth_failed: bool,
    /// The safety limits that blocked the plan (empty unless `Blocked`).
    pub blocked: Vec<Blocked>,
}

impl RunOutcome {
    pub fn succeeded(&self) -> bool {
        self.result == RunResult::Ok
    }

    /// From a reconcile that ran to its end; `interrupted`: the shutdown
    /// cancelled it.
    pub fn from_reconcile(r: &Reconcile, interrupted: bool) -> RunOutcome {
        let mut counts = RunCounts {
            drift: r.plan.drift.len(),
            conflicts: r.plan.conflicts.len(),
            requests: r.requests.sent,
            throttled: r.requests.throttled,
            sizes: Some(sizes_after(r)),
            ..RunCounts::default()
        };
        for op in &r.plan.operations {
            *counts.actions.entry(op.action()).or_insert(0) += 1;
        }
        let mut auth_failed = false;
        let mut error = None;
        if let Some(rep) = &r.report {
            counts.failed = rep.failed();
            for op in &rep.operations {
                *counts
                    .outcomes
                    .entry((
                        op.operation.kind(),
                        op.operation.action(),
                        op.outcome.label(),
                    ))
                    .or_insert(0) += 1;
            }
            auth_failed = rep.stopped_by_auth();
            error = rep.stopped.clone();
            if error.is_none() {
                error = rep.operations.iter().find_map(|o| match &o.outcome {
                    Outcome::Failed { error } => Some(error.clone()),
                    _ => None,
                });
            }
        }
        let result = if interrupted && r.report.as_ref().is_some_and(|rep| rep.stopped.is_some()) {
            RunResult::Interrupted
        } else {
            match report::sync_exit_code(r) {
                report::exit::OK => RunResult::Ok,
                report::exit::BLOCKED => RunResult::Blocked,
                report::exit::INTERRUPTED => RunResult::Interrupted,
                _ => RunResult::Partial,
            }
        };
        RunOutcome {
            result,
            counts,
            error,
            auth_failed,
            blocked: r
                .blocked
                .iter()
                .map(|b| Blocked {
                    label: block_label(b),
                    text: b.to_string(),
                })
                .collect(),
        }
    }

    /// From a run that ended in an error before its apply.
    pub fn from_error(e: &RunError) -> RunOutcome {
        RunOutcome {
            result: if e.is_interrupted() {
                RunResult::Interrupted
            } else {
                RunResult::Failed
            },
            counts: RunCounts::default(),
            error: Some(e.to_string()),
            auth_failed: e.is_auth(),
            blocked: Vec::new(),
        }
    }

    /// A run that did not return (it panicked or was abandoned).
    pub fn lost(why: &str) -> RunOutcome {
        RunOutcome {
            result: RunResult::Failed,
            counts: RunCounts::default(),
            error: Some(why.to_owned()),
            auth_failed: false,
            blocked: Vec::new(),
        }
    }

    /// A short phrase for STATUS=: `ok: 2 create, 1 update; 0 failed`.
    /// Records the source or the mapping refused this run.
    pub fn refused(&self) -> usize {
        self.counts.sizes.map_or(0, |s| s.refused)
    }

    pub fn describe(&self) -> String {
        let mut s = self.result.label().to_owned();
        if self.counts.actions.is_empty() {
            s.push_str(": no changes");
        } else {
            let parts: Vec<String> = self
                .counts
                .actions
                .iter()
                .map(|(a, n)| format!("{n} {a}"))
                .collect();
            let _ = write!(s, ": {}", parts.join(", "));
        }
        if self.counts.failed > 0 {
            let _ = write!(s, "; {} failed", self.counts.failed);
        }
        if self.counts.conflicts > 0 {
            let _ = write!(s, "; {} conflicts", self.counts.conflicts);
        }
        if self.counts.drift > 0 {
            let _ = write!(s, "; {} drift", self.counts.drift);
        }
        let refused = self.refused();
        if refused > 0 {
            let _ = write!(s, "; {refused} refused records");
        }
        if let Some(first) = self.blocked.first() {
            let labels: Vec<&str> = self.blocked.iter().map(|b| b.label).collect();
            let _ = write!(s, " (blocked by {}: {})", labels.join(", "), first.text);
        }
        if self.result == RunResult::Failed {
            if let Some(e) = &self.error {
                let _ = write!(s, " ({e})");
            }
        }
        s
    }
}

/// What the plan saw, moved on by what the apply did: creates and adoptions
/// that succeeded add a managed record, deletes take one away (a customer
/// delete takes its users too).
fn sizes_after(r: &Reconcile) -> Sizes {
    let Scope {
        managed_customers,
        managed_users,
        directory_customers,
        directory_users,
    } = r.plan.scope;
    let mut customers = managed_customers as i64;
    let mut users = managed_users as i64;
    for op in r.report.iter().flat_map(|rep| &rep.operations) {
        if !op.outcome.succeeded() {
            continue;
        }
        match &op.operation {
            Operation::CreateCustomer(_) | Operation::AdoptCustomer { .. } => customers += 1,
            Operation::CreateUser(_) | Operation::AdoptUser { .. } => users += 1,
            Operation::DeleteUser { .. } => users -= 1,
            Operation::DeleteCustomer { users: held, .. } => {
                customers -= 1;
                users -= *held as i64;
            }
            Operation::UpdateCustomer { .. }
            | Operation::UpdateUser { .. }
            | Operation::RecreateUser { .. } => {}
        }
    }
    Sizes {
        source_customers: directory_customers,
        source_users: directory_users,
        managed_customers: customers.max(0) as usize,
        managed_users: users.max(0) as usize,
        refused: r.plan.refused.len(),
    }
}
