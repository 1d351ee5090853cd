//! The emulator's HTTP face: `POST /api` (GraphQL, bearer token required,
//! faults applied first), `/admin/*` (stats, faults, state; same token) and
//! an optional `GET /auth/meta` for the refresh-token flow.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::faults::{decide, insert_now, lose_response, Faults, RateLimiter, Stats, Verdict};
use super::schema::{build_schema, EmulatorSchema, SharedStore};
use super::seed::Seed;
use super::store::{NewCustomerInput, NewUserInput, RoleKind, State, Store};
use super::EmulatorError;

/// How to start an emulator.
#[derive(Clone, Debug)]
pub struct EmulatorOptions {
    pub listen: SocketAddr,
    /// Bearer tokens accepted on `/api` and `/admin`.
    pub tokens: Vec<String>,
    /// JSON state file: loaded at start when it exists, written after each change.
    pub state_file: Option<std::path::PathBuf>,
    /// Applied to a fresh state only (never over an existing state file).
    pub seed: Option<Seed>,
    pub faults: Faults,
    /// Served at `GET /auth/meta` when set: `{domain, clientId, audience}`.
    pub auth_meta: Option<AuthMeta>,
}

impl EmulatorOptions {
    /// In memory, on a free loopback port, accepting one token.
    pub fn local(token: &str) -> EmulatorOptions {
        EmulatorOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tokens: vec![token.to_owned()],
            state_file: None,
            seed: None,
            faults: Faults::default(),
            auth_meta: None,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthMeta {
    pub domain: String,
    pub client_id: String,
    pub audience: String,
}

struct Shared {
    schema: EmulatorSchema,
    store: SharedStore,
    tokens: Mutex<Vec<String>>,
    faults: Mutex<Faults>,
    limiter: Mutex<RateLimiter>,
    stats: Mutex<Stats>,
    auth_meta: Option<AuthMeta>,
}

/// Poison-tolerant lock: the emulator's counters stay usable after a panic
/// elsewhere (a test that failed), which keeps later assertions meaningful.
fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Control of a running emulator from the same process (tests, benchmarks).
#[derive(Clone)]
pub struct EmulatorHandle {
    shared: Arc<Shared>,
}

impl EmulatorHandle {
    pub fn accept_token(&self, token: &str) {
        guard(&self.shared.tokens).push(token.to_owned());
    }
    /// Stops accepting every token (all requests get 401 from now on).
    pub fn revoke_all_tokens(&self) {
        guard(&self.shared.tokens).clear();
    }
    pub fn set_faults(&self, faults: Faults) {
        *guard(&self.shared.faults) = faults;
    }
    pub fn stats(&self) -> Stats {
        guard(&self.shared.stats).clone()
    }
    pub fn reset_stats(&self) {
        *guard(&self.shared.stats) = Stats::default();
    }
    /// A copy of everything the emulator holds.
    pub fn state(&self) -> State {
        guard(&self.shared.store).state().clone()
    }
}

/// An emulator serving on a socket until [`RunningEmulator::shutdown`].
pub struct RunningEmulator {
    pub addr: SocketAddr,
    pub handle: EmulatorHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningEmulator {
    /// The base URL to give a client (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes requests in flight, and returns.
    pub async fn shutdown(mut self) -> Result<(), EmulatorError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result.map_err(EmulatorError::Serve),
            Err(e) => Err(EmulatorError::Serve(std::io::Error::other(e))),
        }
    }
}

/// Opens the store, binds the socket and serves in a background task.
pub async fn start(options: EmulatorOptions) -> Result<RunningEmulator, EmulatorError> {
    let store = Store::open(options.state_file.clone(), options.seed.as_ref())?;
    let store: SharedStore = Arc::new(Mutex::new(store));
    let shared = Arc::new(Shared {
        schema: build_schema(store.clone()),
        store,
        tokens: Mutex::new(options.tokens),
        faults: Mutex::new(options.faults),
        limiter: Mutex::new(RateLimiter::default()),
        stats: Mutex::new(Stats::default()),
        auth_meta: options.auth_meta,
    });
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| EmulatorError::Bind {
            addr: options.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| EmulatorError::Bind {
            addr: options.listen,
            source,
        })?;
    let app = Router::new()
        .route("/api", post(api))
        .route("/auth/meta", get(auth_meta))
        .route("/admin/stats", get(admin_stats))
        .route("/admin/stats/reset", post(admin_reset_stats))
        .route("/admin/faults", get(admin_get_faults).put(admin_put_faults))
        .route("/admin/state", get(admin_state))
        .with_state(shared.clone());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    tracing::debug!(%addr, "Emulator listening.");
    Ok(RunningEmulator {
        addr,
        handle: EmulatorHandle { shared },
        stop: Some(stop_tx),
        task,
    })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(token) = bearer(headers) else {
        return false;
    };
    guard(&shared.tokens).iter().any(|t| t == token)
}

/// What [`Faults::insert_after_list_pages`] does: one more customer, and a
/// customer user in it, created as the newest records (so they sort last).
fn insert_mid_read(store: &mut Store) {
    let n = store.state().customers.len();
    let role = store
        .state()
        .roles
        .iter()
        .find(|r| r.kind == RoleKind::Customer)
        .map(|r| r.id.clone());
    let created = store.create_customer(NewCustomerInput {
        name: format!("Created mid-read {n}"),
        description: None,
        external_id: Some(format!("mid-read-{n}")),
        labels: None,
        allow_embedded_designer: None,
    });
    if let (Ok(customer), Some(role)) = (created, role) {
        let _ = store.create_customer_user(NewUserInput {
            customer: Some(customer.id),
            email: format!("mid-read-{n}@example.com"),
            role,
            name: None,
            phone: None,
            external_id: Some(format!("mid-read-{n}")),
        });
    }
    if let Err(e) = store.persist() {
        tracing::warn!(error = %e, "Emulator: cannot save the state.");
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({"detail": "Authentication credentials were not provided or are invalid."})),
    )
        .into_response()
}

fn with_retry_after(status: StatusCode, faults: &Faults, body: &'static str) -> Response {
    let mut response = (status, body).into_response();
    if let Ok(v) = HeaderValue::from_str(&faults.retry_after_header()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// The operation type and root field names of the operation a request runs.
fn root_fields(request: &async_graphql::Request) -> Option<(OperationType, Vec<String>)> {
    let doc = async_graphql::parser::parse_query(&request.query).ok()?;
    let op = match (&doc.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(op), _) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name)?,
        (DocumentOperations::Multiple(ops), None) => ops.values().next()?,
    };
    let fields = op
        .node
        .selection_set
        .node
        .items
        .iter()
        .filter_map(|s| match &s.node {
            Selection::Field(f) => Some(f.node.name.node.to_string()),
            _ => None,
        })
        .collect();
    Some((op.node.ty, fields))
}

/// Counts a request as in flight until it is answered (also when the
/// client goes away and the handler is dropped).
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> InFlight<'a> {
        let mut stats = guard(&shared.stats);
        stats.requests += 1;
        stats.in_flight += 1;
        stats.max_in_flight = stats.max_in_flight.max(stats.in_flight);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut stats = guard(&self.0.stats);
        stats.in_flight = stats.in_flight.saturating_sub(1);
        if stats.arrived_by_first_answer == 0 {
            stats.arrived_by_first_answer = stats.requests;
        }
    }
}

async fn api(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = InFlight::enter(&shared);
    let latency = guard(&shared.faults).latency_ms;
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
    if !authorized(&shared, &headers) {
        guard(&shared.stats).unauthorized += 1;
        return unauthorized();
    }
    let (verdict, faults) = {
        let mut faults = guard(&shared.faults);
        let mut limiter = guard(&shared.limiter);
        let verdict = decide(
            &mut faults,
            &mut limiter,
            bearer(&headers).unwrap_or_default(),
            tokio::time::Instant::now(),
            rand::random::<f64>(),
        );
        (verdict, faults.clone())
    };
    match verdict {
        Verdict::Serve => {}
        Verdict::Throttle => {
            guard(&shared.stats).throttled += 1;
            return with_retry_after(StatusCode::TOO_MANY_REQUESTS, &faults, "Too many requests");
        }
        Verdict::Fail(status) => {
            guard(&shared.stats).server_errors += 1;
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return with_retry_after(status, &faults, "Service unavailable");
        }
    }
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (
            StatusCode::BAD_REQUEST,
            Json(
                serde_json::json!({"errors": [{"message": format!("Invalid request body: {e}")}]}),
            ),
        )
            .into_response(),
    };
    let mut is_mutation = false;
    let mut is_list = false;
    if let Some((ty, fields)) = root_fields(&request) {
        if let Some(max) = faults.max_root_fields {
            if fields.len() > max as usize {
                guard(&shared.stats).too_large += 1;
                let message = format!(
                    "Query is too complex: {} root fields in one document, at most {max}",
                    fields.len()
                );
                return (
                    StatusCode::BAD_REQUEST,
                    Json(serde_json::json!({"errors": [{"message": message}]})),
                )
                    .into_response();
            }
        }
        let mut stats = guard(&shared.stats);
        is_mutation = ty == OperationType::Mutation;
        match ty {
            OperationType::Mutation => stats.mutations += 1,
            _ => stats.queries += 1,
        }
        if stats.arrivals.len() < super::faults::ARRIVALS_KEPT {
            stats.arrivals.push(fields.join("+"));
        }
        for f in fields {
            is_list |= !is_mutation && (f == "customers" || f == "users");
            *stats.operations.entry(f).or_insert(0) += 1;
        }
    }
    let response = shared.schema.execute(request).await;
    if is_list && insert_now(&mut guard(&shared.faults)) {
        insert_mid_read(&mut guard(&shared.store));
    }
    if is_mutation && lose_response(&mut guard(&shared.faults)) {
        guard(&shared.stats).server_errors += 1;
        return with_retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            &faults,
            "Service unavailable",
        );
    }
    Json(response).into_response()
}

async fn auth_meta(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    match &shared.auth_meta {
        Some(meta) => Json(meta.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn admin_stats(AxumState(shared): AxumState<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    Json(guard(&shared.stats).clone()).into_response()
}

async fn admin_reset_stats(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    *guard(&shared.stats) = Stats::default();
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_get_faults(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    Json(guard(&shared.faults).clone()).into_response()
}

async fn admin_put_faults(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) if (0.0..=1.0).contains(&faults.error_rate) => {
            *guard(&shared.faults) = faults.clone();
            Json(faults).into_response()
        }
        Ok(_) => (StatusCode::BAD_REQUEST, "errorRate must be between 0 and 1").into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("invalid faults: {e}")).into_response(),
    }
}

async fn admin_state(AxumState(shared): AxumState<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let state = guard(&shared.store).state().clone();
    Json(state).into_response()
}
