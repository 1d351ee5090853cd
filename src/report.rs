//! What a reconcile shows: text for people, JSON for programs, a progress
//! bar on a terminal, and the exit code.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::io::IsTerminal;

use serde::Serialize;

use crate::apply::{OperationReport, Outcome, Progress, SHUTTING_DOWN};
use crate::guard::BlockReason;
use crate::plan::render::{self, TextStyle};
use crate::plan::Plan;
use crate::run::Reconcile;

/// Exit codes (README, "Exit codes").
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const CHANGES_PENDING: i32 = 2;
    pub const BLOCKED: i32 = 3;
    pub const PARTIAL_FAILURE: i32 = 4;
    /// Stopped by SIGTERM or SIGINT: the operations in flight finished, the
    /// rest were skipped (or nothing was planned yet); the next run converges.
    pub const INTERRUPTED: i32 = 5;
    /// `dirsync apply`: the saved plan no longer holds (a record it would
    /// touch changed on the platform, or the config changed); nothing was sent.
    pub const STALE_PLAN: i32 = 6;
}

/// The exit code of `dirsync plan` (or `sync --dry-run`).
pub fn plan_exit_code(r: &Reconcile) -> i32 {
    if !r.blocked.is_empty() {
        exit::BLOCKED
    } else if r.plan.operations.is_empty() && r.plan.drift.is_empty() && r.plan.conflicts.is_empty()
    {
        exit::OK
    } else {
        exit::CHANGES_PENDING
    }
}

/// The exit code of `dirsync sync`.
pub fn sync_exit_code(r: &Reconcile) -> i32 {
    if !r.blocked.is_empty() {
        return exit::BLOCKED;
    }
    if r.report
        .as_ref()
        .is_some_and(|rep| rep.stopped.as_deref() == Some(SHUTTING_DOWN))
    {
        return exit::INTERRUPTED;
    }
    let failed = r
        .report
        .as_ref()
        .is_some_and(|rep| rep.failed() > 0 || rep.stopped.is_some());
    if failed || !r.plan.conflicts.is_empty() {
        exit::PARTIAL_FAILURE
    } else {
        exit::OK
    }
}

/// The plan (and the outcomes, after an apply) as text.
pub fn text(r: &Reconcile) -> String {
    let mut out = plan_text(&r.plan, &r.blocked);
    out.push_str(&outcome_text(r));
    out
}

/// The plan, and what blocked it (each limit with the one thing that lifts
/// it): what `sync` shows before it changes anything.
pub fn plan_text(plan: &Plan, blocked: &[BlockReason]) -> String {
    plan_text_styled(plan, blocked, TextStyle::default())
}

/// [`plan_text`] as `style` says: on a terminal, a legend, the operations
/// grouped by customer, and colour unless `NO_COLOR` is set.
pub fn plan_text_styled(plan: &Plan, blocked: &[BlockReason], style: TextStyle) -> String {
    let mut out = render::text_styled(plan, style);
    if blocked.iter().all(BlockReason::withholds_deletes_only) && !blocked.is_empty() {
        out.push_str("\nDELETES WITHHELD: the deletes above are not sent this run (creates and updates are), because:\n");
        for reason in blocked {
            let _ = writeln!(out, "  x {reason}\n    to lift: {}", reason.remedy());
        }
    } else if !blocked.is_empty() {
        out.push_str("\nBLOCKED: nothing was sent. The plan above stays staged until:\n");
        for reason in blocked {
            let _ = writeln!(out, "  x {reason}\n    to lift: {}", reason.remedy());
        }
    }
    if style.colour {
        out = render::colourize(&out);
    }
    out
}

/// After the plan: what was applied and what was not, and the requests.
pub fn outcome_text(r: &Reconcile) -> String {
    let mut out = String::new();
    if let Some(report) = &r.report {
        let mut by_outcome: BTreeMap<&str, usize> = BTreeMap::new();
        for op in &report.operations {
            *by_outcome.entry(op.outcome.label()).or_insert(0) += 1;
        }
        let failures: Vec<&OperationReport> = report
            .operations
            .iter()
            .filter(|o| !o.outcome.succeeded())
            .collect();
        if !failures.is_empty() {
            out.push_str("\nNot applied:\n");
            for f in failures {
                let why = match &f.outcome {
                    Outcome::Failed { error } => error.clone(),
                    Outcome::Skipped { reason } => format!("skipped: {reason}"),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "  ! {} {} {}: {why}",
                    f.operation.action(),
                    f.operation.kind(),
                    f.operation.external_id()
                );
            }
        }
        if let Some(stopped) = &report.stopped {
            let _ = writeln!(out, "\nThe run stopped early: {stopped}");
        }
        let parts: Vec<String> = by_outcome.iter().map(|(k, v)| format!("{v} {k}")).collect();
        if !report.operations.is_empty() {
            let _ = writeln!(out, "Applied: {}.", parts.join(", "));
        }
    }
    let _ = writeln!(
        out,
        "({} requests to the platform, {} throttled, {} ms)",
        r.requests.sent, r.requests.throttled, r.duration_ms
    );
    out
}

/// Outcome counts by kind, action and outcome.
type OutcomeCounts = BTreeMap<String, BTreeMap<String, BTreeMap<String, usize>>>;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonOutput<'a> {
    schema_version: u32,
    mode: &'a str,
    summary: String,
    /// Operations per kind and action: `{"user": {"create": 2}}`.
    counts: serde_json::Value,
    /// After an apply: outcomes per kind, action and outcome.
    outcomes: Option<OutcomeCounts>,
    /// Records the source or the mapping refused (listed in `plan.refused`).
    refused_records: usize,
    #[serde(flatten)]
    reconcile: &'a Reconcile,
}

/// The reconcile as JSON (schema in the README, "JSON output").
pub fn json(r: &Reconcile, mode: &str) -> String {
    let outcomes = r.report.as_ref().map(|rep| {
        let mut m = OutcomeCounts::new();
        for op in &rep.operations {
            *m.entry(op.operation.kind().to_owned())
                .or_default()
                .entry(op.operation.action().to_owned())
                .or_default()
                .entry(op.outcome.label().to_owned())
                .or_insert(0) += 1;
        }
        m
    });
    let out = JsonOutput {
        schema_version: 1,
        mode,
        summary: render::summary_line(&r.plan),
        counts: render::counts_json(&r.plan),
        outcomes,
        refused_records: r.plan.refused.len(),
        reconcile: r,
    };
    serde_json::to_string_pretty(&out)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot render JSON: {e}\"}}"))
}

/// A progress bar on a terminal for applies with many operations; one log
/// line per operation otherwise.
#[derive(Default)]
pub struct ApplyProgress {
    bar: std::sync::OnceLock<Option<indicatif::ProgressBar>>,
}

impl ApplyProgress {
    pub fn finish(&self) {
        if let Some(Some(bar)) = self.bar.get() {
            bar.finish_and_clear();
        }
    }
}

impl Progress for ApplyProgress {
    fn started(&self, operations: usize) {
        let _ = self.bar.set(
            (std::io::stderr().is_terminal() && operations >= 20).then(|| {
                let bar = indicatif::ProgressBar::new(operations as u64);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} operations ({eta} left)",
                ) {
                    bar.set_style(style);
                }
                bar
            }),
        );
    }

    fn finished(&self, report: &OperationReport) {
        match self.bar.get() {
            Some(Some(bar)) => bar.inc(1),
            // The same line as the daemon's (action, externalId, who, outcome).
            _ => crate::daemon::logging::log_operation(report),
        }
    }
}
