//! `dirsync apply -c CONFIG FILE`: exactly the saved plan's operations, or
//! nothing. It never plans and never reads the source: it checks the file
//! and the config's digest, checks the guards again (pure: a blocked plan
//! exits 3 before anything is read; withheld deletes stay withheld), takes
//! the state lock, re-reads what the operations it would send touch
//! ([`super::verify`]) and refuses a stale plan (exit 6), then applies
//! through [`crate::apply::apply`] and reports as `sync` does.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::verify::{self, Reads};
use super::{load_config, SavedPlan, SavedPlanError};
use crate::apply::{apply, ApplyOptions, ApplyReport};
use crate::config::{Config, Policy};
use crate::daemon::StateLock;
use crate::guard::{self, BlockReason};
use crate::model::{PlatformCustomer, PlatformId, Snapshot};
use crate::plan::Plan;
use crate::platform::{PlatformError, StopReason};
use crate::report::{self, exit, ApplyProgress};
use crate::run::{Connection, Reconcile, Requests};

/// Applies the plan saved in `plan_path` and prints the report (`json`:
/// the JSON report, mode `apply`; else text). Returns `sync`'s exit code;
/// a stale plan or a changed config is [`SavedPlanError`] with exit 6.
/// `print` writes to standard output.
pub async fn apply_file(
    config_path: &Path,
    plan_path: &Path,
    json: bool,
    print: &dyn Fn(&str),
    cancel: &CancellationToken,
) -> Result<i32, SavedPlanError> {
    let (config, digest) = load_config(config_path)?;
    let saved = SavedPlan::load(plan_path)?;
    saved.check_config(&digest, config_path, plan_path)?;
    if saved.plan.is_empty() {
        if json {
            eprintln!("dirsync: nothing to apply");
        } else {
            print("nothing to apply\n");
        }
        return Ok(exit::OK);
    }
    // The guards first (pure): a plan they block is refused before
    // anything is read, and the deletes they withhold are neither sent nor
    // checked.
    let blocked = guards(&saved, &config.policy);
    let Some(send) = guard::sendable(&saved.plan, &blocked) else {
        let outcome = Reconcile {
            platform_read: None,
            plan: saved.plan.clone(),
            blocked,
            allow_deletes: saved.allow_deletes,
            report: None,
            requests: Requests {
                sent: 0,
                throttled: 0,
            },
            duration_ms: 0,
        };
        if json {
            print(&format!("{}\n", report::json(&outcome, "apply")));
        } else {
            print(&report::plan_text(&outcome.plan, &outcome.blocked));
        }
        tracing::warn!(plan = %plan_path.display(), "The saved plan is blocked by a safety limit; nothing was sent.");
        return Ok(report::sync_exit_code(&outcome));
    };
    let checked = only(&saved, &send);
    // Never beside the daemon or a sync: held until this returns.
    let _lock = StateLock::acquire(&config.state_dir)?;
    let connection = Connection::open(&config.platform).await?;
    let result = apply_saved(
        &config,
        &connection,
        &saved,
        &checked,
        blocked,
        plan_path,
        json,
        print,
        cancel,
    )
    .await;
    connection.close().await?;
    result
}

/// The part of `saved` that `send` (a subsequence of its operations, as
/// [`guard::sendable`] leaves them) holds: those operations, their record
/// states and the roles they name.
pub(super) fn only(saved: &SavedPlan, send: &Plan) -> SavedPlan {
    let mut records = Vec::with_capacity(send.operations.len());
    let mut next = send.operations.iter().peekable();
    for (op, state) in saved.plan.operations.iter().zip(&saved.records) {
        if next.peek() == Some(&op) {
            next.next();
            records.push(state.clone());
        }
    }
    let named: BTreeSet<&PlatformId> = super::records::role_ids(send).collect();
    SavedPlan {
        format: saved.format.clone(),
        version: saved.version,
        dirsync_version: saved.dirsync_version.clone(),
        created_at: saved.created_at,
        allow_deletes: saved.allow_deletes,
        config_digest: saved.config_digest.clone(),
        config_path: saved.config_path.clone(),
        plan: send.clone(),
        blocked: saved.blocked.clone(),
        records,
        roles: saved
            .roles
            .iter()
            .filter(|r| named.contains(&r.id))
            .cloned()
            .collect(),
    }
}

/// Re-reads what `checked` (the sendable part of `saved`) touches, refuses
/// it when stale, else applies it and reports on the whole of `saved`.
#[allow(clippy::too_many_arguments)]
async fn apply_saved(
    config: &Config,
    connection: &Connection,
    saved: &SavedPlan,
    checked: &SavedPlan,
    blocked: Vec<BlockReason>,
    plan_path: &Path,
    json: bool,
    print: &dyn Fn(&str),
    cancel: &CancellationToken,
) -> Result<i32, SavedPlanError> {
    let started = Instant::now();
    let client = &connection.client;
    client.stop_when(cancel);
    let before = client.stats();
    let reads = Reads::of(checked);
    let current = async {
        let who = client.authenticated_user().await?;
        tracing::debug!(user = %who.email, records = reads.count(), "Authenticated; re-reading what the saved plan touches.");
        verify::read(client, &reads, config.platform.max_concurrency).await
    }
    .await
    .map_err(interrupted)?;
    let stale = verify::compare(checked, &current);
    if !stale.is_empty() {
        tracing::warn!(
            plan = %plan_path.display(),
            stale = stale.len(),
            "The saved plan is stale: records it would touch changed since it was made; nothing was sent."
        );
        return Err(SavedPlanError::Stale {
            plan: plan_path.to_path_buf(),
            records: stale,
        });
    }
    if !json {
        print(&report::plan_text(&saved.plan, &blocked));
    }
    // User creates find their customers' ids here; every one was re-read
    // and found unchanged.
    let snapshot = Snapshot {
        customers: current
            .customers
            .values()
            .flatten()
            .map(PlatformCustomer::from)
            .collect(),
        users: Vec::new(),
        roles: current.roles.clone(),
        holdings: Default::default(),
    };
    let progress = ApplyProgress::default();
    let report = if checked.plan.is_empty() {
        ApplyReport::default()
    } else {
        let options = ApplyOptions {
            concurrency: config.policy.apply_concurrency
                * connection.client.mutations_per_request(),
            cancel: cancel.clone(),
        };
        apply(&checked.plan, &snapshot, client, &options, &progress).await
    };
    progress.finish();
    let after = client.stats();
    let outcome = Reconcile {
        platform_read: None,
        plan: saved.plan.clone(),
        blocked,
        allow_deletes: saved.allow_deletes,
        report: Some(report),
        requests: Requests {
            sent: after.requests - before.requests,
            throttled: after.throttled - before.throttled,
        },
        duration_ms: started.elapsed().as_millis() as u64,
    };
    crate::state::record_run(config, crate::state::RunMode::Apply, &outcome);
    if json {
        print(&format!("{}\n", report::json(&outcome, "apply")));
    } else {
        print(&report::outcome_text(&outcome));
    }
    let code = report::sync_exit_code(&outcome);
    tracing::info!(
        mode = "apply",
        plan = %plan_path.display(),
        operations = outcome.plan.operations.len(),
        blocked = !outcome.blocked.is_empty(),
        failed = outcome.report.as_ref().map_or(0, |r| r.failed()),
        requests = outcome.requests.sent,
        throttled = outcome.requests.throttled,
        duration_ms = outcome.duration_ms,
        exit_code = code,
        "Run finished."
    );
    Ok(code)
}

/// The guards on the saved plan, as `guard::check_source` made them: the
/// withheld deletes recorded at plan time (they come from the source read,
/// which apply does not repeat) first, then the budgets and source sizes
/// checked again, lifted by the recorded `--allow-deletes` (or when deletes
/// are withheld anyway, so not sent).
pub fn guards(saved: &SavedPlan, policy: &Policy) -> Vec<BlockReason> {
    let mut blocked: Vec<BlockReason> = saved
        .blocked
        .iter()
        .filter(|r| r.withholds_deletes_only())
        .cloned()
        .collect();
    let lift_budgets = saved.allow_deletes || !blocked.is_empty();
    blocked.extend(guard::check(&saved.plan, policy, lift_budgets));
    blocked
}

/// A read not sent because the run is shutting down is the run's
/// interruption, not a platform failure.
fn interrupted(e: PlatformError) -> SavedPlanError {
    if e.stop_reason() == Some(StopReason::ShuttingDown) {
        SavedPlanError::Interrupted
    } else {
        SavedPlanError::Platform(e)
    }
}
