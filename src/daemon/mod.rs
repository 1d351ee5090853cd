//! `dirsync run`: the long-lived service. It holds the state directory's
//! lock, reconciles on a cron schedule (never two runs at once), talks to
//! systemd (`READY=1`, `STATUS=`, `WATCHDOG=1`, `STOPPING=1`), reloads its
//! config on SIGHUP (keeping the old one when the new one is invalid), and
//! on SIGTERM or SIGINT lets the operations in flight finish and exits 0.
//!
//! The scheduling loop ([`run_schedule`]) knows nothing of reconciles: it
//! drives a [`Job`], reads time from a [`Clock`] and takes signals as
//! [`Event`]s from a channel, which is how its tests run on tokio's paused
//! clock with a scripted job.

pub mod assets;
pub mod clock;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod outcome;
pub mod schedule;
pub mod textfile;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, ScheduleSettings};
use crate::run::{reconcile_cancellable, Connection, Mode, RunError};
use logging::OperationLog;

pub use clock::{Clock, SystemClock, TokioClock};
pub use lock::{LockError, StateLock};
pub use metrics::{Metrics, SkipReason};
pub use notify::Notifier;
pub use outcome::{RunOutcome, RunResult};

/// How long a reload (re-read, validate, preflight) may take before it is
/// given up and the old configuration kept.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the daemon could not start (once started, nothing ends it but a
/// signal: failed runs and failed reloads are logged and counted).
///
/// The message carries its cause, which is therefore not also a `#[source]`:
/// `main` prints the whole chain, and the cause would show twice.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}: schedule: is required by dirsync run (for example `schedule: {{ cron: \"*/15 * * * *\" }}`)", path.display())]
    NoSchedule { path: PathBuf },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("preflight against the platform failed: {error}")]
    Preflight { error: RunError },
    #[error("preflight against the platform did not finish within {} s", .limit.as_secs())]
    PreflightTimeout { limit: Duration },
    #[error("cannot serve metrics on {addr}: {error}")]
    Metrics {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot listen for {signal}: {error}")]
    Signal {
        signal: &'static str,
        error: std::io::Error,
    },
}

/// What the loop is told from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// SIGTERM or SIGINT: no new run; let the one in flight finish; return.
    Terminate,
    /// SIGHUP: re-read the configuration.
    Reload,
}

/// What a reload hands the loop.
#[derive(Clone, Debug)]
pub struct Reloaded {
    pub schedule: ScheduleSettings,
    pub health_max_age: Option<Duration>,
    /// `metrics.textfile` (None: no file).
    pub textfile: Option<PathBuf>,
}

/// The work the schedule drives.
pub trait Job: Send {
    /// One run. The future is spawned: it owns what it needs. When `cancel`
    /// fires, it should send no new mutation and return soon.
    fn start(&self, cancel: CancellationToken) -> BoxFuture<'static, RunOutcome>;
    /// Re-reads and checks the configuration. An error keeps the current one.
    fn reload(&mut self) -> BoxFuture<'_, Result<Reloaded, DaemonError>>;
}

/// Everything the loop talks to besides its job.
pub struct LoopContext {
    pub clock: Arc<dyn Clock>,
    pub notifier: Arc<Notifier>,
    pub metrics: Arc<Metrics>,
    /// Send `WATCHDOG=1` this often.
    pub watchdog: Option<Duration>,
    /// `metrics.textfile`: written at start, after each run and at the end.
    pub textfile: Option<PathBuf>,
}

/// When the next run is due: the cron time, and that plus the jitter.
#[derive(Clone, Copy, Debug)]
struct Due {
    cron: DateTime<Utc>,
    wake: DateTime<Utc>,
}

struct Running {
    handle: JoinHandle<RunOutcome>,
    started: DateTime<Utc>,
    started_instant: tokio::time::Instant,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

struct Scheduler<J> {
    job: J,
    schedule: ScheduleSettings,
    ctx: LoopContext,
    next: Option<Due>,
    running: Option<Running>,
    /// Cancelled at shutdown; each run gets a child token.
    shutdown: CancellationToken,
    /// A reload asked for while a run was going: done when it ends.
    reload_pending: bool,
    /// After an authentication failure: no run before this, unless reloaded.
    auth_paused_until: Option<DateTime<Utc>>,
    /// The last run's outcome, for STATUS=.
    last: Option<String>,
}

/// Runs the schedule until [`Event::Terminate`] (or the channel closes),
/// then waits up to `schedule.stop_timeout` for the run in flight.
pub async fn run_schedule<J: Job>(
    job: J,
    schedule: ScheduleSettings,
    ctx: LoopContext,
    events: &mut mpsc::UnboundedReceiver<Event>,
) {
    let now = ctx.clock.now();
    let mut s = Scheduler {
        job,
        schedule,
        ctx,
        next: None,
        running: None,
        shutdown: CancellationToken::new(),
        reload_pending: false,
        auth_paused_until: None,
        last: None,
    };
    s.next = if s.schedule.run_at_start {
        Some(Due {
            cron: now,
            wake: now,
        })
    } else {
        s.due_after(now)
    };
    s.announce_next();
    s.write_textfile();
    s.ctx.notifier.ready(&s.status_line());
    let mut watchdog = s.ctx.watchdog.map(|period| {
        let mut i = tokio::time::interval(period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        let wake_in = s
            .next
            .map(|d| (d.wake - s.ctx.clock.now()).to_std().unwrap_or_default());
        tokio::select! {
            biased;
            event = events.recv() => match event {
                Some(Event::Reload) => {
                    if s.running.is_some() {
                        tracing::info!("Reload requested: it happens when the run in flight ends.");
                        s.reload_pending = true;
                    } else {
                        s.reload().await;
                    }
                }
                Some(Event::Terminate) | None => break,
            },
            joined = join(&mut s.running) => {
                s.finished(joined);
                if std::mem::take(&mut s.reload_pending) {
                    s.reload().await;
                }
            }
            () = sleep_for(wake_in) => s.tick(),
            () = tick(&mut watchdog) => s.ctx.notifier.watchdog(),
        }
    }
    s.stop(events).await;
}

/// Resolves when the run in flight ends; never without one.
async fn join(running: &mut Option<Running>) -> Result<RunOutcome, tokio::task::JoinError> {
    match running {
        Some(r) => (&mut r.handle).await,
        None => std::future::pending().await,
    }
}

async fn sleep_for(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl<J: Job> Scheduler<J> {
    /// The next due time strictly after `t`, with a fresh jitter.
    fn due_after(&self, t: DateTime<Utc>) -> Option<Due> {
        let cron = self.schedule.cron.next_after(t)?;
        let max = self.schedule.jitter.as_millis() as u64;
        let jitter = if max == 0 {
            0
        } else {
            rand::random_range(0..=max)
        };
        let wake = cron
            .checked_add_signed(chrono::Duration::milliseconds(jitter as i64))
            .unwrap_or(cron);
        Some(Due { cron, wake })
    }

    /// node_exporter's textfile, when configured; a failure is a warning.
    fn write_textfile(&self) {
        if let Some(path) = &self.ctx.textfile {
            if let Err(e) = self.ctx.metrics.write_textfile(path) {
                tracing::warn!(error = %e, "Cannot write the metrics textfile (metrics.textfile): {e}");
            }
        }
    }

    fn announce_next(&self) {
        self.ctx.metrics.set_next_run(self.next.map(|d| d.wake));
        match self.next {
            Some(d) => {
                let in_secs = (d.wake - self.ctx.clock.now()).num_seconds().max(0);
                tracing::info!(
                    next_run = %stamp(d.wake),
                    in_secs,
                    schedule = self.schedule.cron.expression(),
                    time_zone = %self.schedule.cron.time_zone(),
                    "Next run scheduled."
                );
            }
            None => tracing::warn!(
                schedule = self.schedule.cron.expression(),
                "The schedule fires no more: no further runs until the configuration is changed and reloaded."
            ),
        }
    }

    fn status_line(&self) -> String {
        let next = match self.next {
            Some(d) => format!("next run {}", stamp(d.wake)),
            None => "no next run (the schedule fires no more)".to_owned(),
        };
        let now_part = match (&self.running, self.auth_paused_until) {
            (Some(r), _) => format!("Running since {}", stamp(r.started)),
            (None, Some(until)) => format!(
                "Authentication failed: paused until a reload or {}",
                stamp(until)
            ),
            (None, None) => "Idle".to_owned(),
        };
        match &self.last {
            Some(last) => format!("{now_part}; last run {last}; {next}"),
            None => format!("{now_part}; {next}"),
        }
    }

    fn tick(&mut self) {
        let now = self.ctx.clock.now();
        let fired = self.next.map(|d| d.cron).unwrap_or(now);
        self.next = self.due_after(now.max(fired));
        if let Some(r) = &self.running {
            self.ctx.metrics.tick_skipped(SkipReason::Running);
            tracing::info!(
                running_since = %stamp(r.started),
                "Skipping this run: the previous run is still going."
            );
        } else if let Some(until) = self.auth_paused_until.filter(|u| now < *u) {
            self.ctx.metrics.tick_skipped(SkipReason::AuthBackoff);
            tracing::warn!(
                paused_until = %stamp(until),
                "Skipping this run: authentication failed earlier; waiting for a reload (SIGHUP) or the end of the back-off at {}.",
                stamp(until)
            );
        } else {
            if self.auth_paused_until.take().is_some() {
                self.ctx.metrics.set_auth_backoff(false);
                tracing::info!("The authentication back-off has passed: trying again.");
            }
            self.start_run(now);
        }
        self.announce_next();
        self.ctx.notifier.status(&self.status_line());
    }

    fn start_run(&mut self, now: DateTime<Utc>) {
        tracing::info!("Run started.");
        self.ctx.metrics.run_started(now);
        let handle = tokio::spawn(self.job.start(self.shutdown.child_token()));
        self.running = Some(Running {
            handle,
            started: now,
            started_instant: tokio::time::Instant::now(),
        });
    }

    fn finished(&mut self, joined: Result<RunOutcome, tokio::task::JoinError>) {
        let Some(run) = self.running.take() else {
            return;
        };
        let outcome = match joined {
            Ok(o) => o,
            Err(e) if e.is_panic() => RunOutcome::lost("the run panicked"),
            Err(_) => RunOutcome::lost("the run was cancelled"),
        };
        let ended = self.ctx.clock.now();
        let duration = run.started_instant.elapsed();
        self.ctx.metrics.run_finished(ended, duration, &outcome);
        self.write_textfile();
        log_summary(&outcome, duration);
        if outcome.auth_failed {
            let until = ended
                .checked_add_signed(
                    chrono::Duration::from_std(self.schedule.auth_backoff)
                        .unwrap_or(chrono::Duration::MAX),
                )
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            self.auth_paused_until = Some(until);
            self.ctx.metrics.set_auth_backoff(true);
            tracing::error!(
                paused_until = %stamp(until),
                "Authentication failed: no run until the configuration is reloaded (systemctl reload dirsync) or the back-off passes at {}.",
                stamp(until)
            );
        }
        self.last = Some(format!(
            "{}: {} in {:.1} s",
            stamp(ended),
            outcome.describe(),
            duration.as_secs_f64()
        ));
        self.ctx.notifier.status(&self.status_line());
    }

    async fn reload(&mut self) {
        tracing::info!("Reloading the configuration.");
        let result = match tokio::time::timeout(RELOAD_TIMEOUT, self.job.reload()).await {
            Ok(r) => r,
            Err(_) => Err(DaemonError::PreflightTimeout {
                limit: RELOAD_TIMEOUT,
            }),
        };
        match result {
            Ok(r) => {
                self.schedule = r.schedule;
                self.ctx.textfile = r.textfile;
                if let Some(age) = r.health_max_age {
                    self.ctx.metrics.set_health_max_age(age);
                }
                if self.auth_paused_until.take().is_some() {
                    self.ctx.metrics.set_auth_backoff(false);
                }
                self.next = self.due_after(self.ctx.clock.now());
                tracing::info!("Configuration reloaded.");
                self.announce_next();
                self.ctx.notifier.status(&self.status_line());
            }
            Err(e) => {
                self.ctx.metrics.reload_failed();
                tracing::error!(error = %e, "Configuration reload failed; still running on the previous configuration: {e}");
                self.ctx.notifier.status(&format!(
                    "Reload failed, running on the previous configuration: {e}; {}",
                    self.status_line()
                ));
            }
        }
    }

    /// Shutdown: no new run; the run in flight is cancelled between
    /// operations and given `stop_timeout` to end.
    async fn stop(mut self, events: &mut mpsc::UnboundedReceiver<Event>) {
        self.shutdown.cancel();
        self.ctx.metrics.set_next_run(None);
        let Some(mut run) = self.running.take() else {
            self.write_textfile();
            self.ctx.notifier.stopping("Stopping.");
            tracing::info!("Shutting down.");
            return;
        };
        self.ctx
            .notifier
            .stopping("Stopping: waiting for the operations in flight.");
        let limit = self.schedule.stop_timeout;
        tracing::info!(
            timeout_secs = limit.as_secs(),
            "Shutting down: no new operation starts; waiting for those in flight."
        );
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        let mut listening = true;
        loop {
            tokio::select! {
                joined = &mut run.handle => {
                    self.running = Some(run);
                    self.finished(joined);
                    tracing::info!("Shut down.");
                    return;
                }
                () = &mut deadline => {
                    tracing::warn!(
                        timeout_secs = limit.as_secs(),
                        "The run did not end within {} s; leaving it. The next run converges.",
                        limit.as_secs()
                    );
                    break;
                }
                event = events.recv(), if listening => match event {
                    Some(Event::Terminate) => {
                        tracing::warn!("Second stop signal: leaving the run in flight. The next run converges.");
                        break;
                    }
                    Some(Event::Reload) => {}
                    None => listening = false,
                },
            }
        }
        run.handle.abort();
    }
}

/// The one summary line per run. Its message is whole in itself (the
/// journal shows the message; the fields are there to search by). A blocked
/// run also gets a line per safety limit that held it, naming the limit.
fn log_summary(o: &RunOutcome, duration: Duration) {
    for b in &o.blocked {
        tracing::warn!(
            limit = b.label,
            reason = %b.text,
            "Run blocked by a safety limit ({}): {}",
            b.label,
            b.text
        );
    }
    let a = |k: &str| o.counts.actions.get(k).copied().unwrap_or(0);
    let limits: Vec<&str> = o.blocked.iter().map(|b| b.label).collect();
    let limits = limits.join(",");
    let described = format!("{} in {:.1} s", o.describe(), duration.as_secs_f64());
    macro_rules! summary {
        ($level:ident, $msg:literal) => {
            tracing::$level!(
                result = o.result.label(),
                create = a("create"),
                update = a("update"),
                adopt = a("adopt"),
                recreate = a("recreate"),
                delete = a("delete"),
                failed = o.counts.failed,
                conflicts = o.counts.conflicts,
                drift = o.counts.drift,
                refused = o.refused(),
                requests = o.counts.requests,
                throttled = o.counts.throttled,
                duration_ms = duration.as_millis() as u64,
                error = o.error.as_deref().unwrap_or(""),
                blocked_by = limits.as_str(),
                "{} {}",
                $msg,
                described
            )
        };
    }
    match o.result {
        // Refused records are the directory's problem to fix: visible at WARN.
        RunResult::Ok if o.refused() > 0 => summary!(warn, "Run finished."),
        RunResult::Ok => summary!(info, "Run finished."),
        RunResult::Failed => summary!(error, "Run failed."),
        _ => summary!(warn, "Run finished with problems."),
    }
}

// ------------------------------------------------------------ the real job

/// Reconciles with the configuration it was started (or last reloaded) with.
struct ReconcileJob {
    path: PathBuf,
    config: Arc<Config>,
    lock: StateLock,
}

impl Job for ReconcileJob {
    fn start(&self, cancel: CancellationToken) -> BoxFuture<'static, RunOutcome> {
        let config = Arc::clone(&self.config);
        async move { one_run(&config, &cancel).await }.boxed()
    }

    fn reload(&mut self) -> BoxFuture<'_, Result<Reloaded, DaemonError>> {
        async move {
            let config = Config::load(&self.path)?;
            let schedule = config
                .schedule
                .clone()
                .ok_or_else(|| DaemonError::NoSchedule {
                    path: self.path.clone(),
                })?;
            let new_lock = if config.state_dir != self.lock.dir() {
                Some(StateLock::acquire(&config.state_dir)?)
            } else {
                None
            };
            let listen = |c: &Config| c.metrics.as_ref().and_then(|m| m.listen);
            if listen(&config) != listen(&self.config) {
                tracing::warn!("metrics.listen changed: the metrics endpoint moves only on a restart.");
            }
            preflight(&config).await?;
            if let Some(lock) = new_lock {
                tracing::info!(state_dir = %lock.dir().display(), "Holding the new state directory's lock.");
                self.lock = lock;
            }
            let health_max_age = config.metrics.as_ref().map(|m| m.health_max_age);
            let textfile = config.metrics.as_ref().and_then(|m| m.textfile.clone());
            self.config = Arc::new(config);
            Ok(Reloaded {
                schedule,
                health_max_age,
                textfile,
            })
        }
        .boxed()
    }
}

/// One reconcile with its own connection (so a changed token file is read
/// again each run), applied without lifting any safety limit.
async fn one_run(config: &Config, cancel: &CancellationToken) -> RunOutcome {
    let connection = match Connection::open(&config.platform).await {
        Ok(c) => c,
        Err(e) => return RunOutcome::from_error(&e),
    };
    let mode = Mode::Apply {
        allow_deletes: false,
    };
    let result = reconcile_cancellable(config, &connection, mode, &OperationLog, cancel).await;
    if let Err(e) = connection.close().await {
        tracing::warn!(error = %e, "Cannot stop the built-in emulator cleanly: {e}");
    }
    match result {
        Ok(r) => {
            crate::state::record_run(config, crate::state::RunMode::Run, &r);
            RunOutcome::from_reconcile(&r, cancel.is_cancelled())
        }
        Err(e) => RunOutcome::from_error(&e),
    }
}

/// Connects and asks the platform who we are: the URL, the TLS setup and
/// the token all work.
async fn preflight(config: &Config) -> Result<(), DaemonError> {
    let connection = Connection::open(&config.platform)
        .await
        .map_err(|error| DaemonError::Preflight { error })?;
    let who = connection.client.authenticated_user().await;
    if let Err(e) = connection.close().await {
        tracing::warn!(error = %e, "Cannot stop the built-in emulator cleanly: {e}");
    }
    who.map_err(|e| DaemonError::Preflight { error: e.into() })?;
    tracing::info!("Preflight against the platform succeeded.");
    Ok(())
}

/// What is wrong with a config file's permission bits, if anything.
pub fn permission_problems(mode: u32) -> Vec<&'static str> {
    let mut problems = Vec::new();
    if mode & 0o022 != 0 {
        problems.push("The config file is writable by users other than its owner: whoever can write it decides what dirsync changes (chmod go-w).");
    }
    if mode & 0o004 != 0 {
        problems.push("The config file is readable by other users: keep it private (chmod o-r; under systemd, owned by root with the group dirsync, mode 0640).");
    }
    problems
}

fn warn_about_privileges(config_path: &Path) {
    if rustix::process::geteuid().is_root() {
        tracing::warn!("Running as root: dirsync needs no privileges. Run it as an unprivileged user, or through the systemd unit (DynamicUser=yes).");
    }
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(config_path) {
        for problem in permission_problems(meta.permissions().mode()) {
            tracing::warn!(config = %config_path.display(), "{problem}");
        }
    }
}

/// Turns SIGTERM, SIGINT and SIGHUP into [`Event`]s.
fn listen_for_signals(tx: mpsc::UnboundedSender<Event>) -> Result<JoinHandle<()>, DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let install = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|error| DaemonError::Signal {
            signal: name,
            error,
        })
    };
    let mut term = install(SignalKind::terminate(), "SIGTERM")?;
    let mut int = install(SignalKind::interrupt(), "SIGINT")?;
    let mut hup = install(SignalKind::hangup(), "SIGHUP")?;
    Ok(tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                Some(()) = term.recv() => {
                    tracing::info!(signal = "SIGTERM", "Stop requested.");
                    Event::Terminate
                }
                Some(()) = int.recv() => {
                    tracing::info!(signal = "SIGINT", "Stop requested.");
                    Event::Terminate
                }
                Some(()) = hup.recv() => {
                    tracing::info!(signal = "SIGHUP", "Reload requested.");
                    Event::Reload
                }
                else => break,
            };
            if tx.send(event).is_err() {
                break;
            }
        }
    }))
}

/// `dirsync run -c FILE`: returns when stopped by a signal (exit 0), or with
/// an error when it cannot start.
pub async fn run(path: &Path) -> Result<(), DaemonError> {
    warn_about_privileges(path);
    let config = Config::load(path)?;
    let schedule = config
        .schedule
        .clone()
        .ok_or_else(|| DaemonError::NoSchedule {
            path: path.to_path_buf(),
        })?;
    let lock = StateLock::acquire(&config.state_dir)?;
    tracing::info!(lock = %lock.path().display(), "Holding the state directory's lock.");
    let (tx, mut events) = mpsc::unbounded_channel();
    let signals = listen_for_signals(tx)?;
    let notifier = Arc::new(Notifier::from_env());

    // The preflight, unless a stop signal comes first.
    {
        let pre = preflight(&config);
        tokio::pin!(pre);
        loop {
            tokio::select! {
                result = &mut pre => {
                    result?;
                    break;
                }
                event = events.recv() => match event {
                    Some(Event::Reload) => tracing::info!("Reload requested during start-up: the configuration was just read."),
                    Some(Event::Terminate) | None => {
                        notifier.stopping("Stopping.");
                        signals.abort();
                        return Ok(());
                    }
                },
            }
        }
    }

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let health_max_age = config
        .metrics
        .as_ref()
        .map(|m| m.health_max_age)
        .unwrap_or(Duration::from_secs(3600));
    let metrics = Arc::new(Metrics::new(clock.now(), health_max_age));
    let stop_serving = CancellationToken::new();
    let server = match config.metrics.as_ref().and_then(|m| m.listen) {
        Some(listen) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|error| DaemonError::Metrics {
                    addr: listen,
                    error,
                })?;
            let address = listener
                .local_addr()
                .map_err(|error| DaemonError::Metrics {
                    addr: listen,
                    error,
                })?;
            tracing::info!(address = %address, "Serving metrics on /metrics and the health check on /healthz.");
            let (metrics, clock, stop) = (
                Arc::clone(&metrics),
                Arc::clone(&clock),
                stop_serving.clone(),
            );
            Some(tokio::spawn(async move {
                if let Err(e) = metrics::serve(listener, metrics, clock, stop).await {
                    tracing::error!(error = %e, "The metrics endpoint stopped: {e}");
                }
            }))
        }
        None => None,
    };

    let watchdog = if notifier.is_enabled() {
        notify::watchdog_interval()
    } else {
        None
    };
    let textfile = config.metrics.as_ref().and_then(|m| m.textfile.clone());
    let job = ReconcileJob {
        path: path.to_path_buf(),
        config: Arc::new(config),
        lock,
    };
    let ctx = LoopContext {
        clock,
        notifier,
        metrics,
        watchdog,
        textfile,
    };
    run_schedule(job, schedule, ctx, &mut events).await;
    stop_serving.cancel();
    if let Some(server) = server {
        if tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .is_err()
        {
            tracing::warn!("The metrics endpoint did not stop within 5 s.");
        }
    }
    signals.abort();
    Ok(())
}

#[cfg(test)]
mod tests;
