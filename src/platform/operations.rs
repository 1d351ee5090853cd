//! The typed GraphQL operations (generated at build time by `graphql_client`
//! from `graphql/*.graphql`) and their conversion into `model` types.
//!
//! This is the only module that names a generated type; nothing generated
//! leaves `src/platform/`.

use graphql_client::GraphQLQuery;

use super::error::{FieldError, PlatformError};
use crate::model::{PlatformCustomer, PlatformId, PlatformUser, Role};

/// The schema's custom scalar; dirsync never reads a date, so it stays text.
#[allow(clippy::upper_case_acronyms, dead_code)]
type DateTime = String;

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

/// Every generated customer selection has the same five fields; one macro
/// converts each of them.
macro_rules! customer_from {
    ($ty:ty) => {
        impl From<$ty> for PlatformCustomer {
            fn from(c: $ty) -> Self {
                PlatformCustomer {
                    id: PlatformId(c.id),
                    external_id: c.external_id,
                    name: c.name,
                    description: c.description,
                    labels: c.labels.unwrap_or_default(),
                }
            }
        }
    };
}

customer_from!(list_customers::CustomerFields);
customer_from!(find_customer::FindCustomerCustomersNodes);
customer_from!(create_customer::CreateCustomerCreateCustomerCustomer);
customer_from!(update_customer::UpdateCustomerUpdateCustomerCustomer);

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
                Ok(PlatformUser {
                    id: PlatformId(u.id),
                    external_id: u.external_id,
                    email: u.email,
                    name: u.name,
                    phone: u.phone,
                    role: std::sync::Arc::new(Role {
                        id: PlatformId(u.role.id),
                        name: u.role.name,
                    }),
                    customer_id: PlatformId(customer.id),
                    customer_external_id: customer.external_id,
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

impl From<customer_roles::CustomerRolesCustomerRoles> for Role {
    fn from(r: customer_roles::CustomerRolesCustomerRoles) -> Self {
        Role {
            id: PlatformId(r.id),
            name: r.name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published schema documents no default for
    /// `includeMarketplaceUsers`: the listing dirsync plans from must say
    /// `false`, and the holdings read before a customer delete `true`.
    #[test]
    fn marketplace_users_are_asked_for_explicitly() {
        let listing = ListCustomerUsers::build_query(list_customer_users::Variables {
            after: None,
            first: 100,
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
