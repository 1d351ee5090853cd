//! One reconcile, end to end: read the directory and the platform, plan,
//! check the guards, and (when asked) apply. `plan`, `sync` and the daemon
//! all go through [`reconcile`]; a dry run is the same path without apply.

use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::apply::{apply, ApplyOptions, ApplyReport, Progress};
use crate::config::{Config, PlatformSettings, PlatformTarget};
use crate::emulator::{self, EmulatorError, EmulatorOptions, RunningEmulator, Seed};
use crate::guard::{self, BlockReason};
use crate::plan::{customers_to_inspect, plan, Plan, PlanError};
use crate::platform::{
    AuthMethod, ClientSetupError, PlatformClient, PlatformConfig, PlatformError, RequestStats,
    SecretSource,
};
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
    Plan,
    Apply { allow_deletes: bool },
}

/// What one reconcile did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reconcile {
    pub plan: Plan,
    /// Non-empty: the plan was blocked and nothing was sent.
    pub blocked: Vec<BlockReason>,
    pub allow_deletes: bool,
    /// Present when the plan was applied.
    pub report: Option<ApplyReport>,
    pub requests: Requests,
    pub duration_ms: u64,
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
    let started = Instant::now();
    let client = &connection.client;
    client.stop_when(cancel);
    let before = client.stats();
    let platform = async {
        let who = client.authenticated_user().await?;
        tracing::debug!(user = %who.email, "Authenticated.");
        client.snapshot().await
    };
    let source = async {
        match client.deadline() {
            Some(at) => match tokio::time::timeout_at(at, read_directory(config)).await {
                Ok(read) => read.map_err(RunError::from),
                Err(_) => Err(RunError::SourceDeadline(config.platform.run_deadline)),
            },
            None => read_directory(config).await.map_err(RunError::from),
        }
    };
    let (directory, snapshot) =
        tokio::try_join!(source, async { platform.await.map_err(RunError::from) })
            .map_err(interrupted)?;
    // A customer delete takes everything the customer holds: read that for
    // the customers the plan may delete, or the planner keeps them.
    let mut snapshot = snapshot;
    let leaving = customers_to_inspect(&directory, &snapshot, &config.policy);
    if !leaving.is_empty() {
        snapshot.holdings = client
            .customer_holdings(&leaving)
            .await
            .map_err(|e| interrupted(e.into()))?;
    }
    let plan = plan(&directory, &snapshot, &config.policy, &config.mapping.roles)?;
    let allow_deletes = matches!(
        mode,
        Mode::Apply {
            allow_deletes: true
        }
    );
    let blocked = guard::check_source(&plan, &directory, &config.policy, allow_deletes);
    // Everything, the plan without its deletes (when the only reasons are
    // withheld deletes: creates and updates go on), or nothing.
    let sendable = guard::sendable(&plan, &blocked);
    let report = match (mode, sendable.as_deref()) {
        (Mode::Apply { .. }, Some(send)) if !send.is_empty() => {
            let options = ApplyOptions {
                concurrency: config.policy.apply_concurrency,
                cancel: cancel.clone(),
            };
            Some(apply(send, &snapshot, client, &options, progress).await)
        }
        (Mode::Apply { .. }, Some(_)) => Some(ApplyReport::default()),
        _ => None,
    };
    drop(sendable);
    let after = client.stats();
    Ok(Reconcile {
        plan,
        blocked,
        allow_deletes,
        report,
        requests: Requests {
            sent: after.requests - before.requests,
            throttled: after.throttled - before.throttled,
        },
        duration_ms: started.elapsed().as_millis() as u64,
    })
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
