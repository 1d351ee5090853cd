//! Whether a saved plan still holds: re-read exactly what its operations
//! would touch, then compare it with what the plan recorded.
//!
//! The two halves are apart so the comparison can be tested alone:
//! [`Reads::of`] says what to read, [`read`] reads it (bounded
//! concurrency), and [`compare`], pure, names every record that changed:
//! a field or `updatedAt` that differs, a record gone, a create's
//! externalId that now exists, a customer whose holdings differ, a role
//! gone or renamed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};

use super::records::{CustomerRecord, RecordState, UserRecord};
use super::SavedPlan;
use crate::model::{CustomerHoldings, PlatformId, Role};
use crate::platform::{PlatformClient, PlatformError};

/// What `apply` re-reads for a saved plan: each record by id, each create's
/// externalId, the holdings of each customer to delete, and the roles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    pub customers: BTreeSet<PlatformId>,
    pub users: BTreeSet<PlatformId>,
    pub holdings: BTreeSet<PlatformId>,
    pub customer_external_ids: BTreeSet<String>,
    pub user_external_ids: BTreeSet<String>,
}

impl Reads {
    /// Everything the record states of `saved` name, each once.
    pub fn of(saved: &SavedPlan) -> Reads {
        let mut reads = Reads::default();
        for state in &saved.records {
            match state {
                RecordState::Customer { customer, holdings } => {
                    reads.customers.insert(customer.id.clone());
                    if holdings.is_some() {
                        reads.holdings.insert(customer.id.clone());
                    }
                }
                RecordState::User { user, customer } => {
                    reads.users.insert(user.id.clone());
                    if let Some(c) = customer {
                        reads.customers.insert(c.id.clone());
                    }
                }
                RecordState::NoCustomer { external_id } => {
                    reads.customer_external_ids.insert(external_id.clone());
                }
                RecordState::NoUser {
                    external_id,
                    customer,
                } => {
                    reads.user_external_ids.insert(external_id.clone());
                    if let Some(c) = customer {
                        reads.customers.insert(c.id.clone());
                    }
                }
            }
        }
        reads
    }

    /// How many records (and externalIds) it names.
    pub fn count(&self) -> usize {
        self.customers.len()
            + self.users.len()
            + self.holdings.len()
            + self.customer_external_ids.len()
            + self.user_external_ids.len()
    }
}

/// The platform as re-read: a key present with None means "gone" (or, for
/// an externalId, "none carries it").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current {
    pub customers: BTreeMap<PlatformId, Option<CustomerRecord>>,
    pub users: BTreeMap<PlatformId, Option<UserRecord>>,
    pub holdings: BTreeMap<PlatformId, Option<CustomerHoldings>>,
    pub customer_external_ids: BTreeMap<String, Option<CustomerRecord>>,
    pub user_external_ids: BTreeMap<String, Option<UserRecord>>,
    pub roles: Vec<Role>,
}

/// One record that changed since the plan was made.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stale {
    /// `customer`, `user` or `role`.
    pub kind: &'static str,
    /// The externalId (a role's name), or `(none)`.
    pub name: String,
    pub id: Option<PlatformId>,
    /// What changed: `name "A" -> "B"`, `updatedAt X -> Y`, `gone`.
    pub changes: Vec<String>,
}

impl fmt::Display for Stale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)?;
        if let Some(id) = &self.id {
            write!(f, " (id {id})")?;
        }
        write!(f, ": {}", self.changes.join("; "))
    }
}

/// Every record of `saved` that `current` shows changed, in plan order
/// (each once), then the roles. Empty: the plan still holds.
pub fn compare(saved: &SavedPlan, current: &Current) -> Vec<Stale> {
    let mut out: Vec<Stale> = Vec::new();
    let mut push = |s: Option<Stale>| {
        if let Some(s) = s {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    };
    for state in &saved.records {
        match state {
            RecordState::Customer { customer, holdings } => {
                push(customer_changed(customer, current));
                if let Some(before) = holdings {
                    push(holdings_changed(customer, before, current));
                }
            }
            RecordState::User { user, customer } => {
                push(user_changed(user, current));
                if let Some(c) = customer {
                    push(customer_changed(c, current));
                }
            }
            RecordState::NoCustomer { external_id } => {
                push(match current.customer_external_ids.get(external_id) {
                    Some(None) => None,
                    Some(Some(now)) => Some(Stale {
                        kind: "customer",
                        name: external_id.clone(),
                        id: Some(now.id.clone()),
                        changes: vec![format!(
                            "a customer with this externalId now exists ({:?}), where the plan creates one",
                            now.name
                        )],
                    }),
                    None => Some(unread("customer", external_id, None)),
                });
            }
            RecordState::NoUser {
                external_id,
                customer,
            } => {
                push(match current.user_external_ids.get(external_id) {
                    Some(None) => None,
                    Some(Some(now)) => Some(Stale {
                        kind: "user",
                        name: external_id.clone(),
                        id: Some(now.id.clone()),
                        changes: vec![format!(
                            "a user with this externalId now exists ({}), where the plan creates one",
                            now.email
                        )],
                    }),
                    None => Some(unread("user", external_id, None)),
                });
                if let Some(c) = customer {
                    push(customer_changed(c, current));
                }
            }
        }
    }
    for role in &saved.roles {
        let changes = match current.roles.iter().find(|r| r.id == role.id) {
            None => vec!["gone from the platform's customer roles".to_owned()],
            Some(now) if now.name != role.name => vec![text_change("name", &role.name, &now.name)],
            Some(_) => continue,
        };
        push(Some(Stale {
            kind: "role",
            name: role.name.clone(),
            id: Some(role.id.clone()),
            changes,
        }));
    }
    out
}

fn unread(kind: &'static str, name: &str, id: Option<&PlatformId>) -> Stale {
    Stale {
        kind,
        name: name.to_owned(),
        id: id.cloned(),
        changes: vec!["not re-read".to_owned()],
    }
}

fn external_id_of(x: &Option<String>) -> String {
    x.clone().unwrap_or_else(|| "(no externalId)".to_owned())
}

fn customer_changed(before: &CustomerRecord, current: &Current) -> Option<Stale> {
    let name = external_id_of(&before.external_id);
    let changes = match current.customers.get(&before.id) {
        None => return Some(unread("customer", &name, Some(&before.id))),
        Some(None) => vec!["gone from the platform".to_owned()],
        Some(Some(now)) => {
            let mut c = Vec::new();
            option_change(&mut c, "externalId", &before.external_id, &now.external_id);
            if before.name != now.name {
                c.push(text_change("name", &before.name, &now.name));
            }
            if before.description != now.description {
                c.push(text_change(
                    "description",
                    &before.description,
                    &now.description,
                ));
            }
            if before.labels != now.labels {
                c.push(format!("labels {:?} -> {:?}", before.labels, now.labels));
            }
            time_change(&mut c, before.updated_at, now.updated_at);
            c
        }
    };
    (!changes.is_empty()).then(|| Stale {
        kind: "customer",
        name,
        id: Some(before.id.clone()),
        changes,
    })
}

fn holdings_changed(
    customer: &CustomerRecord,
    before: &CustomerHoldings,
    current: &Current,
) -> Option<Stale> {
    let name = external_id_of(&customer.external_id);
    let changes = match current.holdings.get(&customer.id) {
        None => return Some(unread("customer", &name, Some(&customer.id))),
        // Gone: said once, by the customer itself.
        Some(None) if matches!(current.customers.get(&customer.id), Some(None)) => return None,
        Some(None) => vec!["what it holds could not be read".to_owned()],
        Some(Some(now)) => {
            let mut c = Vec::new();
            if before.users != now.users {
                c.push(format!("users it holds {} -> {}", before.users, now.users));
            }
            if before.instances != now.instances {
                c.push(format!(
                    "instances it holds {} -> {}",
                    before.instances, now.instances
                ));
            }
            c
        }
    };
    (!changes.is_empty()).then(|| Stale {
        kind: "customer",
        name,
        id: Some(customer.id.clone()),
        changes,
    })
}

fn user_changed(before: &UserRecord, current: &Current) -> Option<Stale> {
    let name = external_id_of(&before.external_id);
    let changes = match current.users.get(&before.id) {
        None => return Some(unread("user", &name, Some(&before.id))),
        Some(None) => vec!["gone from the platform".to_owned()],
        Some(Some(now)) => {
            let mut c = Vec::new();
            option_change(&mut c, "externalId", &before.external_id, &now.external_id);
            for (field, b, n) in [
                ("email", &before.email, &now.email),
                ("name", &before.name, &now.name),
                ("phone", &before.phone, &now.phone),
            ] {
                if b != n {
                    c.push(text_change(field, b, n));
                }
            }
            if before.role != now.role {
                c.push(format!(
                    "role {:?} ({}) -> {:?} ({})",
                    before.role.name, before.role.id, now.role.name, now.role.id
                ));
            }
            if before.customer_id != now.customer_id
                || before.customer_external_id != now.customer_external_id
            {
                c.push(format!(
                    "customer {} ({}) -> {} ({})",
                    external_id_of(&before.customer_external_id),
                    before.customer_id,
                    external_id_of(&now.customer_external_id),
                    now.customer_id
                ));
            }
            time_change(&mut c, before.updated_at, now.updated_at);
            c
        }
    };
    (!changes.is_empty()).then(|| Stale {
        kind: "user",
        name,
        id: Some(before.id.clone()),
        changes,
    })
}

fn text_change(field: &str, before: &str, now: &str) -> String {
    format!("{field} {before:?} -> {now:?}")
}

fn option_change(
    out: &mut Vec<String>,
    field: &str,
    before: &Option<String>,
    now: &Option<String>,
) {
    if before != now {
        let show = |x: &Option<String>| {
            x.as_ref()
                .map_or_else(|| "none".to_owned(), |x| format!("{x:?}"))
        };
        out.push(format!("{field} {} -> {}", show(before), show(now)));
    }
}

fn time_change(out: &mut Vec<String>, before: Option<DateTime<Utc>>, now: Option<DateTime<Utc>>) {
    if before != now {
        let show = |t: Option<DateTime<Utc>>| {
            t.map_or_else(
                || "none".to_owned(),
                |t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            )
        };
        out.push(format!("updatedAt {} -> {}", show(before), show(now)));
    }
}

/// One request of [`read`].
enum Ask {
    Customer(PlatformId),
    User(PlatformId),
    Holdings(PlatformId),
    CustomerExternalId(String),
    UserExternalId(String),
    Roles,
}

enum Answer {
    Customer(PlatformId, Option<CustomerRecord>),
    User(PlatformId, Option<UserRecord>),
    Holdings(PlatformId, Option<CustomerHoldings>),
    CustomerExternalId(String, Option<CustomerRecord>),
    UserExternalId(String, Option<UserRecord>),
    Roles(Vec<Role>),
}

async fn ask(client: &PlatformClient, ask: Ask) -> Result<Answer, PlatformError> {
    Ok(match ask {
        Ask::Customer(id) => {
            let now = client.get_customer(&id).await?;
            Answer::Customer(id, now.as_ref().map(CustomerRecord::from))
        }
        Ask::User(id) => {
            let now = client.get_user(&id).await?;
            Answer::User(id, now.as_ref().map(UserRecord::from))
        }
        Ask::Holdings(id) => {
            let mut held = client.customer_holdings(std::slice::from_ref(&id)).await?;
            let now = held.remove(&id);
            Answer::Holdings(id, now)
        }
        Ask::CustomerExternalId(x) => {
            let now = client.find_customer(&x).await?;
            Answer::CustomerExternalId(x, now.as_ref().map(CustomerRecord::from))
        }
        Ask::UserExternalId(x) => {
            let now = client.find_customer_user(&x).await?;
            Answer::UserExternalId(x, now.as_ref().map(UserRecord::from))
        }
        Ask::Roles => Answer::Roles(client.customer_roles().await?),
    })
}

/// Reads what `reads` names, `concurrency` requests at a time (the
/// client's own cap and rate limit still apply). The first error ends it.
pub async fn read(
    client: &PlatformClient,
    reads: &Reads,
    concurrency: usize,
) -> Result<Current, PlatformError> {
    let asks: Vec<Ask> = std::iter::once(Ask::Roles)
        .chain(reads.customers.iter().cloned().map(Ask::Customer))
        .chain(reads.users.iter().cloned().map(Ask::User))
        .chain(reads.holdings.iter().cloned().map(Ask::Holdings))
        .chain(
            reads
                .customer_external_ids
                .iter()
                .cloned()
                .map(Ask::CustomerExternalId),
        )
        .chain(
            reads
                .user_external_ids
                .iter()
                .cloned()
                .map(Ask::UserExternalId),
        )
        .collect();
    let pending: Vec<_> = asks.into_iter().map(|a| ask(client, a)).collect();
    let answers: Vec<Answer> = stream::iter(pending)
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let mut current = Current::default();
    for answer in answers {
        match answer {
            Answer::Customer(id, c) => {
                current.customers.insert(id, c);
            }
            Answer::User(id, u) => {
                current.users.insert(id, u);
            }
            Answer::Holdings(id, h) => {
                current.holdings.insert(id, h);
            }
            Answer::CustomerExternalId(x, c) => {
                current.customer_external_ids.insert(x, c);
            }
            Answer::UserExternalId(x, u) => {
                current.user_external_ids.insert(x, u);
            }
            Answer::Roles(roles) => current.roles = roles,
        }
    }
    Ok(current)
}
