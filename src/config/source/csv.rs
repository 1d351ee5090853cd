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
    min_age_secs: Option<u64>,
}

/// The longest `min_age_secs` allowed: it is how long a file must have been
/// left alone before it is read, not how old it may be.
const MAX_MIN_AGE_SECS: u64 = 86_400;

fn default_delimiter() -> String {
    ",".to_owned()
}

#[derive(Clone, Debug)]
pub struct CsvSettings {
    pub users_file: PathBuf,
    pub customers_file: Option<PathBuf>,
    pub delimiter: u8,
    /// A file modified more recently than this is refused (it may still be
    /// being written). None: any age.
    pub min_age: Option<std::time::Duration>,
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
    let min_age = match csv.min_age_secs {
        None | Some(0) => None,
        Some(secs) if secs <= MAX_MIN_AGE_SECS => Some(std::time::Duration::from_secs(secs)),
        Some(secs) => {
            return Err(c.invalid(
                "source.csv.min_age_secs",
                format!(
                    "must be at most {MAX_MIN_AGE_SECS} (a day), not {secs}: it is how long a file must have been left alone before it is read (seconds), not how old it may be"
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
        min_age,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{parse, MINIMAL};
    use crate::config::SourceSettings;

    fn with_min_age(value: &str) -> String {
        MINIMAL.replace(
            "    users_file: users.csv\n",
            &format!("    users_file: users.csv\n    min_age_secs: {value}\n"),
        )
    }

    #[test]
    fn min_age_secs_is_off_by_default_and_read_in_seconds() {
        let SourceSettings::Csv(csv) = parse(MINIMAL).unwrap().source else {
            panic!("csv")
        };
        assert_eq!(csv.min_age, None);
        let SourceSettings::Csv(csv) = parse(&with_min_age("120")).unwrap().source else {
            panic!("csv")
        };
        assert_eq!(csv.min_age, Some(std::time::Duration::from_secs(120)));
    }

    #[test]
    fn a_min_age_over_a_day_is_refused_at_its_line() {
        let err = parse(&with_min_age("90000")).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "conf/dirsync.yaml:7:19: source.csv.min_age_secs: must be at most 86400"
            ),
            "{err}"
        );
        let err = parse(&with_min_age("-1")).unwrap_err().to_string();
        assert!(err.contains("source.csv.min_age_secs"), "{err}");
    }
}
