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
    RefusedRecord, SourceRecord,
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

    fn refuse(&mut self, origin: &Origin, field: Option<String>, message: impl Into<String>) {
        self.directory.refused.push(RefusedRecord {
            origin: origin.clone(),
            field,
            message: message.into(),
        });
    }

    fn required<'r>(
        &mut self,
        record: &'r SourceRecord,
        field: &str,
        key: &str,
    ) -> Result<&'r str, ()> {
        match record.get(key) {
            Some(v) => Ok(v),
            None => {
                let f = self.field(field, key);
                self.refuse(&record.origin, Some(f), "missing required value");
                Err(())
            }
        }
    }

    fn external_id_in_scope(
        &mut self,
        record: &SourceRecord,
        field: &str,
        key: &str,
        value: &str,
    ) -> bool {
        if self.policy.in_scope(Some(value)) {
            return true;
        }
        let f = self.field(field, key);
        let prefix = self.policy.external_id_prefix.clone().unwrap_or_default();
        self.refuse(
            &record.origin,
            Some(f),
            format!("externalId {value:?} does not start with the managed prefix {prefix:?}"),
        );
        false
    }

    /// A customer from a record (its own, or a user record's customer columns).
    fn customer(
        &mut self,
        record: &SourceRecord,
        external_id: &str,
    ) -> Result<DesiredCustomer, ()> {
        let mapping = self.mapping;
        let c = &mapping.customer;
        let name = self.required(record, "customer name", &c.name)?.to_owned();
        let labels = c.manages_labels().then(|| {
            let mut values: Vec<&str> = c.static_labels.iter().map(String::as_str).collect();
            for key in &c.labels {
                if let Some(v) = record.get(key) {
                    match &c.label_separator {
                        Some(sep) => values.extend(v.split(sep.as_str())),
                        None => values.push(v),
                    }
                }
            }
            normalise_labels(values)
        });
        Ok(DesiredCustomer {
            external_id: external_id.to_owned(),
            name,
            description: c
                .description
                .as_ref()
                .map(|key| record.get(key).unwrap_or_default().to_owned()),
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
            let Ok(x) = self.required(record, "customer externalId", &key) else {
                continue;
            };
            let x = x.to_owned();
            if !self.external_id_in_scope(record, "customer externalId", &key, &x) {
                continue;
            }
            match self.customer(record, &x) {
                Ok(customer) => self.add_customer(customer)?,
                Err(()) => {
                    self.directory.unknown.customer_external_ids.insert(x);
                }
            }
        }
        Ok(())
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
            let user = self.user(record, u, customers_from_users)?;
            match user {
                Some(user) => {
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
                None => self.mark_unknown(record),
            }
        }
        Ok(())
    }

    /// What a refused user record was about is unknown this run.
    fn mark_unknown(&mut self, record: &SourceRecord) {
        let u = &self.mapping.user;
        let unknown = &mut self.directory.unknown;
        if let Some(x) = record.get(&u.external_id) {
            unknown.user_external_ids.insert(x.to_owned());
        }
        if let Some(e) = record.get(&u.email) {
            unknown.user_emails.insert(e.to_lowercase());
        }
        if let Some(c) = record.get(&u.customer) {
            unknown.customer_external_ids.insert(c.to_owned());
        }
    }

    fn user(
        &mut self,
        record: &SourceRecord,
        u: &crate::config::UserMapping,
        customers_from_users: bool,
    ) -> Result<Option<DesiredUser>, SourceError> {
        if let Some(problem) = &record.problem {
            self.refuse(&record.origin, None, problem.clone());
            return Ok(None);
        }
        let (Ok(x), Ok(customer), Ok(email)) = (
            self.required(record, "externalId", &u.external_id),
            self.required(record, "customer", &u.customer),
            self.required(record, "email", &u.email),
        ) else {
            return Ok(None);
        };
        let (x, customer, email) = (x.to_owned(), customer.to_owned(), email.to_owned());
        if !self.external_id_in_scope(record, "externalId", &u.external_id, &x)
            || !self.external_id_in_scope(record, "customer", &u.customer, &customer)
        {
            return Ok(None);
        }
        if !is_valid_email(&email) {
            let f = self.field("email", &u.email);
            self.refuse(&record.origin, Some(f), format!("invalid email {email:?}"));
            return Ok(None);
        }
        if customers_from_users {
            match self.customer(record, &customer) {
                Ok(c) => self.add_customer(c)?,
                Err(()) => return Ok(None),
            }
        } else if !self.directory.customers.contains_key(&customer) {
            let message = if self
                .directory
                .unknown
                .customer_external_ids
                .contains(&customer)
            {
                format!("customer {customer:?} was refused (see its record)")
            } else {
                format!("customer {customer:?} is not in the customers file")
            };
            let f = self.field("customer", &u.customer);
            self.refuse(&record.origin, Some(f), message);
            return Ok(None);
        }
        let value = |key: &Option<String>| {
            key.as_ref()
                .map(|k| record.get(k).and_then(clean).unwrap_or_default())
        };
        Ok(Some(DesiredUser {
            external_id: x,
            customer_external_id: customer,
            email,
            name: value(&u.name),
            phone: value(&u.phone),
            role: u
                .role
                .as_ref()
                .map(|k| self.mapping.roles.resolve(record.get(k)).to_owned()),
            origin: record.origin.clone(),
        }))
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

/// Builds the directory from user records and, when the customers have a
/// file of their own, customer records.
///
/// Refused records are kept in `Directory::refused` (their keys in
/// `Directory::unknown`) while they stay within the policy's cap; past it the
/// whole source is refused.
pub fn build_directory(
    customer_records: Option<&[SourceRecord]>,
    user_records: &[SourceRecord],
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

    let total = user_records.len() + customer_records.map_or(0, <[_]>::len);
    let cap = policy
        .refused_records
        .max_count
        .max((total as f64 * policy.refused_records.max_percent / 100.0).floor() as usize);
    let refused = b.directory.refused.len();
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
