//! The emulator's GraphQL schema (async-graphql), written to match
//! `graphql/schema.graphql` name for name and type for type; the contract
//! test compares the two.
//!
//! Resolvers read and change the shared [`Store`]; lists are Relay
//! connections with offset cursors (`arrayconnection:N`, as the platform's
//! graphene server does) and at most 100 nodes a page.

use std::cmp::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use async_graphql::{
    Context, EmptySubscription, Enum, Error, InputObject, Object, Result, Schema, SimpleObject, ID,
};
use base64::Engine;
use chrono::{DateTime, Utc};

use super::store::{
    CustomerUpdateInput, NewCustomerInput, NewUserInput, Refusal, RoleKind, State, Store,
    StoredCustomer, StoredInstance, StoredRole, StoredUser, UserUpdateInput,
};

pub type EmulatorSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// The store as resolvers see it.
pub type SharedStore = Arc<Mutex<Store>>;

pub fn build_schema(store: SharedStore) -> EmulatorSchema {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .data(store)
        .finish()
}

/// The emulator's schema in SDL, for the contract test.
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .finish()
        .sdl()
}

fn lock<'a>(ctx: &'a Context<'_>) -> Result<MutexGuard<'a, Store>> {
    ctx.data::<SharedStore>()?
        .lock()
        .map_err(|_| Error::new("internal error: the store is poisoned"))
}

/// Most nodes the platform returns in one page.
const MAX_PAGE: usize = 100;

#[derive(SimpleObject, Clone)]
#[graphql(name = "PageInfo")]
pub struct PageInfo {
    has_next_page: bool,
    has_previous_page: bool,
    start_cursor: Option<String>,
    end_cursor: Option<String>,
}

#[derive(SimpleObject, Clone)]
#[graphql(name = "Role")]
pub struct RoleObj {
    id: ID,
    name: String,
    description: String,
    level: i32,
}

impl From<&StoredRole> for RoleObj {
    fn from(r: &StoredRole) -> Self {
        RoleObj {
            id: ID(r.id.clone()),
            name: r.name.clone(),
            description: r.description.clone(),
            level: r.level,
        }
    }
}

#[derive(Clone)]
pub struct CustomerObj(StoredCustomer);

#[derive(Default)]
struct UserFilter {
    customer: Option<String>,
    customer_isnull: Option<bool>,
    email: Option<String>,
    email_icontains: Option<String>,
    external_id: Option<String>,
    external_id_isnull: Option<bool>,
    name: Option<String>,
    name_icontains: Option<String>,
    include_marketplace_users: Option<bool>,
    created_at_gte: Option<DateTime<Utc>>,
    created_at_lte: Option<DateTime<Utc>>,
    updated_at_gte: Option<DateTime<Utc>>,
    updated_at_lte: Option<DateTime<Utc>>,
}

fn icontains(haystack: &str, needle: &Option<String>) -> bool {
    needle
        .as_ref()
        .is_none_or(|n| haystack.to_lowercase().contains(&n.to_lowercase()))
}

fn eq_opt(value: &str, wanted: &Option<String>) -> bool {
    wanted.as_ref().is_none_or(|w| value == w)
}

fn isnull(value: &Option<String>, wanted: Option<bool>) -> bool {
    wanted.is_none_or(|w| value.is_none() == w)
}

fn in_range(t: DateTime<Utc>, gte: Option<DateTime<Utc>>, lte: Option<DateTime<Utc>>) -> bool {
    gte.is_none_or(|g| t >= g) && lte.is_none_or(|l| t <= l)
}

impl UserFilter {
    fn matches(&self, u: &StoredUser) -> bool {
        // Embedded marketplace users are listed only when asked for.
        (self.include_marketplace_users == Some(true) || !u.marketplace)
            && self
                .customer
                .as_ref()
                .is_none_or(|c| u.customer_id.as_ref() == Some(c))
            && self
                .customer_isnull
                .is_none_or(|w| u.customer_id.is_none() == w)
            && self
                .email
                .as_ref()
                .is_none_or(|e| u.email.eq_ignore_ascii_case(e))
            && icontains(&u.email, &self.email_icontains)
            && u.external_id
                .as_ref()
                .map_or(self.external_id.is_none(), |x| eq_opt(x, &self.external_id))
            && isnull(&u.external_id, self.external_id_isnull)
            && eq_opt(&u.name, &self.name)
            && icontains(&u.name, &self.name_icontains)
            && in_range(u.created_at, self.created_at_gte, self.created_at_lte)
            && in_range(u.updated_at, self.updated_at_gte, self.updated_at_lte)
    }
}

#[Object(name = "Customer")]
impl CustomerObj {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn external_id(&self) -> Option<&str> {
        self.0.external_id.as_deref()
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    async fn labels(&self) -> Option<Vec<String>> {
        Some(self.0.labels.clone())
    }
    async fn avatar_url(&self) -> Option<&str> {
        self.0.avatar_url.as_deref()
    }
    async fn allow_embedded_designer(&self) -> bool {
        self.0.allow_embedded_designer
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    #[allow(clippy::too_many_arguments)]
    async fn users(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
        offset: Option<i32>,
        email: Option<String>,
        external_id: Option<String>,
        #[graphql(name = "externalId_Isnull")] external_id_isnull: Option<bool>,
        include_marketplace_users: Option<bool>,
    ) -> Result<UserConnection> {
        let filter = UserFilter {
            customer: Some(self.0.id.clone()),
            email,
            external_id,
            external_id_isnull,
            include_marketplace_users,
            ..UserFilter::default()
        };
        let store = lock(ctx)?;
        let state = store.state();
        let users: Vec<&StoredUser> = state.users.values().filter(|u| filter.matches(u)).collect();
        let window = Window::new(after, before, first, last, offset)?;
        Ok(UserConnection::from_page(
            window.slice(&users, |u| UserObj::new(state, u))?,
        ))
    }
    /// The customer's deployed integration instances.
    async fn instances(
        &self,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
        offset: Option<i32>,
    ) -> Result<InstanceConnection> {
        let window = Window::new(after, before, first, last, offset)?;
        let instances: Vec<&StoredInstance> = self.0.instances.iter().collect();
        Ok(InstanceConnection::from_page(window.slice(
            &instances,
            |i| InstanceObj {
                id: ID(i.id.clone()),
                name: i.name.clone(),
            },
        )?))
    }
}

/// A deployed integration instance (only what dirsync reads of it).
#[derive(SimpleObject, Clone)]
#[graphql(name = "Instance")]
pub struct InstanceObj {
    id: ID,
    name: String,
}

#[derive(Clone)]
pub struct UserObj {
    user: StoredUser,
    role: RoleObj,
    customer: Option<CustomerObj>,
}

impl UserObj {
    fn new(state: &State, u: &StoredUser) -> UserObj {
        let role = state
            .role(&u.role_id)
            .map(RoleObj::from)
            .unwrap_or(RoleObj {
                id: ID(u.role_id.clone()),
                name: String::new(),
                description: String::new(),
                level: 0,
            });
        UserObj {
            user: u.clone(),
            role,
            customer: u
                .customer_id
                .as_ref()
                .and_then(|c| state.customers.get(c))
                .map(|c| CustomerObj(c.clone())),
        }
    }
}

#[Object(name = "User")]
impl UserObj {
    async fn id(&self) -> ID {
        ID(self.user.id.clone())
    }
    async fn external_id(&self) -> Option<&str> {
        self.user.external_id.as_deref()
    }
    async fn email(&self) -> &str {
        &self.user.email
    }
    async fn name(&self) -> &str {
        &self.user.name
    }
    async fn phone(&self) -> &str {
        &self.user.phone
    }
    async fn role(&self) -> &RoleObj {
        &self.role
    }
    async fn customer(&self) -> Option<&CustomerObj> {
        self.customer.as_ref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.user.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.user.updated_at
    }
    async fn avatar_url(&self) -> Option<&str> {
        self.user.avatar_url.as_deref()
    }
}

/// One page cut out of a filtered, sorted list.
struct PageOf<T> {
    nodes: Vec<(String, T)>,
    info: PageInfo,
    total: usize,
}

/// The Relay window arguments, checked.
struct Window {
    after: Option<usize>,
    before: Option<usize>,
    first: Option<usize>,
    last: Option<usize>,
    offset: usize,
}

fn cursor(index: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("arrayconnection:{index}"))
}

fn decode_cursor(c: &str) -> Result<usize> {
    base64::engine::general_purpose::STANDARD
        .decode(c)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("arrayconnection:")?.parse().ok())
        .ok_or_else(|| Error::new(format!("Invalid cursor {c:?}")))
}

fn non_negative(name: &str, v: Option<i32>) -> Result<Option<usize>> {
    v.map(|n| {
        usize::try_from(n).map_err(|_| {
            Error::new(format!(
                "Argument \"{name}\" must be a non-negative integer."
            ))
        })
    })
    .transpose()
}

impl Window {
    fn new(
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
        offset: Option<i32>,
    ) -> Result<Window> {
        Ok(Window {
            after: after.as_deref().map(decode_cursor).transpose()?,
            before: before.as_deref().map(decode_cursor).transpose()?,
            first: non_negative("first", first)?,
            last: non_negative("last", last)?,
            offset: non_negative("offset", offset)?.unwrap_or(0),
        })
    }

    fn slice<T, O>(&self, items: &[T], to_node: impl Fn(&T) -> O) -> Result<PageOf<O>> {
        let total = items.len();
        let mut start = self.after.map_or(0, |a| a + 1).saturating_add(self.offset);
        let mut end = self.before.map_or(total, |b| b.min(total));
        start = start.min(end);
        // At most 100 nodes, whatever was asked for (100 is also the default).
        let first = self.first.unwrap_or(MAX_PAGE).min(MAX_PAGE);
        end = end.min(start + first);
        if let Some(last) = self.last {
            start = start.max(end.saturating_sub(last.min(MAX_PAGE)));
        }
        let nodes: Vec<(String, O)> = (start..end)
            .map(|i| (cursor(i), to_node(&items[i])))
            .collect();
        Ok(PageOf {
            info: PageInfo {
                has_next_page: end < total,
                has_previous_page: start > 0,
                start_cursor: nodes.first().map(|n| n.0.clone()),
                end_cursor: nodes.last().map(|n| n.0.clone()),
            },
            nodes,
            total,
        })
    }
}

macro_rules! connection {
    ($conn:ident, $conn_name:literal, $edge:ident, $edge_name:literal, $node:ty) => {
        #[derive(SimpleObject, Clone)]
        #[graphql(name = $edge_name)]
        pub struct $edge {
            cursor: String,
            node: Option<$node>,
        }

        #[derive(SimpleObject)]
        #[graphql(name = $conn_name)]
        pub struct $conn {
            nodes: Vec<Option<$node>>,
            edges: Vec<Option<$edge>>,
            page_info: PageInfo,
            total_count: i32,
        }

        impl $conn {
            fn from_page(page: PageOf<$node>) -> $conn {
                $conn {
                    nodes: page.nodes.iter().map(|(_, n)| Some(n.clone())).collect(),
                    edges: page
                        .nodes
                        .into_iter()
                        .map(|(cursor, node)| {
                            Some($edge {
                                cursor,
                                node: Some(node),
                            })
                        })
                        .collect(),
                    page_info: page.info,
                    total_count: i32::try_from(page.total).unwrap_or(i32::MAX),
                }
            }
        }
    };
}

connection!(
    CustomerConnection,
    "CustomerConnection",
    CustomerEdge,
    "CustomerEdge",
    CustomerObj
);
connection!(
    InstanceConnection,
    "InstanceConnection",
    InstanceEdge,
    "InstanceEdge",
    InstanceObj
);
connection!(
    UserConnection,
    "UserConnection",
    UserEdge,
    "UserEdge",
    UserObj
);

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "SortDirection")]
pub enum SortDirection {
    Asc,
    Desc,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "CustomerOrderField")]
pub enum CustomerOrderField {
    CreatedAt,
    Description,
    Name,
    UpdatedAt,
}

#[derive(InputObject, Clone, Copy)]
#[graphql(name = "CustomerOrder")]
pub struct CustomerOrder {
    field: CustomerOrderField,
    direction: SortDirection,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "UserOrderField")]
pub enum UserOrderField {
    CreatedAt,
    Customer,
    Email,
    Name,
    Role,
    UpdatedAt,
}

#[derive(InputObject, Clone, Copy)]
#[graphql(name = "UserOrder")]
pub struct UserOrder {
    field: UserOrderField,
    direction: SortDirection,
}

fn directed(o: Ordering, d: SortDirection) -> Ordering {
    match d {
        SortDirection::Asc => o,
        SortDirection::Desc => o.reverse(),
    }
}

/// `orderBy` first, then each `sortBy` entry; ties keep creation order, so
/// the order is total and pages never shift between requests.
fn sort_keys<O: Copy>(order_by: Option<O>, sort_by: Option<Vec<Option<O>>>) -> Vec<O> {
    order_by
        .into_iter()
        .chain(sort_by.unwrap_or_default().into_iter().flatten())
        .collect()
}

fn compare_customers(a: &StoredCustomer, b: &StoredCustomer, keys: &[CustomerOrder]) -> Ordering {
    for k in keys {
        let o = match k.field {
            CustomerOrderField::CreatedAt => a.created_at.cmp(&b.created_at),
            CustomerOrderField::Description => a.description.cmp(&b.description),
            CustomerOrderField::Name => a.name.cmp(&b.name),
            CustomerOrderField::UpdatedAt => a.updated_at.cmp(&b.updated_at),
        };
        let o = directed(o, k.direction);
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

fn compare_users(state: &State, a: &StoredUser, b: &StoredUser, keys: &[UserOrder]) -> Ordering {
    let customer_name = |u: &StoredUser| {
        u.customer_id
            .as_ref()
            .and_then(|c| state.customers.get(c))
            .map(|c| c.name.clone())
    };
    let role_name = |u: &StoredUser| state.role(&u.role_id).map(|r| r.name.clone());
    for k in keys {
        let o = match k.field {
            UserOrderField::CreatedAt => a.created_at.cmp(&b.created_at),
            UserOrderField::Customer => customer_name(a).cmp(&customer_name(b)),
            UserOrderField::Email => a.email.cmp(&b.email),
            UserOrderField::Name => a.name.cmp(&b.name),
            UserOrderField::Role => role_name(a).cmp(&role_name(b)),
            UserOrderField::UpdatedAt => a.updated_at.cmp(&b.updated_at),
        };
        let o = directed(o, k.direction);
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

#[derive(SimpleObject, Clone)]
#[graphql(name = "ErrorType")]
pub struct ErrorType {
    field: String,
    messages: Vec<String>,
}

impl From<Refusal> for ErrorType {
    fn from(r: Refusal) -> Self {
        ErrorType {
            field: r.field,
            messages: vec![r.message],
        }
    }
}

pub struct QueryRoot;

#[Object(name = "Query")]
impl QueryRoot {
    #[allow(clippy::too_many_arguments)]
    async fn customers(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
        offset: Option<i32>,
        external_id: Option<String>,
        #[graphql(name = "externalId_Isnull")] external_id_isnull: Option<bool>,
        is_system: Option<bool>,
        name: Option<String>,
        #[graphql(name = "name_Icontains")] name_icontains: Option<String>,
        #[graphql(name = "name_Istartswith")] name_istartswith: Option<String>,
        #[graphql(name = "description_Icontains")] description_icontains: Option<String>,
        #[graphql(name = "labels_Contains")] labels_contains: Option<String>,
        #[graphql(name = "labels_Icontains")] labels_icontains: Option<String>,
        #[graphql(name = "createdAt_Gte")] created_at_gte: Option<DateTime<Utc>>,
        #[graphql(name = "createdAt_Lte")] created_at_lte: Option<DateTime<Utc>>,
        #[graphql(name = "updatedAt_Gte")] updated_at_gte: Option<DateTime<Utc>>,
        #[graphql(name = "updatedAt_Lte")] updated_at_lte: Option<DateTime<Utc>>,
        allow_embedded_designer: Option<bool>,
        order_by: Option<CustomerOrder>,
        sort_by: Option<Vec<Option<CustomerOrder>>>,
    ) -> Result<CustomerConnection> {
        let window = Window::new(after, before, first, last, offset)?;
        let store = lock(ctx)?;
        let mut found: Vec<&StoredCustomer> = store
            .state()
            .customers
            .values()
            .filter(|c| {
                c.external_id
                    .as_ref()
                    .map_or(external_id.is_none(), |x| eq_opt(x, &external_id))
                    && isnull(&c.external_id, external_id_isnull)
                    && is_system.is_none_or(|s| c.is_system == s)
                    && eq_opt(&c.name, &name)
                    && icontains(&c.name, &name_icontains)
                    && name_istartswith
                        .as_ref()
                        .is_none_or(|p| c.name.to_lowercase().starts_with(&p.to_lowercase()))
                    && icontains(&c.description, &description_icontains)
                    && labels_contains
                        .as_ref()
                        .is_none_or(|l| c.labels.iter().any(|x| x == l))
                    && labels_icontains.as_ref().is_none_or(|l| {
                        let l = l.to_lowercase();
                        c.labels.iter().any(|x| x.contains(&l))
                    })
                    && in_range(c.created_at, created_at_gte, created_at_lte)
                    && in_range(c.updated_at, updated_at_gte, updated_at_lte)
                    && allow_embedded_designer.is_none_or(|a| c.allow_embedded_designer == a)
            })
            .collect();
        let keys = sort_keys(order_by, sort_by);
        if !keys.is_empty() {
            found.sort_by(|a, b| compare_customers(a, b, &keys));
        }
        let page = window.slice(&found, |c| CustomerObj((*c).clone()))?;
        Ok(CustomerConnection::from_page(page))
    }

    #[allow(clippy::too_many_arguments)]
    async fn users(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
        offset: Option<i32>,
        customer: Option<ID>,
        #[graphql(name = "customer_Isnull")] customer_isnull: Option<bool>,
        email: Option<String>,
        #[graphql(name = "email_Icontains")] email_icontains: Option<String>,
        external_id: Option<String>,
        #[graphql(name = "externalId_Isnull")] external_id_isnull: Option<bool>,
        name: Option<String>,
        #[graphql(name = "name_Icontains")] name_icontains: Option<String>,
        include_marketplace_users: Option<bool>,
        #[graphql(name = "createdAt_Gte")] created_at_gte: Option<DateTime<Utc>>,
        #[graphql(name = "createdAt_Lte")] created_at_lte: Option<DateTime<Utc>>,
        #[graphql(name = "updatedAt_Gte")] updated_at_gte: Option<DateTime<Utc>>,
        #[graphql(name = "updatedAt_Lte")] updated_at_lte: Option<DateTime<Utc>>,
        order_by: Option<UserOrder>,
        sort_by: Option<Vec<Option<UserOrder>>>,
    ) -> Result<UserConnection> {
        let window = Window::new(after, before, first, last, offset)?;
        let filter = UserFilter {
            customer: customer.map(|c| c.0),
            customer_isnull,
            email,
            email_icontains,
            external_id,
            external_id_isnull,
            name,
            name_icontains,
            include_marketplace_users,
            created_at_gte,
            created_at_lte,
            updated_at_gte,
            updated_at_lte,
        };
        let store = lock(ctx)?;
        let state = store.state();
        let mut found: Vec<&StoredUser> =
            state.users.values().filter(|u| filter.matches(u)).collect();
        let keys = sort_keys(order_by, sort_by);
        if !keys.is_empty() {
            found.sort_by(|a, b| compare_users(state, a, b, &keys));
        }
        let page = window.slice(&found, |u| UserObj::new(state, u))?;
        Ok(UserConnection::from_page(page))
    }

    async fn customer_roles(&self, ctx: &Context<'_>) -> Result<Vec<Option<RoleObj>>> {
        let store = lock(ctx)?;
        Ok(store
            .state()
            .roles
            .iter()
            .filter(|r| r.kind == RoleKind::Customer)
            .map(|r| Some(RoleObj::from(r)))
            .collect())
    }

    async fn customer(&self, ctx: &Context<'_>, id: ID) -> Result<Option<CustomerObj>> {
        let store = lock(ctx)?;
        Ok(store.state().customers.get(&id.0).cloned().map(CustomerObj))
    }

    async fn user(&self, ctx: &Context<'_>, id: ID) -> Result<Option<UserObj>> {
        let store = lock(ctx)?;
        let state = store.state();
        Ok(state.users.get(&id.0).map(|u| UserObj::new(state, u)))
    }

    async fn authenticated_user(&self, ctx: &Context<'_>) -> Result<UserObj> {
        let store = lock(ctx)?;
        let state = store.state();
        state
            .users
            .get(&state.authenticated_user_id)
            .map(|u| UserObj::new(state, u))
            .ok_or_else(|| Error::new("The authenticated user no longer exists."))
    }
}

#[derive(InputObject)]
#[graphql(name = "CreateCustomerInput")]
pub struct CreateCustomerInput {
    name: String,
    description: Option<String>,
    external_id: Option<String>,
    labels: Option<Vec<Option<String>>>,
    allow_embedded_designer: Option<bool>,
}

#[derive(InputObject)]
#[graphql(name = "UpdateCustomerInput")]
pub struct UpdateCustomerInput {
    id: Option<ID>,
    name: Option<String>,
    description: Option<String>,
    external_id: Option<String>,
    labels: Option<Vec<Option<String>>>,
    avatar_url: Option<String>,
    allow_embedded_designer: Option<bool>,
    starred: Option<bool>,
}

#[derive(InputObject)]
#[graphql(name = "DeleteCustomerInput")]
pub struct DeleteCustomerInput {
    id: Option<ID>,
}

#[derive(InputObject)]
#[graphql(name = "CreateCustomerUserInput")]
pub struct CreateCustomerUserInput {
    customer: Option<ID>,
    email: String,
    role: ID,
    name: Option<String>,
    phone: Option<String>,
    external_id: Option<String>,
}

#[derive(InputObject)]
#[graphql(name = "UpdateUserInput")]
pub struct UpdateUserInput {
    id: Option<ID>,
    name: Option<String>,
    phone: Option<String>,
    role: Option<ID>,
    external_id: Option<String>,
    avatar_url: Option<String>,
    dark_mode: Option<bool>,
    dark_mode_sync_with_os: Option<bool>,
}

#[derive(InputObject)]
#[graphql(name = "DeleteUserInput")]
pub struct DeleteUserInput {
    id: Option<ID>,
}

macro_rules! payload {
    ($name:ident, $gql:literal, $field:ident, $obj:ty) => {
        #[derive(SimpleObject)]
        #[graphql(name = $gql)]
        pub struct $name {
            $field: Option<$obj>,
            errors: Vec<ErrorType>,
            client_mutation_id: Option<String>,
        }

        impl $name {
            fn from_outcome(outcome: std::result::Result<$obj, Refusal>) -> Self {
                match outcome {
                    Ok(obj) => $name {
                        $field: Some(obj),
                        errors: Vec::new(),
                        client_mutation_id: None,
                    },
                    Err(refusal) => $name {
                        $field: None,
                        errors: vec![refusal.into()],
                        client_mutation_id: None,
                    },
                }
            }
        }
    };
}

payload!(
    CreateCustomerPayload,
    "CreateCustomerPayload",
    customer,
    CustomerObj
);
payload!(
    UpdateCustomerPayload,
    "UpdateCustomerPayload",
    customer,
    CustomerObj
);
payload!(
    DeleteCustomerPayload,
    "DeleteCustomerPayload",
    customer,
    CustomerObj
);
payload!(
    CreateCustomerUserPayload,
    "CreateCustomerUserPayload",
    user,
    UserObj
);
payload!(UpdateUserPayload, "UpdateUserPayload", user, UserObj);
payload!(DeleteUserPayload, "DeleteUserPayload", user, UserObj);

/// Runs one change against the store and writes the state file after it.
/// A refused change writes nothing; a failed write is a top-level error (the
/// change is in memory but not durable, which the caller must hear about).
fn mutate<T, O>(
    ctx: &Context<'_>,
    change: impl FnOnce(&mut Store) -> std::result::Result<T, Refusal>,
    view: impl FnOnce(&State, T) -> O,
) -> Result<std::result::Result<O, Refusal>> {
    let mut store = lock(ctx)?;
    match change(&mut store) {
        Ok(value) => {
            store
                .persist()
                .map_err(|e| Error::new(format!("internal error: {e}")))?;
            Ok(Ok(view(store.state(), value)))
        }
        // The platform answers an id that names nothing with a top-level
        // error, not a payload error.
        Err(refusal) if refusal.not_found => Err(Error::new(refusal.message)),
        Err(refusal) => Ok(Err(refusal)),
    }
}

pub struct MutationRoot;

#[Object(name = "Mutation")]
impl MutationRoot {
    async fn create_customer(
        &self,
        ctx: &Context<'_>,
        input: CreateCustomerInput,
    ) -> Result<Option<CreateCustomerPayload>> {
        let outcome = mutate(
            ctx,
            |s| {
                s.create_customer(NewCustomerInput {
                    name: input.name,
                    description: input.description,
                    external_id: input.external_id,
                    labels: input.labels,
                    allow_embedded_designer: input.allow_embedded_designer,
                })
            },
            |_, c| CustomerObj(c),
        )?;
        Ok(Some(CreateCustomerPayload::from_outcome(outcome)))
    }

    async fn update_customer(
        &self,
        ctx: &Context<'_>,
        input: UpdateCustomerInput,
    ) -> Result<Option<UpdateCustomerPayload>> {
        let outcome = mutate(
            ctx,
            |s| {
                s.update_customer(CustomerUpdateInput {
                    id: input.id.map(|i| i.0),
                    name: input.name,
                    description: input.description,
                    external_id: input.external_id,
                    labels: input.labels,
                    avatar_url: input.avatar_url,
                    allow_embedded_designer: input.allow_embedded_designer,
                    starred: input.starred,
                })
            },
            |_, c| CustomerObj(c),
        )?;
        Ok(Some(UpdateCustomerPayload::from_outcome(outcome)))
    }

    async fn delete_customer(
        &self,
        ctx: &Context<'_>,
        input: DeleteCustomerInput,
    ) -> Result<Option<DeleteCustomerPayload>> {
        let outcome = mutate(
            ctx,
            |s| s.delete_customer(input.id.map(|i| i.0)),
            |_, c| CustomerObj(c),
        )?;
        Ok(Some(DeleteCustomerPayload::from_outcome(outcome)))
    }

    async fn create_customer_user(
        &self,
        ctx: &Context<'_>,
        input: CreateCustomerUserInput,
    ) -> Result<Option<CreateCustomerUserPayload>> {
        let outcome = mutate(
            ctx,
            |s| {
                s.create_customer_user(NewUserInput {
                    customer: input.customer.map(|i| i.0),
                    email: input.email,
                    role: input.role.0,
                    name: input.name,
                    phone: input.phone,
                    external_id: input.external_id,
                })
            },
            |state, u| UserObj::new(state, &u),
        )?;
        Ok(Some(CreateCustomerUserPayload::from_outcome(outcome)))
    }

    async fn update_user(
        &self,
        ctx: &Context<'_>,
        input: UpdateUserInput,
    ) -> Result<Option<UpdateUserPayload>> {
        let outcome = mutate(
            ctx,
            |s| {
                s.update_user(UserUpdateInput {
                    id: input.id.map(|i| i.0),
                    name: input.name,
                    phone: input.phone,
                    role: input.role.map(|r| r.0),
                    external_id: input.external_id,
                    avatar_url: input.avatar_url,
                    dark_mode: input.dark_mode,
                    dark_mode_sync_with_os: input.dark_mode_sync_with_os,
                })
            },
            |state, u| UserObj::new(state, &u),
        )?;
        Ok(Some(UpdateUserPayload::from_outcome(outcome)))
    }

    async fn delete_user(
        &self,
        ctx: &Context<'_>,
        input: DeleteUserInput,
    ) -> Result<Option<DeleteUserPayload>> {
        let outcome = mutate(
            ctx,
            |s| s.delete_user(input.id.map(|i| i.0)),
            // The user is gone: it is shown as it was, without its customer
            // when that went with it.
            |state, u| UserObj::new(state, &u),
        )?;
        Ok(Some(DeleteUserPayload::from_outcome(outcome)))
    }
}
