//! What a customer holds (every user, embedded marketplace users included,
//! and its deployed instances), read only for the customers a plan would
//! delete: the platform deletes a customer together with all of it, and
//! `users(customer_Isnull: false)` does not list marketplace users.

use std::collections::BTreeMap;

use super::client::PlatformClient;
use super::error::PlatformError;
use super::operations::{customer_holdings, CustomerHoldings as HoldingsQuery};
use crate::model::{CustomerHoldings, PlatformId};

impl PlatformClient {
    /// What each of `customers` holds. A customer that no longer exists is
    /// left out (the planner then keeps it: what it holds is unknown).
    pub async fn customer_holdings(
        &self,
        customers: &[PlatformId],
    ) -> Result<BTreeMap<PlatformId, CustomerHoldings>, PlatformError> {
        let mut holdings = BTreeMap::new();
        for id in customers {
            let answer = self
                .execute::<HoldingsQuery>(customer_holdings::Variables {
                    customer: id.to_string(),
                })
                .await;
            let data = match answer {
                // Gone since the snapshot: the platform answers an unknown id
                // with a top-level error (or, as the emulator may, null).
                Err(e) if e.is_not_found() => continue,
                other => other?,
            };
            if let Some(customer) = data.customer {
                holdings.insert(
                    id.clone(),
                    CustomerHoldings {
                        users: count(customer.users.total_count),
                        instances: count(customer.instances.total_count),
                    },
                );
            }
        }
        Ok(holdings)
    }
}

/// A `totalCount` as a count (a negative one, which no platform sends, as 0
/// would under-count: it is read as the most, so nothing is deleted on it).
fn count(total: i64) -> u64 {
    u64::try_from(total).unwrap_or(u64::MAX)
}
