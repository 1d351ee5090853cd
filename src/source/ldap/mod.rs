//! LDAP and Active Directory (ldap3): a TLS-only bind (LDAPS, or StartTLS
//! on ldap://) with verification always on (`tls`), paged searches (RFC
//! 2696) read to the end (`search`), ranged attributes read to the end
//! (`range`), customers found by one of three strategies, and disabled
//! accounts left out (those the read sees are handed on as disabled
//! records, for the reason a delete gives). Any result other than success
//! ends the read as a failure, so a partial directory can never turn into
//! deletes.

mod dn;
mod range;
mod search;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, SearchEntry};
use secrecy::ExposeSecret;

use super::{Records, SourceError};
use crate::config::{CustomerStrategy, LdapKind, LdapSettings, Mapping};
use crate::directory::{Origin, SourceRecord};

pub use dn::normalize_dn;
pub use range::parse_range;
pub use search::DOMAIN_SCOPE_OID;
pub use tls::{colon_hex, sha256};

/// Why an LDAP read failed. Bind passwords never appear here.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    #[error("refusing to bind over an unencrypted connection to {url}: use ldaps://, or ldap:// with StartTLS (the default), or set allow_insecure: true")]
    Insecure { url: String },
    #[error("cannot read the LDAP CA file {path}: {detail}")]
    CaFile { path: String, detail: String },
    #[error("cannot connect to {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("cannot connect to {url}: its certificate was refused: {reason}. It presented the certificate with SHA-256 fingerprint {fingerprint}; {hint}")]
    Certificate {
        url: String,
        reason: String,
        fingerprint: String,
        hint: &'static str,
    },
    #[error("bind as {dn} failed: {detail}")]
    Bind { dn: String, detail: String },
    #[error("bind password: {0}")]
    Password(#[from] crate::platform::AuthError),
    #[error("search of {base} failed: {detail}")]
    Search { base: String, detail: String },
    #[error("search of {base} failed: {detail}: the server refuses pages of {page_size} entries; lower source.ldap.page_size to what it allows")]
    PageSizeRefused {
        base: String,
        page_size: i32,
        detail: String,
    },
    #[error("search of {base} returned a referral ({refs}); referrals are not followed, so the directory would be incomplete")]
    Referral { base: String, refs: String },
    #[error("search of {base} returned continuation references (referrals) to {refs}; they are not followed, so with source.ldap.references: fail (the default for kind: openldap) the directory would be incomplete. If what they point to is not part of the directory, set references: ignore")]
    References { base: String, refs: String },
    #[error("search of {base}: the server did not return the paging control; the read would be incomplete")]
    NoPagingControl { base: String },
    #[error("reading {attribute} of {dn} in ranges: {detail}; the read would be incomplete")]
    Range {
        dn: String,
        attribute: String,
        detail: String,
    },
    #[error("the whole LDAP read took longer than its deadline of {0:?}")]
    Deadline(Duration),
}

const HINT_ROOTS: &str = "if that is the server's own certificate (compare it out of band, e.g. `openssl x509 -noout -fingerprint -sha256 -in cert.pem` on the server), set source.ldap.tls.pin_sha256 to it to accept exactly that certificate, or give the CA that issued it in source.ldap.ca_file";
const HINT_PIN: &str = "if the server's certificate was replaced (compare it out of band, e.g. `openssl x509 -noout -fingerprint -sha256 -in cert.pem` on the server), set source.ldap.tls.pin_sha256 to the new fingerprint";

/// Connects (TLS first, then the bind) and returns the handle.
async fn connect(settings: &LdapSettings) -> Result<Ldap, LdapError> {
    let url = settings.url.to_string();
    let ldaps = settings.url.scheme() == "ldaps";
    let starttls = !ldaps && !settings.allow_insecure;
    if !ldaps && !starttls {
        tracing::warn!(%url, "LDAP without TLS: allow_insecure is set; the bind password crosses the network in clear.");
    }
    let (config, verifier) = tls::tls_config(settings)?;
    let conn_settings = LdapConnSettings::new()
        .set_conn_timeout(settings.connect_timeout)
        .set_starttls(starttls)
        .set_config(config);
    let connected = LdapConnAsync::from_url_with_settings(conn_settings, &settings.url).await;
    let (conn, mut ldap) = match connected {
        Ok(pair) => pair,
        Err(e) => {
            return Err(match verifier.presented() {
                Some(tls::Presented {
                    fingerprint,
                    refused: Some(reason),
                }) => LdapError::Certificate {
                    url,
                    reason,
                    fingerprint: fingerprint
                        .map(|f| colon_hex(&f))
                        .unwrap_or_else(|| "(not computable)".to_owned()),
                    hint: if verifier.pinned().is_some() {
                        HINT_PIN
                    } else {
                        HINT_ROOTS
                    },
                },
                _ => LdapError::Connect {
                    url,
                    detail: e.to_string(),
                },
            })
        }
    };
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
                detail: format!(
                    "{} ({}) {}",
                    search::rc_name(result.rc),
                    result.rc,
                    result.text
                ),
            });
        }
    }
    Ok(ldap)
}

/// Active Directory's `objectGUID` (16 bytes, the first three fields little
/// endian) as the canonical UUID string: lowercase, hyphenated. A value of
/// any other length is no GUID: the error says how long it was.
pub fn object_guid_to_string(bytes: &[u8]) -> Result<String, String> {
    if bytes.len() != 16 {
        return Err(format!(
            "objectGUID is {} bytes long, not the 16 of a GUID",
            bytes.len()
        ));
    }
    uuid::Uuid::from_slice_le(bytes)
        .map(|u| u.hyphenated().to_string())
        .map_err(|e| format!("objectGUID is not a GUID: {e}"))
}

/// Active Directory's `userAccountControl`: is the ACCOUNTDISABLE bit (0x2) set?
/// A value that is not a number is not read as disabled.
pub fn ad_account_disabled(user_account_control: &str) -> bool {
    user_account_control
        .trim()
        .parse::<i64>()
        .is_ok_and(|v| v & 0x2 != 0)
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

    /// The first `objectGUID` value, if any, as the canonical UUID string
    /// or why it is none.
    fn object_guid(&self) -> Option<Result<String, String>> {
        self.binary
            .get("objectguid")
            .and_then(|v| v.first())
            .map(|b| object_guid_to_string(b))
    }

    /// One value for a single field: the first, or the first ending in the
    /// preferred suffix for that attribute. An `objectGUID` that is no GUID
    /// is no value (`record` says why).
    fn one(&self, name: &str, prefer: &BTreeMap<String, String>) -> Option<String> {
        let key = name.to_lowercase();
        if key == "objectguid" {
            return self.object_guid().and_then(Result::ok);
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
    let mut problem = None;
    for key in keys {
        if let Some(v) = attrs.one(key, prefer) {
            values.insert(key.clone(), v);
        } else if key.eq_ignore_ascii_case("objectGUID") {
            problem = attrs.object_guid().and_then(Result::err);
        }
    }
    SourceRecord {
        origin: Origin::Entry { dn: dn.to_owned() },
        values,
        problem,
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

/// How a membership attribute is asked for: plainly, or with `range_size`
/// (Active Directory), its first range.
fn membership_request(settings: &LdapSettings, attribute: &str) -> String {
    match settings.range_size {
        Some(_) => range::range_request(attribute, 0, settings.range_size),
        None => attribute.to_owned(),
    }
}

/// Reads customers and users from the directory server as source records:
/// customer records, user records whose `mapping.user.customer` key holds
/// the customer's externalId (or a problem when it matches several, or none
/// with `unassigned_users: refuse`), and the disabled accounts the read saw
/// as disabled records.
pub async fn read_records(
    settings: &LdapSettings,
    mapping: &Mapping,
) -> Result<Records, SourceError> {
    let deadline = settings.read_deadline;
    match tokio::time::timeout(deadline, read_records_inner(settings, mapping)).await {
        Ok(result) => result.map_err(SourceError::from),
        Err(_) => Err(SourceError::from(LdapError::Deadline(deadline))),
    }
}

struct CustomerEntry {
    /// As the server wrote it, for messages.
    dn: String,
    /// Normalised, for comparing.
    key: String,
    attrs: Attrs,
    external_id: Option<String>,
}

async fn read_records_inner(
    settings: &LdapSettings,
    mapping: &Mapping,
) -> Result<Records, LdapError> {
    let mut ldap = connect(settings).await?;
    let mut tally = search::Tally::default();
    let prefer = &settings.prefer_suffix;
    let id_attr = match settings.kind {
        LdapKind::Openldap => "entryUUID",
        LdapKind::ActiveDirectory => "objectGUID",
    };

    // Customers.
    let customer_keys = super::mapping::customer_keys(mapping);
    let mut customer_extra = vec![id_attr.to_owned()];
    let (key_attribute, member_attribute) = match &settings.customers {
        CustomerStrategy::Attribute { key_attribute, .. } => (Some(key_attribute.as_str()), None),
        CustomerStrategy::Group {
            member_attribute,
            use_member_of: false,
        } => (None, Some(member_attribute.as_str())),
        _ => (None, None),
    };
    customer_extra.extend(key_attribute.map(str::to_owned));
    customer_extra.extend(member_attribute.map(|m| membership_request(settings, m)));
    let customer_extra: Vec<&str> = customer_extra.iter().map(String::as_str).collect();
    let mut customer_entries = search::paged_search(
        &mut ldap,
        settings,
        &settings.customers_base,
        settings.customers_scope,
        &settings.customers_filter,
        &wanted(&customer_keys, &customer_extra),
        &mut tally,
    )
    .await?;
    range::complete_ranges(&mut ldap, settings, &mut customer_entries, &mut tally).await?;

    let customers: Vec<CustomerEntry> = customer_entries
        .iter()
        .map(|e| {
            let attrs = Attrs::of(e);
            CustomerEntry {
                dn: e.dn.clone(),
                key: normalize_dn(&e.dn),
                external_id: attrs.one(&mapping.customer.external_id, prefer),
                attrs,
            }
        })
        .collect();
    let customer_records: Vec<SourceRecord> = customers
        .iter()
        .map(|c| record(&c.dn, &c.attrs, &shared(&customer_keys), prefer))
        .collect();

    // Users.
    let mut user_keys = super::mapping::user_keys(mapping, false);
    user_keys.retain(|k| *k != mapping.user.customer);
    let mut user_extra = vec![id_attr.to_owned()];
    if settings.disabled.ad_account_disable {
        user_extra.push("userAccountControl".to_owned());
    }
    if let Some(a) = &settings.disabled.attribute_present {
        user_extra.push(a.clone());
    }
    match &settings.customers {
        CustomerStrategy::Attribute { user_attribute, .. } => {
            user_extra.push(user_attribute.clone())
        }
        CustomerStrategy::Group {
            use_member_of: true,
            ..
        } => user_extra.push(membership_request(settings, "memberOf")),
        _ => {}
    }
    let user_extra: Vec<&str> = user_extra.iter().map(String::as_str).collect();
    // Accounts that `disabled.filter` excludes are never returned: the read
    // cannot tell them from accounts that are gone, so their deletes say
    // "absent from the directory".
    let filter = match &settings.disabled.filter {
        Some(disabled) => format!("(&{}(!{}))", settings.users_filter, disabled),
        None => settings.users_filter.clone(),
    };
    let mut user_entries = search::paged_search(
        &mut ldap,
        settings,
        &settings.users_base,
        settings.users_scope,
        &filter,
        &wanted(&user_keys, &user_extra),
        &mut tally,
    )
    .await?;
    range::complete_ranges(&mut ldap, settings, &mut user_entries, &mut tally).await?;
    let _ = ldap.unbind().await;

    let users = place_users(
        settings,
        mapping,
        &customers,
        &user_entries,
        member_attribute,
        &user_keys,
    );
    tracing::info!(
        customers = customer_records.len(),
        users = users.records.len(),
        skipped_disabled = users.disabled.len(),
        unassigned_absent = users.unassigned,
        references_ignored = tally.references_ignored,
        range_requests = tally.range_requests,
        "LDAP read complete."
    );
    Ok(Records {
        customers: Some(customer_records),
        users: users.records,
        disabled_users: users.disabled,
    })
}

/// The user records of a read, and what was left out.
struct Placed {
    records: Vec<SourceRecord>,
    /// Disabled accounts (not in the directory), as records: the mapping
    /// reads their externalId (formatted as for enabled accounts).
    disabled: Vec<SourceRecord>,
    /// Users in no customer, absent by `unassigned_users: absent`.
    unassigned: usize,
}

/// Each enabled user with its customer's externalId, or the problem that
/// refuses it.
fn place_users(
    settings: &LdapSettings,
    mapping: &Mapping,
    customers: &[CustomerEntry],
    user_entries: &[SearchEntry],
    member_attribute: Option<&str>,
    user_keys: &[String],
) -> Placed {
    let prefer = &settings.prefer_suffix;
    // Group strategy, member side: member DN -> group indexes.
    let mut groups_of_member: HashMap<String, Vec<usize>> = HashMap::new();
    if let Some(member_attribute) = member_attribute {
        for (i, c) in customers.iter().enumerate() {
            for m in c.attrs.all(member_attribute) {
                let groups = groups_of_member.entry(normalize_dn(m)).or_default();
                // A member listed twice (in two spellings) is one membership.
                if !groups.contains(&i) {
                    groups.push(i);
                }
            }
        }
    }
    let customer_by_dn: HashMap<&str, usize> = customers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.key.as_str(), i))
        .collect();

    let shared_user_keys = shared(user_keys);
    let customer_key: Arc<str> = Arc::from(mapping.user.customer.as_str());
    let mut placed = Placed {
        records: Vec::with_capacity(user_entries.len()),
        disabled: Vec::new(),
        unassigned: 0,
    };
    for entry in user_entries {
        let attrs = Attrs::of(entry);
        let disabled_by_uac = settings.disabled.ad_account_disable
            && attrs
                .all("userAccountControl")
                .iter()
                .any(|v| ad_account_disabled(v));
        let disabled_by_attribute = settings
            .disabled
            .attribute_present
            .as_ref()
            .is_some_and(|a| {
                !attrs.all(a).is_empty() || attrs.binary.contains_key(&a.to_lowercase())
            });
        if disabled_by_uac || disabled_by_attribute {
            placed
                .disabled
                .push(record(&entry.dn, &attrs, &shared_user_keys, prefer));
            continue;
        }
        let mut matches: Vec<usize> = match &settings.customers {
            CustomerStrategy::Ancestor => {
                let dn = normalize_dn(&entry.dn);
                customers
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| {
                        dn.len() > c.key.len()
                            && dn.ends_with(&c.key)
                            && dn[..dn.len() - c.key.len()].ends_with(',')
                    })
                    .map(|(i, _)| i)
                    .collect()
            }
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
            } => groups_of_member
                .get(&normalize_dn(&entry.dn))
                .cloned()
                .unwrap_or_default(),
            CustomerStrategy::Group {
                use_member_of: true,
                ..
            } => attrs
                .all("memberOf")
                .iter()
                .filter_map(|g| customer_by_dn.get(normalize_dn(g).as_str()).copied())
                .collect(),
        };
        matches.sort_unstable();
        matches.dedup();
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
            [] if settings.unassigned_absent => {
                tracing::debug!(dn = %entry.dn, "In no customer: absent from the directory (unassigned_users: absent).");
                placed.unassigned += 1;
                continue;
            }
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
        placed.records.push(rec);
    }
    placed
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
            Ok("0f3b6c1a-2b5d-4e8f-9a01-23456789abcd")
        );
        assert_eq!(
            object_guid_to_string(&bytes[..15]),
            Err("objectGUID is 15 bytes long, not the 16 of a GUID".to_owned())
        );
        assert!(object_guid_to_string(&[]).is_err());
        // Every byte in its place, uppercase hex never.
        let all: Vec<u8> = (0xf0..=0xff).collect();
        assert_eq!(
            object_guid_to_string(&all).as_deref(),
            Ok("f3f2f1f0-f5f4-f7f6-f8f9-fafbfcfdfeff")
        );
    }

    #[test]
    fn the_account_disable_bit_is_0x2() {
        assert!(ad_account_disabled("514")); // NORMAL_ACCOUNT | ACCOUNTDISABLE
        assert!(ad_account_disabled("66050")); // ... | DONT_EXPIRE_PASSWORD
        assert!(!ad_account_disabled("512"));
        assert!(!ad_account_disabled("66048"));
        assert!(!ad_account_disabled("not a number"));
    }
}
