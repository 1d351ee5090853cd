//! The planner: [`plan`](super::plan) as named steps over one shared value.
//!
//! [`Planner::new`] builds every index from the snapshot once; each step then
//! reads them and adds to the plan. The steps run in this order, because
//! each one needs what the ones before it decided:
//!
//! 1. [`Planner::ambiguous_ids`]: a conflict for each externalId that more
//!    than one platform record carries. `new` has already set those apart
//!    from the managed indexes; this step only reports them.
//! 2. [`Planner::customers`] (`customers.rs`): match, update, adopt or create
//!    each directory customer. It runs before the users because every user
//!    needs its customer resolved: the platform id it lives at (to tell an
//!    unchanged user from one that moved, and to adopt a user only in its
//!    own customer), or that the customer is blocked by a conflict (then
//!    the user is a conflict too).
//! 3. [`Planner::users`] (`users.rs`): match, update, adopt, recreate or
//!    create each directory user, with drift and conflicts.
//! 4. [`Planner::customer_deletes`] (`deletes.rs`): both matching steps take
//!    each match out of the managed indexes, so the deletes must come after
//!    them: what is left is exactly what the directory no longer holds.
//!    Customer deletes come before user deletes because deleting a customer
//!    deletes its users on the platform: those users are counted in the
//!    `DeleteCustomer` and must not also get a `DeleteUser`.
//! 5. [`Planner::user_deletes`] (`deletes.rs`): the managed users left over,
//!    except those of the customers step 4 deletes.
//! 6. [`Planner::finish`]: sorts operations into apply order and the other
//!    lists by externalId, so the plan does not depend on the order the steps
//!    pushed in, nor on hash map order.
//!
//! Speed at 1M users: managed records are indexed in foldhash maps and each
//! match is taken out (no second lookup to find what is left); emails are
//! keyed by a borrowed caseless key (no lowercased copies); users are grouped
//! by customer only when a customer may be deleted. Nothing from the inputs
//! is cloned except into the plan itself.

mod customers;
mod deletes;
mod index;
mod users;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::config::{Policy, RoleTable};
use crate::directory::Directory;
use crate::model::{PlatformCustomer, PlatformId, PlatformUser, Snapshot};

use super::{Conflict, FieldChange, Plan, Scope};
use index::{fast_map, fast_set, index_managed, Caseless, FastMap, FastSet};

/// The inputs, the indexes built from them, what the steps decided so far,
/// and the plan being built.
pub(super) struct Planner<'a> {
    directory: &'a Directory,
    snapshot: &'a Snapshot,
    policy: &'a Policy,
    roles: &'a RoleTable,
    /// Platform role ids by role name.
    role_ids: BTreeMap<&'a str, &'a PlatformId>,
    /// Managed customers by externalId. The customers step takes each match
    /// out, so afterwards it holds what the directory no longer has.
    customers: FastMap<&'a str, &'a PlatformCustomer>,
    /// ExternalIds more than one platform customer carries (not in `customers`).
    ambiguous_customers: BTreeSet<&'a str>,
    /// Every managed customer's platform id: a user is managed only inside
    /// one (the platform's `User` cannot tell a user of the system customer,
    /// or of a customer outside the scope, from any other).
    managed_customer_ids: FastSet<&'a PlatformId>,
    /// Managed users by externalId; the users step takes each match out.
    users: FastMap<&'a str, &'a PlatformUser>,
    /// ExternalIds more than one platform user carries (not in `users`).
    ambiguous_users: BTreeSet<&'a str>,
    /// Customers without an externalId by trimmed name: for adoption.
    unmanaged_customer_by_name: HashMap<&'a str, &'a PlatformCustomer>,
    /// Every customer by trimmed name: the names a create or rename would hit.
    customer_name_owner: HashMap<&'a str, &'a PlatformCustomer>,
    /// Every user by email: for adoption and the emails a create would hit.
    user_by_email: FastMap<Caseless<'a>, &'a PlatformUser>,
    /// Set by the customers step: where each directory customer lives on the
    /// platform (None: created by this plan).
    customer_home: FastMap<&'a str, Option<&'a PlatformId>>,
    /// Set by the customers step: the platform customers it adopts.
    adopted_customers: FastSet<&'a PlatformId>,
    /// Set by the customers step: directory customers a conflict blocks.
    blocked_customers: BTreeSet<&'a str>,
    /// Set by the customer deletes step: read by the user deletes step.
    deleted_customers: HashSet<&'a PlatformId>,
    out: Plan,
}

impl<'a> Planner<'a> {
    /// Builds the indexes, the scope and the refused list (one pass over
    /// each input list per index).
    pub(super) fn new(
        directory: &'a Directory,
        snapshot: &'a Snapshot,
        policy: &'a Policy,
        roles: &'a RoleTable,
    ) -> Self {
        let role_ids = snapshot
            .roles
            .iter()
            .map(|r| (r.name.as_str(), &r.id))
            .collect();
        let out = Plan {
            refused: directory.refused.clone(),
            ..Plan::default()
        };
        let (customers, ambiguous_customers) =
            index_managed(&snapshot.customers, |c| c.external_id.as_deref(), policy);
        let managed_customer_ids = managed_customer_ids(snapshot, policy);
        let (users, ambiguous_users) = index_managed(
            &snapshot.users,
            |u| in_managed_customer(&managed_customer_ids, u),
            policy,
        );
        let mut planner = Planner {
            directory,
            snapshot,
            policy,
            roles,
            role_ids,
            customers,
            ambiguous_customers,
            managed_customer_ids,
            users,
            ambiguous_users,
            unmanaged_customer_by_name: HashMap::new(),
            customer_name_owner: HashMap::new(),
            user_by_email: FastMap::default(),
            customer_home: fast_map(directory.customers.len()),
            adopted_customers: FastSet::default(),
            blocked_customers: BTreeSet::new(),
            deleted_customers: HashSet::new(),
            out,
        };
        planner.out.scope = planner.scope();
        planner.index_names_and_emails();
        planner
    }

    /// How much is managed and how much the directory holds, for the guards.
    fn scope(&self) -> Scope {
        let policy = self.policy;
        Scope {
            managed_customers: self
                .snapshot
                .customers
                .iter()
                .filter(|c| policy.in_scope(c.external_id.as_deref()))
                .count(),
            managed_users: self
                .snapshot
                .users
                .iter()
                .filter(|u| policy.in_scope(in_managed_customer(&self.managed_customer_ids, u)))
                .count(),
            directory_customers: self.directory.customers.len(),
            directory_users: self.directory.users.len(),
        }
    }

    /// Customers by name and users by email, managed or not: for adoption
    /// and for the conflicts a create or a rename would run into.
    fn index_names_and_emails(&mut self) {
        let snapshot = self.snapshot;
        self.unmanaged_customer_by_name = snapshot
            .customers
            .iter()
            .filter(|c| c.external_id.is_none())
            .map(|c| (c.name.trim(), c))
            .collect();
        self.customer_name_owner = snapshot
            .customers
            .iter()
            .map(|c| (c.name.trim(), c))
            .collect();
        let mut user_by_email: FastMap<Caseless<'_>, &PlatformUser> =
            fast_map(snapshot.users.len());
        for u in &snapshot.users {
            user_by_email.insert(Caseless(&u.email), u);
        }
        self.user_by_email = user_by_email;
    }

    /// Step 1: a conflict for each externalId several platform records carry.
    pub(super) fn ambiguous_ids(&mut self) {
        for x in &self.ambiguous_customers {
            self.out.conflicts.push(Conflict {
                kind: "customer",
                external_id: (*x).to_owned(),
                reason: "more than one platform customer carries this externalId; fix it by hand"
                    .to_owned(),
            });
        }
        for x in &self.ambiguous_users {
            self.out.conflicts.push(Conflict {
                kind: "user",
                external_id: (*x).to_owned(),
                reason: "more than one platform user carries this externalId; fix it by hand"
                    .to_owned(),
            });
        }
    }

    /// Last step: the plan, sorted so that it is stable.
    pub(super) fn finish(mut self) -> Plan {
        self.out.operations.sort_by(|a, b| {
            (a.phase(), a.kind(), a.external_id()).cmp(&(b.phase(), b.kind(), b.external_id()))
        });
        self.out
            .conflicts
            .sort_by(|a, b| (a.kind, &a.external_id).cmp(&(b.kind, &b.external_id)));
        self.out
            .kept
            .sort_by(|a, b| (a.kind, &a.external_id).cmp(&(b.kind, &b.external_id)));
        self.out
            .drift
            .sort_by(|a, b| a.external_id.cmp(&b.external_id));
        self.out
    }

    /// Adds a conflict.
    fn conflict(&mut self, kind: &'static str, external_id: &str, reason: String) {
        self.out.conflicts.push(Conflict {
            kind,
            external_id: external_id.to_owned(),
            reason,
        });
    }
}

/// The platform ids of the customers dirsync manages (an externalId in scope).
fn managed_customer_ids<'a>(snapshot: &'a Snapshot, policy: &Policy) -> FastSet<&'a PlatformId> {
    let mut ids = fast_set(snapshot.customers.len());
    ids.extend(
        snapshot
            .customers
            .iter()
            .filter(|c| policy.in_scope(c.external_id.as_deref()))
            .map(|c| &c.id),
    );
    ids
}

/// A user's externalId, when the user sits in a managed customer: outside
/// one, a user is never dirsync's, whatever externalId it carries.
fn in_managed_customer<'u>(
    managed_customer_ids: &FastSet<&PlatformId>,
    user: &'u PlatformUser,
) -> Option<&'u str> {
    if managed_customer_ids.contains(&user.customer_id) {
        user.external_id.as_deref()
    } else {
        None
    }
}

fn change(field: &'static str, before: &str, after: &str) -> FieldChange {
    FieldChange {
        field: field.into(),
        before: before.to_owned(),
        after: after.to_owned(),
    }
}
