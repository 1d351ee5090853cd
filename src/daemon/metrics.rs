//! The daemon's metrics (`GET /metrics`, the Prometheus text format through
//! the `prometheus-client` crate), a health check (`GET /healthz`) that
//! fails when the last successful run is older than
//! `metrics.health_max_age_secs`, and the same metrics as a file for
//! node_exporter's textfile collector (`metrics.textfile`), written
//! atomically after every run of `dirsync run` and of `dirsync sync`.
//!
//! Every series whose labels are known in advance (runs by result, blocked
//! runs by reason, operations by kind, action and outcome, skipped ticks)
//! exists at 0 from the start, so `rate()` and `increase()` see the first
//! run. Timestamps and the sizes of the last plan are left out until there
//! is a value.
//!
//! `dirsync sync` is a process per run: its counters are carried from one
//! run to the next in `state_dir/metrics.json` ([`SavedCounters`]), so the
//! textfile's counters only go up, and the last success is remembered
//! across failed runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use super::outcome::{RunOutcome, RunResult, BLOCK_LABELS};

/// Why a tick did not start a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// The previous run was still going.
    Running,
    /// An authentication failure: waiting for a reload or the back-off.
    AuthBackoff,
}

impl SkipReason {
    pub const ALL: [SkipReason; 2] = [SkipReason::Running, SkipReason::AuthBackoff];

    pub fn label(self) -> &'static str {
        match self {
            SkipReason::Running => "running",
            SkipReason::AuthBackoff => "auth_backoff",
        }
    }
}

/// Every (kind, action) an [`Operation`](crate::plan::Operation) can have.
pub const OPERATIONS: [(&str, &str); 9] = [
    ("customer", "create"),
    ("customer", "update"),
    ("customer", "adopt"),
    ("customer", "delete"),
    ("user", "create"),
    ("user", "update"),
    ("user", "adopt"),
    ("user", "recreate"),
    ("user", "delete"),
];

/// Every [`Outcome::label`](crate::apply::Outcome::label).
pub const OUTCOMES: [&str; 4] = ["applied", "alreadyDone", "failed", "skipped"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    kind: &'static str,
    action: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// A series without labels that is absent until it has a value: a time or
/// a duration ([`Optional`]), or a count ([`OptionalCount`]).
type Optional = Family<Vec<(&'static str, &'static str)>, Gauge<f64, AtomicU64>>;
type OptionalCount = Family<Vec<(&'static str, &'static str)>, Gauge>;
const NO_LABELS: Vec<(&str, &str)> = Vec::new();

fn set_count(g: &OptionalCount, value: usize) {
    g.get_or_create(&NO_LABELS)
        .set(i64::try_from(value).unwrap_or(i64::MAX));
}

fn set(g: &Optional, value: Option<f64>) {
    match value {
        Some(v) => {
            g.get_or_create(&NO_LABELS).set(v);
        }
        None => {
            g.remove(&NO_LABELS);
        }
    }
}

fn value_of(g: &Optional) -> Option<f64> {
    g.get(&NO_LABELS).map(|v| v.get())
}

fn unix(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn from_unix(secs: f64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis((secs * 1000.0).round() as i64)
}

/// The handles the registry encodes (each is an `Arc` inside).
#[derive(Default)]
struct Series {
    last_run_start: Optional,
    last_run_end: Optional,
    last_success: Optional,
    last_run_duration: Optional,
    next_run: Optional,
    running: Gauge,
    runs: Family<ResultLabel, Counter>,
    blocked: Family<ReasonLabel, Counter>,
    operations: Family<OperationLabels, Counter>,
    requests: Counter,
    throttled: Counter,
    drift: OptionalCount,
    conflicts: OptionalCount,
    managed_customers: OptionalCount,
    managed_users: OptionalCount,
    source_customers: OptionalCount,
    source_users: OptionalCount,
    refused: OptionalCount,
    skipped: Family<ReasonLabel, Counter>,
    auth_backoff: Gauge,
    reloads_failed: Counter,
    build_info: Family<BuildLabels, Gauge>,
}

#[derive(Debug)]
struct HealthState {
    started: DateTime<Utc>,
    max_age: Duration,
}

/// Counters and gauges the scheduler (or a one-shot sync) updates.
pub struct Metrics {
    registry: Registry,
    series: Series,
    health: Mutex<HealthState>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The health check's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub healthy: bool,
    pub message: String,
}

/// The counters a one-shot `dirsync sync` carries to its next run, and the
/// last success (kept in `state_dir/metrics.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SavedCounters {
    pub runs: std::collections::BTreeMap<String, u64>,
    pub blocked: std::collections::BTreeMap<String, u64>,
    /// `kind/action/outcome` -> count.
    pub operations: std::collections::BTreeMap<String, u64>,
    pub requests: u64,
    pub throttled: u64,
    /// Unix time, seconds.
    pub last_success: Option<f64>,
}

/// Why the textfile or the saved counters could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TextfileError {
    #[error("cannot write {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot render the metrics: {0}")]
    Render(std::fmt::Error),
}

impl Metrics {
    /// `started`: when the daemon started; the health check counts from it
    /// until the first successful run.
    pub fn new(started: DateTime<Utc>, health_max_age: Duration) -> Metrics {
        let series = Series::default();
        for result in RunResult::ALL {
            series.runs.get_or_create_owned(&ResultLabel {
                result: result.label(),
            });
        }
        for reason in BLOCK_LABELS {
            series.blocked.get_or_create_owned(&ReasonLabel { reason });
        }
        for (kind, action) in OPERATIONS {
            for outcome in OUTCOMES {
                series.operations.get_or_create_owned(&OperationLabels {
                    kind,
                    action,
                    outcome,
                });
            }
        }
        for reason in SkipReason::ALL {
            series.skipped.get_or_create_owned(&ReasonLabel {
                reason: reason.label(),
            });
        }
        series
            .build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);

        let mut r = Registry::default();
        let s = &series;
        r.register(
            "dirsync_build_info",
            "Always 1; the version label says which dirsync is running",
            s.build_info.clone(),
        );
        r.register(
            "dirsync_last_run_start_timestamp_seconds",
            "When the last run started (Unix time)",
            s.last_run_start.clone(),
        );
        r.register(
            "dirsync_last_run_end_timestamp_seconds",
            "When the last run ended (Unix time)",
            s.last_run_end.clone(),
        );
        r.register(
            "dirsync_last_success_timestamp_seconds",
            "When the last successful run ended (Unix time)",
            s.last_success.clone(),
        );
        r.register(
            "dirsync_last_run_duration_seconds",
            "How long the last run took",
            s.last_run_duration.clone(),
        );
        r.register(
            "dirsync_next_run_timestamp_seconds",
            "When the next run is due (Unix time)",
            s.next_run.clone(),
        );
        r.register(
            "dirsync_running",
            "1 while a run is in progress",
            s.running.clone(),
        );
        r.register(
            "dirsync_runs",
            "Runs by result (ok, partial, blocked by a safety limit, failed, interrupted by a shutdown)",
            s.runs.clone(),
        );
        r.register(
            "dirsync_runs_blocked",
            "Blocked runs by the safety limit that blocked them (a run blocked by two counts for both)",
            s.blocked.clone(),
        );
        r.register(
            "dirsync_operations",
            "Operations sent, by kind, action and outcome",
            s.operations.clone(),
        );
        r.register(
            "dirsync_requests",
            "Requests sent to the platform",
            s.requests.clone(),
        );
        r.register(
            "dirsync_requests_throttled",
            "Requests the platform answered 429 (Too Many Requests)",
            s.throttled.clone(),
        );
        r.register(
            "dirsync_drift",
            "Drift items in the last plan (changes the platform cannot make: they need a decision)",
            s.drift.clone(),
        );
        r.register(
            "dirsync_conflicts",
            "Conflicts in the last plan (creates the platform would refuse)",
            s.conflicts.clone(),
        );
        r.register(
            "dirsync_managed_customers",
            "Managed customers on the platform after the last run",
            s.managed_customers.clone(),
        );
        r.register(
            "dirsync_managed_users",
            "Managed customer users on the platform after the last run",
            s.managed_users.clone(),
        );
        r.register(
            "dirsync_source_customers",
            "Customers the source gave in the last run",
            s.source_customers.clone(),
        );
        r.register(
            "dirsync_source_users",
            "Users the source gave in the last run",
            s.source_users.clone(),
        );
        r.register(
            "dirsync_refused_records",
            "Records the source or the mapping refused in the last run",
            s.refused.clone(),
        );
        r.register(
            "dirsync_ticks_skipped",
            "Scheduled runs not started, by reason (a run still going, the authentication back-off)",
            s.skipped.clone(),
        );
        r.register(
            "dirsync_auth_backoff",
            "1 while mutations are paused after an authentication failure",
            s.auth_backoff.clone(),
        );
        r.register(
            "dirsync_config_reloads_failed",
            "Reloads refused because the new configuration was invalid",
            s.reloads_failed.clone(),
        );
        Metrics {
            registry: r,
            series,
            health: Mutex::new(HealthState {
                started,
                max_age: health_max_age,
            }),
        }
    }

    fn health_state(&self) -> MutexGuard<'_, HealthState> {
        // A panic while holding the lock leaves plain values behind: keep going.
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_health_max_age(&self, max_age: Duration) {
        self.health_state().max_age = max_age;
    }

    pub fn run_started(&self, at: DateTime<Utc>) {
        set(&self.series.last_run_start, Some(unix(at)));
        self.series.running.set(1);
    }

    pub fn run_finished(&self, ended: DateTime<Utc>, duration: Duration, outcome: &RunOutcome) {
        let s = &self.series;
        s.running.set(0);
        set(&s.last_run_end, Some(unix(ended)));
        set(&s.last_run_duration, Some(duration.as_secs_f64()));
        s.runs
            .get_or_create(&ResultLabel {
                result: outcome.result.label(),
            })
            .inc();
        for b in &outcome.blocked {
            s.blocked
                .get_or_create(&ReasonLabel { reason: b.label })
                .inc();
        }
        if outcome.succeeded() {
            set(&s.last_success, Some(unix(ended)));
        }
        for ((kind, action, result), n) in &outcome.counts.outcomes {
            s.operations
                .get_or_create(&OperationLabels {
                    kind,
                    action,
                    outcome: result,
                })
                .inc_by(*n);
        }
        s.requests.inc_by(outcome.counts.requests);
        s.throttled.inc_by(outcome.counts.throttled);
        // What the last plan saw; a run that made no plan leaves them as they were.
        if let Some(sizes) = outcome.counts.sizes {
            set_count(&s.drift, outcome.counts.drift);
            set_count(&s.conflicts, outcome.counts.conflicts);
            set_count(&s.managed_customers, sizes.managed_customers);
            set_count(&s.managed_users, sizes.managed_users);
            set_count(&s.source_customers, sizes.source_customers);
            set_count(&s.source_users, sizes.source_users);
            set_count(&s.refused, sizes.refused);
        }
    }

    pub fn tick_skipped(&self, reason: SkipReason) {
        self.series
            .skipped
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc();
    }

    pub fn set_auth_backoff(&self, on: bool) {
        self.series.auth_backoff.set(i64::from(on));
    }

    pub fn set_next_run(&self, at: Option<DateTime<Utc>>) {
        set(&self.series.next_run, at.map(unix));
    }

    pub fn reload_failed(&self) {
        self.series.reloads_failed.inc();
    }

    /// Runs by result so far.
    pub fn runs(&self, result: RunResult) -> u64 {
        self.series
            .runs
            .get(&ResultLabel {
                result: result.label(),
            })
            .map_or(0, |c| c.get())
    }

    /// Ticks skipped for `reason` so far.
    pub fn skipped(&self, reason: SkipReason) -> u64 {
        self.series
            .skipped
            .get(&ReasonLabel {
                reason: reason.label(),
            })
            .map_or(0, |c| c.get())
    }

    /// Healthy while the last successful run (or, before the first one, the
    /// daemon's start) is at most `health_max_age` old.
    pub fn health(&self, now: DateTime<Utc>) -> Health {
        let h = self.health_state();
        let (since, what) = match value_of(&self.series.last_success).and_then(from_unix) {
            Some(t) => (t, "the last successful run"),
            None => (h.started, "the start, with no successful run yet,"),
        };
        let age = (now - since).to_std().unwrap_or_default();
        let healthy = age <= h.max_age;
        let message = format!(
            "{}: {what} was {} s ago (limit {} s)\n",
            if healthy { "ok" } else { "unhealthy" },
            age.as_secs(),
            h.max_age.as_secs()
        );
        Health { healthy, message }
    }

    /// The Prometheus text exposition (format 0.0.4), which Prometheus and
    /// node_exporter's textfile collector both read.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug.
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "Cannot render the metrics.");
        }
        out
    }

    /// The counters (and the last success) to carry to the next one-shot run.
    pub fn saved_counters(&self) -> SavedCounters {
        let s = &self.series;
        let mut saved = SavedCounters {
            requests: s.requests.get(),
            throttled: s.throttled.get(),
            last_success: value_of(&s.last_success),
            ..SavedCounters::default()
        };
        for result in RunResult::ALL {
            saved
                .runs
                .insert(result.label().to_owned(), self.runs(result));
        }
        for reason in BLOCK_LABELS {
            let n = s
                .blocked
                .get(&ReasonLabel { reason })
                .map_or(0, |c| c.get());
            saved.blocked.insert(reason.to_owned(), n);
        }
        for (kind, action) in OPERATIONS {
            for outcome in OUTCOMES {
                let labels = OperationLabels {
                    kind,
                    action,
                    outcome,
                };
                let n = s.operations.get(&labels).map_or(0, |c| c.get());
                saved
                    .operations
                    .insert(format!("{kind}/{action}/{outcome}"), n);
            }
        }
        saved
    }

    /// Adds what an earlier run saved (labels this version does not know
    /// are dropped).
    pub fn restore(&self, saved: &SavedCounters) {
        let s = &self.series;
        for result in RunResult::ALL {
            if let Some(n) = saved.runs.get(result.label()) {
                s.runs
                    .get_or_create(&ResultLabel {
                        result: result.label(),
                    })
                    .inc_by(*n);
            }
        }
        for reason in BLOCK_LABELS {
            if let Some(n) = saved.blocked.get(reason) {
                s.blocked.get_or_create(&ReasonLabel { reason }).inc_by(*n);
            }
        }
        for (kind, action) in OPERATIONS {
            for outcome in OUTCOMES {
                if let Some(n) = saved.operations.get(&format!("{kind}/{action}/{outcome}")) {
                    s.operations
                        .get_or_create(&OperationLabels {
                            kind,
                            action,
                            outcome,
                        })
                        .inc_by(*n);
                }
            }
        }
        s.requests.inc_by(saved.requests);
        s.throttled.inc_by(saved.throttled);
        if let Some(t) = saved.last_success {
            set(&s.last_success, Some(t));
        }
    }

    /// Writes [`Metrics::render`] to `path` for node_exporter's textfile
    /// collector: into a temporary file beside it (not ending in `.prom`, so
    /// the collector never reads half a file), readable by all (the
    /// collector runs as another user), then renamed over `path`.
    pub fn write_textfile(&self, path: &Path) -> Result<(), TextfileError> {
        write_atomically(path, self.render().as_bytes(), 0o644)
    }
}

/// `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TextfileError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let failed = |error| TextfileError::Write {
        path: path.to_path_buf(),
        error,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".dirsync-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(failed)?;
    tmp.write_all(bytes).map_err(failed)?;
    tmp.as_file().sync_all().map_err(failed)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(failed)?;
    tmp.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}

/// The saved counters in `state_dir`; none when the file is missing or
/// unreadable (a warning: the counters start again from 0).
pub fn load_saved_counters(path: &Path) -> SavedCounters {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "Cannot read the saved metrics ({e}); the counters start again from 0.");
            SavedCounters::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SavedCounters::default(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "Cannot read the saved metrics ({e}); the counters start again from 0.");
            SavedCounters::default()
        }
    }
}

/// Saves `counters` to `path` (private to the service: mode 0600).
pub fn save_counters(path: &Path, counters: &SavedCounters) -> Result<(), TextfileError> {
    let json = serde_json::to_vec_pretty(counters).map_err(|e| TextfileError::Write {
        path: path.to_path_buf(),
        error: std::io::Error::other(e),
    })?;
    write_atomically(path, &json, 0o600)
}

#[derive(Clone)]
struct Served {
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

/// The HTTP endpoints: `GET /metrics` and `GET /healthz`.
pub fn router(metrics: Arc<Metrics>, clock: Arc<dyn Clock>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(health_page))
        .with_state(Served { metrics, clock })
}

async fn metrics_page(State(s): State<Served>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        s.metrics.render(),
    )
        .into_response()
}

async fn health_page(State(s): State<Served>) -> Response {
    let h = s.metrics.health(s.clock.now());
    let status = if h.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        h.message,
    )
        .into_response()
}

/// Serves the endpoints on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, clock))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::outcome::{Blocked, RunCounts, Sizes};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn outcome(result: RunResult) -> RunOutcome {
        let mut counts = RunCounts {
            requests: 12,
            throttled: 2,
            drift: 1,
            sizes: Some(Sizes {
                source_customers: 2,
                source_users: 5,
                managed_customers: 2,
                managed_users: 4,
                refused: 1,
            }),
            ..RunCounts::default()
        };
        counts.outcomes.insert(("user", "create", "applied"), 3);
        counts.actions.insert("create", 3);
        RunOutcome {
            result,
            counts,
            error: None,
            auth_failed: false,
            blocked: if result == RunResult::Blocked {
                vec![Blocked {
                    label: "user_delete_budget",
                    text: "2 user deletes ...".to_owned(),
                }]
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn every_series_is_rendered_with_its_type_and_counts_add_up() {
        let m = Metrics::new(t("2024-01-01T00:00:00Z"), Duration::from_secs(3600));
        let before = m.render();
        for line in [
            "# TYPE dirsync_runs_total counter\n",
            "dirsync_runs_total{result=\"blocked\"} 0\n",
            "dirsync_runs_blocked_total{reason=\"user_delete_budget\"} 0\n",
            "dirsync_operations_total{kind=\"user\",action=\"recreate\",outcome=\"failed\"} 0\n",
            "dirsync_operations_total{kind=\"customer\",action=\"delete\",outcome=\"applied\"} 0\n",
            &format!(
                "dirsync_build_info{{version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            ),
            "# TYPE dirsync_build_info gauge\n",
            "dirsync_running 0\n",
        ] {
            assert!(before.contains(line), "{line:?} missing from\n{before}");
        }
        assert_eq!(
            before.matches("dirsync_operations_total{").count(),
            OPERATIONS.len() * OUTCOMES.len(),
            "every operation series at 0 before the first run:\n{before}"
        );
        for absent in [
            "dirsync_last_success_timestamp_seconds",
            "dirsync_managed_users",
            "dirsync_drift",
        ] {
            assert!(
                !before.contains(absent),
                "no {absent} before the first run: {before}"
            );
        }
        m.run_started(t("2024-01-01T00:01:00Z"));
        m.run_finished(
            t("2024-01-01T00:01:02.5Z"),
            Duration::from_millis(2500),
            &outcome(RunResult::Ok),
        );
        m.run_finished(
            t("2024-01-01T00:02:01Z"),
            Duration::from_secs(1),
            &outcome(RunResult::Blocked),
        );
        m.tick_skipped(SkipReason::Running);
        let text = m.render();
        for line in [
            "dirsync_last_run_start_timestamp_seconds 1704067260",
            "dirsync_last_run_end_timestamp_seconds 1704067321",
            "dirsync_last_success_timestamp_seconds 1704067262.5\n",
            "dirsync_last_run_duration_seconds 1",
            "dirsync_runs_total{result=\"ok\"} 1\n",
            "dirsync_runs_total{result=\"blocked\"} 1\n",
            "dirsync_runs_total{result=\"failed\"} 0\n",
            "dirsync_runs_blocked_total{reason=\"user_delete_budget\"} 1\n",
            "dirsync_runs_blocked_total{reason=\"shrink\"} 0\n",
            "dirsync_operations_total{kind=\"user\",action=\"create\",outcome=\"applied\"} 6\n",
            "dirsync_requests_total 24\n",
            "dirsync_requests_throttled_total 4\n",
            "dirsync_drift 1",
            "dirsync_managed_users 4",
            "dirsync_managed_customers 2",
            "dirsync_source_users 5",
            "dirsync_refused_records 1",
            "dirsync_ticks_skipped_total{reason=\"running\"} 1\n",
            "dirsync_ticks_skipped_total{reason=\"auth_backoff\"} 0\n",
            "dirsync_auth_backoff 0\n",
            "# TYPE dirsync_runs_total counter\n",
            "# TYPE dirsync_last_run_duration_seconds gauge\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn health_fails_when_the_last_success_is_older_than_the_limit() {
        let m = Metrics::new(t("2024-01-01T00:00:00Z"), Duration::from_secs(600));
        assert!(
            m.health(t("2024-01-01T00:09:00Z")).healthy,
            "grace from the start"
        );
        let h = m.health(t("2024-01-01T00:11:00Z"));
        assert!(!h.healthy);
        assert!(
            h.message.starts_with(
                "unhealthy: the start, with no successful run yet, was 660 s ago (limit 600 s)"
            ),
            "{}",
            h.message
        );
        m.run_finished(
            t("2024-01-01T00:12:00Z"),
            Duration::from_secs(1),
            &outcome(RunResult::Ok),
        );
        assert!(m.health(t("2024-01-01T00:20:00Z")).healthy);
        // A failed run does not count as a success.
        m.run_finished(
            t("2024-01-01T00:21:00Z"),
            Duration::from_secs(1),
            &outcome(RunResult::Failed),
        );
        assert!(m.health(t("2024-01-01T00:22:00Z")).healthy);
        let h = m.health(t("2024-01-01T00:22:01Z"));
        assert!(!h.healthy, "{}", h.message);
        assert!(
            h.message.contains("the last successful run was 601 s ago"),
            "{}",
            h.message
        );
    }

    #[test]
    fn saved_counters_carry_over_to_the_next_process() {
        let first = Metrics::new(t("2024-01-01T00:00:00Z"), Duration::from_secs(600));
        first.run_finished(
            t("2024-01-01T00:01:00Z"),
            Duration::from_secs(1),
            &outcome(RunResult::Ok),
        );
        first.run_finished(
            t("2024-01-01T00:02:00Z"),
            Duration::from_secs(1),
            &outcome(RunResult::Blocked),
        );
        let saved = first.saved_counters();
        let json = serde_json::to_string(&saved).unwrap();
        let second = Metrics::new(t("2024-01-01T00:05:00Z"), Duration::from_secs(600));
        second.restore(&serde_json::from_str(&json).unwrap());
        second.run_finished(
            t("2024-01-01T00:06:00Z"),
            Duration::from_secs(1),
            &outcome(RunResult::Failed),
        );
        let text = second.render();
        for line in [
            "dirsync_runs_total{result=\"ok\"} 1\n",
            "dirsync_runs_total{result=\"blocked\"} 1\n",
            "dirsync_runs_total{result=\"failed\"} 1\n",
            "dirsync_runs_blocked_total{reason=\"user_delete_budget\"} 1\n",
            "dirsync_operations_total{kind=\"user\",action=\"create\",outcome=\"applied\"} 9\n",
            "dirsync_requests_total 36\n",
            "dirsync_last_success_timestamp_seconds 1704067260",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn the_textfile_is_replaced_whole_and_readable_by_the_collector() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dirsync.prom");
        let m = Metrics::new(t("2024-01-01T00:00:00Z"), Duration::from_secs(600));
        m.write_textfile(&path).unwrap();
        let first = std::fs::metadata(&path).unwrap();
        m.run_finished(
            t("2024-01-01T00:01:00Z"),
            Duration::from_secs(1),
            &outcome(RunResult::Ok),
        );
        m.write_textfile(&path).unwrap();
        let second = std::fs::metadata(&path).unwrap();
        assert_ne!(first.ino(), second.ino(), "renamed over, not rewritten");
        assert_eq!(second.permissions().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), m.render());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["dirsync.prom"], "no temporary file left");
        let err = m
            .write_textfile(&dir.path().join("missing/dirsync.prom"))
            .unwrap_err();
        assert!(err.to_string().contains("missing/dirsync.prom"), "{err}");
    }

    #[test]
    fn the_operation_list_names_every_kind_and_action_the_plan_has() {
        use crate::model::PlatformId;
        use crate::plan::{CustomerCreate, Operation, UserCreate};
        let id = || PlatformId::from("x");
        let user = UserCreate {
            external_id: "u".into(),
            customer_external_id: "c".into(),
            email: "a@b.c".into(),
            name: None,
            phone: None,
            role: "Member".into(),
            role_id: id(),
        };
        let ops = [
            Operation::CreateCustomer(CustomerCreate {
                external_id: "c".into(),
                name: "C".into(),
                description: None,
                labels: None,
            }),
            Operation::UpdateCustomer {
                id: id(),
                external_id: "c".into(),
                changes: vec![],
                patch: Default::default(),
            },
            Operation::AdoptCustomer {
                id: id(),
                external_id: "c".into(),
                name: "C".into(),
                changes: vec![],
                patch: Default::default(),
            },
            Operation::DeleteCustomer {
                id: id(),
                external_id: "c".into(),
                name: "C".into(),
                users: 0,
                instances: 0,
                why: crate::plan::DeleteReason::Absent,
            },
            Operation::CreateUser(user.clone()),
            Operation::UpdateUser {
                id: id(),
                external_id: "u".into(),
                email: "a@b.c".into(),
                customer_external_id: None,
                changes: vec![],
                patch: Default::default(),
            },
            Operation::AdoptUser {
                id: id(),
                external_id: "u".into(),
                email: "a@b.c".into(),
                customer_external_id: None,
                changes: vec![],
                patch: Default::default(),
            },
            Operation::RecreateUser {
                old_id: id(),
                reason: "email".into(),
                create: user,
            },
            Operation::DeleteUser {
                id: id(),
                external_id: "u".into(),
                email: "a@b.c".into(),
                customer_external_id: None,
                why: crate::plan::DeleteReason::Absent,
            },
        ];
        let mut seen: Vec<_> = ops.iter().map(|o| (o.kind(), o.action())).collect();
        let mut listed = OPERATIONS.to_vec();
        seen.sort();
        listed.sort();
        assert_eq!(seen, listed);
    }
}
