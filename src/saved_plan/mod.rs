//! Saved plans, applied exactly: the review workflow.
//!
//! `dirsync plan --out FILE` writes the plan it made to FILE as versioned
//! JSON ([`SavedPlan`]), together with what it was computed from: the
//! SHA-256 of the config file's bytes, the guards' reasons, and for every
//! operation the state of the platform record it was computed from
//! ([`RecordState`]: the record's compared fields and its `updatedAt`, a
//! customer's holdings, or that no record carried a create's externalId).
//! Someone reviews the file; `dirsync apply -c CONFIG FILE` then sends
//! exactly its operations, or nothing.
//!
//! `apply` never plans and never reads the source. It refuses when the
//! config changed, and when any record it would touch changed on the
//! platform since the plan was made ([`verify`]: each record re-read by id,
//! compared field by field; exit 6, [`crate::report::exit::STALE_PLAN`]).
//! Then it checks the guards again and applies through [`crate::apply`].
//! [`save`] and [`apply`] hold the two commands' flows.
//!
//! The file holds no secret: operations, emails and names, platform ids and
//! times. It is written atomically (a temporary file in the same folder,
//! then a rename), readable by its owner only.

pub mod apply;
mod records;
pub mod save;
pub mod verify;

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, ConfigError};
use crate::daemon::LockError;
use crate::guard::BlockReason;
use crate::model::Role;
use crate::plan::Plan;
use crate::platform::PlatformError;
use crate::report::exit;
use crate::run::RunError;

pub use records::{CustomerRecord, RecordState, UserRecord};
pub use verify::Stale;

/// The `format` every saved plan names.
pub const FORMAT: &str = "dirsync-plan";
/// The one `version` of the format this dirsync reads and writes.
pub const VERSION: u64 = 1;

/// A plan as `dirsync plan --out` saves it and `dirsync apply` reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedPlan {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u64,
    /// The dirsync that made it.
    pub dirsync_version: String,
    pub created_at: DateTime<Utc>,
    /// `plan --out --allow-deletes`: the approval, recorded; `apply` lifts
    /// the delete budgets for this plan (never the source checks).
    pub allow_deletes: bool,
    /// SHA-256 (hex) of the config file's bytes when the plan was made.
    pub config_digest: String,
    /// Where the config was read from (informational).
    pub config_path: PathBuf,
    pub plan: Plan,
    /// The guards' reasons when the plan was made. `apply` checks the
    /// budgets and source sizes again; the withheld deletes come from the
    /// source read, which it does not repeat, so it takes those from here.
    pub blocked: Vec<BlockReason>,
    /// One per operation, in the plan's order: the platform record it was
    /// computed from.
    pub records: Vec<RecordState>,
    /// Every role the operations name, as the platform listed it.
    pub roles: Vec<Role>,
}

/// Why a plan could not be saved, loaded or applied as saved.
#[derive(Debug, thiserror::Error)]
pub enum SavedPlanError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot read the plan file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not JSON, or not the shape of a saved plan.
    #[error("{}:{line}:{column}: not a valid dirsync plan file: {message}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: not a dirsync plan file: format {}, where a saved plan says \"{FORMAT}\"", path.display(), found.as_deref().map_or_else(|| "missing".to_owned(), |f| format!("{f:?}")))]
    Format {
        path: PathBuf,
        found: Option<String>,
    },
    #[error("{}: plan file version {found} is not one this dirsync reads (version {VERSION}); make the plan again with this dirsync (dirsync plan --out)", path.display())]
    Version { path: PathBuf, found: String },
    /// The parts of the file do not fit together (an edited file).
    #[error("{}: the plan file does not hold together: {detail}", path.display())]
    Inconsistent { path: PathBuf, detail: String },
    #[error("cannot write the plan file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The plan names a record the platform's view it was made from does
    /// not hold (a bug: nothing is written).
    #[error("cannot save the plan: {0}")]
    Unrecorded(String),
    #[error("the config changed since the plan was made: {} now has SHA-256 {now}, the plan {} was made from {saved}; run dirsync plan --out again", config.display(), plan.display())]
    ConfigChanged {
        config: PathBuf,
        plan: PathBuf,
        saved: String,
        now: String,
    },
    /// Records the plan would touch changed since it was made.
    #[error("{}: the platform changed since the plan was made, so nothing was sent:\n{}\nrun dirsync plan --out again (and review the new plan)", plan.display(), records.iter().map(|r| format!("  ~ {r}")).collect::<Vec<_>>().join("\n"))]
    Stale { plan: PathBuf, records: Vec<Stale> },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("{0}")]
    Run(#[from] RunError),
    #[error("platform: {0}")]
    Platform(#[from] PlatformError),
    /// Cancelled (SIGTERM or SIGINT) before anything was sent.
    #[error("stopped before anything was sent (shutting down); nothing was changed")]
    Interrupted,
}

impl SavedPlanError {
    /// The exit code this error ends the command with: 6 for a stale plan
    /// or a changed config, 5 when stopped, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            SavedPlanError::Stale { .. } | SavedPlanError::ConfigChanged { .. } => exit::STALE_PLAN,
            SavedPlanError::Interrupted => exit::INTERRUPTED,
            SavedPlanError::Run(e) if e.is_interrupted() => exit::INTERRUPTED,
            _ => exit::ERROR,
        }
    }
}

/// SHA-256 of `bytes`, in lowercase hex.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads the config file once: the config, and the digest of the very
/// bytes it was parsed from.
pub fn load_config(path: &Path) -> Result<(Config, String), SavedPlanError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let digest = digest(&bytes);
    let config = match std::str::from_utf8(&bytes) {
        Ok(text) => Config::parse(text, path)?,
        // The loader's own words for a file that is not UTF-8.
        Err(_) => Config::load(path)?,
    };
    Ok((config, digest))
}

/// Just the two keys that say what a file is, read before the rest so that
/// another format or version is refused by name, not by a shape error.
#[derive(Deserialize)]
struct Header {
    format: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

/// serde_json's message without its trailing "at line L column C", which
/// the error already says up front.
fn without_position(e: &serde_json::Error, message: String) -> String {
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&suffix) {
        Some(m) => m.to_owned(),
        None => message,
    }
}

impl SavedPlan {
    /// Reads and checks a plan file: JSON (errors at line:column), the
    /// format and version, and that its parts fit together.
    pub fn load(path: &Path) -> Result<SavedPlan, SavedPlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| SavedPlanError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        SavedPlan::parse(&text, path)
    }

    /// [`SavedPlan::load`] on text read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<SavedPlan, SavedPlanError> {
        let json_error = |e: &serde_json::Error, message: String| SavedPlanError::Json {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: without_position(e, message),
        };
        let header: Header =
            serde_json::from_str(text).map_err(|e| json_error(&e, e.to_string()))?;
        match &header.format {
            Some(serde_json::Value::String(f)) if f == FORMAT => {}
            other => {
                return Err(SavedPlanError::Format {
                    path: path.to_path_buf(),
                    found: other.as_ref().map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        v => v.to_string(),
                    }),
                })
            }
        }
        match &header.version {
            Some(v) if v.as_u64() == Some(VERSION) => {}
            other => {
                return Err(SavedPlanError::Version {
                    path: path.to_path_buf(),
                    found: other
                        .as_ref()
                        .map_or_else(|| "(missing)".to_owned(), |v| v.to_string()),
                })
            }
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let saved: SavedPlan = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            let message = if at == "." {
                inner.to_string()
            } else {
                format!("{at}: {inner}")
            };
            json_error(&inner, message)
        })?;
        saved
            .check_parts()
            .map_err(|detail| SavedPlanError::Inconsistent {
                path: path.to_path_buf(),
                detail,
            })?;
        Ok(saved)
    }

    /// Every operation has its record state, of the right kind and naming
    /// the same record, and every role it names is listed.
    fn check_parts(&self) -> Result<(), String> {
        let ops = &self.plan.operations;
        if ops.len() != self.records.len() {
            return Err(format!(
                "{} operations but {} record states (one per operation)",
                ops.len(),
                self.records.len()
            ));
        }
        for (i, (op, state)) in ops.iter().zip(&self.records).enumerate() {
            if !state.fits(op) {
                return Err(format!(
                    "record state {i} does not belong to operation {i} ({} {} {})",
                    op.action(),
                    op.kind(),
                    op.external_id()
                ));
            }
        }
        for id in records::role_ids(&self.plan) {
            if !self.roles.iter().any(|r| &r.id == id) {
                return Err(format!(
                    "the operations name role id {id}, which `roles` does not list"
                ));
            }
        }
        Ok(())
    }

    /// Refuses when the config's bytes are not those the plan was made from.
    pub fn check_config(
        &self,
        digest: &str,
        config: &Path,
        plan: &Path,
    ) -> Result<(), SavedPlanError> {
        if self.config_digest == digest {
            return Ok(());
        }
        Err(SavedPlanError::ConfigChanged {
            config: config.to_path_buf(),
            plan: plan.to_path_buf(),
            saved: self.config_digest.clone(),
            now: digest.to_owned(),
        })
    }

    /// Writes the plan to `path` atomically: a temporary file in the same
    /// folder (owner-only), flushed to disk, then renamed over `path`.
    pub fn write(&self, path: &Path) -> Result<(), SavedPlanError> {
        let failed = |source: std::io::Error| SavedPlanError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut text =
            serde_json::to_string_pretty(self).map_err(|e| failed(std::io::Error::other(e)))?;
        text.push('\n');
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut file = tempfile::Builder::new()
            .prefix(".dirsync-plan-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(failed)?;
        file.write_all(text.as_bytes()).map_err(failed)?;
        file.as_file().sync_all().map_err(failed)?;
        file.persist(path).map_err(|e| failed(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
