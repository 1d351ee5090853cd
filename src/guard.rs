//! Safety limits, checked on the whole plan before the first mutation:
//! delete budgets (users; customers when enabled) and source sanity (an
//! empty directory, a managed set that would shrink too far, a read that
//! cannot say who is absent). Pure functions over a [`Plan`] (and, for the
//! last, the [`Directory`] it was planned from); a blocked plan sends zero
//! mutations.
//!
//! [`BlockReason::DeletesWithheld`] is narrower than the others: it is about
//! the deletes only. [`sendable`] says what may still be sent: the plan
//! without its deletes when that is the only reason.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::{Budget, Policy};
use crate::directory::{Directory, Origin};
use crate::plan::{Operation, Plan};

/// One reason a plan is blocked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// The source cannot say who is absent this run (a file cut short or
    /// changing while it was read, a refused record without an externalId),
    /// so the plan's deletes are withheld. `--allow-deletes` does not lift it.
    #[serde(rename_all = "camelCase")]
    DeletesWithheld {
        /// Where: the file, its line, the record.
        origin: Origin,
        cause: String,
        /// The deletes the plan holds (users, counting those of deleted
        /// customers and recreates; customers).
        user_deletes: usize,
        customer_deletes: usize,
    },
}

impl BlockReason {
    /// Whether this reason is about the deletes only: what else the plan
    /// holds may still be sent ([`sendable`]).
    pub fn withholds_deletes_only(&self) -> bool {
        matches!(self, BlockReason::DeletesWithheld { .. })
    }
}

impl BlockReason {
    /// The one thing that lifts this limit, said to the operator.
    /// `--allow-deletes` is advised only for the delete budgets, the only
    /// limits it lifts.
    pub fn remedy(&self) -> String {
        match self {
            BlockReason::EmptySource => {
                "check the source (an empty directory never deletes; no flag lifts this)".to_owned()
            }
            BlockReason::Shrink { percent, .. } => format!(
                "if the directory really shrank, raise policy.max_shrink_percent to at least {:.0} for this run (--allow-deletes does not lift it); otherwise fix the source",
                percent.ceil()
            ),
            BlockReason::UserDeleteBudget { .. } => {
                "review the user deletes, then run once with --allow-deletes (or raise policy.delete_users)".to_owned()
            }
            BlockReason::CustomerDeleteBudget { .. } => {
                "review the customer deletes, then run once with --allow-deletes (or raise policy.delete_customers)".to_owned()
            }
            BlockReason::DeletesWithheld { origin, .. } => format!(
                "fix the source at {origin} and run again (no flag lifts this)"
            ),
        }
    }
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
            BlockReason::DeletesWithheld { origin, cause, user_deletes, customer_deletes } => {
                let mut staged = vec![plural(*user_deletes, "user delete")];
                if *customer_deletes > 0 {
                    staged.push(plural(*customer_deletes, "customer delete"));
                }
                write!(
                    f,
                    "{origin}: {cause}: deletes withheld this run ({} staged; --allow-deletes does not lift this)",
                    staged.join(" and ")
                )
            }
        }
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
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

/// [`check`], and the source's own word on its read: when the directory
/// cannot say who is absent (`Directory::deletes_withheld`) and the plan
/// holds deletes, one [`BlockReason::DeletesWithheld`] per cause, first.
/// `allow_deletes` lifts none of these.
pub fn check_source(
    plan: &Plan,
    directory: &Directory,
    policy: &Policy,
    allow_deletes: bool,
) -> Vec<BlockReason> {
    let (user_deletes, customer_deletes) = (plan.user_deletes(), plan.customer_deletes());
    let mut reasons = Vec::new();
    if directory.withholds_deletes() && user_deletes + customer_deletes > 0 {
        reasons.extend(
            directory
                .deletes_withheld
                .iter()
                .map(|w| BlockReason::DeletesWithheld {
                    origin: w.origin.clone(),
                    cause: w.cause.clone(),
                    user_deletes,
                    customer_deletes,
                }),
        );
    }
    // Withheld deletes are not sent, so the delete budgets have nothing to
    // weigh; the source checks (empty, shrunken) still stop everything.
    let lift_budgets = allow_deletes || !reasons.is_empty();
    reasons.extend(check(plan, policy, lift_budgets));
    reasons
}

/// What may be sent, given the guard's reasons: the whole plan when there
/// are none; the plan without its deletes (and recreates, which start with
/// one) when every reason withholds deletes only; nothing (None) otherwise.
pub fn sendable<'p>(plan: &'p Plan, reasons: &[BlockReason]) -> Option<Cow<'p, Plan>> {
    if reasons.is_empty() {
        return Some(Cow::Borrowed(plan));
    }
    if !reasons.iter().all(BlockReason::withholds_deletes_only) {
        return None;
    }
    let mut kept = plan.clone();
    kept.operations.retain(|op| {
        !matches!(
            op,
            Operation::DeleteUser { .. }
                | Operation::DeleteCustomer { .. }
                | Operation::RecreateUser { .. }
        )
    });
    Some(Cow::Owned(kept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::Withheld;
    use crate::model::PlatformId;
    use crate::plan::{CustomerCreate, Scope};

    fn plan_with(user_deletes: usize, managed_users: usize, directory_users: usize) -> Plan {
        Plan {
            operations: (0..user_deletes)
                .map(|i| Operation::DeleteUser {
                    id: PlatformId::from(format!("id-{i}")),
                    external_id: format!("u-{i}"),
                    email: format!("u{i}@x.io"),
                    customer_external_id: None,
                    why: crate::plan::DeleteReason::Absent,
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

    fn withholding(cause: &str) -> Directory {
        Directory {
            deletes_withheld: vec![Withheld {
                origin: Origin::Line {
                    file: std::path::Path::new("users.csv").into(),
                    line: 21,
                },
                cause: cause.to_owned(),
            }],
            ..Directory::default()
        }
    }

    #[test]
    fn a_read_that_cannot_say_who_is_absent_withholds_deletes_even_with_allow_deletes() {
        let p = policy(1000, 100.0);
        let d = withholding("the last line has no line terminator");
        let reasons = check_source(&plan_with(3, 100, 97), &d, &p, true);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert_eq!(
            reasons[0].to_string(),
            "users.csv:21: the last line has no line terminator: deletes withheld this run (3 user deletes staged; --allow-deletes does not lift this)"
        );
        assert!(
            check_source(&plan_with(0, 100, 100), &d, &p, false).is_empty(),
            "nothing to withhold: nothing blocked"
        );
        assert!(check_source(&plan_with(3, 100, 97), &Directory::default(), &p, false).is_empty());
    }

    #[test]
    fn withheld_deletes_leave_creates_and_updates_sendable_and_other_blocks_send_nothing() {
        let mut plan = plan_with(2, 100, 98);
        plan.operations.insert(
            0,
            Operation::CreateCustomer(CustomerCreate {
                external_id: "c-new".to_owned(),
                name: "New".to_owned(),
                description: None,
                labels: None,
            }),
        );
        let d = withholding("changed while read");
        let reasons = check_source(&plan, &d, &policy(1000, 100.0), false);
        let send = sendable(&plan, &reasons).expect("creates may go on");
        assert_eq!(send.operations.len(), 1);
        assert_eq!(send.user_deletes(), 0);
        assert_eq!(sendable(&plan, &[]).map(|p| p.operations.len()), Some(3));
        // The deletes are not sent, so their budget has nothing to weigh.
        let budget = check_source(&plan, &d, &policy(1, 100.0), false);
        assert_eq!(budget.len(), 1, "{budget:?}");
        assert!(sendable(&plan, &budget).is_some());
        // A shrunken source still stops everything.
        let shrink = Policy {
            max_shrink_percent: 1.0,
            ..policy(1000, 100.0)
        };
        let shrunk = check_source(&plan, &d, &shrink, false);
        assert_eq!(shrunk.len(), 2, "{shrunk:?}");
        assert!(
            sendable(&plan, &shrunk).is_none(),
            "a shrink block sends nothing"
        );
        // Without withheld deletes the budget blocks as ever.
        let budget = check_source(&plan, &Directory::default(), &policy(1, 100.0), false);
        assert!(sendable(&plan, &budget).is_none(), "{budget:?}");
    }
}
