//! The request rate to the platform: found while the run goes, not configured.
//!
//! The platform answers 429 past a per-principal ceiling it does not
//! publish (about 20 requests per second is what is observed, and it may be
//! shared with other users of the same token). `platform.requests_per_second`
//! is a cap the rate never passes, not a target.
//!
//! [`AimdRate`] is the state machine: a pure function of the events it is
//! given, with their instants (its tests give explicit ones).
//!
//! - **The opening**, with no ceiling known: the run's reads go at
//!   [`BACKOFF`] of the ceiling commonly observed ([`COMMON_CEILING`], under
//!   the cap), held, while they would be done within [`OPENING`] at that
//!   rate: until the run's first write, or a list's first page announces
//!   more pages than that ([`AimdRate::expect`]), or [`OPENING`] of sending.
//!   A run starts by reading, and a plan is nothing but a read: a read of up
//!   to about a hundred pages then draws no 429, where finding the ceiling
//!   cost a `Retry-After` pause (1 s) that weighed up to as much as the
//!   read (reads of 23 and 102 pages: 1.37 to 1.88 and 1.11 to 1.25 of the
//!   bound from 0 to 200 ms of latency before the opening, BENCHMARKS.md).
//!   A longer read leaves the opening at its first page, as if there were
//!   none. The price: under a ceiling above the common one, such a read
//!   goes at half the rate it could (the commonly observed ceiling is the
//!   one bet on), and only once a day when the run remembers that the cap
//!   held without a 429 ([`AimdRate::ceiling`]).
//! - **The start**, after the opening, just under the cap ([`BACKOFF`] of
//!   it, as under any ceiling the rate believes in, so that no second holds
//!   more requests than the cap): the platform's ceiling shows only in a
//!   429, which pauses the whole client for its `Retry-After` (typically
//!   1 s) whatever rate drew it, and the answers in the window before it
//!   measure the ceiling. A run that started lower paid that same pause and
//!   the climb to the ceiling as well. The default cap, 40, is twice the
//!   ceiling commonly observed: a ceiling at or above it is never reached,
//!   and a lower one is met and measured within the first second of writes
//!   (a short first sync of 215 requests: 1.04 to 1.09 of the bound at
//!   ceilings of 10, 20 and 40 in the module's simulation, BENCHMARKS.md).
//!   A principal shared with other clients is what a lower cap is for.
//! - **Slow start**, after a 429 that measured nothing (below): each
//!   answered request adds [`SLOW_START_STEP`] requests per second, so while
//!   requests queue at the pacer the rate grows about sevenfold a second.
//! - **Back-off** on a 429: the platform's ceiling is measured as the
//!   requests it answered among those sent in the second before the
//!   throttled one (or since the client started sending, or resumed after
//!   the last pause, when that is more recent), and the new rate is
//!   [`BACKOFF`] times that: a limiter counting a window lets exactly its
//!   ceiling through in it. Never more than [`BACKOFF`] times the current
//!   rate, nor more than [`REPEAT_BACKOFF`] times it when the 429 came
//!   within [`REPEAT_WITHIN`] of resuming from the last one (a token
//!   bucket's burst made that measurement too high). When nothing can be
//!   measured (fewer than [`MIN_MEASURED`] answers, or less than
//!   [`MIN_SPAN`] of sending: someone else's requests on the token, a
//!   fault) the rate is halved and the search goes on as before. A 429 for
//!   a request sent before the last back-off is part of the overload it
//!   answered and changes nothing. Never below [`MIN_RATE`].
//! - **Hold**, after a back-off: below [`RECOVERY_BELOW`] of the last
//!   measured ceiling, each second of traffic adds [`RECOVERY_SHARE`] of it;
//!   above, a probe that starts at [`PROBE_SHARE`] of the rate a second and
//!   doubles every [`PROBE_DOUBLING`] seconds of traffic without a 429: the
//!   rate stays just under the ceiling for tens of seconds between 429s
//!   (each costs a whole pause), yet a ceiling measured too low, or one
//!   that rose, is found again.
//!
//! The rate grows only while the client sends at least half of it (it is
//! what holds requests back), so an idle or latency-bound run does not
//! climb back to the cap unchecked after a back-off.
//!
//! Why not the textbook halving of the current rate: its sawtooth averages
//! three quarters of the ceiling, and every 429 costs a whole `Retry-After`
//! (typically 1 s) in which the client sends nothing, so probing often costs
//! more than it finds.
//!
//! [`Pacer`] spaces requests at the current rate for the whole client: each
//! takes the next free slot (one interval after the slot before, or now when
//! the client was idle), with no burst, so that no second ever holds more
//! than the rate plus one: no more than the cap, the rate being under it.
//! It follows tokio's clock, paused clocks included.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The rate never goes below one request a second.
pub const MIN_RATE: f64 = 1.0;
/// The ceiling commonly observed (`platform-api.md`: about 20 requests a
/// second per principal, not published): the opening's.
pub const COMMON_CEILING: f64 = 20.0;
/// The opening lasts at most this much sending (about 116 requests at its
/// rate): a read longer than that is long enough to pay for finding the
/// ceiling (a second's pause weighs 1/6 of it or less).
pub const OPENING: Duration = Duration::from_secs(6);
/// Slow start: requests per second added by each answered request.
pub const SLOW_START_STEP: f64 = 2.0;
/// A back-off leaves this share of the ceiling measured (and of the rate),
/// and the rate never passes this share of the cap: spaced evenly at it, no
/// second holds more requests than the ceiling, with some 30 ms to spare
/// for requests that bunch on the way.
pub const BACKOFF: f64 = 0.97;
/// A back-off that cannot measure the ceiling halves the rate.
pub const BLIND_BACKOFF: f64 = 0.5;
/// Fewer answered requests than this in the second before a 429: no measurement.
pub const MIN_MEASURED: u32 = 2;
/// Nor when the client had been sending for less than this (a run that
/// starts at a cap of 50 meets a ceiling of 10 after 200 ms; at the default
/// cap of 40, after 260 ms).
pub const MIN_SPAN: Duration = Duration::from_millis(150);
/// A 429 this soon after the client resumed from a back-off's pause...
pub const REPEAT_WITHIN: Duration = Duration::from_secs(5);
/// ...cuts the rate to at most this share of what it was.
pub const REPEAT_BACKOFF: f64 = 0.8;
/// Below this share of the ceiling measured, the rate recovers quickly.
pub const RECOVERY_BELOW: f64 = 0.9;
/// While recovering, each second of traffic adds this share of the ceiling.
pub const RECOVERY_SHARE: f64 = 0.1;
/// Above it, each second of traffic first adds this share of the rate...
pub const PROBE_SHARE: f64 = 0.0005;
/// ...doubling every this many seconds of traffic without a 429: the 5% a
/// back-off left are probed in about 50 s, and a rate held at half the
/// ceiling (measured while someone else's requests on the same token filled
/// the window) is back at it in about two and a half minutes.
pub const PROBE_DOUBLING: f64 = 30.0;
/// The ceiling's unit: requests answered in a second.
const WINDOW: Duration = Duration::from_secs(1);
/// How long sends and answers are remembered (a few windows, for late answers).
const MEMORY: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// No ceiling measured yet: just under the cap from the start, climbing by
    /// [`SLOW_START_STEP`] after a back-off that measured nothing.
    Searching,
    /// Just under the ceiling the last back-off measured (or the run
    /// started from).
    Hold { ceiling: f64 },
}

/// What a 429 did to the rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub from: f64,
    pub to: f64,
    /// Requests answered in the second before the throttled one was sent,
    /// when that second could tell.
    pub measured: Option<u32>,
    /// The first back-off of this run.
    pub first: bool,
}

/// The rate limiter's state machine (module docs).
#[derive(Clone, Debug)]
pub struct AimdRate {
    /// The highest rate: [`BACKOFF`] of the cap, so that no second holds
    /// more requests than the cap.
    top: f64,
    /// The cap itself.
    cap: f64,
    /// The rate sent at [`AimdRate::top`] for a whole second with no 429
    /// yet: the ceiling is at the cap or above ([`AimdRate::ceiling`]).
    /// Only under a cap above the common ceiling, where it spares the next
    /// run the opening (under a lower one it would only outlive a raise of
    /// the cap).
    held_top: bool,
    rate: f64,
    phase: Phase,
    /// In the opening (module docs): held at the common ceiling.
    opening: bool,
    /// When the opening ended (the rate jumped to just under the cap): a
    /// 429 within [`MIN_SPAN`] of it measures nothing, as at the start (a
    /// limiter that spaces requests strictly answers the jump at once,
    /// having let through only the few requests of the opening).
    opened_at: Option<Instant>,
    /// When the last back-off happened: 429s of requests sent before it are
    /// part of the overload it answered.
    backed_off_at: Option<Instant>,
    backoffs: u32,
    /// Seconds of traffic spent probing since the last back-off.
    probing: f64,
    /// When the client last started sending: its first request, or the
    /// first after the last back-off (the pause's end).
    sending_since: Option<Instant>,
    /// When recent requests were sent.
    sent: VecDeque<Instant>,
    /// When recent requests that were answered (not 429) had been sent.
    answered: VecDeque<Instant>,
}

impl AimdRate {
    pub fn new(cap: NonZeroU32) -> AimdRate {
        let top = (BACKOFF * f64::from(cap.get())).max(MIN_RATE);
        let opening = (BACKOFF * COMMON_CEILING).clamp(MIN_RATE, top);
        AimdRate {
            top,
            cap: f64::from(cap.get()),
            held_top: false,
            rate: opening,
            phase: Phase::Searching,
            opening: opening < top,
            opened_at: None,
            backed_off_at: None,
            backoffs: 0,
            probing: 0.0,
            sending_since: None,
            sent: VecDeque::new(),
            answered: VecDeque::new(),
        }
    }

    /// Requests per second, now.
    pub fn current(&self) -> f64 {
        self.rate
    }

    /// Starts from a ceiling measured by an earlier run (the state store)
    /// instead of searching for it: [`BACKOFF`] of it (under the cap), held
    /// and probed as after a back-off. Only before the first request.
    pub fn start_at_ceiling(&mut self, ceiling: f64) {
        if self.sending_since.is_some() || !ceiling.is_finite() || ceiling < MIN_RATE {
            return;
        }
        self.rate = (BACKOFF * ceiling).clamp(MIN_RATE, self.top);
        self.phase = Phase::Hold { ceiling };
        self.opening = false;
    }

    /// Ends the opening at `at` (the run's first write, a long read, or
    /// [`OPENING`] of sending): the rate starts just under the cap. Nothing
    /// after it.
    pub fn end_opening(&mut self, at: Instant) {
        if self.opening {
            self.opening = false;
            self.opened_at = Some(at);
            self.rate = self.top;
        }
    }

    /// A read announces `requests` more at `now` (a list's other pages,
    /// once its first gave `totalCount`): when they would take the opening
    /// past [`OPENING`] at its rate, it ends now.
    pub fn expect(&mut self, requests: usize, now: Instant) {
        if !self.opening {
            return;
        }
        let elapsed = self
            .sending_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        let left = Duration::from_secs_f64(requests as f64 / self.rate);
        if elapsed + left > OPENING {
            self.end_opening(now);
        }
    }

    /// The cap is above the common ceiling: a run with no ceiling known
    /// opens under it.
    fn opens(&self) -> bool {
        BACKOFF * COMMON_CEILING < self.top
    }

    /// Still in the opening.
    pub fn in_opening(&self) -> bool {
        self.opening
    }

    /// The ceiling measured at the last back-off, if any; before any, the
    /// cap once a whole second at the top rate drew no 429 (what a later
    /// run can start from, with no opening).
    pub fn ceiling(&self) -> Option<f64> {
        match self.phase {
            Phase::Searching => self.held_top.then_some(self.cap),
            Phase::Hold { ceiling } => Some(ceiling),
        }
    }

    /// Back-offs so far.
    pub fn backoffs(&self) -> u32 {
        self.backoffs
    }

    /// A request left at `sent`.
    pub fn on_sent(&mut self, sent: Instant) {
        let resumed = match (self.sending_since, self.backed_off_at) {
            (None, _) => true,
            (Some(since), Some(at)) => since < at && sent >= at,
            (Some(_), None) => false,
        };
        if resumed {
            self.sending_since = Some(sent);
        }
        if self
            .sending_since
            .is_some_and(|since| sent.saturating_duration_since(since) >= OPENING)
        {
            self.end_opening(sent);
        }
        self.sent.push_back(sent);
        forget_before(&mut self.sent, sent);
    }

    /// A request sent at `sent` was answered (anything but a 429) at `now`.
    pub fn on_success(&mut self, sent: Instant, now: Instant) {
        self.answered.push_back(sent);
        forget_before(&mut self.answered, now);
        forget_before(&mut self.sent, now);
        if self.opening {
            return;
        }
        if self.opens() && self.backoffs == 0 && self.rate >= self.top && !self.held_top {
            self.held_top = self.sending_since.is_some_and(|since| {
                now.saturating_duration_since(since) >= WINDOW
                    && self.sent_within(now) as f64 >= RECOVERY_BELOW * self.top
            });
        }
        // Grow only while the rate is what holds requests back: the client
        // sends at least half of it (over the last second, or since its
        // first request when that is more recent).
        let span = self
            .sending_since
            .map_or(WINDOW, |since| now.saturating_duration_since(since))
            .clamp(Duration::from_millis(1), WINDOW);
        let since = now.checked_sub(span);
        let recent = self
            .sent
            .iter()
            .filter(|&&s| s <= now && since.is_none_or(|t| s >= t))
            .count();
        if (recent as f64) / span.as_secs_f64() < self.rate / 2.0 {
            return;
        }
        let step = match self.phase {
            Phase::Searching => SLOW_START_STEP,
            // At the rate, `rate` answers come in a second: per second,
            // RECOVERY_SHARE of the ceiling.
            Phase::Hold { ceiling } if self.rate < RECOVERY_BELOW * ceiling => {
                RECOVERY_SHARE * ceiling / self.rate
            }
            // PROBE_SHARE of the rate a second, doubling every PROBE_DOUBLING.
            Phase::Hold { .. } => {
                self.probing += 1.0 / self.rate;
                PROBE_SHARE * (self.probing / PROBE_DOUBLING).min(30.0).exp2()
            }
        };
        self.rate = (self.rate + step).min(self.top);
    }

    /// Requests sent in the second up to `now`.
    fn sent_within(&self, now: Instant) -> usize {
        let since = now.checked_sub(WINDOW);
        self.sent
            .iter()
            .filter(|&&s| s <= now && since.is_none_or(|t| s > t))
            .count()
    }

    /// A request sent at `sent` was answered 429 at `now`. None when it
    /// belongs to an overload already answered.
    pub fn on_throttled(&mut self, sent: Instant, now: Instant) -> Option<Backoff> {
        if self.backed_off_at.is_some_and(|at| sent < at) {
            return None;
        }
        // A ceiling under the common one: measured from the opening's rate.
        self.opening = false;
        self.held_top = false;
        let from = self.rate;
        // The platform's rate, measured: answers to what was sent in the
        // second before `sent`, or since the client started sending when
        // that is more recent (then as a rate over that span). A probe's
        // second reaches half an interval further back: the platform counts
        // arrivals, not departures, and a probe meets the ceiling when the
        // oldest request in its window is a second old, so a millisecond
        // of jitter would leave that one out (a ceiling of 10 measured 9).
        let probing = matches!(self.phase, Phase::Hold { ceiling } if from >= BACKOFF * ceiling);
        let reach = if probing {
            WINDOW + Duration::from_secs_f64(0.5 / from.max(MIN_RATE))
        } else {
            WINDOW
        };
        let start = match (sent.checked_sub(reach), self.sending_since) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b).unwrap_or(sent),
        };
        let span = sent.saturating_duration_since(start);
        let answered = self
            .answered
            .iter()
            .filter(|&&s| s >= start && s < sent)
            .count();
        let answered = u32::try_from(answered).unwrap_or(u32::MAX);
        let just_opened = self
            .opened_at
            .is_some_and(|at| sent.saturating_duration_since(at) < MIN_SPAN);
        let measured =
            (span >= MIN_SPAN && !just_opened && answered >= MIN_MEASURED).then_some(answered);
        let (to, phase) = match (measured, self.phase) {
            (Some(m), _) => {
                let m = f64::from(m);
                (BACKOFF * m.min(from), Phase::Hold { ceiling: m })
            }
            // Nothing learnt (someone else's requests on the token, or a
            // look too early): halve, and go on searching as before.
            (None, phase) => (BLIND_BACKOFF * from, phase),
        };
        // Throttled again soon after the last back-off: what was measured
        // then was too much (a token bucket's burst counts in a second).
        let repeat = self.backed_off_at.is_some()
            && self
                .sending_since
                .is_some_and(|since| sent.saturating_duration_since(since) < REPEAT_WITHIN);
        let to = if repeat {
            to.min(REPEAT_BACKOFF * from)
        } else {
            to
        };
        self.rate = to.clamp(MIN_RATE, self.top);
        self.phase = phase;
        self.probing = 0.0;
        self.backed_off_at = Some(now);
        self.backoffs += 1;
        Some(Backoff {
            from,
            to: self.rate,
            measured,
            first: self.backoffs == 1,
        })
    }
}

/// Drops what is older than [`MEMORY`] before `now` (mostly in order: late
/// answers may leave a few older ones behind for a while).
fn forget_before(times: &mut VecDeque<Instant>, now: Instant) {
    while times
        .front()
        .is_some_and(|&t| now.saturating_duration_since(t) > MEMORY)
    {
        times.pop_front();
    }
}

/// Spaces the whole client's requests at an [`AimdRate`].
#[derive(Debug)]
pub struct Pacer {
    state: Mutex<PacerState>,
}

#[derive(Debug)]
struct PacerState {
    aimd: AimdRate,
    /// The earliest instant the next request may leave.
    next_free: Option<Instant>,
    /// Moves on at each back-off: slots taken before it are void.
    epoch: u64,
    /// The rate last logged (changes of a whole request per second are).
    logged: f64,
}

impl Pacer {
    pub fn new(cap: NonZeroU32) -> Pacer {
        let aimd = AimdRate::new(cap);
        Pacer {
            state: Mutex::new(PacerState {
                logged: aimd.current(),
                aimd,
                next_free: None,
                epoch: 0,
            }),
        }
    }

    /// Requests per second, now.
    pub fn current(&self) -> f64 {
        self.lock().aimd.current()
    }

    /// Back-offs so far.
    pub fn backoffs(&self) -> u32 {
        self.lock().aimd.backoffs()
    }

    /// The ceiling measured at the last back-off (or started from).
    pub fn ceiling(&self) -> Option<f64> {
        self.lock().aimd.ceiling()
    }

    /// See [`AimdRate::start_at_ceiling`].
    pub fn start_at_ceiling(&self, ceiling: f64) {
        let mut s = self.lock();
        s.aimd.start_at_ceiling(ceiling);
        s.logged = s.aimd.current();
    }

    /// See [`AimdRate::expect`].
    pub fn expect(&self, requests: usize) {
        self.opening_event("A long read", |a, now| a.expect(requests, now));
    }

    /// The run's writes begin: the opening ends (see [`AimdRate::end_opening`]).
    pub fn begin_writes(&self) {
        self.opening_event("Writes begin", AimdRate::end_opening);
    }

    /// Gives the rate `event` while in the opening, and logs the end of it
    /// that `event` brought (`why`).
    fn opening_event(&self, why: &str, event: impl FnOnce(&mut AimdRate, Instant)) {
        let mut s = self.lock();
        if !s.aimd.in_opening() {
            return;
        }
        event(&mut s.aimd, Instant::now());
        if !s.aimd.in_opening() {
            s.logged = s.aimd.current();
            tracing::debug!(
                rate = round(s.logged),
                "{why}: request rate raised to just under the cap."
            );
        }
    }

    /// Returns when this request may leave: at its slot, taken now. A
    /// back-off while it waits voids the slot, and it takes a new one (after
    /// the pause).
    pub async fn until_ready(&self) {
        loop {
            let (at, epoch) = {
                let mut s = self.lock();
                let now = Instant::now();
                let at = s.next_free.map_or(now, |n| n.max(now));
                let interval = Duration::from_secs_f64(1.0 / s.aimd.current().max(MIN_RATE));
                s.next_free = Some(at + interval);
                (at, s.epoch)
            };
            tokio::time::sleep_until(at).await;
            if self.lock().epoch == epoch {
                return;
            }
        }
    }

    /// When a request asked for now could leave, taking no slot: a batch
    /// gathers operations until then, since it could not leave sooner.
    pub fn next_slot(&self) -> Instant {
        let now = Instant::now();
        self.lock().next_free.map_or(now, |n| n.max(now))
    }

    /// The request leaves now; returns the instant to report its answer with.
    pub fn sent(&self) -> Instant {
        let now = Instant::now();
        self.lock().aimd.on_sent(now);
        now
    }

    /// The request sent at `sent` was answered (anything but a 429).
    pub fn answered(&self, sent: Instant) {
        let mut s = self.lock();
        s.aimd.on_success(sent, Instant::now());
        let rate = s.aimd.current();
        if (rate - s.logged).abs() >= 1.0 {
            s.logged = rate;
            tracing::debug!(rate = round(rate), "Request rate raised.");
        }
    }

    /// The request sent at `sent` was answered 429; no request leaves
    /// before `resume_at` (the client-wide pause).
    pub fn throttled(&self, sent: Instant, resume_at: Instant) {
        let mut s = self.lock();
        let now = Instant::now();
        if let Some(b) = s.aimd.on_throttled(sent, now) {
            s.logged = b.to;
            let measured = b.measured.map(u64::from);
            if b.first {
                tracing::info!(
                    rate = round(b.to),
                    from = round(b.from),
                    measured,
                    "Throttled by the platform: request rate lowered (the first back-off of this run)."
                );
            } else {
                tracing::debug!(
                    rate = round(b.to),
                    from = round(b.from),
                    measured,
                    "Throttled by the platform: request rate lowered."
                );
            }
        }
        // Slots taken before the 429 are void; the next one is at the pause's end.
        s.epoch += 1;
        s.next_free = Some(resume_at.max(now));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PacerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A rate for the logs: one decimal.
fn round(rate: f64) -> f64 {
    (rate * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn cap(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    /// `n` requests sent and answered at `rate` from `t`, each answered
    /// `latency` after it left; returns the instant after the last.
    fn traffic(a: &mut AimdRate, t: Instant, n: u32, rate: f64, latency: Duration) -> Instant {
        let gap = Duration::from_secs_f64(1.0 / rate);
        let mut at = t;
        for _ in 0..n {
            a.on_sent(at);
            a.on_success(at, at + latency);
            at += gap;
        }
        at
    }

    #[test]
    fn a_remembered_ceiling_starts_the_run_just_under_it_and_held() {
        let mut a = after_the_opening(cap(50));
        a.start_at_ceiling(20.0);
        assert!((a.current() - 19.4).abs() < 1e-9);
        assert_eq!(a.ceiling(), Some(20.0));
        // Under a lower cap, just under the cap.
        let mut a = AimdRate::new(cap(10));
        a.start_at_ceiling(20.0);
        assert!((a.current() - 9.7).abs() < 1e-9);
        // Not once requests have gone.
        let mut a = after_the_opening(cap(50));
        a.on_sent(Instant::now());
        a.start_at_ceiling(40.0);
        assert_eq!(a.current(), 48.5);
        assert_eq!(a.ceiling(), None);
    }

    /// A rate past its opening (the run's writes began).
    fn after_the_opening(cap: NonZeroU32) -> AimdRate {
        let mut a = AimdRate::new(cap);
        a.end_opening(Instant::now().checked_sub(Duration::from_secs(1)).unwrap());
        a
    }

    #[test]
    fn a_run_starts_just_under_the_cap_with_no_ceiling_known() {
        assert_eq!(after_the_opening(cap(50)).current(), 48.5);
        assert!((AimdRate::new(cap(4)).current() - 3.88).abs() < 1e-9);
        assert_eq!(AimdRate::new(cap(1)).current(), MIN_RATE);
        assert_eq!(after_the_opening(cap(50)).ceiling(), None);
    }

    /// Measured: a plan of 23 requests (50 customers / 2,000 users) at a
    /// ceiling of 20 it was not told took 1.37 to 1.88 times the bound from
    /// 0 to 200 ms of latency, each run paying a `Retry-After` pause to find
    /// the ceiling. Reads now open at 97% of the common ceiling, held.
    #[test]
    fn a_run_opens_at_the_common_ceiling_held_until_its_writes_a_long_read_or_six_seconds() {
        let t0 = Instant::now();
        let mut a = AimdRate::new(cap(40));
        assert!((a.current() - 19.4).abs() < 1e-9);
        assert!(a.in_opening());
        // Answers do not raise it, however fast they come.
        let t = traffic(&mut a, t0, 30, 19.4, Duration::ZERO);
        assert!((a.current() - 19.4).abs() < 1e-9);
        // The first write: just under the cap.
        a.end_opening(t0);
        assert!((a.current() - 38.8).abs() < 1e-9);
        // Nothing after: a later back-off is not undone by it.
        a.on_throttled(t, t + 50 * MS).unwrap();
        let backed = a.current();
        a.end_opening(t);
        assert_eq!(a.current(), backed);
        // Without writes, six seconds of sending end it.
        let mut a = AimdRate::new(cap(40));
        let t = traffic(&mut a, t0, 117, 19.4, 50 * MS);
        assert!(a.in_opening(), "{:?}", t - t0);
        traffic(&mut a, t, 1, 19.4, 50 * MS);
        assert!(!a.in_opening());
        assert!((a.current() - 38.8).abs() < 1e-9);
        // A read announced that fits in the six seconds keeps it; one that
        // does not ends it at once.
        let mut a = AimdRate::new(cap(40));
        let t = traffic(&mut a, t0, 1, 19.4, 50 * MS);
        a.expect(101, t);
        assert!(a.in_opening());
        a.expect(116, t);
        assert!(!a.in_opening());
        assert!((a.current() - 38.8).abs() < 1e-9);
        // A cap at or under the common ceiling has no opening.
        for c in [10, 20] {
            let a = AimdRate::new(cap(c));
            assert!(!a.in_opening());
            assert!((a.current() - 0.97 * f64::from(c)).abs() < 1e-9);
        }
        // A remembered ceiling replaces it.
        let mut a = AimdRate::new(cap(40));
        a.start_at_ceiling(30.0);
        assert!(!a.in_opening());
        assert!((a.current() - 29.1).abs() < 1e-9);
    }

    /// Measured (in this module's simulation): under a ceiling of 40, a run
    /// never draws a 429 at the default cap, so it measured no ceiling and
    /// every run paid the opening again. A whole second at the top rate with
    /// no 429 now counts: the cap is the ceiling a later run starts from.
    #[test]
    fn a_second_at_the_cap_with_no_429_makes_the_cap_the_ceiling() {
        let t0 = Instant::now();
        let mut a = AimdRate::new(cap(40));
        let t = traffic(&mut a, t0, 30, 19.4, 50 * MS);
        assert_eq!(a.ceiling(), None, "not in the opening");
        a.end_opening(t);
        let t = traffic(&mut a, t, 30, 38.8, 50 * MS);
        assert_eq!(a.ceiling(), None, "not under a second at the top");
        let t = traffic(&mut a, t, 20, 38.8, 50 * MS);
        assert_eq!(a.ceiling(), Some(40.0));
        // A 429 after it: the ceiling is what it measures.
        let b = a.on_throttled(t, t + 50 * MS).unwrap();
        assert_eq!(a.ceiling(), b.measured.map(f64::from));
        // Sending at half the top rate proves nothing.
        let mut a = after_the_opening(cap(40));
        traffic(&mut a, t0, 60, 19.4, 50 * MS);
        assert_eq!(a.ceiling(), None);
        // Nor does a cap with no opening (at or under the common ceiling).
        let mut a = AimdRate::new(cap(20));
        traffic(&mut a, t0, 60, 19.4, 50 * MS);
        assert_eq!(a.ceiling(), None);
    }

    /// A ceiling under the common one is measured by the opening's 429.
    #[test]
    fn a_429_in_the_opening_measures_the_ceiling_and_ends_it() {
        let t0 = Instant::now();
        let mut a = AimdRate::new(cap(40));
        let t = traffic(&mut a, t0, 10, 19.4, 50 * MS);
        let b = a.on_throttled(t, t + 50 * MS).unwrap();
        assert_eq!(b.measured, Some(10));
        assert!((b.to - 9.7).abs() < 1e-9, "{b:?}");
        assert!(!a.in_opening());
        a.end_opening(t);
        assert!(
            (a.current() - 9.7).abs() < 1e-9,
            "the first write changes nothing"
        );
    }

    /// A 429 that measured nothing (the very first request throttled) halves
    /// the rate and leaves it searching: slow start from there.
    fn blindly_backed_off(a: &mut AimdRate, t0: Instant) -> Instant {
        let b = a.on_throttled(t0, t0 + 50 * MS).unwrap();
        assert_eq!((b.from, b.to, b.measured), (48.5, 24.25, None));
        assert_eq!(a.ceiling(), None);
        // The pause's end.
        t0 + 1050 * MS
    }

    #[test]
    fn slow_start_grows_while_the_rate_holds_requests_back_and_stops_at_the_cap() {
        let mut a = after_the_opening(cap(50));
        let mut t = blindly_backed_off(&mut a, Instant::now());
        // Requests leave as fast as the rate lets them: it grows.
        for _ in 0..5 {
            let gap = Duration::from_secs_f64(1.0 / a.current());
            a.on_sent(t);
            a.on_success(t, t + 50 * MS);
            t += gap;
        }
        assert_eq!(a.current(), 34.25);
        for _ in 0..100 {
            let gap = Duration::from_secs_f64(1.0 / a.current());
            a.on_sent(t);
            a.on_success(t, t + 50 * MS);
            t += gap;
        }
        assert_eq!(a.current(), 48.5, "never above 97% of the cap");
    }

    #[test]
    fn the_rate_does_not_grow_when_the_client_sends_less_than_half_of_it() {
        let mut a = after_the_opening(cap(50));
        let t = blindly_backed_off(&mut a, Instant::now());
        // Four a second against a rate of 25 or more: latency, not the rate,
        // holds them back. Past the first answers, it stops growing.
        let t = traffic(&mut a, t, 8, 4.0, 50 * MS);
        let settled = a.current();
        assert!(settled <= 29.0, "{settled}");
        traffic(&mut a, t, 40, 4.0, 50 * MS);
        assert_eq!(a.current(), settled);
    }

    #[test]
    fn a_429_backs_off_to_97_percent_of_the_ceiling_it_measured() {
        let t0 = Instant::now();
        let mut a = after_the_opening(cap(50));
        // 60 requests at 30/s, all answered: the rate ran up to the cap.
        let t = traffic(&mut a, t0, 60, 30.0, 50 * MS);
        assert_eq!(a.current(), 48.5);
        // The platform answered 30 in the second before the throttled one.
        let b = a.on_throttled(t, t + 50 * MS).unwrap();
        assert_eq!(b.measured, Some(30));
        assert!(b.first);
        assert_eq!(b.from, 48.5);
        assert!((b.to - 29.1).abs() < 1e-9, "{b:?}");
        assert_eq!(a.ceiling(), Some(30.0));
    }

    /// Measured: against a ceiling of 10 a first sync of 2,050 requests was
    /// throttled by its probe with the oldest request of the platform's
    /// window sent a second and a millisecond before (it had arrived late),
    /// measured 9, and held 8.7 a second (1.09 times the bound, from 1.06).
    #[test]
    fn a_probe_throttled_at_the_edge_of_the_window_measures_the_whole_ceiling() {
        let t0 = Instant::now();
        let mut a = after_the_opening(cap(50));
        a.start_at_ceiling(10.0);
        // Ten at the ceiling's spacing; the throttled one leaves 1 s and
        // 2 ms after the first of them.
        let t = traffic(&mut a, t0, 10, 10.0, 50 * MS);
        let sent = t0 + 1002 * MS;
        assert!(sent > t);
        let b = a.on_throttled(sent, sent + 50 * MS).unwrap();
        assert_eq!(b.measured, Some(10), "{b:?}");
        assert_eq!(a.ceiling(), Some(10.0));
    }

    #[test]
    fn a_burst_of_429s_from_one_overload_counts_once() {
        let t0 = Instant::now();
        let mut a = after_the_opening(cap(50));
        let t = traffic(&mut a, t0, 40, 20.0, 50 * MS);
        // Four requests in flight, all throttled; the first answer backs off.
        let first = a.on_throttled(t, t + 50 * MS).unwrap();
        for i in 1..4 {
            assert_eq!(
                a.on_throttled(t + i * 10 * MS, t + 50 * MS + i * 10 * MS),
                None
            );
        }
        assert_eq!(a.current(), first.to);
        assert_eq!(a.backoffs(), 1);
        // A request sent after the back-off (after the pause) that is throttled again: a new overload.
        let later = t + 1100 * MS;
        let second = a.on_throttled(later, later + 50 * MS).unwrap();
        assert!(!second.first);
        assert!(second.to < first.to);
    }

    #[test]
    fn a_429_that_cannot_measure_halves_and_never_goes_below_1() {
        let t0 = Instant::now();
        let mut a = after_the_opening(cap(50));
        // The very first request is throttled: nothing was answered before
        // it. Halved, and still searching (slow start): nothing was learnt.
        blindly_backed_off(&mut a, t0);
        let mut t = t0;
        for _ in 0..10 {
            t += 1100 * MS;
            a.on_throttled(t, t + 50 * MS);
        }
        assert_eq!(a.current(), MIN_RATE);
    }

    #[test]
    fn a_429_right_after_a_pause_is_not_taken_for_a_measurement() {
        let t0 = Instant::now();
        let mut a = after_the_opening(cap(50));
        let t = traffic(&mut a, t0, 60, 30.0, 50 * MS);
        a.on_throttled(t, t + 50 * MS).unwrap();
        let rate = a.current();
        // The pause ends 1 s later; three answered, then a 429 again: the
        // second before it was mostly the pause, so it halves instead of
        // taking 3 for the ceiling.
        let resumed = t + 1050 * MS;
        let t = traffic(&mut a, resumed, 3, rate, 50 * MS);
        let b = a.on_throttled(t, t + 50 * MS).unwrap();
        assert_eq!(b.measured, None);
        assert!((b.to - rate / 2.0).abs() < 0.1, "{b:?}");
        assert_eq!(
            a.ceiling(),
            Some(30.0),
            "the ceiling measured before is kept"
        );
    }

    /// Traffic at the rate (as fast as it allows) from `t` until `until`
    /// holds; returns the instant after the last request.
    fn at_the_rate(
        a: &mut AimdRate,
        mut t: Instant,
        until: impl Fn(&AimdRate, Instant) -> bool,
    ) -> Instant {
        while until(a, t) {
            let gap = Duration::from_secs_f64(1.0 / a.current());
            a.on_sent(t);
            a.on_success(t, t + 50 * MS);
            t += gap;
        }
        t
    }

    #[test]
    fn after_a_back_off_it_recovers_quickly_then_probes_slowly() {
        let t0 = Instant::now();
        let mut a = after_the_opening(cap(50));
        let t = traffic(&mut a, t0, 60, 30.0, 50 * MS);
        a.on_throttled(t, t + 50 * MS).unwrap();
        // Throttled again at once after the pause, with nothing measured:
        // halved, far below 90% of the ceiling of 30.
        let t = t + 1100 * MS;
        a.on_throttled(t, t + 50 * MS).unwrap();
        let low = a.current();
        assert!((low - 14.55).abs() < 1e-9, "{low}");
        // Three seconds of traffic: 10% of the ceiling (3) a second.
        let t = t + 1100 * MS;
        let end = t + Duration::from_secs(3);
        let t = at_the_rate(&mut a, t, |_, t| t < end);
        let recovered = a.current();
        assert!((recovered - (low + 9.0)).abs() < 1.0, "{recovered}");
        // Near the ceiling: 0.05% of the rate a second, doubling every 30 s:
        // 2.2% in the first 30 s, 4.4% more in the next.
        let t = at_the_rate(&mut a, t, |a, _| a.current() < 27.0);
        let near = a.current();
        let end = t + Duration::from_secs(30);
        let t = at_the_rate(&mut a, t, |_, t| t < end);
        let first = a.current() / near - 1.0;
        assert!((0.02..0.025).contains(&first), "+{first} in 30 s");
        let end = t + Duration::from_secs(30);
        let before = a.current();
        at_the_rate(&mut a, t, |_, t| t < end);
        let second = a.current() / before - 1.0;
        assert!(
            (0.04..0.048).contains(&second),
            "+{second} in the next 30 s"
        );
    }

    #[test]
    fn a_429_soon_after_the_last_back_off_cuts_deeper() {
        let t0 = Instant::now();
        let mut a = after_the_opening(cap(50));
        let t = traffic(&mut a, t0, 60, 30.0, 50 * MS);
        a.on_throttled(t, t + 50 * MS).unwrap();
        assert!((a.current() - 29.1).abs() < 1e-9);
        // Resumed after the pause; two seconds at 29.1/s all answered, then
        // a 429: the second measures 29, but it came too soon to trust.
        let t = traffic(&mut a, t + 1050 * MS, 58, 29.1, 50 * MS);
        let b = a.on_throttled(t, t + 50 * MS).unwrap();
        assert_eq!(b.measured, Some(29));
        assert!((b.to - 0.8 * b.from).abs() < 1e-9, "{b:?}");
        // Long after resuming, 97% of what was measured again.
        let t = traffic(&mut a, t + 1050 * MS, 300, b.to, 50 * MS);
        let c = a.on_throttled(t, t + 50 * MS).unwrap();
        let measured = f64::from(c.measured.unwrap());
        assert!((c.to - 0.97 * measured.min(c.from)).abs() < 1e-9, "{c:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spaces_concurrent_requests_at_the_rate() {
        let pacer = std::sync::Arc::new(Pacer::new(cap(10)));
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let pacer = pacer.clone();
                tokio::spawn(async move {
                    pacer.until_ready().await;
                    Instant::now() - t0
                })
            })
            .collect();
        let mut at: Vec<Duration> = Vec::new();
        for t in tasks {
            at.push(t.await.unwrap());
        }
        at.sort();
        // One at once, then one every interval of 9.7/s (97% of the cap,
        // 103.1 ms): no burst. tokio's timer ticks in whole milliseconds.
        let interval = Duration::from_secs_f64(1.0 / 9.7);
        for (i, at) in (0u32..).zip(&at) {
            let due = i * interval;
            assert!(
                *at >= due && *at <= due + MS,
                "request {i} at {at:?}, due {due:?}"
            );
        }
    }

    /// The cap holds for every second, not on average: spaced at the cap
    /// itself, a second with a request at each end held one more.
    #[tokio::test(start_paused = true)]
    async fn no_second_holds_more_requests_than_the_cap() {
        let pacer = Pacer::new(cap(10));
        let mut sent = Vec::new();
        for _ in 0..100 {
            pacer.until_ready().await;
            sent.push(pacer.sent());
        }
        for (i, first) in sent.iter().enumerate() {
            let in_second = sent[i..]
                .iter()
                .take_while(|&&t| t.duration_since(*first) <= Duration::from_secs(1))
                .count();
            assert!(
                in_second <= 10,
                "{in_second} requests in the second from request {i}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_voids_the_slots_taken_and_the_next_is_at_the_pause_end() {
        let pacer = std::sync::Arc::new(Pacer::new(cap(10)));
        let t0 = Instant::now();
        pacer.until_ready().await;
        let sent = pacer.sent();
        // Two more wait for their slots (100 and 200 ms) when the 429 comes back.
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let pacer = pacer.clone();
                tokio::spawn(async move {
                    pacer.until_ready().await;
                    Instant::now() - t0
                })
            })
            .collect();
        tokio::time::sleep(50 * MS).await;
        pacer.throttled(sent, t0 + 1050 * MS);
        let mut at = Vec::new();
        for w in waiters {
            at.push(w.await.unwrap());
        }
        at.sort();
        // At the pause's end, then one interval of the new rate (half of
        // 9.7/s: 206.2 ms) later.
        assert_eq!(pacer.current(), 4.85);
        let interval = Duration::from_secs_f64(1.0 / 4.85);
        assert_eq!(at[0], 1050 * MS);
        assert!(
            at[1] >= 1050 * MS + interval && at[1] <= 1051 * MS + interval,
            "{at:?}"
        );
    }

    /// The pacer and the rate against the emulator's own limiter, in
    /// tokio's paused clock (no HTTP): `requests` requests from `workers`
    /// at once, each answered `latency` after it left, a 429 pausing every
    /// worker for 1 s (as the client does); the first `reads` are reads, the
    /// rest writes. Returns the wall time, the requests sent and those
    /// answered 429.
    async fn simulate(
        ceiling: u32,
        burst: Option<u32>,
        (reads, requests): (usize, usize),
        workers: usize,
        latency: Duration,
        others: u32,
    ) -> (Duration, usize, usize, f64) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        struct World {
            pacer: Pacer,
            limiter: Mutex<crate::emulator::RateLimiter>,
            not_before: Mutex<Option<Instant>>,
            left: AtomicUsize,
            sent: AtomicUsize,
            throttled: AtomicUsize,
        }
        let world = Arc::new(World {
            pacer: Pacer::new(cap(crate::platform::DEFAULT_RATE_CAP)),
            limiter: Mutex::new(Default::default()),
            not_before: Mutex::new(None),
            left: AtomicUsize::new(0),
            sent: AtomicUsize::new(0),
            throttled: AtomicUsize::new(0),
        });
        let t0 = Instant::now();
        // Someone else's requests on the same token, just before the run.
        for _ in 0..others {
            world.limiter.lock().unwrap().admit("p", ceiling, burst, t0);
        }
        tokio::time::sleep(200 * MS).await;
        let t0 = Instant::now();
        // The first read (a list's first page), then the other reads it
        // announces, all answered; then the writes.
        let reads = reads.min(requests);
        for (n, phase) in [
            (reads.min(1), 0),
            (reads.saturating_sub(1), 1),
            (requests - reads, 2),
        ] {
            match phase {
                1 => world.pacer.expect(n),
                2 => world.pacer.begin_writes(),
                _ => {}
            }
            world.left.store(n, Ordering::SeqCst);
            let tasks: Vec<_> = (0..workers.min(n))
                .map(|_| {
                    let w = world.clone();
                    tokio::spawn(async move {
                        while w
                            .left
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok()
                        {
                            loop {
                                let pause = *w.not_before.lock().unwrap();
                                if let Some(at) = pause {
                                    tokio::time::sleep_until(at).await;
                                }
                                w.pacer.until_ready().await;
                                if w.not_before
                                    .lock()
                                    .unwrap()
                                    .is_some_and(|at| at > Instant::now())
                                {
                                    continue;
                                }
                                let sent = w.pacer.sent();
                                w.sent.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(latency).await;
                                let now = Instant::now();
                                if w.limiter.lock().unwrap().admit("p", ceiling, burst, now) {
                                    w.pacer.answered(sent);
                                    break;
                                }
                                w.throttled.fetch_add(1, Ordering::SeqCst);
                                let resume = now + Duration::from_secs(1);
                                {
                                    let mut nb = w.not_before.lock().unwrap();
                                    if nb.is_none_or(|at| at < resume) {
                                        *nb = Some(resume);
                                    }
                                }
                                w.pacer.throttled(sent, resume);
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
        (
            t0.elapsed(),
            world.sent.load(Ordering::SeqCst),
            world.throttled.load(Ordering::SeqCst),
            world.pacer.current(),
        )
    }

    /// Goal of issue parts 1: at ceilings of 10, 20 and 40 it is not told,
    /// within 1.1 times the bound (requests / ceiling) with at most 2% of
    /// requests answered 429, against a sliding window and against a token
    /// bucket (burst: a second's worth). A short run pays the one
    /// `Retry-After` (1 s) that finding the ceiling costs.
    #[tokio::test(start_paused = true)]
    async fn against_a_ceiling_it_is_not_told_it_holds_just_under_it() {
        for ceiling in [10u32, 20, 40] {
            for burst in [None, Some(ceiling)] {
                for requests in [200usize, 2000] {
                    let (wall, sent, throttled, rate) =
                        simulate(ceiling, burst, (3, requests), 4, 50 * MS, 0).await;
                    let bound = requests as f64 / f64::from(ceiling);
                    let wall = wall.as_secs_f64();
                    let what = format!(
                        "ceiling {ceiling}, burst {burst:?}, {requests} requests: {wall:.2} s (bound {bound:.1} s), {throttled} of {sent} answered 429, ending at {rate:.1}/s"
                    );
                    if requests >= 2000 {
                        assert!(wall <= 1.1 * bound, "{what}");
                        assert!(throttled * 50 <= sent, "{what}");
                        assert!(rate >= 0.9 * f64::from(ceiling), "{what}");
                    } else {
                        assert!(wall <= 1.1 * bound + 1.5, "{what}");
                        assert!(throttled <= 8, "{what}");
                    }
                }
            }
        }
    }

    /// A limiter that spaces requests strictly (a token bucket of one) is
    /// the weak case: the first second's count, taken while the rate was
    /// still climbing, under-measures it, and the slow probe takes long to
    /// find the rest. It still never fails and never hammers.
    #[tokio::test(start_paused = true)]
    async fn against_a_strictly_spacing_limiter_it_stays_under_it() {
        let (wall, sent, throttled, rate) = simulate(20, Some(1), (3, 500), 4, 50 * MS, 0).await;
        assert!(throttled <= 4, "{throttled} of {sent}");
        assert!((5.0..20.0).contains(&rate), "{rate}");
        assert!(wall.as_secs_f64() < 500.0 / 5.0, "{wall:?}");
    }

    /// Measured: plans of 23 and 102 requests (50 / 2,000 and 100 / 9,900)
    /// at a ceiling of 20 they were not told took 1.37 to 1.88 and 1.11 to
    /// 1.25 times the bound from 0 to 200 ms of latency: the run started
    /// just under the cap of 40, and the 429 that found the ceiling paused
    /// it for a second. Reads now open at 97% of the common ceiling while
    /// they fit in six seconds: against a window, a token bucket and a
    /// strict spacer of 20, no 429, and the wall time of the first page's
    /// round trip, then the others spaced at that rate.
    #[tokio::test(start_paused = true)]
    async fn a_short_read_with_no_ceiling_known_is_not_paused_by_a_429() {
        for reads in [22usize, 102] {
            for burst in [None, Some(20), Some(1)] {
                for latency in [Duration::ZERO, 50 * MS, 200 * MS] {
                    let (wall, sent, throttled, _) =
                        simulate(20, burst, (reads, reads), 8, latency, 0).await;
                    let what = format!(
                        "{reads} reads, burst {burst:?}, {latency:?}: {wall:?}, {throttled} of {sent} answered 429"
                    );
                    assert_eq!(throttled, 0, "{what}");
                    // The first page's round trip, then the others spaced.
                    let spaced = (reads - 1) as f64 / (0.97 * 20.0) + 2.0 * latency.as_secs_f64();
                    assert!(wall.as_secs_f64() <= spaced + 0.01, "{what}");
                }
            }
        }
    }

    /// A long read leaves the opening at its first page: under a ceiling
    /// of 40 it costs next to nothing; under 20, the one pause that finds
    /// the ceiling. The goal of issue 13 part 4a holds (1.1 times pages /
    /// ceiling).
    #[tokio::test(start_paused = true)]
    async fn a_long_read_leaves_the_opening_and_finds_the_ceiling() {
        for ceiling in [20u32, 40] {
            let (wall, sent, throttled, rate) =
                simulate(ceiling, None, (1052, 1052), 8, 50 * MS, 0).await;
            let bound = 1052.0 / f64::from(ceiling);
            let what = format!(
                "ceiling {ceiling}: {wall:?} (bound {bound:.1} s), {throttled} of {sent} answered 429, ending at {rate:.1}/s"
            );
            assert!(wall.as_secs_f64() <= 1.1 * bound, "{what}");
            assert!(throttled * 50 <= sent, "{what}");
        }
    }

    /// A run that starts while someone else's requests on the same token
    /// fill the window: its first 429 measures a small share; the probe,
    /// doubling while nothing is throttled, finds the ceiling again.
    #[tokio::test(start_paused = true)]
    async fn a_ceiling_measured_too_low_is_found_again() {
        for ceiling in [10u32, 20, 40] {
            let (wall, sent, throttled, rate) =
                simulate(ceiling, None, (3, 2000), 4, 50 * MS, ceiling - 2).await;
            let bound = 2000.0 / f64::from(ceiling);
            let what = format!(
                "ceiling {ceiling}: {:.1} s (bound {bound:.1} s), {throttled} of {sent} answered 429, ending at {rate:.1}/s",
                wall.as_secs_f64()
            );
            assert!(rate >= 0.85 * f64::from(ceiling), "{what}");
            assert!(wall.as_secs_f64() <= 1.2 * bound, "{what}");
            assert!(throttled * 50 <= sent, "{what}");
        }
    }

    /// A short first sync (215 requests, the throughput bench's case 1)
    /// against ceilings it is not told. Measured: 1.33 times the bound at a
    /// ceiling of 40 when a run started at 10 requests per second and
    /// climbed, 1.21 when it started at a cap of 50 (one `Retry-After` of
    /// 1 s to find the ceiling, in a 5.4 s bound). Now the default cap is 40
    /// and, past its three reads (the opening), a run starts at 97% of it:
    /// the goal (1.1 times the bound,
    /// at most 2% answered 429) at 10, 20 and 40; a ceiling of 40 draws no
    /// 429; 30, between them, pays the pause (about 1.15).
    /// `-- --nocapture` prints each case (BENCHMARKS.md).
    #[tokio::test(start_paused = true)]
    async fn a_short_first_sync_pays_one_pause_to_find_the_ceiling_and_no_climb() {
        for burst_on in [false, true] {
            for ceiling in [10u32, 20, 30, 40] {
                let burst = burst_on.then_some(ceiling);
                let requests = 215;
                let (wall, sent, throttled, rate) =
                    simulate(ceiling, burst, (3, requests), 4, 50 * MS, 0).await;
                let bound = requests as f64 / f64::from(ceiling);
                let wall = wall.as_secs_f64();
                let what = format!(
                    "ceiling {ceiling}, burst {burst:?}: {wall:.2} s = {:.2} x the bound of {bound:.2} s, {throttled} of {sent} answered 429, ending at {rate:.1}/s",
                    wall / bound
                );
                eprintln!("{what}");
                assert!(throttled * 50 <= sent, "{what}");
                if ceiling == 30 {
                    assert!(wall <= 1.05 * bound + 1.2, "{what}");
                } else {
                    assert!(wall <= 1.1 * bound, "{what}");
                }
                if ceiling >= crate::platform::DEFAULT_RATE_CAP {
                    assert_eq!(throttled, 0, "{what}");
                }
            }
        }
    }
}
