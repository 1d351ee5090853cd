//! Retrying HTTP requests (the platform's API, HTTP sources): exponential
//! backoff with jitter (the `backoff` crate), a bounded number of attempts,
//! and the server's `Retry-After` honoured.
//!
//! What is retryable is decided by each boundary's error type through
//! [`Retryable`]; this module only runs the loop.

use std::future::Future;
use std::time::{Duration, SystemTime};

use backoff::backoff::Backoff;
use backoff::ExponentialBackoffBuilder;

/// What the retry loop needs to know about an error type.
pub trait Retryable: std::fmt::Display + Sized {
    /// Whether sending the same request again may succeed.
    fn is_retryable(&self) -> bool;
    /// How long the server asked us to wait.
    fn retry_after(&self) -> Option<Duration>;
    /// The error for "gave up after `attempts` attempts".
    fn exhausted(operation: &'static str, attempts: u32, last: Self) -> Self;
    /// The error for "the server asked to wait longer than we will".
    fn wait_too_long(operation: &'static str, wait: Duration, limit: Duration) -> Self;
}

/// How hard to try before giving up on one request.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (at least 1).
    pub max_attempts: u32,
    pub initial_interval: Duration,
    pub max_interval: Duration,
    /// A `Retry-After` longer than this ends the request as a failure instead
    /// of parking the run for an unbounded time.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_interval: Duration::from_millis(500),
            max_interval: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

/// Parses a `Retry-After` header value: delay-seconds or an HTTP-date
/// (RFC 9110 section 10.2.3). A date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Runs `attempt` until it succeeds, fails with a final error, or runs out of
/// attempts. Each retry is logged with the attempt number and the wait.
pub async fn with_retries<T, E, F, Fut>(
    policy: &RetryPolicy,
    operation: &'static str,
    attempt: F,
) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    with_retries_or(policy, operation, attempt, || std::future::pending::<E>()).await
}

/// [`with_retries`] whose waits between attempts end early when
/// `interrupted()` resolves: its error is returned at once, and no further
/// attempt is made (a client that stopped, a deadline that passed).
pub async fn with_retries_or<T, E, F, Fut, I, IFut>(
    policy: &RetryPolicy,
    operation: &'static str,
    mut attempt: F,
    mut interrupted: I,
) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    I: FnMut() -> IFut,
    IFut: Future<Output = E>,
{
    let max_attempts = policy.max_attempts.max(1);
    let mut backoff = ExponentialBackoffBuilder::new()
        .with_initial_interval(policy.initial_interval)
        .with_max_interval(policy.max_interval)
        .with_randomization_factor(0.5)
        .with_multiplier(2.0)
        .with_max_elapsed_time(None)
        .build();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let err = match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !err.is_retryable() {
            return Err(err);
        }
        if attempts >= max_attempts {
            return Err(E::exhausted(operation, attempts, err));
        }
        let wait = match err.retry_after() {
            Some(wait) if wait > policy.max_retry_after => {
                return Err(E::wait_too_long(operation, wait, policy.max_retry_after));
            }
            Some(wait) => wait,
            None => backoff.next_backoff().unwrap_or(policy.max_interval),
        };
        tracing::warn!(
            operation,
            attempt = attempts,
            error = %err,
            wait_ms = wait.as_millis() as u64,
            "Request failed; retrying."
        );
        tokio::select! {
            biased;
            stop = interrupted() => return Err(stop),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::PlatformError;

    #[test]
    fn retry_after_in_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_as_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        // A date in the past: retry now.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_garbage_is_ignored() {
        assert_eq!(parse_retry_after("soon", SystemTime::now()), None);
        assert_eq!(parse_retry_after("-3", SystemTime::now()), None);
    }

    fn throttled() -> PlatformError {
        PlatformError::Throttled {
            operation: "t",
            retry_after: Some(Duration::from_secs(3)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_and_attempts_are_bounded() {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let result: Result<(), _> = with_retries(&policy, "t", || {
            calls += 1;
            async { Err(throttled()) }
        })
        .await;
        assert_eq!(calls, 3);
        // Two waits of exactly the Retry-After, no more and no less.
        assert_eq!(start.elapsed(), Duration::from_secs(6));
        match result {
            Err(PlatformError::RetriesExhausted { attempts: 3, .. }) => {}
            other => panic!("expected RetriesExhausted, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn final_errors_are_not_retried() {
        let mut calls = 0;
        let result: Result<(), _> = with_retries(&RetryPolicy::default(), "t", || {
            calls += 1;
            async {
                Err(PlatformError::Unauthorized {
                    operation: "t",
                    status: 401,
                })
            }
        })
        .await;
        assert_eq!(calls, 1);
        assert!(result.unwrap_err().is_auth());
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_beyond_the_limit_fails_at_once() {
        let policy = RetryPolicy {
            max_retry_after: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        let mut calls = 0;
        let result: Result<(), _> = with_retries(&policy, "t", || {
            calls += 1;
            async { Err(throttled()) }
        })
        .await;
        assert_eq!(calls, 1);
        assert!(matches!(
            result,
            Err(PlatformError::RetryAfterTooLong { .. })
        ));
    }
}
