//! Sources: where the directory (the desired state) is read from.
//!
//! A source reads records (`csv`, `ldap`, `http`) and the shared `mapping`
//! step turns them into a [`Directory`]: LDAP and HTTP hand over their
//! records at once, the CSV source streams each row into the mapping's
//! builder as it reads it. A source that fails returns an error and no
//! directory, so a failed read can never turn into deletes.

pub mod csv;
pub mod http;
pub mod ldap;
pub mod mapping;
pub mod whole_file;

use std::path::PathBuf;

use crate::config::{Config, CsvSettings, Mapping, Policy, SourceSettings};
use crate::directory::{Directory, Origin, RefusedRecord, SourceRecord};
use mapping::{build_directory, Built, DirectoryBuilder, EmailCheck, KeyKind};

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
    #[error("the source holds more than {max} records, more than dirsync reads at once; nothing is planned from it")]
    TooManyRecords { max: usize },
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
            tokio::task::spawn_blocking(move || read_csv(&csv, &mapping, &policy))
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

/// The rows of a customers file, into the builder.
struct CustomerRows<'b, 'a>(&'b mut DirectoryBuilder<'a>);

impl csv::RowSink for CustomerRows<'_, '_> {
    fn row(&mut self, _: csv::RowKind, row: &csv::Row<'_>) {
        self.0.add_customer_record(row);
    }
}

/// The rows of a users file, into the builder: records, and rows marked
/// absent as disabled users.
struct UserRows<'b, 'a>(&'b mut DirectoryBuilder<'a>);

impl csv::RowSink for UserRows<'_, '_> {
    fn expect(&mut self, rows: usize) {
        self.0.expect_users(rows);
    }

    fn ahead(&mut self, kind: csv::RowKind, row: &csv::Row<'_>) {
        if kind == csv::RowKind::Record {
            self.0.look_ahead_user(row);
        }
    }

    fn row(&mut self, kind: csv::RowKind, row: &csv::Row<'_>) {
        match kind {
            csv::RowKind::Record => self.0.add_user(row),
            csv::RowKind::Disabled => self.0.add_disabled_user(row),
        }
    }
}

/// The CSV source: the customers file (when there is one), then the users
/// file, each streamed row by row into one [`DirectoryBuilder`]. A file
/// that cannot be read refuses the source at once; what the mapping
/// refuses the whole source for comes after both files were read, as it
/// would from records read first.
fn read_csv(
    csv: &CsvSettings,
    mapping: &Mapping,
    policy: &Policy,
) -> Result<Directory, SourceError> {
    mapping::build_in_one_or_two_passes(|check| read_csv_checking(csv, mapping, policy, check))
}

/// [`read_csv`], one pass, emails checked `check`'s way.
fn read_csv_checking(
    csv: &CsvSettings,
    mapping: &Mapping,
    policy: &Policy,
    check: EmailCheck,
) -> Result<Built, SourceError> {
    let mut builder = DirectoryBuilder::new(
        mapping,
        policy,
        KeyKind("column"),
        csv.customers_file.is_none(),
    )
    .checking_emails(check);
    let mut withheld = Vec::new();
    if let Some(path) = &csv.customers_file {
        let keys = builder.customer_keys().to_vec();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        withheld.extend(csv::read_rows(
            path,
            csv.delimiter,
            &keys,
            csv.min_age,
            &[],
            &mut CustomerRows(&mut builder),
        )?);
    }
    let keys = builder.user_keys().to_vec();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    withheld.extend(csv::read_rows(
        &csv.users_file,
        csv.delimiter,
        &keys,
        csv.min_age,
        &csv.absent_when,
        &mut UserRows(&mut builder),
    )?);
    let Built::Directory(mut directory) = builder.finish()? else {
        return Ok(Built::Again);
    };
    // What is wrong with a whole file comes before what is wrong with a record.
    let by_record = std::mem::take(&mut directory.deletes_withheld);
    for w in withheld.iter().chain(&by_record) {
        directory.withhold_deletes(&w.origin, w.cause.clone());
    }
    Ok(Built::Directory(directory))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;

    /// The columns of a generated users file.
    const HEADER: [&str; 8] = [
        "id",
        "customer_id",
        "customer_name",
        "tier",
        "email",
        "role",
        "name",
        "status",
    ];

    /// A users-file row from small pools, so that externalIds, emails and
    /// customers repeat, with the same data or other data, and values break
    /// rules now and then.
    fn row() -> impl Strategy<Value = Vec<&'static str>> {
        let pick = |values: &[&'static str]| prop::sample::select(values.to_vec());
        let data = (
            pick(&["u1", "u2", "u3", "hr-u4", "hr-u5", "", "u\u{0}6"]),
            pick(&["c1", "c2", "hr-c3", ""]),
            pick(&["Acme", "Beta", "", "Bad\tName"]),
            pick(&["gold", "Gold", "gold;EU", "eu; gold", " "]),
            pick(&["a@x.io", "A@X.io", "b@x.io", "nope", "", "Ä@x.io", "ä@x.io"]),
            pick(&["staff", "admin", "Admn", ""]),
            pick(&["Ann", "Bob", ""]),
            pick(&["Active", "Inactive", ""]),
        )
            .prop_map(|(x, c, cn, t, e, r, n, s)| vec![x, c, cn, t, e, r, n, s]);
        prop_oneof![8 => data, 1 => Just(vec![""; 8])]
    }

    /// A customers-file row: externalId, name, tier.
    fn customer_row() -> impl Strategy<Value = Vec<&'static str>> {
        (
            prop::sample::select(vec!["c1", "c2", "hr-c3", ""]),
            prop::sample::select(vec!["Acme", "Beta", ""]),
            prop::sample::select(vec!["gold", "GOLD;eu", ""]),
        )
            .prop_map(|(x, n, t)| vec![x, n, t])
    }

    /// Writes a CSV file; without `terminated`, the last line break is left off.
    fn write_csv(path: &Path, header: &[&str], rows: &[Vec<&str>], terminated: bool) {
        let mut out = ::csv::Writer::from_writer(Vec::new());
        out.write_record(header).unwrap();
        for row in rows {
            out.write_record(row).unwrap();
        }
        let mut bytes = out.into_inner().unwrap();
        if !terminated && bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        std::fs::write(path, bytes).unwrap();
    }

    fn config(dir: &Path, customers_file: bool, prefix: bool, cap: usize) -> Config {
        let customers = if customers_file {
            format!(
                "    customers_file: {}\n",
                dir.join("customers.csv").display()
            )
        } else {
            String::new()
        };
        let prefix = if prefix {
            "  external_id_prefix: \"hr-\"\n"
        } else {
            ""
        };
        let text = format!(
            "platform:\n  emulator:\n    state: state.json\nsource:\n  csv:\n    users_file: {}\n{customers}    absent_when:\n      - {{ column: status, equals: Inactive }}\nmapping:\n  customer:\n    external_id: customer_id\n    name: customer_name\n    labels: [tier]\n    label_separator: \";\"\n    static_labels: [dirsync]\n  user:\n    external_id: id\n    customer: customer_id\n    email: email\n    name: name\n    role: role\n  roles:\n    map: {{ admin: Admin, staff: Member }}\npolicy:\n{prefix}  refused_records: {{ max_count: {cap}, max_percent: 0 }}\n",
            dir.join("users.csv").display()
        );
        Config::parse(&text, &dir.join("dirsync.yaml")).unwrap()
    }

    /// The batch path: every row read into a `SourceRecord` first, then
    /// `build_directory`, then the files' withheld deletes first.
    fn batch(csv: &CsvSettings, m: &Mapping, p: &Policy) -> Result<Directory, SourceError> {
        let mut withheld = Vec::new();
        let customers = match &csv.customers_file {
            Some(path) => {
                let keys = mapping::customer_keys(m);
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                let read = csv::read_records(path, csv.delimiter, &keys, None, &[])?;
                withheld.extend(read.withheld);
                Some(read.records)
            }
            None => None,
        };
        let keys = mapping::user_keys(m, customers.is_none());
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let users = csv::read_records(
            &csv.users_file,
            csv.delimiter,
            &keys,
            None,
            &csv.absent_when,
        )?;
        withheld.extend(users.withheld);
        let mut d = build_directory(
            customers.as_deref(),
            &users.records,
            &users.disabled,
            m,
            p,
            KeyKind("column"),
        )?;
        let by_record = std::mem::take(&mut d.deletes_withheld);
        for w in withheld.iter().chain(&by_record) {
            d.withhold_deletes(&w.origin, w.cause.clone());
        }
        Ok(d)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The CSV stream (rows straight into the builder) and the batch
        /// path (rows collected as records, then built) give the same
        /// directory, or the same error, for the same files.
        #[test]
        fn streamed_rows_build_the_same_directory_as_collected_records(
            rows in prop::collection::vec(row(), 0..40),
            customers in prop::option::of(prop::collection::vec(customer_row(), 0..6)),
            terminated in prop::bool::weighted(0.8),
            prefix in prop::bool::weighted(0.2),
            cap in 0usize..30,
        ) {
            let dir = tempfile::tempdir().unwrap();
            write_csv(&dir.path().join("users.csv"), &HEADER, &rows, terminated);
            if let Some(customers) = &customers {
                write_csv(&dir.path().join("customers.csv"), &["customer_id", "customer_name", "tier"], customers, true);
            }
            let config = config(dir.path(), customers.is_some(), prefix, cap);
            let SourceSettings::Csv(settings) = &config.source else {
                panic!("a CSV source");
            };
            let streamed = read_csv(settings, &config.mapping, &config.policy).map_err(|e| e.to_string());
            let collected = batch(settings, &config.mapping, &config.policy).map_err(|e| e.to_string());
            prop_assert_eq!(streamed, collected);
        }
    }
}
