//! A local stand-in for the platform's GraphQL API, used by tests,
//! benchmarks and the quickstart (`dirsync emulator`).
//!
//! Its behaviour follows shared/reference/platform-api.md, never the
//! client's convenience: `store` holds the data and the platform's rules,
//! `schema` serves the same GraphQL contract as `graphql/schema.graphql`,
//! `server` is the HTTP face (auth, faults, admin), `faults` decides and
//! counts, `seed` loads starting data.

mod faults;
mod schema;
mod seed;
mod server;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use faults::{Faults, RateLimiter, Stats};
pub use schema::sdl;
pub use seed::{Seed, SeedCustomer, SeedOrgUser, SeedUser};
pub use server::{start, AuthMeta, EmulatorHandle, EmulatorOptions, RunningEmulator};
pub use store::{RoleKind, State, StoredCustomer, StoredRole, StoredUser};

/// Why the emulator could not start or keep its state.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the state file {}: {source}", path.display())]
    LoadState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state file {} is not valid emulator state: {source}", path.display())]
    ParseState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the state file {}: {source}", path.display())]
    SaveState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("seed {}: {detail}", path.display())]
    Seed { path: PathBuf, detail: String },
    #[error("the emulator stopped with an error: {0}")]
    Serve(#[source] std::io::Error),
}
