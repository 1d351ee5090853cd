//! `metrics.textfile` for the timer-based install: each `dirsync sync` that
//! applies writes the same series as the daemon to node_exporter's textfile
//! collector. The process lives for one run, so the counters (and the last
//! success) are carried from run to run in `state_dir/metrics.json`, kept
//! under the state directory's lock like the rest of the run.

use std::path::PathBuf;
use std::time::Instant;

use chrono::Utc;

use super::metrics::{self, Metrics};
use super::outcome::RunOutcome;
use crate::config::Config;
use crate::run::{Mode, Reconcile, RunError};

/// The saved counters' file in the state directory.
pub const SAVED_COUNTERS: &str = "metrics.json";

/// One sync's metrics, from its start to the file.
pub struct SyncMetrics {
    textfile: PathBuf,
    saved: PathBuf,
    metrics: Metrics,
    started: Instant,
}

impl SyncMetrics {
    /// When `metrics.textfile` is set and the run applies (a plan or a dry
    /// run is not a run the metrics count): the counters so far, and the
    /// start of this run.
    pub fn start(config: &Config, mode: Mode) -> Option<SyncMetrics> {
        let settings = config.metrics.as_ref()?;
        let textfile = settings.textfile.clone()?;
        if !mode.applies() {
            return None;
        }
        let now = Utc::now();
        let metrics = Metrics::new(now, settings.health_max_age);
        let saved = config.state_dir.join(SAVED_COUNTERS);
        metrics.restore(&metrics::load_saved_counters(&saved));
        metrics.run_started(now);
        Some(SyncMetrics {
            textfile,
            saved,
            metrics,
            started: Instant::now(),
        })
    }

    /// Records the run (`interrupted`: stopped by SIGTERM or SIGINT), saves
    /// the counters and writes the textfile. A failure to write is a
    /// warning: the run's own outcome does not change.
    pub fn finish(self, result: &Result<&Reconcile, &RunError>, interrupted: bool) {
        let outcome = match result {
            Ok(r) => RunOutcome::from_reconcile(r, interrupted),
            Err(e) => RunOutcome::from_error(e),
        };
        self.record(&outcome);
    }

    /// Records a run that failed before it could reconcile.
    pub fn failed(self, error: &RunError) {
        self.record(&RunOutcome::from_error(error));
    }

    fn record(self, outcome: &RunOutcome) {
        self.metrics
            .run_finished(Utc::now(), self.started.elapsed(), outcome);
        if let Err(e) = metrics::save_counters(&self.saved, &self.metrics.saved_counters()) {
            tracing::warn!(error = %e, "Cannot save the metrics' counters for the next run: {e}");
        }
        if let Err(e) = self.metrics.write_textfile(&self.textfile) {
            tracing::warn!(error = %e, "Cannot write the metrics textfile (metrics.textfile): {e}");
        }
    }
}
