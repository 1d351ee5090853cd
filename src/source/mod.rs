//! Sources: where the directory (the desired state) is read from.
//!
//! A source reads records (`csv` now; LDAP and HTTP later) and the shared
//! `mapping` step turns them into a [`Directory`]. A source that fails
//! returns an error and no directory, so a failed read can never turn into
//! deletes.

pub mod csv;
pub mod http;
pub mod ldap;
pub mod mapping;

use std::path::PathBuf;

use crate::config::{Config, SourceSettings};
use crate::directory::{Directory, Origin, RefusedRecord, SourceRecord};
use mapping::{build_directory, customer_keys, user_keys, KeyKind};

/// Why a source could not be read. Each names the file and, where there is
/// one, the line or record.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Encoding {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{}: the file has no header row", path.display())]
    MissingHeader { path: PathBuf },
    #[error("{}: modified {age_secs} s ago, more recently than source.csv.min_age_secs ({min_age_secs} s) allows: it may still be being written; nothing is planned from it this run (write it elsewhere and rename it into place)", path.display())]
    TooRecent {
        path: PathBuf,
        age_secs: u64,
        min_age_secs: u64,
    },
    /// `line` is the header's; `named_by` says who reads the column
    /// (`the mapping`, `source.csv.absent_when[0]`).
    #[error("{}:{line}: the header names column {column:?} twice (columns {first} and {second}); {named_by} reads it, so which one is meant is unclear: rename or remove one", path.display())]
    DuplicateColumn {
        path: PathBuf,
        line: u64,
        column: String,
        named_by: String,
        first: usize,
        second: usize,
    },
    #[error("{}:{line}: column {column:?} named in {named_by} is not in the header (columns: {})", path.display(), available.join(", "))]
    MissingColumn {
        path: PathBuf,
        line: u64,
        column: String,
        named_by: String,
        available: Vec<String>,
    },
    #[error("{}:{line}: the row has {found} fields but the header has {expected}", path.display())]
    Ragged {
        path: PathBuf,
        line: u64,
        expected: u64,
        found: u64,
    },
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Csv {
        path: PathBuf,
        line: Option<u64>,
        message: String,
    },
    #[error(
        "{what} externalId {external_id:?} appears twice with different data: {first} and {second}"
    )]
    Conflict {
        what: &'static str,
        external_id: String,
        first: Origin,
        second: Origin,
    },
    #[error("{refused} of {total} records were refused, more than the cap of {cap}; nothing is planned from this source. First refusals:\n{}", examples.iter().map(|r| format!("  {r}")).collect::<Vec<_>>().join("\n"))]
    TooManyRefused {
        refused: usize,
        total: usize,
        cap: usize,
        examples: Vec<RefusedRecord>,
    },
    #[error("the source task failed: {0}")]
    Task(String),
    #[error("LDAP: {0}")]
    Ldap(#[from] ldap::LdapError),
    #[error("HTTP source: {0}")]
    Http(#[from] http::HttpError),
}

/// What an LDAP or HTTP read hands the mapping step.
#[derive(Debug, Default)]
pub struct Records {
    /// Customer records, when customers are records of their own.
    pub customers: Option<Vec<SourceRecord>>,
    /// The user records: everyone the directory holds.
    pub users: Vec<SourceRecord>,
    /// User records the source saw as disabled and left out of `users`; only
    /// their externalIds are used (`Directory::disabled_users`).
    pub disabled_users: Vec<SourceRecord>,
}

/// Reads the configured source into a directory.
pub async fn read_directory(config: &Config) -> Result<Directory, SourceError> {
    let directory = read(config).await?;
    for w in &directory.deletes_withheld {
        tracing::warn!(origin = %w.origin, cause = %w.cause, "This read cannot say who is absent: deletes are withheld this run.");
    }
    Ok(directory)
}

async fn read(config: &Config) -> Result<Directory, SourceError> {
    match &config.source {
        SourceSettings::Csv(csv) => {
            let csv = csv.clone();
            let mapping = config.mapping.clone();
            let policy = config.policy.clone();
            tokio::task::spawn_blocking(move || {
                let mut withheld = Vec::new();
                let customers = match &csv.customers_file {
                    Some(path) => {
                        let keys = customer_keys(&mapping);
                        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                        let read = csv::read_records(path, csv.delimiter, &keys, csv.min_age, &[])?;
                        withheld.extend(read.withheld);
                        Some(read.records)
                    }
                    None => None,
                };
                let keys = user_keys(&mapping, customers.is_none());
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                let users = csv::read_records(
                    &csv.users_file,
                    csv.delimiter,
                    &keys,
                    csv.min_age,
                    &csv.absent_when,
                )?;
                withheld.extend(users.withheld);
                let mut directory = build_directory(
                    customers.as_deref(),
                    &users.records,
                    &users.disabled,
                    &mapping,
                    &policy,
                    KeyKind("column"),
                )?;
                // What is wrong with a whole file comes before what is wrong with a record.
                let by_record = std::mem::take(&mut directory.deletes_withheld);
                for w in withheld.iter().chain(&by_record) {
                    directory.withhold_deletes(&w.origin, w.cause.clone());
                }
                Ok(directory)
            })
            .await
            .map_err(|e| SourceError::Task(e.to_string()))?
        }
        SourceSettings::Http(settings) => {
            let read = http::read_records(settings, &config.mapping).await?;
            build_directory(
                read.customers.as_deref(),
                &read.users,
                &read.disabled_users,
                &config.mapping,
                &config.policy,
                KeyKind("path"),
            )
        }
        SourceSettings::Ldap(settings) => {
            let read = ldap::read_records(settings, &config.mapping).await?;
            build_directory(
                read.customers.as_deref(),
                &read.users,
                &read.disabled_users,
                &config.mapping,
                &config.policy,
                KeyKind("attribute"),
            )
        }
    }
}
