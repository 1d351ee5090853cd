//! What each operation of a saved plan was computed from: the platform
//! record as read (its compared fields and `updatedAt`), a customer's
//! holdings, or that no record carried a create's externalId.
//!
//! The record types are the file's own (camelCase, stable), converted from
//! the `model` types; `verify` compares them with the records as re-read.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{CustomerHoldings, PlatformCustomer, PlatformId, PlatformUser, Role, Snapshot};
use crate::plan::{Operation, Plan};

/// A customer as read: the fields the planner compares, and `updatedAt`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerRecord {
    pub id: PlatformId,
    pub external_id: Option<String>,
    pub name: String,
    pub description: String,
    pub labels: Vec<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<&PlatformCustomer> for CustomerRecord {
    fn from(c: &PlatformCustomer) -> Self {
        CustomerRecord {
            id: c.id.clone(),
            external_id: c.external_id.clone(),
            name: c.name.clone(),
            description: c.description.clone(),
            labels: c.labels.clone(),
            updated_at: c.updated_at,
        }
    }
}

impl From<&CustomerRecord> for PlatformCustomer {
    fn from(c: &CustomerRecord) -> Self {
        PlatformCustomer {
            id: c.id.clone(),
            external_id: c.external_id.clone(),
            name: c.name.clone(),
            description: c.description.clone(),
            labels: c.labels.clone(),
            updated_at: c.updated_at,
        }
    }
}

/// A customer user as read: the fields the planner compares, where it
/// sits, and `updatedAt`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub id: PlatformId,
    pub external_id: Option<String>,
    pub email: String,
    pub name: String,
    pub phone: String,
    pub role: Role,
    pub customer_id: PlatformId,
    pub customer_external_id: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<&PlatformUser> for UserRecord {
    fn from(u: &PlatformUser) -> Self {
        UserRecord {
            id: u.id.clone(),
            external_id: u.external_id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            phone: u.phone.clone(),
            role: (*u.role).clone(),
            customer_id: u.customer_id.clone(),
            customer_external_id: u.customer_external_id.clone(),
            updated_at: u.updated_at,
        }
    }
}

/// The state of the platform one operation was computed from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "basis", rename_all = "camelCase")]
pub enum RecordState {
    /// A customer update, adoption or delete: the customer as read, and for
    /// a delete what it held (the delete takes all of it).
    #[serde(rename_all = "camelCase")]
    Customer {
        customer: CustomerRecord,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        holdings: Option<CustomerHoldings>,
    },
    /// A user update, adoption, delete or recreate: the user as read; for a
    /// recreate into a customer that already exists, that customer.
    #[serde(rename_all = "camelCase")]
    User {
        user: Box<UserRecord>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        customer: Option<CustomerRecord>,
    },
    /// A customer create: no customer carried the externalId.
    #[serde(rename_all = "camelCase")]
    NoCustomer { external_id: String },
    /// A user create: no customer user carried the externalId; `customer`
    /// is the customer it goes into when that exists already (None: the
    /// plan creates or adopts it).
    #[serde(rename_all = "camelCase")]
    NoUser {
        external_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        customer: Option<CustomerRecord>,
    },
}

impl RecordState {
    /// Whether this is the state `op` needs, naming the same record.
    pub fn fits(&self, op: &Operation) -> bool {
        match (op, self) {
            (Operation::CreateCustomer(c), RecordState::NoCustomer { external_id }) => {
                *external_id == c.external_id
            }
            (
                Operation::UpdateCustomer { id, .. } | Operation::AdoptCustomer { id, .. },
                RecordState::Customer {
                    customer,
                    holdings: None,
                },
            ) => customer.id == *id,
            (
                Operation::DeleteCustomer { id, .. },
                RecordState::Customer {
                    customer,
                    holdings: Some(_),
                },
            ) => customer.id == *id,
            (
                Operation::CreateUser(u),
                RecordState::NoUser {
                    external_id,
                    customer,
                },
            ) => {
                *external_id == u.external_id
                    && customer
                        .as_ref()
                        .is_none_or(|c| c.external_id.as_deref() == Some(&u.customer_external_id))
            }
            (
                Operation::UpdateUser { id, .. }
                | Operation::AdoptUser { id, .. }
                | Operation::DeleteUser { id, .. },
                RecordState::User {
                    user,
                    customer: None,
                },
            ) => user.id == *id,
            (
                Operation::RecreateUser { old_id, create, .. },
                RecordState::User { user, customer },
            ) => {
                user.id == *old_id
                    && customer.as_ref().is_none_or(|c| {
                        c.external_id.as_deref() == Some(&create.customer_external_id)
                    })
            }
            _ => false,
        }
    }
}

/// Every role id the operations send (creates, recreates, role changes).
pub fn role_ids(plan: &Plan) -> impl Iterator<Item = &PlatformId> {
    plan.operations.iter().filter_map(|op| match op {
        Operation::CreateUser(u) => Some(&u.role_id),
        Operation::RecreateUser { create, .. } => Some(&create.role_id),
        Operation::UpdateUser { patch, .. } | Operation::AdoptUser { patch, .. } => {
            patch.role_id.as_ref()
        }
        _ => None,
    })
}

/// The record states of `plan`'s operations (in order) and the roles they
/// name, from the snapshot the plan was computed from. Err names an
/// operation whose record the snapshot does not hold.
pub fn capture(plan: &Plan, snapshot: &Snapshot) -> Result<(Vec<RecordState>, Vec<Role>), String> {
    let customers: HashMap<&PlatformId, &PlatformCustomer> =
        snapshot.customers.iter().map(|c| (&c.id, c)).collect();
    let by_external_id: HashMap<&str, &PlatformCustomer> = snapshot
        .customers
        .iter()
        .filter_map(|c| Some((c.external_id.as_deref()?, c)))
        .collect();
    let users: HashMap<&PlatformId, &PlatformUser> =
        snapshot.users.iter().map(|u| (&u.id, u)).collect();
    let customer = |id: &PlatformId, op: &Operation| {
        customers
            .get(id)
            .map(|c| CustomerRecord::from(*c))
            .ok_or_else(|| missing(op, id))
    };
    let user = |id: &PlatformId, op: &Operation| {
        users
            .get(id)
            .map(|u| UserRecord::from(*u))
            .ok_or_else(|| missing(op, id))
    };
    let home = |x: &str| by_external_id.get(x).map(|c| CustomerRecord::from(*c));
    let mut states = Vec::with_capacity(plan.operations.len());
    for op in &plan.operations {
        states.push(match op {
            Operation::CreateCustomer(c) => RecordState::NoCustomer {
                external_id: c.external_id.clone(),
            },
            Operation::UpdateCustomer { id, .. } | Operation::AdoptCustomer { id, .. } => {
                RecordState::Customer {
                    customer: customer(id, op)?,
                    holdings: None,
                }
            }
            Operation::DeleteCustomer { id, .. } => RecordState::Customer {
                customer: customer(id, op)?,
                holdings: Some(
                    *snapshot
                        .holdings
                        .get(id)
                        .ok_or_else(|| format!("{}: what it holds was not read", describe(op)))?,
                ),
            },
            Operation::CreateUser(u) => RecordState::NoUser {
                external_id: u.external_id.clone(),
                customer: home(&u.customer_external_id),
            },
            Operation::UpdateUser { id, .. }
            | Operation::AdoptUser { id, .. }
            | Operation::DeleteUser { id, .. } => RecordState::User {
                user: Box::new(user(id, op)?),
                customer: None,
            },
            Operation::RecreateUser { old_id, create, .. } => RecordState::User {
                user: Box::new(user(old_id, op)?),
                customer: home(&create.customer_external_id),
            },
        });
    }
    let mut roles: Vec<Role> = Vec::new();
    for id in role_ids(plan) {
        if roles.iter().any(|r| &r.id == id) {
            continue;
        }
        let role =
            snapshot.roles.iter().find(|r| &r.id == id).ok_or_else(|| {
                format!("role id {id} is not among the platform's customer roles")
            })?;
        roles.push(role.clone());
    }
    Ok((states, roles))
}

fn describe(op: &Operation) -> String {
    format!("{} {} {}", op.action(), op.kind(), op.external_id())
}

fn missing(op: &Operation, id: &PlatformId) -> String {
    format!(
        "{}: record {id} is not in the platform's view it was planned from",
        describe(op)
    )
}
