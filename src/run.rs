//! One reconcile, end to end: read the directory and the platform, plan,
//! check the guards, and (when asked) apply. `plan`, `sync` and the daemon
//! all go through [`reconcile`]; a dry run is the same path without apply.

use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::apply::{apply, ApplyOptions, ApplyReport, Progress};
use crate::config::{Config, PlatformSettings, PlatformTarget};
use crate::directory::RefusedRecord;
use crate::emulator::{self, EmulatorError, EmulatorOptions, RunningEmulator, Seed};
use crate::guard::{self, BlockReason};
use crate::plan::{customers_to_inspect, plan, Plan, PlanError};
use crate::platform::{
    AuthMethod, ClientSetupError, PlatformClient, PlatformConfig, PlatformError, RequestStats,
    SecretSource,
};
use crate::platform_view::{PlatformRead, PlatformView};
use crate::source::{read_directory, SourceError};

/// Why a reconcile could not run to its end. Partial apply failures are not
/// errors: they are outcomes in the report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("source: {0}")]
    Source(#[from] SourceError),
    #[error("platform: {0}")]
    Platform(#[from] PlatformError),
    #[error("config: {0}")]
    Plan(#[from] PlanError),
    #[error("platform client: {0}")]
    Setup(#[from] ClientSetupError),
    #[error("platform token: {0}")]
    Auth(#[from] crate::platform::AuthError),
    #[error("built-in emulator: {0}")]
    Emulator(#[from] EmulatorError),
    /// Cancelled (SIGTERM or SIGINT) before the plan was made: nothing was sent.
    #[error("stopped before the plan was made (shutting down); nothing was changed")]
    Interrupted,
    /// The run deadline passed while the source was read.
    #[error("source: the run deadline of {} s (platform.run_deadline_secs) passed while the source was read", .0.as_secs())]
    SourceDeadline(std::time::Duration),
}

impl RunError {
    pub fn is_auth(&self) -> bool {
        matches!(self, RunError::Platform(e) if e.is_auth()) || matches!(self, RunError::Auth(_))
    }

    /// The run was cancelled before its plan was made.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, RunError::Interrupted)
    }
}

/// A platform client, and the in-process emulator behind it when the config
/// asks for the built-in one.
pub struct Connection {
    pub client: PlatformClient,
    emulator: Option<RunningEmulator>,
}

impl Connection {
    pub async fn open(settings: &PlatformSettings) -> Result<Connection, RunError> {
        let (url, auth, emulator) = match &settings.target {
            PlatformTarget::Url(url) => {
                let auth = match &settings.auth {
                    Some(a) => a.clone(),
                    None => AuthMethod::from_environment()?,
                };
                (url.clone(), auth, None)
            }
            PlatformTarget::Emulator { state, seed } => {
                // A fresh random token each run: it never leaves this process.
                let token = uuid::Uuid::new_v4().to_string();
                let mut options = EmulatorOptions::local(&token);
                options.state_file = Some(state.clone());
                options.seed = seed.as_deref().map(Seed::load).transpose()?;
                let running = emulator::start(options).await?;
                let url = running.url().parse().map_err(|e: url::ParseError| {
                    ClientSetupError::BadUrl {
                        url: running.url(),
                        detail: e.to_string(),
                    }
                })?;
                let auth = AuthMethod::StaticToken(SecretSource::Value(token.into()));
                (url, auth, Some(running))
            }
        };
        let mut config = PlatformConfig::new(url, auth);
        config.connect_timeout = settings.connect_timeout;
        config.request_timeout = settings.request_timeout;
        config.ca_file = settings.ca_file.clone();
        config.requests_per_second = settings.requests_per_second;
        config.max_concurrency = settings.max_concurrency;
        config.retry = settings.retry.clone();
        config.run_deadline = Some(settings.run_deadline);
        config.batch_mutations = settings.batch_mutations;
        config.batch_pages = settings.batch_pages;
        Ok(Connection {
            client: PlatformClient::new(config)?,
            emulator,
        })
    }

    /// Stops the in-process emulator, if any.
    pub async fn close(self) -> Result<(), RunError> {
        if let Some(e) = self.emulator {
            e.shutdown().await?;
        }
        Ok(())
    }
}

/// Apply, or only plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Plan only (`plan`, `sync --dry-run`), the delete budgets in force.
    Plan,
    /// Plan only, showing what `--allow-deletes` would do
    /// (`plan --allow-deletes`, `sync --dry-run --allow-deletes`).
    PlanAllowingDeletes,
    Apply {
        allow_deletes: bool,
    },
}

impl Mode {
    /// Plan only, with `--allow-deletes` given or not.
    pub fn plan(allow_deletes: bool) -> Mode {
        if allow_deletes {
            Mode::PlanAllowingDeletes
        } else {
            Mode::Plan
        }
    }

    /// Whether the delete budgets are lifted for this run.
    pub fn allow_deletes(self) -> bool {
        matches!(
            self,
            Mode::PlanAllowingDeletes
                | Mode::Apply {
                    allow_deletes: true
                }
        )
    }

    /// Whether this run sends mutations.
    pub fn applies(self) -> bool {
        matches!(self, Mode::Apply { .. })
    }

    /// `plan` or `sync`, as logs and JSON name the run.
    pub fn name(self) -> &'static str {
        if self.applies() {
            "sync"
        } else {
            "plan"
        }
    }
}

/// What one reconcile did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reconcile {
    pub plan: Plan,
    /// Whether the platform was read in full or incrementally, and why
    /// (None for `dirsync apply`, which reads only the plan's records).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_read: Option<PlatformRead>,
    /// Non-empty: the plan was blocked and nothing was sent.
    pub blocked: Vec<BlockReason>,
    pub allow_deletes: bool,
    /// Present when the plan was applied.
    pub report: Option<ApplyReport>,
    pub requests: Requests,
    pub duration_ms: u64,
}

/// A reconcile up to its decision: both sides read, the plan made and
/// checked by the guards, nothing sent yet. `sync` shows it (and, on a
/// terminal, asks) before [`Prepared::apply`]; `plan --out` saves it.
#[derive(Debug)]
pub struct Prepared {
    pub plan: Plan,
    /// The platform's view the plan was computed from, and how it was read.
    pub view: PlatformView,
    pub blocked: Vec<BlockReason>,
    pub allow_deletes: bool,
    started: Instant,
    before: RequestStats,
}

impl Prepared {
    /// What may be sent ([`guard::sendable`]): the whole plan, the plan
    /// without its deletes, or nothing (None).
    pub fn sendable(&self) -> Option<std::borrow::Cow<'_, Plan>> {
        guard::sendable(&self.plan, &self.blocked)
    }

    /// Whether applying would send at least one mutation.
    pub fn has_sendable(&self) -> bool {
        self.sendable().is_some_and(|p| !p.operations.is_empty())
    }

    /// Applies what may be sent and returns the whole reconcile. Operations
    /// not started once `cancel` fires are skipped ("shutting down").
    pub async fn apply(
        self,
        config: &Config,
        connection: &Connection,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Reconcile {
        let report = match self.sendable().as_deref() {
            Some(send) if !send.is_empty() => {
                // Enough operations in flight to fill each document.
                let options = ApplyOptions {
                    concurrency: config.policy.apply_concurrency
                        * connection.client.mutations_per_request(),
                    cancel: cancel.clone(),
                };
                Some(
                    apply(
                        send,
                        &self.view.snapshot,
                        &connection.client,
                        &options,
                        progress,
                    )
                    .await,
                )
            }
            Some(_) => Some(ApplyReport::default()),
            None => None,
        };
        crate::platform_view::remember(config, &connection.client, &self.view, report.as_ref());
        self.finish(connection, report)
    }

    /// The reconcile without an apply (a plan, or a sync declined at the prompt).
    pub fn without_apply(self, connection: &Connection) -> Reconcile {
        self.finish(connection, None)
    }

    fn finish(self, connection: &Connection, report: Option<ApplyReport>) -> Reconcile {
        let after = connection.client.stats();
        Reconcile {
            plan: self.plan,
            platform_read: Some(self.view.read),
            blocked: self.blocked,
            allow_deletes: self.allow_deletes,
            report,
            requests: Requests {
                sent: after.requests - self.before.requests,
                throttled: after.throttled - self.before.throttled,
            },
            duration_ms: self.started.elapsed().as_millis() as u64,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Requests {
    pub sent: u64,
    pub throttled: u64,
}

impl From<RequestStats> for Requests {
    fn from(s: RequestStats) -> Self {
        Requests {
            sent: s.requests,
            throttled: s.throttled,
        }
    }
}

/// Runs one reconcile. The source and the platform are read concurrently;
/// a failure of either ends the run before anything is planned.
pub async fn reconcile(
    config: &Config,
    connection: &Connection,
    mode: Mode,
    progress: &dyn Progress,
) -> Result<Reconcile, RunError> {
    reconcile_cancellable(
        config,
        connection,
        mode,
        progress,
        &CancellationToken::new(),
    )
    .await
}

/// [`reconcile`] that stops once `cancel` fires: no further request leaves
/// the client (those in flight finish), and operations not started are
/// skipped ("shutting down"). Cancelled before the plan is made, it returns
/// [`RunError::Interrupted`].
///
/// The connection's run deadline (`platform.run_deadline_secs`) bounds the
/// whole: reading the source, reading the platform, and the apply, whose
/// operations not started by then are skipped.
pub async fn reconcile_cancellable(
    config: &Config,
    connection: &Connection,
    mode: Mode,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Reconcile, RunError> {
    let prepared = prepare(config, connection, mode.allow_deletes(), cancel).await?;
    Ok(if mode.applies() {
        prepared.apply(config, connection, progress, cancel).await
    } else {
        prepared.without_apply(connection)
    })
}

/// Reads both sides, plans and checks the guards; sends nothing. The first
/// half of [`reconcile_cancellable`], for callers that show the plan (or
/// save it) before deciding.
pub async fn prepare(
    config: &Config,
    connection: &Connection,
    allow_deletes: bool,
    cancel: &CancellationToken,
) -> Result<Prepared, RunError> {
    let started = Instant::now();
    let client = &connection.client;
    client.stop_when(cancel);
    let before = client.stats();
    crate::platform_view::recall_rate(config, client);
    let platform = crate::platform_view::read(config, client);
    let source = async {
        match client.deadline() {
            Some(at) => match tokio::time::timeout_at(at, read_directory(config)).await {
                Ok(read) => read.map_err(RunError::from),
                Err(_) => Err(RunError::SourceDeadline(config.platform.run_deadline)),
            },
            None => read_directory(config).await.map_err(RunError::from),
        }
    };
    let (directory, mut view) =
        tokio::try_join!(source, async { platform.await.map_err(RunError::from) })
            .map_err(interrupted)?;
    // A customer delete takes everything the customer holds: read that for
    // the customers the plan may delete, or the planner keeps them.
    let leaving = customers_to_inspect(&directory, &view.snapshot, &config.policy);
    if !leaving.is_empty() {
        view.snapshot.holdings = client
            .customer_holdings(&leaving)
            .await
            .map_err(|e| interrupted(e.into()))?;
    }
    warn_refused(&directory.refused);
    let plan = plan(
        &directory,
        &view.snapshot,
        &config.policy,
        &config.mapping.roles,
    )?;
    let blocked = guard::check_source(&plan, &directory, &config.policy, allow_deletes);
    Ok(Prepared {
        plan,
        view,
        blocked,
        allow_deletes,
        started,
        before,
    })
}

/// How many refused records get a WARN line of their own; the rest are counted.
pub const REFUSED_WARNINGS: usize = 20;

/// One WARN line per refused record (its origin: file and line, entry or
/// DN), up to [`REFUSED_WARNINGS`], then one line with the count of the rest.
fn warn_refused(refused: &[RefusedRecord]) {
    for r in refused.iter().take(REFUSED_WARNINGS) {
        tracing::warn!(
            origin = %r.origin,
            field = r.field.as_deref().unwrap_or(""),
            "Record refused: {r}. What it names is neither updated nor deleted this run."
        );
    }
    if refused.len() > REFUSED_WARNINGS {
        tracing::warn!(
            refused = refused.len(),
            "{} more records refused (not logged one by one); the plan lists them all.",
            refused.len() - REFUSED_WARNINGS
        );
    }
}

/// A platform read that was not sent because the run is shutting down is
/// the run's interruption, not a platform failure.
fn interrupted(e: RunError) -> RunError {
    match e {
        RunError::Platform(e)
            if e.stop_reason() == Some(crate::platform::StopReason::ShuttingDown) =>
        {
            RunError::Interrupted
        }
        other => other,
    }
}
