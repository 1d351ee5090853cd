//! The users step: each directory user is matched by externalId and updated
//! (or, when its email or customer changed, reported as drift or recreated),
//! or else adopted by email, created, or set aside as a conflict.

use std::collections::BTreeMap;

use super::{change, Planner};
use crate::config::{ChangePolicy, RoleTable};
use crate::directory::{same_email, same_text, DesiredUser};
use crate::model::{PlatformId, PlatformUser, UserChanges};
use crate::plan::{Drift, DriftKind, FieldChange, Kept, Operation, UserCreate};

use super::index::Caseless;

impl<'a> Planner<'a> {
    /// Step 3: every directory user, once the customers step has said where
    /// each customer lives. Leaves in `users` only the managed users the
    /// directory does not hold.
    pub(in crate::plan) fn users(&mut self) {
        let directory = self.directory;
        // Every match first, in one pass of lookups that do not wait on one
        // another (the processor overlaps their reads of memory, a million
        // of them at random when externalIds have no order), then each user.
        let matches: Vec<Option<&PlatformUser>> = directory
            .users
            .keys()
            .map(|x| self.users.remove(x))
            .collect();
        for ((x, desired), matched) in directory.users.iter().zip(matches) {
            if self.ambiguous_users.contains(x) {
                continue;
            }
            if directory.unknown.user_external_ids.contains(x) {
                self.out.kept.push(Kept {
                    kind: "user",
                    external_id: x.to_owned(),
                    reason: "a refused record also names it; it is not changed this run".to_owned(),
                });
                continue;
            }
            let target = desired.customer_external_id();
            if self.blocked_customers.contains(target) {
                let reason = format!(
                    "its customer {target:?} cannot be created or changed (see its conflict)"
                );
                self.conflict("user", x, reason);
                continue;
            }
            let home = self.customer_home.get(target).copied().flatten();
            match matched {
                Some(actual) => self.update_user(x, desired, actual, home),
                None => self.place_user(x, desired, home),
            }
        }
    }

    /// A user matched by externalId: drift (and perhaps a recreate) when its
    /// email or customer changed, else an update of the fields that differ.
    fn update_user(
        &mut self,
        x: &str,
        desired: &DesiredUser,
        actual: &PlatformUser,
        home: Option<&PlatformId>,
    ) {
        let email_changed = !same_email(desired.email(), &actual.email);
        let moved = home != Some(&actual.customer_id);
        if (email_changed || moved) && self.drift(x, desired, actual, email_changed) {
            return;
        }
        let (changes, patch) = user_changes(desired, actual, &self.role_ids);
        if !changes.is_empty() {
            self.out.operations.push(Operation::UpdateUser {
                id: actual.id.clone(),
                external_id: x.to_owned(),
                email: actual.email.clone(),
                customer_external_id: actual.customer_external_id.clone(),
                changes,
                patch,
            });
        }
    }

    /// A changed email or customer, which the platform cannot update in
    /// place. Returns true when that settles the user (a conflict or a
    /// recreate); false when it is only reported and the update still runs.
    fn drift(
        &mut self,
        x: &str,
        desired: &DesiredUser,
        actual: &PlatformUser,
        email_changed: bool,
    ) -> bool {
        let (what, before, after) = if email_changed {
            (
                DriftKind::EmailChanged,
                actual.email.clone(),
                desired.email().to_owned(),
            )
        } else {
            (
                DriftKind::MovedCustomer,
                actual
                    .customer_external_id
                    .clone()
                    .unwrap_or_else(|| actual.customer_id.to_string()),
                desired.customer_external_id().to_owned(),
            )
        };
        // A recreate deletes first: if its create would then be refused
        // (the new email belongs to another user), the user would be lost.
        // Send nothing for it instead.
        let email_owner = self
            .user_by_email
            .get(&Caseless(desired.email()))
            .filter(|owner| owner.id != actual.id);
        if let (ChangePolicy::Recreate, Some(owner)) = (self.policy.email_change, email_owner) {
            let holder = match &owner.external_id {
                Some(other) => format!("user {other:?}"),
                None => "a user that dirsync does not manage".to_owned(),
            };
            let reason = format!(
                "cannot recreate it with email {}: that email belongs to {holder}",
                desired.email()
            );
            self.conflict("user", x, reason);
            return true;
        }
        self.out.drift.push(Drift {
            external_id: x.to_owned(),
            what,
            before: before.clone(),
            after: after.clone(),
            resolution: self.policy.email_change,
        });
        if self.policy.email_change != ChangePolicy::Recreate {
            return false;
        }
        let label = match what {
            DriftKind::EmailChanged => "email",
            DriftKind::MovedCustomer => "customer",
        };
        self.out.operations.push(Operation::RecreateUser {
            old_id: actual.id.clone(),
            reason: format!("{label} changed from {before} to {after}"),
            create: user_create(desired, self.roles, &self.role_ids),
        });
        true
    }

    /// A user with no match by externalId: adopted if its email belongs to
    /// an unmanaged user of the same customer and adoption is on, a conflict
    /// if the email is taken otherwise, else created.
    fn place_user(&mut self, x: &str, desired: &DesiredUser, home: Option<&PlatformId>) {
        match self.user_by_email.get(&Caseless(desired.email())).copied() {
            Some(owner)
                if self.policy.adopt
                    && owner.external_id.is_none()
                    && home == Some(&owner.customer_id) =>
            {
                let (mut changes, mut patch) = user_changes(desired, owner, &self.role_ids);
                changes.insert(0, change("externalId", "", x));
                patch.external_id = Some(x.to_owned());
                self.out.operations.push(Operation::AdoptUser {
                    id: owner.id.clone(),
                    external_id: x.to_owned(),
                    email: owner.email.clone(),
                    customer_external_id: owner.customer_external_id.clone(),
                    changes,
                    patch,
                });
            }
            Some(owner) => {
                let reason = match &owner.external_id {
                    None if home == Some(&owner.customer_id) => format!(
                        "a user with email {} exists without an externalId; set policy.adopt: true to take it over",
                        desired.email()
                    ),
                    None => format!(
                        "email {} belongs to a user of another customer that dirsync does not manage",
                        desired.email()
                    ),
                    Some(other) => format!("email {} belongs to user {other:?}", desired.email()),
                };
                // A managed owner that is itself leaving (or being recreated)
                // frees the email only after this run: the next run converges.
                self.conflict("user", x, reason);
            }
            None => {
                let create = user_create(desired, self.roles, &self.role_ids);
                self.out.operations.push(Operation::CreateUser(create));
            }
        }
    }
}

fn user_changes(
    desired: &DesiredUser,
    actual: &PlatformUser,
    role_ids: &BTreeMap<&str, &PlatformId>,
) -> (Vec<FieldChange>, UserChanges) {
    let mut changes = Vec::new();
    let mut patch = UserChanges::default();
    if let Some(name) = desired.name() {
        if !same_text(name, &actual.name) {
            changes.push(change("name", &actual.name, name));
            patch.name = Some(name.to_owned());
        }
    }
    if let Some(phone) = desired.phone() {
        if !same_text(phone, &actual.phone) {
            changes.push(change("phone", &actual.phone, phone));
            patch.phone = Some(phone.to_owned());
        }
    }
    if let Some(role) = desired.role() {
        if role != actual.role.name {
            changes.push(change("role", &actual.role.name, role));
            patch.role_id = role_ids.get(role).map(|id| (*id).clone());
        }
    }
    (changes, patch)
}

fn user_create(
    d: &DesiredUser,
    roles: &RoleTable,
    role_ids: &BTreeMap<&str, &PlatformId>,
) -> UserCreate {
    let role = d
        .role()
        .map_or_else(|| roles.default.clone(), str::to_owned);
    UserCreate {
        external_id: d.external_id().to_owned(),
        customer_external_id: d.customer_external_id().to_owned(),
        email: d.email().to_owned(),
        name: d.name().map(str::to_owned),
        phone: d.phone().map(str::to_owned),
        role_id: role_ids
            .get(role.as_str())
            .map(|id| (*id).clone())
            .unwrap_or_else(|| PlatformId::from(String::new())),
        role,
    }
}
