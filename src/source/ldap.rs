//! LDAP and Active Directory (ldap3): a TLS-only bind (LDAPS, or StartTLS
//! on ldap://) with verification always on, paged searches (RFC 2696) read
//! to the end, customers found by one of three strategies, and disabled
//! accounts left out. Any result other than success ends the read as a
//! failure, so a partial directory can never turn into deletes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ldap3::controls::{Control, ControlType, MakeCritical, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use secrecy::ExposeSecret;

use super::SourceError;
use crate::config::{CustomerStrategy, LdapKind, LdapScope, LdapSettings, Mapping};
use crate::directory::{Origin, SourceRecord};

/// Why an LDAP read failed. Bind passwords never appear here.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    #[error("refusing to bind over an unencrypted connection to {url}: use ldaps://, or ldap:// with StartTLS (the default), or set allow_insecure: true")]
    Insecure { url: String },
    #[error("cannot read the LDAP CA file {path}: {detail}")]
    CaFile { path: String, detail: String },
    #[error("cannot connect to {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("bind as {dn} failed: {detail}")]
    Bind { dn: String, detail: String },
    #[error("bind password: {0}")]
    Password(#[from] crate::platform::AuthError),
    #[error("search of {base} failed: {detail}")]
    Search { base: String, detail: String },
    #[error("search of {base} returned a referral ({refs}); referrals are not followed, so the directory would be incomplete")]
    Referral { base: String, refs: String },
    #[error("search of {base}: the server did not return the paging control; the read would be incomplete")]
    NoPagingControl { base: String },
    #[error("the whole LDAP read took longer than its deadline of {0:?}")]
    Deadline(Duration),
}

/// The standard name of an LDAP result code, for messages.
fn rc_name(rc: u32) -> &'static str {
    match rc {
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        10 => "referral",
        11 => "adminLimitExceeded",
        32 => "noSuchObject",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        _ => "error",
    }
}

/// TLS settings for rustls: the system roots plus an optional CA file;
/// certificate and host name verification always on.
fn tls_config(settings: &LdapSettings) -> Result<Arc<rustls::ClientConfig>, LdapError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &settings.ca_file {
        let ca_err = |detail: String| LdapError::CaFile {
            path: path.display().to_string(),
            detail,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_err(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| ca_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_err("no PEM certificate in it".to_owned()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LdapError::Connect {
            url: settings.url.to_string(),
            detail: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects (TLS first, then the bind) and returns the handle.
async fn connect(settings: &LdapSettings) -> Result<Ldap, LdapError> {
    let url = settings.url.to_string();
    let ldaps = settings.url.scheme() == "ldaps";
    let starttls = !ldaps && !settings.allow_insecure;
    if !ldaps && !starttls {
        tracing::warn!(%url, "LDAP without TLS: allow_insecure is set; the bind password crosses the network in clear.");
    }
    let conn_settings = LdapConnSettings::new()
        .set_conn_timeout(settings.connect_timeout)
        .set_starttls(starttls)
        .set_config(tls_config(settings)?);
    let (conn, mut ldap) = LdapConnAsync::from_url_with_settings(conn_settings, &settings.url)
        .await
        .map_err(|e| LdapError::Connect {
            url: url.clone(),
            detail: e.to_string(),
        })?;
    ldap3::drive!(conn);
    if let Some((dn, password)) = &settings.bind {
        let password = password.read()?;
        let result = ldap
            .with_timeout(settings.operation_timeout)
            .simple_bind(dn, password.expose_secret())
            .await
            .map_err(|e| LdapError::Bind {
                dn: dn.clone(),
                detail: e.to_string(),
            })?;
        if result.rc != 0 {
            return Err(LdapError::Bind {
                dn: dn.clone(),
                detail: format!("{} ({}) {}", rc_name(result.rc), result.rc, result.text),
            });
        }
    }
    Ok(ldap)
}

fn scope(s: LdapScope) -> Scope {
    match s {
        LdapScope::Base => Scope::Base,
        LdapScope::One => Scope::OneLevel,
        LdapScope::Sub => Scope::Subtree,
    }
}

/// A paged search read to its end. Success on every page, or an error.
async fn paged_search(
    ldap: &mut Ldap,
    settings: &LdapSettings,
    base: &str,
    search_scope: LdapScope,
    filter: &str,
    attrs: &[String],
) -> Result<Vec<SearchEntry>, LdapError> {
    let mut entries = Vec::new();
    let mut cookie: Vec<u8> = Vec::new();
    let search_err = |detail: String| LdapError::Search {
        base: base.to_owned(),
        detail,
    };
    loop {
        let control = PagedResults {
            size: settings.page_size,
            cookie: cookie.clone(),
        }
        .critical();
        let result = ldap
            .with_controls(control)
            .with_timeout(settings.operation_timeout)
            .search(base, scope(search_scope), filter, attrs)
            .await
            .map_err(|e| search_err(e.to_string()))?;
        let (page, outcome) = (result.0, result.1);
        if outcome.rc == 10 || !outcome.refs.is_empty() {
            return Err(LdapError::Referral {
                base: base.to_owned(),
                refs: outcome.refs.join(", "),
            });
        }
        if outcome.rc != 0 {
            return Err(search_err(format!(
                "{} ({}){}",
                rc_name(outcome.rc),
                outcome.rc,
                if outcome.text.is_empty() {
                    String::new()
                } else {
                    format!(": {}", outcome.text)
                }
            )));
        }
        for entry in page {
            if entry.is_ref() {
                return Err(LdapError::Referral {
                    base: base.to_owned(),
                    refs: "a search result reference".to_owned(),
                });
            }
            if entry.is_intermediate() {
                continue;
            }
            entries.push(SearchEntry::construct(entry));
        }
        let paging = outcome
            .ctrls
            .iter()
            .find_map(|Control(kind, raw)| match kind {
                Some(ControlType::PagedResults) => Some(raw.parse::<PagedResults>()),
                _ => None,
            });
        match paging {
            None => {
                return Err(LdapError::NoPagingControl {
                    base: base.to_owned(),
                })
            }
            Some(p) if p.cookie.is_empty() => return Ok(entries),
            Some(p) => cookie = p.cookie,
        }
    }
}

/// Active Directory's `objectGUID` (16 bytes, the first three fields little
/// endian) as the canonical UUID string.
pub fn object_guid_to_string(bytes: &[u8]) -> Option<String> {
    let b: [u8; 16] = bytes.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// Active Directory's `userAccountControl`: is the ACCOUNTDISABLE bit (0x2) set?
/// A value that is not a number is not read as disabled.
pub fn ad_account_disabled(user_account_control: &str) -> bool {
    user_account_control
        .trim()
        .parse::<i64>()
        .is_ok_and(|v| v & 0x2 != 0)
}

/// A DN in a form that compares equal however it was written: RDNs trimmed
/// of the spaces around `,` `=` and `+`, attribute types and values
/// lowercased (the attributes used in DNs here match case-insensitively).
pub fn normalize_dn(dn: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for ch in dn.chars() {
        if escaped {
            current.push(ch);
            escaped = false;
        } else if ch == '\\' {
            current.push(ch);
            escaped = true;
        } else if ch == ',' || ch == ';' {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(ch);
        }
    }
    parts.push(current);
    parts
        .iter()
        .map(|rdn| {
            rdn.split('+')
                .map(|ava| match ava.split_once('=') {
                    Some((t, v)) => {
                        format!("{}={}", t.trim().to_lowercase(), v.trim().to_lowercase())
                    }
                    None => ava.trim().to_lowercase(),
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Attributes of an entry by lowercased name: text values, and binary ones
/// (non-UTF-8 values land there; they are never unwrapped as text).
struct Attrs {
    text: HashMap<String, Vec<String>>,
    binary: HashMap<String, Vec<Vec<u8>>>,
}

impl Attrs {
    fn of(entry: &SearchEntry) -> Attrs {
        Attrs {
            text: entry
                .attrs
                .iter()
                .map(|(k, v)| (k.to_lowercase(), v.clone()))
                .collect(),
            binary: entry
                .bin_attrs
                .iter()
                .map(|(k, v)| (k.to_lowercase(), v.clone()))
                .collect(),
        }
    }

    fn all(&self, name: &str) -> &[String] {
        self.text
            .get(&name.to_lowercase())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// One value for a single field: the first, or the first ending in the
    /// preferred suffix for that attribute.
    fn one(&self, name: &str, prefer: &BTreeMap<String, String>) -> Option<String> {
        let key = name.to_lowercase();
        if key == "objectguid" {
            return self
                .binary
                .get(&key)
                .and_then(|v| v.first())
                .and_then(|b| object_guid_to_string(b));
        }
        let values = self.text.get(&key)?;
        let chosen = prefer
            .get(&key)
            .and_then(|suffix| {
                values
                    .iter()
                    .find(|v| v.to_lowercase().ends_with(&suffix.to_lowercase()))
            })
            .or_else(|| values.first())?;
        let trimmed = chosen.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    }
}

fn record(
    dn: &str,
    attrs: &Attrs,
    keys: &[Arc<str>],
    prefer: &BTreeMap<String, String>,
) -> SourceRecord {
    let mut values = BTreeMap::new();
    for key in keys {
        if let Some(v) = attrs.one(key, prefer) {
            values.insert(key.clone(), v);
        }
    }
    SourceRecord {
        origin: Origin::Entry { dn: dn.to_owned() },
        values,
        problem: None,
    }
}

/// Keys shared by every record of a read.
fn shared(keys: &[String]) -> Vec<Arc<str>> {
    keys.iter().map(|k| Arc::from(k.as_str())).collect()
}

/// The attributes the mapping reads (and the id attribute), for the search.
fn wanted(keys: &[String], extra: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = keys.to_vec();
    out.extend(extra.iter().map(|s| (*s).to_owned()));
    out.sort();
    out.dedup();
    out
}

/// Reads customers and users from the directory server as source records:
/// customer records, and user records whose `mapping.user.customer` key holds
/// the customer's externalId (or a problem when it matches no customer, or
/// several).
pub async fn read_records(
    settings: &LdapSettings,
    mapping: &Mapping,
) -> Result<(Vec<SourceRecord>, Vec<SourceRecord>), SourceError> {
    let deadline = settings.read_deadline;
    match tokio::time::timeout(deadline, read_records_inner(settings, mapping)).await {
        Ok(result) => result.map_err(SourceError::from),
        Err(_) => Err(SourceError::from(LdapError::Deadline(deadline))),
    }
}

async fn read_records_inner(
    settings: &LdapSettings,
    mapping: &Mapping,
) -> Result<(Vec<SourceRecord>, Vec<SourceRecord>), LdapError> {
    let mut ldap = connect(settings).await?;
    let prefer = &settings.prefer_suffix;
    let id_attr = match settings.kind {
        LdapKind::Openldap => "entryUUID",
        LdapKind::ActiveDirectory => "objectGUID",
    };

    // Customers.
    let customer_keys = super::mapping::customer_keys(mapping);
    let mut customer_extra = vec![id_attr];
    let (key_attribute, member_attribute) = match &settings.customers {
        CustomerStrategy::Attribute { key_attribute, .. } => (Some(key_attribute.as_str()), None),
        CustomerStrategy::Group {
            member_attribute,
            use_member_of: false,
        } => (None, Some(member_attribute.as_str())),
        _ => (None, None),
    };
    customer_extra.extend(key_attribute);
    customer_extra.extend(member_attribute);
    let customer_entries = paged_search(
        &mut ldap,
        settings,
        &settings.customers_base,
        settings.customers_scope,
        &settings.customers_filter,
        &wanted(&customer_keys, &customer_extra),
    )
    .await?;

    struct CustomerEntry {
        dn: String,
        attrs: Attrs,
        external_id: Option<String>,
    }
    let customers: Vec<CustomerEntry> = customer_entries
        .iter()
        .map(|e| {
            let attrs = Attrs::of(e);
            CustomerEntry {
                dn: normalize_dn(&e.dn),
                external_id: attrs.one(&mapping.customer.external_id, prefer),
                attrs,
            }
        })
        .collect();
    let customer_records: Vec<SourceRecord> = customer_entries
        .iter()
        .zip(&customers)
        .map(|(e, c)| record(&e.dn, &c.attrs, &shared(&customer_keys), prefer))
        .collect();

    // Users.
    let mut user_keys = super::mapping::user_keys(mapping, false);
    user_keys.retain(|k| *k != mapping.user.customer);
    let mut user_extra = vec![id_attr];
    if settings.disabled.ad_account_disable {
        user_extra.push("userAccountControl");
    }
    if let Some(a) = &settings.disabled.attribute_present {
        user_extra.push(a);
    }
    match &settings.customers {
        CustomerStrategy::Attribute { user_attribute, .. } => user_extra.push(user_attribute),
        CustomerStrategy::Group {
            use_member_of: true,
            ..
        } => user_extra.push("memberOf"),
        _ => {}
    }
    let filter = match &settings.disabled.filter {
        Some(disabled) => format!("(&{}(!{}))", settings.users_filter, disabled),
        None => settings.users_filter.clone(),
    };
    let user_entries = paged_search(
        &mut ldap,
        settings,
        &settings.users_base,
        settings.users_scope,
        &filter,
        &wanted(&user_keys, &user_extra),
    )
    .await?;
    let _ = ldap.unbind().await;

    // Group strategy, member side: member DN -> group indexes.
    let mut groups_of_member: HashMap<String, Vec<usize>> = HashMap::new();
    if let Some(member_attribute) = member_attribute {
        for (i, c) in customers.iter().enumerate() {
            for m in c.attrs.all(member_attribute) {
                groups_of_member.entry(normalize_dn(m)).or_default().push(i);
            }
        }
    }
    let customer_by_dn: HashMap<&str, usize> = customers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.dn.as_str(), i))
        .collect();

    let shared_user_keys = shared(&user_keys);
    let customer_key: Arc<str> = Arc::from(mapping.user.customer.as_str());
    let mut user_records = Vec::with_capacity(user_entries.len());
    for entry in &user_entries {
        let attrs = Attrs::of(entry);
        if settings.disabled.ad_account_disable
            && attrs
                .all("userAccountControl")
                .iter()
                .any(|v| ad_account_disabled(v))
        {
            continue;
        }
        if let Some(a) = &settings.disabled.attribute_present {
            if !attrs.all(a).is_empty() || attrs.binary.contains_key(&a.to_lowercase()) {
                continue;
            }
        }
        let dn = normalize_dn(&entry.dn);
        let matches: Vec<usize> = match &settings.customers {
            CustomerStrategy::Ancestor => customers
                .iter()
                .enumerate()
                .filter(|(_, c)| dn.ends_with(&format!(",{}", c.dn)))
                .map(|(i, _)| i)
                .collect(),
            CustomerStrategy::Attribute {
                user_attribute,
                key_attribute,
            } => {
                let wanted: Vec<String> = attrs
                    .all(user_attribute)
                    .iter()
                    .map(|v| v.trim().to_lowercase())
                    .collect();
                customers
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| {
                        c.attrs
                            .all(key_attribute)
                            .iter()
                            .any(|k| wanted.contains(&k.trim().to_lowercase()))
                    })
                    .map(|(i, _)| i)
                    .collect()
            }
            CustomerStrategy::Group {
                use_member_of: false,
                ..
            } => groups_of_member.get(&dn).cloned().unwrap_or_default(),
            CustomerStrategy::Group {
                use_member_of: true,
                ..
            } => attrs
                .all("memberOf")
                .iter()
                .filter_map(|g| customer_by_dn.get(normalize_dn(g).as_str()).copied())
                .collect(),
        };
        let mut rec = record(&entry.dn, &attrs, &shared_user_keys, prefer);
        match matches.as_slice() {
            [one] => match &customers[*one].external_id {
                Some(x) => {
                    rec.values.insert(customer_key.clone(), x.clone());
                }
                None => {
                    rec.problem = Some(format!(
                        "its customer entry {} has no {}",
                        customers[*one].dn, mapping.customer.external_id
                    ))
                }
            },
            [] => rec.problem = Some("matches no customer entry".to_owned()),
            several => {
                let dns: Vec<&str> = several.iter().map(|i| customers[*i].dn.as_str()).collect();
                rec.problem = Some(format!(
                    "matches {} customer entries: {}",
                    several.len(),
                    dns.join("; ")
                ))
            }
        }
        user_records.push(rec);
    }
    tracing::info!(
        customers = customer_records.len(),
        users = user_records.len(),
        skipped_disabled = user_entries.len() - user_records.len(),
        "LDAP read complete."
    );
    Ok((customer_records, user_records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_guid_renders_as_the_canonical_uuid() {
        // The GUID {0f3b6c1a-2b5d-4e8f-9a01-23456789abcd} as AD stores it.
        let bytes = [
            0x1a, 0x6c, 0x3b, 0x0f, 0x5d, 0x2b, 0x8f, 0x4e, 0x9a, 0x01, 0x23, 0x45, 0x67, 0x89,
            0xab, 0xcd,
        ];
        assert_eq!(
            object_guid_to_string(&bytes).as_deref(),
            Some("0f3b6c1a-2b5d-4e8f-9a01-23456789abcd")
        );
        assert_eq!(object_guid_to_string(&bytes[..15]), None);
    }

    #[test]
    fn the_account_disable_bit_is_0x2() {
        assert!(ad_account_disabled("514")); // NORMAL_ACCOUNT | ACCOUNTDISABLE
        assert!(ad_account_disabled("66050")); // ... | DONT_EXPIRE_PASSWORD
        assert!(!ad_account_disabled("512"));
        assert!(!ad_account_disabled("66048"));
        assert!(!ad_account_disabled("not a number"));
    }

    #[test]
    fn dns_compare_however_they_are_written() {
        assert_eq!(
            normalize_dn("uid=Ann, OU=Acme ,dc=Example, dc=com"),
            normalize_dn("uid=ann,ou=acme,dc=example,dc=com")
        );
        assert_eq!(
            normalize_dn("cn=Smith\\, John,dc=x"),
            "cn=smith\\, john,dc=x"
        );
    }
}
