//! The daemon's metrics in the Prometheus text format (`GET /metrics`) and a
//! health check (`GET /healthz`) that fails when the last successful run is
//! older than `metrics.health_max_age_secs`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use super::outcome::{OutcomeCounts, RunOutcome, RunResult};

/// Why a tick did not start a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// The previous run was still going.
    Running,
    /// An authentication failure: waiting for a reload or the back-off.
    AuthBackoff,
}

impl SkipReason {
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::Running => "running",
            SkipReason::AuthBackoff => "auth_backoff",
        }
    }
}

#[derive(Debug)]
struct Inner {
    started: DateTime<Utc>,
    health_max_age: Duration,
    last_start: Option<DateTime<Utc>>,
    last_end: Option<DateTime<Utc>>,
    last_success: Option<DateTime<Utc>>,
    last_duration: Option<Duration>,
    running: bool,
    runs: BTreeMap<RunResult, u64>,
    operations: OutcomeCounts,
    requests: u64,
    throttled: u64,
    drift: usize,
    conflicts: usize,
    skipped: BTreeMap<SkipReason, u64>,
    auth_backoff: bool,
    next_run: Option<DateTime<Utc>>,
    reloads_failed: u64,
}

/// Counters and gauges the scheduler updates.
#[derive(Debug)]
pub struct Metrics {
    state: Mutex<Inner>,
}

/// The health check's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub healthy: bool,
    pub message: String,
}

impl Metrics {
    /// `started`: when the daemon started; the health check counts from it
    /// until the first successful run.
    pub fn new(started: DateTime<Utc>, health_max_age: Duration) -> Metrics {
        Metrics {
            state: Mutex::new(Inner {
                started,
                health_max_age,
                last_start: None,
                last_end: None,
                last_success: None,
                last_duration: None,
                running: false,
                runs: RunResult::ALL.iter().map(|r| (*r, 0)).collect(),
                operations: OutcomeCounts::new(),
                requests: 0,
                throttled: 0,
                drift: 0,
                conflicts: 0,
                skipped: [SkipReason::Running, SkipReason::AuthBackoff]
                    .into_iter()
                    .map(|r| (r, 0))
                    .collect(),
                auth_backoff: false,
                next_run: None,
                reloads_failed: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain numbers behind: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_health_max_age(&self, max_age: Duration) {
        self.lock().health_max_age = max_age;
    }

    pub fn run_started(&self, at: DateTime<Utc>) {
        let mut s = self.lock();
        s.last_start = Some(at);
        s.running = true;
    }

    pub fn run_finished(&self, ended: DateTime<Utc>, duration: Duration, outcome: &RunOutcome) {
        let mut s = self.lock();
        s.running = false;
        s.last_end = Some(ended);
        s.last_duration = Some(duration);
        *s.runs.entry(outcome.result).or_insert(0) += 1;
        if outcome.succeeded() {
            s.last_success = Some(ended);
        }
        for (key, n) in &outcome.counts.outcomes {
            *s.operations.entry(*key).or_insert(0) += n;
        }
        s.requests += outcome.counts.requests;
        s.throttled += outcome.counts.throttled;
        if outcome.result != RunResult::Failed {
            s.drift = outcome.counts.drift;
            s.conflicts = outcome.counts.conflicts;
        }
    }

    pub fn tick_skipped(&self, reason: SkipReason) {
        *self.lock().skipped.entry(reason).or_insert(0) += 1;
    }

    pub fn set_auth_backoff(&self, on: bool) {
        self.lock().auth_backoff = on;
    }

    pub fn set_next_run(&self, at: Option<DateTime<Utc>>) {
        self.lock().next_run = at;
    }

    pub fn reload_failed(&self) {
        self.lock().reloads_failed += 1;
    }

    /// Runs by result so far.
    pub fn runs(&self, result: RunResult) -> u64 {
        self.lock().runs.get(&result).copied().unwrap_or(0)
    }

    /// Ticks skipped for `reason` so far.
    pub fn skipped(&self, reason: SkipReason) -> u64 {
        self.lock().skipped.get(&reason).copied().unwrap_or(0)
    }

    /// Healthy while the last successful run (or, before the first one, the
    /// daemon's start) is at most `health_max_age` old.
    pub fn health(&self, now: DateTime<Utc>) -> Health {
        let s = self.lock();
        let (since, what) = match s.last_success {
            Some(t) => (t, "the last successful run"),
            None => (s.started, "the start, with no successful run yet,"),
        };
        let age = (now - since).to_std().unwrap_or_default();
        let healthy = age <= s.health_max_age;
        let message = format!(
            "{}: {what} was {} s ago (limit {} s)\n",
            if healthy { "ok" } else { "unhealthy" },
            age.as_secs(),
            s.health_max_age.as_secs()
        );
        Health { healthy, message }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let s = self.lock();
        let mut out = String::new();
        let ts = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis() as f64 / 1000.0);
        gauge(
            &mut out,
            "dirsync_last_run_start_timestamp_seconds",
            "When the last run started (Unix time).",
            ts(s.last_start),
        );
        gauge(
            &mut out,
            "dirsync_last_run_end_timestamp_seconds",
            "When the last run ended (Unix time).",
            ts(s.last_end),
        );
        gauge(
            &mut out,
            "dirsync_last_success_timestamp_seconds",
            "When the last successful run ended (Unix time).",
            ts(s.last_success),
        );
        gauge(
            &mut out,
            "dirsync_last_run_duration_seconds",
            "How long the last run took.",
            s.last_duration.map(|d| d.as_secs_f64()),
        );
        gauge(
            &mut out,
            "dirsync_next_run_timestamp_seconds",
            "When the next run is due (Unix time).",
            ts(s.next_run),
        );
        gauge(
            &mut out,
            "dirsync_running",
            "1 while a run is in progress.",
            Some(f64::from(u8::from(s.running))),
        );
        header(
            &mut out,
            "dirsync_runs_total",
            "counter",
            "Runs by result (ok, partial, blocked by a safety limit, failed, interrupted by a shutdown).",
        );
        for (result, n) in &s.runs {
            let _ = writeln!(
                out,
                "dirsync_runs_total{{result=\"{}\"}} {n}",
                result.label()
            );
        }
        header(
            &mut out,
            "dirsync_operations_total",
            "counter",
            "Operations sent, by kind, action and outcome.",
        );
        for ((kind, action, outcome), n) in &s.operations {
            let _ = writeln!(
                out,
                "dirsync_operations_total{{kind=\"{}\",action=\"{}\",outcome=\"{}\"}} {n}",
                escape(kind),
                escape(action),
                escape(outcome)
            );
        }
        counter(
            &mut out,
            "dirsync_requests_total",
            "Requests sent to the platform.",
            s.requests,
        );
        counter(
            &mut out,
            "dirsync_requests_throttled_total",
            "Requests the platform answered 429 (Too Many Requests).",
            s.throttled,
        );
        gauge(
            &mut out,
            "dirsync_drift",
            "Drift items in the last plan (changes the platform cannot make: they need a decision).",
            Some(s.drift as f64),
        );
        gauge(
            &mut out,
            "dirsync_conflicts",
            "Conflicts in the last plan (creates the platform would refuse).",
            Some(s.conflicts as f64),
        );
        header(
            &mut out,
            "dirsync_ticks_skipped_total",
            "counter",
            "Scheduled runs not started, by reason (a run still going, the authentication back-off).",
        );
        for (reason, n) in &s.skipped {
            let _ = writeln!(
                out,
                "dirsync_ticks_skipped_total{{reason=\"{}\"}} {n}",
                reason.label()
            );
        }
        gauge(
            &mut out,
            "dirsync_auth_backoff",
            "1 while mutations are paused after an authentication failure.",
            Some(f64::from(u8::from(s.auth_backoff))),
        );
        counter(
            &mut out,
            "dirsync_config_reloads_failed_total",
            "Reloads refused because the new configuration was invalid.",
            s.reloads_failed,
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A gauge; left out (HELP and TYPE only) when there is no value yet.
fn gauge(out: &mut String, name: &str, help: &str, value: Option<f64>) {
    header(out, name, "gauge", help);
    if let Some(v) = value {
        let _ = writeln!(out, "{name} {v}");
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

/// A label value: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
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
    use crate::daemon::outcome::RunCounts;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn outcome(result: RunResult) -> RunOutcome {
        let mut counts = RunCounts {
            requests: 12,
            throttled: 2,
            drift: 1,
            ..RunCounts::default()
        };
        counts.outcomes.insert(("user", "create", "applied"), 3);
        counts.actions.insert("create", 3);
        RunOutcome {
            result,
            counts,
            error: None,
            auth_failed: false,
        }
    }

    #[test]
    fn every_series_is_rendered_with_its_type_and_counts_add_up() {
        let m = Metrics::new(t("2024-01-01T00:00:00Z"), Duration::from_secs(3600));
        let before = m.render();
        assert!(before.contains("# TYPE dirsync_last_success_timestamp_seconds gauge\n"));
        assert!(
            !before.contains("\ndirsync_last_success_timestamp_seconds "),
            "no value before the first success: {before}"
        );
        assert!(before.contains("dirsync_runs_total{result=\"blocked\"} 0\n"));
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
            "dirsync_last_run_start_timestamp_seconds 1704067260\n",
            "dirsync_last_run_end_timestamp_seconds 1704067321\n",
            "dirsync_last_success_timestamp_seconds 1704067262.5\n",
            "dirsync_last_run_duration_seconds 1\n",
            "dirsync_runs_total{result=\"ok\"} 1\n",
            "dirsync_runs_total{result=\"blocked\"} 1\n",
            "dirsync_runs_total{result=\"failed\"} 0\n",
            "dirsync_operations_total{kind=\"user\",action=\"create\",outcome=\"applied\"} 6\n",
            "dirsync_requests_total 24\n",
            "dirsync_requests_throttled_total 4\n",
            "dirsync_drift 1\n",
            "dirsync_ticks_skipped_total{reason=\"running\"} 1\n",
            "dirsync_ticks_skipped_total{reason=\"auth_backoff\"} 0\n",
            "dirsync_auth_backoff 0\n",
            "# TYPE dirsync_runs_total counter\n",
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
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
