//! `dirsync plan --out FILE`: the plan, made as `dirsync plan` makes it
//! ([`crate::run::prepare`]), shown as `plan` shows it, and saved with what
//! it was computed from for `dirsync apply`.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::{load_config, records, SavedPlan, SavedPlanError, FORMAT, VERSION};
use crate::config::Config;
use crate::report;
use crate::run::{prepare, Connection, Reconcile};

/// Plans, writes the plan to `out` and prints it (`json`: the JSON report,
/// else the plan text); returns `plan`'s exit code (0 in sync, 2 changes
/// pending, 3 blocked). `print` writes to standard output.
pub async fn plan_to_file(
    config_path: &Path,
    out: &Path,
    allow_deletes: bool,
    json: bool,
    print: &dyn Fn(&str),
    cancel: &CancellationToken,
) -> Result<i32, SavedPlanError> {
    let (config, digest) = load_config(config_path)?;
    if allow_deletes {
        tracing::warn!("--allow-deletes: recorded in the saved plan; dirsync apply lifts the delete budgets for it (the source checks still hold).");
        eprintln!("dirsync: WARNING: --allow-deletes is recorded in the saved plan: dirsync apply lifts the delete budgets for it.");
    }
    let connection = Connection::open(&config.platform).await?;
    let result = save(
        &config,
        config_path,
        &digest,
        &connection,
        allow_deletes,
        out,
        cancel,
    )
    .await;
    connection.close().await?;
    let outcome = result?;
    let saved_note = format!(
        "Saved the plan to {}. Review it, then: dirsync apply -c {} {}\n",
        out.display(),
        config_path.display(),
        out.display()
    );
    if json {
        print(&format!("{}\n", report::json(&outcome, "plan")));
        eprint!("dirsync: {saved_note}");
    } else {
        print(&report::plan_text(&outcome.plan, &outcome.blocked));
        print(&report::outcome_text(&outcome));
        print(&saved_note);
    }
    let code = report::plan_exit_code(&outcome);
    tracing::info!(
        mode = "plan",
        out = %out.display(),
        operations = outcome.plan.operations.len(),
        blocked = !outcome.blocked.is_empty(),
        requests = outcome.requests.sent,
        duration_ms = outcome.duration_ms,
        exit_code = code,
        "Plan saved."
    );
    Ok(code)
}

/// Makes the plan and writes it with its record states; nothing is sent.
async fn save(
    config: &Config,
    config_path: &Path,
    digest: &str,
    connection: &Connection,
    allow_deletes: bool,
    out: &Path,
    cancel: &CancellationToken,
) -> Result<Reconcile, SavedPlanError> {
    let prepared = prepare(config, connection, allow_deletes, cancel).await?;
    let (states, roles) = records::capture(&prepared.plan, &prepared.view.snapshot)
        .map_err(SavedPlanError::Unrecorded)?;
    let saved = SavedPlan {
        format: FORMAT.to_owned(),
        version: VERSION,
        dirsync_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: chrono::Utc::now(),
        allow_deletes,
        config_digest: digest.to_owned(),
        config_path: config_path.to_path_buf(),
        plan: prepared.plan.clone(),
        blocked: prepared.blocked.clone(),
        records: states,
        roles,
    };
    saved.write(out)?;
    Ok(prepared.without_apply(connection))
}
