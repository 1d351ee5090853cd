//! Seed files: customers, customer users (embedded marketplace users
//! included) and organization users to start an emulator with, so tests can
//! prove that dirsync leaves what it does not manage alone.
//!
//! ```yaml
//! customers:
//!   - { name: Acme, externalId: acme, description: "", labels: [gold] }
//!   - { name: Legacy Co }                 # no externalId: not managed
//!   - { name: Busy, externalId: busy, instances: [Salesforce sync] }
//! users:
//!   - { email: ada@acme.example, name: Ada, customer: acme, role: Admin, externalId: u-1 }
//!   - { email: 9f1c, customer: acme, role: Marketplace User, marketplace: true }
//! organizationUsers:
//!   - { email: dev@vendor.example, name: Dev }
//! ```

use std::path::Path;

use chrono::Utc;
use serde::Deserialize;

use super::store::{new_global_id, RoleKind, Store, StoredCustomer, StoredInstance, StoredUser};
use super::EmulatorError;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub customers: Vec<SeedCustomer>,
    #[serde(default)]
    pub users: Vec<SeedUser>,
    #[serde(default)]
    pub organization_users: Vec<SeedOrgUser>,
    /// When the seeded records were created and last changed (default: when
    /// the emulator starts): a platform whose records are older than a
    /// client's read margin.
    #[serde(default)]
    pub seeded_at: Option<chrono::DateTime<Utc>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedCustomer {
    pub name: String,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub system: bool,
    /// Names of deployed integration instances the customer holds.
    #[serde(default)]
    pub instances: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedUser {
    pub email: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub phone: String,
    #[serde(default)]
    pub external_id: Option<String>,
    /// The customer's externalId, or its name.
    pub customer: String,
    pub role: String,
    /// An embedded marketplace user: hidden unless `includeMarketplaceUsers: true`.
    #[serde(default)]
    pub marketplace: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedOrgUser {
    pub email: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub external_id: Option<String>,
}

impl Seed {
    /// Reads a seed file (YAML, of which JSON is a subset).
    pub fn load(path: &Path) -> Result<Seed, EmulatorError> {
        let seed_err = |detail: String| EmulatorError::Seed {
            path: path.to_path_buf(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| seed_err(e.to_string()))?;
        serde_yaml::from_str(&text).map_err(|e| seed_err(e.to_string()))
    }

    pub(super) fn apply(&self, store: &mut Store) -> Result<(), EmulatorError> {
        let seed_err = |detail: String| EmulatorError::Seed {
            path: "<seed>".into(),
            detail,
        };
        let now = self.seeded_at.unwrap_or_else(Utc::now);
        for c in &self.customers {
            store
                .insert_seeded_customer(StoredCustomer {
                    id: new_global_id("Customer"),
                    external_id: c.external_id.clone(),
                    name: c.name.clone(),
                    description: c.description.clone(),
                    labels: c.labels.iter().map(|l| l.to_lowercase()).collect(),
                    avatar_url: None,
                    allow_embedded_designer: false,
                    starred: false,
                    is_system: c.system,
                    created_at: now,
                    updated_at: now,
                    instances: c
                        .instances
                        .iter()
                        .map(|name| StoredInstance {
                            id: new_global_id("Instance"),
                            name: name.clone(),
                        })
                        .collect(),
                })
                .map_err(seed_err)?;
        }
        for (i, u) in self.users.iter().enumerate() {
            let customer_id = store
                .customer_id_by_key(&u.customer)
                .ok_or_else(|| seed_err(format!("users[{i}]: no customer {:?}", u.customer)))?;
            let role_id = store
                .state()
                .role_by_name(&u.role, RoleKind::Customer)
                .ok_or_else(|| seed_err(format!("users[{i}]: no customer role {:?}", u.role)))?
                .id
                .clone();
            store
                .insert_seeded_user(
                    seeded_user(
                        &u.email,
                        &u.name,
                        &u.phone,
                        u.external_id.clone(),
                        role_id,
                        Some(customer_id),
                        u.marketplace,
                    )
                    .seeded_at(now),
                )
                .map_err(|e| seed_err(format!("users[{i}]: {e}")))?;
        }
        let org_role = store
            .state()
            .role_by_name("Owner", RoleKind::Organization)
            .map(|r| r.id.clone())
            .ok_or_else(|| seed_err("no organization role".to_owned()))?;
        for (i, u) in self.organization_users.iter().enumerate() {
            store
                .insert_seeded_user(
                    seeded_user(
                        &u.email,
                        &u.name,
                        "",
                        u.external_id.clone(),
                        org_role.clone(),
                        None,
                        false,
                    )
                    .seeded_at(now),
                )
                .map_err(|e| seed_err(format!("organizationUsers[{i}]: {e}")))?;
        }
        Ok(())
    }
}

fn seeded_user(
    email: &str,
    name: &str,
    phone: &str,
    external_id: Option<String>,
    role_id: String,
    customer_id: Option<String>,
    marketplace: bool,
) -> StoredUser {
    let now = Utc::now();
    StoredUser {
        id: new_global_id("User"),
        external_id,
        email: email.to_owned(),
        name: name.to_owned(),
        phone: phone.to_owned(),
        role_id,
        customer_id,
        marketplace,
        avatar_url: None,
        dark_mode: false,
        dark_mode_sync_with_os: true,
        created_at: now,
        updated_at: now,
    }
}

impl StoredUser {
    /// The user as created and last changed at `at`.
    fn seeded_at(mut self, at: chrono::DateTime<Utc>) -> StoredUser {
        self.created_at = at;
        self.updated_at = at;
        self
    }
}
