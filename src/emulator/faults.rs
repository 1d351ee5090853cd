//! Fault injection and request accounting: what tests and benchmarks set
//! (latency, a request-rate ceiling answered with 429, a share of 500/503
//! answers, a list changed mid-read) and what they read back (requests per
//! operation, 429s, 5xx, peak concurrency).
//!
//! The ceiling is counted per principal (bearer token), as the platform's
//! "about 20 requests per second per principal" is, and like a real
//! limiter: by default a sliding one-second window (at most N requests
//! answered in any second, the way Django REST framework's throttles keep a
//! history of request times), or, given a burst, a token bucket (GCRA).
//! Refused requests are not counted against the principal. The fixed
//! one-second buckets used before let 2N through around a bucket boundary.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Faults applied to `POST /api`, settable by flags and `PUT /admin/faults`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every request before it is answered.
    pub latency_ms: u64,
    /// Requests accepted per second and principal; past it, 429. Counted
    /// in a sliding one-second window unless `rate_limit_burst` is set.
    pub rate_limit_per_sec: Option<u32>,
    /// Makes the ceiling a token bucket (GCRA): up to this many requests at
    /// once, refilled at `rate_limit_per_sec`.
    pub rate_limit_burst: Option<u32>,
    /// The `Retry-After` sent with a 429 or 503, in seconds (default 1).
    pub retry_after_secs: Option<u64>,
    /// Send `Retry-After` as an HTTP-date instead of seconds.
    pub retry_after_as_date: bool,
    /// Share of requests (0.0 to 1.0) answered with `error_status`.
    pub error_rate: f64,
    /// 500 or 503 (default 503).
    pub error_status: Option<u16>,
    /// The next N requests are answered 429 (deterministic, for tests).
    pub throttle_next: u32,
    /// The next N requests are answered with `error_status` (deterministic, for tests).
    pub fail_next: u32,
    /// The next N mutations are carried out, but answered with 503 as if the
    /// response had been lost on the way back (for idempotency tests).
    pub lose_next_mutation_responses: u32,
    /// Once this many more list pages (`customers` or `users` queries) have
    /// been answered, a customer and a customer user in it are created, as
    /// another admin might while dirsync pages through the lists (0: never).
    pub insert_after_list_pages: u32,
    /// The most root fields (operations, aliased or not) one document may
    /// carry; a larger document is refused whole with HTTP 400 and nothing
    /// in it runs, as the platform's cost limits refuse a document (None:
    /// no limit).
    pub max_root_fields: Option<u32>,
}

impl Faults {
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs(self.retry_after_secs.unwrap_or(1))
    }

    pub fn retry_after_header(&self) -> String {
        if self.retry_after_as_date {
            httpdate::fmt_http_date(SystemTime::now() + self.retry_after())
        } else {
            self.retry_after().as_secs().to_string()
        }
    }

    pub fn error_status(&self) -> u16 {
        match self.error_status {
            Some(500) => 500,
            _ => 503,
        }
    }
}

/// What the emulator has been sent since it started (or since the last reset).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Every `POST /api`, answered or refused.
    pub requests: u64,
    /// Executed query documents.
    pub queries: u64,
    /// Executed mutation documents.
    pub mutations: u64,
    /// Executed operations by root field (`customers`, `createCustomer`,
    /// ...): a document of 20 aliased mutations counts 20.
    pub operations: BTreeMap<String, u64>,
    /// The root fields of the first [`ARRIVALS_KEPT`] documents executed,
    /// in the order they arrived (`users`, `customers+customerRoles`, ...):
    /// what a client asks for first.
    pub arrivals: Vec<String>,
    /// Documents refused whole for carrying more than `max_root_fields`.
    pub too_large: u64,
    /// Answered 429.
    pub throttled: u64,
    /// Answered 500 or 503 by fault injection.
    pub server_errors: u64,
    /// Answered 401.
    pub unauthorized: u64,
    /// Requests being answered right now.
    pub in_flight: u64,
    /// The most requests ever answered at once (a client's concurrency cap shows here).
    pub max_in_flight: u64,
    /// Requests that had come in when the first answer went out: more than
    /// one when a client asks for more while its first request is still
    /// on the wire.
    pub arrived_by_first_answer: u64,
}

/// Documents whose root fields [`Stats::arrivals`] keeps.
pub const ARRIVALS_KEPT: usize = 64;

impl Stats {
    pub fn operation(&self, name: &str) -> u64 {
        self.operations.get(name).copied().unwrap_or(0)
    }
}

/// The request-rate ceiling's memory: what each principal was let through.
#[derive(Debug, Default)]
pub struct RateLimiter {
    principals: HashMap<String, Principal>,
}

#[derive(Debug, Default)]
struct Principal {
    /// When the requests answered within the last second were admitted.
    window: VecDeque<Instant>,
    /// GCRA's theoretical arrival time: when the bucket is full again.
    tat: Option<Instant>,
}

/// The sliding window's length: the ceiling is "per second".
const WINDOW: Duration = Duration::from_secs(1);

impl RateLimiter {
    /// Counts one request of `principal`; false when it is over the ceiling.
    pub fn admit(&mut self, principal: &str, limit: u32, burst: Option<u32>, now: Instant) -> bool {
        if limit == 0 {
            return false;
        }
        let p = match self.principals.get_mut(principal) {
            Some(p) => p,
            None => self.principals.entry(principal.to_owned()).or_default(),
        };
        match burst {
            None => {
                while p
                    .window
                    .front()
                    .is_some_and(|&t| now.saturating_duration_since(t) >= WINDOW)
                {
                    p.window.pop_front();
                }
                if p.window.len() >= limit as usize {
                    return false;
                }
                p.window.push_back(now);
                true
            }
            Some(burst) => {
                let interval = WINDOW / limit;
                let tolerance = interval * burst.max(1).saturating_sub(1);
                let tat = p.tat.map_or(now, |t| t.max(now));
                if tat.saturating_duration_since(now) > tolerance {
                    return false;
                }
                p.tat = Some(tat + interval);
                true
            }
        }
    }
}

/// The decision for one request, taken before it is executed.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    Throttle,
    Fail(u16),
}

/// Decides whether a request of `principal` is throttled, failed or
/// served, consuming the deterministic counters first. `roll` is a uniform
/// number in [0, 1).
pub fn decide(
    faults: &mut Faults,
    limiter: &mut RateLimiter,
    principal: &str,
    now: Instant,
    roll: f64,
) -> Verdict {
    if faults.throttle_next > 0 {
        faults.throttle_next -= 1;
        return Verdict::Throttle;
    }
    if let Some(limit) = faults.rate_limit_per_sec {
        if !limiter.admit(principal, limit, faults.rate_limit_burst, now) {
            return Verdict::Throttle;
        }
    }
    if faults.fail_next > 0 {
        faults.fail_next -= 1;
        return Verdict::Fail(faults.error_status());
    }
    if roll < faults.error_rate {
        return Verdict::Fail(faults.error_status());
    }
    Verdict::Serve
}

/// After a list page has been answered: whether the lists change now.
pub fn insert_now(faults: &mut Faults) -> bool {
    if faults.insert_after_list_pages > 0 {
        faults.insert_after_list_pages -= 1;
        return faults.insert_after_list_pages == 0;
    }
    false
}

/// After a mutation has been carried out: whether its response is "lost".
pub fn lose_response(faults: &mut Faults) -> bool {
    if faults.lose_next_mutation_responses > 0 {
        faults.lose_next_mutation_responses -= 1;
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_sliding_window_admits_limit_requests_in_any_second() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        assert!(l.admit("a", 2, None, t0));
        assert!(l.admit("a", 2, None, t0 + 600 * MS));
        assert!(!l.admit("a", 2, None, t0 + 999 * MS));
        // A refused request is not counted; the first admitted one has left.
        assert!(l.admit("a", 2, None, t0 + 1000 * MS));
        assert!(!l.admit("a", 2, None, t0 + 1500 * MS));
        assert!(l.admit("a", 2, None, t0 + 1600 * MS));
    }

    #[test]
    fn there_is_no_double_burst_at_a_second_boundary() {
        // Fixed buckets let 2N through around a boundary; a sliding window never more than N.
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        let admitted = (0..40)
            .filter(|i| l.admit("a", 10, None, t0 + 900 * MS + *i * 5 * MS))
            .count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn each_principal_has_its_own_ceiling() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        assert!(l.admit("a", 1, None, t0));
        assert!(!l.admit("a", 1, None, t0));
        assert!(l.admit("b", 1, None, t0));
    }

    #[test]
    fn with_a_burst_the_ceiling_is_a_token_bucket() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        // Three at once, then one every 100 ms (10 a second).
        for _ in 0..3 {
            assert!(l.admit("a", 10, Some(3), t0));
        }
        assert!(!l.admit("a", 10, Some(3), t0));
        assert!(!l.admit("a", 10, Some(3), t0 + 99 * MS));
        assert!(l.admit("a", 10, Some(3), t0 + 100 * MS));
        assert!(!l.admit("a", 10, Some(3), t0 + 150 * MS));
        // Idle for a second: the bucket is full again, and no fuller.
        let later = t0 + 1200 * MS;
        let admitted = (0..10).filter(|_| l.admit("a", 10, Some(3), later)).count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn the_lists_change_once_after_the_given_pages() {
        let mut f = Faults {
            insert_after_list_pages: 2,
            ..Faults::default()
        };
        assert!(!insert_now(&mut f));
        assert!(insert_now(&mut f));
        assert!(!insert_now(&mut f));
    }

    #[test]
    fn deterministic_counters_come_first_and_run_out() {
        let mut f = Faults {
            throttle_next: 1,
            fail_next: 1,
            error_status: Some(500),
            ..Faults::default()
        };
        let mut l = RateLimiter::default();
        let now = Instant::now();
        assert_eq!(decide(&mut f, &mut l, "t", now, 0.9), Verdict::Throttle);
        assert_eq!(decide(&mut f, &mut l, "t", now, 0.9), Verdict::Fail(500));
        assert_eq!(decide(&mut f, &mut l, "t", now, 0.9), Verdict::Serve);
    }

    #[test]
    fn the_error_rate_uses_the_roll() {
        let mut f = Faults {
            error_rate: 0.5,
            ..Faults::default()
        };
        let mut l = RateLimiter::default();
        let now = Instant::now();
        assert_eq!(decide(&mut f, &mut l, "t", now, 0.2), Verdict::Fail(503));
        assert_eq!(decide(&mut f, &mut l, "t", now, 0.7), Verdict::Serve);
    }

    #[test]
    fn retry_after_can_be_a_date() {
        let f = Faults {
            retry_after_as_date: true,
            ..Faults::default()
        };
        assert!(f.retry_after_header().ends_with("GMT"));
        assert_eq!(Faults::default().retry_after_header(), "1");
    }
}
