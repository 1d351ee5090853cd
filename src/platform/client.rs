//! `PlatformClient`: reads and writes customers and customer users through
//! the platform's GraphQL API.
//!
//! Every request goes through [`PlatformClient::execute`]: one concurrency
//! cap and one pacer shared by the whole run (the rate found by
//! [`super::rate`], under the configured cap), a fresh bearer token, the HTTP
//! status classified into [`PlatformError`], and retries for what is
//! retryable. A list's first page gives its `totalCount`; the other pages
//! are then read by `offset`, several at a time, and put back in order
//! ([`read_remaining_pages`]: any sign that the list changed meanwhile is an
//! error, never a snapshot with holes).
//!
//! The client stops as a whole, never request by request:
//!
//! - **Stopped.** After the first authentication failure (for good), once
//!   the run's cancel token fires ([`PlatformClient::stop_when`]), or once the
//!   run deadline passes, no further request leaves. Every wait (the
//!   concurrency cap, the rate limiter, a 429 pause, a token refresh, the
//!   backoff between attempts) is raced against that, and it is checked
//!   again right before each request is sent. Requests already on the wire
//!   finish, except at the deadline, which abandons them too.
//! - **Paused.** A 429 sets a client-wide "not before" instant from its
//!   `Retry-After`: no request is sent before it. A 429 is the platform
//!   pacing us, not a failure: it does not use up the request's attempts;
//!   each request waits out at most [`MAX_THROTTLED_WAITS`] of them, and the
//!   run deadline bounds the whole.

use std::collections::HashSet;
use std::future::Future;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::stream::{self, StreamExt, TryStreamExt};
use graphql_client::GraphQLQuery;
use reqwest::header::{HeaderMap, AUTHORIZATION, RETRY_AFTER};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::auth::{AuthMethod, TokenProvider};
use super::batch::Batcher;
use super::error::{PlatformError, StopReason};
use super::operations::{self as ops, *};
use super::rate::Pacer;
use crate::model::{
    AuthenticatedUser, CustomerChanges, NewCustomer, NewCustomerUser, PlatformCustomer, PlatformId,
    PlatformUser, Role, UserChanges,
};
use crate::retry::{parse_retry_after, with_retries_or, RetryPolicy};

/// Largest page the platform serves (and its default).
pub const MAX_PAGE_SIZE: i64 = 100;

/// The whole-run deadline when none is configured: 30 minutes. Room for a
/// steady-state read of a million users at the platform's observed 20
/// requests per second (about 10,000 pages, 9 minutes) or some 30,000
/// changes; a larger first sync goes on at the next run, which plans what
/// is left.
pub const DEFAULT_RUN_DEADLINE: Duration = Duration::from_secs(1800);

/// The default cap on requests per second (`platform.requests_per_second`):
/// twice the ceiling commonly observed (about 20, `platform::rate`). A run
/// with no ceiling remembered starts just under it (97%), so against a
/// ceiling at or above 40 it draws no 429 at all, and against a lower one
/// its first 429 comes within the first second and measures it. A
/// principal known to allow more raises it.
pub const DEFAULT_RATE_CAP: u32 = 40;

/// The default number of requests in flight (`platform.max_concurrency`):
/// enough to keep 40 requests a second going at 200 ms a round trip.
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;

/// 429s one request waits out before it fails; they do not count as attempts.
pub const MAX_THROTTLED_WAITS: u32 = 100;

/// The client-wide pause after a 429 that names no `Retry-After`.
const DEFAULT_THROTTLE_PAUSE: Duration = Duration::from_secs(1);

/// Everything the client needs to reach the platform.
#[derive(Clone, Debug)]
pub struct PlatformConfig {
    /// The platform's base URL (`https://app.prismatic.io`); requests go to `{url}/api`.
    pub url: Url,
    pub auth: AuthMethod,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// An extra PEM CA certificate to trust besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The cap on requests per second for the whole run: the rate starts
    /// at it (or at a ceiling an earlier run measured) and finds the
    /// platform's ceiling under it (`super::rate`).
    pub requests_per_second: NonZeroU32,
    /// Requests in flight at once, for the whole run.
    pub max_concurrency: usize,
    pub retry: RetryPolicy,
    /// Nodes asked for per page (1..=100).
    pub page_size: i64,
    /// No request leaves, and those in flight are abandoned, once this much
    /// time has passed since the client was built (one client per run).
    pub run_deadline: Option<Duration>,
    /// The most mutations sent in one document (`platform.batch.mutations`;
    /// 1: each alone). See `super::batch`.
    pub batch_mutations: usize,
    /// The most list pages read in one document (`platform.batch.pages`).
    pub batch_pages: usize,
}

impl PlatformConfig {
    /// The defaults: 10 s connect timeout, 60 s request timeout, at most 50
    /// requests per second (the rate starts there and finds the platform's
    /// ceiling, observed at ~20, under it at its first 429), 8 in flight,
    /// pages of 100, a run deadline of 30 minutes.
    pub fn new(url: Url, auth: AuthMethod) -> PlatformConfig {
        PlatformConfig {
            url,
            auth,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            ca_file: None,
            requests_per_second: NonZeroU32::new(DEFAULT_RATE_CAP).unwrap_or(NonZeroU32::MIN),
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            retry: RetryPolicy::default(),
            page_size: MAX_PAGE_SIZE,
            run_deadline: Some(DEFAULT_RUN_DEADLINE),
            batch_mutations: 1,
            batch_pages: 1,
        }
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error(
        "platform URL {url} must use https (plain http is allowed only for loopback addresses)"
    )]
    InsecureUrl { url: String },
    #[error("platform URL {url} cannot be used: {detail}")]
    BadUrl { url: String, detail: String },
    #[error("cannot read the CA file {}: {source}", path.display())]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA file {} holds no usable PEM certificate: {source}", path.display())]
    CaCert {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// Requests this client has sent, for run summaries and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestStats {
    pub requests: u64,
    pub throttled: u64,
}

/// A connection to the platform's GraphQL API.
#[derive(Clone)]
pub struct PlatformClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    endpoint: Url,
    tokens: TokenProvider,
    pacer: Pacer,
    in_flight: Semaphore,
    /// Pages of one list read at once (the concurrency cap bounds the whole).
    page_concurrency: usize,
    retry: RetryPolicy,
    request_timeout: Duration,
    page_size: i64,
    requests: AtomicU64,
    /// Moves on as each request leaves (what `requests` counts), for those
    /// that wait for a request to be sent (`super::full_read`).
    sends: watch::Sender<u64>,
    throttled: AtomicU64,
    /// Cancelled on the first authentication failure: wakes every waiter.
    auth_failed: CancellationToken,
    /// The run's cancel token ([`PlatformClient::stop_when`]).
    shutdown: Mutex<Option<CancellationToken>>,
    /// The instant the run deadline passes, and the deadline itself.
    deadline: Option<(Instant, Duration)>,
    /// No request is sent before this (set by a 429's `Retry-After`).
    not_before: Mutex<Option<Instant>>,
    /// The platform's clock minus ours, from the last answer's `Date` header.
    clock_offset: Mutex<Option<chrono::TimeDelta>>,
    batchers: Batchers,
}

/// The batchers in use (None: that kind is sent one per request).
struct Batchers {
    mutations: Option<Batcher>,
    pages: Option<Batcher>,
}

impl Batchers {
    /// The batcher an operation goes through: mutations, and the pages of
    /// the two full listings (by operation name).
    fn for_document(&self, operation: &str, query: &str) -> Option<&Batcher> {
        if query.trim_start().starts_with("mutation") {
            self.mutations.as_ref()
        } else if matches!(operation, "ListCustomers" | "ListCustomerUsers") {
            self.pages.as_ref()
        } else {
            None
        }
    }
}

impl std::fmt::Debug for PlatformClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformClient")
            .field("endpoint", &self.inner.endpoint.as_str())
            .field("tokens", &self.inner.tokens)
            .finish_non_exhaustive()
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

impl PlatformClient {
    pub fn new(config: PlatformConfig) -> Result<PlatformClient, ClientSetupError> {
        let url = config.url.clone();
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(ClientSetupError::InsecureUrl {
                    url: url.to_string(),
                })
            }
            other => {
                return Err(ClientSetupError::BadUrl {
                    url: url.to_string(),
                    detail: format!("unsupported scheme {other}"),
                })
            }
        }
        let mut base = url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let endpoint = base.join("api").map_err(|e| ClientSetupError::BadUrl {
            url: url.to_string(),
            detail: e.to_string(),
        })?;

        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(false)
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("dirsync/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|source| ClientSetupError::CaFile {
                path: path.clone(),
                source,
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|source| {
                ClientSetupError::CaCert {
                    path: path.clone(),
                    source,
                }
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(ClientSetupError::Http)?;
        let tokens = TokenProvider::new(config.auth.clone(), base, http.clone());
        Ok(PlatformClient {
            inner: Arc::new(Inner {
                http,
                endpoint,
                tokens,
                pacer: Pacer::new(config.requests_per_second),
                in_flight: Semaphore::new(config.max_concurrency.max(1)),
                // Enough pages asked for at once to fill every document in flight.
                page_concurrency: config.max_concurrency.max(1) * config.batch_pages.max(1),
                batchers: Batchers {
                    mutations: (config.batch_mutations > 1)
                        .then(|| Batcher::new("mutations", config.batch_mutations)),
                    pages: (config.batch_pages > 1)
                        .then(|| Batcher::new("pages", config.batch_pages)),
                },
                retry: config.retry,
                request_timeout: config.request_timeout,
                page_size: config.page_size.clamp(1, MAX_PAGE_SIZE),
                requests: AtomicU64::new(0),
                sends: watch::Sender::new(0),
                throttled: AtomicU64::new(0),
                auth_failed: CancellationToken::new(),
                shutdown: Mutex::new(None),
                deadline: config
                    .run_deadline
                    .map(|d| (Instant::now().checked_add(d).unwrap_or_else(far_future), d)),
                not_before: Mutex::new(None),
                clock_offset: Mutex::new(None),
            }),
        })
    }

    /// Once `cancel` fires, no further request leaves this client (those
    /// in flight finish). Replaces a token given before.
    pub fn stop_when(&self, cancel: &CancellationToken) {
        *lock(&self.inner.shutdown) = Some(cancel.clone());
    }

    /// Why the client sends nothing more, if it has stopped.
    pub fn stopped(&self) -> Option<StopReason> {
        let inner = &*self.inner;
        if inner.auth_failed.is_cancelled() {
            return Some(StopReason::AuthFailed);
        }
        if lock(&inner.shutdown)
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
        {
            return Some(StopReason::ShuttingDown);
        }
        match inner.deadline {
            Some((at, d)) if Instant::now() >= at => Some(StopReason::Deadline(d)),
            _ => None,
        }
    }

    /// When the run deadline passes, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline.map(|(at, _)| at)
    }

    /// Resolves when the client stops, with why.
    pub(super) fn batcher(&self, what: &str) -> Option<&Batcher> {
        match what {
            "mutations" => self.inner.batchers.mutations.as_ref(),
            _ => self.inner.batchers.pages.as_ref(),
        }
    }

    /// Starts the rate from a ceiling an earlier run measured (nothing
    /// once a request has gone).
    pub fn start_at_ceiling(&self, ceiling: f64) {
        self.inner.pacer.start_at_ceiling(ceiling);
    }

    /// The run's writes begin: the rate's opening ends (`rate` module docs).
    pub fn begin_writes(&self) {
        self.inner.pacer.begin_writes();
    }

    /// When a request asked for now could leave (no slot taken).
    pub(super) fn next_slot(&self) -> tokio::time::Instant {
        self.inner.pacer.next_slot()
    }

    /// The platform's ceiling as this run measured it (or started from).
    pub fn measured_ceiling(&self) -> Option<f64> {
        self.inner.pacer.ceiling()
    }

    /// The most mutations a document carries now (1 unbatched).
    pub fn mutations_per_request(&self) -> usize {
        self.batcher("mutations").map_or(1, Batcher::size)
    }

    pub(super) fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry.clone()
    }

    pub(super) async fn interrupted(&self) -> StopReason {
        let inner = &*self.inner;
        let shutdown = lock(&inner.shutdown).clone();
        let deadline = inner.deadline;
        tokio::select! {
            () = inner.auth_failed.cancelled() => {}
            () = async {
                match &shutdown {
                    Some(t) => t.cancelled().await,
                    None => std::future::pending().await,
                }
            } => {}
            () = async {
                match deadline {
                    Some((at, _)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        self.stopped().unwrap_or(StopReason::ShuttingDown)
    }

    /// `fut`, unless the client stops first.
    async fn unless_stopped<F: Future>(
        &self,
        operation: &'static str,
        fut: F,
    ) -> Result<F::Output, PlatformError> {
        if let Some(reason) = self.stopped() {
            return Err(PlatformError::Stopped { operation, reason });
        }
        tokio::select! {
            biased;
            reason = self.interrupted() => Err(PlatformError::Stopped { operation, reason }),
            out = fut => Ok(out),
        }
    }

    /// Waits until no 429 pause is in force (a 429 that arrives meanwhile
    /// extends the wait). A pause longer than the policy's limit fails at once.
    async fn wait_out_pause(&self, operation: &'static str) -> Result<(), PlatformError> {
        loop {
            let until = match *lock(&self.inner.not_before) {
                Some(at) if at > Instant::now() => at,
                _ => return Ok(()),
            };
            let wait = until.saturating_duration_since(Instant::now());
            let limit = self.inner.retry.max_retry_after;
            if wait > limit {
                return Err(PlatformError::RetryAfterTooLong {
                    operation,
                    wait,
                    limit,
                });
            }
            self.unless_stopped(operation, tokio::time::sleep_until(until))
                .await?;
        }
    }

    /// A 429 pauses the whole client until its `Retry-After` has passed;
    /// returns when the pause ends.
    fn pause(&self, retry_after: Option<Duration>) -> Instant {
        let wait = retry_after.unwrap_or(DEFAULT_THROTTLE_PAUSE);
        let until = Instant::now().checked_add(wait).unwrap_or_else(far_future);
        let mut not_before = lock(&self.inner.not_before);
        match *not_before {
            Some(at) if at >= until => at,
            _ => {
                *not_before = Some(until);
                until
            }
        }
    }

    fn fail_auth(&self) {
        if !self.inner.auth_failed.is_cancelled() {
            tracing::error!("Authentication failed: this client sends no further request.");
            self.inner.auth_failed.cancel();
        }
    }

    pub fn stats(&self) -> RequestStats {
        RequestStats {
            requests: self.inner.requests.load(Ordering::Relaxed),
            throttled: self.inner.throttled.load(Ordering::Relaxed),
        }
    }

    /// The request rate the client paces at now, in requests per second.
    pub fn current_rate(&self) -> f64 {
        self.inner.pacer.current()
    }

    /// Sends one operation, with retries, and returns its `data`.
    pub(super) async fn execute<Q: GraphQLQuery>(
        &self,
        variables: Q::Variables,
    ) -> Result<Q::ResponseData, PlatformError> {
        let body = Q::build_query(variables);
        let operation = body.operation_name;
        if let Some(batcher) = self.inner.batchers.for_document(operation, body.query) {
            return batcher.submit(self, operation, &body).await;
        }
        with_retries_or(
            &self.inner.retry,
            operation,
            || self.attempt_paced(operation, &body, data_or_error::<Q::ResponseData>),
            || async move {
                PlatformError::Stopped {
                    operation,
                    reason: self.interrupted().await,
                }
            },
        )
        .await
    }

    /// One attempt, sent again after each 429 (the whole client waits out
    /// its `Retry-After` first): a 429 does not count as a failed attempt.
    pub(super) async fn attempt_paced<B, D, R>(
        &self,
        operation: &'static str,
        body: &B,
        finish: fn(&'static str, graphql_client::Response<D>) -> Result<R, PlatformError>,
    ) -> Result<R, PlatformError>
    where
        B: serde::Serialize,
        D: serde::de::DeserializeOwned,
    {
        let mut throttled = 0u32;
        loop {
            match self.attempt(operation, body, finish).await {
                Err(e @ PlatformError::Throttled { .. }) => {
                    throttled += 1;
                    let limit = self.inner.retry.max_retry_after;
                    match e.retry_after() {
                        Some(wait) if wait > limit => {
                            return Err(PlatformError::RetryAfterTooLong {
                                operation,
                                wait,
                                limit,
                            })
                        }
                        _ if throttled >= MAX_THROTTLED_WAITS => {
                            return Err(PlatformError::RetriesExhausted {
                                operation,
                                attempts: throttled,
                                last: Box::new(e),
                            })
                        }
                        wait => tracing::info!(
                            operation,
                            throttled,
                            wait_ms = wait.unwrap_or(DEFAULT_THROTTLE_PAUSE).as_millis() as u64,
                            "Throttled by the platform (HTTP 429): every request waits."
                        ),
                    }
                }
                other => return other,
            }
        }
    }

    async fn attempt<B, D, R>(
        &self,
        operation: &'static str,
        body: &B,
        finish: fn(&'static str, graphql_client::Response<D>) -> Result<R, PlatformError>,
    ) -> Result<R, PlatformError>
    where
        B: serde::Serialize,
        D: serde::de::DeserializeOwned,
    {
        let inner = &*self.inner;
        let _permit = self
            .unless_stopped(operation, inner.in_flight.acquire())
            .await?
            .map_err(|_| PlatformError::Protocol {
                operation,
                detail: "the client is shutting down".to_owned(),
            })?;
        loop {
            self.wait_out_pause(operation).await?;
            self.unless_stopped(operation, inner.pacer.until_ready())
                .await?;
            // A 429 may have come in while this request waited for its slot.
            if lock(&inner.not_before).is_none_or(|at| at <= Instant::now()) {
                break;
            }
        }
        let token = self
            .unless_stopped(operation, inner.tokens.bearer())
            .await?
            .map_err(|source| {
                self.fail_auth();
                PlatformError::Auth { operation, source }
            })?;
        self.wait_out_pause(operation).await?;
        // Checked after every wait, right before the request leaves.
        if let Some(reason) = self.stopped() {
            return Err(PlatformError::Stopped { operation, reason });
        }
        inner.requests.fetch_add(1, Ordering::Relaxed);
        inner.sends.send_modify(|n| *n += 1);
        tracing::debug!(operation, "Sending request.");
        let sent = inner.pacer.sent();
        let exchange = self.exchange(operation, body, token, sent, finish);
        match inner.deadline {
            None => exchange.await,
            Some((at, d)) => tokio::select! {
                out = exchange => out,
                () = tokio::time::sleep_until(at) => Err(PlatformError::Abandoned {
                    operation,
                    reason: StopReason::Deadline(d),
                }),
            },
        }
    }

    /// Sends the request and reads its answer.
    async fn exchange<B, D, R>(
        &self,
        operation: &'static str,
        body: &B,
        token: secrecy::SecretString,
        sent: Instant,
        finish: fn(&'static str, graphql_client::Response<D>) -> Result<R, PlatformError>,
    ) -> Result<R, PlatformError>
    where
        B: serde::Serialize,
        D: serde::de::DeserializeOwned,
    {
        let inner = &*self.inner;
        let response = inner
            .http
            .post(inner.endpoint.clone())
            .header(AUTHORIZATION, format!("Bearer {}", token.expose_secret()))
            .json(body)
            .send()
            .await
            .map_err(|e| self.transport_error(operation, e))?;
        self.note_platform_clock(response.headers());
        let status = response.status();
        if !status.is_success() {
            let retry_after = retry_after(response.headers());
            return Err(match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    self.fail_auth();
                    PlatformError::Unauthorized {
                        operation,
                        status: status.as_u16(),
                    }
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    // Paused before counted: whoever sees the count sees the pause.
                    let resume_at = self.pause(retry_after);
                    inner.pacer.throttled(sent, resume_at);
                    inner.throttled.fetch_add(1, Ordering::Relaxed);
                    PlatformError::Throttled {
                        operation,
                        retry_after,
                    }
                }
                s if s.is_server_error() => PlatformError::Unavailable {
                    operation,
                    status: s.as_u16(),
                    retry_after,
                },
                StatusCode::NOT_FOUND => PlatformError::EndpointNotFound {
                    operation,
                    url: inner.endpoint.to_string(),
                },
                s => PlatformError::UnexpectedStatus {
                    operation,
                    status: s.as_u16(),
                    body: short_text(&response.text().await.unwrap_or_default()),
                },
            });
        }
        // Let through by the platform's limiter, whatever the body says.
        inner.pacer.answered(sent);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(operation, e))?;
        let parsed: graphql_client::Response<D> =
            serde_json::from_slice(&bytes).map_err(|e| PlatformError::Decode {
                operation,
                detail: e.to_string(),
            })?;
        finish(operation, parsed)
    }

    fn transport_error(&self, operation: &'static str, e: reqwest::Error) -> PlatformError {
        let url = self.inner.endpoint.to_string();
        let cause = innermost_cause(&e);
        if e.is_timeout() {
            PlatformError::Timeout {
                operation,
                timeout: self.inner.request_timeout,
            }
        } else if is_certificate_error(&e) {
            PlatformError::Certificate {
                operation,
                url,
                cause,
            }
        } else if e.is_connect() {
            PlatformError::Connect {
                operation,
                url,
                cause,
            }
        } else {
            PlatformError::Transport {
                operation,
                url,
                cause,
            }
        }
    }

    /// Learns how far the platform's clock is from ours from an answer's
    /// `Date` header (whole seconds, so the platform's time is up to a
    /// second later than it says).
    fn note_platform_clock(&self, headers: &HeaderMap) {
        let Some(date) = headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
        else {
            return;
        };
        let platform: chrono::DateTime<chrono::Utc> = date.into();
        *lock(&self.inner.clock_offset) = Some(platform - chrono::Utc::now());
    }

    /// `local` (a time on this machine's clock) on the platform's clock, as
    /// far as the answers' `Date` headers tell: rounded down to be early
    /// rather than late; `local` itself before any answer came (or when the
    /// platform sends no `Date`).
    pub fn on_platform_clock(
        &self,
        local: chrono::DateTime<chrono::Utc>,
    ) -> chrono::DateTime<chrono::Utc> {
        match *lock(&self.inner.clock_offset) {
            Some(offset) => local + offset - chrono::TimeDelta::seconds(1),
            None => local,
        }
    }

    /// The token's own user: a cheap request that proves URL and token work.
    pub async fn authenticated_user(&self) -> Result<AuthenticatedUser, PlatformError> {
        let data = self
            .execute::<ops::AuthenticatedUser>(authenticated_user::Variables)
            .await?;
        let u = data.authenticated_user;
        Ok(AuthenticatedUser {
            id: PlatformId::from(u.id),
            email: u.email,
            name: u.name,
            customer_id: u.customer.map(|c| PlatformId::from(c.id)),
        })
    }

    /// The roles a customer user can be given.
    pub async fn customer_roles(&self) -> Result<Vec<Role>, PlatformError> {
        let data = self
            .execute::<CustomerRoles>(customer_roles::Variables)
            .await?;
        Ok(data
            .customer_roles
            .into_iter()
            .flatten()
            .map(Role::from)
            .collect())
    }

    /// Every non-system customer, all pages.
    pub async fn list_customers(&self) -> Result<Vec<PlatformCustomer>, PlatformError> {
        let first = self.list_customers_page(None, None).await?;
        self.more_customers(first, None).await
    }

    /// One page of the non-system customers (those changed at or after
    /// `since`, when given), at `offset` (the first page at None).
    pub(super) async fn list_customers_page(
        &self,
        offset: Option<i64>,
        since: Option<&str>,
    ) -> Result<Page<PlatformCustomer>, PlatformError> {
        let page = self
            .execute::<ListCustomers>(list_customers::Variables {
                offset,
                first: self.inner.page_size,
                updated_since: since.map(str::to_owned),
            })
            .await?
            .customers;
        Page::of(page.nodes, page.page_info.has_next_page, page.total_count)
    }

    /// The whole list, given its first page: the other pages by offset.
    pub(super) async fn more_customers(
        &self,
        first: Page<PlatformCustomer>,
        since: Option<&str>,
    ) -> Result<Vec<PlatformCustomer>, PlatformError> {
        self.announce_pages(&first);
        read_remaining_pages(
            "ListCustomers",
            self.inner.page_concurrency,
            first,
            |offset| self.list_customers_page(offset, since),
        )
        .await
    }

    /// Every customer user (`customer_Isnull: false`), all pages.
    pub async fn list_customer_users(&self) -> Result<Vec<PlatformUser>, PlatformError> {
        let first = self.list_customer_users_page(None, None).await?;
        self.more_customer_users(first, None).await
    }

    /// One page of the customer users (those changed at or after `since`,
    /// when given), at `offset` (the first page at None).
    pub(super) async fn list_customer_users_page(
        &self,
        offset: Option<i64>,
        since: Option<&str>,
    ) -> Result<Page<PlatformUser>, PlatformError> {
        let page = self
            .execute::<ListCustomerUsers>(list_customer_users::Variables {
                offset,
                first: self.inner.page_size,
                updated_since: since.map(str::to_owned),
            })
            .await?
            .users;
        Page::of(page.nodes, page.page_info.has_next_page, page.total_count)
    }

    /// The whole list, given its first page: the other pages by offset.
    pub(super) async fn more_customer_users(
        &self,
        first: Page<PlatformUser>,
        since: Option<&str>,
    ) -> Result<Vec<PlatformUser>, PlatformError> {
        self.announce_pages(&first);
        read_remaining_pages(
            "ListCustomerUsers",
            self.inner.page_concurrency,
            first,
            |offset| self.list_customer_users_page(offset, since),
        )
        .await
    }

    /// Tells the rate how many requests a list's other pages take, once
    /// its first page gave `totalCount` (a long read ends the rate's
    /// opening at once: `rate` module docs).
    pub(super) fn announce_pages<T>(&self, first: &Page<T>) {
        let size = first.items.len();
        if !first.has_next_page || size == 0 {
            return;
        }
        let total = usize::try_from(first.total_count).unwrap_or(usize::MAX);
        let pages = total.saturating_sub(size).div_ceil(size);
        let per_request = self.batcher("pages").map_or(1, Batcher::size).max(1);
        self.inner.pacer.expect(pages.div_ceil(per_request));
    }

    /// Page size asked for.
    pub(super) fn page_size(&self) -> i64 {
        self.inner.page_size
    }

    /// Wakes at each request that leaves this client from now on.
    pub(super) fn sends(&self) -> watch::Receiver<u64> {
        self.inner.sends.subscribe()
    }

    /// Pages of one list read at once.
    pub(super) fn page_concurrency(&self) -> usize {
        self.inner.page_concurrency
    }

    /// The non-system customer carrying `external_id`, if any.
    pub async fn find_customer(
        &self,
        external_id: &str,
    ) -> Result<Option<PlatformCustomer>, PlatformError> {
        let data = self
            .execute::<FindCustomer>(find_customer::Variables {
                external_id: external_id.to_owned(),
            })
            .await?;
        let mut found: Vec<PlatformCustomer> = data
            .customers
            .nodes
            .into_iter()
            .flatten()
            .map(PlatformCustomer::try_from)
            .collect::<Result<_, _>>()?;
        at_most_one("FindCustomer", external_id, &mut found)
    }

    /// The customer user carrying `external_id`, if any.
    pub async fn find_customer_user(
        &self,
        external_id: &str,
    ) -> Result<Option<PlatformUser>, PlatformError> {
        let data = self
            .execute::<FindCustomerUser>(find_customer_user::Variables {
                external_id: external_id.to_owned(),
            })
            .await?;
        let mut found: Vec<PlatformUser> = data
            .users
            .nodes
            .into_iter()
            .flatten()
            .map(PlatformUser::try_from)
            .collect::<Result<_, _>>()?;
        at_most_one("FindCustomerUser", external_id, &mut found)
    }

    /// The customer with platform id `id` as it is now; None when it is gone
    /// (the platform answers an unknown id with null or a "does not exist"
    /// error). `dirsync apply` re-reads what a saved plan touches with it.
    pub async fn get_customer(
        &self,
        id: &PlatformId,
    ) -> Result<Option<PlatformCustomer>, PlatformError> {
        match self
            .execute::<GetCustomer>(get_customer::Variables { id: id.to_string() })
            .await
        {
            Ok(data) => data.customer.map(PlatformCustomer::try_from).transpose(),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The user with platform id `id` as it is now; None when it is gone.
    pub async fn get_user(&self, id: &PlatformId) -> Result<Option<PlatformUser>, PlatformError> {
        match self
            .execute::<GetUser>(get_user::Variables { id: id.to_string() })
            .await
        {
            Ok(data) => data.user.map(PlatformUser::try_from).transpose(),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn create_customer(
        &self,
        new: &NewCustomer,
    ) -> Result<PlatformCustomer, PlatformError> {
        let input = create_customer::CreateCustomerInput {
            name: new.name.clone(),
            description: new.description.clone(),
            external_id: new.external_id.clone(),
            labels: new.labels.as_ref().map(|l| wrap_all(l)),
            allow_embedded_designer: None,
        };
        let data = self
            .execute::<CreateCustomer>(create_customer::Variables { input })
            .await?;
        let payload = data.create_customer.map(|p| (p.errors, p.customer));
        payload_object("createCustomer", payload).and_then(PlatformCustomer::try_from)
    }

    pub async fn update_customer(
        &self,
        id: &PlatformId,
        changes: &CustomerChanges,
    ) -> Result<PlatformCustomer, PlatformError> {
        let input = update_customer::UpdateCustomerInput {
            id: Some(id.to_string()),
            name: changes.name.clone(),
            description: changes.description.clone(),
            external_id: changes.external_id.clone(),
            labels: changes.labels.as_ref().map(|l| wrap_all(l)),
            avatar_url: None,
            allow_embedded_designer: None,
            starred: None,
        };
        let data = self
            .execute::<UpdateCustomer>(update_customer::Variables { input })
            .await?;
        let payload = data.update_customer.map(|p| (p.errors, p.customer));
        payload_object("updateCustomer", payload).and_then(PlatformCustomer::try_from)
    }

    /// Deletes a customer and, on the platform, all its users and instances.
    pub async fn delete_customer(&self, id: &PlatformId) -> Result<(), PlatformError> {
        let input = delete_customer::DeleteCustomerInput {
            id: Some(id.to_string()),
        };
        let data = self
            .execute::<DeleteCustomer>(delete_customer::Variables { input })
            .await?;
        let payload = data.delete_customer.map(|p| (p.errors, p.customer));
        payload_object("deleteCustomer", payload).map(|_| ())
    }

    pub async fn create_customer_user(
        &self,
        new: &NewCustomerUser,
    ) -> Result<PlatformUser, PlatformError> {
        let input = create_customer_user::CreateCustomerUserInput {
            customer: Some(new.customer_id.to_string()),
            email: new.email.clone(),
            role: new.role_id.to_string(),
            name: new.name.clone(),
            phone: new.phone.clone(),
            external_id: new.external_id.clone(),
        };
        let data = self
            .execute::<CreateCustomerUser>(create_customer_user::Variables { input })
            .await?;
        let payload = data.create_customer_user.map(|p| (p.errors, p.user));
        payload_object("createCustomerUser", payload).and_then(PlatformUser::try_from)
    }

    pub async fn update_user(
        &self,
        id: &PlatformId,
        changes: &UserChanges,
    ) -> Result<PlatformUser, PlatformError> {
        let input = update_user::UpdateUserInput {
            id: Some(id.to_string()),
            name: changes.name.clone(),
            phone: changes.phone.clone(),
            role: changes.role_id.as_ref().map(PlatformId::to_string),
            external_id: changes.external_id.clone(),
            avatar_url: None,
            dark_mode: None,
            dark_mode_sync_with_os: None,
        };
        let data = self
            .execute::<UpdateUser>(update_user::Variables { input })
            .await?;
        let payload = data.update_user.map(|p| (p.errors, p.user));
        payload_object("updateUser", payload).and_then(PlatformUser::try_from)
    }

    pub async fn delete_user(&self, id: &PlatformId) -> Result<(), PlatformError> {
        let input = delete_user::DeleteUserInput {
            id: Some(id.to_string()),
        };
        let data = self
            .execute::<DeleteUser>(delete_user::Variables { input })
            .await?;
        let payload = data.delete_user.map(|p| (p.errors, p.user));
        payload_object("deleteUser", payload).map(|_| ())
    }
}

/// A single operation's answer: its `data`, or its top-level `errors`.
pub(super) fn data_or_error<D>(
    operation: &'static str,
    parsed: graphql_client::Response<D>,
) -> Result<D, PlatformError> {
    if let Some(errors) = parsed.errors.filter(|e| !e.is_empty()) {
        return Err(PlatformError::GraphQl {
            operation,
            messages: errors.into_iter().map(|e| e.message).collect(),
        });
    }
    parsed.data.ok_or_else(|| PlatformError::Protocol {
        operation,
        detail: "the response has neither data nor errors".to_owned(),
    })
}

/// What the users of one read have in common, allocated once and shared
/// as each page comes in: one `Arc<Role>` per distinct role, and one
/// customer id per customer. At a million users, a copy of each per user
/// would cost some 300 MiB (a role, its id and name, a 56-character id).
#[derive(Default)]
pub(super) struct Shared {
    roles: std::collections::HashMap<PlatformId, Arc<Role>>,
    customer_ids: HashSet<PlatformId>,
}

impl Shared {
    /// `u` with the role and customer id others of the read have.
    pub(super) fn user(&mut self, u: &mut PlatformUser) {
        let role = self
            .roles
            .entry(u.role.id.clone())
            .or_insert_with(|| u.role.clone());
        if **role == *u.role {
            u.role = role.clone();
        }
        match self.customer_ids.get(&u.customer_id) {
            Some(id) => u.customer_id = id.clone(),
            None => {
                self.customer_ids.insert(u.customer_id.clone());
            }
        }
    }
}

/// `users` sharing their roles and customer ids ([`Shared`]).
pub(super) fn share_common(mut users: Vec<PlatformUser>) -> Vec<PlatformUser> {
    let mut shared = Shared::default();
    for u in &mut users {
        shared.user(u);
    }
    users
}

/// Poison-tolerant lock: the client's state stays usable after a panic elsewhere.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An instant no run reaches (for durations too large to add).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

fn wrap_all(labels: &[String]) -> Vec<Option<String>> {
    labels.iter().cloned().map(Some).collect()
}

/// The innermost error's text: what actually went wrong ("Connection
/// refused (os error 111)", "invalid peer certificate: UnknownIssuer"), not
/// reqwest's "error sending request for url".
fn innermost_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Whether the TLS handshake refused the platform's certificate.
fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<rustls::Error>().is_some_and(|r| {
            matches!(
                r,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        }) || c.to_string().contains("invalid peer certificate")
        {
            return true;
        }
        cause = c.source();
    }
    false
}

fn short_text(s: &str) -> String {
    let mut out: String = s.chars().take(200).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}

fn at_most_one<T>(
    operation: &'static str,
    external_id: &str,
    found: &mut Vec<T>,
) -> Result<Option<T>, PlatformError> {
    if found.len() > 1 {
        return Err(PlatformError::Protocol {
            operation,
            detail: format!("more than one record carries externalId {external_id:?}"),
        });
    }
    Ok(found.pop())
}

/// One page of a Relay connection, in model types.
pub(super) struct Page<T> {
    pub(super) items: Vec<T>,
    pub(super) has_next_page: bool,
    pub(super) total_count: i64,
}

impl<T> Page<T> {
    /// A page from a connection's `nodes` (nulls left out), converted.
    pub(super) fn of<N>(
        nodes: Vec<Option<N>>,
        has_next_page: bool,
        total_count: i64,
    ) -> Result<Page<T>, PlatformError>
    where
        T: TryFrom<N, Error = PlatformError>,
    {
        Ok(Page {
            items: nodes
                .into_iter()
                .flatten()
                .map(T::try_from)
                .collect::<Result<_, _>>()?,
            has_next_page,
            total_count,
        })
    }
}

/// Records that can be checked for repeats across pages.
pub(super) trait HasId {
    fn id(&self) -> &PlatformId;

    /// Lets the record share what others of the read have too.
    fn share(&mut self, _shared: &mut Shared) {}
}

impl HasId for PlatformCustomer {
    fn id(&self) -> &PlatformId {
        &self.id
    }
}

impl HasId for PlatformUser {
    fn id(&self) -> &PlatformId {
        &self.id
    }

    fn share(&mut self, shared: &mut Shared) {
        shared.user(self);
    }
}

/// Records reserved for up front at most (a `totalCount` is not trusted
/// with memory).
const MAX_RESERVED: usize = 1 << 20;

/// A whole list as its pages come in, in order, refusing repeats.
struct Assembly<T> {
    operation: &'static str,
    items: Vec<T>,
    seen: HashSet<PlatformId>,
    shared: Shared,
}

impl<T: HasId> Assembly<T> {
    fn add(&mut self, page: Vec<T>) -> Result<(), PlatformError> {
        for mut item in page {
            item.share(&mut self.shared);
            if !self.seen.insert(item.id().clone()) {
                return Err(PlatformError::Protocol {
                    operation: self.operation,
                    detail: format!(
                        "record {} came back twice while paging; the list changed while it was read",
                        item.id()
                    ),
                });
            }
            self.items.push(item);
        }
        Ok(())
    }
}

/// Reads a list whole: its first page (`offset` left out), then, its
/// `totalCount` known, every other page by `offset`, up to `concurrency` at
/// once, put back in order. The first page's length is the page size (the
/// platform serves at most 100 whatever is asked).
///
/// A list that changes while it is read can skip or repeat records between
/// pages. Every sign of it ends the read as an error: a repeated id, a page
/// whose `totalCount` is not the first page's, a page before the last
/// shorter than the first (or any page of another length than expected), a
/// `hasNextPage` that disagrees with the count, a total read that is not
/// `totalCount`. A snapshot that misses a record must never reach the
/// planner, where it could turn into a wrong create or hide a delete.
#[cfg(test)]
async fn read_all_pages<T, F, Fut>(
    operation: &'static str,
    concurrency: usize,
    fetch: F,
) -> Result<Vec<T>, PlatformError>
where
    T: HasId,
    F: Fn(Option<i64>) -> Fut,
    Fut: Future<Output = Result<Page<T>, PlatformError>>,
{
    let first = fetch(None).await?;
    read_remaining_pages(operation, concurrency, first, fetch).await
}

/// [`read_all_pages`] given the first page (read on its own, or as part of
/// a larger document).
pub(super) async fn read_remaining_pages<T, F, Fut>(
    operation: &'static str,
    concurrency: usize,
    first: Page<T>,
    fetch: F,
) -> Result<Vec<T>, PlatformError>
where
    T: HasId,
    F: Fn(Option<i64>) -> Fut,
    Fut: Future<Output = Result<Page<T>, PlatformError>>,
{
    let changed = |detail: String| PlatformError::Protocol {
        operation,
        detail: format!("{detail}; the list changed while it was read"),
    };
    let total = first.total_count;
    let count = usize::try_from(total).map_err(|_| PlatformError::Protocol {
        operation,
        detail: format!("totalCount is {total}"),
    })?;
    let size = first.items.len();
    let mut list = Assembly {
        operation,
        items: Vec::with_capacity(count.min(MAX_RESERVED)),
        seen: HashSet::with_capacity(count.min(MAX_RESERVED)),
        shared: Shared::default(),
    };
    if first.has_next_page {
        if size == 0 {
            return Err(PlatformError::Protocol {
                operation,
                detail: "hasNextPage is true but the first page is empty".to_owned(),
            });
        }
        if size >= count {
            return Err(changed(format!(
                "the first page holds {size} records and the platform counts {total}, yet hasNextPage is true"
            )));
        }
    }
    let more = first.has_next_page;
    list.add(first.items)?;
    if more {
        let fetch = &fetch;
        let mut pages = stream::iter((size..count).step_by(size))
            .map(|offset| async move {
                let at = i64::try_from(offset).unwrap_or(i64::MAX);
                fetch(Some(at)).await.map(|page| (offset, page))
            })
            .buffered(concurrency.max(1));
        while let Some((offset, page)) = pages.try_next().await? {
            if page.total_count != total {
                return Err(changed(format!(
                    "totalCount was {total} on the first page and {} on the page at offset {offset}",
                    page.total_count
                )));
            }
            let expected = size.min(count - offset);
            if page.items.len() != expected {
                return Err(changed(format!(
                    "the page at offset {offset} holds {} records where {expected} were expected",
                    page.items.len()
                )));
            }
            let last = offset + expected >= count;
            if page.has_next_page == last {
                return Err(changed(format!(
                    "the page at offset {offset} says hasNextPage {} where the count says {}",
                    page.has_next_page, !last
                )));
            }
            list.add(page.items)?;
        }
    }
    if list.items.len() != count {
        return Err(changed(format!(
            "read {} records but the platform counts {total}",
            list.items.len()
        )));
    }
    Ok(list.items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(id: &str) -> PlatformCustomer {
        PlatformCustomer {
            id: PlatformId::from(id),
            external_id: None,
            name: id.to_owned(),
            description: String::new(),
            labels: Vec::new(),
            updated_at: None,
        }
    }

    /// Serves canned pages by offset (the first page at None), each after
    /// its delay; counts pages being fetched at once.
    struct Canned {
        pages: std::collections::HashMap<Option<i64>, (Page<PlatformCustomer>, u64)>,
        now: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
    }

    async fn read_with(
        pages: Vec<(Option<i64>, Page<PlatformCustomer>, u64)>,
        concurrency: usize,
    ) -> (Result<Vec<PlatformCustomer>, PlatformError>, usize) {
        let canned = Canned {
            pages: pages
                .into_iter()
                .map(|(offset, page, delay)| (offset, (page, delay)))
                .collect(),
            now: Default::default(),
            most: Default::default(),
        };
        let canned = std::sync::Mutex::new(canned);
        let got = read_all_pages("test", concurrency, |offset| {
            let next = {
                let mut c = canned.lock().unwrap();
                let next = c.pages.remove(&offset);
                let now = c.now.fetch_add(1, Ordering::SeqCst) + 1;
                c.most.fetch_max(now, Ordering::SeqCst);
                next
            };
            let canned = &canned;
            async move {
                let out = match next {
                    Some((page, delay)) => {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        Ok(page)
                    }
                    None => Err(PlatformError::Protocol {
                        operation: "test",
                        detail: format!("asked for a page not served (offset {offset:?})"),
                    }),
                };
                canned.lock().unwrap().now.fetch_sub(1, Ordering::SeqCst);
                out
            }
        })
        .await;
        let most = canned.lock().unwrap().most.load(Ordering::SeqCst);
        (got, most)
    }

    async fn read(
        pages: Vec<(Option<i64>, Page<PlatformCustomer>)>,
    ) -> Result<Vec<PlatformCustomer>, PlatformError> {
        read_with(pages.into_iter().map(|(o, p)| (o, p, 0)).collect(), 4)
            .await
            .0
    }

    fn page(ids: &[&str], has_next_page: bool, total: i64) -> Page<PlatformCustomer> {
        Page {
            items: ids.iter().map(|i| customer(i)).collect(),
            has_next_page,
            total_count: total,
        }
    }

    /// A user as a page brings it: a role and customer id of its own.
    fn user_of(id: &str, customer: &str) -> PlatformUser {
        PlatformUser {
            id: PlatformId::from(id),
            external_id: None,
            email: format!("{id}@x.io"),
            name: String::new(),
            phone: String::new(),
            role: Arc::new(Role {
                id: PlatformId::from("r1"),
                name: "Member".into(),
            }),
            customer_id: PlatformId::from(customer),
            customer_external_id: None,
            updated_at: None,
        }
    }

    #[test]
    fn users_with_one_role_share_one_allocation() {
        let users = share_common(vec![user_of("a", "c"), user_of("b", "c")]);
        assert!(Arc::ptr_eq(&users[0].role, &users[1].role));
        assert!(Arc::ptr_eq(
            &users[0].customer_id.0,
            &users[1].customer_id.0
        ));
    }

    #[test]
    fn users_of_one_customer_share_its_id_and_role_across_pages_as_they_come_in() {
        let mut list = Assembly {
            operation: "ListCustomerUsers",
            items: Vec::new(),
            seen: HashSet::new(),
            shared: Shared::default(),
        };
        list.add(vec![user_of("a", "c1"), user_of("b", "c2")])
            .expect("first page");
        list.add(vec![user_of("c", "c1"), user_of("d", "c2")])
            .expect("second page");
        let [a, b, c, d] = &list.items[..] else {
            panic!("four users")
        };
        assert!(Arc::ptr_eq(&a.customer_id.0, &c.customer_id.0));
        assert!(Arc::ptr_eq(&b.customer_id.0, &d.customer_id.0));
        assert!(!Arc::ptr_eq(&a.customer_id.0, &b.customer_id.0));
        assert_eq!(
            (a.customer_id.as_str(), d.customer_id.as_str()),
            ("c1", "c2")
        );
        assert!(Arc::ptr_eq(&a.role, &d.role));
    }

    #[tokio::test(start_paused = true)]
    async fn pages_are_read_at_once_and_put_back_in_order() {
        // Later pages answer first; the list still comes out in order.
        let (got, most) = read_with(
            vec![
                (None, page(&["a", "b"], true, 7), 5),
                (Some(2), page(&["c", "d"], true, 7), 30),
                (Some(4), page(&["e", "f"], true, 7), 20),
                (Some(6), page(&["g"], false, 7), 10),
            ],
            3,
        )
        .await;
        let ids: Vec<_> = got.unwrap().iter().map(|c| c.id.to_string()).collect();
        assert_eq!(ids, ["a", "b", "c", "d", "e", "f", "g"]);
        assert_eq!(most, 3, "the three pages after the first at once");
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_pages_than_the_concurrency_are_read_at_once() {
        let mut pages = vec![(None, page(&["p0"], true, 6), 1)];
        for i in 1..6 {
            let id = format!("p{i}");
            pages.push((Some(i), page(&[id.as_str()], i < 5, 6), 10));
        }
        let (got, most) = read_with(pages, 2).await;
        assert_eq!(got.unwrap().len(), 6);
        assert_eq!(most, 2);
    }

    #[tokio::test]
    async fn a_single_page_is_one_request() {
        let got = read(vec![(None, page(&["a", "b"], false, 2))])
            .await
            .unwrap();
        assert_eq!(got.len(), 2);
    }

    #[tokio::test]
    async fn a_record_seen_twice_means_the_list_shifted() {
        let err = read(vec![
            (None, page(&["a", "b"], true, 4)),
            (Some(2), page(&["b", "c"], false, 4)),
        ])
        .await
        .unwrap_err();
        assert!(err.to_string().contains("came back twice"), "{err}");
    }

    #[tokio::test]
    async fn a_total_count_that_moved_between_pages_is_refused() {
        let err = read(vec![
            (None, page(&["a", "b"], true, 4)),
            (Some(2), page(&["c", "d"], true, 5)),
        ])
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("totalCount was 4 on the first page and 5 on the page at offset 2"),
            "{err}"
        );
        assert!(
            err.to_string().contains("changed while it was read"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_short_page_before_the_last_is_refused() {
        let err = read(vec![
            (None, page(&["a", "b"], true, 6)),
            (Some(2), page(&["c"], true, 6)),
            (Some(4), page(&["e", "f"], false, 6)),
        ])
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("the page at offset 2 holds 1 records where 2 were expected"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_last_page_that_says_there_is_more_is_refused() {
        let err = read(vec![
            (None, page(&["a", "b"], true, 3)),
            (Some(2), page(&["c"], true, 3)),
        ])
        .await
        .unwrap_err();
        assert!(err.to_string().contains("hasNextPage true"), "{err}");
    }

    #[tokio::test]
    async fn a_count_that_does_not_match_one_page_is_refused() {
        let err = read(vec![(None, page(&["a"], false, 3))])
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("read 1 records but the platform counts 3"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn has_next_page_on_an_empty_or_whole_first_page_is_an_error() {
        let err = read(vec![(None, page(&[], true, 2))]).await.unwrap_err();
        assert!(err.to_string().contains("first page is empty"), "{err}");
        let err = read(vec![(None, page(&["a", "b"], true, 2))])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("yet hasNextPage is true"), "{err}");
    }
}
