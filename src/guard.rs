//! Safety limits, checked on the whole plan before the first mutation:
//! delete budgets (users; customers when enabled) and source sanity (an
//! empty directory, a managed set that would shrink too far). Pure functions
//! over a [`Plan`]; a blocked plan sends zero mutations.

use std::fmt;

use serde::Serialize;

use crate::config::{Budget, Policy};
use crate::plan::Plan;

/// One reason a plan is blocked.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "camelCase")]
pub enum BlockReason {
    /// The source returned no users at all.
    #[serde(rename_all = "camelCase")]
    EmptySource,
    /// The managed users would shrink by more than the configured share.
    #[serde(rename_all = "camelCase")]
    Shrink {
        managed: usize,
        directory: usize,
        percent: f64,
        limit_percent: f64,
    },
    #[serde(rename_all = "camelCase")]
    UserDeleteBudget {
        deletes: usize,
        managed: usize,
        max_count: usize,
        max_percent: f64,
    },
    #[serde(rename_all = "camelCase")]
    CustomerDeleteBudget {
        deletes: usize,
        managed: usize,
        max_count: usize,
        max_percent: f64,
    },
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockReason::EmptySource => write!(
                f,
                "the source returned zero users; an empty directory never deletes anything"
            ),
            BlockReason::Shrink { managed, directory, percent, limit_percent } => write!(
                f,
                "the directory holds {directory} users where {managed} are managed: a shrink of {percent:.1}%, over policy.max_shrink_percent ({limit_percent}%)"
            ),
            BlockReason::UserDeleteBudget { deletes, managed, max_count, max_percent } => write!(
                f,
                "{deletes} user deletes of {managed} managed users reach the budget (policy.delete_users: max_count {max_count}, max_percent {max_percent}%)"
            ),
            BlockReason::CustomerDeleteBudget { deletes, managed, max_count, max_percent } => write!(
                f,
                "{deletes} customer deletes of {managed} managed customers reach the budget (policy.delete_customers: max_count {max_count}, max_percent {max_percent}%)"
            ),
        }
    }
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// A budget is reached when there is at least one delete and either the
/// count or the share of the managed set reaches its limit.
fn reached(deletes: usize, managed: usize, budget: &Budget) -> bool {
    deletes > 0 && (deletes >= budget.max_count || percent(deletes, managed) >= budget.max_percent)
}

/// Checks a plan against the policy. `allow_deletes` lifts the delete
/// budgets for one run; it never lifts the source sanity checks.
pub fn check(plan: &Plan, policy: &Policy, allow_deletes: bool) -> Vec<BlockReason> {
    let mut reasons = Vec::new();
    let scope = plan.scope;
    if scope.directory_users == 0 {
        reasons.push(BlockReason::EmptySource);
    } else if scope.managed_users > scope.directory_users {
        let shrink = percent(
            scope.managed_users - scope.directory_users,
            scope.managed_users,
        );
        if shrink > policy.max_shrink_percent {
            reasons.push(BlockReason::Shrink {
                managed: scope.managed_users,
                directory: scope.directory_users,
                percent: shrink,
                limit_percent: policy.max_shrink_percent,
            });
        }
    }
    if allow_deletes {
        return reasons;
    }
    let user_deletes = plan.user_deletes();
    if reached(user_deletes, scope.managed_users, &policy.delete_users) {
        reasons.push(BlockReason::UserDeleteBudget {
            deletes: user_deletes,
            managed: scope.managed_users,
            max_count: policy.delete_users.max_count,
            max_percent: policy.delete_users.max_percent,
        });
    }
    let customer_deletes = plan.customer_deletes();
    if let Some(budget) = &policy.delete_customers {
        if reached(customer_deletes, scope.managed_customers, budget) {
            reasons.push(BlockReason::CustomerDeleteBudget {
                deletes: customer_deletes,
                managed: scope.managed_customers,
                max_count: budget.max_count,
                max_percent: budget.max_percent,
            });
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PlatformId;
    use crate::plan::{Operation, Scope};

    fn plan_with(user_deletes: usize, managed_users: usize, directory_users: usize) -> Plan {
        Plan {
            operations: (0..user_deletes)
                .map(|i| Operation::DeleteUser {
                    id: PlatformId(format!("id-{i}")),
                    external_id: format!("u-{i}"),
                    email: format!("u{i}@x.io"),
                    customer_external_id: None,
                })
                .collect(),
            scope: Scope {
                managed_customers: 10,
                managed_users,
                directory_customers: 10,
                directory_users,
            },
            ..Plan::default()
        }
    }

    fn policy(max_count: usize, max_percent: f64) -> Policy {
        Policy {
            delete_users: Budget {
                max_count,
                max_percent,
            },
            max_shrink_percent: 100.0,
            ..Policy::default()
        }
    }

    #[test]
    fn the_count_budget_blocks_at_its_limit_and_not_just_below() {
        let p = policy(5, 100.0);
        assert!(check(&plan_with(4, 1000, 996), &p, false).is_empty());
        assert!(matches!(
            check(&plan_with(5, 1000, 995), &p, false)[..],
            [BlockReason::UserDeleteBudget { deletes: 5, .. }]
        ));
    }

    #[test]
    fn the_percent_budget_blocks_at_its_limit_and_not_just_below() {
        let p = policy(1000, 10.0);
        assert!(check(&plan_with(9, 100, 91), &p, false).is_empty());
        assert_eq!(check(&plan_with(10, 100, 90), &p, false).len(), 1);
    }

    #[test]
    fn allow_deletes_lifts_budgets_but_not_source_sanity() {
        let p = policy(1, 1.0);
        assert!(check(&plan_with(50, 100, 60), &p, true).is_empty());
        assert_eq!(
            check(&plan_with(0, 100, 0), &p, true),
            vec![BlockReason::EmptySource]
        );
    }

    #[test]
    fn a_shrink_past_the_limit_is_blocked() {
        let p = Policy {
            max_shrink_percent: 20.0,
            delete_users: Budget {
                max_count: 1000,
                max_percent: 100.0,
            },
            ..Policy::default()
        };
        assert!(check(&plan_with(20, 100, 80), &p, false).is_empty());
        assert!(matches!(
            check(&plan_with(21, 100, 79), &p, false)[..],
            [BlockReason::Shrink {
                managed: 100,
                directory: 79,
                ..
            }]
        ));
    }

    #[test]
    fn no_deletes_never_blocks_even_with_a_zero_budget() {
        assert!(check(&plan_with(0, 10, 10), &policy(0, 0.0), false).is_empty());
    }
}
