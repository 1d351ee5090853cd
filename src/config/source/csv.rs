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
    #[serde(default)]
    absent_when: Vec<RawAbsentRule>,
}

/// One `source.csv.absent_when` rule as written: a column and one test.
/// Values are YAML scalars (`Inactive`, `0`, `false`), compared as text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAbsentRule {
    column: String,
    equals: Option<serde_yaml::Value>,
    #[serde(rename = "in")]
    one_of: Option<Vec<serde_yaml::Value>>,
    not_empty: Option<bool>,
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
    /// Rows of the users file matching any of these are absent from the
    /// directory (an inactive or terminated employee), in the order written.
    pub absent_when: Vec<AbsentRule>,
}

/// A `source.csv.absent_when` rule: a row whose `column` passes `test` is
/// not in the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsentRule {
    /// The header column (trimmed), matched exactly like the mapping's.
    pub column: String,
    pub test: AbsentTest,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbsentTest {
    /// The cell (trimmed) is one of these, ignoring case (`equals` is a
    /// one-value list). Held trimmed and lowercased character by character.
    OneOf(Vec<String>),
    /// The cell holds anything but spaces.
    NotEmpty,
}

impl AbsentRule {
    /// A rule: `column` equal to one of `values` (trimmed, any case).
    pub fn one_of(column: &str, values: &[&str]) -> AbsentRule {
        AbsentRule {
            column: column.trim().to_owned(),
            test: AbsentTest::OneOf(values.iter().map(|v| caseless(v.trim())).collect()),
        }
    }

    /// A rule: `column` not empty.
    pub fn not_empty(column: &str) -> AbsentRule {
        AbsentRule {
            column: column.trim().to_owned(),
            test: AbsentTest::NotEmpty,
        }
    }

    /// Whether a cell (already trimmed; `""` for an empty one) marks its row absent.
    pub fn matches(&self, cell: &str) -> bool {
        match &self.test {
            AbsentTest::NotEmpty => !cell.is_empty(),
            AbsentTest::OneOf(values) => values
                .iter()
                .any(|v| cell.chars().flat_map(char::to_lowercase).eq(v.chars())),
        }
    }
}

impl std::fmt::Display for AbsentRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.test {
            AbsentTest::NotEmpty => write!(f, "column {:?} is not empty", self.column),
            AbsentTest::OneOf(values) => {
                write!(f, "column {:?} is ", self.column)?;
                let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
                write!(f, "{}", quoted.join(" or "))
            }
        }
    }
}

/// `value` lowercased character by character, the way [`AbsentRule::matches`]
/// folds a cell.
fn caseless(value: &str) -> String {
    value.chars().flat_map(char::to_lowercase).collect()
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
    let absent_when = csv
        .absent_when
        .into_iter()
        .enumerate()
        .map(|(i, rule)| validate_absent_rule(c, &format!("source.csv.absent_when[{i}]"), rule))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CsvSettings {
        users_file: resolve_against(c.path, &csv.users_file),
        customers_file: csv
            .customers_file
            .as_ref()
            .map(|f| resolve_against(c.path, f)),
        delimiter,
        min_age,
        absent_when,
    })
}

/// One rule: a column, and exactly one of `equals`, `in` and `not_empty: true`.
fn validate_absent_rule(
    c: &Checker<'_>,
    key: &str,
    rule: RawAbsentRule,
) -> Result<AbsentRule, ConfigError> {
    let column = c.non_empty(&format!("{key}.column"), &rule.column)?;
    let given: Vec<&str> = [
        rule.equals.as_ref().map(|_| "equals"),
        rule.one_of.as_ref().map(|_| "in"),
        rule.not_empty.map(|_| "not_empty"),
    ]
    .into_iter()
    .flatten()
    .collect();
    match given.as_slice() {
        [] => {
            return Err(c.invalid(
                key,
                "needs a test: `equals: VALUE`, `in: [VALUE, ...]` or `not_empty: true`",
            ))
        }
        [_] => {}
        [_, second, ..] => {
            return Err(c.invalid(
                &format!("{key}.{second}"),
                format!(
                    "one test per rule ({} given): write another rule for another test (a row matching any rule is absent)",
                    given.join(" and ")
                ),
            ))
        }
    }
    let test = if let Some(value) = rule.equals {
        AbsentTest::OneOf(vec![absent_value(c, &format!("{key}.equals"), &value)?])
    } else if let Some(values) = rule.one_of {
        if values.is_empty() {
            return Err(c.invalid(&format!("{key}.in"), "must list at least one value"));
        }
        let values = values
            .iter()
            .enumerate()
            .map(|(i, v)| absent_value(c, &format!("{key}.in[{i}]"), v))
            .collect::<Result<Vec<_>, _>>()?;
        AbsentTest::OneOf(values)
    } else {
        if rule.not_empty != Some(true) {
            return Err(c.invalid(
                &format!("{key}.not_empty"),
                "must be true (a rule with not_empty: false tests nothing: remove it)",
            ));
        }
        AbsentTest::NotEmpty
    };
    Ok(AbsentRule { column, test })
}

/// A value to compare cells with: a YAML scalar read as text, trimmed and
/// lowercased. An empty value is refused: it would mark every row whose cell
/// is empty absent, which is how a column left blank would delete everyone.
fn absent_value(
    c: &Checker<'_>,
    key: &str,
    value: &serde_yaml::Value,
) -> Result<String, ConfigError> {
    let text = match value {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Null => String::new(),
        _ => {
            return Err(c.invalid(
                key,
                "must be a single value (text, a number or a boolean), as the cell holds it",
            ))
        }
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(c.invalid(
            key,
            "must not be empty: name the values that mean absent (an empty cell matching would make a blank column delete everyone)",
        ));
    }
    Ok(caseless(text))
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{parse, MINIMAL};
    use crate::config::{AbsentRule, SourceSettings};

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

    fn with_absent_when(rules: &str) -> String {
        MINIMAL.replace(
            "    users_file: users.csv\n",
            &format!("    users_file: users.csv\n    absent_when:\n{rules}"),
        )
    }

    fn absent_when(rules: &str) -> Vec<AbsentRule> {
        let SourceSettings::Csv(csv) = parse(&with_absent_when(rules)).unwrap().source else {
            panic!("csv")
        };
        csv.absent_when
    }

    fn absent_when_error(rules: &str) -> String {
        parse(&with_absent_when(rules)).unwrap_err().to_string()
    }

    #[test]
    fn absent_when_rules_are_read_trimmed_and_caseless() {
        let rules = absent_when(
            "      - { column: Status, equals: ' Inactive ' }\n      - { column: ' Termination Date ', not_empty: true }\n      - column: Active\n        in: [false, 0, Nein, ÄUSSER]\n",
        );
        assert_eq!(
            rules,
            [
                AbsentRule::one_of("Status", &["inactive"]),
                AbsentRule::not_empty("Termination Date"),
                AbsentRule::one_of("Active", &["false", "0", "nein", "äusser"]),
            ]
        );
        assert!(rules[0].matches("INACTIVE") && rules[0].matches("inactive"));
        assert!(!rules[0].matches("Inactive since May") && !rules[0].matches(""));
        assert!(rules[1].matches("2024-05-31") && !rules[1].matches(""));
        assert!(rules[2].matches("FALSE") && rules[2].matches("Äusser") && !rules[2].matches("1"));
        assert_eq!(
            rules[2].to_string(),
            "column \"Active\" is \"false\" or \"0\" or \"nein\" or \"äusser\""
        );
        let SourceSettings::Csv(csv) = parse(MINIMAL).unwrap().source else {
            panic!("csv")
        };
        assert!(csv.absent_when.is_empty(), "none by default");
    }

    #[test]
    fn a_bad_absent_when_rule_is_refused_at_its_key() {
        let at = |rules: &str| absent_when_error(rules);
        let err = at("      - { column: Status, equals: Inactive }\n      - { column: '  ', not_empty: true }\n");
        assert!(
            err.starts_with(
                "conf/dirsync.yaml:9:19: source.csv.absent_when[1].column: must not be empty"
            ),
            "{err}"
        );
        let err = at("      - { column: Status }\n");
        assert!(
            err.starts_with("conf/dirsync.yaml:8:9: source.csv.absent_when[0]: needs a test: `equals: VALUE`, `in: [VALUE, ...]` or `not_empty: true`"),
            "{err}"
        );
        let err = at("      - { column: Status, equals: Inactive, in: [Terminated] }\n");
        assert!(
            err.starts_with("conf/dirsync.yaml:8:45: source.csv.absent_when[0].in: one test per rule (equals and in given)"),
            "{err}"
        );
        let err = at("      - { column: Left, not_empty: false }\n");
        assert!(
            err.starts_with(
                "conf/dirsync.yaml:8:36: source.csv.absent_when[0].not_empty: must be true"
            ),
            "{err}"
        );
        let err = at("      - { column: Status, equals: '' }\n");
        assert!(
            err.starts_with(
                "conf/dirsync.yaml:8:35: source.csv.absent_when[0].equals: must not be empty"
            ),
            "{err}"
        );
        let err = at("      - { column: Status, in: [] }\n");
        assert!(
            err.contains("source.csv.absent_when[0].in: must list at least one value"),
            "{err}"
        );
        let err = at("      - { column: Status, in: [Inactive, [Gone]] }\n");
        assert!(
            err.starts_with(
                "conf/dirsync.yaml:8:42: source.csv.absent_when[0].in[1]: must be a single value"
            ),
            "{err}"
        );
        let err = at("      - { column: Status, equal: Inactive }\n");
        assert!(
            err.contains("source.csv.absent_when[0]") && err.contains("unknown field `equal`"),
            "{err}"
        );
    }
}
