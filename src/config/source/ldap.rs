//! `source.ldap`: an LDAP or Active Directory tree: the connection and how
//! its certificate is trusted (`ca_file`, or `tls.pin_sha256`), where users
//! and customers sit, how users find their customer (and what a user in
//! none is: `unassigned_users`), what a continuation reference does
//! (`references`), ranged retrieval (`range_size`), and what marks an
//! account disabled. `kind` sets the defaults that differ between OpenLDAP
//! and Active Directory.

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
    /// Active Directory: ask for multi-valued membership attributes this
    /// many values at a time (ranged retrieval); unset: as the server gives.
    range_size: Option<u32>,
    #[serde(default)]
    tls: RawLdapTls,
    /// What a search result continuation reference means.
    references: Option<References>,
    /// A user that matches no customer entry: absent, or refused.
    unassigned_users: Option<UnassignedUsers>,
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdapTls {
    /// SHA-256 of the server's DER certificate, hex, colons optional.
    pin_sha256: Option<String>,
}

/// What a search result continuation reference (a part of the tree that
/// another partition or server holds) does to the read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum References {
    /// Leave what it points to out (logged, counted): the default for
    /// Active Directory, where they name the other partitions of the forest.
    Ignore,
    /// Fail the read: the default for OpenLDAP, where one means part of
    /// the tree lives elsewhere.
    Fail,
}

/// A user that matches no customer entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum UnassignedUsers {
    /// Not in the directory (the default for the ancestor and group strategies).
    Absent,
    /// A refused record (the default for the attribute strategy).
    Refuse,
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

/// Which server the LDAP source talks to: sets the externalId attribute read
/// besides the mapping's (`entryUUID` or `objectGUID`), whether searches
/// carry Active Directory's domain-scope control, and the default of
/// `references` (fail on OpenLDAP, ignore on Active Directory).
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
    /// Active Directory: values asked for per request when reading a
    /// membership attribute in ranges; None: as many as the server gives.
    pub range_size: Option<u32>,
    /// `tls.pin_sha256`: accept exactly the certificate with this SHA-256
    /// (of its DER), with no CA or name check; None: the CA roots.
    pub pin_sha256: Option<[u8; 32]>,
    /// Send Active Directory's domain-scope control with every search.
    pub domain_scope: bool,
    /// A search result continuation reference is left out (true) or fails
    /// the read (false). A referral result always fails it.
    pub ignore_references: bool,
    /// A user matching no customer entry is absent (true) or refused (false).
    pub unassigned_absent: bool,
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
    let ad = l.kind == LdapKind::ActiveDirectory;
    if let Some(n) = l.range_size {
        if n == 0 {
            return Err(c.invalid("source.ldap.range_size", "must be at least 1"));
        }
        if !ad {
            return Err(c.invalid(
                "source.ldap.range_size",
                "is for kind: active_directory only (ranged retrieval is an Active Directory extension)",
            ));
        }
    }
    let pin_sha256 = match &l.tls.pin_sha256 {
        None => None,
        Some(pin) => {
            let key = "source.ldap.tls.pin_sha256";
            let bytes = parse_sha256(pin).map_err(|why| c.invalid(key, why))?;
            if l.ca_file.is_some() {
                return Err(c.invalid(
                    key,
                    "give ca_file or tls.pin_sha256, not both: a pinned certificate is accepted without its CA",
                ));
            }
            if url.scheme() == "ldap" && l.allow_insecure {
                return Err(c.invalid(
                    key,
                    "needs TLS, and allow_insecure: true with ldap:// turns it off: use ldaps://, or ldap:// without allow_insecure (StartTLS)",
                ));
            }
            Some(bytes)
        }
    };
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
    let ignore_references = match l.references {
        Some(r) => r == References::Ignore,
        None => ad,
    };
    let unassigned_absent = match l.unassigned_users {
        Some(u) => u == UnassignedUsers::Absent,
        None => !matches!(customers, CustomerStrategy::Attribute { .. }),
    };
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
        range_size: l.range_size,
        pin_sha256,
        domain_scope: ad,
        ignore_references,
        unassigned_absent,
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

/// A SHA-256 fingerprint in hex, with or without colons (or spaces), in
/// either case: `AB:CD:...` as `openssl x509 -fingerprint -sha256` prints it.
fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let hex: String = text.chars().filter(|ch| !matches!(ch, ':' | ' ')).collect();
    if let Some(bad) = hex.chars().find(|ch| !ch.is_ascii_hexdigit()) {
        return Err(format!(
            "{bad:?} is not a hex digit: give the certificate's SHA-256 fingerprint as 64 hex digits, colons optional (openssl x509 -noout -fingerprint -sha256 -in cert.pem)"
        ));
    }
    if hex.len() != 64 {
        return Err(format!(
            "a SHA-256 fingerprint has 64 hex digits (32 bytes), this one {}: give the certificate's SHA-256 fingerprint, not another hash (openssl x509 -noout -fingerprint -sha256 -in cert.pem)",
            hex.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte =
            u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| format!("not hex: {e}"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse_sha256;
    use crate::config::{Config, SourceSettings};

    fn ldap(extra: &str, url: &str, strategy: &str) -> Result<super::LdapSettings, String> {
        let text = format!(
            "platform:\n  emulator: {{ state: s.json }}\nsource:\n  ldap:\n    url: {url}\n{extra}    users: {{ base: 'dc=x' }}\n    customers: {{ strategy: {strategy}, base: 'dc=x', user_attribute: a, key_attribute: b }}\nmapping:\n  customer: {{ external_id: entryUUID, name: ou }}\n  user: {{ external_id: entryUUID, customer: customer, email: mail }}\n"
        );
        match Config::parse(&text, std::path::Path::new("conf/dirsync.yaml")) {
            Ok(Config {
                source: SourceSettings::Ldap(l),
                ..
            }) => Ok(*l),
            Ok(_) => Err("not an LDAP source".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn references_and_unassigned_users_default_by_kind_and_strategy() {
        let openldap = ldap("", "ldaps://h", "ancestor").unwrap();
        assert!(!openldap.domain_scope && !openldap.ignore_references);
        assert!(openldap.unassigned_absent, "ancestor: absent");
        let ad = ldap("    kind: active_directory\n", "ldaps://h", "group").unwrap();
        assert!(ad.domain_scope && ad.ignore_references && ad.unassigned_absent);
        let attribute = ldap("", "ldaps://h", "attribute").unwrap();
        assert!(!attribute.unassigned_absent, "attribute: refuse");
        let explicit = ldap(
            "    kind: active_directory\n    references: fail\n    unassigned_users: refuse\n",
            "ldaps://h",
            "group",
        )
        .unwrap();
        assert!(explicit.domain_scope && !explicit.ignore_references);
        assert!(!explicit.unassigned_absent);
        let bad = ldap("    unassigned_users: delete\n", "ldaps://h", "group").unwrap_err();
        assert!(bad.contains("source.ldap.unassigned_users"), "{bad}");
    }

    #[test]
    fn a_pin_or_a_range_size_in_the_wrong_place_is_named() {
        let pin = "ab".repeat(32);
        let ok = ldap(
            &format!("    tls: {{ pin_sha256: \"{pin}\" }}\n"),
            "ldap://h",
            "group",
        )
        .unwrap();
        assert_eq!(ok.pin_sha256, Some([0xab; 32]));
        let both = ldap(
            &format!("    ca_file: ca.pem\n    tls: {{ pin_sha256: \"{pin}\" }}\n"),
            "ldaps://h",
            "group",
        )
        .unwrap_err();
        assert!(
            both.starts_with("conf/dirsync.yaml:")
                && both.contains(
                    "source.ldap.tls.pin_sha256: give ca_file or tls.pin_sha256, not both"
                ),
            "{both}"
        );
        let plain = ldap(
            &format!("    allow_insecure: true\n    tls: {{ pin_sha256: \"{pin}\" }}\n"),
            "ldap://h",
            "group",
        )
        .unwrap_err();
        assert!(
            plain.contains("source.ldap.tls.pin_sha256: needs TLS"),
            "{plain}"
        );
        let short = ldap("    tls: { pin_sha256: \"AB:CD\" }\n", "ldaps://h", "group").unwrap_err();
        assert!(short.contains("64 hex digits"), "{short}");
        let range = ldap("    range_size: 500\n", "ldaps://h", "group").unwrap_err();
        assert!(
            range.contains("source.ldap.range_size: is for kind: active_directory only"),
            "{range}"
        );
        let ad = ldap(
            "    kind: active_directory\n    range_size: 500\n",
            "ldaps://h",
            "group",
        )
        .unwrap();
        assert_eq!(ad.range_size, Some(500));
    }

    #[test]
    fn a_pin_is_hex_with_or_without_colons_in_either_case() {
        let colons = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
        let plain = colons.replace(':', "").to_lowercase();
        let a = parse_sha256(colons).unwrap();
        assert_eq!(a, parse_sha256(&plain).unwrap());
        assert_eq!(a[0], 0xab);
        assert_eq!(a[31], 0x89);
        assert!(parse_sha256(&plain[..40])
            .unwrap_err()
            .contains("64 hex digits"));
        assert!(parse_sha256(&plain.replace('a', "g"))
            .unwrap_err()
            .contains("'g'"));
    }
}
