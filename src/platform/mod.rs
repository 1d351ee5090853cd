//! The platform side of the sync: a typed GraphQL client for Prismatic's API.
//!
//! `client` sends requests (auth, pacing, retries through `crate::retry`,
//! pagination), `rate` finds and holds the platform's request-rate ceiling,
//! `auth` supplies tokens, `error` classifies what went wrong, and
//! `operations` holds the generated GraphQL types, which do not leave this
//! folder.

mod auth;
mod batch;
mod changes;
mod client;
mod error;
mod full_read;
mod holdings;
mod operations;
mod rate;

pub use crate::retry::{parse_retry_after, RetryPolicy};
pub use auth::{
    jwt_lifetime, AuthError, AuthMethod, SecretSource, TokenProvider, DEFAULT_REFRESH_MARGIN,
    ENV_ACCESS_TOKEN, ENV_API_KEY, ENV_REFRESH_TOKEN,
};
pub use changes::Changes;
pub use client::{
    ClientSetupError, PlatformClient, PlatformConfig, RequestStats, DEFAULT_MAX_CONCURRENCY,
    DEFAULT_RATE_CAP, DEFAULT_RUN_DEADLINE, MAX_PAGE_SIZE, MAX_THROTTLED_WAITS,
};
pub use error::{FieldError, PlatformError, StopReason};
pub use rate::{AimdRate, Backoff, Pacer};
