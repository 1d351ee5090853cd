//! `source.http`: an HTTP/JSON API (a CRM, an HR system, SCIM 2.0): the
//! endpoints, how their pages follow each other, how records are found and
//! mapped, and how dirsync signs in.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::platform::RawSecret;
use crate::config::{
    default_attempts, default_connect_timeout, default_read_deadline, default_request_timeout,
    resolve_against, Checker, ConfigError,
};
use crate::platform::{RetryPolicy, SecretSource};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawHttp {
    #[serde(default)]
    preset: Option<HttpPreset>,
    /// With `preset: scim`: the SCIM base URL (`/Users` and `/Groups` below it).
    base_url: Option<String>,
    users: Option<RawEndpoint>,
    customers: Option<RawEndpoint>,
    #[serde(default)]
    customers_from: Option<CustomersFrom>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    auth: Option<RawHttpAuth>,
    ca_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_secs: u64,
    #[serde(default = "default_request_timeout")]
    request_timeout_secs: u64,
    #[serde(default = "default_read_deadline")]
    read_deadline_secs: u64,
    #[serde(default = "default_max_pages")]
    max_pages: usize,
    #[serde(default = "default_max_response_bytes")]
    max_response_bytes: u64,
    #[serde(default = "default_attempts")]
    max_attempts: u32,
    absent_when: Option<RawAbsentWhen>,
    group_members: Option<String>,
    user_id: Option<String>,
    /// With `customers_from: groups`: a user in no group is absent, or refused.
    unassigned_users: Option<UnassignedUsers>,
}

/// A user that no customer group lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum UnassignedUsers {
    /// Not in the directory (the default).
    Absent,
    /// A refused record.
    Refuse,
}

fn default_max_pages() -> usize {
    10_000
}
fn default_max_response_bytes() -> u64 {
    64 * 1024 * 1024
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpPreset {
    Scim,
}

/// Where an HTTP source's customers come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomersFrom {
    /// Distinct customer values of the user records (like a one-file CSV).
    Users,
    /// Records of the customers endpoint; users name their customer's key.
    Endpoint,
    /// Records of the customers endpoint are groups listing their members.
    Groups,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    url: Option<String>,
    records: Option<String>,
    pagination: Option<Pagination>,
}

/// How an endpoint's pages follow each other.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One response holds everything.
    None,
    /// `Link: <...>; rel="next"` response headers (RFC 8288).
    Link,
    /// A cursor read from the body at `cursor_path`, sent back as `param`.
    Cursor { cursor_path: String, param: String },
    /// Page numbers: `page_param` from `first_page`, `size_param` = `page_size`.
    Page {
        #[serde(default = "default_page_param")]
        page_param: String,
        #[serde(default = "default_size_param")]
        size_param: String,
        #[serde(default = "default_http_page_size")]
        page_size: usize,
        #[serde(default = "default_first_page")]
        first_page: usize,
    },
    /// Offsets: `offset_param` from 0, `limit_param` = `page_size`.
    Offset {
        #[serde(default = "default_offset_param")]
        offset_param: String,
        #[serde(default = "default_limit_param")]
        limit_param: String,
        #[serde(default = "default_http_page_size")]
        page_size: usize,
    },
    /// SCIM 2.0: `startIndex` (from 1), `count`, `totalResults`.
    Scim {
        #[serde(default = "default_http_page_size")]
        count: usize,
    },
}

fn default_page_param() -> String {
    "page".to_owned()
}
fn default_size_param() -> String {
    "per_page".to_owned()
}
fn default_offset_param() -> String {
    "offset".to_owned()
}
fn default_limit_param() -> String {
    "limit".to_owned()
}
fn default_http_page_size() -> usize {
    100
}
fn default_first_page() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum RawHttpAuth {
    Bearer(RawSecret),
    Basic {
        username: String,
        password: RawSecret,
    },
    ApiKey {
        header: String,
        value: RawSecret,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAbsentWhen {
    path: String,
    equals: serde_json::Value,
}

/// One endpoint of an HTTP source.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub url: url::Url,
    /// JSONPath (RFC 9535) selecting the records in each response.
    pub records: String,
    pub pagination: Pagination,
}

#[derive(Clone, Debug)]
pub enum HttpAuth {
    Bearer(SecretSource),
    Basic {
        username: String,
        password: SecretSource,
    },
    ApiKey {
        header: String,
        value: SecretSource,
    },
}

#[derive(Clone, Debug)]
pub struct HttpSettings {
    pub users: Endpoint,
    pub customers: Option<Endpoint>,
    pub customers_from: CustomersFrom,
    pub headers: BTreeMap<String, String>,
    pub auth: Option<HttpAuth>,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub read_deadline: Duration,
    pub max_pages: usize,
    pub max_response_bytes: u64,
    pub retry: RetryPolicy,
    /// Records whose value at `.0` equals `.1` are absent (SCIM `active: false`).
    pub absent_when: Option<(String, serde_json::Value)>,
    /// For `customers_from: groups`: JSONPath of member ids in a group, and of the id in a user.
    pub group_members: String,
    pub user_id: String,
    /// With `customers_from: groups`: a user no group lists is absent
    /// (true, the default) or refused (false).
    pub unassigned_absent: bool,
}

pub(super) fn validate_http(c: &Checker<'_>, h: RawHttp) -> Result<HttpSettings, ConfigError> {
    let scim = h.preset == Some(HttpPreset::Scim);
    let base = match (&h.base_url, scim) {
        (Some(b), _) => Some(
            b.trim_end_matches('/')
                .parse::<url::Url>()
                .map_err(|e| c.invalid("source.http.base_url", format!("not a URL: {e}")))?,
        ),
        (None, true) => {
            return Err(c.invalid("source.http.base_url", "is required by preset: scim"))
        }
        (None, false) => None,
    };
    let endpoint = |key: &str,
                    raw: Option<&RawEndpoint>,
                    scim_path: &str|
     -> Result<Option<Endpoint>, ConfigError> {
        let url = match (raw.and_then(|r| r.url.as_ref()), &base) {
            (Some(u), _) => Some(u.clone()),
            (None, Some(b)) if scim => {
                Some(format!("{}/{scim_path}", b.as_str().trim_end_matches('/')))
            }
            _ => None,
        };
        let Some(url) = url else {
            return match raw {
                Some(_) => Err(c.invalid(&format!("{key}.url"), "is required")),
                None => Ok(None),
            };
        };
        let url: url::Url = url
            .parse()
            .map_err(|e| c.invalid(&format!("{key}.url"), format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(c.invalid(&format!("{key}.url"), "must be http:// or https://"));
        }
        let records = raw.and_then(|r| r.records.clone()).unwrap_or_else(|| {
            if scim {
                "$.Resources[*]".to_owned()
            } else {
                "$[*]".to_owned()
            }
        });
        serde_json_path::JsonPath::parse(&records)
            .map_err(|e| c.invalid(&format!("{key}.records"), format!("not a JSONPath: {e}")))?;
        let pagination = raw.and_then(|r| r.pagination.clone()).unwrap_or(if scim {
            Pagination::Scim { count: 100 }
        } else {
            Pagination::None
        });
        if let Pagination::Cursor { cursor_path, .. } = &pagination {
            serde_json_path::JsonPath::parse(cursor_path).map_err(|e| {
                c.invalid(
                    &format!("{key}.pagination.cursor_path"),
                    format!("not a JSONPath: {e}"),
                )
            })?;
        }
        Ok(Some(Endpoint {
            url,
            records,
            pagination,
        }))
    };
    let users = endpoint("source.http.users", h.users.as_ref(), "Users")?.ok_or_else(|| {
        c.invalid(
            "source.http.users",
            "is required (or preset: scim with base_url)",
        )
    })?;
    let customers_from = h.customers_from.unwrap_or(match (&h.customers, scim) {
        (Some(_), true) => CustomersFrom::Groups,
        (Some(_), false) => CustomersFrom::Endpoint,
        (None, _) => CustomersFrom::Users,
    });
    let customers = match customers_from {
        CustomersFrom::Users => None,
        _ => Some(
            endpoint("source.http.customers", h.customers.as_ref(), "Groups")?.ok_or_else(
                || {
                    c.invalid(
                        "source.http.customers",
                        "is required when customers come from an endpoint or groups",
                    )
                },
            )?,
        ),
    };
    let auth = match h.auth {
        None => None,
        Some(RawHttpAuth::Bearer(s)) => {
            Some(HttpAuth::Bearer(c.secret("source.http.auth.bearer", &s)?))
        }
        Some(RawHttpAuth::Basic { username, password }) => Some(HttpAuth::Basic {
            username: c.non_empty("source.http.auth.basic.username", &username)?,
            password: c.secret("source.http.auth.basic.password", &password)?,
        }),
        Some(RawHttpAuth::ApiKey { header, value }) => Some(HttpAuth::ApiKey {
            header: c.non_empty("source.http.auth.api_key.header", &header)?,
            value: c.secret("source.http.auth.api_key.value", &value)?,
        }),
    };
    for name in h.headers.keys() {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(c.invalid(
                "source.http.headers",
                format!("{name:?} is not a valid header name"),
            ));
        }
    }
    let absent_when = match (h.absent_when, scim) {
        (Some(a), _) => Some((a.path, a.equals)),
        (None, true) => Some(("$.active".to_owned(), serde_json::Value::Bool(false))),
        (None, false) => None,
    };
    if h.unassigned_users.is_some() && customers_from != CustomersFrom::Groups {
        return Err(c.invalid(
            "source.http.unassigned_users",
            "is for customers_from: groups only (users name their customer otherwise)",
        ));
    }
    let group_members = h
        .group_members
        .unwrap_or_else(|| "$.members[*].value".to_owned());
    let user_id = h.user_id.unwrap_or_else(|| "$.id".to_owned());
    for (key, path) in [
        ("source.http.group_members", &group_members),
        ("source.http.user_id", &user_id),
    ] {
        serde_json_path::JsonPath::parse(path)
            .map_err(|e| c.invalid(key, format!("not a JSONPath: {e}")))?;
    }
    if let Some((path, _)) = &absent_when {
        serde_json_path::JsonPath::parse(path).map_err(|e| {
            c.invalid(
                "source.http.absent_when.path",
                format!("not a JSONPath: {e}"),
            )
        })?;
    }
    if h.max_pages == 0 || h.max_response_bytes == 0 || h.max_attempts == 0 {
        return Err(c.invalid(
            "source.http",
            "max_pages, max_response_bytes and max_attempts must be at least 1",
        ));
    }
    Ok(HttpSettings {
        users,
        customers,
        customers_from,
        headers: h.headers,
        auth,
        ca_file: h.ca_file.as_ref().map(|f| resolve_against(c.path, f)),
        connect_timeout: Duration::from_secs(h.connect_timeout_secs.max(1)),
        request_timeout: Duration::from_secs(h.request_timeout_secs.max(1)),
        read_deadline: Duration::from_secs(h.read_deadline_secs.max(1)),
        max_pages: h.max_pages,
        max_response_bytes: h.max_response_bytes,
        retry: RetryPolicy {
            max_attempts: h.max_attempts,
            ..RetryPolicy::default()
        },
        absent_when,
        group_members,
        user_id,
        unassigned_absent: h.unassigned_users != Some(UnassignedUsers::Refuse),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, SourceSettings};

    fn http(source: &str) -> Result<super::HttpSettings, String> {
        let text = format!(
            "platform:\n  emulator: {{ state: s.json }}\nsource:\n  http:\n{source}mapping:\n  customer: {{ external_id: $.id, name: $.name }}\n  user: {{ external_id: $.id, customer: customer, email: $.mail }}\n"
        );
        match Config::parse(&text, std::path::Path::new("conf/dirsync.yaml")) {
            Ok(Config {
                source: SourceSettings::Http(h),
                ..
            }) => Ok(*h),
            Ok(_) => Err("not an HTTP source".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn users_in_no_group_are_absent_unless_refused_and_only_groups_take_the_key() {
        let groups =
            "    preset: scim\n    base_url: https://idp.example/scim/v2\n    customers: {}\n";
        assert!(http(groups).unwrap().unassigned_absent);
        let refuse = http(&format!("{groups}    unassigned_users: refuse\n")).unwrap();
        assert!(!refuse.unassigned_absent);
        let users_only =
            http("    users: { url: https://hr.example/users }\n    unassigned_users: refuse\n")
                .unwrap_err();
        assert!(
            users_only.contains("source.http.unassigned_users: is for customers_from: groups only"),
            "{users_only}"
        );
    }
}
