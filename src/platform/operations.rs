//! The typed GraphQL operations (generated at build time by `graphql_client`
//! from `graphql/*.graphql`) and their conversion into `model` types.
//!
//! This is the only module that names a generated type; nothing generated
//! leaves `src/platform/`.

use graphql_client::GraphQLQuery;

use super::error::{FieldError, PlatformError};
use crate::model::{PlatformCustomer, PlatformId, PlatformUser, Role};

/// The schema's custom scalar, as the platform writes it; read into a
/// `chrono` time by [`updated_at`].
#[allow(clippy::upper_case_acronyms, dead_code)]
type DateTime = String;

/// A record's `updatedAt`: RFC 3339 (`2024-05-01T12:34:56.123456+00:00`),
/// or an ISO 8601 time without an offset, read as UTC. Anything else is a
/// protocol error, never a silently missing time: `dirsync apply` compares
/// it to refuse a plan whose records changed.
pub fn updated_at(
    operation: &'static str,
    id: &str,
    text: &str,
) -> Result<chrono::DateTime<chrono::Utc>, PlatformError> {
    use chrono::{DateTime, NaiveDateTime, Utc};
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc())
        })
        .map_err(|_| PlatformError::Protocol {
            operation,
            detail: format!("record {id} has updatedAt {text:?}, which is not an ISO 8601 time"),
        })
}

// rustfmt re-indents attributes inside this macro on every run; keep it as written.
#[rustfmt::skip]
macro_rules! operation {
    ($name:ident, $file:literal) => {
        #[derive(GraphQLQuery)]
        #[graphql(
            schema_path = "graphql/schema.graphql",
            query_path = $file,
            response_derives = "Debug",
            variables_derives = "Debug",
            skip_serializing_none
        )]
        pub struct $name;
    };
}

operation!(ListCustomers, "graphql/list_customers.graphql");
operation!(ListCustomerUsers, "graphql/list_customer_users.graphql");
operation!(FindCustomer, "graphql/find_customer.graphql");
operation!(FindCustomerUser, "graphql/find_customer_user.graphql");
operation!(CustomerRoles, "graphql/customer_roles.graphql");
operation!(AuthenticatedUser, "graphql/authenticated_user.graphql");
operation!(CreateCustomer, "graphql/create_customer.graphql");
operation!(UpdateCustomer, "graphql/update_customer.graphql");
operation!(DeleteCustomer, "graphql/delete_customer.graphql");
operation!(CreateCustomerUser, "graphql/create_customer_user.graphql");
operation!(UpdateUser, "graphql/update_user.graphql");
operation!(DeleteUser, "graphql/delete_user.graphql");
operation!(CustomerHoldings, "graphql/customer_holdings.graphql");
operation!(GetCustomer, "graphql/get_customer.graphql");
operation!(GetUser, "graphql/get_user.graphql");
operation!(ChangedSince, "graphql/changed_since.graphql");
operation!(FirstPages, "graphql/first_pages.graphql");

/// Every generated customer selection has the same six fields; one macro
/// converts each of them (an `updatedAt` that is no time is a protocol error).
macro_rules! customer_from {
    ($ty:ty, $op:literal) => {
        impl TryFrom<$ty> for PlatformCustomer {
            type Error = PlatformError;
            fn try_from(c: $ty) -> Result<Self, PlatformError> {
                let updated_at = updated_at($op, &c.id, &c.updated_at)?;
                Ok(PlatformCustomer {
                    id: PlatformId::from(c.id),
                    external_id: c.external_id,
                    name: c.name,
                    description: c.description,
                    labels: c.labels.unwrap_or_default(),
                    updated_at: Some(updated_at),
                })
            }
        }
    };
}

customer_from!(list_customers::CustomerFields, "ListCustomers");
customer_from!(find_customer::FindCustomerCustomersNodes, "FindCustomer");
customer_from!(
    create_customer::CreateCustomerCreateCustomerCustomer,
    "createCustomer"
);
customer_from!(
    update_customer::UpdateCustomerUpdateCustomerCustomer,
    "updateCustomer"
);
customer_from!(get_customer::GetCustomerCustomer, "GetCustomer");
customer_from!(changed_since::CustomerFields, "ChangedSince");
customer_from!(first_pages::CustomerFields, "FirstPages");

/// Every generated user selection has the same fields; a customer user must
/// have a customer, so a null one is a protocol error, not a panic.
macro_rules! user_from {
    ($ty:ty, $op:literal) => {
        impl TryFrom<$ty> for PlatformUser {
            type Error = PlatformError;
            fn try_from(u: $ty) -> Result<Self, PlatformError> {
                let customer = u.customer.ok_or_else(|| PlatformError::Protocol {
                    operation: $op,
                    detail: format!("user {} came back without a customer", u.id),
                })?;
                let updated_at = updated_at($op, &u.id, &u.updated_at)?;
                Ok(PlatformUser {
                    id: PlatformId::from(u.id),
                    external_id: u.external_id,
                    email: u.email,
                    name: u.name,
                    phone: u.phone,
                    role: std::sync::Arc::new(Role {
                        id: PlatformId::from(u.role.id),
                        name: u.role.name,
                    }),
                    customer_id: PlatformId::from(customer.id),
                    customer_external_id: customer.external_id,
                    updated_at: Some(updated_at),
                })
            }
        }
    };
}

user_from!(list_customer_users::UserFields, "ListCustomerUsers");
user_from!(
    find_customer_user::FindCustomerUserUsersNodes,
    "FindCustomerUser"
);
user_from!(
    create_customer_user::CreateCustomerUserCreateCustomerUserUser,
    "createCustomerUser"
);
user_from!(update_user::UpdateUserUpdateUserUser, "updateUser");
user_from!(get_user::GetUserUser, "GetUser");
user_from!(changed_since::UserFields, "ChangedSince");
user_from!(first_pages::UserFields, "FirstPages");

/// Every payload's `errors` selection is `{ field messages }`.
macro_rules! field_errors_from {
    ($($ty:ty),* $(,)?) => {
        $(impl From<$ty> for FieldError {
            fn from(e: $ty) -> Self {
                FieldError { field: e.field, messages: e.messages }
            }
        })*
    };
}

field_errors_from!(
    create_customer::CreateCustomerCreateCustomerErrors,
    update_customer::UpdateCustomerUpdateCustomerErrors,
    delete_customer::DeleteCustomerDeleteCustomerErrors,
    create_customer_user::CreateCustomerUserCreateCustomerUserErrors,
    update_user::UpdateUserUpdateUserErrors,
    delete_user::DeleteUserDeleteUserErrors,
);

/// Reads a mutation payload the same way for all six mutations: a missing
/// payload or a non-empty `errors` list is an error; otherwise the object.
pub fn payload_object<E, O>(
    operation: &'static str,
    payload: Option<(Vec<E>, Option<O>)>,
) -> Result<O, PlatformError>
where
    FieldError: From<E>,
{
    let (errors, object) = payload.ok_or_else(|| PlatformError::Protocol {
        operation,
        detail: "the platform returned no payload".to_owned(),
    })?;
    if !errors.is_empty() {
        return Err(PlatformError::Validation {
            operation,
            errors: errors.into_iter().map(FieldError::from).collect(),
        });
    }
    object.ok_or_else(|| PlatformError::Protocol {
        operation,
        detail: "the payload has neither errors nor an object".to_owned(),
    })
}

/// Both role selections are `{ id name }`.
macro_rules! role_from {
    ($($ty:ty),* $(,)?) => {
        $(impl From<$ty> for Role {
            fn from(r: $ty) -> Self {
                Role { id: PlatformId::from(r.id), name: r.name }
            }
        })*
    };
}

role_from!(
    customer_roles::CustomerRolesCustomerRoles,
    changed_since::ChangedSinceCustomerRoles,
    first_pages::FirstPagesCustomerRoles,
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The published schema documents no default for
    /// `includeMarketplaceUsers`: the listing dirsync plans from must say
    /// `false`, and the holdings read before a customer delete `true`.
    #[test]
    fn marketplace_users_are_asked_for_explicitly() {
        let listing = ListCustomerUsers::build_query(list_customer_users::Variables {
            offset: None,
            first: 100,
            updated_since: None,
        });
        assert!(
            listing.query.contains("includeMarketplaceUsers: false"),
            "{}",
            listing.query
        );
        let holdings = CustomerHoldings::build_query(customer_holdings::Variables {
            customer: "Q3VzdG9tZXI6MQ==".to_owned(),
        });
        assert!(
            holdings.query.contains("includeMarketplaceUsers: true"),
            "{}",
            holdings.query
        );
        assert!(holdings.query.contains("instances"), "{}", holdings.query);
    }
}
