//! `source:`: one settings file per kind of directory. A new source is one
//! settings file here, one reader in `crate::source`, and one line in each
//! list below ([`RawSource`], [`SourceSettings`], [`validate_source`]).

mod csv;
mod http;
mod ldap;

use serde::Deserialize;

pub use csv::{AbsentRule, AbsentTest, CsvSettings};
pub use http::{CustomersFrom, Endpoint, HttpAuth, HttpPreset, HttpSettings, Pagination};
pub use ldap::{CustomerStrategy, DisabledRule, LdapKind, LdapScope, LdapSettings};

use super::{Checker, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(super) enum RawSource {
    Csv(csv::RawCsv),
    Ldap(Box<ldap::RawLdap>),
    Http(Box<http::RawHttp>),
}

/// The validated settings of the one source a config names.
#[derive(Clone, Debug)]
pub enum SourceSettings {
    Csv(CsvSettings),
    Ldap(Box<LdapSettings>),
    Http(Box<HttpSettings>),
}

pub(super) fn validate_source(
    c: &Checker<'_>,
    raw: RawSource,
) -> Result<SourceSettings, ConfigError> {
    Ok(match raw {
        RawSource::Csv(csv) => SourceSettings::Csv(csv::validate_csv(c, csv)?),
        RawSource::Ldap(l) => SourceSettings::Ldap(Box::new(ldap::validate_ldap(c, *l)?)),
        RawSource::Http(h) => SourceSettings::Http(Box::new(http::validate_http(c, *h)?)),
    })
}
