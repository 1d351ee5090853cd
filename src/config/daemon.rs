//! The daemon's settings: `schedule:` (when `dirsync run` reconciles),
//! `metrics:` (the Prometheus endpoint and health check, and the textfile
//! for node_exporter) and where the state directory defaults to.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{resolve_against, Checker, ConfigError};
use crate::daemon::schedule::{CronSchedule, ScheduleError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    cron: String,
    #[serde(default = "default_time_zone")]
    time_zone: String,
    #[serde(default)]
    run_at_start: bool,
    #[serde(default)]
    jitter_secs: u64,
    #[serde(default = "default_auth_backoff")]
    auth_backoff_secs: u64,
    #[serde(default = "default_stop_timeout")]
    stop_timeout_secs: u64,
    /// Seconds (`3600`) or a duration with units (`1h`, `30m`, `1h 30m`).
    #[serde(default)]
    full_every: Option<RawDuration>,
}

/// A duration as written in the config: whole seconds, or text with units.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawDuration {
    Seconds(u64),
    Text(String),
}

/// How often a full read of the platform is due when `schedule.full_every`
/// is not given: hourly.
pub const DEFAULT_FULL_EVERY: Duration = Duration::from_secs(3600);

/// `schedule.full_every`, read.
pub(super) fn full_every(
    c: &Checker<'_>,
    raw: Option<&RawSchedule>,
) -> Result<Duration, ConfigError> {
    match raw.and_then(|s| s.full_every.as_ref()) {
        None => Ok(DEFAULT_FULL_EVERY),
        Some(RawDuration::Seconds(n)) => Ok(Duration::from_secs(*n)),
        Some(RawDuration::Text(text)) => humantime::parse_duration(text.trim()).map_err(|e| {
            c.invalid(
                "schedule.full_every",
                format!("must be a duration such as 3600, 1h or 30m, not {text:?} ({e})"),
            )
        }),
    }
}

fn default_time_zone() -> String {
    "UTC".to_owned()
}
fn default_auth_backoff() -> u64 {
    3600
}
fn default_stop_timeout() -> u64 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    #[serde(default)]
    listen: Option<String>,
    #[serde(default = "default_health_max_age")]
    health_max_age_secs: u64,
    #[serde(default)]
    textfile: Option<PathBuf>,
}

fn default_health_max_age() -> u64 {
    3600
}

/// When `dirsync run` reconciles.
#[derive(Clone, Debug)]
pub struct ScheduleSettings {
    pub cron: CronSchedule,
    /// Run once right after start-up, before the first fire time.
    pub run_at_start: bool,
    /// Each run starts up to this much after its fire time (random).
    pub jitter: Duration,
    /// After an authentication failure, no run for this long (or until a reload).
    pub auth_backoff: Duration,
    /// On SIGTERM, how long the operations in flight may take to finish.
    pub stop_timeout: Duration,
}

/// The Prometheus endpoint and the health check, and the textfile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Where `dirsync run` serves `/metrics` and `/healthz`; None: not served.
    pub listen: Option<SocketAddr>,
    /// `/healthz` fails when the last successful run is older than this.
    pub health_max_age: Duration,
    /// A file for node_exporter's textfile collector (`*.prom`), written
    /// atomically by `dirsync run` after each run and by each `dirsync
    /// sync` that applies; relative to the config file's folder.
    pub textfile: Option<PathBuf>,
}

/// `$STATE_DIRECTORY` (systemd's `StateDirectory=`; the first when it lists
/// several), else `.dirsync-state` in the config file's folder.
pub(super) fn default_state_dir(config_path: &Path, state_directory: Option<OsString>) -> PathBuf {
    if let Some(first) = state_directory
        .as_ref()
        .and_then(|v| v.to_str())
        .and_then(|v| v.split(':').find(|p| !p.is_empty()))
    {
        return PathBuf::from(first);
    }
    resolve_against(config_path, Path::new(".dirsync-state"))
}

pub(super) fn validate_schedule(
    c: &Checker<'_>,
    s: &RawSchedule,
) -> Result<ScheduleSettings, ConfigError> {
    let cron = CronSchedule::parse(&s.cron, &s.time_zone).map_err(|e| match e {
        ScheduleError::TimeZone { .. } => c.invalid("schedule.time_zone", e),
        ScheduleError::Expression { .. } => c.invalid("schedule.cron", e),
    })?;
    if s.stop_timeout_secs == 0 {
        return Err(c.invalid("schedule.stop_timeout_secs", "must be at least 1"));
    }
    Ok(ScheduleSettings {
        cron,
        run_at_start: s.run_at_start,
        jitter: Duration::from_secs(s.jitter_secs),
        auth_backoff: Duration::from_secs(s.auth_backoff_secs),
        stop_timeout: Duration::from_secs(s.stop_timeout_secs),
    })
}

pub(super) fn validate_metrics(
    c: &Checker<'_>,
    m: &RawMetrics,
) -> Result<MetricsSettings, ConfigError> {
    let listen = m
        .listen
        .as_deref()
        .map(|listen| {
            listen.trim().parse().map_err(|_| {
                c.invalid(
                    "metrics.listen",
                    format!(
                        "must be an address and a port, such as 127.0.0.1:9187 or [::1]:9187, not {listen:?}"
                    ),
                )
            })
        })
        .transpose()?;
    if m.health_max_age_secs == 0 {
        return Err(c.invalid("metrics.health_max_age_secs", "must be at least 1"));
    }
    let textfile = m
        .textfile
        .as_deref()
        .map(|file| {
            if file.extension().and_then(|e| e.to_str()) != Some("prom") {
                return Err(c.invalid(
                    "metrics.textfile",
                    format!(
                        "must name a file ending in .prom (node_exporter's textfile collector reads only those), not {:?}",
                        file.display().to_string()
                    ),
                ));
            }
            Ok(resolve_against(c.path, file))
        })
        .transpose()?;
    if listen.is_none() && textfile.is_none() {
        return Err(c.invalid(
            "metrics",
            "needs listen (serve /metrics), textfile (write a .prom file for node_exporter), or both",
        ));
    }
    Ok(MetricsSettings {
        listen,
        health_max_age: Duration::from_secs(m.health_max_age_secs),
        textfile,
    })
}

#[cfg(test)]
mod daemon_settings_tests {
    use super::*;

    #[test]
    fn full_every_is_hourly_by_default_and_takes_seconds_or_units() {
        use crate::config::tests::{parse, MINIMAL};
        assert_eq!(parse(MINIMAL).unwrap().full_every, DEFAULT_FULL_EVERY);
        let with =
            |v: &str| format!("{MINIMAL}schedule:\n  cron: \"@hourly\"\n  full_every: {v}\n");
        assert_eq!(
            parse(&with("900")).unwrap().full_every,
            Duration::from_secs(900)
        );
        assert_eq!(
            parse(&with("30m")).unwrap().full_every,
            Duration::from_secs(1800)
        );
        assert_eq!(parse(&with("0")).unwrap().full_every, Duration::ZERO);
        let err = parse(&with("often")).unwrap_err().to_string();
        assert!(
            err.contains("schedule.full_every") && err.contains("often"),
            "{err}"
        );
    }
    use crate::config::tests::{parse, MINIMAL};

    #[test]
    fn schedule_and_metrics_are_optional_and_the_state_dir_has_a_default() {
        let c = parse(MINIMAL).unwrap();
        assert!(c.schedule.is_none());
        assert!(c.metrics.is_none());
        assert_eq!(
            default_state_dir(Path::new("conf/dirsync.yaml"), None),
            Path::new("conf/.dirsync-state")
        );
        assert_eq!(
            default_state_dir(
                Path::new("conf/dirsync.yaml"),
                Some("/var/lib/dirsync:/var/lib/other".into())
            ),
            Path::new("/var/lib/dirsync"),
            "systemd's StateDirectory= wins over the default"
        );
        let text = format!("{MINIMAL}state_dir: ../state\n");
        assert_eq!(parse(&text).unwrap().state_dir, Path::new("conf/../state"));
    }

    #[test]
    fn a_schedule_gets_the_documented_defaults() {
        let text = format!(
            "{MINIMAL}schedule:\n  cron: \"*/15 * * * *\"\nmetrics:\n  listen: 127.0.0.1:9187\n"
        );
        let c = parse(&text).unwrap();
        let s = c.schedule.unwrap();
        assert_eq!(s.cron.expression(), "*/15 * * * *");
        assert_eq!(s.cron.time_zone(), chrono_tz::UTC);
        assert!(!s.run_at_start);
        assert_eq!(s.jitter, Duration::ZERO);
        assert_eq!(s.auth_backoff, Duration::from_secs(3600));
        assert_eq!(s.stop_timeout, Duration::from_secs(60));
        assert_eq!(
            c.metrics,
            Some(MetricsSettings {
                listen: Some("127.0.0.1:9187".parse().unwrap()),
                health_max_age: Duration::from_secs(3600),
                textfile: None,
            })
        );
    }

    #[test]
    fn a_textfile_alone_is_enough_and_is_read_beside_the_config() {
        let text = format!("{MINIMAL}metrics:\n  textfile: metrics/dirsync.prom\n");
        let m = parse(&text).unwrap().metrics.unwrap();
        assert_eq!(m.listen, None);
        assert_eq!(
            m.textfile.as_deref(),
            Some(Path::new("conf/metrics/dirsync.prom"))
        );
        let text = format!(
            "{MINIMAL}metrics:\n  textfile: /var/lib/node_exporter/textfile/dirsync.prom\n"
        );
        assert_eq!(
            parse(&text).unwrap().metrics.unwrap().textfile.as_deref(),
            Some(Path::new("/var/lib/node_exporter/textfile/dirsync.prom"))
        );
    }

    #[test]
    fn schedule_and_metrics_mistakes_name_the_key() {
        for (extra, key, says) in [
            (
                "schedule:\n  cron: \"*/15 * * *\"\n",
                "schedule.cron",
                "4 fields",
            ),
            (
                "schedule:\n  cron: \"@hourly\"\n  time_zone: Mars/Olympus\n",
                "schedule.time_zone",
                "IANA",
            ),
            (
                "schedule:\n  cron: \"@hourly\"\n  stop_timeout_secs: 0\n",
                "schedule.stop_timeout_secs",
                "at least 1",
            ),
            (
                "schedule:\n  cron: \"@hourly\"\n  jiter_secs: 5\n",
                "schedule.jiter_secs",
                "unknown field",
            ),
            (
                "metrics:\n  listen: localhost\n",
                "metrics.listen",
                "an address and a port",
            ),
            (
                "metrics:\n  listen: 127.0.0.1:0\n  health_max_age_secs: 0\n",
                "metrics.health_max_age_secs",
                "at least 1",
            ),
            (
                "metrics:\n  textfile: /var/lib/node_exporter/dirsync.txt\n",
                "metrics.textfile",
                "ending in .prom",
            ),
            (
                "metrics:\n  health_max_age_secs: 60\n",
                "metrics",
                "needs listen",
            ),
        ] {
            let err = parse(&format!("{MINIMAL}{extra}")).unwrap_err();
            assert_eq!(err.key(), Some(key), "{err}");
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}
