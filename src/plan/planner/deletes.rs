//! The delete steps: managed records the directory no longer holds (what the
//! matching steps left in the indexes) are deleted, or kept with the reason.

use super::index::{FastMap, FastSet};

use super::Planner;
use crate::model::{CustomerHoldings, PlatformId, PlatformUser};
use crate::plan::{DeleteReason, Kept, Operation};

const NAMED_BY_A_REFUSED_RECORD: &str =
    "a refused record names it; its state in the directory is unknown";

const DELETES_OFF: &str =
    "not in the directory, but customer deletes are disabled (policy.delete_customers.enabled)";

const HOLDINGS_UNKNOWN: &str = "not in the directory, but what it holds (every user, embedded marketplace users included, and its instances) was not read; it is kept";

impl<'a> Planner<'a> {
    /// Step 4: managed customers the directory no longer holds. Fills
    /// `deleted_customers` for the user deletes step.
    pub(in crate::plan) fn customer_deletes(&mut self) {
        let users_by_customer = self.users_of_leaving_customers();
        for (&x, &actual) in &self.customers {
            if self.directory.customers.contains_key(x) {
                continue;
            }
            let members = users_by_customer
                .get(&actual.id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let reason = match self.snapshot.holdings.get(&actual.id) {
                _ if self.directory.unknown.customer_external_ids.contains(x) => {
                    Some(NAMED_BY_A_REFUSED_RECORD.to_owned())
                }
                _ if self.policy.delete_customers.is_none() => Some(DELETES_OFF.to_owned()),
                None => Some(HOLDINGS_UNKNOWN.to_owned()),
                Some(holdings) => self.reason_to_keep_customer(members, holdings),
            };
            if let Some(reason) = reason {
                self.out.kept.push(Kept {
                    kind: "customer",
                    external_id: x.to_owned(),
                    reason,
                });
                continue;
            }
            let holdings = self
                .snapshot
                .holdings
                .get(&actual.id)
                .copied()
                .unwrap_or_default();
            self.deleted_customers.insert(&actual.id);
            self.out.operations.push(Operation::DeleteCustomer {
                id: actual.id.clone(),
                external_id: x.to_owned(),
                name: actual.name.clone(),
                users: usize::try_from(holdings.users).unwrap_or(usize::MAX),
                instances: holdings.instances,
                // Sources say nothing of disabled customers.
                why: DeleteReason::Absent,
            });
        }
    }

    /// The users of the customers that might be deleted (and only those: for
    /// most runs there are none, and the map is never filled).
    fn users_of_leaving_customers(&self) -> FastMap<&'a PlatformId, Vec<&'a PlatformUser>> {
        let mut users_by_customer: FastMap<&PlatformId, Vec<&PlatformUser>> = FastMap::default();
        if self.policy.delete_customers.is_some() {
            let candidates: FastSet<&PlatformId> = self.customers.values().map(|c| &c.id).collect();
            if !candidates.is_empty() {
                let snapshot = self.snapshot;
                for u in &snapshot.users {
                    if candidates.contains(&u.customer_id) {
                        users_by_customer.entry(&u.customer_id).or_default().push(u);
                    }
                }
            }
        }
        users_by_customer
    }

    /// Why a leaving customer must stay, if it must: it holds users that dirsync does not manage (embedded marketplace
    /// users among them, which only `holdings` counts) or that are not
    /// leaving, or it has deployed instances and the policy keeps those.
    fn reason_to_keep_customer(
        &self,
        members: &[&PlatformUser],
        holdings: &CustomerHoldings,
    ) -> Option<String> {
        let unknown = &self.directory.unknown;
        let managed = members
            .iter()
            .filter(|u| self.policy.in_scope(u.external_id.as_deref()))
            .count();
        // Users the listing does not show (marketplace users) and listed
        // users without an externalId in scope: all are not dirsync's.
        let unmanaged = usize::try_from(holdings.users)
            .unwrap_or(usize::MAX)
            .saturating_sub(managed);
        if unmanaged > 0 {
            return Some(format!(
                "not in the directory, but it holds {unmanaged} user(s) that dirsync does not manage (embedded marketplace users, or users without an externalId in scope); deleting it would delete them"
            ));
        }
        let staying = members
            .iter()
            .filter(|u| {
                u.external_id.as_deref().is_some_and(|ux| {
                    self.directory.users.contains_key(ux) || unknown.user_external_ids.contains(ux)
                }) || unknown.user_emails.contains(&u.email.to_lowercase())
            })
            .count();
        if staying > 0 {
            return Some(format!(
                "not in the directory, but it holds {staying} user(s) that the directory still lists"
            ));
        }
        if holdings.instances > 0 && !self.policy.delete_customers_with_instances {
            return Some(format!(
                "not in the directory, but it has {} deployed instance(s) that deleting it would delete (policy.delete_customers.with_instances: true allows it)",
                holdings.instances
            ));
        }
        None
    }

    /// Step 5: managed users the directory no longer holds, except the
    /// users of the customers step 4 deletes (that delete takes them). Each
    /// delete says why: the directory holds the user as disabled
    /// (`Directory::disabled_users`), or not at all.
    pub(in crate::plan) fn user_deletes(&mut self) {
        let directory = self.directory;
        let unknown = &directory.unknown;
        for (&x, &actual) in &self.users {
            if directory.users.contains_key(x)
                || self.deleted_customers.contains(&actual.customer_id)
            {
                continue;
            }
            if unknown.user_external_ids.contains(x)
                || unknown.user_emails.contains(&actual.email.to_lowercase())
            {
                self.out.kept.push(Kept {
                    kind: "user",
                    external_id: x.to_owned(),
                    reason: NAMED_BY_A_REFUSED_RECORD.to_owned(),
                });
                continue;
            }
            // The source saw it disabled (and nowhere enabled), or not at all.
            let why = if directory.disabled_users.contains(x) {
                DeleteReason::Disabled
            } else {
                DeleteReason::Absent
            };
            self.out.operations.push(Operation::DeleteUser {
                id: actual.id.clone(),
                external_id: x.to_owned(),
                email: actual.email.clone(),
                customer_external_id: actual.customer_external_id.clone(),
                why,
            });
        }
    }
}
