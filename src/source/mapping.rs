//! From source records to the [`Directory`]: required fields, valid emails,
//! the role table, labels, customers from their own records or from the user
//! records, duplicates, and the cap on refused records. Shared by every
//! source, so CSV, LDAP and HTTP directories follow the same rules.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use super::SourceError;
use crate::config::{CustomerMapping, Mapping, Policy};
use crate::directory::{
    clean, is_valid_email, normalise_labels, DesiredCustomer, DesiredUser, Directory, Origin,
    RefusedRecord, SourceRecord, ValueRule,
};

/// How a source calls its keys in messages: "column", "attribute", "path".
#[derive(Clone, Copy, Debug)]
pub struct KeyKind(pub &'static str);

/// The source keys a mapping reads from user records (and, when customers
/// come from the user records, the customer keys too).
pub fn user_keys(mapping: &Mapping, with_customer_fields: bool) -> Vec<String> {
    let u = &mapping.user;
    let mut keys = vec![u.external_id.clone(), u.customer.clone(), u.email.clone()];
    keys.extend([&u.name, &u.phone, &u.role].into_iter().flatten().cloned());
    if with_customer_fields {
        keys.extend(customer_value_keys(&mapping.customer));
    }
    dedup(keys)
}

/// The source keys a mapping reads from customer records.
pub fn customer_keys(mapping: &Mapping) -> Vec<String> {
    let mut keys = vec![mapping.customer.external_id.clone()];
    keys.extend(customer_value_keys(&mapping.customer));
    dedup(keys)
}

fn customer_value_keys(c: &CustomerMapping) -> Vec<String> {
    let mut keys = vec![c.name.clone()];
    keys.extend(c.description.iter().cloned());
    keys.extend(c.labels.iter().cloned());
    keys
}

fn dedup(keys: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    keys.into_iter()
        .filter(|k| seen.insert(k.clone()))
        .collect()
}

/// Why a record is refused in the end (each record is refused at most once,
/// with its first problem).
struct Refused;

/// The value rules of each field (README, "Values dirsync refuses").
mod rule {
    use crate::directory::{limits, ValueRule};

    pub const EXTERNAL_ID: ValueRule = ValueRule::single_line(limits::EXTERNAL_ID);
    pub const NAME: ValueRule = ValueRule::single_line(limits::NAME);
    pub const EMAIL: ValueRule = ValueRule::single_line(limits::EMAIL);
    pub const PHONE: ValueRule = ValueRule::single_line(limits::PHONE);
    pub const ROLE: ValueRule = ValueRule::single_line(limits::ROLE);
    pub const LABEL: ValueRule = ValueRule::single_line(limits::LABEL);
    pub const DESCRIPTION: ValueRule = ValueRule {
        max_chars: limits::DESCRIPTION,
        multiline: true,
    };
}

/// Why deletes are withheld for a refused record without a usable externalId.
const NO_EXTERNAL_ID: &str =
    "a refused record names no usable externalId, so who is absent from the directory cannot be known";

struct Builder<'a> {
    mapping: &'a Mapping,
    policy: &'a Policy,
    kind: KeyKind,
    directory: Directory,
}

impl Builder<'_> {
    fn field(&self, field: &str, key: &str) -> String {
        format!("{field} ({} {key})", self.kind.0)
    }

    fn refuse(
        &mut self,
        origin: &Origin,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Refused {
        self.directory.refused.push(RefusedRecord {
            origin: origin.clone(),
            field,
            message: message.into(),
        });
        Refused
    }

    /// The values of required fields; one refusal naming every one missing.
    fn required<'r, const N: usize>(
        &mut self,
        record: &'r SourceRecord,
        fields: [(&str, &str); N],
    ) -> Result<[&'r str; N], Refused> {
        let mut values = [""; N];
        let mut missing = Vec::new();
        for (slot, (field, key)) in values.iter_mut().zip(fields) {
            match record.get(key) {
                Some(v) => *slot = v,
                None => missing.push(self.field(field, key)),
            }
        }
        match missing.len() {
            0 => Ok(values),
            1 => Err(self.refuse(&record.origin, missing.pop(), "missing required value")),
            _ => Err(self.refuse(
                &record.origin,
                Some(missing.join(", ")),
                "missing required values",
            )),
        }
    }

    /// Refuses the record when `value` breaks the field's rule.
    fn check(
        &mut self,
        record: &SourceRecord,
        field: &str,
        key: &str,
        value: &str,
        rule: ValueRule,
    ) -> Result<(), Refused> {
        match rule.problem(value) {
            None => Ok(()),
            Some(problem) => {
                let f = self.field(field, key);
                Err(self.refuse(&record.origin, Some(f), problem))
            }
        }
    }

    /// An optional field's value (`None` when not mapped), checked.
    fn optional(
        &mut self,
        record: &SourceRecord,
        field: &str,
        key: Option<&String>,
        rule: ValueRule,
    ) -> Result<Option<String>, Refused> {
        let Some(key) = key else {
            return Ok(None);
        };
        let value = record.get(key).and_then(clean).unwrap_or_default();
        self.check(record, field, key, &value, rule)?;
        Ok(Some(value))
    }

    fn external_id_in_scope(
        &mut self,
        record: &SourceRecord,
        field: &str,
        key: &str,
        value: &str,
    ) -> Result<(), Refused> {
        if self.policy.in_scope(Some(value)) {
            return Ok(());
        }
        let f = self.field(field, key);
        let prefix = self.policy.external_id_prefix.clone().unwrap_or_default();
        Err(self.refuse(
            &record.origin,
            Some(f),
            format!("externalId {value:?} does not start with the managed prefix {prefix:?}"),
        ))
    }

    /// A customer from a record (its own, or a user record's customer columns).
    fn customer(
        &mut self,
        record: &SourceRecord,
        external_id: &str,
    ) -> Result<DesiredCustomer, Refused> {
        let mapping = self.mapping;
        let c = &mapping.customer;
        let [name] = self.required(record, [("customer name", &c.name)])?;
        self.check(record, "customer name", &c.name, name, rule::NAME)?;
        let description = self.optional(
            record,
            "customer description",
            c.description.as_ref(),
            rule::DESCRIPTION,
        )?;
        let labels = if c.manages_labels() {
            let mut values: Vec<&str> = c.static_labels.iter().map(String::as_str).collect();
            for key in &c.labels {
                if let Some(v) = record.get(key) {
                    let from_key: Vec<&str> = match &c.label_separator {
                        Some(sep) => v.split(sep.as_str()).collect(),
                        None => vec![v],
                    };
                    for label in &from_key {
                        self.check(record, "customer label", key, label.trim(), rule::LABEL)?;
                    }
                    values.extend(from_key);
                }
            }
            Some(normalise_labels(values))
        } else {
            None
        };
        Ok(DesiredCustomer {
            external_id: external_id.to_owned(),
            name: name.to_owned(),
            description,
            labels,
            origin: record.origin.clone(),
        })
    }

    /// Adds a customer; the same externalId twice with other data refuses the whole source.
    fn add_customer(&mut self, customer: DesiredCustomer) -> Result<(), SourceError> {
        match self.directory.customers.entry(customer.external_id.clone()) {
            Entry::Vacant(v) => {
                v.insert(customer);
                Ok(())
            }
            Entry::Occupied(o) => {
                let first = o.get();
                let same = first.name == customer.name
                    && first.description == customer.description
                    && first.labels == customer.labels;
                if same {
                    Ok(())
                } else {
                    Err(SourceError::Conflict {
                        what: "customer",
                        external_id: customer.external_id.clone(),
                        first: first.origin.clone(),
                        second: customer.origin,
                    })
                }
            }
        }
    }

    fn customer_records(&mut self, records: &[SourceRecord]) -> Result<(), SourceError> {
        let key = self.mapping.customer.external_id.clone();
        for record in records {
            match self.customer_record(record, &key) {
                Ok(customer) => self.add_customer(customer)?,
                Err(Refused) => match record
                    .get(&key)
                    .filter(|x| rule::EXTERNAL_ID.problem(x).is_none())
                {
                    Some(x) => {
                        self.directory
                            .unknown
                            .customer_external_ids
                            .insert(x.to_owned());
                    }
                    None => self
                        .directory
                        .withhold_deletes(&record.origin, NO_EXTERNAL_ID),
                },
            }
        }
        Ok(())
    }

    fn customer_record(
        &mut self,
        record: &SourceRecord,
        key: &str,
    ) -> Result<DesiredCustomer, Refused> {
        if let Some(problem) = &record.problem {
            return Err(self.refuse(&record.origin, None, problem.clone()));
        }
        let [x] = self.required(record, [("customer externalId", key)])?;
        self.check(record, "customer externalId", key, x, rule::EXTERNAL_ID)?;
        self.external_id_in_scope(record, "customer externalId", key, x)?;
        self.customer(record, x)
    }

    fn user_records(
        &mut self,
        records: &[SourceRecord],
        customers_from_users: bool,
    ) -> Result<(), SourceError> {
        let mapping = self.mapping;
        let u = &mapping.user;
        let mut email_owner: BTreeMap<String, (String, Origin)> = BTreeMap::new();
        for record in records {
            let user = match self.user(record, u, customers_from_users) {
                Ok(user) => user,
                Err(UserError::Refused) => {
                    self.mark_unknown(record);
                    continue;
                }
                Err(UserError::Source(e)) => return Err(e),
            };
            let email_key = user.email.to_lowercase();
            if let Some((other, origin)) = email_owner.get(&email_key) {
                if *other != user.external_id {
                    let f = self.field("email", &u.email);
                    let message = format!(
                        "email {} is also used by externalId {other:?} ({origin}); the platform needs unique emails",
                        user.email
                    );
                    self.refuse(&record.origin, Some(f), message);
                    self.mark_unknown(record);
                    continue;
                }
            }
            email_owner.insert(email_key, (user.external_id.clone(), user.origin.clone()));
            self.add_user(user)?;
        }
        Ok(())
    }

    /// The externalIds of user records the source saw as disabled, under the
    /// live records' rules for an externalId (a value a live record could
    /// carry, in scope); a record the source found a problem with, or
    /// without a usable externalId, names nobody. Disabled records are never
    /// refused (they are not in the directory): an unusable one only leaves
    /// its delete, if any, saying "absent". An externalId with a live record
    /// too stays live. Runs after the live records.
    fn disabled_users(&mut self, records: &[SourceRecord]) {
        let key = &self.mapping.user.external_id;
        for record in records.iter().filter(|r| r.problem.is_none()) {
            let Some(x) = record.get(key) else {
                continue;
            };
            if rule::EXTERNAL_ID.problem(x).is_none()
                && self.policy.in_scope(Some(x))
                && !self.directory.users.contains_key(x)
            {
                self.directory.disabled_users.insert(x.to_owned());
            }
        }
    }

    /// What a refused user record was about is unknown this run. Without a
    /// usable externalId, who it was is unknown, and so who is absent:
    /// deletes are withheld.
    fn mark_unknown(&mut self, record: &SourceRecord) {
        let u = &self.mapping.user;
        let usable = |key: &str, rule: ValueRule| {
            record
                .get(key)
                .filter(|v| rule.problem(v).is_none())
                .map(str::to_owned)
        };
        let (x, email, customer) = (
            usable(&u.external_id, rule::EXTERNAL_ID),
            usable(&u.email, rule::EMAIL),
            usable(&u.customer, rule::EXTERNAL_ID),
        );
        let unknown = &mut self.directory.unknown;
        if let Some(e) = email {
            unknown.user_emails.insert(e.to_lowercase());
        }
        if let Some(c) = customer {
            unknown.customer_external_ids.insert(c);
        }
        match x {
            Some(x) => {
                unknown.user_external_ids.insert(x);
            }
            None => self
                .directory
                .withhold_deletes(&record.origin, NO_EXTERNAL_ID),
        }
    }

    fn user(
        &mut self,
        record: &SourceRecord,
        u: &crate::config::UserMapping,
        customers_from_users: bool,
    ) -> Result<DesiredUser, UserError> {
        if let Some(problem) = &record.problem {
            return Err(self.refuse(&record.origin, None, problem.clone()).into());
        }
        let [x, customer, email] = self.required(
            record,
            [
                ("externalId", &u.external_id),
                ("customer", &u.customer),
                ("email", &u.email),
            ],
        )?;
        self.check(record, "externalId", &u.external_id, x, rule::EXTERNAL_ID)?;
        self.check(record, "customer", &u.customer, customer, rule::EXTERNAL_ID)?;
        self.check(record, "email", &u.email, email, rule::EMAIL)?;
        self.external_id_in_scope(record, "externalId", &u.external_id, x)?;
        self.external_id_in_scope(record, "customer", &u.customer, customer)?;
        if !is_valid_email(email) {
            let f = self.field("email", &u.email);
            return Err(self
                .refuse(&record.origin, Some(f), format!("invalid email {email:?}"))
                .into());
        }
        let name = self.optional(record, "name", u.name.as_ref(), rule::NAME)?;
        let phone = self.optional(record, "phone", u.phone.as_ref(), rule::PHONE)?;
        let role = match &u.role {
            Some(key) => Some(self.role(record, key)?),
            None => None,
        };
        // Only a user that is not refused brings its customer along.
        if customers_from_users {
            let c = self.customer(record, customer)?;
            self.add_customer(c)?;
        } else if !self.directory.customers.contains_key(customer) {
            let message = if self
                .directory
                .unknown
                .customer_external_ids
                .contains(customer)
            {
                format!("customer {customer:?} was refused (see its record)")
            } else {
                format!("customer {customer:?} is not in the customers file")
            };
            let f = self.field("customer", &u.customer);
            return Err(self.refuse(&record.origin, Some(f), message).into());
        }
        Ok(DesiredUser {
            external_id: x.to_owned(),
            customer_external_id: customer.to_owned(),
            email: email.to_owned(),
            name,
            phone,
            role,
            origin: record.origin.clone(),
        })
    }

    /// The platform role for the record's role value; a value the role
    /// table does not hold is refused unless `mapping.roles.unmapped: default`.
    fn role(&mut self, record: &SourceRecord, key: &str) -> Result<String, Refused> {
        let value = record.get(key);
        if let Some(v) = value {
            self.check(record, "role", key, v, rule::ROLE)?;
        }
        let mapping = self.mapping;
        match mapping.role_for(value) {
            Some(role) => Ok(role.to_owned()),
            None => {
                let known: Vec<&str> = mapping.roles.map.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "it is empty".to_owned()
                } else {
                    format!("it holds {}", known.join(", "))
                };
                let f = self.field("role", key);
                Err(self.refuse(
                    &record.origin,
                    Some(f),
                    format!(
                        "role {:?} is not in mapping.roles.map ({known}); add it there, or set mapping.roles.unmapped: default to give such users {:?}",
                        value.unwrap_or_default(),
                        mapping.roles.default
                    ),
                ))
            }
        }
    }

    fn add_user(&mut self, user: DesiredUser) -> Result<(), SourceError> {
        match self.directory.users.entry(user.external_id.clone()) {
            Entry::Vacant(v) => {
                v.insert(user);
                Ok(())
            }
            Entry::Occupied(o) => {
                let first = o.get();
                let same = first.customer_external_id == user.customer_external_id
                    && first.email.eq_ignore_ascii_case(&user.email)
                    && first.name == user.name
                    && first.phone == user.phone
                    && first.role == user.role;
                if same {
                    Ok(())
                } else {
                    Err(SourceError::Conflict {
                        what: "user",
                        external_id: user.external_id.clone(),
                        first: first.origin.clone(),
                        second: user.origin,
                    })
                }
            }
        }
    }
}

/// A user record is refused, or the whole source is.
enum UserError {
    Refused,
    Source(SourceError),
}

impl From<Refused> for UserError {
    fn from(_: Refused) -> Self {
        UserError::Refused
    }
}

impl From<SourceError> for UserError {
    fn from(e: SourceError) -> Self {
        UserError::Source(e)
    }
}

/// Builds the directory from user records and, when the customers have a
/// file of their own, customer records. `disabled_user_records` are the user
/// records the source saw as disabled and left out of `user_records`: their
/// externalIds land in `Directory::disabled_users` (see there); they count
/// toward nothing else.
///
/// Refused records are kept in `Directory::refused` (their keys in
/// `Directory::unknown`) while they stay within the policy's cap; past it the
/// whole source is refused. The cap counts records, each once however many
/// problems it has. A refused record without a usable externalId withholds
/// deletes (`Directory::deletes_withheld`).
pub fn build_directory(
    customer_records: Option<&[SourceRecord]>,
    user_records: &[SourceRecord],
    disabled_user_records: &[SourceRecord],
    mapping: &Mapping,
    policy: &Policy,
    kind: KeyKind,
) -> Result<Directory, SourceError> {
    let mut b = Builder {
        mapping,
        policy,
        kind,
        directory: Directory::default(),
    };
    if let Some(records) = customer_records {
        b.customer_records(records)?;
    }
    b.user_records(user_records, customer_records.is_none())?;
    b.disabled_users(disabled_user_records);

    let total = user_records.len() + customer_records.map_or(0, <[_]>::len);
    let cap = policy
        .refused_records
        .max_count
        .max((total as f64 * policy.refused_records.max_percent / 100.0).floor() as usize);
    let refused = b
        .directory
        .refused
        .iter()
        .map(|r| &r.origin)
        .collect::<BTreeSet<_>>()
        .len();
    if refused > cap {
        return Err(SourceError::TooManyRefused {
            refused,
            total,
            cap,
            examples: b.directory.refused.iter().take(5).cloned().collect(),
        });
    }
    Ok(b.directory)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::config::tests::{parse, MINIMAL};
    use crate::config::Config;

    fn config(extra: &str) -> Config {
        let text = MINIMAL.replace(
            "    email: email\n",
            "    email: email\n    name: name\n    role: role\n",
        );
        parse(&format!("{text}{extra}")).unwrap()
    }

    const ROLES: &str = "  roles:\n    map: { admin: Admin, staff: Member }\n    default: Member\n";

    fn record(line: u64, values: &[(&str, &str)]) -> SourceRecord {
        SourceRecord {
            origin: Origin::Line {
                file: Path::new("users.csv").into(),
                line,
            },
            values: values
                .iter()
                .map(|(k, v)| (Arc::<str>::from(*k), (*v).to_owned()))
                .collect(),
            problem: None,
        }
    }

    fn user(line: u64, id: &str) -> SourceRecord {
        record(
            line,
            &[
                ("id", id),
                ("customer_id", "acme"),
                ("customer_name", "Acme"),
                ("email", &format!("{id}@acme.example")),
                ("name", "Some One"),
                ("role", "staff"),
            ],
        )
    }

    fn build(config: &Config, records: &[SourceRecord]) -> Result<Directory, SourceError> {
        build_directory(
            None,
            records,
            &[],
            &config.mapping,
            &config.policy,
            KeyKind("column"),
        )
    }

    fn refusals(d: &Directory) -> Vec<String> {
        d.refused.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_record_missing_three_fields_is_one_refusal_naming_all_three() {
        let c = config(&format!(
            "{ROLES}policy:\n  refused_records: {{ max_count: 1, max_percent: 0 }}\n"
        ));
        let d = build(&c, &[user(2, "u1"), record(3, &[("name", "Lost")])]).unwrap();
        assert_eq!(
            refusals(&d),
            ["users.csv:3: externalId (column id), customer (column customer_id), email (column email): missing required values"]
        );
        assert_eq!(d.users.len(), 1);
    }

    #[test]
    fn a_refused_record_without_an_external_id_withholds_deletes_and_one_with_one_does_not() {
        let c = config(ROLES);
        let mut empty = record(3, &[]);
        empty.problem = Some("every field of the row is empty".to_owned());
        let d = build(&c, &[user(2, "u1"), empty]).unwrap();
        assert_eq!(d.deletes_withheld.len(), 1);
        assert_eq!(
            d.deletes_withheld[0].to_string(),
            format!("users.csv:3: {NO_EXTERNAL_ID}")
        );

        let mut bad_email = user(3, "u2");
        bad_email.values.insert("email".into(), "nope".to_owned());
        let d = build(&c, &[user(2, "u1"), bad_email]).unwrap();
        assert!(d.deletes_withheld.is_empty());
        assert!(d.unknown.user_external_ids.contains("u2"));

        // An externalId that is itself refused (a NUL in it) is no externalId.
        let d = build(&c, &[user(2, "u1"), user(3, "u\0 2")]).unwrap();
        assert_eq!(d.deletes_withheld.len(), 1);
        assert!(d.unknown.user_external_ids.is_empty());
    }

    #[test]
    fn disabled_records_name_their_users_under_the_live_rules_and_a_live_record_wins() {
        let c = config(&format!("{ROLES}policy:\n  external_id_prefix: \"hr-\"\n"));
        let mut back = user(2, "hr-back");
        back.values
            .insert("customer_id".into(), "hr-acme".to_owned());
        let mut cut = user(7, "hr-cut");
        cut.problem = Some("the row may be cut short".to_owned());
        let mut no_id = user(8, "hr-none");
        no_id.values.remove("id");
        let disabled = [
            user(3, "hr-gone"),
            user(4, "hr-back"),
            user(5, "crm-other"),
            user(6, "hr-\0nul"),
            cut,
            no_id,
            // Disabled records are never refused: a bad email does not matter.
            record(9, &[("id", "hr-bare")]),
        ];
        let d = build_directory(
            None,
            &[back],
            &disabled,
            &c.mapping,
            &c.policy,
            KeyKind("column"),
        )
        .unwrap();
        assert_eq!(
            d.disabled_users.iter().collect::<Vec<_>>(),
            ["hr-bare", "hr-gone"],
            "hr-back has a live record; out of scope, unusable or cut: nobody"
        );
        assert!(d.users.contains_key("hr-back"));
        assert!(!d.users.contains_key("hr-gone"));
        assert!(d.refused.is_empty(), "{:?}", d.refused);
        assert!(d.unknown.user_external_ids.is_empty());
        assert!(!d.withholds_deletes());
    }

    #[test]
    fn an_unmapped_role_is_refused_unless_asked_for_and_an_absent_one_is_the_default() {
        let mut typo = user(3, "u2");
        typo.values.insert("role".into(), "Admn".to_owned());
        let mut absent = user(4, "u3");
        absent.values.remove("role");
        let records = [user(2, "u1"), typo, absent];

        let d = build(&config(ROLES), &records).unwrap();
        assert_eq!(
            refusals(&d),
            ["users.csv:3: role (column role): role \"Admn\" is not in mapping.roles.map (it holds admin, staff); add it there, or set mapping.roles.unmapped: default to give such users \"Member\""]
        );
        assert!(d.unknown.user_external_ids.contains("u2"));
        assert_eq!(d.users["u3"].role.as_deref(), Some("Member"));
        assert!(!d.users.contains_key("u2"));

        let d = build(
            &config(&format!("{ROLES}    unmapped: default\n")),
            &records,
        )
        .unwrap();
        assert!(d.refused.is_empty());
        assert_eq!(d.users["u2"].role.as_deref(), Some("Member"));
    }

    #[test]
    fn values_no_platform_field_should_hold_are_refused_by_record_for_every_source() {
        let mut nul = user(3, "u2");
        nul.values.insert("name".into(), "Ada\0Lovelace".to_owned());
        let mut huge = user(4, "u3");
        huge.values.insert("name".into(), "A".repeat(1 << 20));
        let mut tab = user(5, "u4");
        tab.values
            .insert("customer_name".into(), "Acme\tRockets".to_owned());
        let mut long_id = user(6, &"x".repeat(256));
        long_id
            .values
            .insert("email".into(), "x@acme.example".to_owned());
        let c = config(ROLES);
        let d = build(&c, &[user(2, "u1"), nul, huge, tab, long_id]).unwrap();
        assert_eq!(
            refusals(&d),
            [
                "users.csv:3: name (column name): contains NUL (U+0000) at character 4; control characters are refused",
                "users.csv:4: name (column name): is 1048576 characters long, over the limit of 255 for this field",
                "users.csv:5: customer name (column customer_name): contains a tab (U+0009) at character 5; control characters are refused",
                "users.csv:6: externalId (column id): is 256 characters long, over the limit of 255 for this field",
            ]
        );
        assert_eq!(d.users.len(), 1);
        assert_eq!(
            d.customers["acme"].name, "Acme",
            "the refused row's customer data is not used"
        );
        // The same rule for an HTTP or LDAP source: it is the mapping's.
        let mut http = user(0, "u5");
        http.origin = Origin::Record {
            url: "https://hr.example/users".to_owned(),
            index: 7,
        };
        http.values.insert("name".into(), "Eve\u{1b}[2J".to_owned());
        let d =
            build_directory(None, &[http], &[], &c.mapping, &c.policy, KeyKind("path")).unwrap();
        assert_eq!(
            refusals(&d),
            ["https://hr.example/users record 7: name (path name): contains a control character (U+001B) at character 4; control characters are refused"]
        );
    }
}
