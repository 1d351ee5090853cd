//! `source.csv`: the files an HR export or spreadsheet gives, and how they
//! are split.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{resolve_against, Checker, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawCsv {
    users_file: PathBuf,
    customers_file: Option<PathBuf>,
    #[serde(default = "default_delimiter")]
    delimiter: String,
}

fn default_delimiter() -> String {
    ",".to_owned()
}

#[derive(Clone, Debug)]
pub struct CsvSettings {
    pub users_file: PathBuf,
    pub customers_file: Option<PathBuf>,
    pub delimiter: u8,
}

pub(super) fn validate_csv(c: &Checker<'_>, csv: RawCsv) -> Result<CsvSettings, ConfigError> {
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
    Ok(CsvSettings {
        users_file: resolve_against(c.path, &csv.users_file),
        customers_file: csv
            .customers_file
            .as_ref()
            .map(|f| resolve_against(c.path, f)),
        delimiter,
    })
}
