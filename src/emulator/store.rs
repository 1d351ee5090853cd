//! The emulator's data and the platform rules that guard it: uniqueness of
//! customer names, customer externalIds and user emails; valid emails and
//! roles; lowercase labels; a customer delete that takes its users along.
//!
//! No HTTP here. The GraphQL layer (`schema.rs`) calls these functions, and
//! every successful change is written to the state file atomically.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

pub use crate::directory::is_valid_email;

use super::seed::Seed;
use super::EmulatorError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RoleKind {
    Customer,
    Organization,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRole {
    pub id: String,
    pub name: String,
    pub description: String,
    pub level: i32,
    pub kind: RoleKind,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredCustomer {
    pub id: String,
    pub external_id: Option<String>,
    pub name: String,
    pub description: String,
    pub labels: Vec<String>,
    pub avatar_url: Option<String>,
    pub allow_embedded_designer: bool,
    pub starred: bool,
    pub is_system: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Deployed integration instances; they go with the customer.
    #[serde(default)]
    pub instances: Vec<StoredInstance>,
}

/// A deployed integration instance: the emulator keeps only what dirsync
/// reads of it (that it exists, and which customer holds it).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredInstance {
    pub id: String,
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredUser {
    pub id: String,
    pub external_id: Option<String>,
    pub email: String,
    pub name: String,
    pub phone: String,
    pub role_id: String,
    /// None for organization users.
    pub customer_id: Option<String>,
    /// An embedded (marketplace) user, created by the platform on JWT login.
    pub marketplace: bool,
    pub avatar_url: Option<String>,
    pub dark_mode: bool,
    pub dark_mode_sync_with_os: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Everything the emulator knows; this is also the state file's format.
/// Maps keep insertion order, which is creation order.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub roles: Vec<StoredRole>,
    pub customers: IndexMap<String, StoredCustomer>,
    pub users: IndexMap<String, StoredUser>,
    /// The organization user that every accepted token belongs to.
    pub authenticated_user_id: String,
}

/// A refused mutation: the payload `errors` entry it becomes, or, for an
/// id that names nothing, the top-level GraphQL error the platform answers
/// with (`Customer matching query does not exist.`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub field: String,
    pub message: String,
    /// An unknown id: a top-level error, not a payload error.
    pub not_found: bool,
}

fn refuse<T>(field: &str, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        field: field.to_owned(),
        message: message.into(),
        not_found: false,
    })
}

/// The platform's answer to an id that names nothing (Django's
/// `DoesNotExist` message, as the real API sends it).
fn not_found<T>(field: &str, type_name: &str) -> Result<T, Refusal> {
    Err(Refusal {
        field: field.to_owned(),
        message: format!("{type_name} matching query does not exist."),
        not_found: true,
    })
}

/// A record's new `updatedAt` on an update: now, and always later than
/// `before` (by a microsecond at least, the platform's own precision), as
/// the platform moves it on every update. `dirsync apply` relies on it.
fn bumped(before: DateTime<Utc>) -> DateTime<Utc> {
    Utc::now().max(before + chrono::Duration::microseconds(1))
}

/// A Relay global id: base64 of `Type:uuid`.
pub fn new_global_id(type_name: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("{type_name}:{}", uuid::Uuid::new_v4()))
}

/// The platform stores labels lowercase.
fn lowercase_labels(labels: Vec<Option<String>>) -> Vec<String> {
    labels
        .into_iter()
        .flatten()
        .map(|l| l.to_lowercase())
        .collect()
}

/// An empty externalId is stored as none (the sheet is silent; "no
/// externalId" is the reading that can never make a record look managed).
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

pub struct NewCustomerInput {
    pub name: String,
    pub description: Option<String>,
    pub external_id: Option<String>,
    pub labels: Option<Vec<Option<String>>>,
    pub allow_embedded_designer: Option<bool>,
}

pub struct CustomerUpdateInput {
    pub id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub external_id: Option<String>,
    pub labels: Option<Vec<Option<String>>>,
    pub avatar_url: Option<String>,
    pub allow_embedded_designer: Option<bool>,
    pub starred: Option<bool>,
}

pub struct NewUserInput {
    pub customer: Option<String>,
    pub email: String,
    pub role: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub external_id: Option<String>,
}

pub struct UserUpdateInput {
    pub id: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub role: Option<String>,
    pub external_id: Option<String>,
    pub avatar_url: Option<String>,
    pub dark_mode: Option<bool>,
    pub dark_mode_sync_with_os: Option<bool>,
}

impl State {
    /// A fresh platform: the four customer roles, one organization role, one
    /// system customer and one organization user (the token's owner).
    pub fn fresh() -> State {
        let now = Utc::now();
        let role = |name: &str, level: i32, kind: RoleKind| StoredRole {
            id: new_global_id("Role"),
            name: name.to_owned(),
            description: format!("{name} role"),
            level,
            kind,
        };
        let roles = vec![
            role("Admin", 20, RoleKind::Customer),
            role("Member", 10, RoleKind::Customer),
            role("Marketplace Admin", 20, RoleKind::Customer),
            role("Marketplace User", 10, RoleKind::Customer),
            role("Owner", 100, RoleKind::Organization),
        ];
        let system = StoredCustomer {
            id: new_global_id("Customer"),
            external_id: None,
            name: "System".to_owned(),
            description: "The organization's system customer".to_owned(),
            labels: Vec::new(),
            avatar_url: None,
            allow_embedded_designer: false,
            starred: false,
            is_system: true,
            created_at: now,
            updated_at: now,
            instances: Vec::new(),
        };
        let owner = StoredUser {
            id: new_global_id("User"),
            external_id: None,
            email: "owner@vendor.example".to_owned(),
            name: "Organization Owner".to_owned(),
            phone: String::new(),
            role_id: roles[4].id.clone(),
            customer_id: None,
            marketplace: false,
            avatar_url: None,
            dark_mode: false,
            dark_mode_sync_with_os: true,
            created_at: now,
            updated_at: now,
        };
        State {
            roles,
            customers: IndexMap::from([(system.id.clone(), system)]),
            authenticated_user_id: owner.id.clone(),
            users: IndexMap::from([(owner.id.clone(), owner)]),
        }
    }

    pub fn role(&self, id: &str) -> Option<&StoredRole> {
        self.roles.iter().find(|r| r.id == id)
    }

    pub fn role_by_name(&self, name: &str, kind: RoleKind) -> Option<&StoredRole> {
        self.roles.iter().find(|r| r.name == name && r.kind == kind)
    }
}

/// Lookups that every mutation needs, kept beside the state so that checks
/// stay O(1) at benchmark sizes. Rebuilt on load, kept in step by `Store`.
#[derive(Default)]
struct Indexes {
    customer_by_name: HashMap<String, String>,
    customer_by_external_id: HashMap<String, String>,
    user_by_email: HashMap<String, String>,
}

impl Indexes {
    fn build(state: &State) -> Indexes {
        let mut ix = Indexes::default();
        for c in state.customers.values() {
            ix.add_customer(c);
        }
        for u in state.users.values() {
            ix.user_by_email
                .insert(u.email.to_lowercase(), u.id.clone());
        }
        ix
    }

    fn add_customer(&mut self, c: &StoredCustomer) {
        self.customer_by_name.insert(c.name.clone(), c.id.clone());
        if let Some(x) = &c.external_id {
            self.customer_by_external_id.insert(x.clone(), c.id.clone());
        }
    }

    fn remove_customer(&mut self, c: &StoredCustomer) {
        self.customer_by_name.remove(&c.name);
        if let Some(x) = &c.external_id {
            self.customer_by_external_id.remove(x);
        }
    }
}

/// The state, its indexes and where it is persisted.
pub struct Store {
    state: State,
    indexes: Indexes,
    state_file: Option<PathBuf>,
}

impl Store {
    /// Loads the state file if it exists; otherwise starts fresh, applies
    /// the seed, and writes the state file (when one is named).
    pub fn open(state_file: Option<PathBuf>, seed: Option<&Seed>) -> Result<Store, EmulatorError> {
        if let Some(path) = &state_file {
            if path.exists() {
                let state = load_state(path)?;
                if seed.is_some() {
                    tracing::info!(
                        path = %path.display(),
                        "State file exists; the seed is not applied again."
                    );
                }
                return Ok(Store::from_state(state, state_file));
            }
        }
        let mut store = Store::from_state(State::fresh(), state_file);
        if let Some(seed) = seed {
            seed.apply(&mut store)?;
        }
        store.persist()?;
        Ok(store)
    }

    pub fn from_state(state: State, state_file: Option<PathBuf>) -> Store {
        Store {
            indexes: Indexes::build(&state),
            state,
            state_file,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Writes the whole state to the state file: a temporary file in the
    /// same directory, flushed to disk, then renamed over the old one, so a
    /// crash leaves either the old state or the new one, never half of each.
    pub fn persist(&self) -> Result<(), EmulatorError> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let save_err = |source: std::io::Error| EmulatorError::SaveState {
            path: path.clone(),
            source,
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(save_err)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(save_err)?;
        serde_json::to_writer(std::io::BufWriter::new(tmp.as_file_mut()), &self.state)
            .map_err(|e| save_err(std::io::Error::other(e)))?;
        tmp.as_file_mut().flush().map_err(save_err)?;
        tmp.as_file().sync_all().map_err(save_err)?;
        tmp.persist(path).map_err(|e| save_err(e.error))?;
        Ok(())
    }

    pub fn create_customer(&mut self, input: NewCustomerInput) -> Result<StoredCustomer, Refusal> {
        let name = input.name.trim().to_owned();
        if name.is_empty() {
            return refuse("name", "This field may not be blank.");
        }
        if self.indexes.customer_by_name.contains_key(&name) {
            return refuse("name", "Customer with this name already exists.");
        }
        let external_id = non_empty(input.external_id);
        if let Some(x) = &external_id {
            if self.indexes.customer_by_external_id.contains_key(x) {
                return refuse(
                    "externalId",
                    "Customer with this external id already exists.",
                );
            }
        }
        let now = Utc::now();
        let customer = StoredCustomer {
            id: new_global_id("Customer"),
            external_id,
            name,
            description: input.description.unwrap_or_default(),
            labels: lowercase_labels(input.labels.unwrap_or_default()),
            avatar_url: None,
            allow_embedded_designer: input.allow_embedded_designer.unwrap_or(false),
            starred: false,
            is_system: false,
            created_at: now,
            updated_at: now,
            instances: Vec::new(),
        };
        self.indexes.add_customer(&customer);
        self.state
            .customers
            .insert(customer.id.clone(), customer.clone());
        Ok(customer)
    }

    pub fn update_customer(
        &mut self,
        input: CustomerUpdateInput,
    ) -> Result<StoredCustomer, Refusal> {
        let id = self.existing_customer_id(input.id)?;
        let current = &self.state.customers[&id];
        let mut updated = current.clone();
        if let Some(name) = input.name {
            let name = name.trim().to_owned();
            if name.is_empty() {
                return refuse("name", "This field may not be blank.");
            }
            if self
                .indexes
                .customer_by_name
                .get(&name)
                .is_some_and(|other| *other != id)
            {
                return refuse("name", "Customer with this name already exists.");
            }
            updated.name = name;
        }
        if let Some(x) = input.external_id {
            let x = non_empty(Some(x));
            if let Some(x) = &x {
                if self
                    .indexes
                    .customer_by_external_id
                    .get(x)
                    .is_some_and(|other| *other != id)
                {
                    return refuse(
                        "externalId",
                        "Customer with this external id already exists.",
                    );
                }
            }
            updated.external_id = x;
        }
        if let Some(d) = input.description {
            updated.description = d;
        }
        if let Some(labels) = input.labels {
            updated.labels = lowercase_labels(labels);
        }
        if let Some(a) = input.avatar_url {
            updated.avatar_url = Some(a);
        }
        if let Some(a) = input.allow_embedded_designer {
            updated.allow_embedded_designer = a;
        }
        if let Some(s) = input.starred {
            updated.starred = s;
        }
        updated.updated_at = bumped(current.updated_at);
        let old = current.clone();
        self.indexes.remove_customer(&old);
        self.indexes.add_customer(&updated);
        self.state.customers.insert(id, updated.clone());
        Ok(updated)
    }

    /// Deletes a customer, every user that belongs to it (embedded
    /// marketplace users included) and its deployed instances.
    pub fn delete_customer(&mut self, id: Option<String>) -> Result<StoredCustomer, Refusal> {
        let id = self.existing_customer_id(id)?;
        let Some(removed) = self.state.customers.shift_remove(&id) else {
            return not_found("id", "Customer");
        };
        self.indexes.remove_customer(&removed);
        let indexes = &mut self.indexes;
        self.state.users.retain(|_, u| {
            let keep = u.customer_id.as_deref() != Some(id.as_str());
            if !keep {
                indexes.user_by_email.remove(&u.email.to_lowercase());
            }
            keep
        });
        Ok(removed)
    }

    pub fn create_customer_user(&mut self, input: NewUserInput) -> Result<StoredUser, Refusal> {
        let Some(customer_id) = input.customer else {
            return refuse("customer", "This field is required.");
        };
        if !self.state.customers.contains_key(&customer_id) {
            return not_found("customer", "Customer");
        }
        let email = input.email.trim().to_owned();
        if !is_valid_email(&email) {
            return refuse("email", "Enter a valid email address.");
        }
        if self
            .indexes
            .user_by_email
            .contains_key(&email.to_lowercase())
        {
            return refuse("email", "User with this email already exists.");
        }
        self.customer_role(&input.role)?;
        let now = Utc::now();
        let user = StoredUser {
            id: new_global_id("User"),
            external_id: non_empty(input.external_id),
            email,
            name: input.name.unwrap_or_default(),
            phone: input.phone.unwrap_or_default(),
            role_id: input.role,
            customer_id: Some(customer_id),
            marketplace: false,
            avatar_url: None,
            dark_mode: false,
            dark_mode_sync_with_os: true,
            created_at: now,
            updated_at: now,
        };
        self.indexes
            .user_by_email
            .insert(user.email.to_lowercase(), user.id.clone());
        self.state.users.insert(user.id.clone(), user.clone());
        Ok(user)
    }

    pub fn update_user(&mut self, input: UserUpdateInput) -> Result<StoredUser, Refusal> {
        let id = self.existing_user_id(input.id)?;
        let mut updated = self.state.users[&id].clone();
        if let Some(role) = input.role {
            let wanted_kind = if updated.customer_id.is_some() {
                RoleKind::Customer
            } else {
                RoleKind::Organization
            };
            match self.state.role(&role) {
                Some(r) if r.kind == wanted_kind => updated.role_id = role,
                _ => return refuse("role", "Select a valid role."),
            }
        }
        if let Some(name) = input.name {
            updated.name = name;
        }
        if let Some(phone) = input.phone {
            updated.phone = phone;
        }
        if let Some(x) = input.external_id {
            updated.external_id = non_empty(Some(x));
        }
        if let Some(a) = input.avatar_url {
            updated.avatar_url = Some(a);
        }
        if let Some(d) = input.dark_mode {
            updated.dark_mode = d;
        }
        if let Some(d) = input.dark_mode_sync_with_os {
            updated.dark_mode_sync_with_os = d;
        }
        updated.updated_at = bumped(updated.updated_at);
        self.state.users.insert(id, updated.clone());
        Ok(updated)
    }

    /// Deletes a user; never the signed-in one (the schema documents that
    /// a user cannot delete themselves).
    pub fn delete_user(&mut self, id: Option<String>) -> Result<StoredUser, Refusal> {
        let id = self.existing_user_id(id)?;
        if id == self.state.authenticated_user_id {
            return refuse("__all__", "You cannot delete yourself.");
        }
        let Some(removed) = self.state.users.shift_remove(&id) else {
            return not_found("id", "User");
        };
        self.indexes
            .user_by_email
            .remove(&removed.email.to_lowercase());
        Ok(removed)
    }

    /// Adds a record as a seed does: no validation beyond what keeps the
    /// indexes true (seeds may hold marketplace and organization users).
    pub fn insert_seeded_user(&mut self, user: StoredUser) -> Result<(), String> {
        let key = user.email.to_lowercase();
        if self.indexes.user_by_email.contains_key(&key) {
            return Err(format!("email {} is used twice", user.email));
        }
        self.indexes.user_by_email.insert(key, user.id.clone());
        self.state.users.insert(user.id.clone(), user);
        Ok(())
    }

    pub fn insert_seeded_customer(&mut self, customer: StoredCustomer) -> Result<(), String> {
        if self.indexes.customer_by_name.contains_key(&customer.name) {
            return Err(format!("customer name {:?} is used twice", customer.name));
        }
        if let Some(x) = &customer.external_id {
            if self.indexes.customer_by_external_id.contains_key(x) {
                return Err(format!("customer externalId {x:?} is used twice"));
            }
        }
        self.indexes.add_customer(&customer);
        self.state.customers.insert(customer.id.clone(), customer);
        Ok(())
    }

    pub fn customer_id_by_key(&self, key: &str) -> Option<String> {
        self.indexes
            .customer_by_external_id
            .get(key)
            .or_else(|| self.indexes.customer_by_name.get(key))
            .cloned()
    }

    fn customer_role(&self, id: &str) -> Result<&StoredRole, Refusal> {
        match self.state.role(id) {
            Some(r) if r.kind == RoleKind::Customer => Ok(r),
            _ => refuse("role", "Select a valid role."),
        }
    }

    fn existing_customer_id(&self, id: Option<String>) -> Result<String, Refusal> {
        match id {
            None => refuse("id", "This field is required."),
            Some(id) if self.state.customers.contains_key(&id) => Ok(id),
            Some(_) => not_found("id", "Customer"),
        }
    }

    fn existing_user_id(&self, id: Option<String>) -> Result<String, Refusal> {
        match id {
            None => refuse("id", "This field is required."),
            Some(id) if self.state.users.contains_key(&id) => Ok(id),
            Some(_) => not_found("id", "User"),
        }
    }
}

fn load_state(path: &Path) -> Result<State, EmulatorError> {
    let text = std::fs::read_to_string(path).map_err(|source| EmulatorError::LoadState {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| EmulatorError::ParseState {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::from_state(State::fresh(), None)
    }

    fn customer(name: &str, x: Option<&str>) -> NewCustomerInput {
        NewCustomerInput {
            name: name.to_owned(),
            description: None,
            external_id: x.map(str::to_owned),
            labels: Some(vec![Some("Gold".to_owned()), None]),
            allow_embedded_designer: None,
        }
    }

    #[test]
    fn emails_are_checked_plainly() {
        assert!(is_valid_email("ada@example.com"));
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
            "a@b@c.com",
            "ada@.com",
        ] {
            assert!(!is_valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn customer_names_and_external_ids_are_unique_and_labels_lowercase() {
        let mut s = store();
        let c = s.create_customer(customer("Acme", Some("acme"))).unwrap();
        assert_eq!(c.labels, vec!["gold"]);
        assert_eq!(c.description, "");
        assert_eq!(
            s.create_customer(customer("Acme", None)).unwrap_err().field,
            "name"
        );
        assert_eq!(
            s.create_customer(customer("Other", Some("acme")))
                .unwrap_err()
                .field,
            "externalId"
        );
    }

    #[test]
    fn every_update_moves_updated_at_forward_even_when_nothing_changes() {
        let mut s = store();
        let c = s.create_customer(customer("Acme", Some("acme"))).unwrap();
        let mut last = c.updated_at;
        for _ in 0..3 {
            let u = s
                .update_customer(CustomerUpdateInput {
                    id: Some(c.id.clone()),
                    name: None,
                    description: None,
                    external_id: None,
                    labels: None,
                    avatar_url: None,
                    allow_embedded_designer: None,
                    starred: None,
                })
                .unwrap();
            assert!(u.updated_at > last, "{} after {last}", u.updated_at);
            last = u.updated_at;
        }
    }

    #[test]
    fn deleting_a_customer_deletes_its_users_and_frees_their_emails() {
        let mut s = store();
        let c = s.create_customer(customer("Acme", Some("acme"))).unwrap();
        let role = s
            .state()
            .role_by_name("Member", RoleKind::Customer)
            .unwrap()
            .id
            .clone();
        let new_user = || NewUserInput {
            customer: Some(c.id.clone()),
            email: "Ada@Example.com".to_owned(),
            role: role.clone(),
            name: None,
            phone: None,
            external_id: Some("u1".to_owned()),
        };
        s.create_customer_user(new_user()).unwrap();
        let dup = s.create_customer_user(NewUserInput {
            email: "ada@example.com".to_owned(),
            ..new_user()
        });
        assert_eq!(dup.unwrap_err().field, "email");
        s.delete_customer(Some(c.id.clone())).unwrap();
        assert!(s
            .state()
            .users
            .values()
            .all(|u| u.customer_id.as_deref() != Some(c.id.as_str())));
        let c2 = s.create_customer(customer("Acme", Some("acme"))).unwrap();
        s.create_customer_user(NewUserInput {
            customer: Some(c2.id),
            ..new_user()
        })
        .unwrap();
    }

    #[test]
    fn organization_roles_cannot_be_given_to_customer_users() {
        let mut s = store();
        let c = s.create_customer(customer("Acme", None)).unwrap();
        let owner = s
            .state()
            .role_by_name("Owner", RoleKind::Organization)
            .unwrap()
            .id
            .clone();
        let err = s
            .create_customer_user(NewUserInput {
                customer: Some(c.id),
                email: "a@b.co".to_owned(),
                role: owner,
                name: None,
                phone: None,
                external_id: None,
            })
            .unwrap_err();
        assert_eq!(err.field, "role");
    }
}
