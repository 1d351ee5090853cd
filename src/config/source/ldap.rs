//! `source.ldap`: an LDAP or Active Directory tree: the connection, where
//! users and customers sit, how users find their customer, and what marks
//! an account disabled.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::platform::RawSecret;
use crate::config::{
    default_connect_timeout, default_read_deadline, default_request_timeout, resolve_against,
    Checker, ConfigError,
};
use crate::platform::SecretSource;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawLdap {
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

pub(super) fn validate_ldap(c: &Checker<'_>, l: RawLdap) -> Result<LdapSettings, ConfigError> {
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
