//! Fault injection and request accounting: what tests and benchmarks set
//! (latency, a request-rate ceiling answered with 429, a share of 500/503
//! answers) and what they read back (requests per operation, 429s, 5xx).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// Faults applied to `POST /api`, settable by flags and `PUT /admin/faults`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every request before it is answered.
    pub latency_ms: u64,
    /// Requests accepted per second (fixed one-second windows); past it, 429.
    pub rate_limit_per_sec: Option<u32>,
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
    /// Executed requests by root field (`customers`, `createCustomer`, ...).
    pub operations: BTreeMap<String, u64>,
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
}

impl Stats {
    pub fn operation(&self, name: &str) -> u64 {
        self.operations.get(name).copied().unwrap_or(0)
    }
}

/// A fixed one-second window counter for the request-rate ceiling.
#[derive(Debug)]
pub struct RateWindow {
    started: Instant,
    count: u32,
}

impl Default for RateWindow {
    fn default() -> Self {
        RateWindow {
            started: Instant::now(),
            count: 0,
        }
    }
}

impl RateWindow {
    /// Counts one request; false when it is over `limit` in this window.
    pub fn admit(&mut self, limit: u32, now: Instant) -> bool {
        if now.duration_since(self.started) >= Duration::from_secs(1) {
            self.started = now;
            self.count = 0;
        }
        if self.count >= limit {
            return false;
        }
        self.count += 1;
        true
    }
}

/// The decision for one request, taken before it is executed.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    Throttle,
    Fail(u16),
}

/// Decides whether a request is throttled, failed or served, consuming the
/// deterministic counters first. `roll` is a uniform number in [0, 1).
pub fn decide(faults: &mut Faults, window: &mut RateWindow, now: Instant, roll: f64) -> Verdict {
    if faults.throttle_next > 0 {
        faults.throttle_next -= 1;
        return Verdict::Throttle;
    }
    if let Some(limit) = faults.rate_limit_per_sec {
        if !window.admit(limit, now) {
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

    #[test]
    fn the_rate_ceiling_admits_limit_requests_per_window() {
        let mut w = RateWindow::default();
        let t0 = Instant::now();
        assert!(w.admit(2, t0));
        assert!(w.admit(2, t0));
        assert!(!w.admit(2, t0));
        assert!(w.admit(2, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn deterministic_counters_come_first_and_run_out() {
        let mut f = Faults {
            throttle_next: 1,
            fail_next: 1,
            error_status: Some(500),
            ..Faults::default()
        };
        let mut w = RateWindow::default();
        let now = Instant::now();
        assert_eq!(decide(&mut f, &mut w, now, 0.9), Verdict::Throttle);
        assert_eq!(decide(&mut f, &mut w, now, 0.9), Verdict::Fail(500));
        assert_eq!(decide(&mut f, &mut w, now, 0.9), Verdict::Serve);
    }

    #[test]
    fn the_error_rate_uses_the_roll() {
        let mut f = Faults {
            error_rate: 0.5,
            ..Faults::default()
        };
        let mut w = RateWindow::default();
        let now = Instant::now();
        assert_eq!(decide(&mut f, &mut w, now, 0.2), Verdict::Fail(503));
        assert_eq!(decide(&mut f, &mut w, now, 0.7), Verdict::Serve);
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
