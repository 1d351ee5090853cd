//! The customers step: each directory customer is matched by externalId and
//! updated, or else adopted by name, created, or set aside as a conflict.
//! Records where each customer lives for the users step.

use std::collections::{BTreeMap, BTreeSet};

use super::{change, Planner};
use crate::directory::{same_text, DesiredCustomer};
use crate::model::{CustomerChanges, PlatformCustomer};
use crate::plan::{CustomerCreate, FieldChange, Operation};

impl<'a> Planner<'a> {
    /// Step 2: every directory customer. Fills `customer_home` and
    /// `blocked_customers`, and leaves in `customers` only the managed
    /// customers the directory does not hold.
    pub(in crate::plan) fn customers(&mut self) {
        let directory = self.directory;
        // Names created so far, to refuse a second create of the same name.
        let mut created_names: BTreeMap<&str, &String> = BTreeMap::new();
        for (x, desired) in &directory.customers {
            let matched = self.customers.remove(x.as_str());
            if self.ambiguous_customers.contains(x.as_str()) {
                self.blocked_customers.insert(x);
                continue;
            }
            match matched {
                Some(actual) => self.update_customer(x, desired, actual),
                None => self.place_customer(x, desired, &mut created_names),
            }
        }
        self.users_of_adopted_customers();
    }

    /// An adopted customer becomes dirsync's, and so do its users with an
    /// externalId in scope: they join the managed users (one pass over the
    /// users, only when something was adopted), so the users step matches
    /// them and the next run finds nothing new to manage.
    fn users_of_adopted_customers(&mut self) {
        if self.adopted_customers.is_empty() {
            return;
        }
        let snapshot = self.snapshot;
        for u in &snapshot.users {
            if !self.adopted_customers.contains(&u.customer_id) {
                continue;
            }
            let Some(x) = u
                .external_id
                .as_deref()
                .filter(|x| self.policy.in_scope(Some(x)))
            else {
                continue;
            };
            if self.users.remove(x).is_some() || self.ambiguous_users.contains(x) {
                if self.ambiguous_users.insert(x) {
                    let reason =
                        "more than one platform user carries this externalId; fix it by hand";
                    self.conflict("user", x, reason.to_owned());
                }
                continue;
            }
            self.users.insert(x, u);
        }
    }

    /// A customer matched by externalId: updated, unless a rename would take
    /// another customer's name (then a conflict, but its users still go to it).
    fn update_customer(
        &mut self,
        x: &'a str,
        desired: &DesiredCustomer,
        actual: &'a PlatformCustomer,
    ) {
        self.customer_home.insert(x, Some(&actual.id));
        let (changes, patch) = customer_changes(desired, actual);
        if patch.name.is_some() {
            if let Some(owner) = self.customer_name_owner.get(desired.name.trim()) {
                if owner.id != actual.id {
                    let reason = format!(
                        "cannot rename to {:?}: another customer has that name",
                        desired.name
                    );
                    self.conflict("customer", x, reason);
                    return;
                }
            }
        }
        if !changes.is_empty() {
            self.out.operations.push(Operation::UpdateCustomer {
                id: actual.id.clone(),
                external_id: x.to_owned(),
                changes,
                patch,
            });
        }
    }

    /// A customer with no match by externalId: adopted if its name belongs
    /// to an unmanaged customer and adoption is on, a conflict if the name is
    /// taken otherwise, else created.
    fn place_customer(
        &mut self,
        x: &'a String,
        desired: &'a DesiredCustomer,
        created_names: &mut BTreeMap<&'a str, &'a String>,
    ) {
        match self.customer_name_owner.get(desired.name.trim()).copied() {
            Some(owner) if self.policy.adopt && owner.external_id.is_none() => {
                self.adopt_customer(x, desired, owner);
            }
            Some(owner) => {
                self.blocked_customers.insert(x);
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
                self.conflict("customer", x, reason);
            }
            None => {
                // Names are unique on the platform: of two directory
                // customers with one name, only the first is created.
                if let Some(first) = created_names.insert(desired.name.trim(), x) {
                    created_names.insert(desired.name.trim(), first);
                    self.blocked_customers.insert(x);
                    let reason = format!(
                        "customer {first:?} in the directory has the same name {:?}; names must be unique",
                        desired.name
                    );
                    self.conflict("customer", x, reason);
                    return;
                }
                self.customer_home.insert(x, None);
                self.out
                    .operations
                    .push(Operation::CreateCustomer(customer_create(desired)));
            }
        }
    }

    /// Takes over the unmanaged customer with the directory customer's name.
    fn adopt_customer(
        &mut self,
        x: &'a str,
        desired: &DesiredCustomer,
        owner: &'a PlatformCustomer,
    ) {
        let owner = self
            .unmanaged_customer_by_name
            .get(desired.name.trim())
            .copied()
            .unwrap_or(owner);
        self.customer_home.insert(x, Some(&owner.id));
        self.managed_customer_ids.insert(&owner.id);
        self.adopted_customers.insert(&owner.id);
        let (mut changes, mut patch) = customer_changes(desired, owner);
        changes.insert(0, change("externalId", "", x));
        patch.external_id = Some(x.to_owned());
        self.out.operations.push(Operation::AdoptCustomer {
            id: owner.id.clone(),
            external_id: x.to_owned(),
            name: owner.name.clone(),
            changes,
            patch,
        });
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

fn customer_create(d: &DesiredCustomer) -> CustomerCreate {
    CustomerCreate {
        external_id: d.external_id.clone(),
        name: d.name.clone(),
        description: d.description.clone(),
        labels: d.labels.as_ref().map(|l| l.iter().cloned().collect()),
    }
}
