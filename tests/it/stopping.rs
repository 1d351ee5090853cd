//! How a run stops, and that it loses nothing doing so: after a 401, once
//! cancelled, and at the run deadline no further request leaves (not even
//! those already waiting on the concurrency cap or the rate limiter); a
//! 429 pauses the whole client and is no failure; `dirsync sync` handles
//! SIGTERM like the daemon. Counted with the emulator's statistics (requests
//! are counted as they arrive).
//!
//! Every wait polls with a deadline; nothing sleeps to wait.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dirsync::apply::{OperationReport, Outcome, Progress, Quiet, SHUTTING_DOWN};
use dirsync::config::Config;
use dirsync::emulator::{EmulatorHandle, Faults};
use dirsync::platform::PlatformError;
use dirsync::run::{reconcile, reconcile_cancellable, Connection, Mode, RunError};
use rustix::process::{kill_process, Pid, Signal};
use tokio_util::sync::CancellationToken;

use crate::support::*;
use crate::sync::{rows, Scenario};

const APPLY: Mode = Mode::Apply {
    allow_deletes: false,
};
const DEADLINE: Duration = Duration::from_secs(60);

/// Calls `on_start` when the apply starts and `on_finished(n)` after the
/// n-th operation finished (both inside the apply, before anything else runs).
struct Hooks<S: Fn() + Sync, F: Fn(usize) + Sync> {
    on_start: S,
    on_finished: F,
    finished: AtomicUsize,
}

impl<S: Fn() + Sync, F: Fn(usize) + Sync> Progress for Hooks<S, F> {
    fn started(&self, _: usize) {
        (self.on_start)()
    }
    fn finished(&self, _: &OperationReport) {
        (self.on_finished)(self.finished.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

fn hooks<S: Fn() + Sync, F: Fn(usize) + Sync>(on_start: S, on_finished: F) -> Hooks<S, F> {
    Hooks {
        on_start,
        on_finished,
        finished: AtomicUsize::new(0),
    }
}

fn count(report: &dirsync::apply::ApplyReport, f: impl Fn(&Outcome) -> bool) -> usize {
    report.operations.iter().filter(|o| f(&o.outcome)).count()
}

/// 4 customers and 12 users to create; 4 operations at a time, but one
/// request at a time through the client, each taking 50 ms: the other
/// operations of a phase queue at the client's concurrency cap.
fn queued_at_the_cap(s: &Scenario) -> Config {
    s.write_users(&rows(12, 4));
    let mut config = s.config("  apply_concurrency: 4\n");
    config.platform.max_concurrency = 1;
    s.emu.handle.set_faults(Faults {
        latency_ms: 50,
        ..Faults::default()
    });
    config
}

#[tokio::test]
async fn no_mutation_leaves_after_a_401() {
    let s = Scenario::new(None).await;
    let config = queued_at_the_cap(&s);
    let handle = s.emu.handle.clone();
    let at_revoke = Mutex::new(0);
    let progress = hooks(
        || {
            handle.revoke_all_tokens();
            *at_revoke.lock().unwrap() = handle.stats().requests;
        },
        |_| {},
    );
    let connection = Connection::open(&config.platform).await.unwrap();
    let r = reconcile(&config, &connection, APPLY, &progress)
        .await
        .unwrap();
    let report = r.report.unwrap();
    let stats = s.emu.handle.stats();
    // The first customer create got the 401; the three queued behind it at
    // the cap, and every user create, sent nothing.
    assert_eq!(
        stats.requests - *at_revoke.lock().unwrap(),
        1,
        "requests after the revocation: {stats:?}"
    );
    assert_eq!(stats.unauthorized, 1);
    assert!(
        report
            .stopped
            .as_deref()
            .is_some_and(|s| s.starts_with("authentication failed") && s.contains("HTTP 401")),
        "{:?}",
        report.stopped
    );
    assert!(report.stopped_by_auth());
    assert_eq!(count(&report, |o| matches!(o, Outcome::Failed { .. })), 1);
    assert_eq!(
        count(&report, |o| matches!(o, Outcome::Skipped { .. })),
        15,
        "{report:?}"
    );
}

#[tokio::test]
async fn no_mutation_leaves_once_cancelled() {
    let s = Scenario::new(None).await;
    let config = queued_at_the_cap(&s);
    let cancel = CancellationToken::new();
    let handle = s.emu.handle.clone();
    let at_cancel = Mutex::new(0);
    // Cancelled as the first operation ends: the other three customer
    // creates of the phase are waiting at the cap.
    let progress = hooks(
        || {},
        |n| {
            if n == 1 {
                *at_cancel.lock().unwrap() = handle.stats().requests;
                cancel.cancel();
            }
        },
    );
    let connection = Connection::open(&config.platform).await.unwrap();
    let r = reconcile_cancellable(&config, &connection, APPLY, &progress, &cancel)
        .await
        .unwrap();
    assert_eq!(dirsync::report::sync_exit_code(&r), 5, "interrupted");
    let report = r.report.unwrap();
    assert_eq!(
        s.emu.handle.stats().requests,
        *at_cancel.lock().unwrap(),
        "no request arrived after the cancel"
    );
    assert_eq!(report.stopped.as_deref(), Some(SHUTTING_DOWN));
    let shutting_down = Outcome::Skipped {
        reason: SHUTTING_DOWN.to_owned(),
    };
    assert_eq!(count(&report, |o| o.succeeded()), 1);
    assert_eq!(count(&report, |o| *o == shutting_down), 15, "{report:?}");

    // Cancelled before the plan is made: an interruption, nothing sent.
    let cancel = CancellationToken::new();
    cancel.cancel();
    let connection = Connection::open(&config.platform).await.unwrap();
    let before = s.emu.handle.stats().requests;
    let err = reconcile_cancellable(&config, &connection, APPLY, &Quiet, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::Interrupted), "{err:?}");
    assert_eq!(s.emu.handle.stats().requests, before);

    // The next run converges.
    s.emu.handle.set_faults(Faults::default());
    let connection = Connection::open(&config.platform).await.unwrap();
    reconcile(&config, &connection, APPLY, &Quiet)
        .await
        .unwrap();
    let again = reconcile(&config, &connection, Mode::Plan, &Quiet)
        .await
        .unwrap();
    assert!(again.plan.is_empty(), "converged");
}

/// A platform that accepts connections and never answers: bound, never
/// accepted (the kernel completes the handshakes and takes the requests).
fn silent_api() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

fn config_file(dir: &Path, url: &str, extra: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    std::fs::write(
        dir.join("users.csv"),
        "id,email,name,customer\nu1,a@x.example,A,c1\n",
    )
    .unwrap();
    let path = dir.join("dirsync.yaml");
    std::fs::write(
        &path,
        format!(
            "platform:\n  url: {url}\n  token: {{ file: token }}\n{extra}\
             source:\n  csv:\n    users_file: users.csv\n\
             mapping:\n  customer: {{ external_id: customer, name: customer }}\n  user: {{ external_id: id, customer: customer, email: email, name: name }}\n\
             state_dir: state\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn a_silent_api_is_ended_by_the_run_deadline() {
    let (_listener, url) = silent_api();
    let dir = tempfile::tempdir().unwrap();
    // The default timeouts (60 s a request, 5 attempts) and a 1 s deadline.
    let path = config_file(dir.path(), &url, "  run_deadline_secs: 1\n");
    let config = Config::load(&path).unwrap();
    let started = Instant::now();
    let connection = Connection::open(&config.platform).await.unwrap();
    let run = reconcile(&config, &connection, APPLY, &Quiet);
    let err = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run ended within 30 s")
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(err, RunError::Platform(PlatformError::Abandoned { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(
            "the run deadline of 1 s (platform.run_deadline_secs) passed before the platform answered"
        ),
        "{err}"
    );
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");

    // The binary: exit 1, the deadline named.
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(["sync", "-c", "dirsync.yaml"])
        .current_dir(dir.path())
        .env("DIRSYNC_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("run deadline of 1 s (platform.run_deadline_secs) passed"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn an_apply_whose_api_stops_answering_ends_at_the_run_deadline() {
    let s = Scenario::new(None).await;
    s.write_users(&rows(12, 4));
    let mut config = s.config("  apply_concurrency: 4\n");
    config.platform.run_deadline = Duration::from_secs(2);
    let handle: EmulatorHandle = s.emu.handle.clone();
    // Once the plan is made, the platform stops answering.
    let progress = hooks(
        || {
            handle.set_faults(Faults {
                latency_ms: 3_600_000,
                ..Faults::default()
            })
        },
        |_| {},
    );
    let started = Instant::now();
    let connection = Connection::open(&config.platform).await.unwrap();
    let run = reconcile(&config, &connection, APPLY, &progress);
    let r = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run ended within 30 s")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));
    let report = r.report.as_ref().unwrap();
    let deadline = "the run deadline of 2 s (platform.run_deadline_secs) passed";
    assert_eq!(report.stopped.as_deref(), Some(deadline));
    // The four creates in flight were abandoned; the users never started.
    let failed = count(
        report,
        |o| matches!(o, Outcome::Failed { error } if error.contains(deadline)),
    );
    let skipped = count(report, |o| {
        *o == Outcome::Skipped {
            reason: format!("the run stopped: {deadline}"),
        }
    });
    assert_eq!((failed, skipped), (4, 12), "{report:?}");
    assert_eq!(dirsync::report::sync_exit_code(&r), 4);
    assert!(dirsync::report::text(&r).contains(&format!("The run stopped early: {deadline}")));
}

#[tokio::test]
async fn a_sync_against_a_steady_rate_ceiling_completes_without_failures() {
    let s = Scenario::new(None).await;
    // 2 customers and 14 users, 16 at a time, against 2 requests a second
    // (before the client-wide pause, 6 of the 16 failed after 5 attempts).
    s.write_users(&rows(14, 2));
    let mut config = s.config("  apply_concurrency: 16\n");
    config.platform.max_concurrency = 16;
    s.emu.handle.set_faults(Faults {
        rate_limit_per_sec: Some(2),
        retry_after_secs: Some(1),
        ..Faults::default()
    });
    let connection = Connection::open(&config.platform).await.unwrap();
    let r = reconcile(&config, &connection, APPLY, &Quiet)
        .await
        .unwrap();
    let report = r.report.as_ref().unwrap();
    assert_eq!(report.failed(), 0, "{report:?}");
    assert_eq!(report.operations.len(), 16);
    assert!(r.requests.throttled > 0, "the ceiling was reached");
    assert_eq!(dirsync::report::sync_exit_code(&r), 0);
}

// ------------------------------------------------------------ the binary

const TOKEN_VAR: &str = "DIRSYNC_TEST_STOPPING_TOKEN";

async fn admin(url: &str, what: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{url}/admin/{what}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the emulator answers")
        .json()
        .await
        .expect("JSON")
}

fn sync_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dirsync"));
    cmd.args(args)
        .current_dir(dir)
        .env("DIRSYNC_LOG", "warn")
        .env(TOKEN_VAR, TOKEN);
    cmd
}

#[tokio::test]
async fn sync_on_sigterm_finishes_in_flight_and_reports() {
    let emu = spawn_emulator(&["--latency-ms", "150"]);
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("id,email,name,customer\n");
    for i in 0..60 {
        csv.push_str(&format!("u{i},user{i}@x.example,User {i},c{}\n", i % 3));
    }
    std::fs::write(dir.path().join("users.csv"), csv).unwrap();
    std::fs::write(
        dir.path().join("dirsync.yaml"),
        format!(
            "platform:\n  url: {}\n  token: {{ env: {TOKEN_VAR} }}\n  requests_per_second: 1000\n\
             source:\n  csv:\n    users_file: users.csv\n\
             mapping:\n  customer: {{ external_id: customer, name: customer }}\n  user: {{ external_id: id, customer: customer, email: email, name: name }}\n\
             state_dir: state\n",
            emu.url
        ),
    )
    .unwrap();
    let mut child = sync_command(dir.path(), &["sync", "-c", "dirsync.yaml"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while admin(&emu.url, "stats").await["mutations"]
        .as_u64()
        .unwrap_or(0)
        < 5
    {
        assert!(start.elapsed() < DEADLINE, "the apply never started");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("dirsync sync ended ({status}) before the test signalled it");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = Pid::from_raw(child.id() as i32).unwrap();
    kill_process(pid, Signal::TERM).unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < DEADLINE, "dirsync sync did not exit");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(
        status.code(),
        Some(5),
        "not killed: {status}\n{stdout}{stderr}"
    );
    assert!(
        stdout.contains("The run stopped early: shutting down"),
        "{stdout}"
    );
    assert!(stdout.contains("skipped: shutting down"), "{stdout}");
    assert!(stdout.contains(" applied"), "{stdout}");
    let sent = admin(&emu.url, "stats").await["mutations"]
        .as_u64()
        .unwrap();
    assert!(sent < 63, "stopped part-way ({sent} of 63 mutations)");

    // The next sync converges; then nothing is left to do.
    let sync = sync_command(dir.path(), &["sync", "-c", "dirsync.yaml"])
        .output()
        .unwrap();
    assert_eq!(
        sync.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&sync.stdout),
        String::from_utf8_lossy(&sync.stderr)
    );
    let plan = sync_command(dir.path(), &["plan", "-c", "dirsync.yaml"])
        .output()
        .unwrap();
    assert_eq!(
        plan.status.code(),
        Some(0),
        "converged: {}",
        String::from_utf8_lossy(&plan.stdout)
    );
}
