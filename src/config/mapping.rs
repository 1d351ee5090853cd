//! `mapping:`: which source key feeds each platform field, and the role
//! table. Only fields named here are compared and written.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Checker, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMapping {
    customer: RawCustomerMapping,
    user: RawUserMapping,
    #[serde(default)]
    roles: RawRoles,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomerMapping {
    external_id: String,
    name: String,
    description: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    label_separator: Option<String>,
    #[serde(default)]
    static_labels: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUserMapping {
    external_id: String,
    customer: String,
    email: String,
    name: Option<String>,
    phone: Option<String>,
    role: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoles {
    #[serde(default)]
    map: BTreeMap<String, String>,
    #[serde(default = "default_role")]
    default: String,
    #[serde(default)]
    unmapped: UnmappedRole,
}

impl Default for RawRoles {
    fn default() -> Self {
        RawRoles {
            map: BTreeMap::new(),
            default: default_role(),
            unmapped: UnmappedRole::default(),
        }
    }
}

/// `mapping.roles.unmapped`: what a role value the map does not hold gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnmappedRole {
    /// The record is refused (a typo such as "Admn" is not a demotion).
    #[default]
    Refuse,
    /// The user gets `mapping.roles.default`, as asked for explicitly.
    Default,
}

fn default_role() -> String {
    "Member".to_owned()
}

/// Which source key feeds each field. Only fields named here are compared
/// and written.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub customer: CustomerMapping,
    pub user: UserMapping,
    pub roles: RoleTable,
    /// `mapping.roles.unmapped` (read through [`Mapping::role_for`]).
    unmapped_role: UnmappedRole,
}

impl Mapping {
    /// The platform role a user gets for a source role value: the default
    /// for an absent (or empty) value, the table's role for a mapped one.
    /// For a value the table does not hold: the default when
    /// `mapping.roles.unmapped: default` asks for it, else None (the record
    /// is refused).
    pub fn role_for(&self, source_value: Option<&str>) -> Option<&str> {
        let Some(value) = source_value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Some(&self.roles.default);
        };
        match (self.roles.lookup(value), self.unmapped_role) {
            (Some(role), _) => Some(role),
            (None, UnmappedRole::Default) => Some(&self.roles.default),
            (None, UnmappedRole::Refuse) => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct CustomerMapping {
    pub external_id: String,
    pub name: String,
    pub description: Option<String>,
    /// Keys whose values are labels (each split on `label_separator` when set).
    pub labels: Vec<String>,
    pub label_separator: Option<String>,
    /// Labels every managed customer carries.
    pub static_labels: Vec<String>,
}

impl CustomerMapping {
    /// Whether labels are managed at all (some key or static label is set).
    pub fn manages_labels(&self) -> bool {
        !self.labels.is_empty() || !self.static_labels.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct UserMapping {
    pub external_id: String,
    /// The key holding the user's customer externalId.
    pub customer: String,
    pub email: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub role: Option<String>,
}

/// Source role values to platform role names.
#[derive(Clone, Debug)]
pub struct RoleTable {
    /// Keys lowercased: source values match case-insensitively.
    pub map: BTreeMap<String, String>,
    pub default: String,
}

impl RoleTable {
    /// The platform role name for a source value (the default when absent
    /// or unmapped). Lenient: the mapping step uses [`Mapping::role_for`],
    /// which refuses an unmapped value unless `mapping.roles.unmapped: default`.
    pub fn resolve(&self, source_value: Option<&str>) -> &str {
        source_value
            .and_then(|v| self.map.get(&v.trim().to_lowercase()))
            .unwrap_or(&self.default)
    }

    /// The platform role name the map holds for a source value (any case),
    /// if it holds one; unlike [`RoleTable::resolve`], never the default.
    pub fn lookup(&self, source_value: &str) -> Option<&str> {
        self.map
            .get(&source_value.trim().to_lowercase())
            .map(String::as_str)
    }

    /// Every platform role name the table can produce.
    pub fn role_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.default.as_str()).chain(self.map.values().map(String::as_str))
    }
}

pub(super) fn validate_mapping(c: &Checker<'_>, m: RawMapping) -> Result<Mapping, ConfigError> {
    let customer = CustomerMapping {
        external_id: c.non_empty("mapping.customer.external_id", &m.customer.external_id)?,
        name: c.non_empty("mapping.customer.name", &m.customer.name)?,
        description: m.customer.description,
        labels: m.customer.labels,
        label_separator: m.customer.label_separator.filter(|s| !s.is_empty()),
        static_labels: m.customer.static_labels,
    };
    let user = UserMapping {
        external_id: c.non_empty("mapping.user.external_id", &m.user.external_id)?,
        customer: c.non_empty("mapping.user.customer", &m.user.customer)?,
        email: c.non_empty("mapping.user.email", &m.user.email)?,
        name: m.user.name,
        phone: m.user.phone,
        role: m.user.role,
    };
    let roles = RoleTable {
        map: m
            .roles
            .map
            .iter()
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
            .collect(),
        default: c.non_empty("mapping.roles.default", &m.roles.default)?,
    };
    Ok(Mapping {
        customer,
        user,
        roles,
        unmapped_role: m.roles.unmapped,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{parse, MINIMAL};

    #[test]
    fn an_unmapped_role_value_is_refused_unless_the_config_asks_for_the_default() {
        let roles = "  roles:\n    map: { admin: Admin }\n    default: Member\n";
        let c = parse(&format!("{MINIMAL}{roles}")).unwrap();
        assert_eq!(c.mapping.role_for(Some("ADMIN ")), Some("Admin"));
        assert_eq!(c.mapping.role_for(Some("Admn")), None, "refused by default");
        assert_eq!(
            c.mapping.role_for(None),
            Some("Member"),
            "absent: the default"
        );
        assert_eq!(
            c.mapping.role_for(Some(" ")),
            Some("Member"),
            "empty: the default"
        );

        let c = parse(&format!("{MINIMAL}{roles}    unmapped: default\n")).unwrap();
        assert_eq!(c.mapping.role_for(Some("Admn")), Some("Member"));
        let c = parse(&format!("{MINIMAL}{roles}    unmapped: refuse\n")).unwrap();
        assert_eq!(c.mapping.role_for(Some("Admn")), None);
    }

    #[test]
    fn an_unknown_unmapped_choice_names_its_line_and_the_choices() {
        let text = format!("{MINIMAL}  roles:\n    unmapped: demote\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.starts_with("conf/dirsync.yaml:16:15: mapping.roles.unmapped: unknown variant `demote`, expected `refuse` or `default`"),
            "{err}"
        );
    }
}
