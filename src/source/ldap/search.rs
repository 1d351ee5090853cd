//! Searches read to their end: RFC 2696 pages until the server's cookie is
//! empty, success on every page or an error, continuation references by
//! `references`, and Active Directory's domain-scope control.

use ldap3::controls::{Control, ControlType, MakeCritical, PagedResults, RawControl};
use ldap3::{Ldap, Scope, SearchEntry};

use super::LdapError;
use crate::config::{LdapScope, LdapSettings};

/// LDAP_SERVER_DOMAIN_SCOPE_OID: Active Directory generates no continuation
/// references (to the Configuration, Schema and DNS partitions, or to child
/// domains), so a search at the domain root reads the domain and only it.
/// Sent non-critical: a server that does not know it ignores it instead of
/// failing every search (unavailableCriticalExtension), and the references
/// it then sends are handled by `references` like any other: nothing the
/// control leaves out can turn into deletes either way.
pub const DOMAIN_SCOPE_OID: &str = "1.2.840.113556.1.4.1339";

/// The standard name of an LDAP result code, for messages.
pub(super) fn rc_name(rc: u32) -> &'static str {
    match rc {
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        32 => "noSuchObject",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        _ => "error",
    }
}

fn scope(s: LdapScope) -> Scope {
    match s {
        LdapScope::Base => Scope::Base,
        LdapScope::One => Scope::OneLevel,
        LdapScope::Sub => Scope::Subtree,
    }
}

/// What the searches of one read met besides entries.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Continuation references left out (`references: ignore`).
    pub references_ignored: usize,
    /// Base searches that read a ranged attribute on.
    pub range_requests: usize,
}

/// The controls every search of this source carries besides paging.
pub(super) fn common_controls(settings: &LdapSettings) -> Vec<RawControl> {
    let mut controls = Vec::new();
    if settings.domain_scope {
        controls.push(RawControl {
            ctype: DOMAIN_SCOPE_OID.to_owned(),
            crit: false,
            val: None,
        });
    }
    controls
}

/// The error for a result code other than success.
pub(super) fn result_error(
    base: &str,
    settings: &LdapSettings,
    outcome: &ldap3::LdapResult,
) -> LdapError {
    if outcome.rc == 10 {
        return LdapError::Referral {
            base: base.to_owned(),
            refs: outcome.refs.join(", "),
        };
    }
    let detail = format!(
        "{} ({}){}",
        rc_name(outcome.rc),
        outcome.rc,
        if outcome.text.is_empty() {
            String::new()
        } else {
            format!(": {}", outcome.text)
        }
    );
    // slapd: "illegal pagedResults page size" (limits size.pr).
    if outcome.rc == 11 && outcome.text.to_lowercase().contains("page size") {
        return LdapError::PageSizeRefused {
            base: base.to_owned(),
            page_size: settings.page_size,
            detail,
        };
    }
    LdapError::Search {
        base: base.to_owned(),
        detail,
    }
}

/// A paged search read to its end. Success on every page, or an error.
pub(super) async fn paged_search(
    ldap: &mut Ldap,
    settings: &LdapSettings,
    base: &str,
    search_scope: LdapScope,
    filter: &str,
    attrs: &[String],
    tally: &mut Tally,
) -> Result<Vec<SearchEntry>, LdapError> {
    let mut entries = Vec::new();
    let mut cookie: Vec<u8> = Vec::new();
    let mut references: Vec<String> = Vec::new();
    loop {
        let mut controls = vec![RawControl::from(
            PagedResults {
                size: settings.page_size,
                cookie: cookie.clone(),
            }
            .critical(),
        )];
        controls.extend(common_controls(settings));
        let result = ldap
            .with_controls(controls)
            .with_timeout(settings.operation_timeout)
            .search(base, scope(search_scope), filter, attrs)
            .await
            .map_err(|e| LdapError::Search {
                base: base.to_owned(),
                detail: e.to_string(),
            })?;
        let (page, outcome) = (result.0, result.1);
        if outcome.rc != 0 {
            return Err(result_error(base, settings, &outcome));
        }
        // Continuation references (the result was a success): ldap3
        // gathers them in `refs`.
        references.extend(outcome.refs.iter().cloned());
        for entry in page {
            if entry.is_ref() {
                references.push("a search result reference".to_owned());
                continue;
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
            Some(p) if p.cookie.is_empty() => break,
            Some(p) => cookie = p.cookie,
        }
    }
    if !references.is_empty() {
        if !settings.ignore_references {
            return Err(LdapError::References {
                base: base.to_owned(),
                refs: references.join(", "),
            });
        }
        for r in &references {
            tracing::debug!(%base, reference = %r, "Continuation reference left out (references: ignore).");
        }
        tally.references_ignored += references.len();
    }
    Ok(entries)
}

/// A base search of one entry for `attrs`, without paging.
pub(super) async fn read_entry(
    ldap: &mut Ldap,
    settings: &LdapSettings,
    dn: &str,
    attrs: &[String],
) -> Result<Option<SearchEntry>, LdapError> {
    let result = ldap
        .with_controls(common_controls(settings))
        .with_timeout(settings.operation_timeout)
        .search(dn, Scope::Base, "(objectClass=*)", attrs)
        .await
        .map_err(|e| LdapError::Search {
            base: dn.to_owned(),
            detail: e.to_string(),
        })?;
    let (entries, outcome) = (result.0, result.1);
    if outcome.rc != 0 {
        return Err(result_error(dn, settings, &outcome));
    }
    Ok(entries
        .into_iter()
        .find(|e| !e.is_ref() && !e.is_intermediate())
        .map(SearchEntry::construct))
}
