//! The plan: the operations that turn the snapshot into the directory.
//!
//! [`plan`] is a pure function (no I/O, no clock, no randomness): the same
//! directory, snapshot and policy give the same plan, byte for byte. It only
//! ever touches managed records (an externalId in scope); everything else in
//! the snapshot is read for context and left alone.
//!
//! This file holds the plan's types and [`plan`] itself, which runs the
//! planner's steps in order: ambiguous externalIds, customers, users,
//! customer deletes, user deletes, then the final sort. Customers come
//! before users because each user needs its customer resolved (its platform
//! id, or blocked by a conflict); the deletes come after both because the
//! matching steps take each match out of the indexes, leaving exactly what
//! the directory no longer holds; customer deletes come before user deletes
//! because a customer's delete takes its users with it. `planner` (one
//! module per concern) explains each step.
//!
//! `render` turns a plan into text for people and JSON for programs.

mod planner;
pub mod render;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{ChangePolicy, Policy, RoleTable};
use crate::directory::{Directory, RefusedRecord};
use crate::model::{CustomerChanges, PlatformId, Role, Snapshot, UserChanges};
use planner::Planner;

/// One field's change: `before -> after`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: Cow<'static, str>,
    pub before: String,
    pub after: String,
}

/// A customer to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerCreate {
    pub external_id: String,
    pub name: String,
    pub description: Option<String>,
    pub labels: Option<Vec<String>>,
}

/// A customer user to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserCreate {
    pub external_id: String,
    pub customer_external_id: String,
    pub email: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub role: String,
    pub role_id: PlatformId,
}

/// Why a managed record is to be deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeleteReason {
    /// The directory no longer holds it.
    #[default]
    Absent,
    /// The directory holds it as disabled (a disabled account, a row that
    /// `absent_when` matched, an inactive SCIM user).
    Disabled,
}

impl DeleteReason {
    /// The words the plan shows.
    pub fn describe(self) -> &'static str {
        match self {
            DeleteReason::Absent => "absent from the directory",
            DeleteReason::Disabled => "disabled in the directory",
        }
    }
}

/// One mutation-to-be (or, for `RecreateUser`, two, in order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Operation {
    #[serde(rename_all = "camelCase")]
    CreateCustomer(CustomerCreate),
    #[serde(rename_all = "camelCase")]
    UpdateCustomer {
        id: PlatformId,
        external_id: String,
        changes: Vec<FieldChange>,
        /// Exactly what `updateCustomer` is sent.
        patch: CustomerChanges,
    },
    /// Sets the externalId on a customer that had none (same name), plus any other changes.
    #[serde(rename_all = "camelCase")]
    AdoptCustomer {
        id: PlatformId,
        external_id: String,
        name: String,
        changes: Vec<FieldChange>,
        patch: CustomerChanges,
    },
    #[serde(rename_all = "camelCase")]
    CreateUser(UserCreate),
    #[serde(rename_all = "camelCase")]
    UpdateUser {
        id: PlatformId,
        external_id: String,
        email: String,
        /// The customer it sits in (for the plan's grouping).
        #[serde(default)]
        customer_external_id: Option<String>,
        changes: Vec<FieldChange>,
        /// Exactly what `updateUser` is sent.
        patch: UserChanges,
    },
    /// Sets the externalId on a customer user that had none (same email, same customer).
    #[serde(rename_all = "camelCase")]
    AdoptUser {
        id: PlatformId,
        external_id: String,
        email: String,
        #[serde(default)]
        customer_external_id: Option<String>,
        changes: Vec<FieldChange>,
        patch: UserChanges,
    },
    /// Deletes the user, then creates it again: the platform cannot change
    /// an email or a customer. The new user gets a new id and a new
    /// confirmation email.
    #[serde(rename_all = "camelCase")]
    RecreateUser {
        old_id: PlatformId,
        reason: String,
        create: UserCreate,
    },
    #[serde(rename_all = "camelCase")]
    DeleteUser {
        id: PlatformId,
        external_id: String,
        email: String,
        customer_external_id: Option<String>,
        #[serde(default)]
        why: DeleteReason,
    },
    /// Permanent: the platform also deletes the customer's users and instances.
    #[serde(rename_all = "camelCase")]
    DeleteCustomer {
        id: PlatformId,
        external_id: String,
        name: String,
        /// Every user it holds, embedded marketplace users included (all
        /// managed and leaving, or it is kept); they count in the user delete budget.
        users: usize,
        /// Its deployed integration instances, which the delete takes too.
        instances: u64,
        #[serde(default)]
        why: DeleteReason,
    },
}

/// The order operations are applied in: customers first (so users have
/// somewhere to go), user deletes before customer deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    Customers,
    Users,
    DeleteUsers,
    DeleteCustomers,
}

impl Operation {
    pub fn phase(&self) -> Phase {
        match self {
            Operation::CreateCustomer(_)
            | Operation::UpdateCustomer { .. }
            | Operation::AdoptCustomer { .. } => Phase::Customers,
            Operation::CreateUser(_)
            | Operation::UpdateUser { .. }
            | Operation::AdoptUser { .. }
            | Operation::RecreateUser { .. } => Phase::Users,
            Operation::DeleteUser { .. } => Phase::DeleteUsers,
            Operation::DeleteCustomer { .. } => Phase::DeleteCustomers,
        }
    }

    /// The externalId the operation is about.
    pub fn external_id(&self) -> &str {
        match self {
            Operation::CreateCustomer(c) => &c.external_id,
            Operation::CreateUser(u) => &u.external_id,
            Operation::RecreateUser { create, .. } => &create.external_id,
            Operation::UpdateCustomer { external_id, .. }
            | Operation::AdoptCustomer { external_id, .. }
            | Operation::UpdateUser { external_id, .. }
            | Operation::AdoptUser { external_id, .. }
            | Operation::DeleteUser { external_id, .. }
            | Operation::DeleteCustomer { external_id, .. } => external_id,
        }
    }

    /// `create`, `update`, `adopt`, `recreate` or `delete`.
    pub fn action(&self) -> &'static str {
        match self {
            Operation::CreateCustomer(_) | Operation::CreateUser(_) => "create",
            Operation::UpdateCustomer { .. } | Operation::UpdateUser { .. } => "update",
            Operation::AdoptCustomer { .. } | Operation::AdoptUser { .. } => "adopt",
            Operation::RecreateUser { .. } => "recreate",
            Operation::DeleteUser { .. } | Operation::DeleteCustomer { .. } => "delete",
        }
    }

    /// `customer` or `user`.
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::CreateCustomer(_)
            | Operation::UpdateCustomer { .. }
            | Operation::AdoptCustomer { .. }
            | Operation::DeleteCustomer { .. } => "customer",
            _ => "user",
        }
    }
}

/// A difference the platform cannot update in place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    pub external_id: String,
    pub what: DriftKind,
    pub before: String,
    pub after: String,
    pub resolution: ChangePolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DriftKind {
    EmailChanged,
    MovedCustomer,
}

/// A managed record left alone that a plain diff would have changed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kept {
    #[serde(deserialize_with = "record_kind")]
    pub kind: RecordKind,
    pub external_id: String,
    pub reason: String,
}

/// An operation that cannot be sent as planned, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    #[serde(deserialize_with = "record_kind")]
    pub kind: RecordKind,
    pub external_id: String,
    pub reason: String,
}

/// What a [`Kept`] or [`Conflict`] is about: `customer` or `user`. An alias
/// (not `&'static str` written out) so that serde's derive does not borrow
/// it from the input: [`record_kind`] reads it back.
pub type RecordKind = &'static str;

/// Reads a [`Kept`] or [`Conflict`] kind back (a saved plan): the planner
/// only ever writes `customer` or `user`.
fn record_kind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RecordKind, D::Error> {
    let kind = String::deserialize(d)?;
    match kind.as_str() {
        "customer" => Ok("customer"),
        "user" => Ok("user"),
        other => Err(serde::de::Error::invalid_value(
            serde::de::Unexpected::Str(other),
            &"customer or user",
        )),
    }
}

/// Sizes the guards need: how much dirsync manages and how much the directory holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    pub managed_customers: usize,
    pub managed_users: usize,
    pub directory_customers: usize,
    pub directory_users: usize,
}

/// Everything `plan` decided. Operations are in apply order (phase, then
/// kind, then externalId), so the plan is stable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub operations: Vec<Operation>,
    pub drift: Vec<Drift>,
    pub kept: Vec<Kept>,
    pub conflicts: Vec<Conflict>,
    pub refused: Vec<RefusedRecord>,
    pub scope: Scope,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// Users deleted by this plan, including the users of deleted customers
    /// and recreated users (each recreate starts with a delete).
    pub fn user_deletes(&self) -> usize {
        self.operations
            .iter()
            .map(|op| match op {
                Operation::DeleteUser { .. } | Operation::RecreateUser { .. } => 1,
                Operation::DeleteCustomer { users, .. } => *users,
                _ => 0,
            })
            .sum()
    }

    pub fn customer_deletes(&self) -> usize {
        self.operations
            .iter()
            .filter(|op| matches!(op, Operation::DeleteCustomer { .. }))
            .count()
    }

    /// Counts by `kind` and `action` (`customer`/`create` -> 3).
    pub fn counts(&self) -> BTreeMap<(&'static str, &'static str), usize> {
        let mut counts = BTreeMap::new();
        for op in &self.operations {
            *counts.entry((op.kind(), op.action())).or_insert(0) += 1;
        }
        counts
    }
}

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("mapping.roles: role {role:?} does not exist on the platform (customer roles there: {})", available.join(", "))]
    UnknownRole {
        role: String,
        available: Vec<String>,
    },
}

/// Checks that every role name the role table can produce exists on the
/// platform, before anything is planned.
pub fn check_roles(table: &RoleTable, roles: &[Role]) -> Result<(), PlanError> {
    for name in table.role_names() {
        if !roles.iter().any(|r| r.name == name) {
            return Err(PlanError::UnknownRole {
                role: name.to_owned(),
                available: roles.iter().map(|r| r.name.clone()).collect(),
            });
        }
    }
    Ok(())
}

/// The customers a plan may delete (managed, and no longer in the
/// directory) when customer deletes are on: what each of them holds must be
/// read into [`Snapshot::holdings`] before planning, or none is deleted.
pub fn customers_to_inspect(
    directory: &Directory,
    snapshot: &Snapshot,
    policy: &Policy,
) -> Vec<PlatformId> {
    if policy.delete_customers.is_none() {
        return Vec::new();
    }
    snapshot
        .customers
        .iter()
        .filter(|c| {
            c.external_id
                .as_deref()
                .is_some_and(|x| policy.in_scope(Some(x)) && !directory.customers.contains_key(x))
        })
        .map(|c| c.id.clone())
        .collect()
}

/// Computes the plan. Pure: same inputs, same plan.
///
/// Fails only when the role table names a role the platform does not have.
/// The steps, and why they run in this order, are described in `planner`.
pub fn plan(
    directory: &Directory,
    snapshot: &Snapshot,
    policy: &Policy,
    roles: &RoleTable,
) -> Result<Plan, PlanError> {
    check_roles(roles, &snapshot.roles)?;
    let mut planner = Planner::new(directory, snapshot, policy, roles);
    planner.ambiguous_ids();
    planner.customers();
    planner.users();
    planner.customer_deletes();
    planner.user_deletes();
    Ok(planner.finish())
}
