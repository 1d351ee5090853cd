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
///
/// Held a million at a time, so kept small: the externalId, email, name and
/// phone lie one after the other in one allocation, and the customer's
/// externalId and the role are shared with every user that has them. Read
/// through the accessors; build with [`DesiredUser::new`].
#[derive(Clone, PartialEq, Eq)]
pub struct DesiredUser {
    /// externalId, email, name, phone, one after another.
    text: Box<str>,
    /// Where the email, the name and the phone start in `text`.
    starts: [u32; 3],
    /// Whether the name and the phone are set (an empty one is not absent).
    has_name: bool,
    has_phone: bool,
    customer_external_id: Arc<str>,
    role: Option<Arc<str>>,
    origin: Origin,
}

/// What a [`DesiredUser`] is made of.
#[derive(Clone, Debug)]
pub struct UserParts<'a> {
    pub external_id: &'a str,
    pub customer_external_id: Arc<str>,
    /// As written in the source (trimmed); compared case-insensitively.
    pub email: &'a str,
    pub name: Option<&'a str>,
    pub phone: Option<&'a str>,
    /// A platform role name (after the role table); None when no role field is mapped.
    pub role: Option<Arc<str>>,
    pub origin: Origin,
}

impl DesiredUser {
    pub fn new(parts: UserParts<'_>) -> DesiredUser {
        let name = parts.name.unwrap_or_default();
        let phone = parts.phone.unwrap_or_default();
        let mut text = String::with_capacity(
            parts.external_id.len() + parts.email.len() + name.len() + phone.len(),
        );
        let start = |text: &mut String, part: &str| {
            let at = u32::try_from(text.len()).unwrap_or(u32::MAX);
            text.push_str(part);
            at
        };
        start(&mut text, parts.external_id);
        let starts = [
            start(&mut text, parts.email),
            start(&mut text, name),
            start(&mut text, phone),
        ];
        DesiredUser {
            text: text.into_boxed_str(),
            starts,
            has_name: parts.name.is_some(),
            has_phone: parts.phone.is_some(),
            customer_external_id: parts.customer_external_id,
            role: parts.role,
            origin: parts.origin,
        }
    }

    /// The `n`-th piece of `text` (0 externalId, 1 email, 2 name, 3 phone).
    fn piece(&self, n: usize) -> &str {
        let at = |i: usize| self.starts[i] as usize;
        let start = if n == 0 { 0 } else { at(n - 1) };
        let end = if n < 3 { at(n) } else { self.text.len() };
        self.text.get(start..end).unwrap_or_default()
    }

    pub fn external_id(&self) -> &str {
        self.piece(0)
    }

    /// As written in the source (trimmed); compared case-insensitively.
    pub fn email(&self) -> &str {
        self.piece(1)
    }

    pub fn name(&self) -> Option<&str> {
        self.has_name.then(|| self.piece(2))
    }

    pub fn phone(&self) -> Option<&str> {
        self.has_phone.then(|| self.piece(3))
    }

    pub fn customer_external_id(&self) -> &str {
        &self.customer_external_id
    }

    /// A platform role name (after the role table); None when no role field is mapped.
    pub fn role(&self) -> Option<&str> {
        self.role.as_deref()
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// What the user is made of: `DesiredUser::new(UserParts { name, ..u.to_parts() })`
    /// is `u` with another name.
    pub fn to_parts(&self) -> UserParts<'_> {
        UserParts {
            external_id: self.external_id(),
            customer_external_id: self.customer_external_id.clone(),
            email: self.email(),
            name: self.name(),
            phone: self.phone(),
            role: self.role.clone(),
            origin: self.origin.clone(),
        }
    }
}

impl fmt::Debug for DesiredUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DesiredUser")
            .field("external_id", &self.external_id())
            .field("customer_external_id", &self.customer_external_id())
            .field("email", &self.email())
            .field("name", &self.name())
            .field("phone", &self.phone())
            .field("role", &self.role())
            .field("origin", &self.origin)
            .finish()
    }
}

impl Serialize for DesiredUser {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("DesiredUser", 7)?;
        out.serialize_field("externalId", self.external_id())?;
        out.serialize_field("customerExternalId", self.customer_external_id())?;
        out.serialize_field("email", self.email())?;
        out.serialize_field("name", &self.name())?;
        out.serialize_field("phone", &self.phone())?;
        out.serialize_field("role", &self.role())?;
        out.serialize_field("origin", &self.origin)?;
        out.end()
    }
}

/// The directory's users, by externalId: one vector sorted by it (a
/// million users are one allocation of small records, not a tree of
/// nodes, and are sorted where they lie).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Users(Vec<DesiredUser>);

impl Users {
    /// Users whose externalIds are distinct, in any order.
    pub fn from_distinct(mut users: Vec<DesiredUser>) -> Users {
        users.sort_unstable_by(|a, b| a.external_id().cmp(b.external_id()));
        Users(users)
    }

    fn position(&self, external_id: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|u| u.external_id().cmp(external_id))
    }

    pub fn get(&self, external_id: &str) -> Option<&DesiredUser> {
        self.position(external_id).ok().map(|at| &self.0[at])
    }

    pub fn contains_key(&self, external_id: &str) -> bool {
        self.position(external_id).is_ok()
    }

    /// Adds `user`, or replaces the one with its externalId (returned).
    pub fn insert(&mut self, user: DesiredUser) -> Option<DesiredUser> {
        match self.position(user.external_id()) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at], user)),
            Err(at) => {
                self.0.insert(at, user);
                None
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each user with its externalId, in externalId order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &DesiredUser)> + '_ {
        self.0.iter().map(|u| (u.external_id(), u))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> + '_ {
        self.0.iter().map(DesiredUser::external_id)
    }

    pub fn values(&self) -> std::slice::Iter<'_, DesiredUser> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a Users {
    type Item = (&'a str, &'a DesiredUser);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, DesiredUser>,
        fn(&'a DesiredUser) -> (&'a str, &'a DesiredUser),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|u| (u.external_id(), u))
    }
}

/// Like a map's: a later user with an externalId already seen replaces it.
impl FromIterator<DesiredUser> for Users {
    fn from_iter<I: IntoIterator<Item = DesiredUser>>(iter: I) -> Users {
        let mut users: Vec<DesiredUser> = iter.into_iter().collect();
        users.sort_by(|a, b| a.external_id().cmp(b.external_id()));
        // Of equal keys (kept in arrival order by the stable sort), the last.
        let mut kept: Vec<DesiredUser> = Vec::with_capacity(users.len());
        for u in users {
            match kept.last_mut() {
                Some(last) if last.external_id() == u.external_id() => *last = u,
                _ => kept.push(u),
            }
        }
        Users(kept)
    }
}

impl Serialize for Users {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
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
    pub users: Users,
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
        if value.len() <= self.max_chars && is_printable_ascii(value) {
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

/// Whether every byte of `value` is printable ASCII (a space to `~`),
/// looked at eight bytes at a time (a million rows of values go through
/// it): a word holds a byte below a space when subtracting a space from
/// each byte borrows, and one above `~` when adding one sets a high bit.
/// Either test can flag a byte wrongly only above one it flags rightly, so
/// together they say exactly whether the word holds such a byte.
fn is_printable_ascii(value: &str) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGH_BITS: u64 = ONES * 0x80;
    let outside = |word: u64| {
        let below_space = word.wrapping_sub(ONES * 0x20) & !word;
        let above_tilde = word.wrapping_add(ONES) | word;
        (below_space | above_tilde) & HIGH_BITS != 0
    };
    let mut chunks = value.as_bytes().chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if outside(u64::from_le_bytes(word)) {
            return false;
        }
    }
    // The rest, with spaces after it.
    let rest = chunks.remainder();
    let mut word = [b' '; 8];
    word[..rest.len()].copy_from_slice(rest);
    !outside(u64::from_le_bytes(word))
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

/// The same plain check the platform's form validation applies: one `@`
/// after a non-empty local part; after it a domain with a dot and no empty
/// label (no dot first, last, or twice in a row); no white space anywhere.
///
/// A million emails go through it, so the bytes are searched, not walked:
/// `@` and `.` are ASCII, and no byte of a multi-byte character is, so
/// only an email that is not all printable ASCII needs its characters
/// looked at for white space (in one that is, a space is the only one).
pub fn is_valid_email(email: &str) -> bool {
    let bytes = email.as_bytes();
    let Some(at) = memchr::memchr(b'@', bytes) else {
        return false;
    };
    let domain = &bytes[at + 1..];
    if at == 0 || memchr::memchr(b'@', domain).is_some() {
        return false;
    }
    let mut label_start = 0;
    let mut dots = 0;
    for dot in memchr::memchr_iter(b'.', domain) {
        if dot == label_start {
            return false;
        }
        label_start = dot + 1;
        dots += 1;
    }
    if dots == 0 || label_start == domain.len() {
        return false;
    }
    if is_printable_ascii(email) {
        memchr::memchr(b' ', bytes).is_none()
    } else {
        !email.chars().any(char::is_whitespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_is_checked_in_whole_chunks_and_in_the_rest_alike() {
        for len in 0..40 {
            let plain = "a".repeat(len);
            assert!(is_printable_ascii(&plain), "{len}");
            for at in 0..len {
                for good in [' ', '~', '!'] {
                    let mut text = plain.clone();
                    text.replace_range(at..=at, &good.to_string());
                    assert!(is_printable_ascii(&text), "{text:?}");
                }
                for bad in [
                    '\0', '\t', '\u{1f}', '\u{7f}', '\u{80}', 'é', '\u{ff}', '😀',
                ] {
                    let mut text = plain.clone();
                    text.replace_range(at..=at, &bad.to_string());
                    assert!(!is_printable_ascii(&text), "{text:?}");
                }
            }
        }
    }

    /// The checks `is_valid_email` made before it took one pass.
    fn email_checks_one_by_one(email: &str) -> bool {
        let Some((local, domain)) = email.split_once('@') else {
            return false;
        };
        !local.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.split('.').any(str::is_empty)
            && !email.chars().any(char::is_whitespace)
    }

    /// Pieces of emails: mostly letters, dots and `@`, some white space
    /// (ASCII and beyond) and a non-ASCII letter.
    fn email_piece() -> impl proptest::strategy::Strategy<Value = &'static str> {
        use proptest::prelude::*;
        prop_oneof![
            6 => Just("a"),
            3 => Just("."),
            2 => Just("@"),
            1 => Just("é"),
            1 => proptest::sample::select(vec![" ", "\t", "\u{b}", "\u{a0}", "\u{2003}"]),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2_000))]
        #[test]
        fn an_email_checked_in_one_pass_is_judged_as_the_checks_one_by_one_judged_it(
            pieces in proptest::collection::vec(email_piece(), 0..9)
        ) {
            let email = pieces.concat();
            proptest::prop_assert_eq!(is_valid_email(&email), email_checks_one_by_one(&email), "{:?}", email);
        }
    }

    #[test]
    fn an_email_needs_a_dotted_domain_without_empty_labels() {
        for good in ["a@b.c", "a.b@c.d.e", "a+b@c-d.e"] {
            assert!(is_valid_email(good), "{good}");
        }
        for bad in [
            "a@b",
            "a@.b.c",
            "a@b.c.",
            "a@b..c",
            "@b.c",
            "a@b@c.d",
            "a b@c.d",
            "a@b.c\u{a0}",
        ] {
            assert!(!is_valid_email(bad), "{bad}");
        }
    }

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

    fn parts<'a>(x: &'a str, name: Option<&'a str>, phone: Option<&'a str>) -> UserParts<'a> {
        UserParts {
            external_id: x,
            customer_external_id: "acme".into(),
            email: "Ada@Acme.test",
            name,
            phone,
            role: Some("Admin".into()),
            origin: Origin::Record {
                url: "https://hr.example/users".to_owned(),
                index: 3,
            },
        }
    }

    #[test]
    fn a_desired_user_gives_back_each_field_as_built_an_empty_one_not_absent() {
        let u = DesiredUser::new(parts("ada-1", Some("Ada Lovelace"), None));
        assert_eq!(u.external_id(), "ada-1");
        assert_eq!(u.email(), "Ada@Acme.test");
        assert_eq!(u.name(), Some("Ada Lovelace"));
        assert_eq!(u.phone(), None);
        assert_eq!(u.customer_external_id(), "acme");
        assert_eq!(u.role(), Some("Admin"));
        let empty = DesiredUser::new(parts("ada-1", Some(""), Some("")));
        assert_eq!((empty.name(), empty.phone()), (Some(""), Some("")));
        assert_ne!(empty, DesiredUser::new(parts("ada-1", None, None)));
        let renamed = DesiredUser::new(UserParts {
            name: Some("Ada"),
            ..u.to_parts()
        });
        assert_eq!(renamed.name(), Some("Ada"));
        assert_eq!(renamed.email(), u.email());
        assert!(
            std::mem::size_of::<DesiredUser>() <= 112,
            "a million of them are held at once"
        );
    }

    #[test]
    fn users_are_found_by_external_id_in_order_and_a_later_one_replaces_an_earlier() {
        let users: Users = ["b", "a", "c", "a"]
            .iter()
            .enumerate()
            .map(|(n, x)| DesiredUser::new(parts(x, Some(["1", "2", "3", "4"][n]), None)))
            .collect();
        assert_eq!(users.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(users.get("a").and_then(DesiredUser::name), Some("4"));
        assert!(users.contains_key("c") && !users.contains_key("d"));
        let mut more = users.clone();
        assert!(more
            .insert(DesiredUser::new(parts("aa", None, None)))
            .is_none());
        assert_eq!(more.keys().collect::<Vec<_>>(), ["a", "aa", "b", "c"]);
        let json = serde_json::to_value(&users).expect("json");
        assert_eq!(json["b"]["name"], "1");
        assert_eq!(json["b"]["customerExternalId"], "acme");
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
