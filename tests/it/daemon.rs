//! `dirsync run`, the real binary: systemd's notification socket (READY=1,
//! STATUS=, STOPPING=1), SIGTERM before and during an apply, SIGHUP with a
//! broken and then a good config, the state directory's lock against a
//! one-shot sync, the metrics endpoint, and the order secrets are read in.
//! Also, in-process: a cancelled apply skips what has not started.
//!
//! The operator's view: one log line per operation and a blocked run's
//! limit; the metrics (build info, every series at 0 before the first run,
//! sizes, block reasons) and the textfile for node_exporter, from `run` and
//! from `sync`; the journal, with a datagram socket standing in for it at
//! `/run/systemd/journal/socket` in a mount namespace of the child's own
//! (priorities, fields, no secret; standard error when it is missing or
//! `JOURNAL_STREAM` names another stream); `WATCHDOG=1`.
//!
//! Every wait polls with a deadline; nothing sleeps to wait.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use dirsync::apply::{Outcome, Quiet, SHUTTING_DOWN};
use dirsync::config::Config;
use dirsync::emulator::Faults;
use dirsync::run::{reconcile, reconcile_cancellable, Connection, Mode};
use rustix::process::{kill_process, Pid, Signal};
use tokio_util::sync::CancellationToken;

use crate::support::*;

const TOKEN_VAR: &str = "DIRSYNC_TEST_DAEMON_TOKEN";
const DEADLINE: Duration = Duration::from_secs(60);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dirsync"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `dirsync ARGS` in `dir`, with the emulator's token in the environment.
fn dirsync(args: &[&str], dir: &Path) -> Output {
    bin()
        .args(args)
        .current_dir(dir)
        .env("DIRSYNC_LOG", "warn")
        .env(TOKEN_VAR, TOKEN)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("dirsync runs")
}

fn signal(pid: u32, sig: Signal) {
    let pid = Pid::from_raw(pid as i32).expect("a pid");
    kill_process(pid, sig).expect("the signal is sent");
}

// ---------------------------------------------------------------- emulator

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

async fn mutations(url: &str) -> u64 {
    admin(url, "stats").await["mutations"].as_u64().unwrap_or(0)
}

/// Managed users and customers in the emulator's state.
async fn managed(url: &str) -> (usize, usize) {
    let state = admin(url, "state").await;
    let users = state["users"].as_object().map_or(0, |u| {
        u.values().filter(|u| !u["customerId"].is_null()).count()
    });
    let customers = state["customers"].as_object().map_or(0, |c| {
        c.values().filter(|c| !c["externalId"].is_null()).count()
    });
    (users, customers)
}

// ---------------------------------------------------------------- scenario

/// A temp folder with users.csv and a config for `dirsync run` against `url`.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(url: &str, users: usize, schedule: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup { dir };
        setup.write_users(users, "");
        setup.write_config(url, schedule);
        setup
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> &str {
        "dirsync.yaml"
    }

    fn write_users(&self, n: usize, name_suffix: &str) {
        let mut csv = String::from("id,email,name,customer\n");
        for i in 0..n {
            csv.push_str(&format!(
                "u{i},user{i}@x.example,User {i}{name_suffix},c{}\n",
                i % 3
            ));
        }
        std::fs::write(self.path("users.csv"), csv).unwrap();
    }

    fn config_text(url: &str, schedule: &str) -> String {
        format!(
            "platform:\n  url: {url}\n  token: {{ env: {TOKEN_VAR} }}\n  requests_per_second: 1000\n\
             source:\n  csv:\n    users_file: users.csv\n\
             mapping:\n  customer: {{ external_id: customer, name: customer }}\n  user: {{ external_id: id, customer: customer, email: email, name: name }}\n\
             state_dir: state\n\
             schedule:\n{schedule}\n\
             metrics:\n  listen: 127.0.0.1:0\n"
        )
    }

    fn write_config(&self, url: &str, schedule: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(self.config());
        std::fs::write(&path, Setup::config_text(url, schedule)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// Runs once at start, then once a year: one run to look at.
const ONCE: &str = "  cron: \"0 0 1 1 *\"\n  run_at_start: true\n  stop_timeout_secs: 30";
/// Every second (the six-field form), from the start.
const EVERY_SECOND: &str = "  cron: \"* * * * * *\"\n  run_at_start: true";

// ------------------------------------------------------------------ daemon

/// A `dirsync run` child with its notification socket and its log lines.
struct Daemon {
    pid: u32,
    socket: UnixDatagram,
    messages: Vec<String>,
    /// Log lines so far, and a signal for each new one.
    logs: Arc<(Mutex<Vec<String>>, Condvar)>,
    exit: mpsc::Receiver<ExitStatus>,
    exited: Option<ExitStatus>,
    _socket_dir: tempfile::TempDir,
}

impl Daemon {
    fn start(dir: &Path, config: &str) -> Daemon {
        let socket_dir = tempfile::tempdir().unwrap();
        let socket_path = socket_dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        let mut child = bin()
            .args(["--log-json", "run", "-c", config])
            .current_dir(dir)
            .env("DIRSYNC_LOG", "info")
            .env("NOTIFY_SOCKET", &socket_path)
            .env(TOKEN_VAR, TOKEN)
            .env_remove("WATCHDOG_USEC")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dirsync run starts");
        let pid = child.id();
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.0.lock().unwrap().push(line);
                sink.1.notify_all();
            }
        });
        let (tx, exit) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = tx.send(status);
            }
        });
        Daemon {
            pid,
            socket,
            messages: Vec::new(),
            logs,
            exit,
            exited: None,
            _socket_dir: socket_dir,
        }
    }

    fn logs(&self) -> String {
        self.logs.0.lock().unwrap().join("\n")
    }

    /// Reads notifications until one satisfies `want` (returned), or fails
    /// at the deadline showing what came and the logs.
    fn expect_message(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        let mut buf = vec![0u8; 8192];
        loop {
            let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_else(|| {
                panic!(
                    "no {what} within {DEADLINE:?}; got {:#?}\nlogs:\n{}",
                    self.messages,
                    self.logs()
                )
            });
            // Short reads, so an early exit is noticed at once; messages
            // already queued are read before the exit is looked at.
            self.socket
                .set_read_timeout(Some(
                    left.clamp(Duration::from_millis(1), Duration::from_millis(200)),
                ))
                .unwrap();
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let m = text(&buf[..n]);
                    self.messages.push(m.clone());
                    if want(&m) {
                        return m;
                    }
                }
                Err(_) => {
                    if let Ok(status) = self.exit.try_recv() {
                        self.exited = Some(status);
                    }
                    if let Some(status) = self.exited {
                        // Whatever it sent before exiting is still queued.
                        self.socket.set_nonblocking(true).unwrap();
                        while let Ok(n) = self.socket.recv(&mut buf) {
                            let m = text(&buf[..n]);
                            self.messages.push(m.clone());
                            if want(&m) {
                                self.socket.set_nonblocking(false).unwrap();
                                return m;
                            }
                        }
                        panic!(
                            "dirsync run exited ({status}) before {what}; got {:#?}\nlogs:\n{}",
                            self.messages,
                            self.logs()
                        );
                    }
                }
            }
        }
    }

    fn expect_ready(&mut self) {
        self.expect_message("READY=1", |m| m.lines().any(|l| l == "READY=1"));
    }

    /// The STATUS= sent after the next run ends; returns it.
    fn expect_run_status(&mut self) -> String {
        self.expect_message("a STATUS= after a run", |m| {
            m.starts_with("STATUS=") && m.contains("; last run ") && !m.contains("Running since")
        })
    }

    /// Waits (up to the deadline) for a log line containing `needle`.
    fn expect_log(&self, needle: &str) -> String {
        let (lines, arrived) = &*self.logs;
        let (lines, _) = arrived
            .wait_timeout_while(lines.lock().unwrap(), DEADLINE, |lines| {
                !lines.iter().any(|l| l.contains(needle))
            })
            .unwrap();
        match lines.iter().find(|l| l.contains(needle)) {
            Some(line) => line.clone(),
            None => panic!("no log line with {needle:?}; logs:\n{}", lines.join("\n")),
        }
    }

    fn signal(&self, sig: Signal) {
        signal(self.pid, sig);
    }

    /// SIGTERM, then STOPPING=1 and the exit status.
    fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::TERM);
        self.expect_message("STOPPING=1", |m| m.lines().any(|l| l == "STOPPING=1"));
        self.wait()
    }

    fn wait(&mut self) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        let status = self.exit.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            panic!(
                "dirsync run did not exit within {DEADLINE:?}; logs:\n{}",
                self.logs()
            )
        });
        self.exited = Some(status);
        status
    }

    /// The metrics address from the "Serving metrics" log line.
    fn metrics_address(&self) -> String {
        let line = self.expect_log("Serving metrics");
        let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        json["fields"]["address"]
            .as_str()
            .expect("an address field")
            .to_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited.is_none() && self.exit.try_recv().is_err() {
            let _ = kill_process(Pid::from_raw(self.pid as i32).expect("a pid"), Signal::KILL);
        }
    }
}

// ------------------------------------------------------------------- tests

#[test]
fn the_quickstart_runs_as_a_daemon_notifies_systemd_and_stops_on_sigterm_with_exit_0() {
    // config/example.yaml as shipped: the built-in emulator, a schedule with
    // run_at_start, the state under .dirsync-state/.
    let (dir, _) = quickstart();
    let mut daemon = Daemon::start(dir.path(), "config/example.yaml");
    daemon.expect_ready();
    let status = daemon.expect_run_status();
    assert!(
        status.contains(": ok: 24 create in "),
        "the first run creates 4 customers and 20 users: {status}"
    );
    assert!(status.contains("; next run "), "{status}");
    assert!(
        dir.path().join(".dirsync-state/dirsync.lock").exists(),
        "the lock is in the quickstart's state folder"
    );
    let summary = daemon.expect_log("Run finished.");
    let json: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(json["fields"]["result"], "ok");
    assert_eq!(json["fields"]["create"], 24);
    assert_eq!(json["fields"]["failed"], 0);
    assert!(json["fields"]["requests"].as_u64().unwrap() > 0);
    daemon.expect_log("Next run scheduled.");

    let exit = daemon.terminate();
    assert_eq!(exit.code(), Some(0), "{}", daemon.logs());
    let plan = dirsync(&["plan", "-c", "config/example.yaml"], dir.path());
    assert_eq!(
        plan.status.code(),
        Some(0),
        "converged: {}",
        text(&plan.stdout)
    );
}

#[tokio::test]
async fn sigterm_during_an_apply_finishes_what_is_in_flight_exits_0_and_the_next_sync_converges() {
    let emu = spawn_emulator(&["--latency-ms", "150"]);
    let setup = Setup::new(&emu.url, 60, ONCE);
    let mut daemon = Daemon::start(setup.dir.path(), setup.config());
    daemon.expect_ready();
    let start = Instant::now();
    while mutations(&emu.url).await < 5 {
        assert!(
            start.elapsed() < DEADLINE,
            "the apply never started; logs:\n{}",
            daemon.logs()
        );
        tokio::task::yield_now().await;
    }
    let exit = daemon.terminate();
    assert_eq!(exit.code(), Some(0), "{}", daemon.logs());
    let sent = mutations(&emu.url).await;
    assert!(sent < 63, "stopped part-way ({sent} of 63 mutations)");
    let summary = daemon.expect_log("Run finished with problems.");
    assert!(summary.contains("\"result\":\"interrupted\""), "{summary}");
    assert!(summary.contains(SHUTTING_DOWN), "{summary}");

    let sync = dirsync(&["sync", "-c", setup.config()], setup.dir.path());
    assert_eq!(
        sync.status.code(),
        Some(0),
        "{}{}",
        text(&sync.stdout),
        text(&sync.stderr)
    );
    let plan = dirsync(&["plan", "-c", setup.config()], setup.dir.path());
    assert_eq!(
        plan.status.code(),
        Some(0),
        "converged: {}",
        text(&plan.stdout)
    );
    assert_eq!(managed(&emu.url).await, (60, 3), "no duplicates");
}

#[tokio::test]
async fn sighup_with_a_broken_config_keeps_the_daemon_running_on_the_old_one() {
    let emu = spawn_emulator(&[]);
    let setup = Setup::new(&emu.url, 6, EVERY_SECOND);
    let mut daemon = Daemon::start(setup.dir.path(), setup.config());
    daemon.expect_ready();
    daemon.expect_run_status();

    std::fs::write(
        setup.path(setup.config()),
        Setup::config_text(&emu.url, "  cron: \"every day at noon\"")
            .replace("state_dir", "stat_dir"),
    )
    .unwrap();
    daemon.signal(Signal::HUP);
    let why = daemon.expect_log("Configuration reload failed");
    assert!(why.contains("stat_dir"), "the log says why: {why}");
    daemon.expect_message("a STATUS= saying the reload failed", |m| {
        m.starts_with("STATUS=Reload failed, running on the previous configuration")
    });
    // Still running, on the old config: more runs follow.
    daemon.expect_run_status();
    daemon.expect_run_status();

    // A good config is taken: its users file names one user more.
    setup.write_config(&emu.url, EVERY_SECOND);
    setup.write_users(7, "");
    daemon.signal(Signal::HUP);
    daemon.expect_log("Configuration reloaded.");
    let start = Instant::now();
    while managed(&emu.url).await.0 < 7 {
        assert!(start.elapsed() < DEADLINE, "{}", daemon.logs());
        tokio::task::yield_now().await;
    }
    assert_eq!(daemon.terminate().code(), Some(0), "{}", daemon.logs());
}

#[tokio::test]
async fn a_sync_beside_the_running_daemon_is_refused_as_locked_and_sends_no_mutation() {
    let emu = spawn_emulator(&[]);
    let setup = Setup::new(&emu.url, 6, ONCE);
    let mut daemon = Daemon::start(setup.dir.path(), setup.config());
    daemon.expect_ready();
    assert!(daemon.expect_run_status().contains(": ok: 9 create"));

    setup.write_users(6, " Renamed");
    let before = mutations(&emu.url).await;
    let sync = dirsync(&["sync", "-c", setup.config()], setup.dir.path());
    assert_eq!(sync.status.code(), Some(1));
    let err = text(&sync.stderr);
    assert!(
        err.contains("dirsync: locked: ") && err.contains("nothing was sent"),
        "{err}"
    );
    assert!(
        err.contains(&format!("(pid {})", daemon.pid)),
        "names the daemon: {err}"
    );
    assert_eq!(mutations(&emu.url).await, before, "no mutation was sent");
    let second = dirsync(&["run", "-c", setup.config()], setup.dir.path());
    assert_eq!(second.status.code(), Some(1), "nor a second daemon");
    assert!(text(&second.stderr).contains("locked"));
    let plan = dirsync(&["plan", "-c", setup.config()], setup.dir.path());
    assert_eq!(plan.status.code(), Some(2), "plan needs no lock");

    assert_eq!(daemon.terminate().code(), Some(0), "{}", daemon.logs());
    let sync = dirsync(&["sync", "-c", setup.config()], setup.dir.path());
    assert_eq!(sync.status.code(), Some(0), "{}", text(&sync.stderr));
    assert_eq!(
        mutations(&emu.url).await,
        before + 6,
        "the lock was released"
    );
}

#[tokio::test]
async fn the_metrics_endpoint_answers_with_the_expected_series_after_a_run() {
    let emu = spawn_emulator(&[]);
    let setup = Setup::new(&emu.url, 6, ONCE);
    let mut daemon = Daemon::start(setup.dir.path(), setup.config());
    daemon.expect_ready();
    daemon.expect_run_status();
    let address = daemon.metrics_address();
    let http = reqwest::Client::new();
    let page = http
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let body = page.text().await.unwrap();
    for line in [
        "dirsync_runs_total{result=\"ok\"} 1\n",
        "dirsync_runs_total{result=\"blocked\"} 0\n",
        "dirsync_runs_total{result=\"failed\"} 0\n",
        "dirsync_operations_total{kind=\"customer\",action=\"create\",outcome=\"applied\"} 3\n",
        "dirsync_operations_total{kind=\"user\",action=\"create\",outcome=\"applied\"} 6\n",
        "dirsync_requests_throttled_total 0\n",
        "dirsync_drift 0\n",
        "dirsync_running 0\n",
        "dirsync_auth_backoff 0\n",
        "# TYPE dirsync_last_run_duration_seconds gauge\n",
    ] {
        assert!(body.contains(line), "{line:?} missing from\n{body}");
    }
    for series in [
        "dirsync_last_run_start_timestamp_seconds ",
        "dirsync_last_run_end_timestamp_seconds ",
        "dirsync_last_success_timestamp_seconds ",
        "dirsync_last_run_duration_seconds ",
        "dirsync_next_run_timestamp_seconds ",
        "dirsync_requests_total ",
    ] {
        let value: f64 = body
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .unwrap_or_else(|| panic!("{series} missing from\n{body}"))
            .parse()
            .unwrap();
        assert!(value > 0.0, "{series}{value}");
    }
    let health = http
        .get(format!("http://{address}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(health
        .text()
        .await
        .unwrap()
        .starts_with("ok: the last successful run was"));
    assert_eq!(daemon.terminate().code(), Some(0), "{}", daemon.logs());
}

#[test]
fn run_without_a_schedule_says_what_to_add() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.csv"), "id,email,name,customer\n").unwrap();
    let config = Setup::config_text("http://127.0.0.1:9", EVERY_SECOND);
    let no_schedule = config.replace("schedule:\n", "").replace(EVERY_SECOND, "");
    let no_schedule: String = no_schedule
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join("dirsync.yaml"), no_schedule).unwrap();
    let out = dirsync(&["run", "-c", "dirsync.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("dirsync.yaml: schedule: is required by dirsync run"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn secrets_are_read_from_the_credentials_directory_then_the_file_then_the_environment() {
    let emu = spawn_emulator(&[]);
    let dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users.csv"),
        "id,email,name,customer\nu1,a@x.example,A,c1\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("dirsync.yaml"),
        format!(
            "platform:\n  url: {}\n  token: {{ credential: prismatic-token, file: token, env: {TOKEN_VAR} }}\n\
             source:\n  csv:\n    users_file: users.csv\n\
             mapping:\n  customer: {{ external_id: customer, name: customer }}\n  user: {{ external_id: id, customer: customer, email: email, name: name }}\n",
            emu.url
        ),
    )
    .unwrap();
    let wrong = "wrong-token-9d2b";
    let plan = |credential: Option<&str>, file: Option<&str>, env: Option<&str>| {
        let _ = std::fs::remove_file(creds.path().join("prismatic-token"));
        let _ = std::fs::remove_file(dir.path().join("token"));
        let mut cmd = bin();
        cmd.args(["plan", "-c", "dirsync.yaml"])
            .current_dir(dir.path())
            .env("DIRSYNC_LOG", "warn")
            .env_remove(TOKEN_VAR)
            .env_remove("CREDENTIALS_DIRECTORY");
        if let Some(c) = credential {
            std::fs::write(creds.path().join("prismatic-token"), c).unwrap();
            cmd.env("CREDENTIALS_DIRECTORY", creds.path());
        }
        if let Some(f) = file {
            std::fs::write(dir.path().join("token"), f).unwrap();
        }
        if let Some(e) = env {
            cmd.env(TOKEN_VAR, e);
        }
        let out = cmd.output().unwrap();
        let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            !shown.contains(TOKEN) && !shown.contains(wrong),
            "a token was shown: {shown}"
        );
        (out.status.code(), shown)
    };
    // Exit 2: the plan ran (changes pending), so the token was accepted.
    assert_eq!(
        plan(Some(TOKEN), Some(wrong), Some(wrong)).0,
        Some(2),
        "the credential first"
    );
    let (code, shown) = plan(Some(wrong), Some(TOKEN), Some(TOKEN));
    assert_eq!(
        code,
        Some(1),
        "a present credential wins over the file: {shown}"
    );
    assert_eq!(
        plan(None, Some(TOKEN), Some(wrong)).0,
        Some(2),
        "then the file"
    );
    assert_eq!(
        plan(None, None, Some(TOKEN)).0,
        Some(2),
        "then the environment"
    );
    let (code, shown) = plan(None, None, None);
    assert_eq!(code, Some(1));
    assert!(
        shown.contains("no token found in systemd credential prismatic-token, then file ")
            && shown.contains(&format!("then environment variable {TOKEN_VAR}")),
        "{shown}"
    );
}

#[tokio::test]
async fn a_cancelled_apply_finishes_the_operations_in_flight_and_skips_the_rest_as_shutting_down() {
    let scenario = crate::sync::Scenario::new(None).await;
    scenario.write_users(&crate::sync::rows(40, 2));
    let config: Config = scenario.config("  apply_concurrency: 4\n");
    scenario.emu.handle.set_faults(Faults {
        latency_ms: 50,
        ..Faults::default()
    });
    let connection = Connection::open(&config.platform).await.unwrap();
    let cancel = CancellationToken::new();
    let run = {
        let (config, cancel) = (config.clone(), cancel.clone());
        tokio::spawn(async move {
            let connection = Connection::open(&config.platform).await.unwrap();
            let mode = Mode::Apply {
                allow_deletes: false,
            };
            reconcile_cancellable(&config, &connection, mode, &Quiet, &cancel).await
        })
    };
    let start = Instant::now();
    while scenario.emu.handle.stats().mutations < 5 {
        assert!(start.elapsed() < DEADLINE, "the apply never started");
        tokio::task::yield_now().await;
    }
    cancel.cancel();
    let r = run.await.unwrap().unwrap();
    let report = r.report.expect("applied");
    assert_eq!(report.stopped.as_deref(), Some(SHUTTING_DOWN));
    let applied = report
        .operations
        .iter()
        .filter(|o| o.outcome.succeeded())
        .count();
    let skipped = report
        .operations
        .iter()
        .filter(|o| {
            o.outcome
                == Outcome::Skipped {
                    reason: SHUTTING_DOWN.to_owned(),
                }
        })
        .count();
    assert!(applied >= 5, "what was in flight finished: {applied}");
    assert!(skipped > 0, "the rest was skipped");
    assert_eq!(applied + skipped, report.operations.len(), "nothing failed");
    assert_eq!(
        scenario.emu.handle.stats().mutations as usize,
        applied,
        "skipped operations sent nothing"
    );

    scenario.emu.handle.set_faults(Faults::default());
    let mode = Mode::Apply {
        allow_deletes: false,
    };
    reconcile(&config, &connection, mode, &Quiet).await.unwrap();
    let again = reconcile(&config, &connection, Mode::Plan, &Quiet)
        .await
        .unwrap();
    assert!(again.plan.is_empty(), "converged");
}

#[test]
fn a_failed_preflight_exits_1_naming_its_cause_once() {
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let setup = Setup::new(&format!("http://127.0.0.1:{port}"), 1, EVERY_SECOND);
    let text_config = std::fs::read_to_string(setup.path(setup.config()))
        .unwrap()
        .replace(
            "requests_per_second: 1000",
            "requests_per_second: 1000\n  max_attempts: 1",
        );
    std::fs::write(setup.path(setup.config()), text_config).unwrap();
    let out = dirsync(&["run", "-c", setup.config()], setup.dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("dirsync: preflight against the platform failed: platform: "),
        "{err}"
    );
    assert_eq!(
        err.matches("preflight against the platform failed").count(),
        1,
        "{err}"
    );
    assert_eq!(err.matches("checking the token").count(), 1, "{err}");
    assert!(!err.contains("AuthenticatedUser"), "{err}");
}

// ------------------------------------------------- the operator's view

/// The JSON log lines (`--log-json`) whose message contains `needle`.
fn json_lines(logs: &str, needle: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The value of `series` (a whole series name with its labels) in a page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

async fn metrics_page(address: &str) -> String {
    reqwest::get(format!("http://{address}/metrics"))
        .await
        .expect("the metrics endpoint answers")
        .text()
        .await
        .expect("a page")
}

/// Polls `/metrics` until `series` has a value for which `want` holds.
async fn wait_for_sample(
    daemon: &Daemon,
    address: &str,
    series: &str,
    want: impl Fn(f64) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let page = metrics_page(address).await;
        if sample(&page, series).is_some_and(&want) {
            return page;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{series} never as wanted; last page:\n{page}\nlogs:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_daemon_logs_one_line_per_operation_and_a_blocked_run_names_its_limit() {
    let emu = spawn_emulator(&[]);
    let setup = Setup::new(&emu.url, 6, EVERY_SECOND);
    let mut daemon = Daemon::start(setup.dir.path(), setup.config());
    daemon.expect_ready();
    daemon.expect_log("Run finished.");

    // One line per operation: 3 customers and 6 users created.
    let created = json_lines(&daemon.logs(), "create user ");
    assert_eq!(created.len(), 6, "{}", daemon.logs());
    let u0 = created
        .iter()
        .find(|l| l["fields"]["external_id"] == "u0")
        .expect("a line for u0");
    assert_eq!(u0["level"], "INFO");
    assert_eq!(
        u0["fields"]["message"],
        "create user u0 <user0@x.example> of c0: applied"
    );
    for (field, value) in [
        ("action", "create"),
        ("kind", "user"),
        ("email", "user0@x.example"),
        ("customer", "c0"),
        ("outcome", "applied"),
    ] {
        assert_eq!(u0["fields"][field], value, "{u0}");
    }
    let c1 = json_lines(&daemon.logs(), "create customer c1 ");
    assert_eq!(c1.len(), 1, "{}", daemon.logs());
    assert_eq!(c1[0]["fields"]["name"], "c1");

    // One user leaves: 1 of 6 is over the default budget (10 %), so the run
    // is blocked, and the log names the limit.
    let address = daemon.metrics_address();
    setup.write_users(5, "");
    let blocked = daemon.expect_log("Run blocked by a safety limit");
    let json: serde_json::Value = serde_json::from_str(&blocked).unwrap();
    assert_eq!(json["level"], "WARN");
    assert_eq!(json["fields"]["limit"], "user_delete_budget");
    assert!(
        json["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("(user_delete_budget): 1 user deletes of 6 managed users reach the budget"),
        "{json}"
    );
    let summary = daemon.expect_log("\"blocked_by\":\"user_delete_budget\"");
    assert!(
        summary.contains("Run finished with problems. blocked"),
        "{summary}"
    );
    let page = wait_for_sample(
        &daemon,
        &address,
        "dirsync_runs_blocked_total{reason=\"user_delete_budget\"}",
        |v| v >= 1.0,
    )
    .await;
    assert_eq!(
        sample(&page, "dirsync_runs_blocked_total{reason=\"shrink\"}"),
        Some(0.0),
        "{page}"
    );
    assert_eq!(sample(&page, "dirsync_managed_users"), Some(6.0), "{page}");
    assert_eq!(
        sample(&page, "dirsync_managed_customers"),
        Some(3.0),
        "{page}"
    );
    assert_eq!(sample(&page, "dirsync_source_users"), Some(5.0), "{page}");
    assert_eq!(
        sample(&page, "dirsync_refused_records"),
        Some(0.0),
        "{page}"
    );

    // A wider budget, reloaded: the delete goes through, and says who it was.
    let text = Setup::config_text(&emu.url, EVERY_SECOND)
        + "policy:\n  delete_users: { max_count: 10, max_percent: 50 }\n";
    std::fs::write(setup.path(setup.config()), text).unwrap();
    daemon.signal(Signal::HUP);
    let deleted = daemon.expect_log("delete user u5 ");
    let json: serde_json::Value = serde_json::from_str(&deleted).unwrap();
    assert_eq!(
        json["fields"]["message"], "delete user u5 <user5@x.example> of c2: applied",
        "{json}"
    );
    assert_eq!(json["fields"]["action"], "delete");
    assert_eq!(json["fields"]["external_id"], "u5");
    assert_eq!(json["fields"]["email"], "user5@x.example");
    let page = wait_for_sample(&daemon, &address, "dirsync_managed_users", |v| v == 5.0).await;
    assert_eq!(
        sample(
            &page,
            "dirsync_operations_total{kind=\"user\",action=\"delete\",outcome=\"applied\"}"
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(daemon.terminate().code(), Some(0), "{}", daemon.logs());
    assert!(!daemon.logs().contains(TOKEN), "the token was logged");
}

#[tokio::test]
async fn before_the_first_run_every_series_is_there_at_zero_and_the_textfile_is_written() {
    use std::os::unix::fs::PermissionsExt;
    let emu = spawn_emulator(&[]);
    // Once a year, not at start: no run while the test looks.
    let setup = Setup::new(&emu.url, 3, "  cron: \"0 0 1 1 *\"");
    let text = std::fs::read_to_string(setup.path(setup.config()))
        .unwrap()
        .replace(
            "  listen: 127.0.0.1:0\n",
            "  listen: 127.0.0.1:0\n  textfile: textfile/dirsync.prom\n",
        );
    std::fs::write(setup.path(setup.config()), text).unwrap();
    std::fs::create_dir(setup.path("textfile")).unwrap();
    let mut daemon = Daemon::start(setup.dir.path(), setup.config());
    daemon.expect_ready();
    let page = metrics_page(&daemon.metrics_address()).await;
    assert_eq!(
        sample(
            &page,
            &format!(
                "dirsync_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0),
        "{page}"
    );
    for (kind, actions) in [
        ("customer", &["create", "update", "adopt", "delete"][..]),
        (
            "user",
            &["create", "update", "adopt", "recreate", "delete"][..],
        ),
    ] {
        for action in actions {
            for outcome in ["applied", "alreadyDone", "failed", "skipped"] {
                let series = format!(
                    "dirsync_operations_total{{kind=\"{kind}\",action=\"{action}\",outcome=\"{outcome}\"}}"
                );
                assert_eq!(sample(&page, &series), Some(0.0), "{series} in\n{page}");
            }
        }
    }
    for result in ["ok", "partial", "blocked", "failed", "interrupted"] {
        let series = format!("dirsync_runs_total{{result=\"{result}\"}}");
        assert_eq!(sample(&page, &series), Some(0.0), "{series} in\n{page}");
    }
    for reason in [
        "empty_source",
        "shrink",
        "user_delete_budget",
        "customer_delete_budget",
        "deletes_withheld",
    ] {
        let series = format!("dirsync_runs_blocked_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&page, &series), Some(0.0), "{series} in\n{page}");
    }
    assert!(
        page.contains("# TYPE dirsync_runs_total counter\n"),
        "{page}"
    );
    assert!(
        !page.contains("dirsync_managed_users"),
        "no sizes before a plan: {page}"
    );
    assert!(sample(&page, "dirsync_next_run_timestamp_seconds").is_some());

    // The same series in the textfile, for node_exporter: readable by it,
    // and no temporary file left beside it.
    let file = setup.path("textfile/dirsync.prom");
    let written = std::fs::read_to_string(&file).expect("the textfile at start");
    assert_eq!(
        sample(&written, "dirsync_runs_total{result=\"ok\"}"),
        Some(0.0),
        "{written}"
    );
    assert!(written.contains("dirsync_build_info{"), "{written}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let names: Vec<_> = std::fs::read_dir(setup.path("textfile"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["dirsync.prom"]);
    assert_eq!(daemon.terminate().code(), Some(0), "{}", daemon.logs());
}

#[tokio::test]
async fn each_sync_replaces_the_textfile_whole_and_its_counters_add_up_across_runs() {
    use std::os::unix::fs::MetadataExt;
    let emu = spawn_emulator(&[]);
    let setup = Setup::new(&emu.url, 6, ONCE);
    let text = std::fs::read_to_string(setup.path(setup.config()))
        .unwrap()
        .replace("  listen: 127.0.0.1:0\n", "  textfile: dirsync.prom\n");
    std::fs::write(setup.path(setup.config()), text).unwrap();
    let file = setup.path("dirsync.prom");

    let sync = |args: &[&str]| {
        let mut all = vec!["sync", "-c", setup.config()];
        all.extend_from_slice(args);
        dirsync(&all, setup.dir.path())
    };
    let plan = dirsync(&["plan", "-c", setup.config()], setup.dir.path());
    assert_eq!(plan.status.code(), Some(2));
    assert!(!file.exists(), "a plan is not a run the metrics count");

    assert_eq!(sync(&[]).status.code(), Some(0));
    let first = std::fs::read_to_string(&file).unwrap();
    let first_inode = std::fs::metadata(&file).unwrap().ino();
    assert_eq!(
        sample(&first, "dirsync_runs_total{result=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&first, "dirsync_managed_users"),
        Some(6.0),
        "{first}"
    );
    assert_eq!(
        sample(
            &first,
            "dirsync_operations_total{kind=\"user\",action=\"create\",outcome=\"applied\"}"
        ),
        Some(6.0)
    );
    assert!(sample(&first, "dirsync_last_success_timestamp_seconds").is_some());

    // Blocked: one of six users leaves (over the 10 % budget).
    setup.write_users(5, "");
    assert_eq!(sync(&[]).status.code(), Some(3));
    let second = std::fs::read_to_string(&file).unwrap();
    assert_ne!(
        std::fs::metadata(&file).unwrap().ino(),
        first_inode,
        "renamed over, never rewritten in place"
    );
    for (series, value) in [
        ("dirsync_runs_total{result=\"ok\"}", 1.0),
        ("dirsync_runs_total{result=\"blocked\"}", 1.0),
        (
            "dirsync_runs_blocked_total{reason=\"user_delete_budget\"}",
            1.0,
        ),
        (
            "dirsync_operations_total{kind=\"user\",action=\"create\",outcome=\"applied\"}",
            6.0,
        ),
        ("dirsync_source_users", 5.0),
    ] {
        assert_eq!(
            sample(&second, series),
            Some(value),
            "{series} in\n{second}"
        );
    }
    assert_eq!(
        sample(&second, "dirsync_last_success_timestamp_seconds"),
        sample(&first, "dirsync_last_success_timestamp_seconds"),
        "a blocked run is no success: the last one is remembered"
    );

    assert_eq!(sync(&["--allow-deletes"]).status.code(), Some(0));
    let third = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        sample(&third, "dirsync_runs_total{result=\"ok\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&third, "dirsync_managed_users"),
        Some(5.0),
        "{third}"
    );
    let mut names: Vec<_> = std::fs::read_dir(setup.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("dirsync") && n != "dirsync.yaml")
        .collect();
    names.sort();
    assert_eq!(names, ["dirsync.prom"], "no temporary file left");
}

// ----------------------------------------------------------- the journal

/// A stand-in for the journal: a datagram socket at
/// `ROOT/systemd/journal/socket`, which a child sees as
/// `/run/systemd/journal/socket` (the path tracing-journald writes to) when
/// started by [`in_own_run`]. Entries are read as they come (the socket's
/// queue is short, and a full queue would stall the sender).
struct FakeJournal {
    root: tempfile::TempDir,
    entries: Arc<Mutex<Vec<std::collections::BTreeMap<String, String>>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl FakeJournal {
    /// With the socket bound (`listening`), or only the folder (no journal).
    fn new(listening: bool) -> FakeJournal {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("systemd/journal");
        std::fs::create_dir_all(&dir).unwrap();
        let entries = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = listening.then(|| {
            let socket = UnixDatagram::bind(dir.join("socket")).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let (entries, stop) = (Arc::clone(&entries), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    match socket.recv(&mut buf) {
                        Ok(n) => entries.lock().unwrap().push(parse_entry(&buf[..n])),
                        Err(_) if stop.load(std::sync::atomic::Ordering::SeqCst) => break,
                        Err(_) => {}
                    }
                }
            })
        });
        FakeJournal {
            root,
            entries,
            stop,
            reader,
        }
    }

    /// Everything received, once the sender is done.
    fn finish(mut self) -> Vec<std::collections::BTreeMap<String, String>> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        std::mem::take(&mut *self.entries.lock().unwrap())
    }
}

/// The journal's native format: `KEY=value\n`, or `KEY\n`, a little-endian
/// 64-bit length, the value and `\n` for values with newlines.
fn parse_entry(mut data: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut fields = std::collections::BTreeMap::new();
    while !data.is_empty() {
        let line_end = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
        let line = &data[..line_end];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            fields.insert(text(&line[..eq]), text(&line[eq + 1..]));
            data = &data[(line_end + 1).min(data.len())..];
        } else {
            let key = text(line);
            let rest = &data[line_end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            fields.insert(key, text(&rest[8..8 + len]));
            data = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    fields
}

fn message(entry: &std::collections::BTreeMap<String, String>) -> &str {
    entry.get("MESSAGE").map_or("", String::as_str)
}

fn find_tool(name: &str) -> PathBuf {
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is missing (Debian packages util-linux and mount)"))
}

/// `dirsync ARGS` in a mount namespace of its own where `/run` is
/// `journal.root`, with standard error a file that `$JOURNAL_STREAM` names
/// (as systemd sets it), or names something else when `matching` is false.
fn in_own_run(
    journal: &FakeJournal,
    matching: bool,
    args: &[&str],
    dir: &Path,
) -> (Output, String) {
    use std::os::unix::fs::MetadataExt;
    let stderr_path = journal.root.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let stream = if matching {
        format!("{}:{}", meta.dev(), meta.ino())
    } else {
        format!("{}:{}", meta.dev(), meta.ino() + 1)
    };
    let out = Command::new(find_tool("unshare"))
        .args(["--map-root-user", "--mount", "--"])
        .arg(find_tool("sh"))
        .args([
            "-c",
            "mount --bind \"$1\" /run && shift && exec \"$@\"",
            "sh",
        ])
        .arg(journal.root.path())
        .arg(env!("CARGO_BIN_EXE_dirsync"))
        .args(args)
        .current_dir(dir)
        .env("DIRSYNC_LOG", "info")
        .env("JOURNAL_STREAM", stream)
        .env(TOKEN_VAR, TOKEN)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stderr(stderr)
        .output()
        .expect("unshare runs (a mount namespace of its own)");
    let logged = std::fs::read_to_string(&stderr_path).unwrap();
    (out, logged)
}

#[tokio::test]
async fn under_the_journal_each_line_has_its_priority_and_fields_and_no_secret() {
    let emu = spawn_emulator(&[]);
    let setup = Setup::new(&emu.url, 6, ONCE);
    let journal = FakeJournal::new(true);
    // --allow-deletes: a warning on every run, whatever else happens.
    let (out, stderr) = in_own_run(
        &journal,
        true,
        &["sync", "--allow-deletes", "-c", setup.config()],
        setup.dir.path(),
    );
    let entries = journal.finish();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let shown = format!("{entries:?}");
    assert!(!shown.contains(TOKEN), "the token reached the journal");
    assert!(
        !stderr.contains(" INFO ") && !stderr.contains(" WARN "),
        "the log lines went to the journal, not standard error: {stderr}"
    );
    let warning = entries
        .iter()
        .find(|e| message(e).contains("the delete budgets are lifted for this run"))
        .unwrap_or_else(|| panic!("no --allow-deletes warning in {entries:#?}"));
    assert_eq!(warning["PRIORITY"], "4");
    assert_eq!(warning["SYSLOG_IDENTIFIER"], "dirsync");
    let created = entries
        .iter()
        .find(|e| e.get("DIRSYNC_EXTERNAL_ID").map(String::as_str) == Some("u3"))
        .unwrap_or_else(|| panic!("no line for u3 in {entries:#?}"));
    assert_eq!(created["PRIORITY"], "6");
    assert_eq!(
        created["MESSAGE"],
        "create user u3 <user3@x.example> of c0: applied"
    );
    assert_eq!(created["DIRSYNC_ACTION"], "create");
    assert_eq!(created["DIRSYNC_EMAIL"], "user3@x.example");
    assert_eq!(created["DIRSYNC_OUTCOME"], "applied");
    let summary = entries
        .iter()
        .find(|e| message(e).starts_with("Run finished."))
        .unwrap_or_else(|| panic!("no summary in {entries:#?}"));
    assert_eq!(summary["PRIORITY"], "6");
}

#[tokio::test]
async fn without_the_journal_or_with_another_stream_the_logs_stay_on_stderr() {
    let emu = spawn_emulator(&[]);
    let setup = Setup::new(&emu.url, 2, ONCE);
    // JOURNAL_STREAM names standard error, but no journal listens.
    let journal = FakeJournal::new(false);
    let (out, stderr) = in_own_run(
        &journal,
        true,
        &["plan", "-c", setup.config()],
        setup.dir.path(),
    );
    journal.finish();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the journal's socket cannot be reached (")
            && stderr.contains("): logging to standard error"),
        "{stderr}"
    );
    assert!(stderr.contains("Run finished."), "{stderr}");
    assert!(!stderr.contains(TOKEN));

    // A journal listens, but JOURNAL_STREAM names another stream (a variable
    // inherited by a process whose standard error went elsewhere).
    let journal = FakeJournal::new(true);
    let (out, stderr) = in_own_run(
        &journal,
        false,
        &["plan", "-c", setup.config()],
        setup.dir.path(),
    );
    let entries = journal.finish();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Run finished."), "{stderr}");
    assert!(!stderr.contains("journal's socket"), "{stderr}");
    assert!(entries.is_empty(), "nothing for the journal: {entries:#?}");
}

#[test]
fn with_watchdog_usec_set_systemd_hears_watchdog_1_until_stopped() {
    let emu = spawn_emulator(&[]);
    let setup = Setup::new(&emu.url, 1, "  cron: \"0 0 1 1 *\"");
    let socket_dir = tempfile::tempdir().unwrap();
    let socket_path = socket_dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let child = bin()
        .args(["run", "-c", setup.config()])
        .current_dir(setup.dir.path())
        .env("DIRSYNC_LOG", "warn")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .env(TOKEN_VAR, TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed if the test fails before it stops it.
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reaped(child);
    let start = Instant::now();
    let mut buf = vec![0u8; 8192];
    let mut seen = Vec::new();
    let mut pings = 0;
    while pings < 3 {
        assert!(start.elapsed() < DEADLINE, "no WATCHDOG=1: {seen:?}");
        if let Ok(n) = socket.recv(&mut buf) {
            let m = text(&buf[..n]);
            if m.lines().any(|l| l == "WATCHDOG=1") {
                pings += 1;
            }
            seen.push(m);
        }
    }
    assert!(seen[0].starts_with("READY=1\n"), "{seen:?}");
    signal(child.0.id(), Signal::TERM);
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}
