//! `policy:`: what dirsync may touch and how much it may change in one run:
//! the scope (`external_id_prefix`), the change policies, the delete budgets,
//! the shrink guard and the refused-records cap.

use serde::Deserialize;

use super::{default_four, Checker, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    external_id_prefix: Option<String>,
    #[serde(default)]
    email_change: ChangePolicy,
    #[serde(default)]
    adopt: bool,
    #[serde(default)]
    delete_users: RawBudget,
    #[serde(default)]
    delete_customers: RawCustomerBudget,
    #[serde(default = "default_shrink")]
    max_shrink_percent: f64,
    #[serde(default = "default_four")]
    apply_concurrency: usize,
    #[serde(default)]
    refused_records: RawRefusedCap,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            external_id_prefix: None,
            email_change: ChangePolicy::default(),
            adopt: false,
            delete_users: RawBudget::default(),
            delete_customers: RawCustomerBudget::default(),
            max_shrink_percent: default_shrink(),
            apply_concurrency: default_four(),
            refused_records: RawRefusedCap::default(),
        }
    }
}

fn default_shrink() -> f64 {
    20.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    #[serde(default = "default_user_delete_count")]
    max_count: usize,
    #[serde(default = "default_user_delete_percent")]
    max_percent: f64,
}

fn default_user_delete_count() -> usize {
    100
}
fn default_user_delete_percent() -> f64 {
    10.0
}

impl Default for RawBudget {
    fn default() -> Self {
        RawBudget {
            max_count: default_user_delete_count(),
            max_percent: default_user_delete_percent(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomerBudget {
    #[serde(default)]
    enabled: bool,
    #[serde(default = "default_customer_delete_count")]
    max_count: usize,
    #[serde(default = "default_customer_delete_percent")]
    max_percent: f64,
    /// Whether a customer with deployed instances may be deleted (with them).
    #[serde(default)]
    with_instances: bool,
}

fn default_customer_delete_count() -> usize {
    2
}
fn default_customer_delete_percent() -> f64 {
    2.0
}

impl Default for RawCustomerBudget {
    fn default() -> Self {
        RawCustomerBudget {
            enabled: false,
            max_count: default_customer_delete_count(),
            max_percent: default_customer_delete_percent(),
            with_instances: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRefusedCap {
    #[serde(default = "default_refused_percent")]
    max_percent: f64,
    #[serde(default = "default_refused_count")]
    max_count: usize,
}

fn default_refused_percent() -> f64 {
    1.0
}
fn default_refused_count() -> usize {
    10
}

impl Default for RawRefusedCap {
    fn default() -> Self {
        RawRefusedCap {
            max_percent: default_refused_percent(),
            max_count: default_refused_count(),
        }
    }
}

/// What to do when a user's email or customer changed in the directory;
/// the platform cannot update either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangePolicy {
    /// Show it in the plan as drift that needs a decision; change nothing.
    #[default]
    Report,
    /// Delete the user and create it again (new id, new confirmation email).
    Recreate,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    pub max_count: usize,
    pub max_percent: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub external_id_prefix: Option<String>,
    pub email_change: ChangePolicy,
    pub adopt: bool,
    pub delete_users: Budget,
    /// None: customer deletes are off.
    pub delete_customers: Option<Budget>,
    /// `delete_customers.with_instances`: a customer with deployed instances
    /// may be deleted (by default it is kept).
    pub delete_customers_with_instances: bool,
    pub max_shrink_percent: f64,
    pub apply_concurrency: usize,
    pub refused_records: Budget,
}

impl Default for Policy {
    fn default() -> Self {
        let raw = RawPolicy::default();
        Policy {
            external_id_prefix: None,
            email_change: raw.email_change,
            adopt: raw.adopt,
            delete_users: Budget {
                max_count: raw.delete_users.max_count,
                max_percent: raw.delete_users.max_percent,
            },
            delete_customers: None,
            delete_customers_with_instances: false,
            max_shrink_percent: raw.max_shrink_percent,
            apply_concurrency: raw.apply_concurrency,
            refused_records: Budget {
                max_count: raw.refused_records.max_count,
                max_percent: raw.refused_records.max_percent,
            },
        }
    }
}

impl Policy {
    /// Whether a platform record with this externalId is dirsync's to manage.
    pub fn in_scope(&self, external_id: Option<&str>) -> bool {
        match (external_id, &self.external_id_prefix) {
            (None, _) => false,
            (Some(""), _) => false,
            (Some(_), None) => true,
            (Some(x), Some(prefix)) => x.starts_with(prefix.as_str()),
        }
    }
}

pub(super) fn validate_policy(c: &Checker<'_>, pol: RawPolicy) -> Result<Policy, ConfigError> {
    if pol.apply_concurrency == 0 {
        return Err(c.invalid("policy.apply_concurrency", "must be at least 1"));
    }
    let policy = Policy {
        external_id_prefix: pol.external_id_prefix.filter(|p| !p.is_empty()),
        email_change: pol.email_change,
        adopt: pol.adopt,
        delete_users: Budget {
            max_count: pol.delete_users.max_count,
            max_percent: c.percent(
                "policy.delete_users.max_percent",
                pol.delete_users.max_percent,
            )?,
        },
        delete_customers: pol.delete_customers.enabled.then_some(()).map(|_| Budget {
            max_count: pol.delete_customers.max_count,
            max_percent: pol.delete_customers.max_percent,
        }),
        delete_customers_with_instances: pol.delete_customers.with_instances,
        max_shrink_percent: c.percent("policy.max_shrink_percent", pol.max_shrink_percent)?,
        apply_concurrency: pol.apply_concurrency,
        refused_records: Budget {
            max_count: pol.refused_records.max_count,
            max_percent: c.percent(
                "policy.refused_records.max_percent",
                pol.refused_records.max_percent,
            )?,
        },
    };
    c.percent(
        "policy.delete_customers.max_percent",
        pol.delete_customers.max_percent,
    )?;
    Ok(policy)
}
