//! The plan: the operations that turn the snapshot into the directory.
//!
//! [`plan`] is a pure function (no I/O, no clock, no randomness): the same
//! directory, snapshot and policy give the same plan, byte for byte. It only
//! ever touches managed records (an externalId in scope); everything else in
//! the snapshot is read for context and left alone.
//!
//! `render` turns a plan into text for people and JSON for programs.

pub mod render;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use serde::Serialize;

use crate::config::{ChangePolicy, Policy, RoleTable};
use crate::directory::{
    same_email, same_text, DesiredCustomer, DesiredUser, Directory, RefusedRecord,
};
use crate::model::{
    CustomerChanges, PlatformCustomer, PlatformId, PlatformUser, Role, Snapshot, UserChanges,
};

/// One field's change: `before -> after`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    pub before: String,
    pub after: String,
}

/// A customer to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerCreate {
    pub external_id: String,
    pub name: String,
    pub description: Option<String>,
    pub labels: Option<Vec<String>>,
}

/// A customer user to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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

/// One mutation-to-be (or, for `RecreateUser`, two, in order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
    },
    /// Permanent: the platform also deletes the customer's users and instances.
    #[serde(rename_all = "camelCase")]
    DeleteCustomer {
        id: PlatformId,
        external_id: String,
        name: String,
        /// Customer users it holds (all managed and leaving); they count in the user delete budget.
        users: usize,
    },
}

/// The order operations are applied in: customers first (so users have
/// somewhere to go), user deletes before customer deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    pub external_id: String,
    pub what: DriftKind,
    pub before: String,
    pub after: String,
    pub resolution: ChangePolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DriftKind {
    EmailChanged,
    MovedCustomer,
}

/// A managed record left alone that a plain diff would have changed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Kept {
    pub kind: &'static str,
    pub external_id: String,
    pub reason: String,
}

/// An operation that cannot be sent as planned, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    pub kind: &'static str,
    pub external_id: String,
    pub reason: String,
}

/// Sizes the guards need: how much dirsync manages and how much the directory holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    pub managed_customers: usize,
    pub managed_users: usize,
    pub directory_customers: usize,
    pub directory_users: usize,
}

/// Everything `plan` decided. Operations are in apply order (phase, then
/// kind, then externalId), so the plan is stable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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

fn change(field: &'static str, before: &str, after: &str) -> FieldChange {
    FieldChange {
        field,
        before: before.to_owned(),
        after: after.to_owned(),
    }
}

fn labels_text(labels: &BTreeSet<String>) -> String {
    labels.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Field changes that turn `actual` into `desired` (only mapped fields),
/// for display and as the patch to send.
fn customer_changes(
    desired: &DesiredCustomer,
    actual: &PlatformCustomer,
) -> (Vec<FieldChange>, CustomerChanges) {
    let mut changes = Vec::new();
    let mut patch = CustomerChanges::default();
    if !same_text(&desired.name, &actual.name) {
        changes.push(change("name", &actual.name, &desired.name));
        patch.name = Some(desired.name.clone());
    }
    if let Some(d) = &desired.description {
        if !same_text(d, &actual.description) {
            changes.push(change("description", &actual.description, d));
            patch.description = Some(d.clone());
        }
    }
    if let Some(want) = &desired.labels {
        let have = crate::directory::normalise_labels(actual.labels.iter().map(String::as_str));
        if *want != have {
            changes.push(change("labels", &labels_text(&have), &labels_text(want)));
            patch.labels = Some(want.iter().cloned().collect());
        }
    }
    (changes, patch)
}

fn user_changes(
    desired: &DesiredUser,
    actual: &PlatformUser,
    role_ids: &BTreeMap<&str, &PlatformId>,
) -> (Vec<FieldChange>, UserChanges) {
    let mut changes = Vec::new();
    let mut patch = UserChanges::default();
    if let Some(name) = &desired.name {
        if !same_text(name, &actual.name) {
            changes.push(change("name", &actual.name, name));
            patch.name = Some(name.clone());
        }
    }
    if let Some(phone) = &desired.phone {
        if !same_text(phone, &actual.phone) {
            changes.push(change("phone", &actual.phone, phone));
            patch.phone = Some(phone.clone());
        }
    }
    if let Some(role) = &desired.role {
        if *role != actual.role.name {
            changes.push(change("role", &actual.role.name, role));
            patch.role_id = role_ids.get(role.as_str()).map(|id| (*id).clone());
        }
    }
    (changes, patch)
}

fn customer_create(d: &DesiredCustomer) -> CustomerCreate {
    CustomerCreate {
        external_id: d.external_id.clone(),
        name: d.name.clone(),
        description: d.description.clone(),
        labels: d.labels.as_ref().map(|l| l.iter().cloned().collect()),
    }
}

fn user_create(
    d: &DesiredUser,
    roles: &RoleTable,
    role_ids: &BTreeMap<&str, &PlatformId>,
) -> UserCreate {
    let role = d.role.clone().unwrap_or_else(|| roles.default.clone());
    UserCreate {
        external_id: d.external_id.clone(),
        customer_external_id: d.customer_external_id.clone(),
        email: d.email.clone(),
        name: d.name.clone(),
        phone: d.phone.clone(),
        role_id: role_ids
            .get(role.as_str())
            .map(|id| (*id).clone())
            .unwrap_or_else(|| PlatformId(String::new())),
        role,
    }
}

/// An email as a map key: compared and hashed trimmed and ASCII
/// case-insensitively, the way `same_email` compares, without allocating.
#[derive(Clone, Copy)]
struct Caseless<'a>(&'a str);

impl PartialEq for Caseless<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.trim().eq_ignore_ascii_case(other.0.trim())
    }
}

impl Eq for Caseless<'_> {}

impl Hash for Caseless<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Lowercased a chunk at a time: one hasher call per 64 bytes.
        let mut buf = [0u8; 64];
        for chunk in self.0.trim().as_bytes().chunks(buf.len()) {
            let out = &mut buf[..chunk.len()];
            out.copy_from_slice(chunk);
            out.make_ascii_lowercase();
            state.write(out);
        }
        state.write_u8(0xff);
    }
}

/// Hash maps for the large per-run indexes: foldhash (fast, randomly seeded).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

fn fast_map<K, V>(capacity: usize) -> FastMap<K, V> {
    HashMap::with_capacity_and_hasher(capacity, foldhash::fast::RandomState::default())
}

/// Groups platform records by managed externalId; an externalId carried by
/// more than one record is ambiguous and set aside. Hash maps: the plan's
/// order comes from the final sort, never from these indexes.
fn index_managed<'a, T>(
    records: &'a [T],
    external_id: impl Fn(&T) -> Option<&str>,
    policy: &Policy,
) -> (FastMap<&'a str, &'a T>, BTreeSet<&'a str>)
where
    T: 'a,
{
    let mut by_id: FastMap<&str, &T> = fast_map(records.len());
    let mut ambiguous = BTreeSet::new();
    for r in records {
        let Some(x) = external_id(r).filter(|x| policy.in_scope(Some(x))) else {
            continue;
        };
        if by_id.insert(x, r).is_some() {
            ambiguous.insert(x);
        }
    }
    for x in &ambiguous {
        by_id.remove(x);
    }
    (by_id, ambiguous)
}

/// Computes the plan. Pure: same inputs, same plan.
///
/// Fails only when the role table names a role the platform does not have.
pub fn plan(
    directory: &Directory,
    snapshot: &Snapshot,
    policy: &Policy,
    roles: &RoleTable,
) -> Result<Plan, PlanError> {
    check_roles(roles, &snapshot.roles)?;
    let role_ids: BTreeMap<&str, &PlatformId> = snapshot
        .roles
        .iter()
        .map(|r| (r.name.as_str(), &r.id))
        .collect();
    let mut out = Plan {
        refused: directory.refused.clone(),
        ..Plan::default()
    };
    // Managed records by externalId. Each directory record takes its match
    // out, so what remains afterwards is what the directory no longer holds.
    let (mut customers, ambiguous_customers) =
        index_managed(&snapshot.customers, |c| c.external_id.as_deref(), policy);
    let (mut users, ambiguous_users) =
        index_managed(&snapshot.users, |u| u.external_id.as_deref(), policy);
    out.scope = Scope {
        managed_customers: snapshot
            .customers
            .iter()
            .filter(|c| policy.in_scope(c.external_id.as_deref()))
            .count(),
        managed_users: snapshot
            .users
            .iter()
            .filter(|u| policy.in_scope(u.external_id.as_deref()))
            .count(),
        directory_customers: directory.customers.len(),
        directory_users: directory.users.len(),
    };
    for x in &ambiguous_customers {
        out.conflicts.push(Conflict {
            kind: "customer",
            external_id: (*x).to_owned(),
            reason: "more than one platform customer carries this externalId; fix it by hand"
                .to_owned(),
        });
    }
    for x in &ambiguous_users {
        out.conflicts.push(Conflict {
            kind: "user",
            external_id: (*x).to_owned(),
            reason: "more than one platform user carries this externalId; fix it by hand"
                .to_owned(),
        });
    }

    // Unmanaged customers by name and unmanaged users by email: for adoption
    // and for conflicts a create would run into.
    let unmanaged_customer_by_name: HashMap<&str, &PlatformCustomer> = snapshot
        .customers
        .iter()
        .filter(|c| c.external_id.is_none())
        .map(|c| (c.name.trim(), c))
        .collect();
    let customer_name_owner: HashMap<&str, &PlatformCustomer> = snapshot
        .customers
        .iter()
        .map(|c| (c.name.trim(), c))
        .collect();
    let mut user_by_email: FastMap<Caseless<'_>, &PlatformUser> = fast_map(snapshot.users.len());
    for u in &snapshot.users {
        user_by_email.insert(Caseless(&u.email), u);
    }

    // Where each directory customer lives on the platform (None: created by
    // this plan, or blocked by a conflict).
    let mut customer_home: FastMap<&str, Option<&PlatformId>> = fast_map(directory.customers.len());
    let mut blocked_customers: BTreeSet<&str> = BTreeSet::new();
    let mut created_names: BTreeMap<&str, &String> = BTreeMap::new();

    for (x, desired) in &directory.customers {
        let matched = customers.remove(x.as_str());
        if ambiguous_customers.contains(x.as_str()) {
            blocked_customers.insert(x);
            continue;
        }
        if let Some(actual) = matched {
            customer_home.insert(x, Some(&actual.id));
            let (changes, patch) = customer_changes(desired, actual);
            if patch.name.is_some() {
                if let Some(owner) = customer_name_owner.get(desired.name.trim()) {
                    if owner.id != actual.id {
                        out.conflicts.push(Conflict {
                            kind: "customer",
                            external_id: x.clone(),
                            reason: format!(
                                "cannot rename to {:?}: another customer has that name",
                                desired.name
                            ),
                        });
                        continue;
                    }
                }
            }
            if !changes.is_empty() {
                out.operations.push(Operation::UpdateCustomer {
                    id: actual.id.clone(),
                    external_id: x.clone(),
                    changes,
                    patch,
                });
            }
            continue;
        }
        match customer_name_owner.get(desired.name.trim()) {
            Some(owner) if policy.adopt && owner.external_id.is_none() => {
                let owner = unmanaged_customer_by_name
                    .get(desired.name.trim())
                    .copied()
                    .unwrap_or(owner);
                customer_home.insert(x, Some(&owner.id));
                let (mut changes, mut patch) = customer_changes(desired, owner);
                changes.insert(0, change("externalId", "", x));
                patch.external_id = Some(x.clone());
                out.operations.push(Operation::AdoptCustomer {
                    id: owner.id.clone(),
                    external_id: x.clone(),
                    name: owner.name.clone(),
                    changes,
                    patch,
                });
            }
            Some(owner) => {
                blocked_customers.insert(x);
                let reason = match &owner.external_id {
                    None => format!(
                        "a customer named {:?} exists without an externalId; set policy.adopt: true to take it over, or rename one of them",
                        desired.name
                    ),
                    Some(other) => format!(
                        "the name {:?} is taken by customer {other:?}",
                        desired.name
                    ),
                };
                out.conflicts.push(Conflict {
                    kind: "customer",
                    external_id: x.clone(),
                    reason,
                });
            }
            None => {
                // Names are unique on the platform: of two directory
                // customers with one name, only the first is created.
                if let Some(first) = created_names.insert(desired.name.trim(), x) {
                    created_names.insert(desired.name.trim(), first);
                    blocked_customers.insert(x);
                    out.conflicts.push(Conflict {
                        kind: "customer",
                        external_id: x.clone(),
                        reason: format!(
                            "customer {first:?} in the directory has the same name {:?}; names must be unique",
                            desired.name
                        ),
                    });
                    continue;
                }
                customer_home.insert(x, None);
                out.operations
                    .push(Operation::CreateCustomer(customer_create(desired)));
            }
        }
    }

    for (x, desired) in &directory.users {
        let matched = users.remove(x.as_str());
        if ambiguous_users.contains(x.as_str()) {
            continue;
        }
        if directory.unknown.user_external_ids.contains(x) {
            out.kept.push(Kept {
                kind: "user",
                external_id: x.clone(),
                reason: "a refused record also names it; it is not changed this run".to_owned(),
            });
            continue;
        }
        let target = desired.customer_external_id.as_str();
        if blocked_customers.contains(target) {
            out.conflicts.push(Conflict {
                kind: "user",
                external_id: x.clone(),
                reason: format!(
                    "its customer {target:?} cannot be created or changed (see its conflict)"
                ),
            });
            continue;
        }
        let home = customer_home.get(target).copied().flatten();
        if let Some(actual) = matched {
            let email_changed = !same_email(&desired.email, &actual.email);
            let moved = home != Some(&actual.customer_id);
            if email_changed || moved {
                let (what, before, after) = if email_changed {
                    (
                        DriftKind::EmailChanged,
                        actual.email.clone(),
                        desired.email.clone(),
                    )
                } else {
                    (
                        DriftKind::MovedCustomer,
                        actual
                            .customer_external_id
                            .clone()
                            .unwrap_or_else(|| actual.customer_id.to_string()),
                        target.to_owned(),
                    )
                };
                // A recreate deletes first: if its create would then be
                // refused (the new email belongs to another user), the user
                // would be lost. Send nothing for it instead.
                let email_owner = user_by_email
                    .get(&Caseless(&desired.email))
                    .filter(|owner| owner.id != actual.id);
                if let (ChangePolicy::Recreate, Some(owner)) = (policy.email_change, email_owner) {
                    let holder = match &owner.external_id {
                        Some(other) => format!("user {other:?}"),
                        None => "a user that dirsync does not manage".to_owned(),
                    };
                    out.conflicts.push(Conflict {
                        kind: "user",
                        external_id: x.clone(),
                        reason: format!(
                            "cannot recreate it with email {}: that email belongs to {holder}",
                            desired.email
                        ),
                    });
                    continue;
                }
                out.drift.push(Drift {
                    external_id: x.clone(),
                    what,
                    before: before.clone(),
                    after: after.clone(),
                    resolution: policy.email_change,
                });
                if policy.email_change == ChangePolicy::Recreate {
                    let label = match what {
                        DriftKind::EmailChanged => "email",
                        DriftKind::MovedCustomer => "customer",
                    };
                    out.operations.push(Operation::RecreateUser {
                        old_id: actual.id.clone(),
                        reason: format!("{label} changed from {before} to {after}"),
                        create: user_create(desired, roles, &role_ids),
                    });
                    continue;
                }
            }
            let (changes, patch) = user_changes(desired, actual, &role_ids);
            if !changes.is_empty() {
                out.operations.push(Operation::UpdateUser {
                    id: actual.id.clone(),
                    external_id: x.clone(),
                    email: actual.email.clone(),
                    changes,
                    patch,
                });
            }
            continue;
        }
        match user_by_email.get(&Caseless(&desired.email)) {
            Some(owner)
                if policy.adopt
                    && owner.external_id.is_none()
                    && home == Some(&owner.customer_id) =>
            {
                let (mut changes, mut patch) = user_changes(desired, owner, &role_ids);
                changes.insert(0, change("externalId", "", x));
                patch.external_id = Some(x.clone());
                out.operations.push(Operation::AdoptUser {
                    id: owner.id.clone(),
                    external_id: x.clone(),
                    email: owner.email.clone(),
                    changes,
                    patch,
                });
            }
            Some(owner) => {
                let reason = match &owner.external_id {
                    None if home == Some(&owner.customer_id) => format!(
                        "a user with email {} exists without an externalId; set policy.adopt: true to take it over",
                        desired.email
                    ),
                    None => format!(
                        "email {} belongs to a user of another customer that dirsync does not manage",
                        desired.email
                    ),
                    Some(other) => format!("email {} belongs to user {other:?}", desired.email),
                };
                // A managed owner that is itself leaving (or being recreated)
                // frees the email only after this run: the next run converges.
                out.conflicts.push(Conflict {
                    kind: "user",
                    external_id: x.clone(),
                    reason,
                });
            }
            None => out.operations.push(Operation::CreateUser(user_create(
                desired, roles, &role_ids,
            ))),
        }
    }

    // Deletes: managed records the directory no longer holds.
    let unknown = &directory.unknown;
    // The users of the customers that might be deleted (and only those: for
    // most runs there are none, and this map is never built).
    let mut users_by_customer: HashMap<&PlatformId, Vec<&PlatformUser>> = HashMap::new();
    if policy.delete_customers.is_some() {
        let candidates: HashSet<&PlatformId> = customers.values().map(|c| &c.id).collect();
        if !candidates.is_empty() {
            for u in &snapshot.users {
                if candidates.contains(&u.customer_id) {
                    users_by_customer.entry(&u.customer_id).or_default().push(u);
                }
            }
        }
    }
    let mut deleted_customers: HashSet<&PlatformId> = HashSet::new();
    for (x, actual) in &customers {
        if directory.customers.contains_key(*x) {
            continue;
        }
        if unknown.customer_external_ids.contains(*x) {
            out.kept.push(Kept {
                kind: "customer",
                external_id: (*x).to_owned(),
                reason: "a refused record names it; its state in the directory is unknown"
                    .to_owned(),
            });
            continue;
        }
        let Some(_budget) = &policy.delete_customers else {
            out.kept.push(Kept {
                kind: "customer",
                external_id: (*x).to_owned(),
                reason: "not in the directory, but customer deletes are disabled (policy.delete_customers.enabled)".to_owned(),
            });
            continue;
        };
        let members = users_by_customer
            .get(&actual.id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let unmanaged = members
            .iter()
            .filter(|u| !policy.in_scope(u.external_id.as_deref()))
            .count();
        let staying = members
            .iter()
            .filter(|u| {
                u.external_id.as_deref().is_some_and(|ux| {
                    directory.users.contains_key(ux) || unknown.user_external_ids.contains(ux)
                }) || unknown.user_emails.contains(&u.email.to_lowercase())
            })
            .count();
        if unmanaged > 0 || staying > 0 {
            out.kept.push(Kept {
                kind: "customer",
                external_id: (*x).to_owned(),
                reason: format!(
                    "not in the directory, but it holds {} user(s) that dirsync does not manage or that the directory still lists",
                    unmanaged + staying
                ),
            });
            continue;
        }
        deleted_customers.insert(&actual.id);
        out.operations.push(Operation::DeleteCustomer {
            id: actual.id.clone(),
            external_id: (*x).to_owned(),
            name: actual.name.clone(),
            users: members.len(),
        });
    }
    for (x, actual) in &users {
        if directory.users.contains_key(*x) || deleted_customers.contains(&actual.customer_id) {
            continue;
        }
        if unknown.user_external_ids.contains(*x)
            || unknown.user_emails.contains(&actual.email.to_lowercase())
        {
            out.kept.push(Kept {
                kind: "user",
                external_id: (*x).to_owned(),
                reason: "a refused record names it; its state in the directory is unknown"
                    .to_owned(),
            });
            continue;
        }
        out.operations.push(Operation::DeleteUser {
            id: actual.id.clone(),
            external_id: (*x).to_owned(),
            email: actual.email.clone(),
            customer_external_id: actual.customer_external_id.clone(),
        });
    }

    out.operations.sort_by(|a, b| {
        (a.phase(), a.kind(), a.external_id()).cmp(&(b.phase(), b.kind(), b.external_id()))
    });
    out.conflicts
        .sort_by(|a, b| (a.kind, &a.external_id).cmp(&(b.kind, &b.external_id)));
    out.kept
        .sort_by(|a, b| (a.kind, &a.external_id).cmp(&(b.kind, &b.external_id)));
    out.drift.sort_by(|a, b| a.external_id.cmp(&b.external_id));
    Ok(out)
}
