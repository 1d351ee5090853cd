//! The incremental read: what changed on the platform at or after a time,
//! with how many customers and customer users it holds now, in one request
//! (`graphql/changed_since.graphql`) when fewer than a page of each changed.
//!
//! Deletes leave no trace in `updatedAt`; the counts are what reveals them
//! (`crate::platform_view` compares them with the stored snapshot plus
//! these changes, and reads in full when they differ).

use chrono::{DateTime, SecondsFormat, Utc};

use super::client::{share_common, Page, PlatformClient};
use super::error::PlatformError;
use super::operations::{changed_since, ChangedSince};
use crate::model::{PlatformCustomer, PlatformUser, Role};

/// What changed on the platform at or after a time, and its counts now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changes {
    /// Non-system customers on the platform (`customers(isSystem: false)`).
    pub customer_count: u64,
    /// Customer users on the platform (the full listing's filters).
    pub user_count: u64,
    /// Customers changed (or created) at or after the time, platform order.
    pub customers: Vec<PlatformCustomer>,
    /// Customer users changed (or created) at or after the time.
    pub users: Vec<PlatformUser>,
    /// The roles, read again each time (they are few).
    pub roles: Vec<Role>,
}

/// A `DateTime` argument as the platform reads it: RFC 3339 with an
/// explicit `+00:00` offset (not `Z`, which older ISO 8601 parsers refuse),
/// to the microsecond.
pub fn datetime_argument(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

impl PlatformClient {
    /// The counts, the records changed at or after `since`, and the roles:
    /// one request, plus the further pages of a changed list longer than a
    /// page (read as the full listings are, every shift refused).
    pub async fn changes_since(&self, since: DateTime<Utc>) -> Result<Changes, PlatformError> {
        let since = datetime_argument(since);
        let data = self
            .execute::<ChangedSince>(changed_since::Variables {
                since: since.clone(),
                first: self.page_size(),
            })
            .await?;
        let count = |name: &str, n: i64| {
            u64::try_from(n).map_err(|_| PlatformError::Protocol {
                operation: "ChangedSince",
                detail: format!("{name} totalCount is {n}"),
            })
        };
        let customer_count = count("customers", data.customer_count.total_count)?;
        let user_count = count("users", data.user_count.total_count)?;
        let (c, u) = (data.changed_customers, data.changed_users);
        let customers_page: Page<PlatformCustomer> =
            Page::of(c.nodes, c.page_info.has_next_page, c.total_count)?;
        let users_page: Page<PlatformUser> =
            Page::of(u.nodes, u.page_info.has_next_page, u.total_count)?;
        let roles = data
            .customer_roles
            .into_iter()
            .flatten()
            .map(Role::from)
            .collect();
        let (customers, users) = tokio::try_join!(
            self.more_customers(customers_page, Some(&since)),
            self.more_customer_users(users_page, Some(&since)),
        )?;
        Ok(Changes {
            customer_count,
            user_count,
            customers,
            users: share_common(users),
            roles,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datetime_argument_has_an_explicit_offset_and_microseconds() {
        let t = DateTime::parse_from_rfc3339("2026-12-01T10:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(datetime_argument(t), "2026-12-01T10:00:00.500000+00:00");
    }
}
