//! The configuration file: raw serde shapes (unknown keys are errors), then
//! validation into a typed [`Config`] with no I/O and no secrets read.
//!
//! This file loads the text, composes the whole from one module per concern
//! (platform, source, mapping, policy, daemon) and owns [`ConfigError`] and
//! the [`Checker`] those modules validate with. Every error names the file,
//! the key path, the line and the column: serde_yaml places what it rejects,
//! and [`positions`] places the rest.

mod daemon;
mod mapping;
mod platform;
mod policy;
mod positions;
mod source;
#[cfg(test)]
pub(crate) mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use daemon::{MetricsSettings, ScheduleSettings};
pub use mapping::{CustomerMapping, Mapping, RoleTable, UserMapping};
pub use platform::{PlatformSettings, PlatformTarget};
pub use policy::{Budget, ChangePolicy, Policy};
pub use source::{AbsentRule, AbsentTest};
pub use source::{
    CsvSettings, CustomerStrategy, CustomersFrom, DisabledRule, Endpoint, HttpAuth, HttpPreset,
    HttpSettings, LdapKind, LdapScope, LdapSettings, Pagination, SourceSettings,
};

use positions::Positions;

/// Where `-c` falls back to when neither it nor `$DIRSYNC_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dirsync/config.yaml";

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML itself, or a value of the wrong shape or type.
    #[error("{}{}: {key}: {message}", path.display(), at(*.line, *.column))]
    Parse {
        path: PathBuf,
        key: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// Well-formed, but not usable (a bad URL, a percentage over 100, ...).
    #[error("{}{}: {key}: {message}", path.display(), at(*.line, *.column))]
    Invalid {
        path: PathBuf,
        key: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
}

fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

impl ConfigError {
    /// The key path at fault (`policy.delete_users.max_count`).
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Parse { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } => None,
        }
    }

    /// Line and column (from 1) of the fault in the file.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::Parse { line, column, .. } | ConfigError::Invalid { line, column, .. } => {
                line.zip(*column)
            }
            ConfigError::Read { .. } => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    platform: platform::RawPlatform,
    // `source` is written as a one-key map (`source: { csv: {...} }`), which
    // serde_yaml needs told (it would otherwise expect a `!csv` tag).
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    source: source::RawSource,
    mapping: mapping::RawMapping,
    #[serde(default)]
    policy: policy::RawPolicy,
    state_dir: Option<PathBuf>,
    schedule: Option<daemon::RawSchedule>,
    metrics: Option<daemon::RawMetrics>,
}

// Defaults shared by several concerns.
fn default_connect_timeout() -> u64 {
    10
}
fn default_request_timeout() -> u64 {
    60
}
fn default_four() -> usize {
    4
}
fn default_attempts() -> u32 {
    5
}
fn default_read_deadline() -> u64 {
    600
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from; relative paths inside are resolved against its folder.
    pub path: PathBuf,
    pub platform: PlatformSettings,
    pub source: SourceSettings,
    pub mapping: Mapping,
    pub policy: Policy,
    /// Where the lock file lives (`state_dir`, else `$STATE_DIRECTORY`,
    /// else `.dirsync-state` in the config file's folder).
    pub state_dir: PathBuf,
    /// `dirsync run`'s schedule; required by it, ignored by the rest.
    pub schedule: Option<ScheduleSettings>,
    /// How long a run may plan from the stored snapshot and the changes
    /// since before the platform is read in full again
    /// (`schedule.full_every`, default hourly, for every kind of run; 0:
    /// every run reads in full).
    pub full_every: std::time::Duration,
    /// `dirsync run`'s metrics endpoint; None: off.
    pub metrics: Option<MetricsSettings>,
}

impl Config {
    /// Reads and validates a config file. No network, no source access.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Validates config text as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        // A UTF-8 byte-order mark (as some Windows editors write) is not YAML.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let positions = Positions::read(text).map_err(|dup| ConfigError::Parse {
            path: path.to_path_buf(),
            key: dup.key,
            line: Some(dup.at.line),
            column: Some(dup.at.column),
            message: format!(
                "is given twice (first at line {}); keep one",
                dup.first.line
            ),
        })?;
        let checker = Checker {
            path,
            positions: &positions,
        };
        let raw = checker.deserialize(text)?;
        validate(&checker, raw)
    }

    /// A path from the config, resolved against the config file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve_against(&self.path, p)
    }
}

fn validate(c: &Checker<'_>, raw: RawConfig) -> Result<Config, ConfigError> {
    let state_dir = match &raw.state_dir {
        Some(dir) => resolve_against(c.path, dir),
        None => daemon::default_state_dir(c.path, std::env::var_os("STATE_DIRECTORY")),
    };
    Ok(Config {
        path: c.path.to_path_buf(),
        platform: platform::validate_platform(c, raw.platform)?,
        source: source::validate_source(c, raw.source)?,
        mapping: mapping::validate_mapping(c, raw.mapping)?,
        policy: policy::validate_policy(c, raw.policy)?,
        state_dir,
        schedule: raw
            .schedule
            .as_ref()
            .map(|s| daemon::validate_schedule(c, s))
            .transpose()?,
        full_every: daemon::full_every(c, raw.schedule.as_ref())?,
        metrics: raw
            .metrics
            .as_ref()
            .map(|m| daemon::validate_metrics(c, m))
            .transpose()?,
    })
}

fn resolve_against(config_path: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match config_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// serde_yaml appends " at line L column C"; we print the location ourselves.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// What every concern validates with: it turns a key path and a message
/// into a [`ConfigError`] that names the file, line and column.
struct Checker<'a> {
    path: &'a Path,
    positions: &'a Positions,
}

impl Checker<'_> {
    /// The serde_yaml pass: the typed raw shapes, or the first error placed.
    fn deserialize(&self, text: &str) -> Result<RawConfig, ConfigError> {
        let deserializer = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let message = if let Some(safe) = platform::secret_message(&key) {
                // Never echo what was written there: it may be the secret itself.
                safe.to_owned()
            } else {
                // serde_yaml starts its message with the path where it was
                // (the key or its parent); the key is printed once, by us.
                let m = strip_location(&inner.to_string());
                match m.split_once(": ") {
                    Some((prefix, rest)) if key.starts_with(prefix) => rest.to_owned(),
                    _ => m,
                }
            };
            let key = if key == "." { String::new() } else { key };
            let (line, column) = match inner.location() {
                Some(l) => (Some(l.line()), Some(l.column())),
                None => self.position_of(&key),
            };
            ConfigError::Parse {
                path: self.path.to_path_buf(),
                key: if key.is_empty() {
                    "(top level)".to_owned()
                } else {
                    key
                },
                line,
                column,
                message,
            }
        })
    }

    fn position_of(&self, key: &str) -> (Option<usize>, Option<usize>) {
        match self.positions.locate(key) {
            Some(p) => (Some(p.line), Some(p.column)),
            None => (None, None),
        }
    }

    /// An error about `key`, placed where `key` stands in the file.
    fn invalid(&self, key: &str, message: impl fmt::Display) -> ConfigError {
        self.invalid_at(key, key, message)
    }

    /// An error about `key`, placed where `at_key` stands (for a rule
    /// between keys, the one that breaks it).
    fn invalid_at(&self, key: &str, at_key: &str, message: impl fmt::Display) -> ConfigError {
        let (line, column) = self.position_of(at_key);
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.to_owned(),
            line,
            column,
            message: message.to_string(),
        }
    }

    fn percent(&self, key: &str, value: f64) -> Result<f64, ConfigError> {
        if (0.0..=100.0).contains(&value) {
            Ok(value)
        } else {
            Err(self.invalid(
                key,
                format!("must be a percentage from 0 to 100, not {value}"),
            ))
        }
    }

    fn non_empty(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        let v = value.trim();
        if v.is_empty() {
            Err(self.invalid(key, "must not be empty"))
        } else {
            Ok(v.to_owned())
        }
    }
}
