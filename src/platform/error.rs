//! The platform boundary's error type, and the one place that decides what
//! is worth retrying.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::auth::AuthError;

/// One entry of a mutation payload's `errors` list (`ErrorType`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The input field at fault, or `__all__` for errors not tied to one field.
    pub field: String,
    pub messages: Vec<String>,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.messages.join("; "))
    }
}

/// What an operation was doing, as an operator would say it: the queries by
/// their purpose ("checking the token"), the mutations by their API name.
pub fn doing(operation: &str) -> &str {
    match operation {
        "AuthenticatedUser" => "checking the token",
        "CustomerRoles" => "reading the customer roles",
        "ListCustomers" => "reading the customers",
        "ListCustomerUsers" => "reading the customer users",
        "FindCustomer" => "looking up a customer by externalId",
        "FindCustomerUser" => "looking up a customer user by externalId",
        "CustomerHoldings" => "reading what a customer holds",
        other => other,
    }
}

/// An inner error's message without the operation prefix the outer one
/// already printed.
fn unprefixed(inner: &PlatformError, operation: &str) -> String {
    let text = inner.to_string();
    match text.strip_prefix(&format!("{}: ", doing(operation))) {
        Some(rest) => rest.to_owned(),
        None => text,
    }
}

struct Joined<'a, T>(&'a [T], &'a str);

impl<T: fmt::Display> fmt::Display for Joined<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(self.1)?;
            }
            item.fmt(f)?;
        }
        Ok(())
    }
}

/// Everything that can go wrong talking to the platform.
///
/// Messages name the operation (`ListCustomers`, `createCustomer`, ...) and
/// never contain a token: requests are built from secrets, errors are built
/// from operation names, statuses and the platform's own messages.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The connection could not be made (refused, no route, name not
    /// found). `cause` is the innermost error's text: reqwest's own
    /// ("error sending request for url") says nothing.
    #[error("{}: cannot connect to the platform at {url}: {cause}", doing(.operation))]
    Connect {
        operation: &'static str,
        url: String,
        cause: String,
    },
    /// The platform's TLS certificate was refused. Not retried: it will be
    /// refused again.
    #[error("{}: the platform's certificate at {url} was refused: {cause} (for a private CA, set platform.ca_file)", doing(.operation))]
    Certificate {
        operation: &'static str,
        url: String,
        cause: String,
    },
    #[error("{}: the platform did not answer within {timeout:?}", doing(.operation))]
    Timeout {
        operation: &'static str,
        timeout: Duration,
    },
    #[error("{}: the platform is throttling requests (HTTP 429{})", doing(.operation), retry_after_text(.retry_after))]
    Throttled {
        operation: &'static str,
        retry_after: Option<Duration>,
    },
    #[error("{}: the platform answered HTTP {status}{}", doing(.operation), retry_after_text(.retry_after))]
    Unavailable {
        operation: &'static str,
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error(
        "{}: authentication failed (HTTP {status}); check the platform URL and the token",
        doing(.operation)
    )]
    Unauthorized {
        operation: &'static str,
        status: u16,
    },
    #[error("{}: {url} answered HTTP 404: platform.url must be the platform's base URL (such as https://app.prismatic.io); dirsync appends /api to it", doing(.operation))]
    EndpointNotFound {
        operation: &'static str,
        url: String,
    },
    #[error("{}: unexpected HTTP {status} from the platform: {body}", doing(.operation))]
    UnexpectedStatus {
        operation: &'static str,
        status: u16,
        body: String,
    },
    #[error("{}: the request to {url} failed: {cause}", doing(.operation))]
    Transport {
        operation: &'static str,
        url: String,
        cause: String,
    },
    #[error("{}: the platform rejected the request: {}", doing(.operation), Joined(.messages, "; "))]
    GraphQl {
        operation: &'static str,
        messages: Vec<String>,
    },
    #[error("{}: the platform refused the change: {}", doing(.operation), Joined(.errors, "; "))]
    Validation {
        operation: &'static str,
        errors: Vec<FieldError>,
    },
    #[error("{}: cannot read the platform's answer: {detail}", doing(.operation))]
    Decode {
        operation: &'static str,
        detail: String,
    },
    #[error("{}: {source}", doing(.operation))]
    Auth {
        operation: &'static str,
        #[source]
        source: AuthError,
    },
    #[error("{}: gave up after {attempts} attempt(s): {}", doing(.operation), unprefixed(.last, .operation))]
    RetriesExhausted {
        operation: &'static str,
        attempts: u32,
        #[source]
        last: Box<PlatformError>,
    },
    #[error("{}: the platform asked to wait {wait:?}, longer than the {limit:?} dirsync will wait", doing(.operation))]
    RetryAfterTooLong {
        operation: &'static str,
        wait: Duration,
        limit: Duration,
    },
    #[error("{}: {detail}", doing(.operation))]
    Protocol {
        operation: &'static str,
        detail: String,
    },
    /// Not sent: the client had stopped (an earlier authentication failure,
    /// a shutdown, the run deadline) while the request waited its turn.
    #[error("{}: not sent: {reason}", doing(.operation))]
    Stopped {
        operation: &'static str,
        reason: StopReason,
    },
    /// Sent, but the run deadline passed before the answer came: the
    /// request was abandoned (a mutation may or may not have been applied;
    /// the next run sees which).
    #[error("{}: {reason} before the platform answered", doing(.operation))]
    Abandoned {
        operation: &'static str,
        reason: StopReason,
    },
}

/// Why a client sends no further request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A request was refused as unauthenticated (HTTP 401 or 403), or no
    /// token could be had: every further request would be refused too.
    AuthFailed,
    /// The run was cancelled (SIGTERM or SIGINT): those in flight finish,
    /// nothing new leaves.
    ShuttingDown,
    /// The whole-run deadline (`platform.run_deadline_secs`) passed.
    Deadline(Duration),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::AuthFailed => f.write_str("an earlier request failed authentication"),
            StopReason::ShuttingDown => f.write_str("shutting down"),
            StopReason::Deadline(d) => write!(
                f,
                "the run deadline of {} s (platform.run_deadline_secs) passed",
                d.as_secs()
            ),
        }
    }
}

fn retry_after_text(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!(", retry after {}s", d.as_secs_f64()),
        None => String::new(),
    }
}

impl crate::retry::Retryable for PlatformError {
    fn is_retryable(&self) -> bool {
        PlatformError::is_retryable(self)
    }
    fn retry_after(&self) -> Option<Duration> {
        PlatformError::retry_after(self)
    }
    fn exhausted(operation: &'static str, attempts: u32, last: Self) -> Self {
        PlatformError::RetriesExhausted {
            operation,
            attempts,
            last: Box::new(last),
        }
    }
    fn wait_too_long(operation: &'static str, wait: Duration, limit: Duration) -> Self {
        PlatformError::RetryAfterTooLong {
            operation,
            wait,
            limit,
        }
    }
}

impl PlatformError {
    /// Whether sending the same request again may succeed: connection
    /// failures, timeouts, throttling and 5xx. Authentication failures, GraphQL
    /// errors and payload validation errors are final.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PlatformError::Connect { .. }
                | PlatformError::Timeout { .. }
                | PlatformError::Throttled { .. }
                | PlatformError::Unavailable { .. }
                | PlatformError::Transport { .. }
        )
    }

    /// How long the platform asked us to wait before the next attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PlatformError::Throttled { retry_after, .. }
            | PlatformError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// An authentication failure: the run must stop, whatever else is pending.
    pub fn is_auth(&self) -> bool {
        match self {
            PlatformError::Unauthorized { .. }
            | PlatformError::Auth { .. }
            | PlatformError::Stopped {
                reason: StopReason::AuthFailed,
                ..
            } => true,
            PlatformError::RetriesExhausted { last, .. } => last.is_auth(),
            _ => false,
        }
    }

    /// Why the client stopped, when this error is that it stopped (the
    /// request was not sent, or was abandoned at the run deadline).
    pub fn stop_reason(&self) -> Option<StopReason> {
        match self {
            PlatformError::Stopped { reason, .. } | PlatformError::Abandoned { reason, .. } => {
                Some(*reason)
            }
            _ => None,
        }
    }

    /// The payload `errors` of a refused mutation, if that is what this is.
    pub fn field_errors(&self) -> Option<&[FieldError]> {
        match self {
            PlatformError::Validation { errors, .. } => Some(errors),
            _ => None,
        }
    }

    /// The platform's answer to an id that names nothing. It answers with a
    /// top-level GraphQL error (`Customer matching query does not exist.`);
    /// a payload error on `id` saying the record was not found is read the
    /// same way, since the schema does not promise which form is used.
    pub fn is_not_found(&self) -> bool {
        let says_not_found = |m: &str| {
            let m = m.to_lowercase();
            m.contains("does not exist") || m.contains("not found")
        };
        match self {
            PlatformError::GraphQl { messages, .. } => {
                !messages.is_empty() && messages.iter().all(|m| says_not_found(m))
            }
            PlatformError::Validation { errors, .. } => {
                !errors.is_empty()
                    && errors
                        .iter()
                        .all(|f| f.field == "id" && f.messages.iter().any(|m| says_not_found(m)))
            }
            _ => false,
        }
    }
}
