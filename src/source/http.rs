//! HTTP/JSON sources (CRM, HR systems, SCIM 2.0): GET requests with
//! reqwest, five pagination styles, retries for what is retryable, limits on
//! pages, bytes and time, and a repeating cursor or next link caught. Records
//! sit at a JSONPath (RFC 9535) and fields map from JSONPaths. Any failed
//! read yields no directory, so it can never cause deletes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, LINK, RETRY_AFTER};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::Value;
use serde_json_path::JsonPath;
use url::Url;

use super::{Records, SourceError};
use crate::config::{CustomersFrom, Endpoint, HttpAuth, HttpSettings, Mapping, Pagination};
use crate::directory::{Origin, SourceRecord};
use crate::retry::{parse_retry_after, with_retries, Retryable};

/// Why an HTTP read failed. Secrets never appear here.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot build the HTTP client: {0}")]
    Setup(String),
    #[error("cannot read the CA file {path}: {detail}")]
    CaFile { path: String, detail: String },
    #[error("{url}: cannot connect: {detail}")]
    Connect { url: String, detail: String },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: throttled (HTTP 429)")]
    Throttled {
        url: String,
        retry_after: Option<Duration>,
    },
    #[error("{url}: HTTP {status}")]
    Unavailable {
        url: String,
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: expected JSON, got content type {found:?}")]
    ContentType { url: String, found: String },
    #[error("{url}: the response is larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: malformed JSON: {detail}")]
    Json { url: String, detail: String },
    #[error("{url}: {detail}")]
    Shape { url: String, detail: String },
    #[error("{url}: the next page repeats one already read ({what}); the read would never end")]
    Repeat { url: String, what: String },
    #[error("more than {limit} pages (source.http.max_pages); the read is incomplete")]
    TooManyPages { limit: usize },
    #[error("the whole HTTP read took longer than its deadline of {0:?}")]
    Deadline(Duration),
    #[error("{operation}: gave up after {attempts} attempts: {last}")]
    Exhausted {
        operation: &'static str,
        attempts: u32,
        last: Box<HttpError>,
    },
    #[error("{operation}: the server asked to wait {wait:?}, longer than the {limit:?} dirsync will wait")]
    WaitTooLong {
        operation: &'static str,
        wait: Duration,
        limit: Duration,
    },
    #[error("source secret: {0}")]
    Secret(#[from] crate::platform::AuthError),
}

impl Retryable for HttpError {
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            HttpError::Connect { .. }
                | HttpError::Timeout { .. }
                | HttpError::Throttled { .. }
                | HttpError::Unavailable { .. }
        )
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            HttpError::Throttled { retry_after, .. }
            | HttpError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
    fn exhausted(operation: &'static str, attempts: u32, last: Self) -> Self {
        HttpError::Exhausted {
            operation,
            attempts,
            last: Box::new(last),
        }
    }
    fn wait_too_long(operation: &'static str, wait: Duration, limit: Duration) -> Self {
        HttpError::WaitTooLong {
            operation,
            wait,
            limit,
        }
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// A JSON body read within the byte limit.
struct Page {
    url: Url,
    body: Value,
    next_link: Option<String>,
}

struct Fetcher<'a> {
    http: reqwest::Client,
    settings: &'a HttpSettings,
    headers: HeaderMap,
}

impl<'a> Fetcher<'a> {
    fn new(settings: &'a HttpSettings) -> Result<Fetcher<'a>, HttpError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .user_agent(concat!("dirsync/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path).map_err(|e| HttpError::CaFile {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| HttpError::CaFile {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| HttpError::Setup(e.to_string()))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &settings.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| HttpError::Setup(e.to_string()))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| HttpError::Setup(format!("header {name}: {e}")))?;
            headers.insert(name, value);
        }
        match &settings.auth {
            None => {}
            Some(HttpAuth::Bearer(secret)) => {
                let mut v =
                    HeaderValue::from_str(&format!("Bearer {}", secret.read()?.expose_secret()))
                        .map_err(|_| {
                            HttpError::Setup(
                                "the bearer token is not a valid header value".to_owned(),
                            )
                        })?;
                v.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, v);
            }
            Some(HttpAuth::Basic { username, password }) => {
                use base64::Engine;
                let raw = format!("{username}:{}", password.read()?.expose_secret());
                let mut v = HeaderValue::from_str(&format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ))
                .map_err(|_| {
                    HttpError::Setup(
                        "the basic credentials are not a valid header value".to_owned(),
                    )
                })?;
                v.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, v);
            }
            Some(HttpAuth::ApiKey { header, value }) => {
                let name = HeaderName::from_bytes(header.as_bytes())
                    .map_err(|e| HttpError::Setup(e.to_string()))?;
                let mut v = HeaderValue::from_str(value.read()?.expose_secret()).map_err(|_| {
                    HttpError::Setup("the API key is not a valid header value".to_owned())
                })?;
                v.set_sensitive(true);
                headers.insert(name, v);
            }
        }
        Ok(Fetcher {
            http,
            settings,
            headers,
        })
    }

    async fn get(&self, url: &Url) -> Result<Page, HttpError> {
        with_retries(&self.settings.retry, "source GET", || self.get_once(url)).await
    }

    async fn get_once(&self, url: &Url) -> Result<Page, HttpError> {
        let shown = url.to_string();
        let response = self
            .http
            .get(url.clone())
            .headers(self.headers.clone())
            .send()
            .await
            .map_err(|e| transport_error(&shown, e, self.settings.request_timeout))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(HttpError::Throttled {
                url: shown,
                retry_after,
            });
        }
        if status.is_server_error() {
            return Err(HttpError::Unavailable {
                url: shown,
                status: status.as_u16(),
                retry_after,
            });
        }
        if !status.is_success() {
            return Err(HttpError::Status {
                url: shown,
                status: status.as_u16(),
            });
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if !is_json(&content_type) {
            return Err(HttpError::ContentType {
                url: shown,
                found: content_type,
            });
        }
        let next_link = response
            .headers()
            .get_all(LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                let links = parse_link_header::parse_with_rel(v).ok()?;
                links.get("next").map(|l| l.raw_uri.clone())
            });
        let limit = self.settings.max_response_bytes;
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(HttpError::TooLarge { url: shown, limit });
        }
        let mut response = response;
        let mut bytes: Vec<u8> = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(&shown, e, self.settings.request_timeout))?
        {
            if bytes.len() as u64 + chunk.len() as u64 > limit {
                return Err(HttpError::TooLarge { url: shown, limit });
            }
            bytes.extend_from_slice(&chunk);
        }
        let body: Value = serde_json::from_slice(&bytes).map_err(|e| HttpError::Json {
            url: shown,
            detail: e.to_string(),
        })?;
        Ok(Page {
            url: url.clone(),
            body,
            next_link,
        })
    }
}

fn transport_error(url: &str, e: reqwest::Error, timeout: Duration) -> HttpError {
    if e.is_timeout() {
        HttpError::Timeout {
            url: url.to_owned(),
            timeout,
        }
    } else {
        HttpError::Connect {
            url: url.to_owned(),
            detail: e.without_url().to_string(),
        }
    }
}

fn with_query(base: &Url, params: &[(&str, String)]) -> Url {
    let mut url = base.clone();
    {
        let names: Vec<&str> = params.iter().map(|(k, _)| *k).collect();
        let kept: Vec<(String, String)> = base
            .query_pairs()
            .filter(|(k, _)| !names.contains(&k.as_ref()))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut q = url.query_pairs_mut();
        q.clear();
        for (k, v) in kept {
            q.append_pair(&k, &v);
        }
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    url
}

fn compile(path: &str) -> Result<JsonPath, String> {
    JsonPath::parse(path).map_err(|e| format!("{path}: {e}"))
}

/// A record as read: the page it came from and its index in the endpoint.
struct RawRecord {
    url: String,
    index: usize,
    value: Value,
}

/// Reads every page of an endpoint.
async fn read_endpoint(
    fetcher: &Fetcher<'_>,
    endpoint: &Endpoint,
) -> Result<Vec<RawRecord>, HttpError> {
    let records_path = compile(&endpoint.records).map_err(|detail| HttpError::Shape {
        url: endpoint.url.to_string(),
        detail,
    })?;
    let mut out: Vec<RawRecord> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut next: Option<Url> = Some(match &endpoint.pagination {
        Pagination::Page {
            page_param,
            size_param,
            page_size,
            first_page,
        } => with_query(
            &endpoint.url,
            &[
                (page_param, first_page.to_string()),
                (size_param, page_size.to_string()),
            ],
        ),
        Pagination::Offset {
            offset_param,
            limit_param,
            page_size,
        } => with_query(
            &endpoint.url,
            &[
                (offset_param, "0".to_owned()),
                (limit_param, page_size.to_string()),
            ],
        ),
        Pagination::Scim { count } => with_query(
            &endpoint.url,
            &[("startIndex", "1".to_owned()), ("count", count.to_string())],
        ),
        _ => endpoint.url.clone(),
    });
    let mut pages = 0usize;
    let mut page_number = match &endpoint.pagination {
        Pagination::Page { first_page, .. } => *first_page,
        _ => 0,
    };
    while let Some(url) = next.take() {
        if !seen.insert(url.to_string()) {
            return Err(HttpError::Repeat {
                url: url.to_string(),
                what: "the same URL".to_owned(),
            });
        }
        pages += 1;
        if pages > fetcher.settings.max_pages {
            return Err(HttpError::TooManyPages {
                limit: fetcher.settings.max_pages,
            });
        }
        let page = fetcher.get(&url).await?;
        let records: Vec<Value> = records_path
            .query(&page.body)
            .all()
            .into_iter()
            .cloned()
            .collect();
        let count = records.len();
        let shown = page.url.to_string();
        let start = out.len();
        out.extend(records.into_iter().enumerate().map(|(i, value)| RawRecord {
            url: shown.clone(),
            index: start + i,
            value,
        }));
        next = match &endpoint.pagination {
            Pagination::None => None,
            Pagination::Link => match page.next_link {
                Some(link) => Some(page.url.join(&link).map_err(|e| HttpError::Shape {
                    url: shown.clone(),
                    detail: format!("bad next link {link:?}: {e}"),
                })?),
                None => None,
            },
            Pagination::Cursor { cursor_path, param } => {
                let path = compile(cursor_path).map_err(|detail| HttpError::Shape {
                    url: shown.clone(),
                    detail,
                })?;
                match path.query(&page.body).first() {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if s.is_empty() => None,
                    Some(Value::String(s)) => {
                        Some(with_query(&endpoint.url, &[(param, s.clone())]))
                    }
                    Some(Value::Number(n)) => {
                        Some(with_query(&endpoint.url, &[(param, n.to_string())]))
                    }
                    Some(other) => {
                        return Err(HttpError::Shape {
                            url: shown,
                            detail: format!("the cursor at {cursor_path} is not a string: {other}"),
                        })
                    }
                }
            }
            Pagination::Page {
                page_param,
                size_param,
                page_size,
                ..
            } => (count >= *page_size && count > 0).then(|| {
                page_number += 1;
                with_query(
                    &endpoint.url,
                    &[
                        (page_param, page_number.to_string()),
                        (size_param, page_size.to_string()),
                    ],
                )
            }),
            Pagination::Offset {
                offset_param,
                limit_param,
                page_size,
            } => (count >= *page_size && count > 0).then(|| {
                with_query(
                    &endpoint.url,
                    &[
                        (offset_param, out.len().to_string()),
                        (limit_param, page_size.to_string()),
                    ],
                )
            }),
            Pagination::Scim { count: page_size } => {
                let total = page
                    .body
                    .get("totalResults")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| HttpError::Shape {
                        url: shown.clone(),
                        detail: "a SCIM list response without totalResults".to_owned(),
                    })?;
                let next_index = out.len() as u64 + 1;
                (count > 0 && next_index <= total).then(|| {
                    with_query(
                        &endpoint.url,
                        &[
                            ("startIndex", next_index.to_string()),
                            ("count", page_size.to_string()),
                        ],
                    )
                })
            }
        };
    }
    if let Pagination::Scim { .. } = &endpoint.pagination {
        tracing::debug!(records = out.len(), "SCIM read complete.");
    }
    Ok(out)
}

/// A mapping key is one JSONPath, or several joined by `||` (the first that
/// matches wins: `$.emails[?@.primary==true].value || $.emails[0].value`).
struct KeyPaths {
    key: std::sync::Arc<str>,
    paths: Vec<JsonPath>,
}

fn key_paths(keys: &[String]) -> Result<Vec<KeyPaths>, String> {
    keys.iter()
        .map(|key| {
            Ok(KeyPaths {
                key: std::sync::Arc::from(key.as_str()),
                paths: key
                    .split("||")
                    .map(|p| compile(p.trim()))
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect()
}

/// The record's values for the mapping's keys; a value of the wrong type
/// (an object or an array where text belongs) is a problem naming its JSON pointer.
fn to_record(raw: &RawRecord, keys: &[KeyPaths]) -> SourceRecord {
    let mut values = BTreeMap::new();
    let mut problem = None;
    for k in keys {
        let found = k.paths.iter().find_map(|p| {
            let located = p.query_located(&raw.value);
            located
                .first()
                .map(|n| (n.location().to_json_pointer(), n.node().clone()))
        });
        match found {
            None | Some((_, Value::Null)) => {}
            Some((_, Value::String(s))) => {
                if !s.trim().is_empty() {
                    values.insert(k.key.clone(), s.trim().to_owned());
                }
            }
            Some((_, Value::Number(n))) => {
                values.insert(k.key.clone(), n.to_string());
            }
            Some((_, Value::Bool(b))) => {
                values.insert(k.key.clone(), b.to_string());
            }
            Some((pointer, other)) => {
                let kind = if other.is_array() {
                    "an array"
                } else {
                    "an object"
                };
                problem.get_or_insert_with(|| {
                    format!("path {}: expected text, found {kind} at {pointer}", k.key)
                });
            }
        }
    }
    SourceRecord {
        origin: Origin::Record {
            url: raw.url.clone(),
            index: raw.index,
        },
        values,
        problem,
    }
}

fn absent(settings: &HttpSettings, value: &Value) -> Result<bool, String> {
    let Some((path, equals)) = &settings.absent_when else {
        return Ok(false);
    };
    let p = compile(path)?;
    Ok(p.query(value).first() == Some(equals))
}

/// Reads the source into customer records (when customers have an endpoint)
/// and user records, ready for the shared mapping step; the users that
/// `absent_when` matched (SCIM `active: false`) are disabled records.
pub async fn read_records(
    settings: &HttpSettings,
    mapping: &Mapping,
) -> Result<Records, SourceError> {
    let deadline = settings.read_deadline;
    match tokio::time::timeout(deadline, read_records_inner(settings, mapping)).await {
        Ok(r) => r.map_err(SourceError::from),
        Err(_) => Err(SourceError::from(HttpError::Deadline(deadline))),
    }
}

async fn read_records_inner(
    settings: &HttpSettings,
    mapping: &Mapping,
) -> Result<Records, HttpError> {
    let fetcher = Fetcher::new(settings)?;
    let shape = |url: &Url| {
        let url = url.to_string();
        move |detail: String| HttpError::Shape {
            url: url.clone(),
            detail,
        }
    };
    let users_raw = read_endpoint(&fetcher, &settings.users).await?;
    let customers_raw = match &settings.customers {
        Some(endpoint) => Some(read_endpoint(&fetcher, endpoint).await?),
        None => None,
    };

    let from_users = settings.customers_from == CustomersFrom::Users;
    let mut user_keys = super::mapping::user_keys(mapping, from_users);
    if settings.customers_from == CustomersFrom::Groups {
        user_keys.retain(|k| *k != mapping.user.customer);
    }
    let user_paths = key_paths(&user_keys).map_err(shape(&settings.users.url))?;

    let mut users: Vec<SourceRecord> = Vec::with_capacity(users_raw.len());
    let mut disabled_users: Vec<SourceRecord> = Vec::new();
    let mut user_ids: Vec<Option<String>> = Vec::new();
    let id_path = compile(&settings.user_id).map_err(shape(&settings.users.url))?;
    for raw in &users_raw {
        if absent(settings, &raw.value).map_err(shape(&settings.users.url))? {
            // Not in the directory; its externalId tells a delete why.
            disabled_users.push(to_record(raw, &user_paths));
            continue;
        }
        users.push(to_record(raw, &user_paths));
        user_ids.push(id_path.query(&raw.value).first().and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }));
    }

    let customers = match (customers_raw, settings.customers.as_ref()) {
        (Some(raw), Some(endpoint)) => {
            let paths =
                key_paths(&super::mapping::customer_keys(mapping)).map_err(shape(&endpoint.url))?;
            let records: Vec<SourceRecord> = raw.iter().map(|r| to_record(r, &paths)).collect();
            if settings.customers_from == CustomersFrom::Groups {
                let members = compile(&settings.group_members).map_err(shape(&endpoint.url))?;
                // Member id -> the externalIds of the groups that list it.
                let mut groups_of: HashMap<String, Vec<String>> = HashMap::new();
                for (r, rec) in raw.iter().zip(&records) {
                    let Some(group_id) = rec.get(&mapping.customer.external_id) else {
                        continue;
                    };
                    for m in members.query(&r.value).all() {
                        let id = match m {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            _ => continue,
                        };
                        groups_of.entry(id).or_default().push(group_id.to_owned());
                    }
                }
                // With `unassigned_users: absent` (the default), a user no
                // group lists is not in the directory: taking someone out of
                // their customer's group offboards them.
                let mut unassigned = vec![false; users.len()];
                for ((user, id), unassigned) in
                    users.iter_mut().zip(&user_ids).zip(unassigned.iter_mut())
                {
                    if user.problem.is_some() {
                        continue;
                    }
                    // Without an id no group can list it: that is not
                    // knowing, never "in no group".
                    let Some(id) = id else {
                        user.problem = Some(format!(
                            "has no id at {} to find its customer groups by",
                            settings.user_id
                        ));
                        continue;
                    };
                    let groups = groups_of.get(id).cloned().unwrap_or_default();
                    match groups.as_slice() {
                        [one] => {
                            user.values.insert(
                                std::sync::Arc::from(mapping.user.customer.as_str()),
                                one.clone(),
                            );
                        }
                        [] if settings.unassigned_absent => *unassigned = true,
                        [] => user.problem = Some("is a member of no customer group".to_owned()),
                        several => {
                            user.problem = Some(format!(
                                "is a member of {} customer groups: {}",
                                several.len(),
                                several.join(", ")
                            ))
                        }
                    }
                }
                let absent = unassigned.iter().filter(|u| **u).count();
                if absent > 0 {
                    tracing::info!(
                        users = absent,
                        "Users in no customer group are absent from the directory (unassigned_users: absent)."
                    );
                    let mut keep = unassigned.iter().map(|u| !u);
                    users.retain(|_| keep.next().unwrap_or(true));
                }
            }
            Some(records)
        }
        _ => None,
    };
    tracing::info!(
        users = users.len(),
        customers = customers.as_ref().map(Vec::len),
        disabled = disabled_users.len(),
        "HTTP read complete."
    );
    Ok(Records {
        customers,
        users,
        disabled_users,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Users at `http://127.0.0.1:PORT/users` (`{"Resources": users}`), served until the test ends.
    async fn serve(users: Value) -> String {
        let app = axum::Router::new().route(
            "/users",
            axum::routing::get(move || {
                let users = users.clone();
                async move { axum::Json(serde_json::json!({ "Resources": users })) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/users", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn inactive_users_are_not_in_the_directory_but_named_as_disabled() {
        use serde_json::json;
        let user = |x: &str, active: bool| json!({"externalId": x, "org": "hr-acme", "email": format!("{x}@acme.example"), "active": active});
        let url = serve(json!([
            user("hr-1", true),
            user("hr-2", false),
            // Inactive here, active there: active.
            user("hr-3", false),
            user("hr-3", true),
            // Out of scope, or no externalId: nobody.
            user("crm-4", false),
            {"org": "hr-acme", "email": "x@acme.example", "active": false},
        ]))
        .await;
        let mut config = crate::config::tests::parse(&format!(
            "platform:\n  emulator:\n    state: state.json\nsource:\n  http:\n    users:\n      url: {url}\n      records: \"$.Resources[*]\"\n      pagination: {{ style: none }}\n    absent_when: {{ path: $.active, equals: false }}\nmapping:\n  customer:\n    external_id: $.org\n    name: $.org\n  user:\n    external_id: $.externalId\n    customer: $.org\n    email: $.email\n"
        ))
        .unwrap();
        config.policy.external_id_prefix = Some("hr-".to_owned());
        let d = crate::source::read_directory(&config).await.unwrap();
        assert_eq!(d.users.keys().collect::<Vec<_>>(), ["hr-1", "hr-3"]);
        assert_eq!(d.disabled_users.iter().collect::<Vec<_>>(), ["hr-2"]);
        assert!(d.refused.is_empty(), "{:?}", d.refused);
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/scim+json"));
        assert!(!is_json("text/html"));
        assert!(!is_json(""));
    }

    #[test]
    fn query_parameters_replace_their_old_values() {
        let base: Url = "https://hr.example/api/users?active=true&page=9"
            .parse()
            .unwrap();
        let u = with_query(
            &base,
            &[("page", "2".to_owned()), ("per_page", "50".to_owned())],
        );
        assert_eq!(
            u.as_str(),
            "https://hr.example/api/users?active=true&page=2&per_page=50"
        );
    }

    #[test]
    fn fallback_paths_and_wrong_types() {
        let keys = key_paths(&[
            "$.emails[?@.primary==true].value || $.emails[0].value".to_owned(),
            "$.name".to_owned(),
            "$.id".to_owned(),
        ])
        .unwrap();
        let raw = RawRecord {
            url: "u".to_owned(),
            index: 3,
            value: serde_json::json!({"id": 42, "name": {"formatted": "Ada"}, "emails": [{"value": "a@x.io"}, {"value": "b@x.io", "primary": true}]}),
        };
        let rec = to_record(&raw, &keys);
        assert_eq!(
            rec.get("$.emails[?@.primary==true].value || $.emails[0].value"),
            Some("b@x.io")
        );
        assert_eq!(rec.get("$.id"), Some("42"));
        assert_eq!(
            rec.problem.as_deref(),
            Some("path $.name: expected text, found an object at /name")
        );
    }
}
