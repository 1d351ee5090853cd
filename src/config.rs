//! The configuration file: raw serde shapes (unknown keys are errors), then
//! `validate()` into a typed [`Config`] with no I/O. Every error names the
//! file, the key path and, where the YAML parser gives it, line and column.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::daemon::schedule::{CronSchedule, ScheduleError};
use crate::platform::{AuthMethod, RetryPolicy, SecretSource, DEFAULT_REFRESH_MARGIN};

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}{}: {key}: {message}", path.display(), at(*.line, *.column))]
    Parse {
        path: PathBuf,
        key: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    #[error("{}: {key}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

impl ConfigError {
    /// The key path at fault (`policy.delete_users.max_count`).
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Parse { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } => None,
        }
    }
}

// ---------------------------------------------------------------- raw shapes

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    platform: RawPlatform,
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    source: RawSource,
    mapping: RawMapping,
    #[serde(default)]
    policy: RawPolicy,
    state_dir: Option<PathBuf>,
    schedule: Option<RawSchedule>,
    metrics: Option<RawMetrics>,
}

// `source` is written as a one-key map (`source: { csv: {...} }`), which
// serde_yaml needs told (it would otherwise expect a `!csv` tag).

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlatform {
    url: Option<String>,
    emulator: Option<RawEmulator>,
    token: Option<RawSecret>,
    refresh_token: Option<RawSecret>,
    tenant_id: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_secs: u64,
    #[serde(default = "default_request_timeout")]
    request_timeout_secs: u64,
    #[serde(default = "default_rps")]
    requests_per_second: u32,
    #[serde(default = "default_four")]
    max_concurrency: usize,
    #[serde(default = "default_attempts")]
    max_attempts: u32,
}

fn default_connect_timeout() -> u64 {
    10
}
fn default_request_timeout() -> u64 {
    60
}
fn default_rps() -> u32 {
    10
}
fn default_four() -> usize {
    4
}
fn default_attempts() -> u32 {
    5
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmulator {
    state: PathBuf,
    seed: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    env: Option<String>,
    file: Option<PathBuf>,
    credential: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum RawSource {
    Csv(RawCsv),
    Ldap(Box<RawLdap>),
    Http(Box<RawHttp>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdap {
    url: String,
    #[serde(default)]
    kind: LdapKind,
    #[serde(default)]
    allow_insecure: bool,
    ca_file: Option<PathBuf>,
    bind_dn: Option<String>,
    bind_password: Option<RawSecret>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_secs: u64,
    #[serde(default = "default_request_timeout")]
    operation_timeout_secs: u64,
    #[serde(default = "default_read_deadline")]
    read_deadline_secs: u64,
    #[serde(default = "default_page_size")]
    page_size: i32,
    users: RawLdapUsers,
    customers: RawLdapCustomers,
    #[serde(default)]
    disabled: RawLdapDisabled,
    /// Attribute -> suffix: of several values, take the first ending in it.
    #[serde(default)]
    prefer_suffix: BTreeMap<String, String>,
}

fn default_read_deadline() -> u64 {
    600
}
fn default_page_size() -> i32 {
    500
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdapUsers {
    base: String,
    #[serde(default)]
    scope: LdapScope,
    filter: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdapCustomers {
    strategy: CustomerStrategyKind,
    base: String,
    #[serde(default = "default_one")]
    scope: LdapScope,
    filter: Option<String>,
    user_attribute: Option<String>,
    key_attribute: Option<String>,
    member_attribute: Option<String>,
    #[serde(default)]
    use_member_of: bool,
}

fn default_one() -> LdapScope {
    LdapScope::One
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdapDisabled {
    #[serde(default)]
    ad_account_disable: bool,
    attribute_present: Option<String>,
    filter: Option<String>,
}

/// Which server the LDAP source talks to: sets the default externalId
/// attribute (`entryUUID` or `objectGUID`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LdapKind {
    #[default]
    Openldap,
    ActiveDirectory,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LdapScope {
    Base,
    One,
    #[default]
    Sub,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CustomerStrategyKind {
    Ancestor,
    Attribute,
    Group,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCsv {
    users_file: PathBuf,
    customers_file: Option<PathBuf>,
    #[serde(default = "default_delimiter")]
    delimiter: String,
}

fn default_delimiter() -> String {
    ",".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    customer: RawCustomerMapping,
    user: RawUserMapping,
    #[serde(default)]
    roles: RawRoles,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomerMapping {
    external_id: String,
    name: String,
    description: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    label_separator: Option<String>,
    #[serde(default)]
    static_labels: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUserMapping {
    external_id: String,
    customer: String,
    email: String,
    name: Option<String>,
    phone: Option<String>,
    role: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoles {
    #[serde(default)]
    map: BTreeMap<String, String>,
    #[serde(default = "default_role")]
    default: String,
}

impl Default for RawRoles {
    fn default() -> Self {
        RawRoles {
            map: BTreeMap::new(),
            default: default_role(),
        }
    }
}

fn default_role() -> String {
    "Member".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    external_id_prefix: Option<String>,
    #[serde(default)]
    email_change: ChangePolicy,
    #[serde(default)]
    adopt: bool,
    #[serde(default)]
    delete_users: RawBudget,
    #[serde(default)]
    delete_customers: RawCustomerBudget,
    #[serde(default = "default_shrink")]
    max_shrink_percent: f64,
    #[serde(default = "default_four")]
    apply_concurrency: usize,
    #[serde(default)]
    refused_records: RawRefusedCap,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            external_id_prefix: None,
            email_change: ChangePolicy::default(),
            adopt: false,
            delete_users: RawBudget::default(),
            delete_customers: RawCustomerBudget::default(),
            max_shrink_percent: default_shrink(),
            apply_concurrency: default_four(),
            refused_records: RawRefusedCap::default(),
        }
    }
}

fn default_shrink() -> f64 {
    20.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    #[serde(default = "default_user_delete_count")]
    max_count: usize,
    #[serde(default = "default_user_delete_percent")]
    max_percent: f64,
}

fn default_user_delete_count() -> usize {
    100
}
fn default_user_delete_percent() -> f64 {
    10.0
}

impl Default for RawBudget {
    fn default() -> Self {
        RawBudget {
            max_count: default_user_delete_count(),
            max_percent: default_user_delete_percent(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomerBudget {
    #[serde(default)]
    enabled: bool,
    #[serde(default = "default_customer_delete_count")]
    max_count: usize,
    #[serde(default = "default_customer_delete_percent")]
    max_percent: f64,
}

fn default_customer_delete_count() -> usize {
    2
}
fn default_customer_delete_percent() -> f64 {
    2.0
}

impl Default for RawCustomerBudget {
    fn default() -> Self {
        RawCustomerBudget {
            enabled: false,
            max_count: default_customer_delete_count(),
            max_percent: default_customer_delete_percent(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRefusedCap {
    #[serde(default = "default_refused_percent")]
    max_percent: f64,
    #[serde(default = "default_refused_count")]
    max_count: usize,
}

fn default_refused_percent() -> f64 {
    1.0
}
fn default_refused_count() -> usize {
    10
}

impl Default for RawRefusedCap {
    fn default() -> Self {
        RawRefusedCap {
            max_percent: default_refused_percent(),
            max_count: default_refused_count(),
        }
    }
}

// -------------------------------------------------------------- typed config

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from; relative paths inside are resolved against its folder.
    pub path: PathBuf,
    pub platform: PlatformSettings,
    pub source: SourceSettings,
    pub mapping: Mapping,
    pub policy: Policy,
    /// Where the lock file lives (`state_dir`, else `$STATE_DIRECTORY`,
    /// else `.dirsync-state` in the config file's folder).
    pub state_dir: PathBuf,
    /// `dirsync run`'s schedule; required by it, ignored by the rest.
    pub schedule: Option<ScheduleSettings>,
    /// `dirsync run`'s metrics endpoint; None: off.
    pub metrics: Option<MetricsSettings>,
}

#[derive(Clone, Debug)]
pub enum PlatformTarget {
    Url(url::Url),
    /// The built-in emulator, started in-process with this state file.
    Emulator {
        state: PathBuf,
        seed: Option<PathBuf>,
    },
}

#[derive(Clone, Debug)]
pub struct PlatformSettings {
    pub target: PlatformTarget,
    /// None: the emulator (a fresh token of its own each run), or, for a
    /// URL, the environment (`PRISMATIC_API_KEY`, `PRISM_ACCESS_TOKEN`,
    /// `PRISM_REFRESH_TOKEN`) read when the connection opens.
    pub auth: Option<AuthMethod>,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub requests_per_second: NonZeroU32,
    pub max_concurrency: usize,
    pub retry: RetryPolicy,
}

#[derive(Clone, Debug)]
pub enum SourceSettings {
    Csv(CsvSettings),
    Ldap(Box<LdapSettings>),
    Http(Box<HttpSettings>),
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
}

#[derive(Clone, Debug)]
pub struct LdapSettings {
    pub url: url::Url,
    pub kind: LdapKind,
    /// ldap:// without StartTLS is refused unless this is set.
    pub allow_insecure: bool,
    pub ca_file: Option<PathBuf>,
    /// None: an anonymous bind.
    pub bind: Option<(String, SecretSource)>,
    pub connect_timeout: Duration,
    pub operation_timeout: Duration,
    pub read_deadline: Duration,
    pub page_size: i32,
    pub users_base: String,
    pub users_scope: LdapScope,
    pub users_filter: String,
    pub customers: CustomerStrategy,
    pub customers_base: String,
    pub customers_scope: LdapScope,
    pub customers_filter: String,
    pub disabled: DisabledRule,
    /// Lowercased attribute -> suffix preferred among several values.
    pub prefer_suffix: BTreeMap<String, String>,
}

/// How users find their customer entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CustomerStrategy {
    /// The customer is the user's ancestor entry directly under the customers base.
    Ancestor,
    /// A user attribute's value equals a customer entry's key attribute.
    Attribute {
        user_attribute: String,
        key_attribute: String,
    },
    /// Each group under the base is a customer; members by DN in
    /// `member_attribute`, or by the user's `memberOf` when `use_member_of`.
    Group {
        member_attribute: String,
        use_member_of: bool,
    },
}

/// What marks a user as absent from the directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DisabledRule {
    /// Active Directory: `userAccountControl` has the ACCOUNTDISABLE bit (0x2).
    pub ad_account_disable: bool,
    /// The attribute is present (for example OpenLDAP's `pwdAccountLockedTime`).
    pub attribute_present: Option<String>,
    /// Users matching this filter are excluded by the server search.
    pub filter: Option<String>,
}

#[derive(Clone, Debug)]
pub struct CsvSettings {
    pub users_file: PathBuf,
    pub customers_file: Option<PathBuf>,
    pub delimiter: u8,
}

/// Which source key feeds each field. Only fields named here are compared
/// and written.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub customer: CustomerMapping,
    pub user: UserMapping,
    pub roles: RoleTable,
}

#[derive(Clone, Debug)]
pub struct CustomerMapping {
    pub external_id: String,
    pub name: String,
    pub description: Option<String>,
    /// Keys whose values are labels (each split on `label_separator` when set).
    pub labels: Vec<String>,
    pub label_separator: Option<String>,
    /// Labels every managed customer carries.
    pub static_labels: Vec<String>,
}

impl CustomerMapping {
    /// Whether labels are managed at all (some key or static label is set).
    pub fn manages_labels(&self) -> bool {
        !self.labels.is_empty() || !self.static_labels.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct UserMapping {
    pub external_id: String,
    /// The key holding the user's customer externalId.
    pub customer: String,
    pub email: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub role: Option<String>,
}

/// Source role values to platform role names.
#[derive(Clone, Debug)]
pub struct RoleTable {
    /// Keys lowercased: source values match case-insensitively.
    pub map: BTreeMap<String, String>,
    pub default: String,
}

impl RoleTable {
    /// The platform role name for a source value (the default when absent or unmapped).
    pub fn resolve(&self, source_value: Option<&str>) -> &str {
        source_value
            .and_then(|v| self.map.get(&v.trim().to_lowercase()))
            .unwrap_or(&self.default)
    }

    /// Every platform role name the table can produce.
    pub fn role_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.default.as_str()).chain(self.map.values().map(String::as_str))
    }
}

/// What to do when a user's email or customer changed in the directory;
/// the platform cannot update either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangePolicy {
    /// Show it in the plan as drift that needs a decision; change nothing.
    #[default]
    Report,
    /// Delete the user and create it again (new id, new confirmation email).
    Recreate,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    pub max_count: usize,
    pub max_percent: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub external_id_prefix: Option<String>,
    pub email_change: ChangePolicy,
    pub adopt: bool,
    pub delete_users: Budget,
    /// None: customer deletes are off.
    pub delete_customers: Option<Budget>,
    pub max_shrink_percent: f64,
    pub apply_concurrency: usize,
    pub refused_records: Budget,
}

impl Default for Policy {
    fn default() -> Self {
        let raw = RawPolicy::default();
        Policy {
            external_id_prefix: None,
            email_change: raw.email_change,
            adopt: raw.adopt,
            delete_users: Budget {
                max_count: raw.delete_users.max_count,
                max_percent: raw.delete_users.max_percent,
            },
            delete_customers: None,
            max_shrink_percent: raw.max_shrink_percent,
            apply_concurrency: raw.apply_concurrency,
            refused_records: Budget {
                max_count: raw.refused_records.max_count,
                max_percent: raw.refused_records.max_percent,
            },
        }
    }
}

impl Policy {
    /// Whether a platform record with this externalId is dirsync's to manage.
    pub fn in_scope(&self, external_id: Option<&str>) -> bool {
        match (external_id, &self.external_id_prefix) {
            (None, _) => false,
            (Some(""), _) => false,
            (Some(_), None) => true,
            (Some(x), Some(prefix)) => x.starts_with(prefix.as_str()),
        }
    }
}

fn validate_http(c: &Checker<'_>, h: RawHttp) -> Result<HttpSettings, ConfigError> {
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
    })
}

fn validate_ldap(c: &Checker<'_>, l: RawLdap) -> Result<LdapSettings, ConfigError> {
    let url: url::Url = l
        .url
        .parse()
        .map_err(|e| c.invalid("source.ldap.url", format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "ldap" | "ldaps") {
        return Err(c.invalid(
            "source.ldap.url",
            "must start with ldap:// (StartTLS) or ldaps://",
        ));
    }
    let bind = match (&l.bind_dn, &l.bind_password) {
        (Some(dn), Some(pw)) => Some((
            c.non_empty("source.ldap.bind_dn", dn)?,
            c.secret("source.ldap.bind_password", pw)?,
        )),
        (None, None) => None,
        _ => {
            return Err(c.invalid(
                "source.ldap",
                "give both bind_dn and bind_password, or neither (anonymous)",
            ))
        }
    };
    if l.page_size <= 0 {
        return Err(c.invalid("source.ldap.page_size", "must be at least 1"));
    }
    let cust = l.customers;
    let (customers, default_filter) = match cust.strategy {
        CustomerStrategyKind::Ancestor => (
            CustomerStrategy::Ancestor,
            "(|(objectClass=organizationalUnit)(objectClass=organization))",
        ),
        CustomerStrategyKind::Attribute => (
            CustomerStrategy::Attribute {
                user_attribute: cust.user_attribute.clone().ok_or_else(|| {
                    c.invalid(
                        "source.ldap.customers.user_attribute",
                        "is required by the attribute strategy",
                    )
                })?,
                key_attribute: cust.key_attribute.clone().ok_or_else(|| {
                    c.invalid(
                        "source.ldap.customers.key_attribute",
                        "is required by the attribute strategy",
                    )
                })?,
            },
            "(objectClass=*)",
        ),
        CustomerStrategyKind::Group => (
            CustomerStrategy::Group {
                member_attribute: cust
                    .member_attribute
                    .clone()
                    .unwrap_or_else(|| "member".to_owned()),
                use_member_of: cust.use_member_of,
            },
            "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=group))",
        ),
    };
    for (key, filter) in [
        ("source.ldap.users.filter", &l.users.filter),
        ("source.ldap.customers.filter", &cust.filter),
        ("source.ldap.disabled.filter", &l.disabled.filter),
    ] {
        if let Some(f) = filter {
            ldap3::parse_filter(f)
                .map_err(|_| c.invalid(key, format!("not a valid LDAP filter: {f}")))?;
        }
    }
    Ok(LdapSettings {
        url,
        kind: l.kind,
        allow_insecure: l.allow_insecure,
        ca_file: l.ca_file.as_ref().map(|f| resolve_against(c.path, f)),
        bind,
        connect_timeout: Duration::from_secs(l.connect_timeout_secs.max(1)),
        operation_timeout: Duration::from_secs(l.operation_timeout_secs.max(1)),
        read_deadline: Duration::from_secs(l.read_deadline_secs.max(1)),
        page_size: l.page_size,
        users_base: c.non_empty("source.ldap.users.base", &l.users.base)?,
        users_scope: l.users.scope,
        users_filter: l
            .users
            .filter
            .unwrap_or_else(|| "(objectClass=inetOrgPerson)".to_owned()),
        customers,
        customers_base: c.non_empty("source.ldap.customers.base", &cust.base)?,
        customers_scope: cust.scope,
        customers_filter: cust
            .filter
            .clone()
            .unwrap_or_else(|| default_filter.to_owned()),
        disabled: DisabledRule {
            ad_account_disable: l.disabled.ad_account_disable,
            attribute_present: l.disabled.attribute_present,
            filter: l.disabled.filter,
        },
        prefer_suffix: l
            .prefer_suffix
            .into_iter()
            .map(|(k, v)| (k.to_lowercase(), v))
            .collect(),
    })
}

// ------------------------------------------------------------------ loading

impl Config {
    /// Reads and validates a config file. No network, no source access.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Validates config text as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let deserializer = serde_yaml::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let location = inner.location();
            let message =
                if key.starts_with("platform.token") || key.starts_with("platform.refresh_token") {
                    // Never echo what was written there: it may be the token itself.
                    SECRET_SHAPE.to_owned()
                } else {
                    // serde_yaml starts its message with the path where it was
                    // (the key or its parent); the key is printed once, by us.
                    let m = strip_location(&inner.to_string());
                    match m.split_once(": ") {
                        Some((prefix, rest)) if key.starts_with(prefix) => rest.to_owned(),
                        _ => m,
                    }
                };
            ConfigError::Parse {
                path: path.to_path_buf(),
                key: if key == "." {
                    "(top level)".to_owned()
                } else {
                    key
                },
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
                message,
            }
        })?;
        validate(raw, path)
    }

    /// A path from the config, resolved against the config file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve_against(&self.path, p)
    }
}

fn resolve_against(config_path: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match config_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

const SECRET_SHAPE: &str =
    "must be a map with one or more of credential, file and env, tried in that order (the token itself never goes in the config)";

/// serde_yaml appends " at line L column C"; we print the location ourselves.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

struct Checker<'a> {
    path: &'a Path,
}

impl Checker<'_> {
    fn invalid(&self, key: &str, message: impl fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.to_owned(),
            message: message.to_string(),
        }
    }

    fn percent(&self, key: &str, value: f64) -> Result<f64, ConfigError> {
        if (0.0..=100.0).contains(&value) {
            Ok(value)
        } else {
            Err(self.invalid(
                key,
                format!("must be a percentage from 0 to 100, not {value}"),
            ))
        }
    }

    fn non_empty(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        let v = value.trim();
        if v.is_empty() {
            Err(self.invalid(key, "must not be empty"))
        } else {
            Ok(v.to_owned())
        }
    }

    /// One place, or several tried in the order credential, file, env.
    fn secret(&self, key: &str, raw: &RawSecret) -> Result<SecretSource, ConfigError> {
        let mut sources = Vec::new();
        if let Some(name) = &raw.credential {
            sources.push(SecretSource::Credential(
                self.non_empty(&format!("{key}.credential"), name)?,
            ));
        }
        if let Some(file) = &raw.file {
            sources.push(SecretSource::File(resolve_against(self.path, file)));
        }
        if let Some(var) = &raw.env {
            sources.push(SecretSource::Env(
                self.non_empty(&format!("{key}.env"), var)?,
            ));
        }
        match <[SecretSource; 1]>::try_from(sources) {
            Ok([one]) => Ok(one),
            Err(none) if none.is_empty() => Err(self.invalid(key, SECRET_SHAPE)),
            Err(several) => Ok(SecretSource::FirstOf(several)),
        }
    }
}

fn validate(raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
    let c = Checker { path };
    let p = raw.platform;
    let target = match (&p.url, &p.emulator) {
        (Some(url), None) => PlatformTarget::Url(
            url.parse()
                .map_err(|e| c.invalid("platform.url", format!("not a URL: {e}")))?,
        ),
        (None, Some(emu)) => PlatformTarget::Emulator {
            state: resolve_against(path, &emu.state),
            seed: emu.seed.as_ref().map(|s| resolve_against(path, s)),
        },
        _ => return Err(c.invalid("platform", "give exactly one of url or emulator")),
    };
    let auth = match (&target, &p.token, &p.refresh_token) {
        (PlatformTarget::Emulator { .. }, None, None) => None,
        (PlatformTarget::Emulator { .. }, _, _) => {
            return Err(c.invalid(
                "platform.token",
                "the built-in emulator makes its own token; remove token and refresh_token",
            ))
        }
        (PlatformTarget::Url(_), Some(t), None) => {
            Some(AuthMethod::StaticToken(c.secret("platform.token", t)?))
        }
        (PlatformTarget::Url(_), None, Some(r)) => Some(AuthMethod::RefreshToken {
            refresh_token: c.secret("platform.refresh_token", r)?,
            tenant_id: p.tenant_id.clone(),
            refresh_margin: DEFAULT_REFRESH_MARGIN,
        }),
        (PlatformTarget::Url(_), None, None) => {
            Some(AuthMethod::from_environment().map_err(|e| c.invalid("platform.token", e))?)
        }
        (PlatformTarget::Url(_), Some(_), Some(_)) => {
            return Err(c.invalid("platform", "give token or refresh_token, not both"))
        }
    };
    if p.tenant_id.is_some() && p.refresh_token.is_none() {
        return Err(c.invalid("platform.tenant_id", "is used only with refresh_token"));
    }
    let requests_per_second = NonZeroU32::new(p.requests_per_second)
        .ok_or_else(|| c.invalid("platform.requests_per_second", "must be at least 1"))?;
    if p.max_concurrency == 0 {
        return Err(c.invalid("platform.max_concurrency", "must be at least 1"));
    }
    if p.max_attempts == 0 {
        return Err(c.invalid("platform.max_attempts", "must be at least 1"));
    }
    if p.connect_timeout_secs == 0 || p.request_timeout_secs == 0 {
        return Err(c.invalid("platform", "timeouts must be at least 1 second"));
    }
    let platform = PlatformSettings {
        target,
        auth,
        ca_file: p.ca_file.as_ref().map(|f| resolve_against(path, f)),
        connect_timeout: Duration::from_secs(p.connect_timeout_secs),
        request_timeout: Duration::from_secs(p.request_timeout_secs),
        requests_per_second,
        max_concurrency: p.max_concurrency,
        retry: RetryPolicy {
            max_attempts: p.max_attempts,
            ..RetryPolicy::default()
        },
    };

    let source = match raw.source {
        RawSource::Csv(csv) => {
            let delimiter = match csv.delimiter.as_bytes() {
                [b] if b.is_ascii() && *b != b'"' && *b != b'\n' && *b != b'\r' => *b,
                _ if csv.delimiter == "\\t" => b'\t',
                _ => {
                    return Err(c.invalid(
                        "source.csv.delimiter",
                        format!(
                            "must be one ASCII character (or \\t), not {:?}",
                            csv.delimiter
                        ),
                    ))
                }
            };
            SourceSettings::Csv(CsvSettings {
                users_file: resolve_against(path, &csv.users_file),
                customers_file: csv
                    .customers_file
                    .as_ref()
                    .map(|f| resolve_against(path, f)),
                delimiter,
            })
        }
        RawSource::Ldap(l) => SourceSettings::Ldap(Box::new(validate_ldap(&c, *l)?)),
        RawSource::Http(h) => SourceSettings::Http(Box::new(validate_http(&c, *h)?)),
    };

    let m = raw.mapping;
    let mapping = Mapping {
        customer: CustomerMapping {
            external_id: c.non_empty("mapping.customer.external_id", &m.customer.external_id)?,
            name: c.non_empty("mapping.customer.name", &m.customer.name)?,
            description: m.customer.description.clone(),
            labels: m.customer.labels.clone(),
            label_separator: m.customer.label_separator.clone().filter(|s| !s.is_empty()),
            static_labels: m.customer.static_labels.clone(),
        },
        user: UserMapping {
            external_id: c.non_empty("mapping.user.external_id", &m.user.external_id)?,
            customer: c.non_empty("mapping.user.customer", &m.user.customer)?,
            email: c.non_empty("mapping.user.email", &m.user.email)?,
            name: m.user.name.clone(),
            phone: m.user.phone.clone(),
            role: m.user.role.clone(),
        },
        roles: RoleTable {
            map: m
                .roles
                .map
                .iter()
                .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
                .collect(),
            default: c.non_empty("mapping.roles.default", &m.roles.default)?,
        },
    };

    let pol = raw.policy;
    if pol.apply_concurrency == 0 {
        return Err(c.invalid("policy.apply_concurrency", "must be at least 1"));
    }
    let policy = Policy {
        external_id_prefix: pol.external_id_prefix.filter(|p| !p.is_empty()),
        email_change: pol.email_change,
        adopt: pol.adopt,
        delete_users: Budget {
            max_count: pol.delete_users.max_count,
            max_percent: c.percent(
                "policy.delete_users.max_percent",
                pol.delete_users.max_percent,
            )?,
        },
        delete_customers: pol.delete_customers.enabled.then_some(()).map(|_| Budget {
            max_count: pol.delete_customers.max_count,
            max_percent: pol.delete_customers.max_percent,
        }),
        max_shrink_percent: c.percent("policy.max_shrink_percent", pol.max_shrink_percent)?,
        apply_concurrency: pol.apply_concurrency,
        refused_records: Budget {
            max_count: pol.refused_records.max_count,
            max_percent: c.percent(
                "policy.refused_records.max_percent",
                pol.refused_records.max_percent,
            )?,
        },
    };
    c.percent(
        "policy.delete_customers.max_percent",
        pol.delete_customers.max_percent,
    )?;

    let state_dir = match &raw.state_dir {
        Some(dir) => resolve_against(path, dir),
        None => default_state_dir(path, std::env::var_os("STATE_DIRECTORY")),
    };
    let schedule = raw
        .schedule
        .as_ref()
        .map(|s| validate_schedule(&c, s))
        .transpose()?;
    let metrics = raw
        .metrics
        .as_ref()
        .map(|m| validate_metrics(&c, m))
        .transpose()?;

    Ok(Config {
        path: path.to_path_buf(),
        platform,
        source,
        mapping,
        policy,
        state_dir,
        schedule,
        metrics,
    })
}

// --------------------------------------- dirsync run: state, schedule, metrics

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
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
struct RawMetrics {
    listen: String,
    #[serde(default = "default_health_max_age")]
    health_max_age_secs: u64,
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

/// The Prometheus endpoint and the health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsSettings {
    pub listen: SocketAddr,
    /// `/healthz` fails when the last successful run is older than this.
    pub health_max_age: Duration,
}

/// `$STATE_DIRECTORY` (systemd's `StateDirectory=`; the first when it lists
/// several), else `.dirsync-state` in the config file's folder.
fn default_state_dir(config_path: &Path, state_directory: Option<OsString>) -> PathBuf {
    if let Some(first) = state_directory
        .as_ref()
        .and_then(|v| v.to_str())
        .and_then(|v| v.split(':').find(|p| !p.is_empty()))
    {
        return PathBuf::from(first);
    }
    resolve_against(config_path, Path::new(".dirsync-state"))
}

fn validate_schedule(c: &Checker<'_>, s: &RawSchedule) -> Result<ScheduleSettings, ConfigError> {
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

fn validate_metrics(c: &Checker<'_>, m: &RawMetrics) -> Result<MetricsSettings, ConfigError> {
    let listen = m.listen.trim().parse().map_err(|_| {
        c.invalid(
            "metrics.listen",
            format!(
                "must be an address and a port, such as 127.0.0.1:9187 or [::1]:9187, not {:?}",
                m.listen
            ),
        )
    })?;
    if m.health_max_age_secs == 0 {
        return Err(c.invalid("metrics.health_max_age_secs", "must be at least 1"));
    }
    Ok(MetricsSettings {
        listen,
        health_max_age: Duration::from_secs(m.health_max_age_secs),
    })
}

#[cfg(test)]
mod daemon_settings_tests {
    use super::tests::{parse, MINIMAL};
    use super::*;

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
                listen: "127.0.0.1:9187".parse().unwrap(),
                health_max_age: Duration::from_secs(3600),
            })
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
        ] {
            let err = parse(&format!("{MINIMAL}{extra}")).unwrap_err();
            assert_eq!(err.key(), Some(key), "{err}");
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn a_token_may_name_several_places_tried_credential_then_file_then_env() {
        let text = MINIMAL.replace(
            "platform:\n  emulator:\n    state: state.json\n",
            "platform:\n  url: https://app.prismatic.io\n  token: { env: PRISMATIC_API_KEY, file: token, credential: prismatic-token }\n",
        );
        let c = parse(&text).unwrap();
        let Some(AuthMethod::StaticToken(SecretSource::FirstOf(sources))) = &c.platform.auth else {
            panic!("several places expected: {:?}", c.platform.auth)
        };
        let order: Vec<String> = sources.iter().map(SecretSource::describe).collect();
        assert_eq!(
            order,
            [
                "systemd credential prismatic-token",
                "file conf/token",
                "environment variable PRISMATIC_API_KEY"
            ]
        );
        let empty = MINIMAL.replace(
            "platform:\n  emulator:\n    state: state.json\n",
            "platform:\n  url: https://app.prismatic.io\n  token: {}\n",
        );
        let err = parse(&empty).unwrap_err();
        assert_eq!(err.key(), Some("platform.token"));
        assert!(
            err.to_string()
                .contains("one or more of credential, file and env"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const MINIMAL: &str = "\
platform:
  emulator:
    state: state.json
source:
  csv:
    users_file: users.csv
mapping:
  customer:
    external_id: customer_id
    name: customer_name
  user:
    external_id: id
    customer: customer_id
    email: email
";

    pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("conf/dirsync.yaml"))
    }

    #[test]
    fn a_minimal_config_gets_the_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.policy, Policy::default());
        assert_eq!(
            c.policy.delete_users,
            Budget {
                max_count: 100,
                max_percent: 10.0
            }
        );
        assert_eq!(c.policy.delete_customers, None);
        assert_eq!(c.mapping.roles.default, "Member");
        assert_eq!(c.platform.requests_per_second.get(), 10);
        let SourceSettings::Csv(csv) = &c.source else {
            panic!("csv source expected")
        };
        assert_eq!(
            csv.users_file,
            Path::new("conf/users.csv"),
            "relative to the config file"
        );
        assert_eq!(csv.delimiter, b',');
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_key_line_and_column() {
        let text = MINIMAL.replace("    email: email\n", "    email: email\n    emial: mail\n");
        let err = parse(&text).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with("conf/dirsync.yaml:15:5: mapping.user.emial: unknown field `emial`"),
            "{shown}"
        );
    }

    #[test]
    fn a_wrong_type_names_the_key_path() {
        let text = format!("{MINIMAL}policy:\n  delete_users:\n    max_count: lots\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key(), Some("policy.delete_users.max_count"));
        assert!(
            err.to_string().starts_with(
                "conf/dirsync.yaml:17:16: policy.delete_users.max_count: invalid type"
            ),
            "{err}"
        );
    }

    #[test]
    fn an_inline_token_is_refused() {
        let text = MINIMAL.replace(
            "platform:\n  emulator:\n    state: state.json\n",
            "platform:\n  url: https://app.prismatic.io\n  token: eyJhbGciOi\n",
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key(), Some("platform.token"), "{err}");
        assert!(
            !err.to_string().contains("eyJhbGciOi"),
            "the value is not echoed: {err}"
        );
    }

    #[test]
    fn a_token_source_names_one_place_or_several() {
        let text = MINIMAL.replace(
            "platform:\n  emulator:\n    state: state.json\n",
            "platform:\n  url: https://app.prismatic.io\n  token: { env: A, file: b }\n",
        );
        assert!(matches!(
            parse(&text).unwrap().platform.auth,
            Some(AuthMethod::StaticToken(SecretSource::FirstOf(_)))
        ));
        let ok = MINIMAL.replace(
            "platform:\n  emulator:\n    state: state.json\n",
            "platform:\n  url: https://app.prismatic.io\n  token: { credential: prismatic-token }\n",
        );
        let c = parse(&ok).unwrap();
        assert!(
            matches!(c.platform.auth, Some(AuthMethod::StaticToken(SecretSource::Credential(ref n))) if n == "prismatic-token")
        );
    }

    #[test]
    fn percentages_are_checked() {
        let text = format!("{MINIMAL}policy:\n  max_shrink_percent: 150\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key(), Some("policy.max_shrink_percent"));
    }

    #[test]
    fn roles_match_case_insensitively_with_a_default() {
        let text = format!(
            "{MINIMAL}  roles:\n    map: {{ Admin: Admin, staff: Member }}\n    default: Member\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.mapping.roles.resolve(Some("ADMIN")), "Admin");
        assert_eq!(c.mapping.roles.resolve(Some("contractor")), "Member");
        assert_eq!(c.mapping.roles.resolve(None), "Member");
    }

    #[test]
    fn scope_needs_an_external_id_and_the_prefix() {
        let mut p = Policy::default();
        assert!(p.in_scope(Some("x")));
        assert!(!p.in_scope(None));
        assert!(!p.in_scope(Some("")));
        p.external_id_prefix = Some("hr-".to_owned());
        assert!(p.in_scope(Some("hr-1")));
        assert!(!p.in_scope(Some("crm-1")));
    }
}
