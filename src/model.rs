//! The crate's own vocabulary for platform records.
//!
//! Everything outside `src/platform/` speaks these types; the GraphQL types
//! that `graphql_client` generates are converted into them at the platform
//! boundary and never leak further (ARCHITECTURE.md, invariant 7).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// An opaque platform id (a Relay global id such as base64 of `Customer:<uuid>`).
///
/// Shared, not copied: a million users name some thousands of customers, and
/// each user's `customer_id` is the same allocation as its customer's id
/// within a read (a clone is a reference count).
#[derive(Clone, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlatformId(pub Arc<str>);

/// The same allocation is the same id without reading it (a user's
/// customer id and its customer's, within a read); otherwise by text.
impl PartialEq for PlatformId {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

/// By text, as equality is.
impl std::hash::Hash for PlatformId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PlatformId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PlatformId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PlatformId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlatformId({})", self.0)
    }
}

impl From<&str> for PlatformId {
    fn from(s: &str) -> Self {
        PlatformId(s.into())
    }
}

impl From<String> for PlatformId {
    fn from(s: String) -> Self {
        PlatformId(s.into())
    }
}

/// A customer user role as the platform lists it in `customerRoles`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub id: PlatformId,
    pub name: String,
}

/// A customer (tenant) as read from the platform.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformCustomer {
    pub id: PlatformId,
    pub external_id: Option<String>,
    pub name: String,
    pub description: String,
    /// As stored (the platform lowercases labels); `[]` when the platform sends null.
    pub labels: Vec<String>,
    /// When the platform last changed the record (`updatedAt`), where it was
    /// read. Never compared by the planner (it is no desired field); a saved
    /// plan records it and `dirsync apply` refuses when it moved.
    #[serde(default)]
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A customer user as read from the platform.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformUser {
    pub id: PlatformId,
    pub external_id: Option<String>,
    pub email: String,
    pub name: String,
    pub phone: String,
    /// Shared by every user with that role (one allocation per role, not per user).
    pub role: Arc<Role>,
    pub customer_id: PlatformId,
    /// The owning customer's externalId, when it has one.
    pub customer_external_id: Option<String>,
    /// When the platform last changed the record (`updatedAt`), where it was
    /// read; never compared by the planner.
    #[serde(default)]
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The token's own user, as `authenticatedUser` returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticatedUser {
    pub id: PlatformId,
    pub email: String,
    pub name: String,
    /// Set when the token belongs to a customer user rather than an organization user.
    pub customer_id: Option<PlatformId>,
}

/// The platform's view: the actual state that a plan starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every non-system customer, managed or not.
    pub customers: Vec<PlatformCustomer>,
    /// Every customer user (never organization users, never embedded marketplace users).
    pub users: Vec<PlatformUser>,
    pub roles: Vec<Role>,
    /// What each customer that the plan would delete holds, read just for
    /// those customers (a customer delete takes all of it). A customer
    /// missing here is never deleted: what it holds is unknown.
    #[serde(default)]
    pub holdings: BTreeMap<PlatformId, CustomerHoldings>,
}

/// What a customer holds on the platform, and a delete would take with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerHoldings {
    /// Every user of the customer, embedded marketplace users included.
    pub users: u64,
    /// Deployed integration instances.
    pub instances: u64,
}

/// Fields for `createCustomer`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewCustomer {
    pub name: String,
    pub description: Option<String>,
    pub external_id: Option<String>,
    pub labels: Option<Vec<String>>,
}

/// Fields for `updateCustomer`: `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub external_id: Option<String>,
    pub labels: Option<Vec<String>>,
}

/// Fields for `createCustomerUser`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewCustomerUser {
    pub customer_id: PlatformId,
    pub email: String,
    pub role_id: PlatformId,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub external_id: Option<String>,
}

/// Fields for `updateUser`: `None` leaves a field as it is. The platform has
/// no way to change a user's email or customer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserChanges {
    pub name: Option<String>,
    pub phone: Option<String>,
    pub role_id: Option<PlatformId>,
    pub external_id: Option<String>,
}
