//! `PlatformClient`: reads and writes customers and customer users through
//! the platform's GraphQL API.
//!
//! Every request goes through [`PlatformClient::execute`]: one concurrency
//! cap and one request-rate limit shared by the whole run, a fresh bearer
//! token, the HTTP status classified into [`PlatformError`], and retries for
//! what is retryable. Lists are read page by page until `hasNextPage` is false.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use graphql_client::GraphQLQuery;
use reqwest::header::{HeaderMap, AUTHORIZATION, RETRY_AFTER};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use tokio::sync::Semaphore;
use url::Url;

use super::auth::{AuthMethod, TokenProvider};
use super::error::PlatformError;
use super::operations::{self as ops, *};
use crate::model::{
    AuthenticatedUser, CustomerChanges, NewCustomer, NewCustomerUser, PlatformCustomer, PlatformId,
    PlatformUser, Role, Snapshot, UserChanges,
};
use crate::retry::{parse_retry_after, with_retries, RetryPolicy};

/// Largest page the platform serves (and its default).
pub const MAX_PAGE_SIZE: i64 = 100;

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
    /// Client-side ceiling on requests per second for the whole run.
    pub requests_per_second: NonZeroU32,
    /// Requests in flight at once, for the whole run.
    pub max_concurrency: usize,
    pub retry: RetryPolicy,
    /// Nodes asked for per page (1..=100).
    pub page_size: i64,
}

impl PlatformConfig {
    /// The defaults: 10 s connect timeout, 60 s request timeout, 10 requests
    /// per second (under the platform's observed ~20), 4 in flight, pages of 100.
    pub fn new(url: Url, auth: AuthMethod) -> PlatformConfig {
        PlatformConfig {
            url,
            auth,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            ca_file: None,
            requests_per_second: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            max_concurrency: 4,
            retry: RetryPolicy::default(),
            page_size: MAX_PAGE_SIZE,
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
    limiter: DefaultDirectRateLimiter,
    in_flight: Semaphore,
    retry: RetryPolicy,
    request_timeout: Duration,
    page_size: i64,
    requests: AtomicU64,
    throttled: AtomicU64,
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
                limiter: RateLimiter::direct(Quota::per_second(config.requests_per_second)),
                in_flight: Semaphore::new(config.max_concurrency.max(1)),
                retry: config.retry,
                request_timeout: config.request_timeout,
                page_size: config.page_size.clamp(1, MAX_PAGE_SIZE),
                requests: AtomicU64::new(0),
                throttled: AtomicU64::new(0),
            }),
        })
    }

    pub fn stats(&self) -> RequestStats {
        RequestStats {
            requests: self.inner.requests.load(Ordering::Relaxed),
            throttled: self.inner.throttled.load(Ordering::Relaxed),
        }
    }

    /// Sends one operation, with retries, and returns its `data`.
    async fn execute<Q: GraphQLQuery>(
        &self,
        variables: Q::Variables,
    ) -> Result<Q::ResponseData, PlatformError> {
        let body = Q::build_query(variables);
        let operation = body.operation_name;
        with_retries(&self.inner.retry, operation, || {
            self.attempt::<Q::Variables, Q::ResponseData>(operation, &body)
        })
        .await
    }

    async fn attempt<V: serde::Serialize, D: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
        body: &graphql_client::QueryBody<V>,
    ) -> Result<D, PlatformError> {
        let inner = &*self.inner;
        let _permit = inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| PlatformError::Protocol {
                operation,
                detail: "the client is shutting down".to_owned(),
            })?;
        inner.limiter.until_ready().await;
        let token = inner
            .tokens
            .bearer()
            .await
            .map_err(|source| PlatformError::Auth { operation, source })?;
        inner.requests.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(operation, "Sending request.");
        let response = inner
            .http
            .post(inner.endpoint.clone())
            .header(AUTHORIZATION, format!("Bearer {}", token.expose_secret()))
            .json(body)
            .send()
            .await
            .map_err(|e| self.transport_error(operation, e))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = retry_after(response.headers());
            return Err(match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => PlatformError::Unauthorized {
                    operation,
                    status: status.as_u16(),
                },
                StatusCode::TOO_MANY_REQUESTS => {
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
                s => PlatformError::UnexpectedStatus {
                    operation,
                    status: s.as_u16(),
                    body: short_text(&response.text().await.unwrap_or_default()),
                },
            });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(operation, e))?;
        let parsed: graphql_client::Response<D> =
            serde_json::from_slice(&bytes).map_err(|e| PlatformError::Decode {
                operation,
                detail: e.to_string(),
            })?;
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

    fn transport_error(&self, operation: &'static str, e: reqwest::Error) -> PlatformError {
        if e.is_timeout() {
            PlatformError::Timeout {
                operation,
                timeout: self.inner.request_timeout,
            }
        } else if e.is_connect() {
            PlatformError::Connect {
                operation,
                url: self.inner.endpoint.to_string(),
                source: e,
            }
        } else {
            PlatformError::Transport {
                operation,
                source: e,
            }
        }
    }

    /// The token's own user: a cheap request that proves URL and token work.
    pub async fn authenticated_user(&self) -> Result<AuthenticatedUser, PlatformError> {
        let data = self
            .execute::<ops::AuthenticatedUser>(authenticated_user::Variables)
            .await?;
        let u = data.authenticated_user;
        Ok(AuthenticatedUser {
            id: PlatformId(u.id),
            email: u.email,
            name: u.name,
            customer_id: u.customer.map(|c| PlatformId(c.id)),
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
        let first = self.inner.page_size;
        read_all_pages("ListCustomers", |after| async move {
            let page = self
                .execute::<ListCustomers>(list_customers::Variables { after, first })
                .await?
                .customers;
            Ok(Page {
                items: page
                    .nodes
                    .into_iter()
                    .flatten()
                    .map(PlatformCustomer::from)
                    .collect(),
                has_next_page: page.page_info.has_next_page,
                end_cursor: page.page_info.end_cursor,
                total_count: page.total_count,
            })
        })
        .await
    }

    /// Every customer user (`customer_Isnull: false`), all pages.
    pub async fn list_customer_users(&self) -> Result<Vec<PlatformUser>, PlatformError> {
        let first = self.inner.page_size;
        read_all_pages("ListCustomerUsers", |after| async move {
            let page = self
                .execute::<ListCustomerUsers>(list_customer_users::Variables { after, first })
                .await?
                .users;
            Ok(Page {
                items: page
                    .nodes
                    .into_iter()
                    .flatten()
                    .map(PlatformUser::try_from)
                    .collect::<Result<_, _>>()?,
                has_next_page: page.page_info.has_next_page,
                end_cursor: page.page_info.end_cursor,
                total_count: page.total_count,
            })
        })
        .await
        .map(share_roles)
    }

    /// The platform's whole view in one go: customers and users read
    /// concurrently, then the roles.
    pub async fn snapshot(&self) -> Result<Snapshot, PlatformError> {
        let (customers, users, roles) = tokio::try_join!(
            self.list_customers(),
            self.list_customer_users(),
            self.customer_roles()
        )?;
        Ok(Snapshot {
            customers,
            users,
            roles,
        })
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
            .map(PlatformCustomer::from)
            .collect();
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
        payload_object("createCustomer", payload).map(PlatformCustomer::from)
    }

    pub async fn update_customer(
        &self,
        id: &PlatformId,
        changes: &CustomerChanges,
    ) -> Result<PlatformCustomer, PlatformError> {
        let input = update_customer::UpdateCustomerInput {
            id: Some(id.0.clone()),
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
        payload_object("updateCustomer", payload).map(PlatformCustomer::from)
    }

    /// Deletes a customer and, on the platform, all its users and instances.
    pub async fn delete_customer(&self, id: &PlatformId) -> Result<(), PlatformError> {
        let input = delete_customer::DeleteCustomerInput {
            id: Some(id.0.clone()),
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
            customer: Some(new.customer_id.0.clone()),
            email: new.email.clone(),
            role: new.role_id.0.clone(),
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
            id: Some(id.0.clone()),
            name: changes.name.clone(),
            phone: changes.phone.clone(),
            role: changes.role_id.as_ref().map(|r| r.0.clone()),
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
            id: Some(id.0.clone()),
        };
        let data = self
            .execute::<DeleteUser>(delete_user::Variables { input })
            .await?;
        let payload = data.delete_user.map(|p| (p.errors, p.user));
        payload_object("deleteUser", payload).map(|_| ())
    }
}

/// One `Arc<Role>` per distinct role, shared by the users that have it:
/// at a million users, a copy per user would cost over 100 MiB.
fn share_roles(mut users: Vec<PlatformUser>) -> Vec<PlatformUser> {
    let mut seen: std::collections::HashMap<PlatformId, Arc<Role>> =
        std::collections::HashMap::new();
    for u in &mut users {
        let shared = seen
            .entry(u.role.id.clone())
            .or_insert_with(|| u.role.clone());
        if **shared == *u.role {
            u.role = shared.clone();
        }
    }
    users
}

fn wrap_all(labels: &[String]) -> Vec<Option<String>> {
    labels.iter().cloned().map(Some).collect()
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
struct Page<T> {
    items: Vec<T>,
    has_next_page: bool,
    end_cursor: Option<String>,
    total_count: i64,
}

/// Records that can be checked for repeats across pages.
trait HasId {
    fn id(&self) -> &PlatformId;
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
}

/// Reads a connection to its end (`after: endCursor` while `hasNextPage`).
///
/// A list that changes while it is read can skip or repeat records between
/// pages. Both are caught (a repeated id; a final count that differs from the
/// last `totalCount`) and end the read as an error: a snapshot that misses a
/// record must never reach the planner, where it could turn into a wrong
/// create or hide a delete.
async fn read_all_pages<T, F, Fut>(
    operation: &'static str,
    mut fetch: F,
) -> Result<Vec<T>, PlatformError>
where
    T: HasId,
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>, PlatformError>>,
{
    let mut items: Vec<T> = Vec::new();
    let mut seen: HashSet<PlatformId> = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = fetch(after.clone()).await?;
        for item in page.items {
            if !seen.insert(item.id().clone()) {
                return Err(PlatformError::Protocol {
                    operation,
                    detail: format!(
                        "record {} came back twice while paging; the list changed while it was read",
                        item.id()
                    ),
                });
            }
            items.push(item);
        }
        if !page.has_next_page {
            if usize::try_from(page.total_count).ok() != Some(items.len()) {
                return Err(PlatformError::Protocol {
                    operation,
                    detail: format!(
                        "read {} records but the platform counts {}; the list changed while it was read",
                        items.len(),
                        page.total_count
                    ),
                });
            }
            return Ok(items);
        }
        let next = page.end_cursor.ok_or_else(|| PlatformError::Protocol {
            operation,
            detail: "hasNextPage is true but endCursor is missing".to_owned(),
        })?;
        if after.as_deref() == Some(next.as_str()) {
            return Err(PlatformError::Protocol {
                operation,
                detail: format!("the cursor did not advance past {next:?}"),
            });
        }
        after = Some(next);
    }
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
        }
    }

    /// Serves canned pages in order, whatever cursor is asked for.
    async fn read(
        pages: Vec<Page<PlatformCustomer>>,
    ) -> Result<Vec<PlatformCustomer>, PlatformError> {
        let pages = std::sync::Mutex::new(pages.into_iter());
        read_all_pages("test", |_after| {
            let next = pages.lock().unwrap().next();
            async move {
                next.ok_or_else(|| PlatformError::Protocol {
                    operation: "test",
                    detail: "asked for a page too many".into(),
                })
            }
        })
        .await
    }

    fn page(ids: &[&str], next: Option<&str>, total: i64) -> Page<PlatformCustomer> {
        Page {
            items: ids.iter().map(|i| customer(i)).collect(),
            has_next_page: next.is_some(),
            end_cursor: next.map(str::to_owned),
            total_count: total,
        }
    }

    #[test]
    fn users_with_one_role_share_one_allocation() {
        let user = |id: &str| PlatformUser {
            id: PlatformId::from(id),
            external_id: None,
            email: format!("{id}@x.io"),
            name: String::new(),
            phone: String::new(),
            role: Arc::new(Role {
                id: PlatformId::from("r1"),
                name: "Member".into(),
            }),
            customer_id: PlatformId::from("c"),
            customer_external_id: None,
        };
        let users = share_roles(vec![user("a"), user("b")]);
        assert!(Arc::ptr_eq(&users[0].role, &users[1].role));
    }

    #[tokio::test]
    async fn all_pages_are_read_in_order() {
        let got = read(vec![
            page(&["a", "b"], Some("c1"), 3),
            page(&["c"], None, 3),
        ])
        .await
        .unwrap();
        let ids: Vec<_> = got.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_record_seen_twice_means_the_list_shifted() {
        let err = read(vec![
            page(&["a", "b"], Some("c1"), 3),
            page(&["b", "c"], None, 3),
        ])
        .await
        .unwrap_err();
        assert!(err.to_string().contains("came back twice"), "{err}");
    }

    #[tokio::test]
    async fn a_count_that_does_not_match_means_a_record_was_skipped() {
        let err = read(vec![page(&["a"], Some("c1"), 3), page(&["c"], None, 3)])
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("read 2 records but the platform counts 3"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_cursor_that_does_not_advance_ends_the_read() {
        let err = read(vec![
            page(&["a"], Some("c1"), 9),
            page(&["b"], Some("c1"), 9),
        ])
        .await
        .unwrap_err();
        assert!(err.to_string().contains("did not advance"), "{err}");
    }

    #[tokio::test]
    async fn has_next_page_without_a_cursor_is_an_error() {
        let mut p = page(&["a"], Some("x"), 2);
        p.end_cursor = None;
        let err = read(vec![p]).await.unwrap_err();
        assert!(err.to_string().contains("endCursor is missing"), "{err}");
    }
}
