//! The scheduling loop on tokio's paused clock, with a scripted job: fire
//! times, skipped ticks, the authentication back-off, failures, reloads,
//! shutdown, jitter and the watchdog. Sleeps here advance virtual time.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::outcome::RunCounts;
use super::*;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn settings(cron: &str, run_at_start: bool) -> ScheduleSettings {
    ScheduleSettings {
        cron: schedule::CronSchedule::parse(cron, "UTC").unwrap(),
        run_at_start,
        jitter: Duration::ZERO,
        auth_backoff: Duration::from_secs(300),
        stop_timeout: Duration::from_secs(60),
    }
}

fn ok() -> RunOutcome {
    RunOutcome {
        result: RunResult::Ok,
        counts: RunCounts::default(),
        error: None,
        auth_failed: false,
        blocked: Vec::new(),
    }
}

fn failed(auth: bool) -> RunOutcome {
    RunOutcome {
        result: RunResult::Failed,
        counts: RunCounts::default(),
        error: Some("platform: HTTP 401".to_owned()),
        auth_failed: auth,
        blocked: Vec::new(),
    }
}

#[derive(Clone)]
struct Step {
    takes: Duration,
    outcome: RunOutcome,
    panics: bool,
}

fn step(secs: u64, outcome: RunOutcome) -> Step {
    Step {
        takes: Duration::from_secs(secs),
        outcome,
        panics: false,
    }
}

/// What the fake job saw.
#[derive(Default)]
struct Seen {
    starts: Vec<DateTime<Utc>>,
    /// Whether each run's cancel token had fired when it ended.
    cancelled_at_end: Vec<bool>,
    reloads: usize,
}

#[derive(Clone)]
struct FakeJob {
    clock: TokioClock,
    steps: Arc<Mutex<VecDeque<Step>>>,
    reloads: Arc<Mutex<VecDeque<Option<ScheduleSettings>>>>,
    seen: Arc<Mutex<Seen>>,
}

impl FakeJob {
    fn new(clock: TokioClock, steps: Vec<Step>) -> FakeJob {
        FakeJob {
            clock,
            steps: Arc::new(Mutex::new(steps.into())),
            reloads: Arc::default(),
            seen: Arc::default(),
        }
    }

    fn starts(&self) -> Vec<DateTime<Utc>> {
        self.seen.lock().unwrap().starts.clone()
    }
}

impl Job for FakeJob {
    fn start(&self, cancel: CancellationToken) -> BoxFuture<'static, RunOutcome> {
        self.seen.lock().unwrap().starts.push(self.clock.now());
        let step = self
            .steps
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| step(1, ok()));
        let seen = Arc::clone(&self.seen);
        async move {
            tokio::time::sleep(step.takes).await;
            if step.panics {
                panic!("a bug in a run");
            }
            seen.lock()
                .unwrap()
                .cancelled_at_end
                .push(cancel.is_cancelled());
            step.outcome
        }
        .boxed()
    }

    fn reload(&mut self) -> BoxFuture<'_, Result<Reloaded, DaemonError>> {
        self.seen.lock().unwrap().reloads += 1;
        let next = self.reloads.lock().unwrap().pop_front().flatten();
        async move {
            match next {
                Some(schedule) => Ok(Reloaded {
                    schedule,
                    health_max_age: None,
                    textfile: None,
                }),
                None => Err(DaemonError::NoSchedule {
                    path: PathBuf::from("broken.yaml"),
                }),
            }
        }
        .boxed()
    }
}

struct Harness {
    tx: mpsc::UnboundedSender<Event>,
    handle: JoinHandle<()>,
    metrics: Arc<Metrics>,
    clock: TokioClock,
}

const ORIGIN: &str = "2024-03-04T10:00:30Z";

fn start(job: &FakeJob, schedule: ScheduleSettings, notifier: Notifier) -> Harness {
    start_with_watchdog(job, schedule, notifier, None)
}

fn start_with_watchdog(
    job: &FakeJob,
    schedule: ScheduleSettings,
    notifier: Notifier,
    watchdog: Option<Duration>,
) -> Harness {
    start_on(job, schedule, notifier, watchdog, Arc::new(job.clock))
}

/// The loop reading time from `loop_clock` (the job and the harness keep
/// tokio's).
fn start_on(
    job: &FakeJob,
    schedule: ScheduleSettings,
    notifier: Notifier,
    watchdog: Option<Duration>,
    loop_clock: Arc<dyn Clock>,
) -> Harness {
    let clock = job.clock;
    let metrics = Arc::new(Metrics::new(clock.now(), Duration::from_secs(3600)));
    let ctx = LoopContext {
        clock: loop_clock,
        notifier: Arc::new(notifier),
        metrics: Arc::clone(&metrics),
        watchdog,
        textfile: None,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let job = job.clone();
    let handle = tokio::spawn(async move { run_schedule(job, schedule, ctx, &mut rx).await });
    Harness {
        tx,
        handle,
        metrics,
        clock,
    }
}

/// Lets virtual time run until `at`.
async fn until(h: &Harness, at: &str) {
    let d = (t(at) - h.clock.now()).to_std().unwrap();
    tokio::time::sleep(d).await;
}

async fn stop(h: Harness) -> DateTime<Utc> {
    h.tx.send(Event::Terminate).unwrap();
    h.handle.await.unwrap();
    h.clock.now()
}

fn clock() -> TokioClock {
    TokioClock::starting_at(t(ORIGIN))
}

#[tokio::test(start_paused = true)]
async fn runs_start_at_the_cron_fire_times() {
    let job = FakeJob::new(clock(), vec![]);
    let h = start(&job, settings("* * * * *", false), Notifier::disabled());
    until(&h, "2024-03-04T10:03:30Z").await;
    stop(h).await;
    assert_eq!(
        job.starts(),
        [
            t("2024-03-04T10:01:00Z"),
            t("2024-03-04T10:02:00Z"),
            t("2024-03-04T10:03:00Z")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_six_field_expression_fires_every_few_seconds() {
    let job = FakeJob::new(clock(), vec![]);
    let h = start(
        &job,
        settings("*/10 * * * * *", false),
        Notifier::disabled(),
    );
    until(&h, "2024-03-04T10:01:05Z").await;
    stop(h).await;
    assert_eq!(
        job.starts(),
        [
            t("2024-03-04T10:00:40Z"),
            t("2024-03-04T10:00:50Z"),
            t("2024-03-04T10:01:00Z")
        ]
    );
}

/// A wall clock 0.1% slower than tokio's timers: every wake-up reads a
/// little before the time it was set for.
struct SlowClock {
    origin: DateTime<Utc>,
    origin_instant: tokio::time::Instant,
}

impl Clock for SlowClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.origin_instant;
        self.origin + chrono::Duration::from_std(elapsed.mul_f64(0.999)).unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn a_wake_up_that_reads_the_clock_early_does_not_fire_the_same_tick_twice() {
    // Instant runs, so a second start of the same tick would not be skipped.
    let job = FakeJob::new(clock(), vec![step(0, ok()); 10]);
    let slow = SlowClock {
        origin: t(ORIGIN),
        origin_instant: tokio::time::Instant::now(),
    };
    let h = start_on(
        &job,
        settings("* * * * *", false),
        Notifier::disabled(),
        None,
        Arc::new(slow),
    );
    until(&h, "2024-03-04T10:05:45Z").await;
    assert_eq!(h.metrics.skipped(SkipReason::Running), 0);
    stop(h).await;
    assert_eq!(job.starts().len(), 5, "once a minute: {:?}", job.starts());
}

#[tokio::test(start_paused = true)]
async fn a_tick_that_finds_the_previous_run_still_going_is_skipped() {
    // The first run (at start) takes 80 s: the 10:01 tick finds it running.
    let job = FakeJob::new(clock(), vec![step(80, ok())]);
    let h = start(&job, settings("* * * * *", true), Notifier::disabled());
    until(&h, "2024-03-04T10:02:30Z").await;
    assert_eq!(h.metrics.skipped(SkipReason::Running), 1);
    assert!(h
        .metrics
        .render()
        .contains("dirsync_ticks_skipped_total{reason=\"running\"} 1\n"));
    stop(h).await;
    assert_eq!(
        job.starts(),
        [t(ORIGIN), t("2024-03-04T10:02:00Z")],
        "never two runs at once, and no catching up"
    );
}

#[tokio::test(start_paused = true)]
async fn an_auth_failure_pauses_runs_until_the_back_off_passes() {
    let job = FakeJob::new(clock(), vec![step(1, failed(true))]);
    let h = start(&job, settings("* * * * *", true), Notifier::disabled());
    // Failed at 10:00:31; back-off 300 s: paused until 10:05:31.
    until(&h, "2024-03-04T10:05:30Z").await;
    assert!(h.metrics.render().contains("dirsync_auth_backoff 1\n"));
    until(&h, "2024-03-04T10:06:30Z").await;
    assert_eq!(h.metrics.skipped(SkipReason::AuthBackoff), 5);
    assert!(h.metrics.render().contains("dirsync_auth_backoff 0\n"));
    stop(h).await;
    assert_eq!(job.starts(), [t(ORIGIN), t("2024-03-04T10:06:00Z")]);
}

#[tokio::test(start_paused = true)]
async fn a_reload_ends_the_auth_back_off() {
    let job = FakeJob::new(clock(), vec![step(1, failed(true))]);
    job.reloads
        .lock()
        .unwrap()
        .push_back(Some(settings("* * * * *", true)));
    let h = start(&job, settings("* * * * *", true), Notifier::disabled());
    until(&h, "2024-03-04T10:02:30Z").await;
    h.tx.send(Event::Reload).unwrap();
    until(&h, "2024-03-04T10:03:30Z").await;
    stop(h).await;
    assert_eq!(
        job.starts(),
        [t(ORIGIN), t("2024-03-04T10:03:00Z")],
        "run_at_start applies to the start-up only, not to a reload"
    );
}

#[tokio::test(start_paused = true)]
async fn other_failures_are_counted_and_retried_at_the_next_tick() {
    let job = FakeJob::new(
        clock(),
        vec![
            step(1, failed(false)),
            step(1, failed(false)),
            step(1, ok()),
        ],
    );
    let h = start(&job, settings("* * * * *", true), Notifier::disabled());
    until(&h, "2024-03-04T10:02:30Z").await;
    assert_eq!(h.metrics.runs(RunResult::Failed), 2);
    assert_eq!(h.metrics.runs(RunResult::Ok), 1);
    assert_eq!(h.metrics.skipped(SkipReason::AuthBackoff), 0);
    let text = h.metrics.render();
    assert!(
        text.contains("dirsync_last_success_timestamp_seconds 1709546521.0\n"),
        "{text}"
    );
    stop(h).await;
    assert_eq!(
        job.starts(),
        [
            t(ORIGIN),
            t("2024-03-04T10:01:00Z"),
            t("2024-03-04T10:02:00Z")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_that_panics_is_a_failed_run_and_the_daemon_goes_on() {
    let job = FakeJob::new(
        clock(),
        vec![Step {
            panics: true,
            ..step(1, ok())
        }],
    );
    let h = start(&job, settings("* * * * *", true), Notifier::disabled());
    until(&h, "2024-03-04T10:01:30Z").await;
    assert_eq!(h.metrics.runs(RunResult::Failed), 1);
    assert_eq!(h.metrics.runs(RunResult::Ok), 1);
    stop(h).await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_reload_keeps_the_old_schedule_and_a_good_one_replaces_it() {
    let job = FakeJob::new(clock(), vec![]);
    {
        let mut reloads = job.reloads.lock().unwrap();
        reloads.push_back(None);
        reloads.push_back(Some(settings("*/5 * * * *", false)));
    }
    let h = start(&job, settings("* * * * *", false), Notifier::disabled());
    until(&h, "2024-03-04T10:01:30Z").await;
    h.tx.send(Event::Reload).unwrap();
    until(&h, "2024-03-04T10:02:30Z").await;
    assert!(h
        .metrics
        .render()
        .contains("dirsync_config_reloads_failed_total 1\n"));
    h.tx.send(Event::Reload).unwrap();
    until(&h, "2024-03-04T10:10:30Z").await;
    stop(h).await;
    assert_eq!(
        job.starts(),
        [
            t("2024-03-04T10:01:00Z"),
            t("2024-03-04T10:02:00Z"),
            t("2024-03-04T10:05:00Z"),
            t("2024-03-04T10:10:00Z")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_during_a_run_waits_for_the_run_to_end() {
    let job = FakeJob::new(clock(), vec![step(30, ok())]);
    job.reloads
        .lock()
        .unwrap()
        .push_back(Some(settings("* * * * *", false)));
    let h = start(&job, settings("* * * * *", true), Notifier::disabled());
    until(&h, "2024-03-04T10:00:40Z").await;
    h.tx.send(Event::Reload).unwrap();
    until(&h, "2024-03-04T10:00:50Z").await;
    assert_eq!(job.seen.lock().unwrap().reloads, 0);
    until(&h, "2024-03-04T10:01:05Z").await;
    assert_eq!(job.seen.lock().unwrap().reloads, 1);
    stop(h).await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_the_run_in_flight_finish_and_starts_no_other() {
    let job = FakeJob::new(clock(), vec![step(30, ok())]);
    let h = start(&job, settings("* * * * *", true), Notifier::disabled());
    until(&h, "2024-03-04T10:00:40Z").await;
    let metrics = Arc::clone(&h.metrics);
    let stopped_at = stop(h).await;
    assert_eq!(
        stopped_at,
        t("2024-03-04T10:01:00Z"),
        "returned when the run ended"
    );
    let seen = job.seen.lock().unwrap();
    assert_eq!(seen.starts, [t(ORIGIN)], "the 10:01 tick started nothing");
    assert_eq!(
        seen.cancelled_at_end,
        [true],
        "the run was told to stop between operations"
    );
    assert_eq!(metrics.runs(RunResult::Ok), 1, "its outcome is recorded");
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_bounded_by_the_stop_timeout() {
    let job = FakeJob::new(clock(), vec![step(3600, ok())]);
    let h = start(&job, settings("* * * * *", true), Notifier::disabled());
    until(&h, "2024-03-04T10:00:40Z").await;
    assert_eq!(
        stop(h).await,
        t("2024-03-04T10:01:40Z"),
        "60 s stop timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn a_second_stop_signal_leaves_the_run_at_once() {
    let job = FakeJob::new(clock(), vec![step(3600, ok())]);
    let h = start(&job, settings("* * * * *", true), Notifier::disabled());
    until(&h, "2024-03-04T10:00:40Z").await;
    h.tx.send(Event::Terminate).unwrap();
    until(&h, "2024-03-04T10:00:45Z").await;
    h.tx.send(Event::Terminate).unwrap();
    h.handle.await.unwrap();
    assert_eq!(h.clock.now(), t("2024-03-04T10:00:45Z"));
}

#[tokio::test(start_paused = true)]
async fn jitter_delays_each_run_within_its_bound() {
    let job = FakeJob::new(clock(), vec![]);
    let mut s = settings("* * * * *", false);
    s.jitter = Duration::from_secs(20);
    let h = start(&job, s, Notifier::disabled());
    until(&h, "2024-03-04T10:10:30Z").await;
    stop(h).await;
    let starts = job.starts();
    assert_eq!(starts.len(), 10);
    for (i, start) in starts.iter().enumerate() {
        let minute = t("2024-03-04T10:01:00Z") + chrono::Duration::minutes(i as i64);
        let late = (*start - minute).num_milliseconds();
        assert!((0..=20_000).contains(&late), "run {i} at {start}");
    }
}

#[tokio::test(start_paused = true)]
async fn systemd_hears_ready_status_watchdog_and_stopping() {
    let (notifier, sent) = Notifier::recorder();
    let job = FakeJob::new(clock(), vec![step(2, ok())]);
    let h = start_with_watchdog(
        &job,
        settings("0 * * * *", true),
        notifier,
        Some(Duration::from_secs(10)),
    );
    until(&h, "2024-03-04T10:01:05Z").await;
    stop(h).await;
    let messages = sent.lock().unwrap().clone();
    assert!(
        messages[0].starts_with("READY=1\nSTATUS=Idle; next run 2024-03-04T10:00:30Z"),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with(
            "STATUS=Idle; last run 2024-03-04T10:00:32Z: ok: no changes in 2.0 s; next run 2024-03-04T11:00:00Z"
        )),
        "{messages:?}"
    );
    let pings = messages.iter().filter(|m| *m == "WATCHDOG=1\n").count();
    assert!(pings >= 4, "every 10 s for 35 s: {messages:?}");
    assert_eq!(
        messages.last().map(String::as_str),
        Some("STOPPING=1\nSTATUS=Stopping.\n"),
        "{messages:?}"
    );
}

#[test]
fn loose_config_permissions_are_named() {
    assert!(permission_problems(0o100600).is_empty());
    assert!(permission_problems(0o100640).is_empty());
    let p = permission_problems(0o100644);
    assert_eq!(p.len(), 1);
    assert!(p[0].contains("readable by other users"));
    let p = permission_problems(0o100664);
    assert!(p[0].contains("writable by users other than its owner"));
}
