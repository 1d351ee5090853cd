//! The directory: the desired state read from a source, keyed by externalId,
//! and the normalisation rules every comparison goes through.
//!
//! Sources produce [`SourceRecord`]s; `source::mapping` turns them into a
//! [`Directory`]. The planner compares a `Directory` with a `Snapshot` using
//! only the functions here, so every source compares the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Where a record came from, for messages that name the line or entry at fault.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Origin {
    /// A physical line of a file (the record's first line when it spans several).
    /// The path is shared by every record of the file.
    Line { file: Arc<Path>, line: u64 },
    /// A whole file (what is wrong is not one record: it changed while it
    /// was read, say).
    File { file: Arc<Path> },
    /// A directory entry (LDAP DN).
    Entry { dn: String },
    /// The n-th record (0-based) of a response.
    Record { url: String, index: usize },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Line { file, line } => write!(f, "{}:{line}", file.display()),
            Origin::File { file } => write!(f, "{}", file.display()),
            Origin::Entry { dn } => write!(f, "entry {dn}"),
            Origin::Record { url, index } => write!(f, "{url} record {index}"),
        }
    }
}

/// One record as a source read it: the values of the keys the mapping asked
/// for (column names, attribute names, JSON paths), trimmed, empty ones absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRecord {
    pub origin: Origin,
    /// Keys are shared (`Arc<str>`) by every record of a read: a million
    /// rows do not carry a million copies of each column name.
    pub values: BTreeMap<Arc<str>, String>,
    /// Set by a source that already knows the record cannot be used (an
    /// LDAP user that matches no customer entry): the mapping refuses it
    /// with this message.
    pub problem: Option<String>,
}

impl SourceRecord {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
}

/// A customer as the directory wants it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredCustomer {
    pub external_id: String,
    pub name: String,
    /// None when the mapping sets no description: never compared or written.
    pub description: Option<String>,
    /// Normalised (lowercase, deduplicated, sorted); None when the mapping sets no labels.
    pub labels: Option<BTreeSet<String>>,
    pub origin: Origin,
}

/// A customer user as the directory wants it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredUser {
    pub external_id: String,
    pub customer_external_id: String,
    /// As written in the source (trimmed); compared case-insensitively.
    pub email: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    /// A platform role name (after the role table); None when no role field is mapped.
    pub role: Option<String>,
    pub origin: Origin,
}

/// A record the source or the mapping refused, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedRecord {
    pub origin: Origin,
    /// The mapped field at fault and the source key behind it (`email (column mail)`).
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for RefusedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {field}: {}", self.origin, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

/// The desired state: what the platform should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Directory {
    pub customers: BTreeMap<String, DesiredCustomer>,
    pub users: BTreeMap<String, DesiredUser>,
    /// Records refused one by one (within the cap); shown in the plan.
    pub refused: Vec<RefusedRecord>,
    /// What refused records were about: these are neither updated nor
    /// deleted this run, because the directory's wish for them is unknown.
    pub unknown: Unknown,
    /// Why this read cannot say who is absent, if it cannot: the file may be
    /// cut short or was changing while it was read, or a refused record named
    /// no externalId. Non-empty: nothing is deleted this run; when the plan
    /// holds deletes, `guard::check_source` reports each cause as a
    /// `BlockReason::DeletesWithheld`.
    pub deletes_withheld: Vec<Withheld>,
    /// The externalIds of the users the source saw as disabled (an
    /// `absent_when` row, a disabled account, an inactive SCIM user), checked
    /// and scoped as live ones are. Not in `users`: a delete of one of them
    /// says "disabled in the directory" instead of "absent from the
    /// directory". An externalId that also has a live record is not here.
    #[serde(default)]
    pub disabled_users: BTreeSet<String>,
}

impl Directory {
    /// Whether this read may cause deletes at all.
    pub fn withholds_deletes(&self) -> bool {
        !self.deletes_withheld.is_empty()
    }

    /// Notes that this read cannot say who is absent (once per origin and cause).
    pub fn withhold_deletes(&mut self, origin: &Origin, cause: impl Into<String>) {
        let w = Withheld {
            origin: origin.clone(),
            cause: cause.into(),
        };
        if !self.deletes_withheld.contains(&w) {
            self.deletes_withheld.push(w);
        }
    }
}

/// Why a read cannot say who is absent: where, and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Withheld {
    pub origin: Origin,
    pub cause: String,
}

impl fmt::Display for Withheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.cause)
    }
}

/// Keys of refused records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unknown {
    pub customer_external_ids: BTreeSet<String>,
    pub user_external_ids: BTreeSet<String>,
    /// Lowercased emails of refused user records (for rows whose externalId
    /// itself was missing, the email still protects the platform user).
    pub user_emails: BTreeSet<String>,
}

/// The longest value (in characters, i.e. Unicode code points) each
/// platform field takes from a source. Conservative: a value past its limit
/// is a refused record, never sent (README, "Values dirsync refuses").
pub mod limits {
    /// A user's or a customer's externalId.
    pub const EXTERNAL_ID: usize = 255;
    /// A user's or a customer's name.
    pub const NAME: usize = 255;
    /// An email address (RFC 5321 allows 254).
    pub const EMAIL: usize = 254;
    pub const PHONE: usize = 64;
    /// The source's role value (before the role table).
    pub const ROLE: usize = 255;
    /// Each label, after splitting on `label_separator`.
    pub const LABEL: usize = 255;
    pub const DESCRIPTION: usize = 4096;
}

/// What a field may hold: at most `max_chars` characters and no control
/// characters (NUL, tab, line breaks, DEL, C1 controls, U+2028, U+2029),
/// except that a multi-line field (a customer's description) may hold tabs
/// and line breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueRule {
    pub max_chars: usize,
    pub multiline: bool,
}

impl ValueRule {
    pub const fn single_line(max_chars: usize) -> ValueRule {
        ValueRule {
            max_chars,
            multiline: false,
        }
    }

    /// Why `value` cannot be sent, if it cannot. The message never repeats
    /// the value (it may be a megabyte long, or hold what a terminal obeys).
    pub fn problem(&self, value: &str) -> Option<String> {
        // Printable ASCII within the limit (nearly every value): nothing to say.
        if value.len() <= self.max_chars && value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return None;
        }
        let mut chars = 0usize;
        for c in value.chars() {
            chars += 1;
            let allowed_break = self.multiline && matches!(c, '\t' | '\n' | '\r');
            if (c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')) && !allowed_break {
                return Some(format!(
                    "contains {} at character {chars}; control characters are refused",
                    describe_control(c)
                ));
            }
        }
        (chars > self.max_chars).then(|| {
            format!(
                "is {chars} characters long, over the limit of {} for this field",
                self.max_chars
            )
        })
    }
}

fn describe_control(c: char) -> String {
    let name = match c {
        '\0' => "NUL",
        '\t' => "a tab",
        '\n' => "a line break",
        '\r' => "a carriage return",
        '\u{7f}' => "DEL",
        '\u{2028}' => "a line separator",
        '\u{2029}' => "a paragraph separator",
        _ => "a control character",
    };
    format!("{name} (U+{:04X})", u32::from(c))
}

/// Trimmed text; `None` for empty.
pub fn clean(value: &str) -> Option<String> {
    let t = value.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// Labels as the platform stores them: lowercase, trimmed, no empties, no
/// duplicates, order-free.
pub fn normalise_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    labels
        .into_iter()
        .filter_map(|l| clean(l).map(|l| l.to_lowercase()))
        .collect()
}

/// Emails compare case-insensitively and without surrounding white space.
pub fn same_email(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// Text fields compare trimmed; a missing platform value is "".
pub fn same_text(desired: &str, actual: &str) -> bool {
    desired.trim() == actual.trim()
}

/// The same plain check the platform's form validation applies.
pub fn is_valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !email.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_lowercased_deduplicated_and_unordered() {
        let a = normalise_labels(["Gold", " eu ", "gold", ""]);
        let b = normalise_labels(["EU", "GOLD"]);
        assert_eq!(a, b);
        assert_eq!(a.into_iter().collect::<Vec<_>>(), ["eu", "gold"]);
    }

    #[test]
    fn emails_compare_case_insensitively() {
        assert!(same_email("Ada@Example.com ", "ada@example.com"));
        assert!(!same_email("ada@example.com", "ada@example.org"));
    }

    #[test]
    fn control_characters_and_overlong_values_are_named_without_the_value() {
        let rule = ValueRule::single_line(5);
        assert_eq!(rule.problem("Ada"), None);
        assert_eq!(rule.problem("Zoë"), None, "characters, not bytes");
        assert_eq!(
            rule.problem("A\0da").as_deref(),
            Some("contains NUL (U+0000) at character 2; control characters are refused")
        );
        assert!(rule.problem("a\tb").unwrap().contains("a tab (U+0009)"));
        assert!(rule
            .problem("a\nb")
            .unwrap()
            .contains("a line break (U+000A)"));
        assert!(rule.problem("a\u{85}b").unwrap().contains("U+0085"));
        assert_eq!(
            rule.problem("abcdef").as_deref(),
            Some("is 6 characters long, over the limit of 5 for this field")
        );
        let multiline = ValueRule {
            max_chars: 50,
            multiline: true,
        };
        assert_eq!(multiline.problem("line one\r\n\tline two"), None);
        assert!(multiline.problem("a\0").is_some(), "NUL never");
    }

    #[test]
    fn origins_name_the_file_and_line() {
        let o = Origin::Line {
            file: Path::new("users.csv").into(),
            line: 12,
        };
        assert_eq!(o.to_string(), "users.csv:12");
    }
}
